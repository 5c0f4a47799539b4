"""SQLite: one lock per database file, however its path is spelled (issue 15, item 1).

The test holds the run lock through one spelling of the database's path; the
installed `leansync`, given another spelling of the same file (a symlink to
the file, a symlinked folder, "..", a relative path), must wait for it: with
``--lock-timeout`` it gives up with exit 75 and writes nothing, and with a
longer one it proceeds once the test lets go, its run after the holder's.
The set-up sync that makes the database runs in this process as `main()` runs
it (tests/main_in_process.py); every run that meets the lock is another process.
"""

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from dbstate import check_invariants, runs, snapshot
from faults import LEANSYNC, error_sentence, leansync
from leansync.history.lock import lock_file_path, run_lock
from leansync.store.database import make_engine
from main_in_process import invoke_main


def _symlinked_file(real: Path, tmp: Path) -> str:
    (tmp / "elsewhere").mkdir()
    link = tmp / "elsewhere" / "leansync.db"
    link.symlink_to(real)
    return str(link)


def _symlinked_folder(real: Path, tmp: Path) -> str:
    (tmp / "var-link").symlink_to(real.parent, target_is_directory=True)
    return str(tmp / "var-link" / real.name)


def _dot_dot(real: Path, tmp: Path) -> str:
    (tmp / "sub").mkdir()
    return f"{tmp}/sub/../{real.relative_to(tmp)}"


def _relative(real: Path, tmp: Path) -> str:
    return os.path.relpath(real, tmp / "cwd")


SPELLINGS = {"symlink-to-file": _symlinked_file, "symlinked-folder": _symlinked_folder, "dot-dot": _dot_dot,
             "relative": _relative}


def wait_until_it_polls(proc: subprocess.Popen, lock: Path) -> None:
    """Return once ``proc`` has the database's real lock file open (it waits for the lock)."""
    deadline = time.monotonic() + 60
    while not any(f.path == str(lock) for f in psutil.Process(proc.pid).open_files()):
        assert proc.poll() is None, f"the run ended instead of waiting: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run never reached the lock"
        time.sleep(0.02)


@pytest.fixture
def database(tmp_path, write_response, tag_versions) -> Path:
    """A database with one run, at tmp/real/history.db; the command runs in tmp/cwd."""
    real = tmp_path / "real" / "history.db"
    (tmp_path / "cwd").mkdir()
    result = invoke_main("--database-url", f"sqlite:///{real}", "sync", "-q", "--from-file",
                         write_response(tag_versions[:5]))
    assert result.exit_code == 0, result.stderr
    return real


@pytest.mark.parametrize("spell", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_another_spelling_of_the_path_waits_for_the_lock(database, tmp_path, write_response, tag_versions, spell):
    other = f"sqlite:///{spell(database, tmp_path)}"
    before = snapshot(f"sqlite:///{database}")
    engine = make_engine(f"sqlite:///{database}")
    try:
        with run_lock(engine, timeout=0):
            result = leansync("sync", "--lock-timeout", "0.3", "--from-file", write_response(tag_versions[:6]),
                              url=other, cwd=tmp_path / "cwd")
    finally:
        engine.dispose()
    assert result.returncode == 75, result.stderr
    assert error_sentence(result) == (f"another leansync run has held the lock on {other} for more than 0.3 s; "
                                      "this run did nothing (it is safe to run again later)")
    assert snapshot(f"sqlite:///{database}") == before
    assert sorted(p.name for p in (tmp_path / "real").glob("*.lock")) == ["history.db.lock"]
    assert not list(tmp_path.glob("elsewhere/*.lock"))


def test_a_run_through_a_symlink_proceeds_after_the_holder(database, tmp_path, write_response, tag_versions):
    url = f"sqlite:///{database}"
    link = f"sqlite:///{_symlinked_file(database, tmp_path)}"
    engine = make_engine(url)
    try:
        with run_lock(engine, timeout=0):
            waiting = subprocess.Popen([str(LEANSYNC), "--database-url", link, "sync", "--json", "--lock-timeout",
                                        "60", "--from-file", str(write_response(tag_versions[:6]))],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            wait_until_it_polls(waiting, lock_file_path(database))
            assert waiting.poll() is None, waiting.communicate()
            assert len(runs(url)) == 1
            released = datetime.now(timezone.utc)
    finally:
        engine.dispose()
    out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, err) == (0, "")
    assert json.loads(out)["inserted"] == 1
    assert runs(url)[-1]["started_at"] >= released
    check_invariants(url)


def test_a_database_not_created_yet_in_a_symlinked_folder_shares_the_lock(tmp_path, write_response, tag_versions):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'real' / 'new.db'}", create=True)
    try:
        with run_lock(engine, timeout=0):
            result = leansync("sync", "--lock-timeout", "0", "--from-file", write_response(tag_versions[:5]),
                              url=f"sqlite:///{tmp_path / 'link' / 'new.db'}")
    finally:
        engine.dispose()
    assert result.returncode == 75, result.stderr
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["new.db.lock"]
