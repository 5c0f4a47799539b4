"""Commands that publish the history for people: `feed` (Atom) and `report` (HTML charts),
and sync's --feed-file / --report-file, written after every successful run.

The work is in leansync.outputs.feed and leansync.outputs.report; this is the click layer.
"""

from pathlib import Path

import click

from leansync.cli import AppContext, verbosity_options
from leansync.cli.integrations import _writable_place
from leansync.cli.query import When, command_now, reading


@click.command("feed")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N",
              help="The newest N events.")
@click.option("--since", type=When(), metavar="WHEN", help="Only events at or after WHEN.")
@verbosity_options
@click.pass_obj
def feed_command(app: AppContext, limit, since):
    """Print an Atom 1.0 feed of the change events.

    The events `leansync changes` lists (new, changed, removed and restored
    versions, new hashes), newest first, each linked to its commit
    (LEANSYNC_LEAN_REPO_URL). Entry ids come from the events, so a rebuilt
    feed keeps them. `sync --feed-file PATH` writes it after every
    successful run.

    \b
    Example:
      leansync feed --limit 20 > lean-versions.atom
      leansync sync -q --feed-file /var/www/leansync/lean-versions.atom
    """
    from leansync.outputs.feed import build_feed

    with reading(app) as conn:
        document = build_feed(conn, limit=limit, since=since)
    click.echo(document.decode(), nl=False)


@click.command("report")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH", required=True,
              callback=_writable_place, help="The HTML file to write (replaced atomically).")
@click.option("--since", type=When(), metavar="WHEN", help="Chart only what happened at or after WHEN; "
              "default: the whole history.")
@verbosity_options
@click.pass_context
def report_command(ctx: click.Context, output: Path, since):
    """Write an HTML report with charts, one self-contained file.

    Release cadence, the time from commit to cloud, history changes per
    week, the newest listed versions with links to their commits, and the
    last runs. The chart library is inside the file: it opens from disk
    with no network. Needs the `report` extra: pip install 'leansync[report]'.

    \b
    Example:
      leansync report --output lean-versions.html
      leansync report --output last-quarter.html --since 13w
    """
    from leansync.outputs.report import write_report_file

    app: AppContext = ctx.obj
    write_report_file(app.resolved_database_url(), output, since=since, built_at=command_now(ctx))
    if not app.quiet:
        click.echo(f"report written to {output}", err=True)


feed_file_option = click.option(
    "--feed-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH", callback=_writable_place,
    help="After a successful run, write `leansync feed` to PATH atomically (for a web server).")
report_file_option = click.option(
    "--report-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH", callback=_writable_place,
    help="After a successful run, write `leansync report` to PATH atomically (needs leansync[report]).")


def check_publish_options(feed_file: Path | None, report_file: Path | None, *, dry_run: bool) -> None:
    """Before the run: refuse what could not be written after it."""
    if dry_run and (feed_file or report_file):
        raise click.UsageError("--feed-file and --report-file cannot be combined with --dry-run, which "
                               "writes nothing")
    if report_file is not None:
        from leansync.outputs.report import require_plotly

        require_plotly()


def write_published_files(app: AppContext, feed_file: Path | None, report_file: Path | None) -> None:
    """After a successful run: rebuild the feed and the report. Failing to is a warning (the run stands)."""
    from datetime import datetime, timezone

    from leansync.cli import error_message

    url = app.resolved_database_url()
    for path, what in ((feed_file, "feed"), (report_file, "report")):
        if path is None:
            continue
        try:
            if what == "feed":
                from leansync.outputs.feed import write_feed_file

                write_feed_file(url, path)
            else:
                from leansync.outputs.report import write_report_file

                write_report_file(url, path, built_at=datetime.now(timezone.utc))
        except Exception as exc:
            click.echo(f"leansync: warning: {what} file not written: {error_message(exc)}", err=True)
