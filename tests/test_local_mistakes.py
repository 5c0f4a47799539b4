"""A local mistake is a usage error (exit 2) that records nothing (issue 15).

Each mistake runs twice on each backend: through the installed command on an
existing history, which must stay byte for byte as it was (SQLite: the file
and its folder; PostgreSQL: every row), and, in this process as `main()` runs
it (tests/main_in_process.py), where there is no database yet, where no file
(database, lock, journal, WAL) may appear. A failed run is for the API and
its answer, not for typos.

What needs a real process keeps the installed command: environment bytes that
are not UTF-8, another OS user, a missing driver at start-up, and at least one
run of each refused database URL and path. The other cases of those run in
this process; where the current directory is part of the test, the test moves
this process into its own folder (monkeypatch.chdir: each pytest-xdist worker
is a process of its own, and runs one test at a time).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from clitext import error_line
from dbstate import has_schema, is_sqlite, raw_rows
from leansync.store.database import sqlite_path
from main_in_process import leansync_in_process
from qc_server import FakeQuantConnect

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
TOKEN = "tok-3f9c2a71e5"
USER_ID = "424242"


@pytest.fixture
def qc(ten):
    with FakeQuantConnect(versions=ten, user_id=USER_ID, token=TOKEN) as server:
        yield server


def state(url: str):
    """What must not change: the SQLite folder's files and bytes, or PostgreSQL's rows."""
    if is_sqlite(url):
        folder = sqlite_path(url).parent
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix != ".json"}
    return raw_rows(url) if has_schema(url) else None


# (name, arguments after the database URL, what the one sentence says)
MISTAKES = [
    ("missing file", ["sync", "--from-file", "{tmp}/nope.json"], "cannot read the saved response"),
    ("directory as file", ["sync", "--from-file", "{tmp}"], "is a directory"),
    ("backfill of a missing file", ["sync", "--from-file", "{tmp}/nope.json", "--observed-at", "2026-01-01"],
     "No such file or directory"),
    ("no scheme", ["sync", "--api-url", "www.quantconnect.com/api/v2/"], "did you mean https://www.quantconnect"),
    ("not http", ["sync", "--api-url", "ftp://example.com/api/"], "is not an http:// or https:// URL"),
    ("port out of range", ["sync", "--api-url", "http://127.0.0.1:99999/api/"], "is not a valid URL"),
    ("no host", ["sync", "--api-url", "https:///api/v2/"], "names no host"),
    ("timeout nan", ["sync", "--timeout", "nan"], "timeout (--timeout) must be a number"),
    ("deadline inf", ["sync", "--deadline", "inf"], "deadline (--deadline) must be a number"),
    ("deadline huge", ["sync", "--deadline", "1e300"], "deadline (--deadline) must be a number"),
    ("size cap inf", ["sync", "--max-response-mb", "inf"], "max_response_mb (--max-response-mb)"),
    ("lock timeout nan", ["sync", "--lock-timeout", "nan"], "lock_timeout (--lock-timeout)"),
    ("retries huge", ["sync", "--retries", "99999999999999999999"], "retries (--retries) must be between"),
    ("observed-at beyond the calendar", ["sync", "--from-file", "{tmp}/r.json", "--observed-at",
                                         "9999-12-31T23:00-05:00"], "outside the calendar"),
    ("show a huge id", ["show", "99999999999999"], "is not in the range"),
    ("show a huger id", ["show", "99999999999999999999"], "is not in the range"),
    ("versions limit", ["versions", "--limit", "99999999999999999999"], "is not in the range"),
    ("runs limit", ["runs", "--limit", "99999999999999999999"], "is not in the range"),
    ("since beyond the calendar", ["changes", "--since", "9999-12-31T23:00-05:00"], "outside the calendar"),
    ("until beyond the calendar", ["changes", "--since", "1d", "--until", "9999-12-31T23:00-05:00"],
     "outside the calendar"),
    ("as-of before the calendar", ["versions", "--as-of", "0001-01-01T00:00+01:00"], "outside the calendar"),
    ("export beyond the calendar", ["export", "--as-of", "9999-12-31T23:59-00:01"], "outside the calendar"),
    ("duration too long", ["changes", "--since", "99999999999d"], "too long a duration"),
]


def leansync(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed command."""
    return subprocess.run([LEANSYNC, "--database-url", url, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def in_process(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process(*args, url=url, env=env)


def message(stderr: str) -> str:
    """The sentence: leansync's one line, or click's usage error (its `Error:` line)."""
    if stderr.startswith("Usage:"):
        lines = [line for line in stderr.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1, stderr
        return lines[0]
    return error_line(stderr)


@pytest.mark.parametrize(("name", "args", "says"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_local_mistake_is_a_usage_error_that_records_nothing(name, args, says, database_url, qc, tmp_path,
                                                               write_response, ten, run):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    (tmp_path / "r.json").write_text(json.dumps({"versions": ten, "success": True}))
    env = qc.env()
    # Where there is no database yet (in this process, as main() runs it): no file appears.
    result = in_process(database_url, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert says in message(result.stderr)
    assert state(database_url) in ({}, None), f"{name} created {state(database_url)}"
    # On a history (the installed command): it stays byte for byte.
    assert run("sync", "--from-file", write_response(ten)).exit_code == 0
    before = state(database_url)
    result = leansync(database_url, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert says in message(result.stderr)
    assert state(database_url) == before


def test_check_answers_unknown_for_a_duration_too_long(run, synced):
    result = run("check", "--max-age", "99999999999d")
    assert result.exit_code == 3
    assert result.stdout.startswith("UNKNOWN - ") and "too long a duration" in result.stdout


# -- credentials -----------------------------------------------------------------------

def credentials_file(home: Path, content: bytes) -> Path:
    path = home / ".lean" / "credentials"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"])
def test_a_credentials_file_in_any_encoding_is_read(encoding, isolated_env, tmp_path, ten):
    """Windows Notepad saves "Unicode" as UTF-16 with a BOM and "ANSI" as cp1252.

    Notepad's UTF-16 goes through the installed command, the others run in this process.
    """
    token = "tökén-5e1d"  # not ASCII, so the encoding matters
    text = json.dumps({"user-id": USER_ID, "api-token": token}, ensure_ascii=False)
    credentials_file(isolated_env, text.encode(encoding))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    command = leansync if encoding == "utf-16" else in_process
    with FakeQuantConnect(versions=ten, user_id=USER_ID, token=token) as server:
        result = command(url, "sync", "--json", "--api-url", server.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "success"


UNDECODABLE = [b"\xff\xfe{\x00", b"{\"user-id\": 1, \"api-token\": \"\x81\x8d", b"\x00\x00\x00"]


@pytest.mark.parametrize("content", UNDECODABLE)
def test_undecodable_credentials_are_a_usage_error_that_never_echoes_them(content, isolated_env, tmp_path):
    """The first through the installed command, the others in this process."""
    path = credentials_file(isolated_env, content)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    command = leansync if content == UNDECODABLE[0] else in_process
    result = command(url, "sync", "--api-url", "http://127.0.0.1:9/")
    assert result.returncode == 2
    assert error_line(result.stderr) == (f"{path} is not valid JSON in UTF-8, UTF-16, UTF-32 or Latin-1; "
                                         "run `lean login` again")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variable", ["QUANTCONNECT_API_TOKEN", "QUANTCONNECT_USER_ID"])
def test_credentials_that_are_not_utf8_are_a_usage_error(variable, database_url, qc, run, write_response, ten):
    assert run("sync", "--from-file", write_response(ten)).exit_code == 0
    before = state(database_url)
    env = {k.encode(): v.encode() for k, v in {**os.environ, **qc.env()}.items()}
    env[variable.encode()] = b"\xff\xfe-not-text"
    result = subprocess.run([LEANSYNC.encode(), b"--database-url", database_url.encode(), b"sync"], env=env,
                            capture_output=True, timeout=120)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr.decode())
    assert line.startswith(f"the QuantConnect credentials in {variable} are not valid UTF-8 text")
    assert b"not-text" not in result.stderr
    assert state(database_url) == before
    assert qc.count == 0


# -- database URLs that keep nothing, or point where no database can live ---------------------

@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
@pytest.mark.parametrize("command", [["sync", "--from-file", "{example}"], ["db", "upgrade"], ["runs"],
                                     ["sync", "--dry-run", "--from-file", "{example}"]])
def test_a_url_that_keeps_nothing_is_refused(url, command, tmp_path, monkeypatch):
    """The sync through the installed command started in tmp_path; the others in this process, moved there."""
    example = Path(__file__).parent.parent / "examples" / "lean-versions-read.json"
    args = [a.replace("{example}", str(example)) for a in command]
    if command[0] == "sync" and "--dry-run" not in command:
        result = subprocess.run([LEANSYNC, "--database-url", url, *args], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
    else:
        monkeypatch.chdir(tmp_path)
        result = in_process(url, *args)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).startswith(f"the database URL {url} names no file, so nothing would be kept")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["directory", "/dev/null", "/dev/zero"])
@pytest.mark.parametrize("command", [["sync", "--from-file", "{example}"], ["db", "upgrade"], ["runs"],
                                     ["check", "--max-age", "1h"]])
def test_a_path_where_no_database_can_live_is_refused_and_left_alone(where, command, tmp_path):
    """The sync through the installed command, the others in this process."""
    example = Path(__file__).parent.parent / "examples" / "lean-versions-read.json"
    target = tmp_path / "folder" if where == "directory" else Path(where)
    if where == "directory":
        target.mkdir()
    around = sorted(target.parent.iterdir())
    args = [a.replace("{example}", str(example)) for a in command]
    result = (leansync if command[0] == "sync" else in_process)(f"sqlite:///{target}", *args)
    what = "a directory" if where == "directory" else "a device or other special file"
    expected = f"the database path {target} is {what}, not a file, so no database can live there"
    if command[0] == "check":
        assert result.returncode == 3 and result.stdout.startswith(f"UNKNOWN - {expected}")
    else:
        assert result.returncode == 2, result.stderr
        assert error_line(result.stderr).startswith(expected)
    assert sorted(target.parent.iterdir()) == around  # no stray lock or journal file


def test_a_three_slash_url_gets_the_hint(tmp_path, monkeypatch):
    """sqlite:///var/lib/... meant /var/lib: relative to the current directory, a folder that is not there.

    The sync through the installed command started in tmp_path; `versions` in this process, moved there.
    """
    example = Path(__file__).parent.parent / "examples" / "lean-versions-read.json"
    hint = ("a three-slash SQLite URL is relative to the current directory; give an absolute path with four "
            "slashes, e.g. sqlite:////var/lib/leansync/leansync.db")
    result = subprocess.run([LEANSYNC, "--database-url", "sqlite:///var/lib/leansync/h.db", "sync", "--from-file",
                             str(example)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert error_line(result.stderr).endswith(hint)
    monkeypatch.chdir(tmp_path)
    result = in_process("sqlite:///var/lib/leansync/h.db", "versions")
    assert result.returncode == 2
    assert error_line(result.stderr).endswith(hint)
    assert list(tmp_path.iterdir()) == []  # no var/lib/leansync grown under the current directory


def test_a_driver_that_is_not_installed_names_the_extra(tmp_path):
    result = leansync("postgresql+psycopg2://leansync@127.0.0.1/leansync", "runs")
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        "the driver for postgresql+psycopg2://leansync@127.0.0.1/leansync is not installed (psycopg2); write "
        "postgresql:// (leansync uses psycopg 3, not psycopg2) and pip install 'leansync[postgres]'")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv: root itself reads any file")
def test_an_unreadable_saved_response_is_a_usage_error(ten):
    """As `nobody`, a saved response only its owner may read: exit 2, and no database, lock or journal appears."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="leansync-unreadable-") as where:
        folder = Path(where)
        folder.chmod(0o777)  # nobody may create the database here: only the unreadable file stops it
        saved = folder / "saved.json"
        saved.write_text(json.dumps({"versions": ten, "success": True}))
        saved.chmod(0o600)
        result = subprocess.run(
            # CAP_DAC_READ_SEARCH only lets nobody start this Python under /root; the command line checks
            # the file with access(2), which judges by the user alone.
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=+dac_read_search",
             "--ambient-caps=+dac_read_search", LEANSYNC, "--database-url", f"sqlite:///{folder}/h.db", "sync",
             "--from-file", str(saved)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": "/nonexistent"})
        assert result.returncode == 2, result.stderr
        assert f"Error: Invalid value for '--from-file': File '{saved}' is not readable." in result.stderr
        assert [p.name for p in folder.iterdir()] == ["saved.json"]


@pytest.mark.parametrize("name", ["missing.json", "."])
def test_the_python_api_refuses_a_saved_response_it_cannot_read_before_anything_is_made(name, tmp_path):
    import leansync as library

    url = f"sqlite:///{tmp_path / 'db' / 'h.db'}"
    with pytest.raises(library.ConfigError, match=r"^cannot read the saved response .* \(--from-file\): ") as caught:
        library.run_sync(database_url=url, from_file=tmp_path / name)
    assert caught.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []
