"""Apply a plan to the database with set-based statements.

Every statement here runs once per run (or once per executemany batch),
whatever the number of versions: tests/test_statements.py counts them.
The caller owns the transaction, so a run lands whole or not at all.
"""

from datetime import datetime

from sqlalchemy import Connection, bindparam, func, insert, select, update

from leansync.diff import Plan, StoredVersion
from leansync.models import API_FIELDS, UTCDateTime, lean_hash, lean_version, lean_version_history, sync_run
from leansync.payload import Version

V = lean_version.c
H = lean_version_history.c


def read_state(conn: Connection) -> tuple[list[StoredVersion], set[tuple[str, str]]]:
    """The stored versions and the hashes already known, for the diff."""
    columns = [V[name] for name in API_FIELDS]
    rows = conn.execute(select(V.id, V.raw, V.removed_at.is_not(None), *columns))
    stored = [StoredVersion(id=r[0], raw=r[1], removed=bool(r[2]), fields=tuple(r[3:])) for r in rows]
    hashes = {(kind, value) for kind, value in conn.execute(select(lean_hash.c.kind, lean_hash.c.hash))}
    return stored, hashes


def insert_run(conn: Connection, *, started_at: datetime, source: str, status: str,
               counts: dict[str, int] | None = None, error: str | None = None,
               finished_at: datetime | None = None) -> int:
    values = dict(started_at=started_at, source=source, status=status, error=error,
                  finished_at=finished_at, **(counts or {}))
    return conn.execute(insert(sync_run).values(**values).returning(sync_run.c.id)).scalar_one()


def finish_run(conn: Connection, run_id: int, *, finished_at: datetime) -> None:
    conn.execute(update(sync_run).where(sync_run.c.id == run_id).values(finished_at=finished_at))


def _api_values(version: Version) -> dict:
    return dict(zip(API_FIELDS, version.fields))


def apply_plan(conn: Connection, plan: Plan, *, run_id: int, now: datetime) -> None:
    """Write the plan; every row written carries ``now``, the run's timestamp."""
    if plan.inserted:
        conn.execute(
            insert(lean_version),
            [
                dict(id=v.id, **_api_values(v), first_seen_at=now, last_seen_at=now,
                     updated_at=now, removed_at=None, raw=v.raw)
                for v in plan.inserted
            ],
        )

    changes = plan.updated + plan.restored
    if changes:
        # Updates and restores: new fields, back on the list; updated_at moves
        # only when a modelled field changed (a restore may change nothing).
        conn.execute(
            update(lean_version)
            .where(V.id == bindparam("b_id"))
            .values(
                **{name: bindparam(f"b_{name}", type_=V[name].type) for name in API_FIELDS},
                raw=bindparam("b_raw", type_=V.raw.type),
                removed_at=None,
                updated_at=func.coalesce(bindparam("b_updated_at", type_=UTCDateTime), V.updated_at),
            ),
            [
                dict({f"b_{k}": val for k, val in _api_values(c.version).items()},
                     b_id=c.version.id, b_raw=c.version.raw,
                     b_updated_at=now if c.changed_fields else None)
                for c in changes
            ],
        )

    # Close the open history row of every changed or removed version.
    closing = [c.version.id for c in plan.updated] + plan.removed
    if closing:
        conn.execute(
            update(lean_version_history)
            .where(H.version_id == bindparam("b_id"), H.valid_to.is_(None))
            .values(valid_to=now),
            [{"b_id": vid} for vid in closing],
        )

    if plan.removed:
        conn.execute(
            update(lean_version).where(V.id == bindparam("b_id")).values(removed_at=now),
            [{"b_id": vid} for vid in plan.removed],
        )

    opening = [(v, None) for v in plan.inserted] + [
        (c.version, ",".join(c.changed_fields) or None) for c in changes
    ]
    if opening:
        conn.execute(
            insert(lean_version_history),
            [
                dict(version_id=v.id, **_api_values(v), valid_from=now, valid_to=None,
                     changed_fields=fields, sync_run_id=run_id)
                for v, fields in opening
            ],
        )

    if plan.raw_refreshed:
        # Fields the schema does not model changed: keep the newest raw object.
        conn.execute(
            update(lean_version).where(V.id == bindparam("b_id")).values(raw=bindparam("b_raw", type_=V.raw.type)),
            [{"b_id": v.id, "b_raw": v.raw} for v in plan.raw_refreshed],
        )

    # Every listed version was seen now; removed ones keep their last sighting.
    conn.execute(update(lean_version).where(V.removed_at.is_(None)).values(last_seen_at=now))

    if plan.new_hashes:
        conn.execute(
            insert(lean_hash),
            [
                dict(kind=h.kind, hash=h.hash, first_seen_at=now,
                     first_version_id=h.first_version_id, sync_run_id=run_id)
                for h in plan.new_hashes
            ],
        )
