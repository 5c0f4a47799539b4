"""`leansync db copy`: the whole history into another database, ids and all.

Written over models.metadata, table by table and column by column, so it
follows the schema wherever the migrations take it. The source is read in
one read-only snapshot; the target is brought to head, then written in one
transaction under its run lock: it ends up with the whole copy or nothing.
JSON columns travel as their JSON text, so nothing re-encodes their values;
on PostgreSQL the rows go in by COPY.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Engine, Integer, Table, func, select, text

from leansync.store.database import database_errors, ensure_schema, require_schema, safe_url
from leansync.errors import ConfigError
from leansync.history.lock import run_lock
from leansync.store.models import UTCDateTime, metadata, sync_run
from leansync.history.writer import Codec, bulk_insert

BATCH_ROWS = 5000


def copy_database(source: Engine, target: Engine, *, lock_timeout: float,
                  batch_rows: int = BATCH_ROWS) -> dict[str, int]:
    """Copy every table of ``source`` into ``target``; returns the rows copied per table.

    Raises ConfigError (nothing written) when the target already holds a run.
    """
    source_url, target_url = str(source.url), str(target.url)
    require_schema(source)  # the same schema as the target will have; never migrated here
    with run_lock(target, timeout=lock_timeout) as lock:
        ensure_schema(target, via=lock)
        with database_errors(source_url), _snapshot(source) as src, database_errors(target_url), \
                lock.begin() as dst:
            held = dst.execute(select(func.count()).select_from(sync_run)).scalar_one()
            if held:
                raise ConfigError(
                    f"{safe_url(target_url)} already holds {held} sync run(s); db copy fills only a database "
                    "without history, nothing was written"
                )
            counts = {table.name: _copy_table(src, dst, table, batch_rows) for table in metadata.sorted_tables}
            if dst.dialect.name == "postgresql":
                _advance_sequences(dst)
    return counts


def _snapshot(engine: Engine):
    """A read-only connection that sees one moment of the source throughout."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        # A sync committing meanwhile must not land between two tables.
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    # SQLite: the first SELECT opens the (BEGIN) transaction whose snapshot every later one reads.
    return conn


def _is_json(column) -> bool:
    return isinstance(getattr(column.type, "impl", column.type), JSON)  # models.JSONText too


def _copy_table(src: Connection, dst: Connection, table: Table, batch_rows: int) -> int:
    """Rows go driver to driver (SQLAlchemy's per-value processing would cost
    most of the time), converted only where the two backends store a type
    differently."""
    quote = src.dialect.identifier_preparer.quote
    names = [quote(c.name) for c in table.columns]
    read = [f"{name}::text" if _is_json(c) and src.dialect.name == "postgresql" else name
            for c, name in zip(table.columns, names)]
    order = ", ".join(quote(c.name) for c in table.primary_key.columns)
    query = f"SELECT {', '.join(read)} FROM {quote(table.name)} ORDER BY {order}"
    convert = [(i, f) for i, c in enumerate(table.columns)
               if (f := _converter(c, src.dialect.name, dst.dialect.name)) is not None]
    copied = 0
    for rows in src.execution_options(yield_per=batch_rows).exec_driver_sql(query).partitions(batch_rows):
        if convert:
            rows = [list(row) for row in rows]
            for row in rows:
                for i, f in convert:
                    if row[i] is not None:
                        row[i] = f(row[i])
        # COPY into PostgreSQL, which parses the JSON text into jsonb; executemany into SQLite.
        bulk_insert(dst, table.name, names, [tuple(row) for row in rows])
        copied += len(rows)
    return copied


def _converter(column, source: str, target: str) -> Callable[[Any], Any] | None:
    """The conversion of one column's driver values from ``source``'s form to ``target``'s.

    SQLite keeps timestamps as UTC text and booleans as 0/1 (models.UTCDateTime,
    writer.Codec); JSON travels as text both ways.
    """
    if source == target:
        return None
    if isinstance(column.type, UTCDateTime):
        return _sqlite_text_to_utc if source == "sqlite" else Codec("sqlite").timestamp
    if isinstance(column.type, Boolean) and source == "sqlite":
        return bool
    return None


def _sqlite_text_to_utc(value: str) -> datetime:
    return datetime.fromisoformat(value + "+00:00")  # faster than .replace(tzinfo=...)


def _advance_sequences(conn: Connection) -> None:
    """Move each serial id's sequence past the copied ids, so the next sync's rows do not collide."""
    quote = conn.dialect.identifier_preparer.quote
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, Integer):
                continue
            sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                    {"t": table.name, "c": column.name}).scalar()
            if sequence is None:  # an id the API assigns (lean_version.id)
                continue
            conn.execute(
                text(f"SELECT setval(:s, COALESCE(MAX({quote(column.name)}), 0) + 1, false) "
                     f"FROM {quote(table.name)}"),
                {"s": sequence},
            )
