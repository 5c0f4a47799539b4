"""Overlapping runs and readers (reliability issue, item 6).

Runs of the installed `leansync` command on one database serialise on the
run lock: a second run waits, and gives up after --lock-timeout with exit 75
and a message. SQLite is in WAL mode, so readers (a reporting tool, the read
commands) never block a sync and a sync never blocks them; no run ever fails
with "database is locked", and no version ever gets two open history rows.
The lock is held from the test itself (leansync.history.lock.run_lock) wherever a
test needs a run to wait, so nothing depends on timing.

The runs that wait, time out or overlap are installed commands in processes
of their own; the read commands that go on beside them, `db upgrade`'s
timeout and the sync beside a long read run in-process
(tests/main_in_process.py), still other connections than the lock's holder
and the readers'.
"""

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from dbstate import check_invariants, data_tables, engine_for, is_sqlite, runs, snapshot
from leansync.store.database import make_engine, sqlite_path
from leansync.history.lock import lock_file_path, run_lock
from main_in_process import leansync_in_process

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
PROCESSES = 5
CHANGED = 300


def leansync(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([LEANSYNC, "--database-url", url, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err


@pytest.fixture
def payloads(write_response, tag_versions):
    """A: 1,500 versions; B: the same with CHANGED descriptions amended."""
    a = [dict(v) for v in tag_versions[:1500]]
    b = [dict(v, description=v["description"] + " (amended)") if i < CHANGED else v for i, v in enumerate(a)]
    return write_response(a), write_response(b)


@pytest.fixture
def synced(run, database_url, payloads):
    result = run("sync", "--from-file", payloads[0])
    assert result.exit_code == 0, result.stderr
    return database_url


def wait_until_waiting_for_lock(proc: subprocess.Popen, url: str) -> None:
    """Return once ``proc`` is polling the run lock (the test holds it)."""
    deadline = time.monotonic() + 60
    if is_sqlite(url):
        lock = str(lock_file_path(sqlite_path(url)))
        waiting = lambda: any(f.path == lock for f in psutil.Process(proc.pid).open_files())  # noqa: E731
    else:
        engine = engine_for(url)

        def waiting():
            with engine.connect() as conn:
                return conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND query LIKE '%pg_try_advisory_lock%'")).scalar() > 0
    try:
        while not waiting():
            assert proc.poll() is None, f"the run ended instead of waiting: {proc.communicate()}"
            assert time.monotonic() < deadline, "the run never reached the lock"
            time.sleep(0.02)
    finally:
        if not is_sqlite(url):
            engine.dispose()


@pytest.mark.slow
def test_a_run_waits_for_the_lock_and_then_proceeds(synced, payloads):
    url = synced
    engine = make_engine(url)
    try:
        with run_lock(engine, timeout=0):
            proc = leansync(url, "sync", "--lock-timeout", "60", "--json", "--from-file", str(payloads[1]))
            wait_until_waiting_for_lock(proc, url)
            assert proc.poll() is None
            assert len(runs(url)) == 1  # it has written nothing while waiting
            released = datetime.now(timezone.utc)
    finally:
        engine.dispose()
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    assert json.loads(out)["updated"] == CHANGED
    # It read the clock only once it had the lock, so its run follows the holder's.
    assert runs(url)[-1]["started_at"] >= released


@pytest.mark.slow
def test_lock_timeout_exits_75_and_changes_nothing(synced, payloads):
    url = synced
    before = snapshot(url)
    engine = make_engine(url)
    try:
        with run_lock(engine, timeout=0):
            code, out, err = finish(leansync(url, "sync", "--lock-timeout", "0.3", "--from-file", str(payloads[1])))
            upgrade = leansync_in_process("db", "upgrade", "--lock-timeout", "0.1", url=url)
    finally:
        engine.dispose()
    shown = make_engine(url).url.render_as_string(hide_password=True)
    assert (code, out) == (75, "")
    assert err == (f"leansync: error: another leansync run has held the lock on {shown} for more than "
                   "0.3 s; this run did nothing (it is safe to run again later)\n")
    assert upgrade.returncode == 75 and "0.1 s" in upgrade.stderr
    assert snapshot(url) == before  # not even a failed run row: it did nothing


def test_lock_timeout_with_json_reports_failure(synced, run, payloads):
    engine = make_engine(synced)
    try:
        with run_lock(engine, timeout=0):
            result = run("sync", "--json", "--lock-timeout", "0", "--from-file", payloads[1])
    finally:
        engine.dispose()
    assert result.exit_code == 75
    document = json.loads(result.stdout)
    assert (document["status"], document["run_id"]) == ("failed", None)
    assert "held the lock" in document["error"]


class Reader(threading.Thread):
    """A reporting tool: reads in short transactions as fast as it can and
    checks that each one sees a whole run (one open history row per listed
    version). On SQLite it does not wait for locks at all (busy_timeout 0)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.connection = self.engine.connect()  # opened first and kept: see test docstring
        if self.engine.dialect.name == "sqlite":
            self.connection.exec_driver_sql("PRAGMA busy_timeout = 0")
            self.connection.commit()
        else:
            self.connection = self.connection.execution_options(isolation_level="REPEATABLE READ")
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.reads = 0
        self.runs_seen: set[int] = set()

    def run(self):
        try:
            while not self.stop.is_set():
                with self.connection.begin():
                    listed = self.connection.execute(text(
                        "SELECT count(*) FROM lean_version WHERE removed_at IS NULL")).scalar()
                    open_rows = self.connection.execute(text(
                        "SELECT count(*) FROM lean_version_history WHERE valid_to IS NULL")).scalar()
                    self.runs_seen.add(self.connection.execute(text("SELECT count(*) FROM sync_run")).scalar())
                if listed != open_rows:
                    self.errors.append(f"saw {listed} listed versions but {open_rows} open history rows")
                self.reads += 1
        except Exception as exc:  # reported by the test
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def close(self):
        self.stop.set()
        self.join(timeout=30)
        self.connection.close()
        self.engine.dispose()


@pytest.mark.slow
def test_concurrent_runs_serialise_and_readers_are_never_blocked(synced, payloads):
    """Several runs started at once, alternating two payloads, with readers
    (a thread, and the read command in this process's main thread) going all the time."""
    url = synced
    reader = Reader(url)
    reader.start()
    try:
        syncs = [leansync(url, "sync", "--json", "--from-file", str(payloads[i % 2 == 0]))
                 for i in range(PROCESSES)]
        listings = []
        while any(p.poll() is None for p in syncs):
            listed = leansync_in_process("versions", "--format", "json", "--limit", "3", url=url)
            assert len(json.loads(listed.stdout)) == 3
            listings.append((listed.returncode, listed.stdout, listed.stderr))
            time.sleep(0.25)  # leave the two cores to the runs (still several listings a second)
        results = [finish(p) for p in syncs]
    finally:
        reader.close()

    assert listings  # the read command did run while the runs went on
    for code, out, err in results + listings:
        assert "database is locked" not in err
        assert (code, err) == (0, ""), err
    assert reader.errors == []
    assert reader.reads > 0 and len(reader.runs_seen) > 1  # it did read while the runs went on

    history = runs(url)
    assert [r["status"] for r in history] == ["success"] * (PROCESSES + 1)
    # Serialised: each run started after the previous one had finished, in id order.
    for earlier, later in zip(history, history[1:]):
        assert earlier["finished_at"] <= later["started_at"]
    # Each run's changes follow from the payload of the run committed just before it.
    for earlier, later in zip(history, history[1:]):
        expected = 0 if later["source"] == earlier["source"] else CHANGED
        assert (later["updated"], later["inserted"], later["removed"]) == (expected, 0, 0)
    check_invariants(url)


@pytest.mark.slow
def test_a_long_read_does_not_block_a_sync(synced, payloads):
    """A reader inside one long transaction keeps its snapshot while a sync
    commits next to it; neither waits for the other."""
    url = synced
    before = data_tables(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA busy_timeout = 0")
                conn.commit()
            else:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            count = "SELECT count(*) FROM lean_version_history"
            with conn.begin():
                rows_before = conn.execute(text(count)).scalar()
                synced = leansync_in_process("sync", "--json", "--from-file", payloads[1], url=url)
                assert (synced.returncode, synced.stderr) == (0, ""), synced.stderr
                assert conn.execute(text(count)).scalar() == rows_before  # still its own snapshot
            with conn.begin():
                assert conn.execute(text(count)).scalar() == rows_before + CHANGED
    finally:
        engine.dispose()
    assert data_tables(url) != before
    check_invariants(url)


@pytest.mark.sqlite_only
def test_wal_mode(synced):
    import sqlite3

    connection = sqlite3.connect(sqlite_path(synced))
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()
