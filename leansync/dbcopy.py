"""`leansync db copy`: the whole history into another database, ids and all.

Written over models.metadata, table by table and column by column, so it
follows the schema wherever the migrations take it. The source is read in
one read-only snapshot; the target is brought to head, then written in one
transaction under its run lock: it ends up with the whole copy or nothing.
JSON columns travel as their JSON text, so nothing re-encodes their values.
"""

from sqlalchemy import JSON, Connection, Engine, Integer, Table, Text, bindparam, cast, func, insert, select, text
from sqlalchemy import type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from leansync.database import database_errors, ensure_schema, require_schema, safe_url
from leansync.errors import ConfigError
from leansync.lock import run_lock
from leansync.models import metadata, sync_run

BATCH_ROWS = 5000


def copy_database(source: Engine, target: Engine, *, lock_timeout: float,
                  batch_rows: int = BATCH_ROWS) -> dict[str, int]:
    """Copy every table of ``source`` into ``target``; returns the rows copied per table.

    Raises ConfigError (nothing written) when the target already holds a run.
    """
    source_url, target_url = str(source.url), str(target.url)
    require_schema(source)  # the same schema as the target will have; never migrated here
    with run_lock(target, timeout=lock_timeout):
        ensure_schema(target)
        with database_errors(source_url), _snapshot(source) as src, database_errors(target_url), \
                target.begin() as dst:
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
    return isinstance(column.type, JSON)


def _copy_table(src: Connection, dst: Connection, table: Table, batch_rows: int) -> int:
    read_columns = [_as_text(src, c) if _is_json(c) else c for c in table.columns]
    query = select(*read_columns).order_by(*table.primary_key.columns)
    values = {c.name: _json_param(dst, c) if _is_json(c) else bindparam(f"p_{c.name}", type_=c.type)
              for c in table.columns}
    statement = insert(table).values(values)
    keys = [f"p_{c.name}" for c in table.columns]
    copied = 0
    result = src.execution_options(yield_per=batch_rows).execute(query)
    for rows in result.partitions():
        dst.execute(statement, [dict(zip(keys, row)) for row in rows])
        copied += len(rows)
    return copied


def _as_text(conn: Connection, column):
    """A JSON column as its JSON text: SQLite stores the text; PostgreSQL renders jsonb."""
    if conn.dialect.name == "postgresql":
        return cast(column, Text).label(column.name)
    return type_coerce(column, Text).label(column.name)


def _json_param(conn: Connection, column):
    param = bindparam(f"p_{column.name}", type_=Text)
    return cast(param, JSONB) if conn.dialect.name == "postgresql" else param


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
