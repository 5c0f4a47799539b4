"""The transactional outbox: a run's notifications are rows written with the run, delivered after its commit.

`Outbox.record` writes one `notification` row per target inside the run's
own transaction, so a committed run always has its rows and a rolled-back
run none. `Outbox.deliver` (after the commit, under the run lock) and
`deliver_pending` (`leansync notify`) send what is pending, oldest run
first, and mark each row: sent, still pending with its error, or
abandoned. The promise: at least once, and exactly once unless the process
dies between a target accepting a message and the row being marked sent
(the webhook's Idempotency-Key lets a receiver drop that duplicate).
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, select, update

from leansync.masking import mask
from leansync.outputs.notify.digest import Digest, build
from leansync.outputs.notify.senders import send
from leansync.outputs.notify.targets import Target
from leansync.store.database import database_errors
from leansync.store.models import notification, utcnow
from leansync.timespec import format_age

if TYPE_CHECKING:
    from leansync.history.lock import RunLock

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0  # seconds for all of a run's deliveries together
DEFAULT_MAX_AGE = timedelta(hours=24)
MAX_ERROR_CHARS = 500
N = notification.c


@dataclass
class Delivery:
    """What one delivery round did: rows sent and abandoned now, rows left pending, one warning per target."""

    sent: int = 0
    pending: int = 0
    abandoned: int = 0
    failed: int = 0  # targets that failed this round
    warnings: list[str] = field(default_factory=list)


@dataclass
class Outbox:
    """A run's notification settings; sync() calls record() in its transaction and deliver() after."""

    targets: list[Target]
    timeout: float = DEFAULT_TIMEOUT
    max_age: timedelta = DEFAULT_MAX_AGE
    send: bool = True  # False: write the rows, deliver nothing (run_sync(notify=False))
    result: Delivery | None = None

    def record(self, conn: Connection, *, run_id: int, started_at, plan) -> None:
        """One pending row per target, if the run changed history (a re-spelled raw is no news)."""
        if plan.has_changes and self.targets:
            conn.execute(insert(notification), [
                {"sync_run_id": run_id, "target_label": t.label, "target_key": t.key, "status": "pending",
                 "attempts": 0, "created_at": started_at} for t in self.targets])

    def deliver(self, lock: "RunLock") -> None:
        """After the commit, on the held lock's connections: whatever goes wrong here is a warning."""
        if not self.send:
            return
        try:
            self.result = deliver_pending(lock, self.targets, timeout=self.timeout, max_age=self.max_age)
        except Exception as exc:
            log.debug("delivery failed", exc_info=True)
            reason = _one_line(mask(str(exc))) or type(exc).__name__
            self.result = Delivery(warnings=[f"could not deliver notifications: {reason}; "
                                             "they stay pending for the next run or `leansync notify`"])


def deliver_pending(lock: "RunLock", targets: list[Target], *, timeout: float = DEFAULT_TIMEOUT,
                    max_age: timedelta = DEFAULT_MAX_AGE) -> Delivery:
    """Send every pending row, oldest run first, writing through the held run lock (see leansync.history.lock)."""
    url = lock.url
    by_key = {t.key: t for t in targets}
    delivery = Delivery()
    with database_errors(url), lock.connect() as conn:  # most runs: nothing pending, one read and done
        if conn.execute(select(N.id).where(N.status == "pending").limit(1)).first() is None:
            return delivery
    with database_errors(url), lock.begin() as conn:
        delivery.abandoned = _abandon(conn, by_key, max_age=max_age, warnings=delivery.warnings)
        pending = conn.execute(select(N.id, N.sync_run_id, N.target_key, N.target_label)
                               .where(N.status == "pending").order_by(N.sync_run_id, N.id)).all()
    deadline = time.monotonic() + timeout
    failed: dict[str, str] = {}  # target key -> why; its later rows wait, so runs arrive in order
    digests: dict[int, Digest] = {}
    for row in pending:
        if row.target_key in failed:
            continue
        target = by_key[row.target_key]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = f"not tried: the --notify-timeout of {timeout:g} s ran out"
            _mark(lock, row.id, attempted=False, error=error)
        else:
            if row.sync_run_id not in digests:
                with database_errors(url), lock.connect() as conn:
                    digests[row.sync_run_id] = build(conn, row.sync_run_id)
            attempted_at = utcnow()
            digest = digests[row.sync_run_id]
            error = _bounded(lambda t=target, d=digest, s=remaining: send(t, d, timeout=s), remaining)
            error = None if error is None else _one_line(mask(error))
            _mark(lock, row.id, attempted=True, error=error, attempted_at=attempted_at)
        if error is None:
            delivery.sent += 1
            log.info("run %d's notification delivered to %s", row.sync_run_id, target.label)
        else:
            failed[row.target_key] = error
            delivery.warnings.append(f"could not notify {target.label} of run {row.sync_run_id}: {error}; "
                                     "it stays pending for the next run or `leansync notify`")
    delivery.failed = len(failed)
    delivery.pending = len(pending) - delivery.sent  # a failed target's later rows wait untried
    return delivery


def _abandon(conn: Connection, by_key: dict[str, Target], *, max_age: timedelta, warnings: list[str]) -> int:
    """Mark abandoned the pending rows older than ``max_age`` and those of targets no longer configured."""
    now = utcnow()
    rows = conn.execute(select(N.id, N.sync_run_id, N.target_key, N.target_label, N.created_at, N.last_error)
                        .where(N.status == "pending").order_by(N.sync_run_id, N.id)).all()
    reasons: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if row.target_key not in by_key:
            reason = "abandoned: the target is no longer configured"
        elif now - row.created_at > max_age:
            reason = f"abandoned: not delivered within {format_age(max_age.total_seconds())} of its run"
            if row.last_error:
                reason += f" (last error: {row.last_error})"
        else:
            continue
        conn.execute(update(notification).where(N.id == row.id)
                     .values(status="abandoned", last_error=reason[:MAX_ERROR_CHARS], last_attempt_at=now))
        reasons.setdefault((row.target_label, reason.partition(" (")[0]), []).append(row.sync_run_id)
    for (label, reason), run_ids in reasons.items():
        runs = ", ".join(map(str, run_ids))
        warnings.append(f"gave up notifying {label} of run{'s' if len(run_ids) > 1 else ''} {runs}: "
                        f"{reason.removeprefix('abandoned: ')}")
    return sum(len(ids) for ids in reasons.values())


def _mark(lock: "RunLock", row_id: int, *, attempted: bool, error: str | None, attempted_at=None) -> None:
    values: dict = {}
    if attempted:
        values.update(attempts=N.attempts + 1, last_attempt_at=attempted_at)
    if error is None:
        values.update(status="sent", sent_at=utcnow())
    else:
        values.update(last_error=error[:MAX_ERROR_CHARS])
    with database_errors(lock.url), lock.begin() as conn:
        conn.execute(update(notification).where(N.id == row_id).values(**values))


def _bounded(call, seconds: float) -> str | None:
    """``call()`` in a thread, given ``seconds``: a sender that overruns its own timeouts counts as failed.

    The thread is a daemon: it cannot hold the process open, and a message it
    still manages to send stays pending (at least once).
    """
    outcome: list[str | None] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # a sender's bug must not lose the run's other deliveries
            outcome.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=run, name="leansync-notify", daemon=True)
    worker.start()
    worker.join(seconds)
    return outcome[0] if outcome else f"no answer within {seconds:.3g} s"


def _one_line(text: str) -> str:
    return " ".join(text.split())
