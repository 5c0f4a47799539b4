"""The `leansync` command line: a thin layer over the core.

Heavy libraries (SQLAlchemy, Alembic, requests) are imported inside the
commands that need them, so `leansync --help` and `--version` start fast.
"""

import logging
import os
import sys
import traceback
from dataclasses import dataclass

import click

from leansync import __version__
from leansync.errors import EXIT_FAILED, LeansyncError


@dataclass
class AppContext:
    database_url: str | None = None  # None: the default SQLite file
    verbose: bool = False
    quiet: bool = False

    def resolved_database_url(self) -> str:
        from leansync.config import resolve_database_url

        return resolve_database_url(self.database_url)


def _set_flag(name):
    def callback(ctx: click.Context, _param, value: bool):
        if value:
            setattr(ctx.ensure_object(AppContext), name, True)
            if name == "verbose":
                logging.basicConfig(level=logging.DEBUG, format="leansync: %(name)s: %(message)s", force=True)

    return callback


def verbosity_options(func):
    """-v/-q, accepted both before and after the command name."""
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_flag("quiet"),
                        help="Print nothing unless something changed (for cron).")(func)
    func = click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_flag("verbose"),
                        help="Log debug details, and show tracebacks of errors.")(func)
    return func


class LeansyncGroup(click.Group):
    """Turns every error into one sentence on stderr and the contract's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # `leansync changes | head`: the reader left. Say nothing more
            # (Python docs' recipe: point stdout at devnull so the exit flush is quiet).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_FAILED)
        except LeansyncError as exc:
            _report(ctx, str(exc))
            ctx.exit(exc.exit_code)
        except Exception as exc:
            _report(ctx, error_message(exc), hint=True)
            ctx.exit(EXIT_FAILED)


def error_message(exc: Exception) -> str:
    """The sentence shown for an error (stderr and --json alike)."""
    if isinstance(exc, LeansyncError):
        return str(exc)
    return f"unexpected error: {type(exc).__name__}: {exc}"


def _report(ctx: click.Context, message: str, *, hint: bool = False) -> None:
    """One sentence on stderr; the traceback only with -v."""
    app = ctx.find_object(AppContext)
    verbose = app is not None and app.verbose
    if verbose:
        traceback.print_exc(file=sys.stderr)
    elif hint:
        message += " (run with -v for the traceback)"
    click.echo(f"leansync: error: {message}", err=True)


@click.group(cls=LeansyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", envvar="LEANSYNC_DATABASE_URL", metavar="URL",
              help="SQLAlchemy URL of the history database [env LEANSYNC_DATABASE_URL; "
                   "default: leansync.db in the user data directory].")
@verbosity_options
@click.version_option(__version__, "--version", prog_name="leansync")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None):
    """Keep a durable, queryable history of QuantConnect LEAN engine versions.

    \b
    Example:
      leansync sync -q          # from cron: fetch, diff, record; quiet unless news
      leansync versions --as-of 2026-03-01
    """
    ctx.ensure_object(AppContext).database_url = database_url


def main() -> None:
    cli(prog_name="leansync")


# The commands live in submodules, which import this one for AppContext.
from leansync.cli import db as _db, integrations as _integrations, publish as _publish, query as _query  # noqa: E402
from leansync.cli import sync as _sync  # noqa: E402

for _command in (_sync.sync_command, _db.db_group, _query.versions_command, _query.export_command,
                 _query.show_command, _query.hashes_command, _query.changes_command, _query.runs_command,
                 _query.check_command, _integrations.metrics_command,
                 _integrations.datasette_metadata_command, _publish.feed_command, _publish.report_command):
    cli.add_command(_command)
