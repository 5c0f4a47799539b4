"""The database side of a run: read the stored state, apply a plan.

Every statement here runs once per run (an executemany counts once), however
many versions there are: tests/test_statements.py counts them. The caller
owns the transaction, so a run lands whole or not at all.

The bulk statements go to the driver directly (``exec_driver_sql``) with
values already in the driver's form (see ``Codec``): SQLAlchemy's per-value
type processing would otherwise cost several times the database's own work
at 100,000 versions (benchmarks/README.md).
"""

from datetime import datetime, timezone

from sqlalchemy import Connection, Table, insert, update

from leansync.diff import Plan, StoredVersion
from leansync.models import API_FIELDS, lean_hash, lean_version, lean_version_history, sync_run
from leansync.payload import raw_text

CREATED = API_FIELDS.index("created")
HISTORY_COLUMNS = ("version_id", *API_FIELDS, "valid_from", "valid_to", "changed_fields", "sync_run_id")
VERSION_COLUMNS = ("id", *API_FIELDS, "first_seen_at", "updated_at", "removed_at", "raw")
HASH_COLUMNS = ("kind", "hash", "first_seen_at", "first_version_id", "sync_run_id")


class Codec:
    """Python values <-> what the DBAPI driver of one backend takes and returns.

    Mirrors leansync.models.UTCDateTime and RawJSON: SQLite keeps UTC
    timestamps as text ``YYYY-MM-DD HH:MM:SS.ffffff`` and JSON as text;
    PostgreSQL (psycopg) takes aware datetimes and jsonb.
    """

    def __init__(self, dialect_name: str):
        self.sqlite = dialect_name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"

    def placeholder(self, column: str) -> str:
        return "%s::jsonb" if column == "raw" and not self.sqlite else self.mark

    def timestamp(self, value: datetime | None):
        if value is None or not self.sqlite:
            return value
        if value.tzinfo is not timezone.utc:
            value = value.astimezone(timezone.utc)
        # The text SQLAlchemy's SQLite DateTime writes (always with microseconds),
        # without the "+00:00" that isoformat adds.
        return value.isoformat(" ", "microseconds")[:26]

    def fields(self, fields: tuple) -> tuple:
        """The seven API fields, ``created`` converted."""
        created = fields[CREATED]
        if created is None or not self.sqlite:
            return fields
        return (*fields[:CREATED], self.timestamp(created), *fields[CREATED + 1:])


def _insert_sql(table: Table, columns: tuple[str, ...], codec: Codec) -> str:
    marks = ", ".join(codec.placeholder(c) for c in columns)
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"


def read_versions(conn: Connection) -> list[StoredVersion]:
    """The stored versions, for the diff.

    Only id, raw (JSON text on SQLite, decoded jsonb on PostgreSQL) and the
    removed flag are read: the diff derives the seven fields from raw for the
    few versions whose raw object changed.
    """
    rows = conn.exec_driver_sql(f"SELECT id, raw, removed_at IS NOT NULL FROM {lean_version.name}").all()
    return [StoredVersion(vid, None, raw, bool(removed)) for vid, raw, removed in rows]


def read_hashes(conn: Connection) -> set[tuple[str, str]]:
    return {(kind, value) for kind, value in conn.exec_driver_sql(f"SELECT kind, hash FROM {lean_hash.name}").all()}


def read_state(conn: Connection) -> tuple[list[StoredVersion], set[tuple[str, str]]]:
    """The stored versions and the hashes already known."""
    return read_versions(conn), read_hashes(conn)


def insert_run(conn: Connection, *, started_at: datetime, source: str, status: str,
               counts: dict[str, int] | None = None, error: str | None = None,
               finished_at: datetime | None = None) -> int:
    values = dict(started_at=started_at, source=source, status=status, error=error,
                  finished_at=finished_at, **(counts or {}))
    return conn.execute(insert(sync_run).values(**values).returning(sync_run.c.id)).scalar_one()


def finish_run(conn: Connection, run_id: int, *, finished_at: datetime) -> None:
    conn.execute(update(sync_run).where(sync_run.c.id == run_id).values(finished_at=finished_at))


def apply_plan(conn: Connection, plan: Plan, *, run_id: int, now: datetime) -> None:
    """Write the plan; every row written carries ``now``, the run's timestamp."""
    codec = Codec(conn.dialect.name)
    ts = codec.timestamp(now)
    m = codec.mark
    run = conn.exec_driver_sql

    # Each written version's fields in the driver's form, converted once.
    inserted = [(v, codec.fields(v.fields)) for v in plan.inserted]
    changes = [(c, codec.fields(c.version.fields)) for c in plan.updated + plan.restored]

    if inserted:
        run(_insert_sql(lean_version, VERSION_COLUMNS, codec),
            [(v.id, *fields, ts, ts, None, raw_text(v)) for v, fields in inserted])

    if changes:
        # Updates and restores: new fields, back on the list; each opens a new state.
        assignments = ", ".join(f"{name} = {m}" for name in API_FIELDS)
        run(
            f"UPDATE {lean_version.name} SET {assignments}, raw = {codec.placeholder('raw')}, "
            f"removed_at = NULL, updated_at = {m} WHERE id = {m}",
            [(*fields, raw_text(c.version), ts, c.version.id) for c, fields in changes],
        )

    # Close the open history row of every changed or removed version.
    closing = [c.version.id for c in plan.updated] + plan.removed
    if closing:
        run(f"UPDATE {lean_version_history.name} SET valid_to = {m} WHERE version_id = {m} AND valid_to IS NULL",
            [(ts, vid) for vid in closing])

    if plan.removed:
        run(f"UPDATE {lean_version.name} SET removed_at = {m} WHERE id = {m}", [(ts, vid) for vid in plan.removed])

    opening = [(v.id, fields, None) for v, fields in inserted] + [
        (c.version.id, fields, ",".join(c.changed_fields) or None) for c, fields in changes
    ]
    if opening:
        run(_insert_sql(lean_version_history, HISTORY_COLUMNS, codec),
            [(vid, *fields, ts, None, changed, run_id) for vid, fields, changed in opening])

    if plan.raw_refreshed:
        # Fields the schema does not model changed: keep the newest raw object.
        run(f"UPDATE {lean_version.name} SET raw = {codec.placeholder('raw')} WHERE id = {m}",
            [(raw_text(v), v.id) for v in plan.raw_refreshed])

    if plan.new_hashes:
        run(_insert_sql(lean_hash, HASH_COLUMNS, codec),
            [(h.kind, h.hash, ts, h.first_version_id, run_id) for h in plan.new_hashes])
