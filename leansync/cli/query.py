"""The read-only commands: versions, export, show, hashes, changes, runs, check.

They never create or migrate a database. The queries live in leansync.read
(imported inside the commands: SQLAlchemy must not load for `--help`); how
rows print is leansync.cli.render; check's verdict and its monitoring-plugin
line are here.
"""

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from typing import TYPE_CHECKING

import click

from leansync.cli import AppContext, print_traceback, verbosity_options
from leansync.cli.render import describe_changes, emit, format_option, one_line, printable, shortened, text_value
from leansync.masking import mask
from leansync.timespec import TimespecError, format_age, format_utc, parse_duration, parse_when

if TYPE_CHECKING:  # at run time read loads only inside the commands (SQLAlchemy)
    from leansync.read import DeliveryHealth, Health

NOW_KEY = "leansync.now"
# Numbers the database can take: a LIMIT is a 64-bit integer on both backends,
# a version id a 32-bit one (PostgreSQL's integer column), so larger ones are usage errors.
SQL_INT_MAX = 2**63 - 1
ID_MIN, ID_MAX = -(2**31), 2**31 - 1


def command_now(ctx: click.Context) -> datetime:
    """One "now" per command line, so `--since 7d --until 1d` measure from the same moment."""
    root = ctx.find_root()
    return root.meta.setdefault(NOW_KEY, datetime.now(timezone.utc))


class When(click.ParamType):
    name = "WHEN"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_when(value, now=command_now(ctx))
        except TimespecError as exc:
            self.fail(str(exc), param, ctx)


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        try:
            duration = parse_duration(value)
        except TimespecError as exc:
            self.fail(str(exc), param, ctx)
        if not duration:
            self.fail(f"{value!r} is zero; give a positive duration such as 26h", param, ctx)
        return duration


@contextmanager
def reading(app: AppContext):
    """A read-only connection to an existing database at the current schema."""
    from leansync.read import reading as read_from

    with read_from(app.resolved_database_url()) as conn:
        yield conn


# --- versions ----------------------------------------------------------------

@click.command("versions")
@click.option("--all", "show_all", is_flag=True, help="Include removed versions.")
@click.option("--removed", is_flag=True, help="Only removed versions.")
@click.option("--public/--private", default=None, help="Only public, or only private, versions.")
@click.option("--as-of", "as_of", type=When(), metavar="WHEN",
              help="The list as it was at WHEN, from the history (ISO date or date-time, or 90m/12h/7d ago).")
@click.option("--limit", type=click.IntRange(min=1, max=SQL_INT_MAX), metavar="N", help="At most N versions.")
@format_option
@verbosity_options
@click.pass_obj
def versions_command(app: AppContext, show_all, removed, public, as_of, limit, fmt):
    """List the versions currently listed, newest id first.

    JSON and CSV carry every column of lean_version in full, raw (the API's
    object as last seen) included, and last_seen_at. With --as-of the columns
    are the state at that moment from the history: the seven fields, extra
    (the object's other keys) and its valid_from/valid_to. Both end with
    commit_url, the leanHash's commit (LEANSYNC_LEAN_REPO_URL).

    \b
    Example:
      leansync versions --public --limit 5
      leansync versions --as-of 2026-03-01 --format csv > versions-2026-03-01.csv
    """
    from leansync import read

    if show_all and removed:
        raise click.UsageError("--all and --removed cannot be combined")
    if as_of is not None and (show_all or removed):
        raise click.UsageError("--as-of lists what was listed at that moment; it cannot be combined "
                               "with --all or --removed")
    with reading(app) as conn:
        if as_of is not None:
            rows = read.versions_as_of(conn, as_of, public=public, limit=limit)
            columns, extra = read.AS_OF_LISTING_COLUMNS, ["valid_from"]
        else:
            which = "all" if show_all else "removed" if removed else "listed"
            rows = read.versions(conn, which=which, public=public, limit=limit)
            columns, extra = read.VERSION_LISTING_COLUMNS, ["removed_at"] if (show_all or removed) else []
    # The table leaves out raw and the bookkeeping times: JSON and CSV have them.
    table = ["id", "name", "ref", "public", "created", "lean_hash", "lean_cloud_hash", *extra, "description"]
    emit(rows, columns, fmt, table_columns=table, cells={"description": shortened("description")}, quiet=app.quiet)


# --- export ------------------------------------------------------------------

@click.command("export")
@click.option("--as-of", "as_of", type=When(), metavar="WHEN",
              help="The answer as it stood at WHEN (ISO date or date-time, or 90m/12h/7d ago); default: now.")
@verbosity_options
@click.pass_obj
def export_command(app: AppContext, as_of):
    """Print the API's answer at a moment, in its own shape.

    One JSON object on stdout, {"versions": [...], "success": true,
    "errors": []}, the versions in ascending id, each with the keys the API
    sent: what `sync --from-file` reads back.

    \b
    Example:
      leansync export --as-of 2026-03-01 > lean-versions-2026-03-01.json
    """
    import json

    from leansync.library import export

    click.echo(json.dumps(export(database_url=app.resolved_database_url(), as_of=as_of)))


# --- show --------------------------------------------------------------------

@click.command("show")
@click.argument("version_id", metavar="ID", type=click.IntRange(min=ID_MIN, max=ID_MAX))
@format_option
@verbosity_options
@click.pass_obj
def show_command(app: AppContext, version_id: int, fmt: str):
    """Show one version and every state it has had.

    Each state has valid_from, valid_to, the event that opened it, what ended
    it (changed or removed) and the changed fields with old → new values;
    commit_url links the state's leanHash (LEANSYNC_LEAN_REPO_URL). JSON and CSV are the states, one row each with every column; the
    version's own row (its times and raw) is in `versions --all`.

    \b
    Example:
      leansync show 17453
      leansync show 17453 --format json
    """
    from leansync import read
    from leansync.store.database import safe_url
    from leansync.errors import ConfigError

    with reading(app) as conn:
        try:
            summary = read.version_summary(conn, version_id)
        except read.NotFound:  # a mistyped id is a usage error, as a mistyped option is
            raise ConfigError(f"version {version_id} is not in the history at {safe_url(app.resolved_database_url())} "
                              "(never listed); `leansync versions --all` lists every version it holds") from None
        states = read.version_states(conn, version_id)
    if fmt == "table":  # the version itself, then its states
        status = f"removed {text_value(summary['removed_at'])}" if summary["removed_at"] else "listed"
        click.echo(f"version {version_id}: {status}; first seen {text_value(summary['first_seen_at'])}, "
                   f"last seen {text_value(summary['last_seen_at'])}, updated {text_value(summary['updated_at'])}")
        width = max(len(name) for name in read.API_FIELDS)  # commit_url is shorter than lean_cloud_hash
        for name in (*read.API_FIELDS, "commit_url"):
            click.echo(f"  {name.ljust(width)}  {printable(text_value(summary[name]))}")
        click.echo()
    emit(states, read.STATE_LISTING_COLUMNS, fmt,
         table_columns=["valid_from", "valid_to", "event", "ended_by", "changes"],
         cells={"changes": lambda row: describe_changes(row["changes"])})


# --- hashes ------------------------------------------------------------------

@click.command("hashes")
@click.option("--kind", type=click.Choice(["lean", "lean_cloud"]), help="Only hashes of this kind.")
@click.option("--since", type=When(), metavar="WHEN", help="Only hashes first seen at or after WHEN.")
@format_option
@verbosity_options
@click.pass_obj
def hashes_command(app: AppContext, kind, since, fmt):
    """List hashes with when and where each first appeared.

    Newest first; first_version_id is the lowest id carrying the hash in the
    run that first saw it.

    \b
    Example:
      leansync hashes --kind lean --since 7d
    """
    from leansync import read

    with reading(app) as conn:
        rows = read.hashes(conn, kind=kind, since=since)
    emit(rows, read.HASH_LISTING_COLUMNS, fmt, quiet=app.quiet)


# --- changes -----------------------------------------------------------------

def _event_detail(row: dict) -> str:
    if row["event"] == "new_hash":
        return f"{row['hash_kind']} {row['hash']}"
    return describe_changes(row["changes"])


@click.command("changes")
@click.option("--since", type=When(), metavar="WHEN", required=True, help="From WHEN (inclusive).")
@click.option("--until", type=When(), metavar="WHEN", help="Up to WHEN (exclusive); default: now.")
@format_option
@verbosity_options
@click.pass_obj
def changes_command(app: AppContext, since, until, fmt):
    """Print what changed, event by event in time order.

    Events: new_version, changed, removed, restored, new_hash (from the
    lean_version_event view). Changed and restored events show the fields
    and other keys that differ, old → new; JSON and CSV carry the state's
    extra too, commit_url (the event's leanHash) and, for new versions,
    compare_url (against the highest id below it listed then). --since is inclusive, --until exclusive.

    \b
    Example:
      leansync changes --since 7d            # what changed this week
      leansync changes --since 2026-03-01 --until 2026-04-01 --format json
    """
    from leansync import read

    if until is not None and until <= since:
        raise click.UsageError("--until must be later than --since")
    with reading(app) as conn:
        rows = read.events(conn, since=since, until=until)
    emit(rows, read.EVENT_LISTING_COLUMNS, fmt, table_columns=["event_time", "event", "version_id", "detail"],
         cells={"detail": _event_detail}, quiet=app.quiet)


# --- runs --------------------------------------------------------------------

@click.command("runs")
@click.option("--limit", type=click.IntRange(min=1, max=SQL_INT_MAX), default=20, show_default=True, metavar="N",
              help="At most N runs.")
@format_option
@verbosity_options
@click.pass_obj
def runs_command(app: AppContext, limit, fmt):
    """List recent sync runs: status, counts, delivery, errors.

    Newest first. "notified" counts the run's notification targets by
    delivery state (sent, pending, abandoned); JSON and CSV have them as
    notifications_sent, notifications_pending and notifications_abandoned.

    \b
    Example:
      leansync runs --limit 5
    """
    from leansync import read

    with reading(app) as conn:
        rows = read.runs(conn, limit=limit)
    table = ["id", "started_at", "status", "versions_seen", "inserted", "updated", "unchanged", "removed",
             "restored", "new_hashes", "notified", "error"]
    emit(rows, read.RUN_LISTING_COLUMNS, fmt, table_columns=table,
         cells={"error": shortened("error"), "notified": _delivery_state}, quiet=app.quiet)


def _delivery_state(row: dict) -> str:
    """``2 sent, 1 pending``: the run's notification rows by status; empty when it has none."""
    return ", ".join(f"{row[f'notifications_{status}']} {status}" for status in ("sent", "pending", "abandoned")
                     if row[f"notifications_{status}"])


# --- check -------------------------------------------------------------------

class Status(IntEnum):
    """The monitoring-plugin statuses; each value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def status_line(status: Status, message: str, perfdata: str | None = None) -> str:
    """`STATUS - message | perfdata` on one line: a monitor reads one line, and
    a `|` in the message would start the perfdata."""
    line = f"{status.name} - {one_line(mask(message)).replace('|', '/')}"
    return line if perfdata is None else f"{line} | {perfdata}"


PENDING_WARNING = timedelta(hours=1)  # a notification pending longer than this is a WARNING


def verdict(health: "Health", *, now: datetime, max_age: timedelta,
            delivery: "DeliveryHealth | None" = None) -> tuple[Status, str]:
    """The status and its line for what read.health found: OK if the newest success
    is at most ``max_age`` old; WARNING if runs failed since, or a notification
    is pending over an hour or was abandoned within ``max_age``; CRITICAL if
    the newest success is older or there is none."""
    max_s = int(max_age.total_seconds())
    age = None
    if health.last_success_at is None:
        status, message = Status.CRITICAL, "no successful sync run yet"
    else:
        age = max(0, int((now - health.last_success_at).total_seconds()))
        message = (f"last successful sync {format_age(age)} ago "
                   f"(run {health.last_success_id} at {format_utc(health.last_success_at)})")
        if age > max_s:
            status, message = Status.CRITICAL, f"{message}, older than {format_age(max_s)}"
        elif health.failed_since:
            status = Status.WARNING
        else:
            status, message = Status.OK, f"{message}; {health.listed} versions listed"
    if health.failed_since:
        runs_word = "run" if health.failed_since == 1 else "runs"
        since = " since" if health.last_success_at is not None else ""
        message += (f"; {health.failed_since} {runs_word} failed{since}; "
                    f"last error: {health.last_error or 'no error recorded'}")
    notes = _delivery_notes(delivery, now=now, max_age=max_age) if delivery is not None else []
    if notes:
        message += "; " + "; ".join(notes)
        status = max(status, Status.WARNING)
    # age's critical threshold is --max-age; "U": no age to measure
    perfdata = (f"age={'U' if age is None else f'{age}s'};;{max_s};0 "
                f"failed_runs={health.failed_since};0;;0")
    return status, status_line(status, message, perfdata)


def _delivery_notes(delivery: "DeliveryHealth", *, now: datetime, max_age: timedelta) -> list[str]:
    notes = []
    if delivery.oldest_pending_at is not None and now - delivery.oldest_pending_at > PENDING_WARNING:
        age = format_age((now - delivery.oldest_pending_at).total_seconds())
        notes.append(f"a notification to {delivery.oldest_pending_label} is pending for {age}")
    if delivery.abandoned:
        word = "notification" if delivery.abandoned == 1 else "notifications"
        notes.append(f"{delivery.abandoned} {word} abandoned in the last {format_age(max_age.total_seconds())} "
                     f"({delivery.abandoned_reason})")
    return notes


class MonitoringCommand(click.Command):
    """Bad arguments are UNKNOWN (exit 3), as the monitoring-plugin guidelines ask."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            click.echo(status_line(Status.UNKNOWN, exc.format_message()))
            ctx.exit(int(Status.UNKNOWN))


@click.command("check", cls=MonitoringCommand)
@click.option("--max-age", type=Duration(), required=True, metavar="DURATION",
              help="Newest successful run may be at most this old (90m, 12h, 2d...).")
@verbosity_options
@click.pass_context
def check_command(ctx: click.Context, max_age):
    """Health check for Nagios, Icinga, Sensu and Zabbix.

    Prints `STATUS - message | perfdata` and exits 0 OK (the newest successful
    sync is at most DURATION old), 1 WARNING (it is, but runs failed since,
    a notification is pending over an hour or one was abandoned within DURATION),
    2 CRITICAL (it is older, or there is none), 3 UNKNOWN (the database
    cannot be read or does not exist). Perfdata: age in seconds (from that
    run's started_at) and the number of failed runs since.

    \b
    Example:
      leansync check --max-age 26h       # daily sync, a little slack
    """
    app: AppContext = ctx.obj
    now = command_now(ctx)
    try:
        from leansync import read

        with reading(app) as conn:
            health = read.health(conn)
            delivery = read.delivery_health(conn, abandoned_since=now - max_age)
    except Exception as exc:  # anything that stops us reading is UNKNOWN, never a traceback
        if app.verbose:
            print_traceback()
        click.echo(status_line(Status.UNKNOWN, str(exc).strip() or type(exc).__name__))
        ctx.exit(int(Status.UNKNOWN))
    status, line = verdict(health, now=now, max_age=max_age, delivery=delivery)
    click.echo(line)
    ctx.exit(int(status))
