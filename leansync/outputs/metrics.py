"""Prometheus metrics, read from the database and the database only.

`leansync metrics` prints them and `sync --metrics-file` writes them for
node_exporter's textfile collector. The registry is leansync's own, so no
process_* or python_* metrics from prometheus_client's default collectors
(node_exporter has its own; they would clash). The text comes from
prometheus_client's exposition code; nothing here formats it.
"""

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import Connection, func, select

from leansync.store.database import database_errors, database_exists, make_engine, require_schema
from leansync.history.diff import HASH_KINDS as HASH_COLUMNS
from leansync.errors import LeansyncError
from leansync.store.models import NOTIFICATION_STATUSES, lean_hash, lean_version, notification, sync_run, utcnow

RUN_STATUSES = ("success", "failed")
HASH_KINDS = tuple(kind for kind, _ in HASH_COLUMNS)  # lean_hash.kind, as the diff records them
CHANGES = ("inserted", "updated", "removed", "restored", "new_hashes")


@dataclass(frozen=True)
class Facts:
    """What the metrics say, as read from one connection."""

    last_run: dict | None  # the newest sync_run row, either status
    last_success: dict | None  # the newest successful one
    runs: dict[str, int]  # by status, every status present
    hashes: dict[str, int]  # by kind, every kind present
    listed: int
    removed: int
    notifications: dict[str, int]  # rows by status, every status present
    oldest_pending_age: float | None = None  # seconds since the oldest pending row's run started


def _newest(conn: Connection, *where) -> dict | None:
    r = sync_run.c
    row = conn.execute(select(sync_run).where(*where).order_by(r.started_at.desc(), r.id.desc()).limit(1)).first()
    return dict(row._mapping) if row is not None else None


def _counts(conn: Connection, column, keys: tuple[str, ...]) -> dict[str, int]:
    found = dict(conn.execute(select(column, func.count()).group_by(column)).all())
    return {key: found.get(key, 0) for key in keys}


def read_facts(conn: Connection) -> Facts:
    removed = lean_version.c.removed_at.is_not(None)
    listed, gone = (conn.execute(select(func.count()).select_from(lean_version).where(where)).scalar_one()
                    for where in (~removed, removed))
    return Facts(
        last_run=_newest(conn),
        last_success=_newest(conn, sync_run.c.status == "success"),
        runs=_counts(conn, sync_run.c.status, RUN_STATUSES),
        hashes=_counts(conn, lean_hash.c.kind, HASH_KINDS),
        listed=listed,
        removed=gone,
        notifications=_counts(conn, notification.c.status, NOTIFICATION_STATUSES),
        oldest_pending_age=_oldest_pending_age(conn),
    )


def _oldest_pending_age(conn: Connection) -> float | None:
    oldest = conn.execute(select(func.min(notification.c.created_at)).where(notification.c.status == "pending"))
    created_at = oldest.scalar()
    return None if created_at is None else max(0.0, (utcnow() - created_at).total_seconds())


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class FactsCollector:
    """Yields the leansync_* families for one Facts (a prometheus_client custom collector)."""

    def __init__(self, facts: Facts):
        self.facts = facts

    def collect(self):
        f = self.facts
        if f.last_success is not None:
            yield _gauge("leansync_last_success_timestamp_seconds",
                         "started_at of the newest successful sync run, as Unix time.",
                         f.last_success["started_at"].timestamp())
        if f.last_run is not None:
            run = f.last_run
            yield _gauge("leansync_last_run_timestamp_seconds",
                         "started_at of the newest sync run, either status, as Unix time.", run["started_at"].timestamp())
            yield _gauge("leansync_last_run_success", "1 if the newest sync run succeeded, else 0.",
                         1 if run["status"] == "success" else 0)
            if run["finished_at"] is not None:
                yield _gauge("leansync_last_run_duration_seconds",
                             "finished_at minus started_at of the newest sync run, either status.",
                             (run["finished_at"] - run["started_at"]).total_seconds())
        yield _gauge("leansync_versions_listed", "Versions listed now.", f.listed)
        yield _gauge("leansync_versions_removed", "Versions no longer listed.", f.removed)
        hashes = CounterMetricFamily("leansync_hashes", "Distinct commit hashes recorded, by kind.", labels=["kind"])
        for kind, count in f.hashes.items():
            hashes.add_metric([kind], count)
        yield hashes
        runs = CounterMetricFamily("leansync_runs", "Recorded sync runs, by status.", labels=["status"])
        for status, count in f.runs.items():
            runs.add_metric([status], count)
        yield runs
        if f.last_success is not None:
            changes = GaugeMetricFamily("leansync_last_run_changes",
                                        "What the newest successful sync run changed, by kind of change.",
                                        labels=["change"])
            for change in CHANGES:
                changes.add_metric([change], f.last_success[change])
            yield changes
        # A gauge, not a counter: rows leave pending.
        notifications = GaugeMetricFamily("leansync_notifications", "Notification rows (one per run and target), "
                                          "by delivery status.", labels=["status"])
        for status, count in f.notifications.items():
            notifications.add_metric([status], count)
        yield notifications
        if f.oldest_pending_age is not None:
            yield _gauge("leansync_notification_oldest_pending_age_seconds",
                         "Seconds since the run of the oldest notification still pending started.",
                         f.oldest_pending_age)


def registry_for(facts: Facts) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactsCollector(facts))
    return registry


def exposition(conn: Connection) -> bytes:
    """The text exposition format of the database's metrics."""
    return generate_latest(registry_for(read_facts(conn)))


def write_textfile(url: str, path: Path) -> bool:
    """Write the database's metrics to ``path`` atomically: prometheus_client writes
    a temporary file beside it and renames it.

    Returns False, writing nothing, when there is no leansync database to read
    yet; any other failure to read or write raises a LeansyncError.
    """
    if not database_exists(url):
        return False
    engine = make_engine(url)
    try:
        if not require_schema(engine, allow_empty=True):
            return False
        with database_errors(url), engine.connect() as conn:
            registry = registry_for(read_facts(conn))
        try:
            write_to_textfile(str(path), registry)
        except OSError as exc:
            raise LeansyncError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    return True
