"""Helpers of the fault tests (issue 11): run the installed command, read its one line.

Every fault must end the same way: exit 1 (or the contract's other code),
exactly one line on stderr, `leansync: error: <sentence>`, no traceback.
The fixtures `qc` and `synced` are imported by the test modules that use them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbstate import data_tables, runs
from main_in_process import leansync_in_process
from qc_server import FakeQuantConnect

LEANSYNC = Path(sys.executable).with_name("leansync")
PREFIX = "leansync: error: "


def leansync(*args, url: str | None = None, env: dict | None = None, timeout: float = 120,
             **popen) -> subprocess.CompletedProcess:
    """The installed `leansync` command, on the database ``url`` (if given)."""
    assert LEANSYNC.exists(), f"the leansync console script is not installed next to {sys.executable}"
    command = [str(LEANSYNC), *(["--database-url", url] if url else []), *map(str, args)]
    return subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **popen)


def error_sentence(result) -> str:
    """The one line a failure prints on stderr, without its prefix; fails on anything more."""
    stderr = result.stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), f"not exactly one line on stderr: {stderr!r}"
    assert "Traceback" not in stderr and stderr.startswith(PREFIX), stderr
    return stderr[len(PREFIX):-1]


# Run by a fresh, small Python: a child's ru_maxrss starts from its parent's RSS at the fork (the
# kernel carries the high-water mark over exec), so forking from a big pytest process would count pytest.
MEASURE = """import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def assert_failed_run(result, database_url: str, before: dict, expected: str) -> str:
    """Exit 1, one sentence containing ``expected``, the data as ``before``, a `failed` run with that sentence."""
    assert result.returncode == 1, result.stderr
    message = error_sentence(result)
    assert expected in message, message
    assert data_tables(database_url) == before
    last = runs(database_url)[-1]
    assert last["status"] == "failed" and last["error"] == message
    return message


def leansync_peak_rss(*args, url: str, env: dict, workdir: Path) -> tuple[subprocess.CompletedProcess, int]:
    """The installed command, and its peak resident set size in bytes."""
    peak = workdir / "peak-rss-kib"
    result = subprocess.run([sys.executable, "-c", MEASURE, str(peak), str(LEANSYNC), "--database-url", url,
                             *map(str, args)], env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    return result, int(peak.read_text()) * 1024  # Linux reports KiB


@pytest.fixture
def qc(tag_versions):
    """The fake QuantConnect listing 20 versions."""
    with FakeQuantConnect(versions=tag_versions[:20]) as server:
        yield server


@pytest.fixture
def synced(qc, database_url):
    """A database with one successful run of the server's list (in-process); returns its data tables."""
    result = leansync_in_process("sync", "-q", url=database_url, env=qc.env())
    assert result.returncode == 0, result.stderr
    return data_tables(database_url)
