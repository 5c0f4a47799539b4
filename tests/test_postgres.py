"""PostgreSQL-specific behaviour, against the real throwaway server of conftest.py.

The whole suite already runs on PostgreSQL through the parametrised
``database_url`` fixture; these tests cover what only PostgreSQL has: its
column types, the psycopg 3 driver behind plain ``postgresql://`` URLs, the
advisory lock across processes, many processes syncing at once, pipelined
bulk writes, and a server that cannot be reached.

The installed command runs wherever its process matters: a run refused or
kept waiting by another session's lock, killed, or one of several at once,
and the plain URL from the environment. Runs that only follow or precede
those, and the one-sentence errors of an unreachable server, run in-process
(tests/main_in_process.py: stderr as the installed command prints it).
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from freezegun import freeze_time
from psycopg.pq import Trace
from sqlalchemy import Engine, Integer, Text, event
from sqlalchemy.engine import make_url

from dbstate import check_invariants
from leansync.store.database import SCHEMA_HEAD
from leansync.history.lock import PG_LOCK_KEY
from leansync.store.models import UTCDateTime, metadata
from main_in_process import leansync_in_process
from pg_cluster import free_port
from qc_server import FakeQuantConnect, Reply

pytestmark = pytest.mark.postgres_only

LEANSYNC = Path(sys.executable).parent / "leansync"
T1 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
T2 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=timezone.utc)


def leansync(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """The installed command, in its own process."""
    return subprocess.run([str(LEANSYNC), *map(str, args)], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def connect(url: str) -> psycopg.Connection:
    """A plain psycopg connection (autocommit) to the database behind a test URL."""
    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True)


def query(url: str, sql: str, params=None) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def assert_one_sentence(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leansync: error: "), stderr
    assert "Traceback" not in stderr


# -- column types ---------------------------------------------------------------

def expected_pg_type(column) -> str:
    if column.name in ("raw", "extra"):
        return "jsonb"
    if isinstance(column.type, UTCDateTime):
        return "timestamp with time zone"
    return {Text: "text", Integer: "integer"}.get(type(column.type), column.type.__visit_name__)


def test_every_column_has_its_postgresql_type(database_url, run, write_response, tag_versions):
    assert run("sync", "--from-file", write_response(tag_versions[:5])).exit_code == 0
    found = {
        (table, column): data_type
        for table, column, data_type in query(
            database_url,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = ANY(%s)",
            [list(metadata.tables)],
        )
    }
    expected = {(t.name, c.name): expected_pg_type(c) for t in metadata.tables.values() for c in t.columns}
    assert found == expected
    assert found["lean_version", "public"] == "boolean"
    assert found["lean_version_history", "public"] == "boolean"
    assert found["lean_version", "raw"] == found["lean_version_history", "extra"] == "jsonb"
    assert found["sync_run", "started_at"] == "timestamp with time zone"


def test_no_relation_uses_a_zoneless_timestamp_plain_json_or_varchar(database_url, run, write_response,
                                                                      tag_versions):
    """Views included: what a reporting tool reads must carry the time zone too."""
    assert run("sync", "--from-file", write_response(tag_versions[:5])).exit_code == 0
    rows = query(
        database_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name <> 'alembic_version'",
    )
    assert {t for t, _, _ in rows} >= set(metadata.tables)
    bad = [(t, c, d) for t, c, d in rows if d in ("timestamp without time zone", "json", "character varying")]
    assert bad == []


def test_timestamps_are_utc_whatever_the_session_time_zone(database_url, postgres_cluster, run,
                                                            write_response, tag_versions, monkeypatch):
    monkeypatch.delenv("PGTZ", raising=False)  # it would override the database's setting
    name = make_url(database_url).database
    with postgres_cluster.admin() as admin:
        # +13:45 in March: any code that drops or assumes a zone shows it.
        admin.execute(f'ALTER DATABASE "{name}" SET timezone TO \'Pacific/Chatham\'')
    versions = tag_versions[:20]
    payload = write_response(versions)
    with freeze_time(T1):
        assert run("sync", "--from-file", payload).exit_code == 0
    with freeze_time(T2):
        second = run("sync", "--json", "--from-file", payload)
    assert second.exit_code == 0, second.output
    # `created` read back from PostgreSQL compares equal to the payload's UTC value.
    assert json.loads(second.stdout)["unchanged"] == 20

    assert query(database_url, "SHOW timezone") == [("Pacific/Chatham",)]
    utc = query(database_url, "SELECT started_at AT TIME ZONE 'UTC' FROM sync_run ORDER BY id")
    assert utc == [(T1.replace(tzinfo=None),), (T2.replace(tzinfo=None),)]
    seen = query(database_url, "SELECT DISTINCT first_seen_at AT TIME ZONE 'UTC', last_seen_at AT TIME ZONE 'UTC' "
                               "FROM lean_version_current")
    assert seen == [(T1.replace(tzinfo=None), T2.replace(tzinfo=None))]
    first = versions[0]
    created = query(database_url, "SELECT to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                                  "FROM lean_version WHERE id = %s", [first["id"]])
    assert created == [(first["created"],)]


def test_raw_is_jsonb_that_sql_can_query(database_url, run, write_response, tag_versions):
    version = dict(tag_versions[0], description="Füße ✓", futureField={"nested": [1, 2.5, None], "flag": False})
    assert run("sync", "--from-file", write_response([version])).exit_code == 0
    rows = query(database_url, "SELECT jsonb_typeof(raw), raw->'futureField'->'nested'->>1, raw->>'description', "
                               "raw FROM lean_version WHERE id = %s", [version["id"]])
    assert rows == [("object", "2.5", "Füße ✓", version)]
    # jsonb operators work (the README's example).
    assert query(database_url, "SELECT id, raw->>'name' FROM lean_version WHERE raw ? 'futureField'") == [
        (version["id"], version["name"])]


# -- URLs and the driver --------------------------------------------------------

# Runs leansync in a fresh interpreter where psycopg2 cannot be imported, so the
# test proves a plain URL needs only psycopg 3 even where psycopg2 is installed.
WITHOUT_PSYCOPG2 = "import sys; sys.modules['psycopg2'] = None; from leansync.cli import main; main()"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_plain_url_uses_psycopg_3(database_url, scheme, write_response, tag_versions, tmp_path):
    plain = database_url.replace("postgresql+psycopg://", f"{scheme}://", 1)
    assert plain.startswith(f"{scheme}://postgres@127.0.0.1:")
    # cwd outside the checkout: `-c` puts the cwd first on sys.path, and the
    # installed package (with its migrations) is what must run.
    synced = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG2, "--database-url", plain, "sync", "--json",
                             "--from-file", write_response(tag_versions[:30])],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["inserted"] == 30
    assert query(database_url, "SELECT count(*) FROM lean_version") == [(30,)]


def test_the_installed_command_works_with_a_plain_url_and_the_env_variable(database_url, write_response,
                                                                            tag_versions):
    plain = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    synced = leansync("sync", "--from-file", write_response(tag_versions[:10]), env={"LEANSYNC_DATABASE_URL": plain})
    assert synced.returncode == 0, synced.stderr
    current = leansync("db", "current", env={"LEANSYNC_DATABASE_URL": plain})
    assert current.returncode == 0, current.stderr
    assert current.stdout.splitlines() == [plain, f"revision: {SCHEMA_HEAD} (head)"]


# -- the advisory lock ----------------------------------------------------------

def hold_lock(url: str) -> psycopg.Connection:
    conn = connect(url)
    conn.execute("SELECT pg_advisory_lock(%s)", [PG_LOCK_KEY])
    return conn


def advisory_holders(url: str) -> list[int]:
    """Server pids holding an advisory lock in this database."""
    return [pid for (pid,) in query(
        url, "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
             "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()")]


WHO_HOLDS_THE_LOCK = """
SELECT pid, application_name, backend_start FROM pg_locks JOIN pg_stat_activity USING (pid)
WHERE locktype = 'advisory' AND pg_locks.database = (SELECT oid FROM pg_database WHERE datname = current_database());
"""


def wait_until(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def test_a_held_lock_makes_a_run_exit_75_and_touch_nothing(database_url, write_response, tag_versions):
    payload = write_response(tag_versions[:10])
    holder = hold_lock(database_url)
    try:
        blocked = leansync("--database-url", database_url, "sync", "--from-file", payload, "--lock-timeout", "0.2")
        assert blocked.returncode == 75, blocked.stderr
        assert_one_sentence(blocked.stderr)
        assert "lock" in blocked.stderr and "0.2 s" in blocked.stderr
        # The lock comes before the migration: the database is still empty.
        assert query(database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    finally:
        holder.close()
    done = leansync_in_process("sync", "--from-file", payload, "--lock-timeout", "0.5", url=database_url)
    assert done.returncode == 0, done.stderr
    assert advisory_holders(database_url) == []  # released at the end of the run


def test_db_upgrade_waits_for_the_same_lock(database_url):
    holder = hold_lock(database_url)
    try:
        blocked = leansync("--database-url", database_url, "db", "upgrade", "--lock-timeout", "0.2")
        assert blocked.returncode == 75, blocked.stderr
        assert_one_sentence(blocked.stderr)
    finally:
        holder.close()


def test_the_lock_belongs_to_one_database(database_url, postgres_cluster, write_response, tag_versions):
    other = postgres_cluster.url(postgres_cluster.create_database())
    try:
        holder = hold_lock(other)
        try:
            done = leansync_in_process("sync", "--from-file", write_response(tag_versions[:10]), "--lock-timeout", "0",
                                       url=database_url)
            assert done.returncode == 0, done.stderr
        finally:
            holder.close()
    finally:
        postgres_cluster.drop_database(make_url(other).database)


def test_a_waiting_run_proceeds_once_the_lock_is_released(database_url, write_response, tag_versions):
    holder = hold_lock(database_url)
    try:
        waiting = subprocess.Popen(
            [str(LEANSYNC), "--database-url", database_url, "sync", "--json", "--from-file",
             write_response(tag_versions[:10]), "--lock-timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # It is polling for the lock: its session has asked for it at least once.
            wait_until(lambda: query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                     "datname = current_database() AND query LIKE '%%pg_try_advisory_lock%%'")
                       == [(1,)], "the second run to ask for the lock")
            assert waiting.poll() is None
        finally:
            holder.close()
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert json.loads(out)["inserted"] == 10


@pytest.mark.slow
def test_a_killed_run_leaves_no_stale_lock(database_url, write_response, tag_versions):
    """kill -9 mid-run: the server ends the session and with it the lock."""
    with FakeQuantConnect(versions=tag_versions[:10]) as qc:
        qc.reply(Reply(delay=120))  # the run holds the lock while it waits for this answer
        hung = subprocess.Popen([str(LEANSYNC), "--database-url", database_url, "sync", "--timeout", "300"],
                                env={**os.environ, **qc.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: qc.count == 1, "the run to call the API")
            assert len(advisory_holders(database_url)) == 1
            # The README's "who holds the lock" query names leansync.
            holders = query(database_url, WHO_HOLDS_THE_LOCK)
            assert [row[1] for row in holders] == ["leansync"]
            hung.send_signal(signal.SIGKILL)
            hung.communicate(timeout=60)
        finally:
            if hung.poll() is None:
                hung.kill()
        wait_until(lambda: advisory_holders(database_url) == [], "the server to drop the dead session's lock")
        after = leansync_in_process("sync", "--json", "--lock-timeout", "0", url=database_url, env=qc.env())
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["inserted"] == 10
    # The killed run never committed, so it left no sync_run row.
    assert query(database_url, "SELECT status FROM sync_run") == [("success",)]


# -- several processes at once --------------------------------------------------

def payload_for(k: int, versions: list[dict]) -> list[dict]:
    """Run k's list: every version but a k-dependent tenth, some described differently."""
    return [dict(v, description=f"{v['description']} (run {k})") if i % 7 == k else v
            for i, v in enumerate(versions) if i % 10 != k]


@pytest.mark.slow
def test_concurrent_syncs_serialise(database_url, write_response, tag_versions):
    """Several `leansync sync` processes on one empty database, all at once."""
    versions = tag_versions[:300]
    payloads = {k: payload_for(k, versions) for k in range(6)}
    procs = {
        k: subprocess.Popen([str(LEANSYNC), "--database-url", database_url, "sync", "--json",
                             "--from-file", write_response(payload), "--lock-timeout", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, payload in payloads.items()
    }
    results = {k: p.communicate(timeout=300) for k, p in procs.items()}
    for k, proc in procs.items():
        assert proc.returncode == 0, results[k][1]
        assert results[k][1] == ""
    run_payload = {json.loads(out)["run_id"]: k for k, (out, _) in results.items()}

    runs = query(database_url, "SELECT id, started_at, finished_at, status FROM sync_run ORDER BY id")
    assert [r[0] for r in runs] == sorted(run_payload)
    assert {r[3] for r in runs} == {"success"}
    # One at a time, in id order: each run started after the previous one finished.
    for before, after in zip(runs, runs[1:]):
        assert before[1] <= before[2] <= after[1]
    # The first run inserted everything; later ones only changed things.
    first = json.loads(results[run_payload[runs[0][0]]][0])
    assert first["inserted"] == len(payloads[run_payload[runs[0][0]]])
    assert query(database_url, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]

    # The history replays the runs in their order: "as of" each run's time is its list.
    for run_id, started_at, _, _ in runs:
        expected = {v["id"]: v["description"] for v in payloads[run_payload[run_id]]}
        as_of = dict(query(database_url, "SELECT version_id, description FROM lean_version_history "
                                         "WHERE valid_from <= %(t)s AND (valid_to IS NULL OR valid_to > %(t)s)",
                           {"t": started_at}))
        assert as_of == expected, f"run {run_id}"
    assert query(database_url, "SELECT count(*) FROM lean_version_history WHERE valid_to IS NULL "
                               "GROUP BY version_id HAVING count(*) > 1") == []
    check_invariants(database_url)


# -- set-based writes -----------------------------------------------------------

def round_trips(run, payload: Path, trace_path: Path) -> Counter:
    """Frontend protocol messages of one in-process sync, from libpq's own trace."""
    with trace_path.open("w") as trace:
        def on_connect(dbapi_connection, _record):
            dbapi_connection.pgconn.trace(trace.fileno())
            dbapi_connection.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

        event.listen(Engine, "connect", on_connect)
        try:
            result = run("sync", "--from-file", payload)
        finally:
            event.remove(Engine, "connect", on_connect)
    assert result.exit_code == 0, result.output
    messages = [line.split("\t") for line in trace_path.read_text().splitlines()]
    return Counter(fields[2].split(" ")[0] for fields in messages if len(fields) > 2 and fields[0] == "F")


def test_bulk_writes_take_the_same_round_trips_for_20_or_2000_new_versions(database_url, run, write_response,
                                                                    tag_versions, tmp_path):
    """Bulk rows go by COPY (psycopg's cursor.copy): rows do not cost round trips.

    A round trip is a message the client waits on: Sync (extended protocol)
    or Query (simple protocol). A COPY streams its rows in CopyData messages
    and ends with one CopyDone: one, for the new lean_version rows.
    """
    renamed = [dict(v, name=v["name"] + "-r") for v in tag_versions]
    assert run("sync", "--from-file", write_response(tag_versions[:10])).exit_code == 0  # migrates
    # Both runs: 10 renamed versions plus new ones (inserts, updates, history, hashes).
    small = round_trips(run, write_response(renamed[:10] + tag_versions[10:20]), tmp_path / "small.trace")
    big = round_trips(run, write_response(renamed[:20] + tag_versions[20:2020]), tmp_path / "big.trace")
    assert small["CopyDone"] == big["CopyDone"] == 1
    assert big["CopyData"] > small["CopyData"]  # the rows went that way
    assert big["Bind"] == small["Bind"]  # and not one statement per row
    assert big["Sync"] + big["Query"] <= small["Sync"] + small["Query"] + 2
    # The whole run: connect (5), the UTC session (1), lock and unlock, schema, clock, the index (a
    # server-side cursor), the writes, the check that the lock is still held at the commit, and
    # the read for pending notifications.
    assert big["Sync"] + big["Query"] < 42, (small, big)


# -- an unreachable server ------------------------------------------------------

@pytest.mark.parametrize("command", [["sync", "--from-file", "{payload}"], ["db", "current"], ["db", "upgrade"]])
def test_an_unreachable_server_is_one_clear_sentence(command, write_response):
    port = free_port()  # nothing listens there
    url = f"postgresql://leansync:s3cret-pw@127.0.0.1:{port}/leansync"
    args = [a.format(payload=write_response([])) for a in command]
    result = leansync_in_process(*args, url=url)
    assert result.returncode == 1, result.stderr
    assert_one_sentence(result.stderr)
    assert f"127.0.0.1:{port}" in result.stderr and "refused" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_a_missing_database_is_one_clear_sentence(database_url, write_response):
    url = make_url(database_url).set(database="no_such_db").render_as_string(hide_password=False)
    result = leansync_in_process("sync", "--from-file", write_response([]), url=url)
    assert result.returncode == 1, result.stderr
    assert_one_sentence(result.stderr)
    assert 'database "no_such_db" does not exist' in result.stderr
