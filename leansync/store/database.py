"""Engines, the schema check and migrations.

SQLite is set up for an unattended writer beside live readers: WAL mode
(readers never block the sync, the sync never blocks them), a generous busy
timeout, and explicit BEGIN so that every transaction, DDL included, is
atomic.
"""

import fcntl
import logging
import os
import sqlite3
import stat
import struct
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from leansync.errors import ConfigError, DatabaseError, SchemaError
from leansync.masking import mask, register

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
log = logging.getLogger(__name__)


def safe_url(url: str) -> str:
    """The URL with every credential masked, fit for messages (leansync.masking does the work)."""
    return mask(url)


def _normalise(url: str):
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "the database URL is malformed; expected e.g. sqlite:////path/to/leansync.db "
            "or postgresql://user@host/dbname"
        ) from None
    # Known by value too, so a driver's message that quotes the password bare is masked as well.
    query_password = parsed.query.get("password")
    register(parsed.password, *(query_password if isinstance(query_password, tuple) else [query_password]))
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


THREE_SLASH_HINT = ("a three-slash SQLite URL is relative to the current directory; "
                    "give an absolute path with four slashes, e.g. sqlite:////var/lib/leansync/leansync.db")


def make_engine(url: str, *, create: bool = False, readonly: bool = False) -> Engine:
    """An engine for ``url``; ``create`` allows making a new SQLite file.

    ``readonly``: for commands that only read. A SQLite file is then opened
    read-only, so a reader needs no write access to it (see _connect_readonly).
    A URL that keeps nothing (no file, :memory:) or a path where no database
    can live (a directory, a device) is a ConfigError before any file is made.
    """
    parsed = _normalise(url)
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_place(url, path, create=create)
    try:
        options = _server_options(parsed)
        if path is not None and readonly and not _may_write(path):
            options["creator"] = lambda: _connect_readonly(path)
        engine = create_engine(parsed, **options)
    except NoSuchModuleError:
        raise ConfigError(f"unsupported database URL scheme in {safe_url(url)}; leansync supports "
                          "sqlite:///PATH and postgresql://...") from None
    except ImportError as exc:
        hint = ("write postgresql:// (leansync uses psycopg 3, not psycopg2) and pip install 'leansync[postgres]'"
                if exc.name == "psycopg2" else "for PostgreSQL: pip install 'leansync[postgres]'")
        raise ConfigError(f"the driver for {safe_url(url)} is not installed ({exc.name}); {hint}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    elif engine.dialect.name == "postgresql":
        _configure_postgresql(engine)
        # The dialect is loaded now: the tables may name its options (not before: start-up cost).
        from leansync.store.models import add_postgresql_options

        add_postgresql_options()
    return engine


def _check_sqlite_place(url: str, path: Path | None, *, create: bool) -> None:
    """Refuse, before anything is created or locked, a SQLite URL no history can be kept at."""
    if path is None:
        raise ConfigError(
            f"the database URL {safe_url(url)} names no file, so nothing would be kept (an empty path, as "
            "cron makes of sqlite:///$DB when DB is unset, or :memory:); give a file such as "
            "sqlite:////var/lib/leansync/leansync.db"
        )
    relative_hint = "" if path.is_absolute() else f"; {THREE_SLASH_HINT}"
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # not there yet (a file in the way of a folder: see mkdir)
        mode = None
    except OSError as exc:  # no permission to look, a symlink loop
        raise ConfigError(f"the database {safe_url(url)} cannot be reached: {exc.strerror}{relative_hint}") from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "a device or other special file"
            raise ConfigError(f"the database path {path} is {what}, not a file, so no database can live there; "
                              f"give the path of a database file{relative_hint}")
        return
    if not create:
        raise ConfigError(
            f"no leansync database at {safe_url(url)}; run `leansync sync` first "
            f"or set --database-url / LEANSYNC_DATABASE_URL{relative_hint}"
        )
    parent = path.parent
    if not path.is_absolute() and not parent.is_dir():
        # A typo of the four-slash form: do not grow a tree of folders under the current directory.
        raise ConfigError(f"the folder {parent} of the database {safe_url(url)} does not exist in the current "
                          f"directory {Path.cwd()}{relative_hint}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a read-only file system
        reason = "a file of that name is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(f"cannot create the folder {parent} for the database {safe_url(url)}: {reason}") from None


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


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Every session in UTC, whatever PGTZ, the role or the database says:
        # psycopg reads timestamptz in the session's zone, where 9999-12-31
        # 23:59:59Z is already year 10000, which Python cannot hold. A SET,
        # not the startup packet's `options`: libpq sends PGTZ as a startup
        # parameter that overrides `options`, and PgBouncer refuses `options`.
        # Outside a transaction: one round trip, not BEGIN, SET and COMMIT.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute("SET TIME ZONE 'UTC'")
        finally:
            dbapi_connection.autocommit = autocommit


# SQLite's own lock bytes (os_unix.c): a reader holds a read lock on the
# SHARED range, and the last connection to close needs a write lock on it
# before it checkpoints the WAL into the database file and deletes the WAL.
SQLITE_PENDING_BYTE = 0x40000000
SQLITE_SHARED_FIRST = SQLITE_PENDING_BYTE + 2
SQLITE_SHARED_SIZE = 510


def _connect_readonly(path: Path):
    """A read-only connection to the SQLite file at ``path``, which the caller may not be able to write.

    ``mode=ro`` first. In WAL mode that needs the -wal and -shm files, or a
    folder where it can create them: a reader that may not write the folder
    (the database belongs to the cron user, `check` runs as the monitoring
    user) finds neither once the last writer has closed and removed them. The
    database file then holds every committed transaction, so it is read as it
    is (``immutable``), under a read lock on SQLite's SHARED range held until
    the connection closes. A writer that starts meanwhile writes to a new WAL,
    and the checkpoint that copies the WAL into the file when its last
    connection closes needs a write lock on that range, so it waits for the
    reader. (Only a commit that leaves more than 1,000 pages in the WAL, a
    first sync or a copy, is checkpointed at once; a read at that moment may
    fail, and is simply run again.)
    """
    uri = path.absolute().as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL, if it can
        return connection
    except sqlite3.OperationalError as exc:
        connection.close()
        cannot_write = getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
        if not cannot_write or _wal_path(path).exists():
            raise
    log.debug("reading %s as it is, under a read lock: its folder cannot hold a WAL index for this user", path)
    lock = _shared_lock(path)
    try:
        if _wal_path(path).exists():  # a writer came meanwhile: its WAL and -shm serve mode=ro now
            os.close(lock)
            return _connect_readonly(path)
        connection = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False,
                                     factory=_LockedConnection)
    except BaseException:
        os.close(lock)
        raise
    connection.lock_fd = lock
    return connection


def _may_write(path: Path) -> bool:
    """Whether this user may write the database and its folder (where SQLite keeps the WAL).

    Then a reader opens it as before; a read-only connection would leave the
    -wal and -shm files behind, since only a writer may remove them.
    """
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _shared_lock(path: Path) -> int:
    """A descriptor of ``path`` holding an open-file-description read lock on SQLite's SHARED range.

    OFD locks, unlike POSIX ones, are not dropped when SQLite closes its own
    descriptor of the file. A writer holding the file exclusively is waited
    for as SQLite's busy timeout would.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    request = struct.pack("hhqqi", fcntl.F_RDLCK, os.SEEK_SET, SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE, 0)
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
            return fd
        except (BlockingIOError, PermissionError):
            if time.monotonic() >= deadline:
                os.close(fd)
                raise DatabaseError(f"the database file {path} stayed locked by a writer for "
                                    f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s") from None
            time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise


class _LockedConnection(sqlite3.Connection):
    """A connection that releases its read lock (see _shared_lock) when it closes."""

    lock_fd: int | None = None

    def close(self):
        try:
            super().close()
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None


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


def migrations_dir() -> Path:
    """The Alembic scripts: leansync.migrations when installed, else the checkout's migrations/.

    The wheel ships the top-level migrations/ as leansync.migrations. Python
    started in a clone imports the checkout's leansync/ instead of the
    installed one (the current folder comes first on sys.path), and there the
    scripts are the folder beside it.
    """
    try:
        return Path(str(resources.files("leansync.migrations")))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "migrations"
        if not (checkout / "env.py").is_file():
            raise
        return checkout


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
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


def ensure_schema(engine: Engine, *, via=None) -> None:
    """Bring the database to head; one query when it already is there.

    ``via`` (the held run lock, leansync.history.lock.RunLock) gives the
    connections to use, as the engine's connect() and begin() would: on
    PostgreSQL the migration then runs on the lock's own session.
    """
    url = str(engine.url)
    connections = via if via is not None else engine
    with database_errors(url):
        with connections.connect() as connection:
            if current_revision(connection) == SCHEMA_HEAD:
                return
        enable_wal(engine)  # a new or older database: WAL then stays set in the file
        with connections.begin() as connection:
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
