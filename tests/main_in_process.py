"""The command line in-process, as `main()` (the installed entry point) runs it.

click's CliRunner invokes ``cli``, not ``main()``: it leaves out the handler
``main()`` installs on stderr for leansync's own logging warnings. Here that
handler is installed (by ``log_to_stderr`` itself) for the call, writing to
CliRunner's stderr, so stderr holds what the installed command would print.
The environment is set for the call, TZ included (time.tzset), and the answer
is a CompletedProcess like subprocess.run's: tests assert on returncode,
stdout and stderr alike either way.
"""

import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager

from click.testing import CliRunner

from leansync.cli import cli, log_to_stderr


class _CurrentStderr:
    """sys.stderr as it is at each write: CliRunner's during an invocation."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@contextmanager
def _environment(env: dict | None):
    """os.environ with ``env`` applied (None unsets), restored afterwards; the process's zone follows TZ."""
    env = env or {}
    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()


def leansync_in_process(*args, url: str | None = None, env: dict | None = None,
                        input: str | None = None) -> subprocess.CompletedProcess:
    """`leansync [--database-url url] args...` through CliRunner, with main()'s stderr logging."""
    argv = [*(["--database-url", url] if url else []), *map(str, args)]
    own = logging.getLogger("leansync")
    before = list(own.handlers)
    log_to_stderr(verbose=False)
    added = [h for h in own.handlers if h not in before]
    for handler in added:
        handler.setStream(_CurrentStderr())
    try:
        with _environment(env):
            result = CliRunner().invoke(cli, argv, input=input, catch_exceptions=False, prog_name="leansync")
    finally:
        for handler in added:
            own.removeHandler(handler)
    return subprocess.CompletedProcess(["leansync", *argv], result.exit_code, result.stdout, result.stderr)
