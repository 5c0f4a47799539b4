"""The Python API: `leansync.run_sync` and `leansync.export`, for orchestrators.

The command line is built on these functions. They never print, exit or
configure logging: a run's outcome is the returned result, and every
expected failure is a leansync.errors.LeansyncError subclass whose
``exit_code`` is what the command line would exit with (ConfigError 2,
LockTimeout 75, the others 1). A failed run that was recorded carries its
sync_run id as ``run_id`` on the exception.
"""

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from leansync.config import DEFAULT_API_URL, ENV_API_URL, resolve_database_url
from leansync.errors import ConfigError, GuardError, PayloadError
from leansync.masking import mask, register

log = logging.getLogger("leansync")

DEFAULT_TIMEOUT = 30
DEFAULT_RETRIES = 4
DEFAULT_LOCK_TIMEOUT = 600
DEFAULT_DEADLINE = 600  # seconds for the whole fetch: attempts, reads and retry waits
DEFAULT_MAX_RESPONSE_MB = 256  # MiB of response body, counted after decompression
DEFAULT_NOTIFY_TIMEOUT = 60  # seconds for all of a run's notifications together
DEFAULT_NOTIFY_MAX_AGE = timedelta(hours=24)  # a notification still pending this long after its run is abandoned
MIB = 1024 * 1024


@dataclass(frozen=True)
class NotifyResult:
    """What a delivery round did: rows sent and abandoned now, rows left pending.

    ``warnings`` holds one line per target that failed or was given up on
    (the command line prints them on stderr, even under -q).
    """

    sent: int
    pending: int
    abandoned: int
    failed: int = 0  # targets that failed this round
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyncResult:
    """What one run did (or, for a dry run, would do).

    The counts are named as in `leansync sync --json`; ``changes`` lists
    every change as `sync --dry-run --json` prints it (inserts, updates,
    restores, removals, new hashes). ``run_id`` and ``started_at`` (the run's
    time, which every row it wrote carries) are None for a dry run.
    """

    run_id: int | None
    dry_run: bool
    versions_seen: int
    inserted: int
    updated: int
    unchanged: int
    removed: int
    restored: int
    new_hashes: int
    changes: Sequence[dict[str, Any]]  # built as it is read (see Changes)
    started_at: datetime | None = None
    # The run's delivery (None for a dry run, or with notify=False); for a dry
    # run with targets, what each would be sent (see leansync.outputs.notify.preview).
    notifications: NotifyResult | None = None
    notification_previews: tuple[dict[str, Any], ...] = ()

    @property
    def status(self) -> str:
        return "dry_run" if self.dry_run else "success"

    def counts(self) -> dict[str, int]:
        """The seven counts, in `sync --json` order."""
        return {name: getattr(self, name) for name in COUNT_NAMES}


COUNT_NAMES = ("versions_seen", "inserted", "updated", "unchanged", "removed", "restored", "new_hashes")


def run_sync(
    *,
    database_url: str | None = None,
    from_file: str | os.PathLike | None = None,
    observed_at: datetime | None = None,
    api_url: str | None = None,
    user_id: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    deadline: float = DEFAULT_DEADLINE,
    max_response_mb: float = DEFAULT_MAX_RESPONSE_MB,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    allow_mass_removal: bool = False,
    dry_run: bool = False,
    on_warning: Callable[[str], None] | None = None,
    notify: bool = True,
    notify_config: str | os.PathLike | None = None,
    notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT,
    notify_max_age: timedelta = DEFAULT_NOTIFY_MAX_AGE,
) -> SyncResult:
    """Fetch the version list (or read a saved response) and record what changed.

    ``from_file`` is a saved `lean/versions/read` response ("-": stdin);
    ``observed_at`` (an aware datetime, only with ``from_file``) records it as
    seen then: it must be later than every successful run and not in the
    future. ``api_url`` defaults to $QUANTCONNECT_API_URL or QuantConnect's
    API; the credentials come from the environment or ~/.lean/credentials
    (``user_id`` overrides the user id). ``timeout`` (per connect and read),
    ``retries``, ``deadline`` (seconds for the whole fetch) and
    ``max_response_mb`` (MiB, after decompression) bound the API call as the
    command's options do. ``on_warning`` receives warnings
    such as a credentials file readable by others (default: logged on the
    "leansync" logger).

    Notifications: a run that changed history writes one `notification` row
    per target (LEANSYNC_NOTIFY, ``notify_config`` or LEANSYNC_NOTIFY_CONFIG,
    LEANSYNC_WEBHOOK_URL) in its transaction; after the commit every pending
    row is delivered within ``notify_timeout`` seconds, and rows pending
    longer than ``notify_max_age`` after their run are abandoned. The result's
    ``notifications`` says what was sent; a failed delivery never raises.
    ``notify=False`` writes the rows and delivers nothing (`notify_pending`
    delivers them later). A dry run sends nothing and returns what would be
    sent in ``notification_previews``.

    Raises ConfigError (exit code 2), LockTimeout (75), or FetchError,
    AuthError, PayloadError, GuardError, DatabaseError (1). A dry run the
    mass-removal guard refuses raises GuardError with ``dry_run_result``.
    """
    from leansync.store.database import database_exists, make_engine
    from leansync.history.sync import dry_run as plan_only, sync
    from leansync.outputs.notify.targets import configured

    targets = configured(notify_config=notify_config)  # a bad target is a ConfigError before anything runs

    if observed_at is not None:
        if from_file is None:
            raise ConfigError("observed_at (--observed-at) needs a saved response (--from-file)")
        if observed_at.tzinfo is None or observed_at.utcoffset() is None:
            raise ConfigError("observed_at must be a timezone-aware datetime")
    _check_bounds(timeout=timeout, retries=retries, deadline=deadline, max_response_mb=max_response_mb,
                  lock_timeout=lock_timeout)
    if from_file is not None:
        source = file_source(from_file)
    else:
        source = _api_source(api_url=api_url, user_id=user_id, timeout=timeout, retries=retries,
                             deadline=deadline, max_response_mb=max_response_mb, on_warning=on_warning or log.warning)
    url = resolve_database_url(database_url)
    if dry_run:
        from leansync.outputs.notify.preview import rehearse

        previews = []
        engine = make_engine(url, readonly=True) if database_exists(url) else None
        try:
            outcome = plan_only(engine, source, allow_mass_removal=allow_mass_removal, observed_at=observed_at,
                                preview=lambda conn, plan: previews.extend(rehearse(
                                    conn, plan, targets=targets, source=source.label, observed_at=observed_at)))
        except GuardError as exc:
            exc.dry_run_result = _result(exc.dry_run_plan, run_id=None, dry_run=True)
            raise
        finally:
            if engine is not None:
                engine.dispose()
        return _result(outcome.plan, run_id=None, dry_run=True,
                       notification_previews=tuple(p.as_dict() for p in previews))
    from leansync.outputs.notify.outbox import Outbox

    outbox = Outbox(targets, timeout=notify_timeout, max_age=notify_max_age, send=notify)
    engine = make_engine(url, create=True)
    try:
        outcome = sync(engine, source, lock_timeout=lock_timeout, allow_mass_removal=allow_mass_removal,
                       observed_at=observed_at, outbox=outbox)
    finally:
        engine.dispose()
    return _result(outcome.plan, run_id=outcome.run_id, dry_run=False, url=url, started_at=outcome.started_at,
                   notifications=_notify_result(outbox.result))


def _result(plan, *, run_id: int | None, dry_run: bool, url: str | None = None, **extra) -> SyncResult:
    """A real run (``url``) left its new hashes in the database only: changes reads them there when asked.

    ``extra``: the run's started_at, notifications and notification_previews.
    """
    hashes = None if url is None else (lambda: _run_hashes(url, run_id))
    return SyncResult(run_id=run_id, dry_run=dry_run, **plan.counts(), changes=Changes(plan, hashes), **extra)


class Changes(Sequence):
    """SyncResult.changes: a sequence of plain dicts, each made only when it is read.

    A first run of a million versions has over two million changes; the
    command line prints twenty. The new hashes of a real run are read back
    from the run's lean_hash rows (they never change once committed).
    Compares equal to any sequence of the same dicts, a tuple included.
    """

    def __init__(self, plan, hashes: Callable[[], Iterator[tuple[str, str, int]]] | None):
        self._plan = plan
        self._hashes = hashes  # None: the plan holds them (a dry run)
        counts = plan.counts()
        self._length = sum(counts[name] for name in ("inserted", "updated", "restored", "removed", "new_hashes"))

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._plan.iter_changes(hashes=self._hashes is None)
        if self._hashes is not None and self._plan.new_hash_count:
            for kind, value, first in self._hashes():
                yield {"action": "new_hash", "kind": kind, "hash": value, "first_version_id": first}

    def __getitem__(self, index):
        if isinstance(index, slice):
            wanted = range(self._length)[index]
            if wanted.step < 0:
                return tuple(self)[index]
            return tuple(islice(self, wanted.start, wanted.stop, wanted.step))
        position = range(self._length)[index]  # IndexError as a tuple's
        return next(islice(self, position, None))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == self._length and all(a == b for a, b in zip(self, other))

    __hash__ = None  # like the dicts it holds

    def __repr__(self) -> str:
        return f"<{self._length} changes>"


def _run_hashes(url: str, run_id: int) -> Iterator[tuple[str, str, int]]:
    from leansync.history.writer import read_run_hashes
    from leansync.store.database import database_errors, make_engine

    engine = make_engine(url)
    try:
        with database_errors(url), engine.connect() as conn:
            yield from read_run_hashes(conn, run_id)
    finally:
        engine.dispose()


# The largest values the options take: beyond them a timer or a socket timeout
# overflows (seconds) or a size no machine holds (MiB), so they are typos.
MAX_SECONDS = 1e9  # about 31 years
MAX_RETRIES = 1000
MAX_RESPONSE_MB = 1024 * 1024  # 1 TiB


def _check_bounds(*, timeout: float, retries: int, deadline: float, max_response_mb: float,
                  lock_timeout: float) -> None:
    """Numbers out of range are usage errors (ConfigError) before anything is created or sent."""
    import math

    for name, value, low, high in (("timeout", timeout, 0, MAX_SECONDS), ("deadline", deadline, 0, MAX_SECONDS),
                                   ("max_response_mb", max_response_mb, 0, MAX_RESPONSE_MB),
                                   ("lock_timeout", lock_timeout, None, MAX_SECONDS)):
        if not (math.isfinite(value) and (value > low if low is not None else value >= 0) and value <= high):
            floor = f"greater than {low}" if low is not None else "at least 0"
            raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be a number {floor} and at most "
                              f"{high:g}, not {value}")
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"retries (--retries) must be between 0 and {MAX_RETRIES}, not {retries}")


def _notify_result(delivery) -> NotifyResult | None:
    if delivery is None:
        return None
    return NotifyResult(sent=delivery.sent, pending=delivery.pending, abandoned=delivery.abandoned,
                        failed=delivery.failed, warnings=tuple(delivery.warnings))


def notify_pending(*, database_url: str | None = None, timeout: float = DEFAULT_NOTIFY_TIMEOUT,
                   max_age: timedelta = DEFAULT_NOTIFY_MAX_AGE, notify_config: str | os.PathLike | None = None,
                   lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> NotifyResult:
    """Deliver the notifications pending now, without fetching: the library form of `leansync notify`.

    Under the run lock, as a sync delivers after its commit: oldest run first,
    within ``timeout`` seconds together; rows pending longer than ``max_age``
    after their run, or whose target is no longer configured, are abandoned.
    Returns the rows sent, left pending and abandoned; a failed delivery is a
    warning in the result, never an exception. Raises ConfigError for a
    database that does not exist or a target that cannot be used, SchemaError
    for one at another schema, LockTimeout (75) when a run holds the lock.
    """
    from leansync.history.lock import run_lock
    from leansync.outputs.notify.outbox import deliver_pending
    from leansync.outputs.notify.targets import configured
    from leansync.read import open_database

    targets = configured(notify_config=notify_config)
    engine = open_database(resolve_database_url(database_url))
    try:
        with run_lock(engine, timeout=lock_timeout) as lock:
            delivery = deliver_pending(lock, targets, timeout=timeout, max_age=max_age)
    finally:
        engine.dispose()
    return _notify_result(delivery)


def file_source(path: str | os.PathLike):
    """A saved response: its bytes are parsed by the run (see sync.plan_against).

    A file that is not there or cannot be read is a ConfigError at once,
    before any database file is created or locked: a typo is not a failed run.
    """
    import stat

    from leansync.history.sync import Source

    if str(path) == "-":
        return Source(label="stdin", fetch=sys.stdin.buffer.read)
    resolved = Path(path).resolve()
    try:
        if stat.S_ISREG(resolved.stat().st_mode):  # not a pipe (<(...)): opening one to check could lose it
            os.close(os.open(resolved, os.O_RDONLY | os.O_CLOEXEC))
        elif resolved.is_dir():
            raise IsADirectoryError(21, "it is a directory")
    except OSError as exc:
        raise ConfigError(f"cannot read the saved response {mask(str(resolved))} (--from-file): "
                          f"{exc.strerror}") from None

    def fetch() -> bytes:
        try:
            return resolved.read_bytes()
        except OSError as exc:
            raise PayloadError(f"cannot read {resolved}: {exc.strerror}") from None

    return Source(label=str(resolved), fetch=fetch)


def _api_source(*, api_url: str | None, user_id: str | None, timeout: float, retries: int, deadline: float,
                max_response_mb: float, on_warning: Callable[[str], None]):
    from leansync.source.api import endpoint_url, fetch_versions
    from leansync.config import load_credentials
    from leansync.history.sync import Source

    api_url = check_api_url(api_url or os.environ.get(ENV_API_URL) or DEFAULT_API_URL)
    credentials = load_credentials(user_id=user_id)  # before anything is sent or written
    for warning in credentials.warnings:
        on_warning(warning)
    return Source(
        label=mask(endpoint_url(api_url)),  # sync_run.source: a gateway's password never lands there
        fetch=lambda: fetch_versions(api_url=api_url, credentials=credentials, timeout=timeout, retries=retries,
                                     deadline=deadline, max_bytes=int(max_response_mb * MIB)),
    )


def check_api_url(api_url: str) -> str:
    """The API URL if it is an http(s) URL with a host; else a ConfigError (a typo, not a failed run)."""
    from urllib.parse import urlsplit

    where = f"the API URL {mask(api_url)} (--api-url / {ENV_API_URL})"
    try:
        parts = urlsplit(api_url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ConfigError(f"{where} is not a valid URL: {exc}") from None
    register(parts.password)  # a gateway's basic auth, masked whatever form a message shows it in
    if parts.scheme.lower() not in ("http", "https"):
        hint = f"; did you mean https://{api_url}?" if "://" not in api_url else ""
        raise ConfigError(f"{where} is not an http:// or https:// URL{mask(hint)}")
    if not parts.hostname:
        raise ConfigError(f"{where} names no host; expected e.g. {DEFAULT_API_URL}")
    return api_url


def export(*, database_url: str | None = None, as_of: datetime | None = None) -> dict[str, Any]:
    """The API's answer as it stood at ``as_of`` (an aware datetime; default now), from the history.

    In the API's own shape, ``{"versions": [...], "success": True, "errors": []}``,
    ascending id; each object has ``id``, the seven fields under the API's keys
    (``created`` as ISO 8601 UTC text with Z) and the state's other keys. A
    moment before the first run gives no versions. Read-only: raises
    ConfigError for a database that does not exist or is not at the current
    schema, DatabaseError when it cannot be read.
    """
    from leansync.store.models import utcnow
    from leansync.read import api_versions_as_of, reading

    if as_of is not None and (as_of.tzinfo is None or as_of.utcoffset() is None):
        raise ConfigError("as_of must be a timezone-aware datetime")
    url = resolve_database_url(database_url)
    with reading(url) as conn:
        versions = api_versions_as_of(conn, as_of or utcnow())
    return {"versions": versions, "success": True, "errors": []}
