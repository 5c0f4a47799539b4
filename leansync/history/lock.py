"""One writer at a time: the run lock.

A run holds the lock from before it reads the clock until after it commits,
so runs' timestamps follow their commit order and overlapping cron runs
serialise. SQLite uses an flock on a file beside the database; PostgreSQL a
session advisory lock. Both are released by the operating system or the
server if the process dies, so a kill -9 never leaves a stale lock.
"""

import errno
import fcntl
import logging
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from leansync.store.database import database_errors, safe_url, sqlite_path
from leansync.errors import DatabaseError, LockTimeout

log = logging.getLogger(__name__)

# pg_advisory_lock key: the bytes of "leansync" as a signed 64-bit integer.
PG_LOCK_KEY = int.from_bytes(b"leansync", "big", signed=True)
POLL_SECONDS = 0.05


def lock_file_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextmanager
def run_lock(engine: Engine, *, timeout: float):
    url = str(engine.url)
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, timeout=timeout, url=url):
            yield
        return
    path = sqlite_path(url)
    if path is None:  # in-memory SQLite: one process only
        yield
        return
    with _file_lock(lock_file_path(path), timeout=timeout, url=url):
        yield


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
def _advisory_lock(engine: Engine, *, timeout: float, url: str):
    deadline = time.monotonic() + timeout
    with database_errors(url), engine.connect() as connection:
        while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar():
            connection.rollback()
            if time.monotonic() >= deadline:
                raise _timeout_error(url, timeout)
            time.sleep(POLL_SECONDS)
        connection.commit()  # the lock is session-level: it outlives this transaction
        try:
            yield
        finally:
            _advisory_unlock(connection)


def _advisory_unlock(connection) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        connection.commit()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        # The session is gone and the server released its lock with it; the
        # run's own outcome (its error, if the server went away) is what to report.
        log.debug("the lock's session was already gone: %s", exc.orig)
