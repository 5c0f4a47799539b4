"""`leansync db`: schema management."""

import click

from leansync.cli import AppContext, verbosity_options


@click.group("db")
def db_group():
    """Inspect or upgrade the database schema.

    \b
    Example:
      leansync db current
    """


@db_group.command("upgrade")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Seconds to wait for a running sync before giving up (exit 75).")
@verbosity_options
@click.pass_obj
def upgrade_command(app: AppContext, lock_timeout: float):
    """Create the database or bring its schema to the newest revision.

    \b
    Example:
      leansync db upgrade
    """
    from leansync.store.database import SCHEMA_HEAD, ensure_schema, make_engine, safe_url
    from leansync.history.lock import run_lock

    url = app.resolved_database_url()
    engine = make_engine(url, create=True)
    with run_lock(engine, timeout=lock_timeout) as lock:
        ensure_schema(engine, via=lock)
    if not app.quiet:
        click.echo(f"{safe_url(url)} is at schema revision {SCHEMA_HEAD}")


@db_group.command("current")
@verbosity_options
@click.pass_obj
def current_command(app: AppContext):
    """Print the database URL in use and its schema revision.

    \b
    Example:
      leansync --database-url postgresql://leansync@db/leansync db current
    """
    from leansync.store.database import (SCHEMA_HEAD, current_revision, database_errors, known_revisions,
                                   make_engine, safe_url)

    url = app.resolved_database_url()
    click.echo(safe_url(url))  # first, so the URL in use shows even when it cannot be opened
    engine = make_engine(url, readonly=True)  # never creates: a missing SQLite file is an error naming it
    with database_errors(url), engine.connect() as conn:
        revision = current_revision(conn)
    if revision is None:
        state = "empty database: run `leansync db upgrade`"
    elif revision == SCHEMA_HEAD:
        state = "head"
    elif revision in known_revisions():
        state = "not head: run `leansync db upgrade`"
    else:
        state = f"unknown to this leansync, whose newest is {SCHEMA_HEAD}: upgrade leansync"
    click.echo(f"revision: {revision or 'none'} ({state})")


@db_group.command("path")
@verbosity_options
@click.pass_obj
def path_command(app: AppContext):
    """Print the file of the SQLite database in use.

    An absolute path, so other tools find the history from any folder; it is
    printed whether or not the file exists yet. A database that is not a
    SQLite file (PostgreSQL, an in-memory URL) is a usage error (exit 2).

    \b
    Example:
      leansync db path
      datasette "$(leansync db path)" --metadata <(leansync datasette-metadata)
    """
    from leansync.errors import ConfigError
    from leansync.store.database import safe_url, sqlite_path

    url = app.resolved_database_url()
    path = sqlite_path(url)
    if path is None:
        raise ConfigError(f"`leansync db path` names a SQLite file, and the database {safe_url(url)} is not one "
                          "(`leansync db current` prints any database's URL)")
    click.echo(path.absolute())


@db_group.command("copy")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="SQLAlchemy URL of the database to copy into; it must hold no sync run yet.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Seconds to wait for a run holding the target's lock before giving up (exit 75).")
@verbosity_options
@click.pass_obj
def copy_command(app: AppContext, target_url: str, lock_timeout: float):
    """Copy the whole history, ids and all, into another database.

    Reads the current database (--database-url / LEANSYNC_DATABASE_URL) and
    writes every table into the database at URL, brought to the newest schema
    first, in one transaction under its run lock. The source is not changed.

    \b
    Example:
      leansync db copy --to postgresql://leansync@db.example.com/leansync
    """
    from leansync.store.database import make_engine, safe_url
    from leansync.store.dbcopy import copy_database
    from leansync.read import open_database

    source_url = app.resolved_database_url()
    source = open_database(source_url)
    target = make_engine(target_url, create=True)
    try:
        counts = copy_database(source, target, lock_timeout=lock_timeout)
    finally:
        source.dispose()
        target.dispose()
    if not app.quiet:
        rows = ", ".join(f"{n} {table}" for table, n in counts.items())
        click.echo(f"copied {safe_url(source_url)} to {safe_url(target_url)}: {rows}")
