"""One sync run: lock, clock, fetch, validate, diff, apply, record.

Either every change of a run lands (with its `sync_run` row) or none does.
A run that fails after taking the lock leaves a `failed` sync_run row,
written in a transaction of its own.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from leansync.database import database_errors, ensure_schema, require_schema, sqlite_path
from leansync.diff import Plan, check_mass_removal, plan_sync
from leansync.errors import LeansyncError
from leansync.lock import run_lock
from leansync.models import utcnow
from leansync.payload import validate_document
from leansync.writer import apply_plan, finish_run, insert_run, plan_against

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a run's payload comes from: the API or a saved response."""

    label: str  # recorded in sync_run.source; never holds a credential
    fetch: Callable[[], Any]  # returns the parsed JSON document


@dataclass
class SyncResult:
    plan: Plan
    run_id: int | None  # None for a dry run
    dry_run: bool = False


def sync(engine: Engine, source: Source, *, lock_timeout: float, allow_mass_removal: bool = False) -> SyncResult:
    url = str(engine.url)
    with run_lock(engine, timeout=lock_timeout):
        ensure_schema(engine)
        started_at = utcnow()  # after the lock: run timestamps follow commit order
        try:
            incoming = validate_document(source.fetch(), source=source.label)
            with database_errors(url), engine.begin() as conn:
                plan = plan_against(conn, incoming)
                check_mass_removal(plan, allow=allow_mass_removal)
                run_id = insert_run(conn, started_at=started_at, source=source.label,
                                    status="success", counts=plan.counts())
                apply_plan(conn, plan, run_id=run_id, now=started_at)
                finish_run(conn, run_id, finished_at=utcnow())
        except Exception as exc:
            exc.run_id = _record_failure(engine, started_at=started_at, source=source.label, error=exc)
            raise
    log.info("run %d committed: %s", run_id, plan.counts())
    return SyncResult(plan=plan, run_id=run_id)


def dry_run(engine: Engine | None, source: Source) -> SyncResult:
    """Compute the plan and write nothing: no lock file, no migration, no run row.

    ``engine`` is None when the database does not exist yet (all would be new).
    """
    incoming = validate_document(source.fetch(), source=source.label)
    if engine is not None and require_schema(engine, allow_empty=True):
        with database_errors(str(engine.url)), engine.connect() as conn:
            plan = plan_against(conn, incoming)
    else:
        plan = plan_sync(stored=[], known_hashes=set(), incoming=incoming)
    return SyncResult(plan=plan, run_id=None, dry_run=True)


def _record_failure(engine: Engine, *, started_at, source: str, error: Exception) -> int | None:
    """Write the `failed` sync_run row; returns its id, or None if even that failed."""
    message = str(error) if isinstance(error, LeansyncError) else f"{type(error).__name__}: {error}"
    try:
        with engine.begin() as conn:
            return insert_run(conn, started_at=started_at, source=source, status="failed",
                              error=message, finished_at=utcnow())
    except Exception:  # the original error matters more than this one
        log.warning("could not record the failed run in sync_run", exc_info=True)
        return None


def database_exists(url: str) -> bool:
    """False only for a SQLite file that is not there (other backends: assume so)."""
    path = sqlite_path(url)
    return path is None or path.exists()
