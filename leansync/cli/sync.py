"""`leansync sync`: fetch the list, record what changed."""

import json
from itertools import takewhile
from typing import TYPE_CHECKING

import click

from leansync.cli import AppContext, verbosity_options
from leansync.cli.integrations import metrics_file_option, write_metrics_file
from leansync.cli.publish import check_publish_options, feed_file_option, report_file_option, write_published_files
from leansync.cli.query import Duration, When
from leansync.cli.render import printable
from leansync.config import DEFAULT_API_URL, ENV_API_URL
from leansync.timespec import format_utc
from leansync.masking import mask
from leansync.library import (
    DEFAULT_DEADLINE,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_RESPONSE_MB,
    DEFAULT_NOTIFY_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
)

NOTIFY_CONFIG_ENV = "LEANSYNC_NOTIFY_CONFIG"  # leansync.outputs.notify.targets.ENV_NOTIFY_CONFIG, without its import


def notify_options(func):
    """Where and how long to notify: shared by `sync` and `notify`. The URLs themselves come only from
    the environment or the file: they carry credentials."""
    func = click.option("--notify-max-age", "notify_max_age", type=Duration(), default="24h", show_default=True,
                        metavar="DURATION", help="A notification still pending this long after its run is "
                        "abandoned (90m, 12h, 2d...).")(func)
    func = click.option("--notify-timeout", "notify_timeout", type=click.FloatRange(min=0, min_open=True),
                        default=DEFAULT_NOTIFY_TIMEOUT, show_default=True, metavar="SECONDS",
                        help="Bound on all of a run's notifications together; a target not answered in time "
                        "stays pending.")(func)
    func = click.option("--notify-config", "notify_config", type=click.Path(dir_okay=False), metavar="PATH",
                        envvar=NOTIFY_CONFIG_ENV, help="An Apprise configuration file (TEXT or YAML) of "
                        f"notification targets [env {NOTIFY_CONFIG_ENV}]; URLs also come from LEANSYNC_NOTIFY "
                        "and LEANSYNC_WEBHOOK_URL.")(func)
    return func


if TYPE_CHECKING:  # at run time the library loads inside the command (SQLAlchemy)
    from leansync.library import SyncResult

SHOWN_CHANGES = 20  # lines of detail in the human summary; --dry-run shows all


@click.command("sync")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, allow_dash=True), metavar="PATH",
              help="Ingest a saved API response instead of calling the API ('-' for stdin).")
@click.option("--observed-at", "observed_at", type=When(), metavar="WHEN",
              help="With --from-file: record the saved response as seen at WHEN, which must be later than "
                   "every successful run and not in the future (a backfill).")
@click.option("--dry-run", is_flag=True, help="Compute and print what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--api-url", envvar=ENV_API_URL, default=DEFAULT_API_URL, show_default=True,
              help=f"QuantConnect API base URL [env {ENV_API_URL}].")
@click.option("--user-id", metavar="ID", help="QuantConnect user id (the token comes only from the "
              "environment or ~/.lean/credentials).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT, show_default=True,
              help="HTTP connect and read timeout, seconds.")
@click.option("--retries", type=click.IntRange(min=0), default=DEFAULT_RETRIES, show_default=True,
              help="Retries on connection errors, timeouts, 429 and 5xx.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_DEADLINE, show_default=True,
              metavar="SECONDS", help="Overall bound on fetching from the API: every attempt, read and wait "
              "between retries together; past it the run fails (exit 1).")
@click.option("--max-response-mb", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_MAX_RESPONSE_MB,
              show_default=True, metavar="N", help="Largest API answer to accept, in MiB after decompression; a larger one "
              "fails the run (exit 1) without being read whole.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=DEFAULT_LOCK_TIMEOUT, show_default=True,
              help="Seconds to wait for another run's lock before giving up (exit 75).")
@click.option("--allow-mass-removal", is_flag=True,
              help="Apply a run even if it removes more than half of the listed versions.")
@notify_options
@metrics_file_option
@feed_file_option
@report_file_option
@verbosity_options
@click.pass_obj
def sync_command(app: AppContext, as_json: bool, **options):
    """Fetch the version list and record what changed.

    Exit codes: 0 success, 1 the run failed, 2 usage or configuration error,
    75 another run holds the lock.

    \b
    Example:
      leansync sync -q                          # from cron
      leansync sync --from-file response.json --dry-run
      leansync sync --from-file saved/2026-03-01.json --observed-at 2026-03-01T06:00
      leansync sync --deadline 120 --max-response-mb 64
      leansync sync -q --metrics-file /var/lib/node_exporter/textfile/leansync.prom
      LEANSYNC_NOTIFY=slack://T.../B.../C... leansync sync -q   # tell a channel when LEAN changes
      leansync sync -q --feed-file /var/www/leansync/lean-versions.atom --report-file /var/www/leansync/index.html
    """
    metrics_file = options.pop("metrics_file")  # the CLI's own, like --json
    published = options.pop("feed_file"), options.pop("report_file")
    check_publish_options(*published, dry_run=options["dry_run"])
    if options["dry_run"] and metrics_file is not None:
        raise click.UsageError("--metrics-file cannot be combined with --dry-run, which writes nothing")
    # Every other option is a keyword of leansync.run_sync: a new one needs no plumbing here.
    if options["observed_at"] is not None and options["from_file"] is None:
        raise click.UsageError("--observed-at records a saved response: it needs --from-file")
    try:  # every failure, configuration included, still gives --json its one object
        from leansync.library import run_sync

        result = run_sync(database_url=app.resolved_database_url(), on_warning=_warner(app), **options)
    except Exception as exc:
        _print_failure(exc, as_json=as_json)
        if metrics_file is not None:  # whenever the database can be read; the run's error is the news
            write_metrics_file(app, metrics_file, warn=False)
        raise  # the group prints the one sentence on stderr and exits with the error's code
    if metrics_file is not None:
        write_metrics_file(app, metrics_file)
    write_published_files(app, *published)
    _print_result(result, as_json=as_json, quiet=app.quiet, database_url=app.resolved_database_url())
    print_notify_warnings(result.notifications)


def print_notify_warnings(notifications) -> None:
    """One line per failed target, on stderr, even under -q: cron mails it."""
    for warning in notifications.warnings if notifications is not None else ():
        click.echo(f"leansync: warning: {printable(mask(warning))}", err=True)


def _warner(app: AppContext):
    def warn(message: str) -> None:
        if not app.quiet:
            click.echo(f"leansync: warning: {printable(mask(message))}", err=True)

    return warn


def _print_failure(exc: Exception, *, as_json: bool) -> None:
    """stdout's part of a failure: the JSON object, and a refused dry run's plan."""
    from leansync.cli import error_message

    refused = getattr(exc, "dry_run_result", None)  # a dry run the guard would refuse
    if as_json:
        document = {"status": "failed", "run_id": getattr(exc, "run_id", None), "error": error_message(exc)}
        if refused is not None:
            document.update(dry_run=True, **refused.counts(), changes=list(refused.changes))
        click.echo(json.dumps(document))
    elif refused is not None:  # always news (it removes versions), so -q prints it too
        _print_plan(refused, head="dry run, nothing written; the mass-removal guard would refuse this run",
                    every=True)


def _print_result(result: "SyncResult", *, as_json: bool, quiet: bool, database_url: str) -> None:
    if as_json:
        document = {"status": result.status, "run_id": result.run_id, **result.counts()}
        if result.dry_run:  # the same keys as a real run (run_id null: nothing was recorded) plus the plan
            document["changes"] = list(result.changes)
            if result.notification_previews:  # what each target would be sent
                document["notifications"] = list(result.notification_previews)
        click.echo(json.dumps(document))
        return
    if quiet and not result.changes:  # the changes are what changes history (not last_seen_at or raw)
        return
    if result.dry_run:
        _print_plan(result, head="dry run, nothing written", every=True)
        for preview in result.notification_previews:
            _print_preview(preview)
        return
    _print_plan(result, head=f"run {result.run_id}", every=False)
    if not quiet:
        _print_where_and_next(result, database_url)


def _print_preview(preview: dict) -> None:
    """What a dry run would send to one target, indented under its label."""
    if preview["kind"] == "webhook":
        click.echo(f"would notify {preview['target']} (webhook, schema {preview['document']['schema']}):")
        text = json.dumps(preview["document"], indent=2, ensure_ascii=False)
    else:
        click.echo(f"would notify {preview['target']} (Apprise):")
        text = f"{preview['title']}\n\n{preview['body']}"
    for line in text.splitlines():
        click.echo(printable(f"    {line}".rstrip()))


def _changes_since(result: "SyncResult") -> str:
    """A command that lists this run's changes (and any later run's), as pasted into a shell."""
    return f"leansync changes --since {format_utc(result.started_at)}"


def _print_plan(result: "SyncResult", *, head: str, every: bool) -> None:
    counts = result.counts()
    click.echo(
        f"{head}: {counts['versions_seen']} versions listed; {counts['inserted']} new, "
        f"{counts['updated']} changed, {counts['removed']} removed, {counts['restored']} restored, "
        f"{counts['unchanged']} unchanged; {counts['new_hashes']} new hashes"
    )
    changes = result.changes
    shown = changes if every else changes[:SHOWN_CHANGES]
    for change in shown:
        click.echo("  " + printable(_describe(change)))
    if len(changes) > len(shown):
        # Versions and hashes counted apart, so each adds up with the line above. Changes list the
        # versions' first, then the hashes: the counts say how many of each are hidden, without
        # reading (a huge first run's) every change back.
        versions = sum(counts[name] for name in ("inserted", "updated", "restored", "removed"))
        hidden_versions = max(versions - len(shown), 0)
        hidden_hashes = len(changes) - len(shown) - hidden_versions
        parts = [f"{n} more {what}" for n, what in ((hidden_versions, "version changes"),
                                                   (hidden_hashes, "new hashes")) if n]
        click.echo(f"  ... and {' and '.join(parts)}; to list them all: {_changes_since(result)}")


def _print_where_and_next(result: "SyncResult", database_url: str) -> None:
    """Where the history is; after the first run into it, what to ask it next."""
    from leansync.store.database import safe_url, sqlite_path

    path = sqlite_path(database_url)
    click.echo(f"database: {path if path is not None else safe_url(database_url)}")
    counts = result.counts()
    first = counts["inserted"] == counts["versions_seen"] and not (
        counts["updated"] or counts["unchanged"] or counts["removed"] or counts["restored"])
    if first and counts["inserted"]:
        # A first run's changes are its inserts, then its hashes: stop before the hashes.
        newest = max(change["id"] for change in takewhile(lambda c: c["action"] == "insert", result.changes))
        click.echo("try next:")
        for command in ("leansync versions --limit 5", f"leansync show {newest}", _changes_since(result)):
            click.echo(f"  {command}")


def _describe(change: dict) -> str:
    action = change["action"]
    if action == "new_hash":
        return f"new hash   {change['kind']} {change['hash']} (first on {change['first_version_id']})"
    fields = change.get("changed_fields")
    detail = f" ({', '.join(fields)})" if fields else ""
    label = {"insert": "new", "update": "changed", "restore": "restored", "remove": "removed"}[action]
    return f"{label:<10} {change['id']}{detail}"
