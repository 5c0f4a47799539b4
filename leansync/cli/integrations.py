"""Commands for the tools around leansync: Prometheus metrics and Datasette.

The work is in leansync.outputs.metrics and leansync.outputs.datasette; this is the click layer.
"""

import logging
from pathlib import Path

import click

from leansync.cli import AppContext, verbosity_options
from leansync.cli.query import reading


@click.command("metrics")
@verbosity_options
@click.pass_obj
def metrics_command(app: AppContext):
    """Print the Prometheus metrics, read from the database.

    The text exposition format, leansync_* metrics only (see the README's
    Monitoring section for the names). `sync --metrics-file PATH` writes the
    same after every run, for node_exporter's textfile collector.

    \b
    Example:
      leansync metrics
    """
    from leansync.outputs.metrics import exposition

    with reading(app) as conn:
        text = exposition(conn)
    click.echo(text.decode(), nl=False)


@click.command("datasette-metadata")
@verbosity_options
@click.pass_obj
def datasette_metadata_command(app: AppContext):
    """Print Datasette metadata for the SQLite database.

    Title, source, every table's, view's and column's description, and
    canned queries for the cookbook's questions (docs/sql.md). It reads
    nothing from the database: the document describes this leansync's
    schema, keyed by the file's stem as Datasette names databases.

    \b
    Example:
      datasette leansync.db --metadata <(leansync datasette-metadata)
      leansync --database-url sqlite:///leansync.db datasette-metadata > metadata.json
    """
    import json

    from leansync.outputs.datasette import metadata_document

    click.echo(json.dumps(metadata_document(url=app.resolved_database_url()), indent=2))


def _writable_place(ctx, param, value: Path | None) -> Path | None:
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(f"the directory {value.parent} does not exist", ctx, param)
    return value


metrics_file_option = click.option(
    "--metrics-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH", callback=_writable_place,
    help="After the run, successful or failed, write `leansync metrics` to PATH atomically "
         "(for node_exporter's textfile collector).")


def write_metrics_file(app: AppContext, path: Path, *, warn: bool = True) -> None:
    """After a run: write the metrics whenever the database can be read.

    Failing to is a warning after a successful run (whose exit code stands)
    and only a debug log after a failed one, whose error says it all.
    """
    from leansync.cli import error_message
    from leansync.outputs.metrics import write_textfile

    try:
        write_textfile(app.resolved_database_url(), path)
    except Exception as exc:
        message = f"metrics file not written: {error_message(exc)}"
        if warn:
            from leansync.cli.render import printable

            click.echo(f"leansync: warning: {printable(message)}", err=True)
        else:
            logging.getLogger("leansync.outputs.metrics").debug(message)
