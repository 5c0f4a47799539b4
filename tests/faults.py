"""Helpers of the fault tests (issue 11): run the installed command, read its one line.

Every fault must end the same way: exit 1 (or the contract's other code),
exactly one line on stderr, `leansync: error: <sentence>`, no traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

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
