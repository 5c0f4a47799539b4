"""Fixes from a review of the sync command's failure paths.

- `sync --json` prints its one JSON object on every failure: configuration
  errors, a busy lock, an unexpected exception.
- `sync --dry-run` reports what the mass-removal guard would refuse, and
  still writes nothing.
- A failed run that cannot even be recorded warns in one line (a traceback
  only with -v); a read-only database fails in one sentence.
- The run clock never steps back, even when the wall clock does (NTP).
- File-system errors (a file in the way of the database folder, an unusable
  lock file) are one sentence with the right exit code, not "unexpected error".
- Reading the schema revision of an empty database inside a transaction
  keeps that transaction usable (PostgreSQL aborts it on a failed SELECT).

All of these run as root too: read-only is made with SQLite's own read-only
mode (`?mode=ro&uri=true`), unusable paths with a file or a folder in the way,
never with permission bits (root ignores them).
"""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import select, text

from dbstate import check_invariants, runs, snapshot
from leansync.cli import cli
from leansync.database import current_revision, make_engine, sqlite_path
from leansync.lock import lock_file_path, run_lock
from leansync.models import lean_version_history

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
UTC = timezone.utc
LATER = datetime(2026, 3, 2, 6, 0, 0, tzinfo=UTC)
EARLIER = LATER - timedelta(minutes=10)  # where NTP puts the clock back to
MICROSECOND = timedelta(microseconds=1)
GUARD_MESSAGE = ("refusing to mark 10 of 10 listed versions as removed (more than half); if QuantConnect "
                 "really withdrew them, run again with --allow-mass-removal")


def invoke(url: str, *args):
    return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)


def leansync(url: str, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed command: no pytest logging handlers, so Python's own logging defaults apply."""
    return subprocess.run([LEANSYNC, "--database-url", url, *map(str, args)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, cwd=cwd)


def error_line(stderr: str) -> str:
    """The one line on stderr, an expected error (not 'unexpected error'), no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("leansync: error: "), stderr
    assert "unexpected error" not in lines[0] and "Traceback" not in stderr
    return lines[0].removeprefix("leansync: error: ")


def read_only(url: str) -> str:
    """The same SQLite file opened read-only by SQLite itself (works for root too)."""
    return f"sqlite:///file:{sqlite_path(url)}?mode=ro&uri=true"


@pytest.fixture
def ten(tag_versions):
    return tag_versions[:10]


@pytest.fixture
def synced(run, database_url, write_response, ten):
    result = run("sync", "--from-file", write_response(ten))
    assert result.exit_code == 0, result.stderr
    return database_url


# -- 1. --json prints one object on every failure ----------------------------------------------

def _missing_credentials(tmp_path, write_response):
    return [f"sqlite:///{tmp_path / 'h.db'}", "sync", "--json"], 2


def _malformed_driver_option(tmp_path, write_response):
    # SQLAlchemy raises a plain ValueError for it: the "unexpected error" path.
    return [f"sqlite:///{tmp_path / 'h.db'}?timeout=soon", "sync", "--json", "--from-file", write_response([])], 1


def _file_in_the_way(tmp_path, write_response):
    (tmp_path / "data").write_text("a file where the database folder should be")
    return [f"sqlite:///{tmp_path / 'data' / 'h.db'}", "sync", "--json", "--from-file", write_response([])], 2


def _lock_file_unusable(tmp_path, write_response):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert invoke(url, "db", "upgrade").exit_code == 0
    lock = lock_file_path(sqlite_path(url))
    lock.unlink()
    lock.mkdir()  # a folder where the lock file should be
    return [url, "sync", "--json", "--from-file", write_response([])], 1


FAILURES = {
    "missing-credentials": (_missing_credentials, "QUANTCONNECT_API_TOKEN"),
    "unexpected-exception": (_malformed_driver_option, "unexpected error: ValueError"),
    "file-in-the-way": (_file_in_the_way, "cannot create the folder"),
    "lock-file-unusable": (_lock_file_unusable, "cannot open the lock file"),
}


@pytest.mark.parametrize("scenario", FAILURES)
def test_every_failure_of_json_sync_prints_one_json_object(tmp_path, write_response, scenario):
    make, expected = FAILURES[scenario]
    (url, *args), code = make(tmp_path, write_response)
    result = invoke(url, *args)
    assert result.exit_code == code, result.output
    [line] = result.stdout.splitlines()
    document = json.loads(line)
    assert document == {"status": "failed", "run_id": None, "error": document["error"]}
    assert expected in document["error"]
    # stderr keeps its one sentence: the same one (plus the -v hint for an unexpected error).
    [stderr_line] = result.stderr.splitlines()
    assert stderr_line.startswith(f"leansync: error: {document['error']}")
    assert "Traceback" not in result.output


@pytest.mark.sqlite_only
def test_a_busy_lock_with_json_prints_one_json_object(synced, run, write_response, ten):
    engine = make_engine(synced)
    try:
        with run_lock(engine, timeout=0):
            result = run("sync", "--json", "--lock-timeout", "0", "--from-file", write_response(ten))
    finally:
        engine.dispose()
    assert result.exit_code == 75
    [line] = result.stdout.splitlines()
    assert json.loads(line) == {"status": "failed", "run_id": None, "error": error_line(result.stderr)}


# -- 2. --dry-run and the mass-removal guard ---------------------------------------------------

def test_dry_run_reports_a_run_the_guard_would_refuse(synced, run, write_response):
    before = snapshot(synced)
    result = run("sync", "--dry-run", "--json", "--from-file", write_response([]))
    assert result.exit_code == 1
    assert error_line(result.stderr) == GUARD_MESSAGE
    document = json.loads(result.stdout)
    assert (document["status"], document["run_id"], document["dry_run"]) == ("failed", None, True)
    assert document["error"] == GUARD_MESSAGE
    assert (document["versions_seen"], document["removed"]) == (0, 10)
    assert [c["action"] for c in document["changes"]] == ["remove"] * 10
    assert snapshot(synced) == before  # nothing written: not even a failed sync_run row


@pytest.mark.sqlite_only
def test_dry_run_human_output_says_the_run_would_be_refused(synced, run, write_response, ten):
    before = snapshot(synced)
    result = run("sync", "--dry-run", "-q", "--from-file", write_response(ten[:3]))
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith("refusing to mark 7 of 10 listed versions as removed")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dry run, nothing written; the mass-removal guard would refuse this run: "
                               "3 versions listed; 0 new, 0 changed, 7 removed")
    assert sum(line.startswith("  removed ") for line in lines) == 7
    assert snapshot(synced) == before


def test_dry_run_with_allow_mass_removal_plans_the_removal(synced, run, write_response):
    before = snapshot(synced)
    result = run("sync", "--dry-run", "--json", "--allow-mass-removal", "--from-file", write_response([]))
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["status"], document["removed"]) == ("dry_run", 10)
    assert snapshot(synced) == before


# -- 3 and 5. one line for what cannot be written ----------------------------------------------

@pytest.mark.sqlite_only
def test_a_read_only_database_fails_in_one_sentence(synced, write_response, ten, tmp_path):
    before = snapshot(synced)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    changed = [dict(ten[0], description="Reworded"), *ten[1:]]
    done = leansync(read_only(synced), "sync", "--from-file", write_response(changed), cwd=cwd)
    assert done.returncode == 1, done.stderr
    assert error_line(done.stderr).endswith("attempt to write a readonly database")
    assert done.stdout == ""
    assert snapshot(synced) == before
    # The URI form names the real file: no stray folder or lock file where the command ran.
    assert list(cwd.iterdir()) == []


@pytest.mark.sqlite_only
def test_a_failed_run_that_cannot_be_recorded_warns_in_one_line(synced, write_response, ten):
    bad = write_response(document={"success": True, "versions": [dict(ten[0], id="seven")]})
    done = leansync(read_only(synced), "sync", "--from-file", bad)
    assert done.returncode == 1
    warning, error = done.stderr.splitlines()
    assert warning.startswith("could not record the failed run in sync_run: database error on ")
    assert warning.endswith("attempt to write a readonly database")
    assert error.startswith("leansync: error: ") and "seven" in error
    assert "Traceback" not in done.stderr

    # With -v the warning carries the traceback of the failed write.
    verbose = leansync(read_only(synced), "-v", "sync", "--from-file", bad)
    assert verbose.returncode == 1
    assert "sqlite3.OperationalError: attempt to write a readonly database" in verbose.stderr
    assert len(runs(synced)) == 1  # only the first, successful run


@pytest.mark.parametrize("command", [["sync", "--from-file", "{response}"], ["db", "upgrade"]])
@pytest.mark.parametrize("blocked", ["folder-is-a-file", "parent-folder-is-a-file"])
def test_a_file_in_the_way_of_the_database_folder_is_a_configuration_error(tmp_path, write_response,
                                                                           command, blocked):
    blocker = tmp_path / "data"
    blocker.write_text("a file where a folder should be")
    folder = blocker if blocked == "folder-is-a-file" else blocker / "leansync"
    args = [a.format(response=write_response([])) for a in command]
    result = invoke(f"sqlite:///{folder / 'h.db'}", *args)
    assert result.exit_code == 2, result.output
    message = error_line(result.stderr)
    assert message.startswith(f"cannot create the folder {folder} for the database sqlite:///")
    assert blocker.read_text() == "a file where a folder should be"
    assert list(tmp_path.rglob("h.db*")) == []


@pytest.mark.sqlite_only
@pytest.mark.parametrize("command", [["sync", "--from-file", "{response}"], ["db", "upgrade"]])
def test_an_unusable_lock_file_is_one_sentence(synced, run, write_response, ten, command):
    lock = lock_file_path(sqlite_path(synced))
    lock.unlink()
    lock.mkdir()
    before = snapshot(synced)
    result = run(*[a.format(response=write_response(ten[:9])) for a in command])
    assert result.exit_code == 1, result.output
    assert error_line(result.stderr) == f"cannot open the lock file {lock} of {synced}: Is a directory"
    assert snapshot(synced) == before


# -- 4. the run clock follows commit order ----------------------------------------------------

def test_run_timestamps_follow_commit_order_when_the_clock_steps_back(run, database_url, write_response, ten):
    changed = [dict(ten[0], description="Reworded"), *ten[1:]]
    with freeze_time(LATER):
        assert run("sync", "--from-file", write_response(ten)).exit_code == 0
    with freeze_time(EARLIER):  # NTP stepped the clock back between the runs
        assert run("sync", "--from-file", write_response(changed)).exit_code == 0
        failed = run("sync", "--from-file", write_response(document={"versions": "none"}))
    assert failed.exit_code == 1

    rows = runs(database_url)
    assert [r["status"] for r in rows] == ["success", "success", "failed"]
    assert [r["started_at"] for r in rows] == [LATER, LATER + MICROSECOND, LATER + 2 * MICROSECOND]
    assert all(r["finished_at"] >= r["started_at"] for r in rows)

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            history = conn.execute(
                select(lean_version_history.c.valid_from, lean_version_history.c.valid_to)
                .where(lean_version_history.c.version_id == ten[0]["id"])
                .order_by(lean_version_history.c.valid_from)).all()
    finally:
        engine.dispose()
    assert [tuple(h) for h in history] == [(LATER, LATER + MICROSECOND), (LATER + MICROSECOND, None)]
    check_invariants(database_url)


# -- 6. the revision of an empty database, inside a transaction -------------------------------

def test_reading_the_revision_of_an_empty_database_keeps_the_transaction(database_url):
    engine = make_engine(database_url, create=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE scratch (x integer)"))
            assert current_revision(conn) is None
            conn.execute(text("INSERT INTO scratch VALUES (1)"))  # PostgreSQL: not "transaction aborted"
        with engine.connect() as conn:
            assert current_revision(conn) is None  # and on a connection without a transaction
            assert conn.execute(text("SELECT x FROM scratch")).scalar() == 1  # usable after it
    finally:
        engine.dispose()
