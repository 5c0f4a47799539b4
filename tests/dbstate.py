"""Read a leansync database back for the reliability tests.

``snapshot`` gives the whole content of the leansync tables in a form that
two runs of the same sync can be compared by: every timestamp a run writes
is that run's ``sync_run.started_at``, so timestamps are replaced by the
number of the run that wrote them, and ids that only number rows (run ids,
history ids) by their order. ``check_invariants`` asserts what must hold
after any run, completed or killed.
"""

from collections import defaultdict
from datetime import datetime

from sqlalchemy import MetaData, select, text

from leansync.database import make_engine
from leansync.models import lean_hash, lean_version, lean_version_history, sync_run

TIMESTAMP_COLUMNS = {
    "lean_version": ("first_seen_at", "last_seen_at", "updated_at", "removed_at"),
    "lean_hash": ("first_seen_at",),
    "lean_version_history": ("valid_from", "valid_to"),
}


def engine_for(url: str):
    return make_engine(url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def raw_rows(url: str) -> dict[str, list[dict]]:
    """Every row of every leansync table, as dicts, in primary-key order."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            out = {}
            for table in (sync_run, lean_version, lean_hash, lean_version_history):
                rows = conn.execute(select(table).order_by(*table.primary_key.columns))
                out[table.name] = [dict(r._mapping) for r in rows]
            return out
    finally:
        engine.dispose()


def snapshot(url: str) -> dict[str, list]:
    """The database content with run-specific timestamps and ids normalised."""
    rows = raw_rows(url)
    runs = sorted(rows["sync_run"], key=lambda r: (r["started_at"], r["id"]))
    run_number = {r["id"]: n for n, r in enumerate(runs, 1)}
    moment = {r["started_at"]: f"run{run_number[r['id']]}" for r in runs}

    def when(value: datetime | None):
        # A timestamp no run started at stays as it is, so a stray value differs.
        return None if value is None else moment.get(value, value)

    out: dict[str, list] = {
        "sync_run": [
            dict(r, id=run_number[r["id"]], started_at=when(r["started_at"]),
                 finished_at=r["finished_at"] is not None)
            for r in runs
        ]
    }
    for name in ("lean_version", "lean_hash", "lean_version_history"):
        normalised = []
        for r in rows[name]:
            r = dict(r)
            for column in TIMESTAMP_COLUMNS[name]:
                r[column] = when(r[column])
            if "sync_run_id" in r:
                r["sync_run_id"] = run_number.get(r["sync_run_id"], r["sync_run_id"])
            if name == "lean_version_history":
                del r["id"]  # a serial number only
            normalised.append(r)
        normalised.sort(key=repr)
        out[name] = normalised
    return out


def data_tables(url: str) -> dict[str, list]:
    """The snapshot without sync_run: what a failed run must leave untouched."""
    return {k: v for k, v in snapshot(url).items() if k != "sync_run"}


def runs(url: str) -> list[dict]:
    return raw_rows(url)["sync_run"]


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


def check_invariants(url: str) -> None:
    """What holds after every run, committed, failed or killed."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            versions = {r.id: r for r in conn.execute(select(lean_version))}
            history = defaultdict(list)
            for r in conn.execute(select(lean_version_history).order_by(
                    lean_version_history.c.version_id, lean_version_history.c.valid_from)):
                history[r.version_id].append(r)
            run_rows = {r.id: r for r in conn.execute(select(sync_run))}
            hashes = list(conn.execute(select(lean_hash)))
            open_counts = conn.execute(text(
                "SELECT version_id, count(*) FROM lean_version_history "
                "WHERE valid_to IS NULL GROUP BY version_id HAVING count(*) > 1")).fetchall()
    finally:
        engine.dispose()

    assert open_counts == [], f"versions with two open history rows: {open_counts[:5]}"
    assert set(history) == set(versions), "every version has history, and only versions do"
    api_columns = ("name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")
    for vid, version in versions.items():
        rows = history[vid]
        open_rows = [r for r in rows if r.valid_to is None]
        if version.removed_at is None:
            assert len(open_rows) == 1 and open_rows[0] is rows[-1], f"version {vid}: one open row, the last"
            assert tuple(getattr(rows[-1], c) for c in api_columns) == tuple(getattr(version, c) for c in api_columns)
        else:
            assert open_rows == [], f"removed version {vid} has an open history row"
            assert rows[-1].valid_to == version.removed_at
        for earlier, later in zip(rows, rows[1:]):
            assert earlier.valid_to is not None and earlier.valid_to <= later.valid_from, f"version {vid} overlaps"
        for r in rows:
            assert r.valid_to is None or r.valid_from < r.valid_to
            run = run_rows[r.sync_run_id]
            assert run.status == "success" and r.valid_from == run.started_at
        assert version.first_seen_at == rows[0].valid_from
        assert version.first_seen_at <= version.updated_at <= version.last_seen_at
    for h in hashes:
        assert run_rows[h.sync_run_id].status == "success"
        assert h.first_seen_at == run_rows[h.sync_run_id].started_at
    for run in run_rows.values():
        assert run.status in ("success", "failed")
        assert run.finished_at is not None and run.started_at <= run.finished_at
