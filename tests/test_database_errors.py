"""Database and file-system errors are one sentence, with the right exit code.

A read-only database, a failed run that cannot even be recorded (one-line
warning; a traceback only with -v), a file in the way of the database
folder, an unusable lock file; and reading the schema revision of an empty
database inside a transaction keeps that transaction usable (PostgreSQL
aborts it on a failed SELECT).

All of these run as root too: read-only is made with SQLite's own read-only
mode (`?mode=ro&uri=true`), unusable paths with a file or a folder in the way,
never with permission bits (root ignores them).
"""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from clitext import error_line
from dbstate import runs, snapshot
from leansync.cli import cli
from leansync.store.database import current_revision, make_engine, sqlite_path
from leansync.history.lock import lock_file_path

LEANSYNC = str(Path(sys.executable).with_name("leansync"))


def invoke(url: str, *args):
    return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)


def leansync(url: str, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed command: no pytest logging handlers, so Python's own logging defaults apply."""
    return subprocess.run([LEANSYNC, "--database-url", url, *map(str, args)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, cwd=cwd)


def read_only(url: str) -> str:
    """The same SQLite file opened read-only by SQLite itself (works for root too)."""
    return f"sqlite:///file:{sqlite_path(url)}?mode=ro&uri=true"


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
