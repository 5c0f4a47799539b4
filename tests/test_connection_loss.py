"""The PostgreSQL connection dies in the middle of a run (issue 11, item 4).

Two ways, both started once the run's write transaction is known to be
writing (its backend holds a transaction id, as in tests/test_atomicity.py):
an administrator's pg_terminate_backend from another session, and a fast
shutdown of the server (a throwaway cluster of its own, so the session's
server survives for the other tests). Either way: exit 1, leansync's one
sentence and nothing else on stderr, no partial data and no `failed` row
(the run's lock went with its session: see tests/test_lock_loss.py), the lock
released, and the next run after the server is back succeeds.

The run that loses its connection is the installed command in a process of
its own; the history before it and the next run run in-process
(tests/main_in_process.py).
"""

import json
import subprocess
import time

import pytest

from dbstate import check_invariants, data_tables, runs
from faults import LEANSYNC, PREFIX
from leansync.store.database import make_engine
from main_in_process import leansync_in_process
from pg_cluster import PostgresCluster
from samples import many_versions, response

pytestmark = pytest.mark.postgres_only
NEW_VERSIONS = 5_000
WRITING = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'leansync' "
           "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")


@pytest.fixture
def payloads(tmp_path, tag_versions):
    small, big = tmp_path / "small.json", tmp_path / "big.json"
    small.write_text(json.dumps(response(tag_versions[:20])))
    big.write_text(json.dumps(response(many_versions(tag_versions, NEW_VERSIONS + 20))))
    return small, big


def start_sync(url: str, payload) -> subprocess.Popen:
    return subprocess.Popen([str(LEANSYNC), "--database-url", url, "sync", "--from-file", str(payload)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def when_writing(url: str, proc: subprocess.Popen, fault) -> bool:
    """Run ``fault(conn, pid)`` as soon as the run's transaction writes; False if the run ended first."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            while proc.poll() is None:
                pid = conn.exec_driver_sql(WRITING).scalar()
                conn.rollback()  # pg_stat_activity is a snapshot per transaction
                if pid is not None:
                    fault(conn, pid)
                    return True
                time.sleep(0.002)
    finally:
        engine.dispose()
    return False


def assert_lost_cleanly(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert err.count("\n") == 1 and err.startswith(PREFIX), err  # leansync's sentence and nothing else
    return err[len(PREFIX):-1]


def wait_until_the_run_lock_is_free(url: str) -> None:
    """A terminated backend releases its locks as it exits, which may come just after its client saw the end."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for _ in range(300):
                held = conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").scalar()
                conn.rollback()
                if not held:
                    return
                time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError("the killed run's lock was still held after 30 s")


def test_a_terminated_backend_fails_the_run_cleanly(database_url, payloads):
    small, big = payloads
    assert leansync_in_process("sync", "-q", "--from-file", small, url=database_url).returncode == 0
    before = data_tables(database_url)

    proc = start_sync(database_url, big)
    landed = when_writing(database_url, proc, lambda conn, pid: conn.exec_driver_sql(
        f"SELECT pg_terminate_backend({pid})"))
    assert landed, proc.communicate()
    message = assert_lost_cleanly(proc)
    assert message.startswith(f"lost the connection to the database {database_url} and with it the run lock ("), \
        message
    assert data_tables(database_url) == before
    # No `failed` row: the lock went with the session, and another run may hold it by now.
    assert [r["status"] for r in runs(database_url)] == ["success"]

    wait_until_the_run_lock_is_free(database_url)
    again = leansync_in_process("sync", "--json", "--lock-timeout", "0", "--from-file", big, url=database_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["inserted"] == NEW_VERSIONS
    check_invariants(database_url)


@pytest.fixture
def own_cluster(postgres_cluster):
    cluster = PostgresCluster(postgres_cluster.bindir)
    cluster.start()
    yield cluster
    cluster.stop()


def test_a_fast_shutdown_of_the_server_fails_the_run_cleanly(database_url, own_cluster, payloads):
    """database_url only selects this test for PostgreSQL; the run uses a cluster of its own."""
    url = own_cluster.url(own_cluster.create_database())
    small, big = payloads
    assert leansync_in_process("sync", "-q", "--from-file", small, url=url).returncode == 0
    before = data_tables(url)

    proc = start_sync(url, big)
    landed = when_writing(url, proc, lambda conn, pid: own_cluster.stop_server("fast"))
    assert landed, proc.communicate()
    message = assert_lost_cleanly(proc)
    assert message.startswith(f"lost the connection to the database {url} and with it the run lock ("), message
    own_cluster.restart_server()
    assert data_tables(url) == before
    assert [r["status"] for r in runs(url)] == ["success"]  # the server was gone: nowhere to record it

    again = leansync_in_process("sync", "--json", "--lock-timeout", "0", "--from-file", big, url=url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["inserted"] == NEW_VERSIONS
    check_invariants(url)
