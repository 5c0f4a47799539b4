"""`leansync notify`: deliver the pending notifications now, without fetching."""

import click

from leansync.cli import AppContext, verbosity_options
from leansync.cli.sync import notify_options, print_notify_warnings
from leansync.library import DEFAULT_LOCK_TIMEOUT


@click.command("notify")
@notify_options
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=DEFAULT_LOCK_TIMEOUT, show_default=True,
              help="Seconds to wait for a run's lock before giving up (exit 75).")
@verbosity_options
@click.pass_obj
def notify_command(app: AppContext, notify_config, notify_timeout, notify_max_age, lock_timeout):
    """Deliver the pending notifications now, oldest run first.

    What a sync does after its commit, without fetching: use it after fixing
    a target. Targets come from LEANSYNC_NOTIFY, --notify-config and
    LEANSYNC_WEBHOOK_URL; a pending row whose target is no longer configured,
    or older than --notify-max-age, is abandoned. Prints what it sent; one
    warning line per failed target on stderr. Exit codes: 0 nothing failed,
    1 a target failed (its rows stay pending), 2 usage or configuration
    error, 75 a run holds the lock.

    \b
    Example:
      leansync notify                  # after fixing the Slack URL
    """
    from leansync.errors import LeansyncError
    from leansync.library import notify_pending

    result = notify_pending(database_url=app.resolved_database_url(), timeout=notify_timeout,
                            max_age=notify_max_age, notify_config=notify_config, lock_timeout=lock_timeout)
    if not app.quiet or result.sent or result.abandoned:
        click.echo(f"notifications: {result.sent} sent, {result.pending} pending, {result.abandoned} abandoned")
    print_notify_warnings(result)
    if result.failed:
        raise LeansyncError(f"{result.failed} notification target(s) failed; {result.pending} notification(s) "
                            "stay pending")
