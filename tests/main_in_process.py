"""The installed command's entry point, `leansync.cli.main()`, run in the test's process.

Starting the installed `leansync` command costs a Python start and the
imports of SQLAlchemy and the rest (0.4-0.9 s of CPU); click's CliRunner runs
the same `cli` in a few tens of milliseconds. Three things would make a bare
CliRunner call differ from the installed command, and `invoke_main` puts them
back:

- `main()` calls `log_to_stderr(verbose=False)` before `cli()`, so leansync's
  own logging warnings are printed on stderr, and other libraries' warnings
  reach stderr through logging's last resort (a fresh process's root logger has
  no handler). `invoke_main` calls that same function inside CliRunner's
  capture (so the handler writes to the captured stderr) and takes pytest's
  handlers off the root logger for the call, then puts both back.
- A fresh process knows no secret: `leansync.masking` masks values registered
  by earlier calls for the rest of the process. `invoke_main` starts each call
  with an empty registry (and puts the test's back afterwards), so nothing is
  masked only because an earlier command in the same process saw it.
- A process started with TZ set lives in that zone: the environment is applied
  for the call (CliRunner's ``env``) and time.tzset() makes TZ take effect, then
  undoes it.

What stays with the installed command: -v (it configures logging for the whole
process), signals and kills, two processes at once, another OS user,
environment bytes that are not UTF-8, exit codes as cron sees them, and
start-up imports. (A test that needs another current directory can
monkeypatch.chdir: each xdist worker runs one test at a time.)
"""

import logging
import subprocess
import time
from collections.abc import Mapping

from click.testing import CliRunner, Result

from leansync import masking
from leansync.cli import cli, log_to_stderr


class _Main:
    """What `leansync.cli.main()` runs, in the shape CliRunner.invoke calls (`.main(args, prog_name)`)."""

    name = "leansync"

    def main(self, args, prog_name, **extra):
        time.tzset()  # CliRunner has applied the call's environment
        own, root = logging.getLogger("leansync"), logging.getLogger()
        before, root_before = (list(own.handlers), own.level), (list(root.handlers), root.level)
        # A fresh process's root logger: no handler (pytest's go for the call) and WARNING, so another
        # library's warning reaches stderr through logging.lastResort, as in the installed command.
        root.handlers[:] = []
        root.setLevel(logging.WARNING)
        log_to_stderr(verbose=False)  # inside CliRunner's isolation: its handler writes to the captured stderr
        try:
            return cli.main(args=args, prog_name=prog_name, **extra)
        finally:
            own.handlers[:], own.level = before
            root.handlers[:], root.level = root_before


def invoke_main(*args, env: Mapping[str, str | None] | None = None, input: str | bytes | None = None) -> Result:
    """`leansync ARGS` as `main()` runs it, in this process; the result has .exit_code, .stdout and .stderr.

    ``env`` adds to (or, with None values, removes from) this process's environment for the call only.
    """
    args = [str(a) for a in args]
    assert not {"-v", "--verbose"} & set(args), "-v configures logging for the whole process: use the installed command"
    registered = masking._registered
    masking._registered = set()  # a fresh process has registered no secret yet
    try:
        return CliRunner().invoke(_Main(), args, env=env, input=input, catch_exceptions=False, prog_name="leansync")
    finally:
        masking._registered = registered
        time.tzset()  # back to the zone of the test's own environment


def leansync_in_process(*args, url: str | None = None, env: Mapping[str, str | None] | None = None,
                        input: str | bytes | None = None) -> subprocess.CompletedProcess:
    """`leansync [--database-url URL] ARGS` through invoke_main, answered as subprocess.run answers."""
    argv = [*(["--database-url", url] if url else []), *map(str, args)]
    result = invoke_main(*argv, env=env, input=input)
    return subprocess.CompletedProcess(["leansync", *argv], result.exit_code, result.stdout, result.stderr)
