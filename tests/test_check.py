"""`leansync check`: the monitoring-plugin health check.

One line `STATUS - message | perfdata`; exit 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN. Histories are built by real syncs at frozen times.
"""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from leansync.store import database
from leansync.cli import cli

T = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
LEANSYNC = Path(sys.executable).parent / "leansync"


@pytest.fixture
def sync_at(run, write_response, tag_versions, tmp_path):
    """sync_at(moment) syncs three versions; sync_at(moment, fail="why") records a failed run."""

    def sync(moment: datetime, *, fail: str | None = None):
        if fail is None:
            path = write_response(tag_versions[3:6])
        else:
            path = write_response(document={"success": False, "errors": [fail]})
        with freeze_time(moment):
            result = run("sync", "-q", "--from-file", path)
        assert result.exit_code == (0 if fail is None else 1), result.output
        return result

    return sync


def check_at(run, moment: datetime, *args):
    with freeze_time(moment):
        result = run("check", *args)
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1, result.stdout  # one line
    return result.exit_code, result.stdout.rstrip("\n")


def test_ok_when_the_newest_success_is_young_enough(run, sync_at):
    sync_at(T)
    assert check_at(run, T + timedelta(minutes=10), "--max-age", "1h") == (
        0, "OK - last successful sync 10m ago (run 1 at 2026-03-01T09:00:00Z); 3 versions listed "
           "| age=600s;;3600;0 failed_runs=0;0;;0")


def test_the_age_is_measured_from_the_newest_successful_run(run, sync_at):
    sync_at(T)
    sync_at(T + timedelta(hours=20))
    assert check_at(run, T + timedelta(hours=21), "--max-age", "90m") == (
        0, "OK - last successful sync 1h ago (run 2 at 2026-03-02T05:00:00Z); 3 versions listed "
           "| age=3600s;;5400;0 failed_runs=0;0;;0")


def test_critical_exactly_when_older_than_max_age(run, sync_at):
    sync_at(T)
    assert check_at(run, T + timedelta(hours=26), "--max-age", "26h")[0] == 0  # at most DURATION old: OK
    assert check_at(run, T + timedelta(hours=26, seconds=1), "--max-age", "26h") == (
        2, "CRITICAL - last successful sync 26h ago (run 1 at 2026-03-01T09:00:00Z), older than 26h "
           "| age=93601s;;93600;0 failed_runs=0;0;;0")
    assert check_at(run, T + timedelta(days=3), "--max-age", "2d") == (
        2, "CRITICAL - last successful sync 3d ago (run 1 at 2026-03-01T09:00:00Z), older than 2d "
           "| age=259200s;;172800;0 failed_runs=0;0;;0")


def test_warning_when_runs_failed_since_the_newest_success(run, sync_at):
    sync_at(T)
    sync_at(T + timedelta(minutes=5), fail="Hash doesn't match.")
    sync_at(T + timedelta(minutes=10), fail="Internal error, try later")
    code, line = check_at(run, T + timedelta(minutes=15), "--max-age", "1h")
    assert code == 1
    assert line.startswith("WARNING - last successful sync 15m ago (run 1 at 2026-03-01T09:00:00Z); "
                           "2 runs failed since; last error: ")
    assert "Internal error, try later" in line and "Hash doesn't match" not in line  # the newest error
    assert line.endswith(" | age=900s;;3600;0 failed_runs=2;0;;0")


def test_a_success_after_failures_is_ok_again(run, sync_at):
    sync_at(T)
    sync_at(T + timedelta(minutes=5), fail="Hash doesn't match.")
    sync_at(T + timedelta(minutes=10))
    code, line = check_at(run, T + timedelta(minutes=15), "--max-age", "1h")
    assert (code, line.split(" | ")[1]) == (0, "age=300s;;3600;0 failed_runs=0;0;;0")
    assert "run 3 at 2026-03-01T09:10:00Z" in line


def test_critical_when_too_old_even_with_failures_since(run, sync_at):
    sync_at(T)
    sync_at(T + timedelta(hours=2), fail="Hash doesn't match.")
    code, line = check_at(run, T + timedelta(hours=3), "--max-age", "1h")
    assert code == 2
    assert line.startswith("CRITICAL - last successful sync 3h ago (run 1 at 2026-03-01T09:00:00Z), older than 1h; "
                           "1 run failed since; last error: ")
    assert line.endswith(" | age=10800s;;3600;0 failed_runs=1;0;;0")


def test_critical_when_there_has_never_been_a_successful_run(run, sync_at):
    sync_at(T, fail="UserID not valid")
    code, line = check_at(run, T + timedelta(minutes=1), "--max-age", "1h")
    assert code == 2
    assert line.startswith("CRITICAL - no successful sync run yet; 1 run failed; last error: ")
    assert "UserID not valid" in line
    assert line.endswith(" | age=U;;3600;0 failed_runs=1;0;;0")


def test_critical_on_a_database_with_no_runs(run):
    with freeze_time(T):
        assert run("db", "upgrade").exit_code == 0
    assert check_at(run, T, "--max-age", "1h") == (
        2, "CRITICAL - no successful sync run yet | age=U;;3600;0 failed_runs=0;0;;0")


def test_an_error_cannot_break_the_line_or_the_perfdata(run, sync_at, write_response, tmp_path):
    sync_at(T)
    bad = tmp_path / "bad|name\nwith a newline.json"
    bad.write_text("<html>")
    with freeze_time(T + timedelta(minutes=1)):
        assert run("sync", "--from-file", bad).exit_code == 1
    code, line = check_at(run, T + timedelta(minutes=2), "--max-age", "1h")
    assert code == 1
    assert line.count("|") == 1  # only the perfdata separator
    assert "bad/name\\nwith a newline.json is HTML" in line  # the newline shown escaped


# --- UNKNOWN -------------------------------------------------------------------------

def invoke(url: str, *args):
    result = CliRunner().invoke(cli, ["--database-url", url, "check", *args])
    return result.exit_code, result.stdout


def test_unknown_when_the_database_does_not_exist(tmp_path):
    path = tmp_path / "nowhere" / "leansync.db"
    code, out = invoke(f"sqlite:///{path}", "--max-age", "1h")
    assert (code, out) == (3, f"UNKNOWN - no leansync database at sqlite:///{path}; run `leansync sync` first "
                              "or set --database-url / LEANSYNC_DATABASE_URL\n")
    assert not path.parent.exists()


def test_unknown_when_the_file_is_not_a_database(tmp_path):
    path = tmp_path / "leansync.db"
    path.write_bytes(b"this is not SQLite, just some bytes " * 200)
    code, out = invoke(f"sqlite:///{path}", "--max-age", "1h")
    assert code == 3
    assert out.startswith(f"UNKNOWN - the database file {path} is not a SQLite database or is damaged "
                          "(file is not a database)")
    assert out.count("\n") == 1


def test_unknown_when_the_server_cannot_be_reached():
    code, out = invoke("postgresql://leansync@127.0.0.1:1/leansync?connect_timeout=5", "--max-age", "1h")
    assert code == 3
    assert out.startswith("UNKNOWN - database error on postgresql+psycopg://leansync@127.0.0.1:1/leansync")


def test_unknown_for_an_empty_database_and_an_older_schema(run, database_url):
    engine = database.make_engine(database_url, create=True)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
        code, line = check_at(run, T, "--max-age", "1h")
        assert code == 3 and "is not a leansync database (it has no schema)" in line
        with engine.begin() as conn:
            database.upgrade(conn, "0001")
        code, line = check_at(run, T, "--max-age", "1h")
        assert code == 3 and "has an older schema (0001); run `leansync db upgrade`" in line
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "UNKNOWN - Missing option '--max-age'."),
        (("--max-age", "soon"), "UNKNOWN - Invalid value for '--max-age': 'soon' is not a duration; expected "
                                "a number with a unit s, m, h, d or w, such as 90m, 12h, 7d"),
        (("--max-age", "0h"), "UNKNOWN - Invalid value for '--max-age': '0h' is zero; give a positive duration "
                              "such as 26h"),
        (("--max-age", "1h", "--format", "json"), "UNKNOWN - No such option '--format'."),
    ],
)
def test_unknown_for_bad_arguments(tmp_path, args, message):
    assert invoke(f"sqlite:///{tmp_path / 'x.db'}", *args) == (3, message + "\n")


def test_verbose_shows_the_traceback_on_stderr_only(tmp_path):
    path = tmp_path / "leansync.db"
    path.write_bytes(b"garbage" * 1000)
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{path}", "check", "-v", "--max-age", "1h"])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr
    assert result.stdout.startswith("UNKNOWN - ") and result.stdout.count("\n") == 1


# --- the installed command, as a monitor runs it ----------------------------------------

def test_installed_command_exit_codes(tmp_path, write_response, tag_versions):
    assert LEANSYNC.exists(), f"the leansync console script is not installed next to {sys.executable}"
    env = {**os.environ, "LEANSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'leansync.db'}"}

    def leansync(*args):
        return subprocess.run([str(LEANSYNC), *args], env=env, capture_output=True, text=True, timeout=120)

    missing = leansync("check", "--max-age", "1h")
    assert (missing.returncode, missing.stdout[:10], missing.stderr) == (3, "UNKNOWN - ", "")
    assert leansync("sync", "-q", "--from-file", str(write_response(tag_versions[:3]))).returncode == 0
    fresh = leansync("check", "--max-age", "1h")
    assert (fresh.returncode, fresh.stdout[:5], fresh.stderr) == (0, "OK - ", "")
    assert "3 versions listed | age=" in fresh.stdout
    bad = leansync("check", "--max-age", "never")
    assert (bad.returncode, bad.stdout[:10]) == (3, "UNKNOWN - ")
