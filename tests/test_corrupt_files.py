"""Corrupt and foreign files where the database or its lock file goes (issue 11, item 5).

A truncated SQLite file, random bytes, a text file or a folder where the
database goes: every command says so in one sentence naming the file, exits
1 or 2 (`check`: UNKNOWN, 3), and leaves the file's bytes as they were. An
empty file is a valid empty SQLite database, and a sync into it works.
Where the lock file goes, a folder or a FIFO is one sentence naming the
path; an empty or garbage lock file is fine (flock ignores its content).

Each case runs at least one command through the installed command (a FIFO
lock file only there, where a hang would be cut by a timeout); the others run
in this process as `main()` runs them (tests/main_in_process.py).
"""

import hashlib
import json
import os
import random
from pathlib import Path

import subprocess

import pytest

from dbstate import check_integrity, runs
from faults import error_sentence, leansync
from main_in_process import leansync_in_process
from samples import response

pytestmark = pytest.mark.sqlite_only

COMMANDS = [
    ("sync", "--from-file", "{payload}"),
    ("sync", "--dry-run", "--from-file", "{payload}"),
    ("versions",), ("show", "17453"), ("hashes",), ("changes", "--since", "7d"), ("runs",),
    ("db", "current"), ("db", "upgrade"),
]


def in_process(*args, url: str) -> subprocess.CompletedProcess:
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process(*args, url=url)


def make_truncated(path: Path, payload: Path) -> None:
    """A real leansync database cut to half its size (a copy that stopped half-way)."""
    assert in_process("sync", "-q", "--from-file", payload, url=f"sqlite:///{path}").returncode == 0
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def make_random(path: Path, _payload) -> None:
    path.write_bytes(random.Random(11).randbytes(64 * 1024))


def make_text(path: Path, _payload) -> None:
    path.write_text("These are my notes, not a database.\n" * 100)


def make_header_only(path: Path, _payload) -> None:
    """The SQLite header and then nothing: the first page is cut."""
    path.write_bytes(b"SQLite format 3\x00" + bytes(84))


FOREIGN = {"truncated": make_truncated, "random bytes": make_random, "text": make_text,
           "header only": make_header_only}


@pytest.fixture
def payload(tmp_path, tag_versions):
    path = tmp_path / "response.json"
    path.write_text(json.dumps(response(tag_versions[:50])))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def each_command(url: str, payload: Path):
    """Every command on ``url``: in-process as main() runs it (quick), and sync also as the installed command."""
    for command in COMMANDS:
        args = [a.format(payload=payload) for a in command]
        yield command, in_process(*args, url=url)
    yield ("installed", "sync"), leansync("sync", "--from-file", payload, url=url)


def returncode(result) -> int:
    return result.returncode


@pytest.mark.parametrize("kind", FOREIGN)
def test_a_foreign_or_damaged_database_file_is_named_and_left_untouched(tmp_path, payload, kind):
    """`check` through the installed command on the truncated database, in this process on the others."""
    path = tmp_path / "history.db"
    FOREIGN[kind](path, payload)
    before = digest(path)
    url = f"sqlite:///{path}"
    for command, result in each_command(url, payload):
        assert returncode(result) in (1, 2), (command, returncode(result), result.stderr)
        message = error_sentence(result)
        assert str(path) in message and "not a SQLite database or is damaged" in message, (command, message)
        assert digest(path) == before, f"{' '.join(command)} changed the file"
    check = (leansync if kind == "truncated" else in_process)("check", "--max-age", "1h", url=url)
    assert check.returncode == 3 and check.stdout.startswith("UNKNOWN - ") and str(path) in check.stdout
    assert check.stdout.count("\n") == 1 and check.stderr == ""
    assert digest(path) == before
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("history.db"))
    assert leftovers in (["history.db"], ["history.db", "history.db.lock"]), leftovers


def test_a_folder_where_the_database_goes_is_named(tmp_path, payload):
    path = tmp_path / "history.db"
    path.mkdir()
    for command, result in each_command(f"sqlite:///{path}", payload):
        assert returncode(result) in (1, 2), (command, result.stderr)
        assert str(path) in error_sentence(result)
    assert list(path.iterdir()) == []


def test_an_empty_file_is_an_empty_database_and_a_sync_into_it_works(tmp_path, payload):
    """`versions` in this process, the sync through the installed command."""
    path = tmp_path / "history.db"
    path.touch()
    url = f"sqlite:///{path}"
    result = in_process("versions", url=url)
    assert result.returncode == 2 and "has no schema" in error_sentence(result)
    assert path.stat().st_size == 0
    result = leansync("sync", "--json", "--from-file", payload, url=url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 50
    check_integrity(url)
    assert [r["status"] for r in runs(url)] == ["success"]


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage that is no lock \n" * 10], ids=["empty", "garbage"])
def test_an_empty_or_garbage_lock_file_is_fine(tmp_path, payload, content):
    """The empty one through the installed command, the garbage one in this process."""
    path = tmp_path / "history.db"
    lock = tmp_path / "history.db.lock"
    lock.write_bytes(content)
    result = (in_process if content else leansync)("sync", "-q", "--from-file", payload, url=f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert lock.read_bytes() == content


@pytest.mark.parametrize("obstacle", ["folder", "fifo"])
def test_an_obstacle_where_the_lock_file_goes_is_named(tmp_path, payload, obstacle):
    """The folder in this process; the FIFO through the installed command, where a hang would meet a timeout."""
    lock = tmp_path / "history.db.lock"
    url = f"sqlite:///{tmp_path / 'history.db'}"
    if obstacle == "folder":
        lock.mkdir()
        result = in_process("sync", "--from-file", payload, url=url)
    else:
        os.mkfifo(lock)
        result = leansync("sync", "--from-file", payload, url=url, timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"the lock file {lock}" in error_sentence(result)
