"""PostgreSQL: a run that lost its lock cannot commit (issue 15, item 1).

The run lock is a session advisory lock, and its session sits idle while the
run waits for the API. Here the server really ends that session in the
middle of the fetch, the two ways that happen in production: an
``idle_session_timeout`` (set on the database, as an administrator would)
and an administrator's ``pg_terminate_backend``. While the first run still
waits for its answer, a second run takes the lock and commits. Then the
first run gets its answer: it must fail with one sentence, write nothing
(not even a `failed` run, which would land beside the second run's), and the
run after it must succeed with a sound history.

The answer is held back by the fake QuantConnect until the test releases
it, so nothing depends on timing but the server's own timeout.

The run that loses its lock is the installed command, in a process of its
own; the runs before and after it (the history, the second run that takes
the lock, the third) run in-process (tests/main_in_process.py), each on
sessions of its own.
"""

import json
import os
import subprocess
import threading
import time

import pytest

from dbstate import check_invariants, data_tables, engine_for, runs
from faults import LEANSYNC, error_sentence
from leansync.errors import LockLost
from leansync.history.lock import PG_LOCK_KEY, run_lock
from leansync.store.database import make_engine
from main_in_process import leansync_in_process
from qc_server import FakeQuantConnect, Reply

pytestmark = pytest.mark.postgres_only

HOLDER = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
          f"AND classid = {(PG_LOCK_KEY >> 32) & 0xFFFFFFFF} AND objid = {PG_LOCK_KEY & 0xFFFFFFFF}")


def sql(url: str, statement: str):
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            result = conn.exec_driver_sql(statement)
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def holding_back(qc: FakeQuantConnect, document: dict) -> threading.Event:
    """Queue ``document`` as the server's next answer, held back until the returned Event is set."""
    release = threading.Event()

    def body():
        release.wait(120)
        yield json.dumps(document).encode()

    qc.reply(Reply(chunks=body()))
    return release


@pytest.fixture
def held_answer(tag_versions):
    """The fake QuantConnect, whose first answer (changes to every version) waits for ``release.set()``;
    and that Event."""
    changed = [dict(v, description=f"{v['description']} (changed by the run that lost its lock)")
               for v in tag_versions[:20]]
    with FakeQuantConnect(versions=tag_versions[:20]) as qc:
        release = holding_back(qc, {"success": True, "errors": [], "versions": changed})
        yield qc, release
        release.set()


def end_by_idle_session_timeout(url: str, database: str, proc: subprocess.Popen) -> None:
    """The timeout was set before the run started; the server ends the idle lock session by itself."""
    wait_for(lambda: sql(url, HOLDER) is None, "the server ended the lock's idle session", proc)


def end_by_pg_terminate_backend(url: str, database: str, proc: subprocess.Popen) -> None:
    holder = sql(url, HOLDER)
    assert holder is not None, "nobody holds the run lock while the run fetches"
    assert sql(url, f"SELECT pg_terminate_backend({holder})") is True
    wait_for(lambda: sql(url, HOLDER) is None, "the terminated session released the lock", proc)


@pytest.mark.parametrize("fault,reason", [
    (end_by_idle_session_timeout, "terminating connection due to idle-session timeout"),
    (end_by_pg_terminate_backend, "terminating connection due to administrator command"),
], ids=["idle_session_timeout", "pg_terminate_backend"])
def test_a_run_whose_lock_session_ended_writes_nothing(database_url, postgres_database, held_answer, tag_versions,
                                                       write_response, fault, reason):
    url = database_url
    qc, release = held_answer
    assert leansync_in_process("sync", "-q", "--from-file", write_response(tag_versions[:20]), url=url).returncode == 0
    if fault is end_by_idle_session_timeout:
        sql(url, f'ALTER DATABASE "{postgres_database}" SET idle_session_timeout = 1000')

    first = subprocess.Popen([str(LEANSYNC), "--database-url", url, "sync", "--timeout", "120"],
                             env={**os.environ, **qc.env()}, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: qc.count == 1, "the run asked for its answer", first)  # it holds the lock now
        fault(url, postgres_database, first)
        sql(url, f'ALTER DATABASE "{postgres_database}" RESET idle_session_timeout')

        # The lock is free: another run takes it at once and commits.
        second = leansync_in_process("sync", "--json", "--lock-timeout", "0", "--from-file",
                                     write_response(tag_versions[:21]), url=url)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["inserted"] == 1
        after_second = data_tables(url)

        release.set()  # the first run gets its answer, and must not write it
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 1, (out, err)
    message = error_sentence(subprocess.CompletedProcess(first.args, first.returncode, out, err))
    assert message == (f"lost the connection to the database {url} and with it the run lock ({reason}); "
                       "this run wrote nothing (it is safe to run again)")
    assert data_tables(url) == after_second
    assert [r["status"] for r in runs(url)] == ["success", "success"]  # no `failed` row beside the second run

    third = leansync_in_process("sync", "--json", "--lock-timeout", "0", "--from-file",
                                write_response(tag_versions[:20]), url=url)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["removed"] == 1
    history = runs(url)
    assert [r["status"] for r in history] == ["success"] * 3
    assert [r["started_at"] for r in history] == sorted(r["started_at"] for r in history)
    check_invariants(url)


def test_a_failed_run_whose_lock_session_ended_records_no_failed_run(database_url, tag_versions, write_response):
    """The answer is bad, so the run fails anyway: with its lock gone, it must not record that either."""
    url = database_url
    assert leansync_in_process("sync", "-q", "--from-file", write_response(tag_versions[:20]), url=url).returncode == 0
    with FakeQuantConnect(versions=tag_versions[:20]) as qc:
        release = holding_back(qc, {"success": False, "errors": ["Internal error, please retry."]})
        endpoint = qc.url + "lean/versions/read"
        run = subprocess.Popen([str(LEANSYNC), "--database-url", url, "sync", "--timeout", "120"],
                               env={**os.environ, **qc.env()}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: qc.count == 1, "the run asked for its answer", run)
            end_by_pg_terminate_backend(url, "", run)
            second = leansync_in_process("sync", "-q", "--lock-timeout", "0", "--from-file",
                                         write_response(tag_versions[:21]), url=url)
            assert second.returncode == 0, second.stderr
            after_second = data_tables(url)
            release.set()
            out, err = run.communicate(timeout=120)
        finally:
            release.set()
            if run.poll() is None:
                run.kill()
                run.communicate()
    assert run.returncode == 1, (out, err)
    assert error_sentence(subprocess.CompletedProcess(run.args, 1, out, err)) == (
        f"QuantConnect reported success: false from {endpoint}: Internal error, please retry.")
    assert data_tables(url) == after_second
    assert [r["status"] for r in runs(url)] == ["success", "success"]
    check_invariants(url)


def test_a_lost_lock_session_is_never_replaced_by_a_new_one(database_url):
    """SQLAlchemy would silently open a new session on the next use of an invalidated connection, a session
    without the lock: every later use through the held lock refuses instead."""
    url = database_url
    engine = make_engine(url)
    try:
        with run_lock(engine, timeout=0) as lock:
            with lock.connect() as conn:
                holder = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            assert sql(url, HOLDER) == holder
            assert sql(url, f"SELECT pg_terminate_backend({holder})") is True
            for _ in range(2):  # the first use finds the session gone; the second must not reconnect
                with pytest.raises(LockLost, match="and with it the run lock"):
                    with lock.begin() as conn:
                        conn.exec_driver_sql("SELECT 1")
            assert sql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leansync' "
                            "AND pid <> pg_backend_pid()") == 0
    finally:
        engine.dispose()
