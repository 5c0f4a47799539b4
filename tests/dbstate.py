"""Read a leansync database back for the reliability tests.

``snapshot`` gives the whole content of the leansync tables in a form that
two runs of the same sync can be compared by: every timestamp a run writes
is that run's ``sync_run.started_at``, so timestamps are replaced by the
number of the run that wrote them, and ids that only number rows (run ids,
history ids) by their order. ``check_invariants`` asserts what must hold
after any run, completed or killed.
"""

from pathlib import Path

from sqlalchemy import MetaData, select

from leansync.store.database import make_engine
from leansync.store.models import lean_hash, lean_version, lean_version_history, notification, sync_run

TIMESTAMP_COLUMNS = {
    "lean_version": ("first_seen_at", "updated_at", "removed_at"),
    "lean_hash": ("first_seen_at",),
    "lean_version_history": ("valid_from", "valid_to"),
    "notification": ("created_at",),
}


# Orders that do not depend on serial numbers, so two databases compare row by row.
ORDER = {
    "sync_run": "id",
    "lean_version": "id",
    "lean_hash": "kind, hash",
    "lean_version_history": "version_id, valid_from",
    "notification": "sync_run_id, target_key",
}


def engine_for(url: str):
    return make_engine(url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def has_schema(url: str) -> bool:
    """False for a database that does not exist or has no leansync tables yet."""
    if is_sqlite(url) and not Path(url.removeprefix("sqlite:///")).exists():
        return False
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return conn.dialect.has_table(conn, "sync_run")
    finally:
        engine.dispose()


def raw_rows(url: str, *, as_text: bool = False) -> dict[str, tuple[list[str], list[tuple]]]:
    """Column names and every row of every leansync table, as the driver
    returns them (no type processing: fast, and stricter than comparing
    converted values). ``as_text``: on PostgreSQL each row as the server
    writes it out as text (no JSON decoding), faster still; two databases with
    equal rows in either form have equal snapshots."""
    engine = engine_for(url)
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            out = {}
            for table in (sync_run, lean_version, lean_hash, lean_version_history, notification):
                keys = ORDER[table.name]
                if as_text and not is_sqlite(url):
                    cursor.execute(f"SELECT * FROM {table.name} LIMIT 0")  # the names; the rows come as one text
                    names = [d[0] for d in cursor.description]
                    cursor.execute(f"SELECT CAST({table.name} AS text) FROM {table.name} ORDER BY {keys}")
                else:
                    cursor.execute(f"SELECT * FROM {table.name} ORDER BY {keys}")
                    names = [d[0] for d in cursor.description]
                out[table.name] = (names, cursor.fetchall())
            cursor.close()
            return out
        finally:
            connection.close()
    finally:
        engine.dispose()


def snapshot(url: str) -> dict[str, list]:
    """The database content with run-specific timestamps and ids normalised.

    sync_run rows come as dicts; the other tables as lists of tuples
    (column names first) in a deterministic order, which keeps 50,000 rows quick to compare.
    """
    tables = raw_rows(url)
    names, rows = tables["sync_run"]
    runs = sorted((dict(zip(names, r)) for r in rows), key=lambda r: (r["started_at"], r["id"]))
    run_number = {r["id"]: n for n, r in enumerate(runs, 1)}
    moment = {r["started_at"]: f"run{run_number[r['id']]}" for r in runs}
    out: dict[str, list] = {
        "sync_run": [
            dict(r, id=run_number[r["id"]], started_at=moment[r["started_at"]],
                 finished_at=r["finished_at"] is not None)
            for r in runs
        ]
    }
    for name in ("lean_version", "lean_hash", "lean_version_history", "notification"):
        names, rows = tables[name]
        # A timestamp no run started at stays as it is, so a stray value differs.
        swap = {names.index(c): moment for c in TIMESTAMP_COLUMNS[name]}
        if "sync_run_id" in names:
            swap[names.index("sync_run_id")] = run_number
        drop = names.index("id") if name in ("lean_version_history", "notification") else None  # a serial number only
        normalised = []
        for row in rows:
            values = [swap[i].get(v, v) if i in swap and v is not None else v for i, v in enumerate(row)]
            if drop is not None:
                del values[drop]
            normalised.append(tuple(values))
        if drop is not None:
            names = names[:drop] + names[drop + 1:]
        out[name] = [tuple(names), *normalised]
    return out


def data_tables(url: str) -> dict[str, list]:
    """The snapshot without sync_run: what a failed run must leave untouched."""
    return {k: v for k, v in snapshot(url).items() if k != "sync_run"}


def runs(url: str) -> list[dict]:
    """The sync_run rows, values converted (aware UTC datetimes)."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(sync_run).order_by(sync_run.c.id))]
    finally:
        engine.dispose()


def full_dump_text(url: str) -> str:
    """Every row of every table in the database (reflected, so nothing is missed)."""
    engine = engine_for(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        lines = []
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    lines.append(f"{table.name}: {tuple(row)!r}")
        return "\n".join(lines)
    finally:
        engine.dispose()


API_COLUMNS = ("name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")
OPEN_ROW = "h.version_id = v.id AND h.valid_to IS NULL"

# Each query counts the rows that break one rule of the history.
INVARIANTS = {
    "a version has two open history rows":
        "SELECT count(*) FROM (SELECT version_id FROM lean_version_history WHERE valid_to IS NULL "
        "GROUP BY version_id HAVING count(*) > 1) x",
    "a listed version has no open history row":
        f"SELECT count(*) FROM lean_version v WHERE v.removed_at IS NULL "
        f"AND NOT EXISTS (SELECT 1 FROM lean_version_history h WHERE {OPEN_ROW})",
    "a removed version has an open history row":
        f"SELECT count(*) FROM lean_version v WHERE v.removed_at IS NOT NULL "
        f"AND EXISTS (SELECT 1 FROM lean_version_history h WHERE {OPEN_ROW})",
    "an open history row differs from its version":
        f"SELECT count(*) FROM lean_version v JOIN lean_version_history h ON {OPEN_ROW} WHERE "
        + " OR ".join(f"v.{c} IS DISTINCT FROM h.{c}" for c in API_COLUMNS),
    "a removed version's history does not end at removed_at":
        "SELECT count(*) FROM lean_version v WHERE v.removed_at IS NOT NULL AND v.removed_at IS DISTINCT FROM "
        "(SELECT max(h.valid_to) FROM lean_version_history h WHERE h.version_id = v.id)",
    "a history row ends before it starts":
        "SELECT count(*) FROM lean_version_history WHERE valid_to IS NOT NULL AND valid_to <= valid_from",
    "two history rows of a version overlap":
        "SELECT count(*) FROM (SELECT valid_from, LAG(valid_from) OVER w AS prev_from, "
        "LAG(valid_to) OVER w AS prev_to FROM lean_version_history "
        "WINDOW w AS (PARTITION BY version_id ORDER BY valid_from)) x "
        "WHERE prev_from IS NOT NULL AND (prev_to IS NULL OR prev_to > valid_from)",
    "a history row is not from a successful run, at its start":
        "SELECT count(*) FROM lean_version_history h LEFT JOIN sync_run r ON r.id = h.sync_run_id "
        "WHERE r.id IS NULL OR r.status <> 'success' OR h.valid_from <> r.started_at",
    "a history row belongs to no version":
        "SELECT count(*) FROM lean_version_history h LEFT JOIN lean_version v ON v.id = h.version_id "
        "WHERE v.id IS NULL",
    "a version's first_seen_at is not its first history row":
        "SELECT count(*) FROM lean_version v WHERE v.first_seen_at IS DISTINCT FROM "
        "(SELECT min(h.valid_from) FROM lean_version_history h WHERE h.version_id = v.id)",
    "a version's updated_at is not its newest history row's start":
        "SELECT count(*) FROM lean_version v WHERE v.updated_at IS DISTINCT FROM "
        "(SELECT max(h.valid_from) FROM lean_version_history h WHERE h.version_id = v.id)",
    "a hash is not from a successful run, at its start":
        "SELECT count(*) FROM lean_hash h LEFT JOIN sync_run r ON r.id = h.sync_run_id "
        "WHERE r.id IS NULL OR r.status <> 'success' OR h.first_seen_at <> r.started_at",
    "a run is unfinished or has an unknown status":
        "SELECT count(*) FROM sync_run WHERE status NOT IN ('success', 'failed') "
        "OR finished_at IS NULL OR finished_at < started_at",
}


def check_integrity(url: str) -> None:
    """SQLite's own consistency checks of the file (a no-op elsewhere)."""
    if not is_sqlite(url):
        return
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    finally:
        engine.dispose()


def check_invariants(url: str) -> None:
    """What holds after every run, committed, failed or killed (SQLite:
    integrity_check too). Fails naming each broken rule and how often."""
    check_integrity(url)
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            broken = {rule: n for rule, query in INVARIANTS.items() if (n := conn.exec_driver_sql(query).scalar())}
    finally:
        engine.dispose()
    assert broken == {}, f"history invariants broken (rule: rows): {broken}"
