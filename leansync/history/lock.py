"""One writer at a time: the run lock.

A run holds the lock from before it reads the clock until after it commits,
so runs' timestamps follow their commit order and overlapping cron runs
serialise. Both kinds are released by the operating system or the server if
the process dies, so a kill -9 never leaves a stale lock (docs/locking.md).

- SQLite: an flock on a file beside the database's real path (symlinks and
  every spelling of the path resolved), so every way of naming one file
  shares one lock.
- PostgreSQL: a session advisory lock, and the run writes only on that
  session's connection (``RunLock.begin``). A session the server ended (an
  idle_session_timeout, a pg_terminate_backend) took the lock with it and
  cannot commit: the run fails with LockLost and writes nothing, not even a
  `failed` row, so it can never land beside the run that took the lock next.
"""

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from leansync.store.database import database_errors, safe_url, sqlite_path
from leansync.errors import DatabaseError, LockLost, LockTimeout

log = logging.getLogger(__name__)

# pg_advisory_lock key: the bytes of "leansync" as a signed 64-bit integer.
PG_LOCK_KEY = int.from_bytes(b"leansync", "big", signed=True)
POLL_SECONDS = 0.05
# pg_locks shows a bigint advisory key as classid (high half), objid (low half) and objsubid 1.
HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
    "AND objsubid = 1 AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)


def lock_file_path(database: Path) -> Path:
    """The lock file of a SQLite database: beside its real path, whatever the spelling.

    realpath resolves what exists (a symlinked file or folder, "..", a
    relative path) and keeps the rest, so a database that does not exist yet
    gets the lock file it will have once created.
    """
    real = Path(os.path.realpath(database))
    return real.with_name(real.name + ".lock")


class RunLock:
    """The lock, held; ``connect()`` and ``begin()`` give the connections a run may write on.

    They behave as the engine's own: on SQLite a new connection each time; on
    PostgreSQL always the lock's own, left open at the end of the block.
    """

    def __init__(self, engine: Engine, connection: Connection | None = None):
        self.engine = engine
        self.url = str(engine.url)
        self._connection = connection
        # The DBAPI connection whose session holds the lock: SQLAlchemy would
        # silently replace it after an invalidation, with a session that holds nothing.
        self._session = connection.connection.dbapi_connection if connection is not None else None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        if self._connection is None:
            with self.engine.connect() as connection:
                yield connection
            return
        connection = self._connection
        if connection.invalidated or connection.connection.dbapi_connection is not self._session:
            raise self._lost("its session had already ended")
        try:
            yield connection
        except DBAPIError as exc:
            if exc.connection_invalidated or connection.invalidated:
                raise self._lost(_reason(exc)) from exc
            raise
        finally:
            if connection.in_transaction() and not connection.invalidated:
                connection.rollback()  # whatever the block left open; a commit is the block's to make

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction that commits at the end of the block, and on PostgreSQL only while the lock is held."""
        with self.connect() as connection, connection.begin():
            yield connection
            if self._connection is not None:
                self._check_held(connection)

    def _check_held(self, connection: Connection) -> None:
        """Inside the transaction about to commit, on the lock's session: a session that
        holds the lock now holds it until it ends, and a session that has ended cannot
        commit. Catches a pooler that moved the run to another session (PgBouncer's
        transaction pooling)."""
        held = connection.execute(HOLDS_LOCK, {"high": (PG_LOCK_KEY >> 32) & 0xFFFFFFFF,
                                               "low": PG_LOCK_KEY & 0xFFFFFFFF}).scalar()
        if not held:
            raise LockLost(f"this run's session on {safe_url(self.url)} no longer holds the run lock (does a "
                           "pooler in transaction mode stand between leansync and the server?); this run wrote "
                           "nothing")

    def _lost(self, reason: str) -> LockLost:
        return LockLost(f"lost the connection to the database {safe_url(self.url)} and with it the run lock "
                        f"({reason}); this run wrote nothing (it is safe to run again)")


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


@contextmanager
def run_lock(engine: Engine, *, timeout: float) -> Iterator[RunLock]:
    url = str(engine.url)
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, timeout=timeout, url=url) as connection:
            yield RunLock(engine, connection)
        return
    path = sqlite_path(url)
    if path is None:  # in-memory SQLite: one process only
        yield RunLock(engine)
        return
    with _file_lock(lock_file_path(path), timeout=timeout, url=url):
        yield RunLock(engine)


def _timeout_error(url: str, timeout: float) -> LockTimeout:
    return LockTimeout(
        f"another leansync run has held the lock on {safe_url(url)} for more than "
        f"{timeout:g} s; this run did nothing (it is safe to run again later)"
    )


@contextmanager
def _file_lock(path: Path, *, timeout: float, url: str):
    deadline = time.monotonic() + timeout
    try:
        handle = _open_lock_file(path)
    except OSError as exc:
        # Exit 1 like any database that cannot be written: the folder holding
        # the database (and so its lock file) is read-only, or something is in the way.
        raise DatabaseError(f"cannot open the lock file {path} of {safe_url(url)}: {exc.strerror}") from None
    with handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _timeout_error(url, timeout) from None
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock_file(path: Path):
    """The lock file, created if need be; its content does not matter (flock ignores it).

    Non-blocking, so a FIFO in its place fails at once instead of waiting for a reader.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO or socket: "no such device or address" says little
            raise OSError(errno.ENXIO, "it is not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "it is not a regular file")
    return os.fdopen(fd, "a")


@contextmanager
def _advisory_lock(engine: Engine, *, timeout: float, url: str) -> Iterator[Connection]:
    deadline = time.monotonic() + timeout
    with database_errors(url), engine.connect() as connection:
        while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar():
            connection.rollback()
            if time.monotonic() >= deadline:
                raise _timeout_error(url, timeout)
            time.sleep(POLL_SECONDS)
        connection.commit()  # the lock is session-level: it outlives this transaction
        try:
            yield connection
        finally:
            _advisory_unlock(connection)


def _advisory_unlock(connection: Connection) -> None:
    if connection.invalidated:
        # The session is gone and the server released its lock with it: using
        # the connection now would open a new session just to unlock nothing.
        return
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        connection.commit()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        # The session is gone and the server released its lock with it; the
        # run's own outcome (its error, if the server went away) is what to report.
        log.debug("the lock's session was already gone: %s", exc.orig)
