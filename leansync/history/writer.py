"""The database side of a run: read the stored state, apply a plan.

Every statement here runs once per run (an executemany or a COPY counts
once), however many versions there are: tests/test_statements.py counts
them. The caller owns the transaction, so a run lands whole or not at all.

Reads: ``read_index`` (id, raw_digest, removed of every version: all a run
whose response matches the stored state needs, read in slices into the
compact diff.StoredIndex), then, only for the ids of the items that had to
be decoded, ``read_stored`` (their state) and, for a dry run,
``read_known_hashes`` (which of their hashes are known).

Writes: the run's new lean_version rows from Python in one executemany
(SQLite) or COPY (PostgreSQL), fed while the items are decoded
(``write_versions``: no list of them), then (``apply_plan``) its changed
ones in one executemany UPDATE. Everything else is set-based SQL over the rows just
written, with the ids concerned as one array parameter: closing history
rows, marking removals, opening history rows (INSERT ... SELECT, extra taken
from the raw just written) and first-seen hashes (INSERT ... SELECT ... GROUP
BY, whose row count is the run's new_hashes). A run with nothing to write
writes nothing but its sync_run row.

The bulk statements go to the driver directly (``exec_driver_sql``) with
values already in the driver's form (see ``Codec``): SQLAlchemy's per-value
type processing would otherwise cost several times the database's own work
at 100,000 versions (benchmarks/README.md).
"""

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone

import msgspec
from sqlalchemy import Connection, insert, update

from leansync.history.diff import HASH_KINDS, Plan, StoredIndex, StoredVersion, candidate_hashes
from leansync.store.models import API_FIELDS, lean_hash, lean_version, lean_version_history, sync_run
from leansync.source.payload import MODELLED_KEYS, Version

CREATED = API_FIELDS.index("created")
FIELD_LIST = ", ".join(API_FIELDS)
FETCH_ROWS = 10_000  # rows per fetch, ids per slice of text
# A server-side cursor on PostgreSQL, fetched FETCH_ROWS at a time from the first fetch on
# (stream_results alone starts at 1 row and grows: two more round trips on every run).
STREAM = {"stream_results": True, "max_row_buffer": FETCH_ROWS, "yield_per": FETCH_ROWS}
VERSION_COLUMNS = ("id", *API_FIELDS, "first_seen_at", "updated_at", "removed_at", "raw", "raw_digest")


class Codec:
    """Python values <-> what the DBAPI driver of one backend takes and returns.

    Mirrors leansync.store.models.UTCDateTime, RawJSON and ExtraJSON: SQLite keeps
    UTC timestamps as text ``YYYY-MM-DD HH:MM:SS.ffffff`` and JSON as text;
    PostgreSQL (psycopg) takes and returns aware datetimes, and jsonb.
    """

    def __init__(self, dialect_name: str):
        self.sqlite = dialect_name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"

    def timestamp(self, value: datetime | None):
        if value is None or not self.sqlite:
            return value
        if value.tzinfo is not timezone.utc:
            value = value.astimezone(timezone.utc)
        # The text SQLAlchemy's SQLite DateTime writes (always with microseconds),
        # without the "+00:00" that isoformat adds.
        return value.isoformat(" ", "microseconds")[:26]

    def read_timestamp(self, value) -> datetime | None:
        if value is None or not self.sqlite:
            return value
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)

    def fields(self, fields: tuple) -> tuple:
        """The seven API fields, ``created`` converted (once per version written: kept lean)."""
        created = fields[CREATED]
        if created is None or not self.sqlite:
            return fields
        if created.tzinfo is not timezone.utc:
            created = created.astimezone(timezone.utc)
        return (*fields[:CREATED], created.isoformat(" ", "microseconds")[:26], *fields[CREATED + 1:])

    def read_fields(self, row: tuple) -> tuple:
        """The seven API fields as read (SQLite: created is text, public 0/1)."""
        if not self.sqlite:
            return tuple(row)
        public, created = row[CREATED - 1], row[CREATED]
        return (*row[:CREATED - 1], None if public is None else bool(public), self.read_timestamp(created))

    def read_json(self, value) -> object:
        return msgspec.json.decode(value) if self.sqlite and value is not None else value

    def value_list(self, values: Iterable):
        """Values as one parameter: a JSON array for SQLite's json_each, an array for PostgreSQL."""
        return json.dumps(list(values)) if self.sqlite else list(values)

    def in_list(self) -> str:
        """SQL for "in the list given as one parameter" (see id_list)."""
        return f"IN (SELECT value FROM json_each({self.mark}))" if self.sqlite else f"= ANY({self.mark})"


def read_index(conn: Connection) -> StoredIndex:
    """(id, raw_digest, removed) of every stored version, in id order: one query, no JSON,
    read in slices (a server-side cursor on PostgreSQL) into the compact index."""
    result = conn.exec_driver_sql(f"SELECT id, raw_digest, removed_at IS NOT NULL FROM {lean_version.name} ORDER BY id",
                                  execution_options=STREAM)
    index = StoredIndex()
    try:  # through the result, not its cursor: a streamed result has read a row ahead
        while rows := result.fetchmany(FETCH_ROWS):
            index.extend(rows)
    finally:
        result.close()
    return index


def read_stored(conn: Connection, ids: Iterable[int]) -> dict[int, StoredVersion]:
    """The stored state of the given ids (those that are stored): the seven fields,
    the removed flag and the state's extra. One query.

    extra comes from lean_version.raw, the last object sent, as the history's
    does when a state opens: a refresh of raw never changes it (it happens only
    when the object is JSON-equal), and raw also holds it for a version removed
    before migration 0003, whose closed history rows have none.
    """
    ids = list(ids)
    if not ids:
        return {}
    codec = Codec(conn.dialect.name)
    fields = ", ".join(f"v.{name}" for name in API_FIELDS)
    rows = conn.exec_driver_sql(
        f"SELECT v.id, {fields}, v.removed_at IS NOT NULL, {_extra_of_raw(codec)} FROM {lean_version.name} v "
        f"WHERE v.id {codec.in_list()}",
        (codec.value_list(ids),),
    ).all()
    return {row[0]: StoredVersion(row[0], codec.read_fields(row[1:8]), codec.read_json(row[9]), bool(row[8]))
            for row in rows}


def read_known_hashes(conn: Connection, plan: Plan) -> set[tuple[str, str]]:
    """Which of the hashes the plan's new states carry are already in lean_hash."""
    codec = Codec(conn.dialect.name)
    candidates = candidate_hashes(plan)
    if not any(candidates.values()):
        return set()
    parts, params = [], []
    for kind, values in candidates.items():
        parts.append(f"SELECT kind, hash FROM {lean_hash.name} WHERE kind = {codec.mark} AND hash {codec.in_list()}")
        params += [kind, codec.value_list(values)]
    return {(kind, value) for kind, value in conn.exec_driver_sql(" UNION ALL ".join(parts), tuple(params)).all()}


def insert_run(conn: Connection, *, started_at: datetime, source: str, status: str,
               counts: dict[str, int] | None = None, error: str | None = None,
               finished_at: datetime | None = None) -> int:
    values = dict(started_at=started_at, source=source, status=status, error=error,
                  finished_at=finished_at, **(counts or {}))
    return conn.execute(insert(sync_run).values(**values).returning(sync_run.c.id)).scalar_one()


def finish_run(conn: Connection, run_id: int, *, finished_at: datetime, counts: dict[str, int] | None = None) -> None:
    """The run's end; ``counts`` as they stand once written (a real run counts its new hashes then)."""
    conn.execute(update(sync_run).where(sync_run.c.id == run_id).values(finished_at=finished_at, **(counts or {})))


def read_run_hashes(conn: Connection, run_id: int) -> Iterator[tuple[str, str, int]]:
    """(kind, hash, first_version_id) of the hashes a run added, in Plan.changes' order:
    "lean" before "lean_cloud", then by hash in code point order. Read in slices."""
    collate = "" if conn.dialect.name == "sqlite" else ' COLLATE "C"'  # SQLite's default compares code points
    result = conn.exec_driver_sql(
        f"SELECT kind, hash, first_version_id FROM {lean_hash.name} WHERE sync_run_id = {Codec(conn.dialect.name).mark} "
        f"ORDER BY kind = 'lean_cloud', hash{collate}", (run_id,), execution_options=STREAM)
    try:
        while rows := result.fetchmany(FETCH_ROWS):
            yield from map(tuple, rows)
    finally:
        result.close()


def bulk_insert(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Many rows, in the driver's form, into a table: executemany on SQLite, COPY on PostgreSQL."""
    if conn.dialect.name == "sqlite":
        rows = iter(rows)
        first = next(rows, None)
        if first is not None:
            marks = ", ".join("?" for _ in columns)
            conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                 _StreamedRows(first, rows))
        return
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()


class _StreamedRows(list):
    """Rows for one executemany, produced while sqlite3 inserts them (it iterates its parameters).

    SQLAlchemy takes only a list (it looks at the first row and the length,
    and hands the list on to the driver as is), so this is one that holds its
    first row and iterates the rest from a generator: the statement is still
    one executemany, seen by SQLAlchemy's events, with no list of every row.
    """

    def __init__(self, first: Sequence, rest: Iterator[Sequence]):
        super().__init__([first])
        self._rest = rest

    def __len__(self) -> int:
        return 2  # "more than one": SQLAlchemy then calls executemany; the driver never asks

    def __iter__(self):
        yield self[0]
        yield from self._rest


def write_versions(conn: Connection, versions: Iterable[Version], *, now: datetime) -> None:
    """New versions into lean_version as they come: one executemany or COPY, fed one row at a time."""
    codec = Codec(conn.dialect.name)
    ts = codec.timestamp(now)
    bulk_insert(conn, lean_version.name, VERSION_COLUMNS,
                ((v.id, *codec.fields(v.fields), ts, ts, None, v.raw, v.digest) for v in versions))


def apply_plan(conn: Connection, plan: Plan, *, run_id: int, now: datetime) -> None:
    """Write the plan; every row written carries ``now``, the run's timestamp.

    A plan whose ``inserted`` is None had its new versions written already
    (write_versions, while they were decoded); the rest takes their ids.
    A plan with no ``new_hashes`` list gets new_hash_count from the rows written.
    """
    codec = Codec(conn.dialect.name)
    ts = codec.timestamp(now)
    m = codec.mark
    run = conn.exec_driver_sql

    if plan.inserted:
        write_versions(conn, plan.inserted, now=now)

    changes = [(c.version, ts) for c in plan.updated + plan.restored] + [(v, None) for v in plan.raw_refreshed]
    if changes:
        # New states move updated_at and bring a version back; a refresh keeps the newest bytes only.
        assignments = ", ".join(f"{name} = {m}" for name in API_FIELDS)
        raw = "?" if codec.sqlite else "%s::jsonb"
        run(f"UPDATE {lean_version.name} SET {assignments}, raw = {raw}, raw_digest = {m}, removed_at = NULL, "
            f"updated_at = COALESCE({m}, updated_at) WHERE id = {m}",
            [(*codec.fields(v.fields), v.raw, v.digest, moment, v.id) for v, moment in changes])

    # Everything else is set-based SQL over the lean_version rows just written.
    closing = [c.version.id for c in plan.updated] + plan.removed
    if closing:
        run(f"UPDATE {lean_version_history.name} SET valid_to = {m} WHERE valid_to IS NULL "
            f"AND version_id {codec.in_list()}", (ts, codec.value_list(closing)))
    if plan.removed:
        run(f"UPDATE {lean_version.name} SET removed_at = {m} WHERE id {codec.in_list()}",
            (ts, codec.value_list(plan.removed)))

    inserted = plan.inserted_ids
    changed = [(c.version.id, ",".join(c.changed_fields) or None) for c in plan.updated + plan.restored]
    if not inserted and not changed:
        return
    fields = ", ".join(f"v.{name}" for name in API_FIELDS)
    opening = (f"INSERT INTO {lean_version_history.name} (version_id, {FIELD_LIST}, valid_from, valid_to, "
               f"changed_fields, sync_run_id, extra) SELECT v.id, {fields}, {m}, NULL, CHANGED_FIELDS, {m}, "
               f"{_extra_of_raw(codec)} ")
    if inserted:  # a version's first state has no changed_fields
        rows, params = _rows_of(codec, inserted)
        run(opening.replace("CHANGED_FIELDS", "NULL") + rows, (ts, run_id, *params))
    if changed:
        rows, changed_fields, params = _changed_states(codec, changed)
        run(opening.replace("CHANGED_FIELDS", changed_fields) + rows, (ts, run_id, *params))

    if plan.new_hashes is not None and not plan.new_hashes:
        return
    # The lowest id carrying each hash not seen before: what diff.new_hashes plans.
    states = array("q", inserted)
    states.extend(vid for vid, _ in changed)
    rows, params = _rows_of(codec, states)
    parts = [f"SELECT '{kind}', v.{column}, {m}, MIN(v.id), {m} {rows} AND v.{column} <> '' "
             f"AND NOT EXISTS (SELECT 1 FROM {lean_hash.name} x WHERE x.kind = '{kind}' "
             f"AND x.hash = v.{column}) GROUP BY v.{column}"
             for kind, column in ((kind, API_FIELDS[position]) for kind, position in HASH_KINDS)]
    result = run(f"INSERT INTO {lean_hash.name} (kind, hash, first_seen_at, first_version_id, sync_run_id) "
                 + " UNION ALL ".join(parts), (ts, run_id, *params) * len(parts))
    if plan.new_hashes is None:
        plan.new_hash_count = result.rowcount
    elif result.rowcount != len(plan.new_hashes):  # the plan was shown and counted: it must be what lands
        raise RuntimeError(f"planned {len(plan.new_hashes)} new hashes, wrote {result.rowcount}")


def _rows_of(codec: Codec, ids: Sequence[int]) -> tuple[str, tuple]:
    """SQL selecting the lean_version rows of the given ids (FROM ... WHERE ...) and its parameter.

    The ids are one parameter, a JSON array for SQLite's json_each (CROSS
    JOIN: SQLite then loops over the ids, not over every version) or an
    integer[] literal for PostgreSQL's unnest, spelled a slice at a time
    rather than from one Python object per id.
    """
    text = ",".join(",".join(map(str, ids[i:i + FETCH_ROWS])) for i in range(0, len(ids), FETCH_ROWS))
    if codec.sqlite:
        return f"FROM json_each(?) s CROSS JOIN {lean_version.name} v WHERE v.id = s.value", (f"[{text}]",)
    return f"FROM unnest(%s::integer[]) AS s(id), {lean_version.name} v WHERE v.id = s.id", (f"{{{text}}}",)


def _changed_states(codec: Codec, states: list[tuple[int, str | None]]) -> tuple[str, str, tuple]:
    """Like _rows_of, for (id, changed_fields) pairs: (FROM ... WHERE ..., the changed_fields
    expression, parameters). A JSON array of pairs for SQLite, two arrays for PostgreSQL."""
    if codec.sqlite:
        return (f"FROM json_each(?) s CROSS JOIN {lean_version.name} v WHERE v.id = json_extract(s.value, '$[0]')",
                "json_extract(s.value, '$[1]')", (json.dumps(states),))
    ids, changed = zip(*states)
    return (f"FROM unnest(%s::integer[], %s::text[]) AS s(id, changed_fields), {lean_version.name} v "
            "WHERE v.id = s.id", "s.changed_fields", (list(ids), list(changed)))


def _extra_of_raw(codec: Codec) -> str:
    """SQL for a state's extra: the just-written raw without id and the seven keys; NULL when that leaves {}."""
    keys = sorted(MODELLED_KEYS)
    if codec.sqlite:
        paths = ", ".join(f"'$.{key}'" for key in keys)
        return f"NULLIF(json_remove(v.raw, {paths}), '{{}}')"
    names = ", ".join(f"'{key}'" for key in keys)
    return f"NULLIF(v.raw - ARRAY[{names}]::text[], '{{}}'::jsonb)"
