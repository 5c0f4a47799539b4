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
                log_to_stderr(verbose=True)

    return callback


def log_to_stderr(*, verbose: bool) -> None:
    """The log handlers leansync installs on stderr, every line masked.

    Plain: leansync's own warnings (e.g. a failed run that could not be
    recorded), as their bare message; other libraries stay silent. -v: every
    logger at DEBUG (urllib3's and the drivers' too), named.
    """
    from leansync.masking import MaskingFormatter

    own = logging.getLogger("leansync")
    handler = logging.StreamHandler()
    if verbose:
        own.handlers.clear()  # the root handler below shows leansync's records too
        handler.setFormatter(MaskingFormatter("leansync: %(name)s: %(message)s"))
        logging.basicConfig(level=logging.DEBUG, handlers=[handler], force=True)
    else:
        handler.setFormatter(MaskingFormatter("%(message)s"))
        handler.setLevel(logging.WARNING)
        own.addHandler(handler)


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
    """The sentence shown for an error (stderr and --json alike), masked."""
    from leansync.masking import mask

    if isinstance(exc, LeansyncError):
        return str(exc)  # masked when it was made
    return mask(f"unexpected error: {type(exc).__name__}: {exc}")


def print_traceback() -> None:
    """The current exception's traceback on stderr (-v), masked."""
    from leansync.masking import mask

    click.echo(mask(traceback.format_exc()), err=True, nl=False)


def _report(ctx: click.Context, message: str, *, hint: bool = False) -> None:
    """One sentence on stderr; the traceback only with -v."""
    from leansync.masking import mask

    app = ctx.find_object(AppContext)
    verbose = app is not None and app.verbose
    if verbose:
        print_traceback()
    elif hint:
        message += " (run with -v for the traceback)"
    from leansync.cli.render import printable  # an error may quote the API's text

    click.echo(f"leansync: error: {printable(mask(message))}", err=True)


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
    log_to_stderr(verbose=False)
    cli(prog_name="leansync")


# The commands live in submodules, which import this one for AppContext.
from leansync.cli import db as _db, integrations as _integrations, publish as _publish, query as _query  # noqa: E402
from leansync.cli import notify as _notify, sync as _sync  # noqa: E402

for _command in (_sync.sync_command, _notify.notify_command, _db.db_group, _query.versions_command,
                 _query.export_command, _query.show_command, _query.hashes_command, _query.changes_command,
                 _query.runs_command,
                 _query.check_command, _integrations.metrics_command,
                 _integrations.datasette_metadata_command, _publish.feed_command, _publish.report_command):
    cli.add_command(_command)
