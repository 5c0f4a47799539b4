"""Write-light runs: a run that finds nothing new writes its sync_run row and
nothing else; a run that changes k versions writes O(k) rows.

Rows written are counted per table by the database itself: on SQLite with
the connection's total_changes() around each statement of the in-process
run (attributed to the table the statement writes), on PostgreSQL with the
server's per-table counters (pg_stat_user_tables, flushed when the run's
sessions end). On SQLite the database file itself is compared page by page.
"""

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

from leansync.store.database import sqlite_path

LEANSYNC = Path(sys.executable).parent / "leansync"
TABLES = ("sync_run", "lean_version", "lean_hash", "lean_version_history", "alembic_version")
WRITES = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


def sqlite_row_writes(counts: Counter):
    """Count the rows each statement of this process changes, by the table it writes.

    A statement's changes are those between its start and the next statement's
    (or the commit): an INSERT ... RETURNING counts its row only once its
    result has been read.
    """

    def settle(conn):
        table, start = conn.info.pop("writing", (None, None))
        changed = conn.connection.dbapi_connection.total_changes - start if start is not None else 0
        if changed:
            counts[table or "a statement that writes nothing?"] += changed

    def before(conn, _cursor, statement, _params, _context, _many):
        settle(conn)
        match = WRITES.match(statement)
        conn.info["writing"] = (match.group(1) if match else None, conn.connection.dbapi_connection.total_changes)

    return before, settle


@contextmanager
def counting_sqlite():
    counts: Counter = Counter()
    before, settle = sqlite_row_writes(counts)
    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "commit", settle)
    try:
        yield counts
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "commit", settle)


def pg_counters(url: str) -> dict[str, tuple[int, int, int]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            rows = conn.exec_driver_sql(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                "WHERE schemaname = 'public'").all()
        return {name: (ins, upd, dele) for name, ins, upd, dele in rows}
    finally:
        engine.dispose()


@contextmanager
def counting_postgresql(url: str):
    """Rows inserted, updated and deleted per table, as (ins, upd, del) deltas."""
    counts: Counter = Counter()
    start = pg_counters(url)
    yield counts
    # A session's counts reach the shared statistics when it ends: wait for the run's own sync_run row.
    deadline = time.monotonic() + 30
    while True:
        end = pg_counters(url)
        if end["sync_run"][0] > start["sync_run"][0] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for table, after in end.items():
        before = start.get(table, (0, 0, 0))
        for kind, a, b in zip(("inserted", "updated", "deleted"), after, before):
            if a - b:
                counts[f"{table} {kind}"] += a - b


def sync(run, path):
    result = run("sync", "--json", "--from-file", path)
    assert result.exit_code == 0, result.output
    return result


def writes_of(run, database_url, path) -> Counter:
    """Rows the sync of ``path`` writes, per table (SQLite: all kinds of change together)."""
    if database_url.startswith("sqlite"):
        with counting_sqlite() as counts:
            sync(run, path)
        return counts
    with counting_postgresql(database_url) as counts:
        sync(run, path)
    return counts


@pytest.fixture
def versions(tag_versions):
    return [dict(v) for v in tag_versions[:300]]


def test_a_run_that_finds_nothing_new_writes_only_its_sync_run_row(run, database_url, write_response, versions):
    path = write_response(versions)
    sync(run, path)
    counts = writes_of(run, database_url, path)
    if database_url.startswith("sqlite"):
        assert counts == {"sync_run": 2}  # its row, and finished_at at the commit
    else:
        assert counts == {"sync_run inserted": 1, "sync_run updated": 1}


def test_a_run_that_changes_k_versions_writes_rows_for_those_only(run, database_url, write_response, versions):
    sync(run, write_response(versions))
    changed = [dict(v) for v in versions]
    changed[0]["description"] += " (rebuilt)"      # a modelled field
    changed[1]["deprecated"] = True                # another key
    changed[2]["created"] = changed[2]["created"].replace(" ", "T") + "Z"  # the same object, other bytes
    del changed[3]                                 # removed
    changed.append({**versions[0], "id": 1, "leanHash": "e" * 40, "leanCloudHash": "f" * 40})  # new, new hashes
    counts = writes_of(run, database_url, write_response(changed))
    if database_url.startswith("sqlite"):
        assert counts == {
            "sync_run": 2,
            "lean_version": 1 + 3 + 1,  # the new one; two new states and a refresh; the removal
            "lean_version_history": 3 + 3,  # two closed by a change and one by the removal; three opened
            "lean_hash": 2,
        }
    else:
        assert counts == {
            "sync_run inserted": 1, "sync_run updated": 1,
            "lean_version inserted": 1, "lean_version updated": 3 + 1,
            "lean_version_history inserted": 3, "lean_version_history updated": 3,
            "lean_hash inserted": 2,
        }


@pytest.mark.sqlite_only
def test_a_no_op_run_at_10000_versions_changes_at_most_16_pages_of_the_file(database_url, tmp_path, tag_versions,
                                                                            write_response):
    """Through the installed command, as cron runs it; the WAL checkpointed into the file before and after."""
    many = [dict(v, id=v["id"] + 100_000 * k, name=f"{v['name']}-{k}") for k in range(3) for v in tag_versions]
    path = write_response(many[:10_000])
    env = {"LEANSYNC_DATABASE_URL": database_url, "PATH": str(LEANSYNC.parent)}
    file = sqlite_path(database_url)

    def leansync_sync():
        result = subprocess.run([str(LEANSYNC), "sync", "-q", "--from-file", str(path)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr

    def checkpointed_pages() -> list[bytes]:
        with sqlite3.connect(file) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        data = file.read_bytes()
        return [data[i:i + size] for i in range(0, len(data), size)]

    leansync_sync()
    before = checkpointed_pages()
    shutil.copyfile(file, tmp_path / "before.db")  # kept for a look when this fails
    leansync_sync()
    after = checkpointed_pages()
    changed = [n for n, (a, b) in enumerate(zip(before, after)) if a != b] + list(range(len(before), len(after)))
    assert len(before) > 1000  # the database really holds 10,000 versions
    assert len(changed) <= 16, f"{len(changed)} pages changed: {changed}"
