"""Engines, the schema check and migrations.

SQLite is set up for an unattended writer beside live readers: WAL mode
(readers never block the sync, the sync never blocks them), a generous busy
timeout, and explicit BEGIN so that every transaction, DDL included, is
atomic.
"""

import logging
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from leansync.errors import ConfigError, DatabaseError, SchemaError

# The newest migration. Kept here so the check at the start of every run
# costs one query and no Alembic import; tests/test_migrations.py checks it
# against the migration scripts.
SCHEMA_HEAD = "0005"

SQLITE_BUSY_TIMEOUT_MS = 60_000

# When a connection dies inside executemany's pipeline, psycopg raises the
# error (the run reports it as one sentence) and also logs "error ignored
# terminating <psycopg.Pipeline [BAD]>: the connection is lost". psycopg's
# logger has no handler, so Python's last-resort handler would print that to
# stderr as a second line in every cron mail; -v's root handler still shows it.
logging.getLogger("psycopg").addHandler(logging.NullHandler())


def safe_url(url: str) -> str:
    """The URL with any password masked, fit for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def _normalise(url: str):
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "the database URL is malformed; expected e.g. sqlite:////path/to/leansync.db "
            "or postgresql://user@host/dbname"
        ) from None
    # A plain postgresql:// URL means psycopg 3 (the [postgres] extra), not psycopg2.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and :memory:.

    Understands SQLAlchemy's URI form too (``sqlite:///file:/path/x.db?mode=ro&uri=true``),
    so the lock file and the existence check use the real file.
    """
    parsed = _normalise(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if parsed.query.get("uri") == "true" and database.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None
        database = database.removeprefix("file:")
        if database.startswith("//"):  # file://host/path: the host is empty or localhost
            database = "/" + database[2:].partition("/")[2]
        database = unquote(database)
    if database in ("", ":memory:"):
        return None
    return Path(database)


def database_exists(url: str) -> bool:
    """False only for a SQLite file that is not there (other backends: assume so)."""
    path = sqlite_path(url)
    return path is None or path.exists()


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine for ``url``; ``create`` allows making a new SQLite file."""
    parsed = _normalise(url)
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            if not create:
                raise ConfigError(
                    f"no leansync database at {safe_url(url)}; run `leansync sync` first "
                    "or set --database-url / LEANSYNC_DATABASE_URL"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file in the way, no permission, a read-only file system
                reason = "a file of that name is in the way" if isinstance(exc, FileExistsError) else exc.strerror
                raise ConfigError(
                    f"cannot create the folder {path.parent} for the database {safe_url(url)}: {reason}"
                ) from None
    try:
        engine = create_engine(parsed, **_server_options(parsed))
    except NoSuchModuleError:
        raise ConfigError(f"unsupported database URL scheme in {safe_url(url)}") from None
    except ImportError as exc:
        raise ConfigError(
            f"the driver for {safe_url(url)} is not installed ({exc.name}); "
            "for PostgreSQL: pip install 'leansync[postgres]'"
        ) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


PG_CONNECT_TIMEOUT_S = 10


def _server_options(parsed) -> dict:
    """Engine options for client/server databases."""
    if parsed.get_backend_name() != "postgresql":
        return {}
    options: dict = {
        # A run is short and opens a handful of connections: a pool would only
        # keep idle sessions open on a shared server after the work is done.
        "poolclass": NullPool,
    }
    if parsed.get_driver_name() == "psycopg":
        # No hstore columns here: skip the type lookup SQLAlchemy makes on every connect.
        options["use_native_hstore"] = False
        defaults = {
            "connect_timeout": PG_CONNECT_TIMEOUT_S,  # fail within seconds when the server is unreachable
            "application_name": "leansync",  # so pg_stat_activity shows who holds the lock
        }
        options["connect_args"] = {k: v for k, v in defaults.items() if k not in parsed.query}
    return options


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's BEGIN (below) control transactions, not pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")


def enable_wal(engine: Engine) -> None:
    """WAL is a property of the file; set it once, outside a transaction."""
    if engine.dialect.name != "sqlite" or sqlite_path(str(engine.url)) is None:
        return
    # connect(), unlike raw_connection(), wraps a failure to open the file in
    # DBAPIError, which database_errors() turns into one sentence.
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()


# A write that did not reach the disk: full, over a quota, or over a file-size limit
# (SQLite reports EFBIG as a write I/O error, ENOSPC and EDQUOT as SQLITE_FULL).
SQLITE_WRITE_FAILURES = frozenset({"SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC",
                                   "SQLITE_IOERR_TRUNCATE", "SQLITE_IOERR_SHMSIZE"})
PG_DISK_FULL = "53100"


@contextmanager
def database_errors(url: str):
    """Turn driver errors into one sentence that names the database."""
    try:
        yield
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if exc.connection_invalidated:  # SQLAlchemy recognised a disconnect
            raise DatabaseError(f"lost the connection to the database {safe_url(url)}: {reason}") from exc
        name = getattr(exc.orig, "sqlite_errorname", "")
        if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT"):
            raise DatabaseError(f"the database file {sqlite_path(url)} is not a SQLite database or is damaged "
                                f"({reason}); leansync left it as it is") from exc
        if _write_failed(exc.orig):
            raise DatabaseError(f"could not write the database {safe_url(url)}: {reason}; check the free "
                                "space on its disk (and any quota or file size limit)") from exc
        raise DatabaseError(f"database error on {safe_url(url)}: {reason}") from exc


def _write_failed(orig) -> bool:
    return (getattr(orig, "sqlite_errorname", None) in SQLITE_WRITE_FAILURES
            or getattr(orig, "sqlstate", None) == PG_DISK_FULL)


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("leansync.migrations")))
    config.attributes["connection"] = connection
    return config


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def check_revision(revision: str | None, url: str) -> bool:
    """True if the database needs an upgrade; SchemaError if it is from the future."""
    if revision == SCHEMA_HEAD:
        return False
    if revision is None or revision in known_revisions():
        return True
    raise SchemaError(
        f"the database at {safe_url(url)} has schema revision {revision}, which this "
        f"leansync does not know (its newest is {SCHEMA_HEAD}); upgrade leansync, "
        "the database was left untouched"
    )


def upgrade(connection, target: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), target)


def downgrade(connection, target: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(connection), target)


REVISION_QUERY = text("SELECT version_num FROM alembic_version")


def current_revision(connection) -> str | None:
    """The Alembic revision in one query; None if there is no alembic_version table.

    One SELECT rather than a catalogue lookup first: this runs at the start of
    every sync. On PostgreSQL a failed statement aborts the transaction, so
    the failure is rolled back: to a savepoint inside a transaction the
    caller began (its work survives), else the connection's own transaction.
    """
    savepoint = connection.begin_nested() if connection.in_transaction() else None
    try:
        revision = connection.execute(REVISION_QUERY).scalar()
    except DBAPIError as exc:
        if not _is_missing_table(exc):
            raise
        if savepoint is not None:
            savepoint.rollback()
        else:
            connection.rollback()
        return None
    if savepoint is not None:
        savepoint.commit()
    return revision


def _is_missing_table(exc: DBAPIError) -> bool:
    """A missing table, as opposed to a locked, unreadable or unreachable database."""
    if getattr(exc.orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return "no such table" in str(exc.orig)  # SQLite has no error codes for this in pysqlite


def ensure_schema(engine: Engine) -> None:
    """Bring the database to head; one query when it already is there."""
    url = str(engine.url)
    with database_errors(url):
        with engine.connect() as connection:
            if current_revision(connection) == SCHEMA_HEAD:
                return
        enable_wal(engine)  # a new or older database: WAL then stays set in the file
        with engine.begin() as connection:
            if check_revision(current_revision(connection), url):
                upgrade(connection)


def require_schema(engine: Engine, *, allow_empty: bool = False) -> bool:
    """For commands that only read: the schema must be at head; nothing is written.

    Returns False for a database with no schema at all when ``allow_empty``.
    """
    url = str(engine.url)
    with database_errors(url), engine.connect() as connection:
        revision = current_revision(connection)
    if revision is None:
        if allow_empty:
            return False
        raise ConfigError(f"{safe_url(url)} is not a leansync database (it has no schema); run `leansync sync` first")
    if check_revision(revision, url):
        raise SchemaError(
            f"the database at {safe_url(url)} has an older schema ({revision}); "
            "run `leansync db upgrade` (or a sync) first"
        )
    return True
