"""Read-side queries: the rows `versions`, `show`, `hashes`, `changes` and
`runs` print, and the facts `check` decides on (how they are printed is
leansync.cli's business).

Events come from the `lean_version_event` view and the listed versions from
`lean_version_current` (migration 0002), so the command line and a reporting
tool reading the views get the same answers. Every function returns plain
rows (dicts keyed by column name, in column order) with Python values:
timezone-aware UTC datetimes, bools, ints, strings and None.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    case,
    func,
    or_,
    select,
)

from leansync.store.database import database_errors, make_engine, require_schema
from leansync.store.models import (
    API_FIELDS,
    NOTIFICATION_STATUSES,
    UTCDateTime,
    lean_hash,
    lean_version,
    lean_version_history,
    notification,
    sync_run,
)
from leansync.outputs.links import commit_url, compare_url
from leansync.source.payload import FIELD_KEYS
from leansync.timespec import format_utc

# The views, described for SQLAlchemy only. They live in their own MetaData
# so that Alembic's autogenerate (which compares models.metadata) never
# mistakes them for tables. Their comments are their descriptions, as the
# tables' are (see leansync.store.models).
views = MetaData()


def _as_in_lean_version(name: str) -> Column:
    """A column of lean_version_current: lean_version's, with its type and description."""
    return Column(name, lean_version.c[name].type, comment=lean_version.c[name].comment)


lean_version_current = Table(
    "lean_version_current",
    views,
    Column("id", Integer, primary_key=True, comment=lean_version.c.id.comment),
    *[_as_in_lean_version(name) for name in (*API_FIELDS, "first_seen_at")],
    Column("last_seen_at", UTCDateTime,
           comment="The started_at of the newest successful run (migration 0003; before, a stored column that "
                   "every run rewrote)."),
    *[_as_in_lean_version(name) for name in ("updated_at", "raw")],
    comment="The versions listed now.",
)

lean_version_event = Table(
    "lean_version_event",
    views,
    Column("event_time", UTCDateTime,
           comment="When it happened: the started_at of the run that saw it (for removed, the valid_to of the "
                   "closed row)."),
    Column("event", Text, comment="new_version, changed, removed, restored or new_hash."),
    Column("version_id", Integer,
           comment="The version. For new_hash: the lowest id that carried the hash in the run that first saw it "
                   "(lean_hash.first_version_id)."),
    Column("changed_fields", Text,
           comment="For changed and restored: the comma-separated fields and other keys that differ from the "
                   "previous state (lean_version_history.changed_fields; null for a return with nothing changed). "
                   "Null for the other events."),
    Column("hash_kind", Text, comment="For new_hash: lean or lean_cloud; else null."),
    Column("hash", Text, comment="For new_hash: the hash; else null."),
    Column("history_id", Integer,
           comment="The lean_version_history row the event opened (new_version, changed, restored) or closed "
                   "(removed): join it for the new values. Null for new_hash."),
    Column("previous_history_id", Integer,
           comment="For changed and restored: the version's row before it: join it for the old values. Else null."),
    Column("sync_run_id", Integer,
           comment="The sync_run that made the change; for removed, the successful run that started at "
                   "event_time."),
    comment="One row per event of the change feed.",
)

EVENT_KINDS = ("new_version", "changed", "removed", "restored", "new_hash")

# The columns each listing returns, in output order: what JSON and CSV
# export. (Not writer.py's *_COLUMNS, which are what a sync inserts.)
# Listings of a table carry every column it has, raw included (lean_version:
# raw_digest is left out, and last_seen_at computed: see _last_seen).
# commit_url (and compare_url) come last: links added to the listings
# (leansync.outputs.links, from the row's own lean_hash, never lean_cloud_hash).
VERSION_LISTING_COLUMNS = ("id", *API_FIELDS, "first_seen_at", "last_seen_at", "updated_at", "removed_at", "raw",
                           "commit_url")
# A state is its seven fields and `extra`, the object's other keys.
AS_OF_LISTING_COLUMNS = ("id", *API_FIELDS, "extra", "valid_from", "valid_to", "commit_url")
STATE_LISTING_COLUMNS = ("version_id", "valid_from", "valid_to", "event", "ended_by", "changed_fields", "changes",
                         *API_FIELDS, "extra", "sync_run_id", "commit_url")
HASH_LISTING_COLUMNS = tuple(c.name for c in lean_hash.columns)
EVENT_LISTING_COLUMNS = ("event_time", "event", "version_id", "changed_fields", "changes", "extra", "hash_kind",
                         "hash", "sync_run_id", "commit_url", "compare_url")
LINK_COLUMNS = ("commit_url", "compare_url")
# A run's delivery state: how many of its notification rows (one per target) are in each status.
RUN_NOTIFICATION_COLUMNS = tuple(f"notifications_{status}" for status in NOTIFICATION_STATUSES)
RUN_LISTING_COLUMNS = (*(c.name for c in sync_run.columns), *RUN_NOTIFICATION_COLUMNS)

V = lean_version.c
H = lean_version_history.c
STATE_COLUMNS = (*API_FIELDS, "extra")  # what a history row says of the version's object
E = lean_version_event.c


class NotFound(LookupError):
    pass


def open_database(url: str) -> Engine:
    """An engine on an existing database at the current schema; creates and migrates nothing."""
    engine = make_engine(url, readonly=True)
    require_schema(engine)
    return engine


@contextmanager
def reading(url: str) -> Iterator[Connection]:
    """One read-only connection to an existing database at the current schema, for the read side's outputs."""
    engine = open_database(url)
    try:
        with database_errors(url), engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _rows(result, columns) -> list[dict]:
    """Plain rows; commit_url is built from the row's own lean_hash."""
    rows = [{name: row._mapping.get(name) for name in columns} for row in result]
    if "commit_url" in columns:
        for row in rows:
            row["commit_url"] = commit_url(row["lean_hash"])
    return rows


def _last_seen():
    """When a version was last seen: the newest successful run while it was listed.

    Every successful run sees every listed version, so for a listed one that
    is the newest successful run; for a removed one, the newest that started
    before its removed_at (docs/sql.md has the same SQL).
    """
    r = sync_run.alias("seen")
    return (
        select(func.max(r.c.started_at))
        .where(r.c.status == "success", or_(V.removed_at.is_(None), r.c.started_at < V.removed_at))
        .scalar_subquery()
        .label("last_seen_at")
    )


def _version_columns() -> list:
    """lean_version's columns as the listings show them."""
    return [_last_seen() if name == "last_seen_at" else V[name] for name in VERSION_LISTING_COLUMNS
            if name not in LINK_COLUMNS]


def versions(conn: Connection, *, which: str = "listed", public: bool | None = None,
             limit: int | None = None) -> list[dict]:
    """Versions newest id first: ``which`` is listed (the default), all, or removed."""
    if which == "listed":
        source = lean_version_current.c  # it has no removed_at: _rows fills in None
        stmt = select(*[source[name] for name in VERSION_LISTING_COLUMNS if name in source])
    elif which in ("all", "removed"):
        source = V
        stmt = select(*_version_columns())
    else:
        raise ValueError(which)
    if which == "removed":
        stmt = stmt.where(V.removed_at.is_not(None))
    if public is not None:
        stmt = stmt.where(source.public.is_(public))
    stmt = stmt.order_by(source.id.desc()).limit(limit)
    return _rows(conn.execute(stmt), VERSION_LISTING_COLUMNS)


def versions_as_of(conn: Connection, when: datetime, *, public: bool | None = None,
                   limit: int | None = None) -> list[dict]:
    """The list as it was at ``when``, from lean_version_history, newest id first."""
    stmt = select(H.version_id.label("id"), *[H[f] for f in API_FIELDS], H.extra, H.valid_from, H.valid_to).where(
        H.valid_from <= when, or_(H.valid_to.is_(None), H.valid_to > when)
    )
    if public is not None:
        stmt = stmt.where(H.public.is_(public))
    stmt = stmt.order_by(H.version_id.desc()).limit(limit)
    return _rows(conn.execute(stmt), AS_OF_LISTING_COLUMNS)


def _field_changes(old: dict | None, new: dict, changed_fields: str | None) -> dict | None:
    """{field: {"old": ..., "new": ...}} for the fields and other keys a state changed.

    ``old`` and ``new`` hold the seven fields and ``extra``. An other key that
    was added has no "old", one that was removed no "new" (a key sent as null
    is there, with the value null).
    """
    if old is None or not changed_fields:
        return None
    out = {}
    for name in changed_fields.split(","):
        if name in API_FIELDS:
            out[name] = {"old": old[name], "new": new[name]}
        else:
            before, after = old["extra"] or {}, new["extra"] or {}
            out[name] = {side: keys[name] for side, keys in (("old", before), ("new", after)) if name in keys}
    return out


def version_summary(conn: Connection, version_id: int) -> dict:
    """One version's lean_version row, as ``versions --all`` lists it."""
    rows = _rows(conn.execute(select(*_version_columns()).where(V.id == version_id)), VERSION_LISTING_COLUMNS)
    if not rows:
        raise NotFound(version_id)
    return rows[0]


def version_states(conn: Connection, version_id: int) -> list[dict]:
    """Every state of one version, oldest first, with what opened and ended it."""
    states = conn.execute(
        select(lean_version_history).where(H.version_id == version_id).order_by(H.valid_from, H.id)
    ).all()
    events = conn.execute(
        select(E.event, E.history_id, E.previous_history_id)
        .where(E.version_id == version_id, E.history_id.is_not(None))
    ).all()
    opened = {e.history_id: e for e in events if e.event != "removed"}
    removed = {e.history_id for e in events if e.event == "removed"}
    by_id = {s.id: s._mapping for s in states}
    out = []
    for state in states:
        s = state._mapping
        event = opened.get(s["id"])
        previous = by_id.get(event.previous_history_id) if event is not None else None
        ended_by = None
        if s["valid_to"] is not None:
            ended_by = "removed" if s["id"] in removed else "changed"
        out.append({
            "version_id": version_id,
            "valid_from": s["valid_from"],
            "valid_to": s["valid_to"],
            "event": event.event if event is not None else None,
            "ended_by": ended_by,
            "changed_fields": s["changed_fields"],
            "changes": _field_changes(previous, s, s["changed_fields"]),
            **{name: s[name] for name in API_FIELDS},
            "extra": s["extra"],
            "sync_run_id": s["sync_run_id"],
            "commit_url": commit_url(s["lean_hash"]),
        })
    return out


def hashes(conn: Connection, *, kind: str | None = None, since: datetime | None = None) -> list[dict]:
    """Hashes newest first, with the run and version that first carried them."""
    h = lean_hash.c
    stmt = select(lean_hash)
    if kind is not None:
        stmt = stmt.where(h.kind == kind)
    if since is not None:
        stmt = stmt.where(h.first_seen_at >= since)
    stmt = stmt.order_by(h.first_seen_at.desc(), h.first_version_id.desc(), h.kind, h.hash)
    return _rows(conn.execute(stmt), HASH_LISTING_COLUMNS)


# Within one run: a version's own events first, its new hashes after them.
_EVENT_RANK = case({kind: rank for rank, kind in enumerate(EVENT_KINDS)}, value=E.event, else_=len(EVENT_KINDS))


def _previous_listed_hash():
    """For a new version: the lean_hash of the highest id below it listed at that moment."""
    p = lean_version_history.alias("previous_state")
    return (
        select(p.c.lean_hash)
        .where(p.c.version_id < E.version_id, p.c.valid_from <= E.event_time,
               or_(p.c.valid_to.is_(None), p.c.valid_to > E.event_time))
        .order_by(p.c.version_id.desc())
        .limit(1)
        .scalar_subquery()
    )


_EVENT_SOURCE_COLUMNS = (*(n for n in EVENT_LISTING_COLUMNS if n not in ("changes", "extra", *LINK_COLUMNS)),
                         "history_id")


def events(conn: Connection, *, since: datetime | None, until: datetime | None = None,
           newest: int | None = None, with_state: bool = False) -> list[dict]:
    """The change feed from lean_version_event: since inclusive, until exclusive, oldest first.

    ``newest``: only the newest that many events of the window (still oldest first).
    ``with_state``: each row also has "state", the seven fields and extra of the
    state the event opened or closed (all None for new_hash), and "history_id".
    """
    new = lean_version_history.alias("new_state")
    old = lean_version_history.alias("old_state")
    stmt = (
        select(
            *[E[name] for name in _EVENT_SOURCE_COLUMNS],
            *[new.c[f].label(f"new_{f}") for f in STATE_COLUMNS],
            *[old.c[f].label(f"old_{f}") for f in STATE_COLUMNS],
            old.c.id.label("old_id"),
            case((E.event == "new_version", _previous_listed_hash())).label("previous_lean_hash"),
        )
        .select_from(
            lean_version_event.outerjoin(new, new.c.id == E.history_id)
            .outerjoin(old, old.c.id == E.previous_history_id)
        )
    )
    if since is not None:
        stmt = stmt.where(E.event_time >= since)
    if until is not None:
        stmt = stmt.where(E.event_time < until)
    order = (E.event_time, E.version_id, _EVENT_RANK, E.hash_kind, E.hash)
    if newest is not None:
        stmt = stmt.order_by(*[c.desc() for c in order]).limit(newest)
    else:
        stmt = stmt.order_by(*order)
    out = []
    for row in conn.execute(stmt):
        m = row._mapping
        old_values = {f: m[f"old_{f}"] for f in STATE_COLUMNS} if m["old_id"] is not None else None
        new_values = {f: m[f"new_{f}"] for f in STATE_COLUMNS}
        # The event's own leanHash: its state's, or the new hash itself (a lean one only).
        lean = m["hash"] if m["event"] == "new_hash" and m["hash_kind"] == "lean" else new_values["lean_hash"]
        computed = {"changes": _field_changes(old_values, new_values, m["changed_fields"]),
                    "extra": new_values["extra"],
                    "commit_url": commit_url(lean),
                    "compare_url": compare_url(m["previous_lean_hash"], lean) if m["event"] == "new_version" else None}
        row_out = {name: computed[name] if name in computed else m[name] for name in EVENT_LISTING_COLUMNS}
        if with_state:
            row_out.update(state=new_values, history_id=m["history_id"])
        out.append(row_out)
    if newest is not None:
        out.reverse()
    return out


def runs(conn: Connection, *, limit: int | None = None) -> list[dict]:
    n = notification.c
    delivery = (
        select(n.sync_run_id, *[func.count().filter(n.status == status).label(f"notifications_{status}")
                                for status in NOTIFICATION_STATUSES])
        .group_by(n.sync_run_id).subquery()
    )
    stmt = (
        select(sync_run, *[func.coalesce(delivery.c[name], 0).label(name) for name in RUN_NOTIFICATION_COLUMNS])
        .select_from(sync_run.outerjoin(delivery, delivery.c.sync_run_id == sync_run.c.id))
        .order_by(sync_run.c.id.desc()).limit(limit)
    )
    return _rows(conn.execute(stmt), RUN_LISTING_COLUMNS)


@dataclass(frozen=True)
class DeliveryHealth:
    """What check says of notifications: the oldest pending row, and the rows abandoned lately."""

    oldest_pending_at: datetime | None  # created_at (its run's start) of the oldest pending row
    oldest_pending_label: str | None
    abandoned: int  # rows abandoned since the given moment
    abandoned_reason: str | None  # the newest one's


def delivery_health(conn: Connection, *, abandoned_since: datetime) -> DeliveryHealth:
    n = notification.c
    oldest = conn.execute(select(n.created_at, n.target_label).where(n.status == "pending")
                          .order_by(n.created_at, n.id).limit(1)).first()
    abandoned = conn.execute(select(n.target_label, n.last_error).where(
        n.status == "abandoned", n.last_attempt_at >= abandoned_since).order_by(n.last_attempt_at.desc(),
                                                                                 n.id.desc())).all()
    return DeliveryHealth(
        oldest_pending_at=oldest.created_at if oldest else None,
        oldest_pending_label=oldest.target_label if oldest else None,
        abandoned=len(abandoned),
        abandoned_reason=f"{abandoned[0].target_label}: {abandoned[0].last_error}" if abandoned else None,
    )


# --- check: the facts the monitoring verdict is decided on -----------------------

@dataclass(frozen=True)
class Health:
    last_success_id: int | None
    last_success_at: datetime | None
    failed_since: int  # failed runs after the newest success (all of them if none)
    last_error: str | None  # the newest failed run's error, if any failed since
    listed: int  # versions listed now


def health(conn: Connection) -> Health:
    r = sync_run.c
    last = conn.execute(
        select(r.id, r.started_at).where(r.status == "success").order_by(r.started_at.desc(), r.id.desc()).limit(1)
    ).first()
    failed = select(r.id, r.error).where(r.status == "failed")
    if last is not None:
        failed = failed.where(r.started_at > last.started_at)
    failures = conn.execute(failed.order_by(r.started_at.desc(), r.id.desc())).all()
    listed = conn.execute(select(func.count()).select_from(lean_version_current)).scalar_one()
    return Health(
        last_success_id=last.id if last else None,
        last_success_at=last.started_at if last else None,
        failed_since=len(failures),
        last_error=failures[0].error if failures else None,
        listed=listed,
    )


# --- export: the API's answer at a moment ------------------------------------

def api_versions_as_of(conn: Connection, when: datetime) -> list[dict]:
    """The version objects the API listed at ``when``, ascending id, under the API's keys.

    Each is the state's seven fields (``created`` as ISO 8601 UTC with Z,
    None for a value sent as null or left out) and the keys it had beyond them.
    """
    stmt = select(H.version_id, *[H[f] for f in API_FIELDS], H.extra).where(
        H.valid_from <= when, or_(H.valid_to.is_(None), H.valid_to > when)
    ).order_by(H.version_id)
    out = []
    for row in conn.execute(stmt):
        m = row._mapping
        item = {"id": m["version_id"]}
        for column, key in FIELD_KEYS:
            value = m[column]
            item[key] = format_utc(value) if column == "created" and value is not None else value
        item.update(m["extra"] or {})  # never id or the seven: extra holds only the other keys
        out.append(item)
    return out
