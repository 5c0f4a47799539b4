"""The Datasette metadata document: descriptions and canned queries.

Table, view and column descriptions are the schema's own comments (the
models' and the views' ``comment=``, which migration 0004 also puts on
PostgreSQL). The canned queries' SQL is the SQL cookbook's (docs/sql.md):
tests/test_datasette.py checks that each appears there verbatim, with its
example moments in place of the parameters, and tests/test_readme_sql.py
runs it there.
"""

import re
from dataclasses import dataclass, field

from leansync.config import DEFAULT_API_URL
from leansync.store.database import safe_url, sqlite_path
from leansync.errors import ConfigError
from leansync.store.models import metadata as tables
from leansync.read import views

MOMENT = "YYYY-MM-DD HH:MM:SS.ffffff+00"
MOMENTS = f"Moments are UTC, written {MOMENT} (e.g. 2026-03-01 00:00:00.000000+00)."
PARAMETER = re.compile(r":(\w+)")


@dataclass(frozen=True)
class CannedQuery:
    name: str
    title: str
    description: str
    sql: str  # with :named parameters
    example: dict[str, str] = field(default_factory=dict)  # each parameter's SQL literal in docs/sql.md
    # "sqlite": docs/sql.md has it as a `-- SQLite` block with a PostgreSQL twin
    # (an inclusive bound on stored text needs the moment without its +00 suffix).
    dialect: str | None = None

    def with_literals(self) -> str:
        """The SQL as docs/sql.md shows it: the example literals in place of the parameters."""
        return PARAMETER.sub(lambda m: self.example[m.group(1)], self.sql)


CANNED_QUERIES = (
    CannedQuery(
        name="versions_as_of",
        title="The list as of a moment",
        description=f"The versions listed at the moment 'when', newest id first, as leansync versions --as-of "
                    f"lists them. {MOMENTS}",
        sql="""\
SELECT version_id AS id, name, description, ref, lean_hash, lean_cloud_hash, public, created, valid_from, valid_to
FROM lean_version_history
WHERE valid_from <= :when
  AND (valid_to IS NULL OR valid_to > :when)
ORDER BY version_id DESC""",
        example={'when': "'2026-02-01 00:00:00.000000+00'"},
    ),
    CannedQuery(
        name="changes_between",
        title="The changes between two moments",
        description=f"The events from 'since' (inclusive) to 'until' (exclusive), oldest first, as "
                    f"leansync changes --since --until prints them. {MOMENTS}",
        sql="""\
SELECT event_time, event, version_id, changed_fields, hash_kind, hash, sync_run_id
FROM lean_version_event
WHERE event_time >= substr(:since, 1, 26)
  AND event_time < substr(:until, 1, 26)
ORDER BY event_time, version_id,
  CASE event WHEN 'new_version' THEN 1 WHEN 'changed' THEN 2 WHEN 'removed' THEN 3 WHEN 'restored' THEN 4 ELSE 5 END,
  hash_kind, hash""",
        example={'since': "'2026-03-02 09:00:00.000000+00'", 'until': "'2026-03-03 00:00:00.000000+00'"},
        dialect="sqlite",
    ),
    CannedQuery(
        name="version_story",
        title="The whole story of one version",
        description="Every state of the version 'version_id', oldest first: when it held, the event that opened "
                    "it and what ended it, as leansync show lists them.",
        sql="""\
SELECT h.version_id, h.valid_from, h.valid_to, opened.event,
  CASE WHEN h.valid_to IS NULL THEN NULL WHEN closed.event IS NULL THEN 'changed' ELSE 'removed' END AS ended_by,
  h.changed_fields, h.name, h.description, h.ref, h.lean_hash, h.lean_cloud_hash, h.public, h.created,
  h.sync_run_id
FROM lean_version_history h
LEFT JOIN lean_version_event opened ON opened.history_id = h.id AND opened.event <> 'removed'
LEFT JOIN lean_version_event closed ON closed.history_id = h.id AND closed.event = 'removed'
WHERE h.version_id = :version_id
ORDER BY h.valid_from, h.id""",
        example={'version_id': "17449"},
    ),
    CannedQuery(
        name="hashes_since",
        title="The hashes first seen since a moment",
        description=f"The commit hashes first seen at or after 'since', newest first, with the version that "
                    f"first carried them, as leansync hashes --since lists them. {MOMENTS}",
        sql="""\
SELECT kind, hash, first_seen_at, first_version_id, sync_run_id
FROM lean_hash
WHERE first_seen_at >= substr(:since, 1, 26)
ORDER BY first_seen_at DESC, first_version_id DESC, kind, hash""",
        example={"since": "'2026-03-02 09:00:00.000000+00'"},
        dialect="sqlite",
    ),
    CannedQuery(
        name="recent_runs",
        title="The recent runs with their errors",
        description="The newest 20 sync runs, newest first: status, counts and, for a failed run, its error, "
                    "as leansync runs prints them.",
        sql="""\
SELECT id, started_at, status, versions_seen, inserted, updated, unchanged, removed, restored, new_hashes, error
FROM sync_run
ORDER BY id DESC
LIMIT 20""",
    ),
)


def database_key(url: str) -> str:
    """Datasette names a database after its file's stem: `leansync` for leansync.db."""
    path = sqlite_path(url)
    if path is None:
        raise ConfigError(f"Datasette reads SQLite files, and {safe_url(url)} is not one; "
                          "give --database-url sqlite:///PATH")
    return path.stem


def _described(table) -> dict:
    entry = {"description": table.comment} if table.comment else {}
    columns = {column.name: column.comment for column in table.columns if column.comment}
    return {**entry, "columns": columns} if columns else entry


def metadata_document(*, url: str) -> dict:
    """The metadata for `datasette FILE --metadata`, keyed by the file's stem."""
    return {
        "title": "LEAN engine versions",
        "description": "The history of QuantConnect's LEAN engine versions as leansync records it: when each "
                       "version was listed, changed, removed and listed again, and when each commit hash was "
                       "first seen. All times are UTC.",
        "source": f"QuantConnect's API (lean/versions/read at {DEFAULT_API_URL})",
        "databases": {
            database_key(url): {
                "tables": {table.name: _described(table) for table in [*tables.sorted_tables,
                                                                       *views.sorted_tables]},
                "queries": {q.name: {"title": q.title, "description": q.description, "sql": q.sql}
                            for q in CANNED_QUERIES},
            }
        },
    }
