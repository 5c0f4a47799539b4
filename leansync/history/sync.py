"""One sync run: lock, schema, clock, fetch, validate, diff, apply, record.

Either every change of a run lands (with its `sync_run` row) or none does.

Every write goes through the held lock's connections (leansync.history.lock:
on PostgreSQL, the session that holds the lock).

Once the schema is at head and the run's clock is read, any failure (the
API, the payload, the guard, the database while applying) leaves a `failed`
sync_run row, written in a transaction of its own; except a lost lock
(LockLost), after which nothing is written. A failure before that
leaves no row, because there is nowhere sound to write one: the lock was
not taken (another run holds it: this run did nothing), the database cannot
be opened, or its schema was refused (from the future: it must stay
untouched) or could not be brought to head (the migration rolled back
whole, so there is no sync_run table of this code's shape to write to).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, func, select

from leansync.store.database import database_errors, ensure_schema, require_schema
from leansync.history.diff import (Plan, Sorting, StoredIndex, check_mass_removal, classify, new_hashes,
                                   plan_versions)
from leansync.errors import ConfigError, DatabaseError, GuardError, LeansyncError, LockLost
from leansync.history.lock import RunLock, run_lock
from leansync.masking import mask
from leansync.store.models import sync_run, utcnow
from leansync.source.payload import split_items
from leansync.timespec import format_utc
from leansync.history.writer import (apply_plan, finish_run, insert_run, read_index, read_known_hashes, read_stored,
                                     write_versions)

if TYPE_CHECKING:
    from leansync.outputs.notify.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a run's payload comes from: the API or a saved response."""

    label: str  # recorded in sync_run.source; never holds a credential
    fetch: Callable[[], bytes]  # returns the response body; the run parses it


@dataclass
class RunOutcome:
    """A run's plan and run id, for leansync.library, which makes the public SyncResult of it."""

    plan: Plan
    run_id: int | None  # None for a dry run
    dry_run: bool = False
    started_at: datetime | None = None  # the run's time; None for a dry run


def sync(engine: Engine, source: Source, *, lock_timeout: float, allow_mass_removal: bool = False,
         observed_at: datetime | None = None, outbox: "Outbox | None" = None) -> RunOutcome:
    """One run; ``observed_at`` (a backfill) is its started_at instead of now.

    ``outbox`` (leansync.outputs.notify) writes the run's notification rows in
    its transaction and delivers what is pending after the commit, under the lock.
    """
    url = str(engine.url)
    check_not_future(observed_at)  # before anything is created
    with run_lock(engine, timeout=lock_timeout) as lock:
        ensure_schema(engine, via=lock)  # a failure here leaves no run row (module docstring)
        with database_errors(url), lock.connect() as conn:
            started_at = run_clock(conn) if observed_at is None else backfill_clock(conn, observed_at)
        try:
            body = source.fetch()
            with database_errors(url), lock.begin() as conn:
                # Decodes and validates too, writing the new versions as they come.
                plan = plan_against(conn, body, source=source.label, now=started_at)
                del body
                check_mass_removal(plan, allow=allow_mass_removal)
                run_id = insert_run(conn, started_at=started_at, source=source.label,
                                    status="success", counts=plan.counts())
                apply_plan(conn, plan, run_id=run_id, now=started_at)
                finish_run(conn, run_id, finished_at=_not_before(started_at), counts=plan.counts())
                if outbox is not None:
                    outbox.record(conn, run_id=run_id, started_at=started_at, plan=plan)
        except LockLost:
            raise  # another run may hold the lock by now: a row written now could land beside its run
        except Exception as exc:
            exc.run_id = _record_failure(lock, started_at=started_at, source=source.label, error=exc)
            raise
        if outbox is not None:
            outbox.deliver(lock)  # committed: a failed delivery is a warning, never the run's failure
    log.info("run %d committed: %s", run_id, plan.counts())
    return RunOutcome(plan=plan, run_id=run_id, started_at=started_at)


def plan_against(conn: Connection | None, body: bytes, *, source: str, now: datetime | None = None) -> Plan:
    """Split, decode what changed and plan what brings the database in line with the response.

    ``conn`` None: there is no database yet, everything is new. Items whose
    digest is a listed version's stored one are never decoded; the stored
    state is read only for the ids of the others (see leansync.history.diff).

    ``now`` (a real run, its timestamp): the new versions are written as they
    are decoded, and the plan keeps only their ids; the new hashes are then
    left to apply_plan, which counts them. Without it (a dry run), nothing is
    written and the plan holds everything.
    """
    items = split_items(body, source=source)
    index = read_index(conn) if conn is not None else StoredIndex()
    sorting = Sorting.of(index, len(items))
    new = classify(items, index=index, sorting=sorting, source=source)
    if now is None:
        inserted = list(new)
    else:
        write_versions(conn, new, now=now)
        inserted = None
    ids = [v.id for v in sorting.existing]
    stored = read_stored(conn, ids) if ids else {}
    plan = plan_versions(index=index, sorting=sorting, stored=stored, inserted=inserted)
    if now is None:
        # Hashes come with versions: with none stored, none is known.
        plan.new_hashes = new_hashes(plan, read_known_hashes(conn, plan) if len(index) else set())
    else:
        plan.new_hashes = None
    return plan


def run_clock(conn: Connection) -> datetime:
    """The run's timestamp: now, but always after the newest recorded run.

    Read under the lock, so runs' timestamps follow their commit order even
    when the wall clock steps back (an NTP correction): a history row never
    closes before it opened. One query on the indexed sync_run.started_at.
    """
    newest = conn.execute(select(func.max(sync_run.c.started_at))).scalar()
    now = utcnow()
    if newest is not None and newest >= now:
        return newest + timedelta(microseconds=1)
    return now


def backfill_clock(conn: Connection, observed_at: datetime) -> datetime:
    """A backfill's timestamp: ``observed_at``, which must come after every run that wrote history.

    History only grows forward: a time not later than the newest successful
    run is refused with a ConfigError, before anything is written. A failed
    run wrote no history, so it blocks nothing: a backfill that failed at
    WHEN can be retried at WHEN. Its callers have already refused a time in
    the future (check_not_future).
    """
    newest = conn.execute(
        select(sync_run.c.id, sync_run.c.started_at).where(sync_run.c.status == "success")
        .order_by(sync_run.c.started_at.desc(), sync_run.c.id.desc()).limit(1)
    ).first()
    if newest is not None and observed_at <= newest.started_at:
        raise ConfigError(
            f"--observed-at {format_utc(observed_at)} is not later than the newest successful run "
            f"(run {newest.id} at {format_utc(newest.started_at)}); a history only grows forward, "
            "nothing was written"
        )
    return observed_at.astimezone(timezone.utc)


def check_not_future(observed_at: datetime | None) -> None:
    if observed_at is not None and observed_at > utcnow():
        raise ConfigError(f"--observed-at {format_utc(observed_at)} is in the future; nothing was written")


def _not_before(started_at: datetime) -> datetime:
    """finished_at: now, but not before the run started (see run_clock)."""
    return max(utcnow(), started_at)


def dry_run(engine: Engine | None, source: Source, *, allow_mass_removal: bool = False,
            observed_at: datetime | None = None,
            preview: Callable[[Connection | None, Plan], None] | None = None) -> RunOutcome:
    """Compute the plan and write nothing: no lock file, no migration, no run row.

    ``engine`` is None when the database does not exist yet (all would be new).
    A plan the real run would refuse raises the guard's GuardError, as the
    real run does, but nothing is written; so is an ``observed_at`` the real
    run would refuse. ``preview`` sees the plan with the connection it was
    planned on (None: no database yet); it must leave nothing behind.
    """
    check_not_future(observed_at)
    body = source.fetch()
    if engine is not None and require_schema(engine, allow_empty=True):
        with database_errors(str(engine.url)), engine.connect() as conn:
            if observed_at is not None:
                backfill_clock(conn, observed_at)
            plan = plan_against(conn, body, source=source.label)
            if preview is not None:
                preview(conn, plan)
    else:
        plan = plan_against(None, body, source=source.label)
        if preview is not None:
            preview(None, plan)
    try:
        check_mass_removal(plan, allow=allow_mass_removal)
    except GuardError as exc:
        exc.dry_run_plan = plan  # so the output can show what the refused run would have done
        raise
    return RunOutcome(plan=plan, run_id=None, dry_run=True)


def _record_failure(lock: RunLock, *, started_at: datetime, source: str, error: Exception) -> int | None:
    """Write the `failed` sync_run row, under the lock; returns its id, or None if even that failed."""
    message = str(error) if isinstance(error, LeansyncError) else mask(f"{type(error).__name__}: {error}")
    try:
        with database_errors(lock.url), lock.begin() as conn:
            return insert_run(conn, started_at=started_at, source=source, status="failed",
                              error=message, finished_at=_not_before(started_at))
    except Exception as exc:  # the original error matters more than this one
        # One line; the traceback only with -v (which configures logging at
        # DEBUG): unconfigured, Python's last-resort handler would print it to
        # every cron mail. When the database itself was the run's failure,
        # failing to write to it is no news: the error says it all.
        # Nor is a lost lock: writing nothing is then what must happen.
        verbose = log.isEnabledFor(logging.DEBUG)
        level = logging.DEBUG if isinstance(error, DatabaseError) or isinstance(exc, LockLost) else logging.WARNING
        reason = mask((str(exc).strip().splitlines() or [type(exc).__name__])[0])
        log.log(level, "could not record the failed run in sync_run: %s", reason, exc_info=verbose)
        return None
