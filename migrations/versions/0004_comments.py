"""Descriptions on PostgreSQL: a comment on every table, column, view and view column.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The descriptions are docs/schema.md's, as leansync.store.models and leansync.read
carry them (``comment=``), so that `psql \\d+`, Metabase, Grafana, DBeaver and
Superset show them. SQLite has no comments: there this does nothing.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Spelled out, not imported from leansync: a migration keeps its meaning, and
# a later change of a description needs a migration of its own (autogenerate
# compares the tables' comments with the models'; tests/test_comments.py the views').
TABLES = {
    'lean_version': (
        'One row per version id ever listed.',
        {
            'id': "The API's version id (a LEAN release tag number), not generated here.",
            'name': 'API field name.',
            'description': 'API field description.',
            'ref': 'API field ref.',
            'lean_hash': 'API field leanHash: the LEAN commit. Several ids may share one hash.',
            'lean_cloud_hash': 'API field leanCloudHash.',
            'public': 'API field public (the API sends a boolean or 0/1).',
            'created': 'API field created, in UTC.',
            'first_seen_at': 'Start of the run that first listed the version.',
            'updated_at': (
                'Start of the run that last opened a new state of the version (a change of any kind, a return after '
                'removal included): the valid_from of its newest lean_version_history row. Equals first_seen_at until '
                'then.'
            ),
            'removed_at': 'Set by the run that found the version no longer listed; cleared when it returns.',
            'raw': (
                'The last JSON object the API sent for the version, unknown fields included (JSON-equal to what was '
                "sent: PostgreSQL's jsonb keeps neither key order nor whitespace)."
            ),
            'raw_digest': (
                "The hex BLAKE2b-128 digest of the object's bytes exactly as the API sent them (see Skipping what did "
                'not change). Null until a run has seen the version since migration 0003.'
            ),
        },
    ),
    'lean_hash': (
        'One row per distinct commit hash.',
        {
            'kind': 'lean (from leanHash) or lean_cloud (from leanCloudHash).',
            'hash': 'The hash.',
            'first_seen_at': 'Start of the run that first saw it.',
            'first_version_id': 'The lowest version id carrying it in that run.',
            'sync_run_id': 'The sync_run that first saw it.',
        },
    ),
    'lean_version_history': (
        'One row per state of a version.',
        {
            'id': 'Row id.',
            'version_id': 'The lean_version.id this state belongs to.',
            'name': 'The API field, in this state (see the same column of lean_version).',
            'description': 'The API field, in this state (see the same column of lean_version).',
            'ref': 'The API field, in this state (see the same column of lean_version).',
            'lean_hash': 'The API field, in this state (see the same column of lean_version).',
            'lean_cloud_hash': 'The API field, in this state (see the same column of lean_version).',
            'public': 'The API field, in this state (see the same column of lean_version).',
            'created': 'The API field, in this state (see the same column of lean_version).',
            'valid_from': 'Start of the run that observed this state first.',
            'valid_to': 'Start of the run that changed or removed it; null while current.',
            'changed_fields': (
                "What differs from the version's previous state (for a return after removal: the state before "
                'removal), comma-separated: the modelled lean_version column names in table order, then the other keys'
                ' added, removed or changed, by their JSON key in plain string order (code point order: Z before a). '
                "Example: public,deprecated. Null on a version's first row, and on a return with nothing changed."
            ),
            'sync_run_id': 'The sync_run that opened this row.',
            'extra': (
                "The state's keys other than id and the seven API fields, as the API sent them (JSON-equal); SQL NULL,"
                ' not the JSON null, when there are none. A key sent as null is present: {"k": null}. The seven '
                "columns plus extra are the state's whole object. Migration 0003 filled it for the rows open then, "
                'from lean_version.raw; rows closed before it have NULL, because those keys were never kept. A version'
                ' removed before 0003 that returns is still compared in full: the run compares with the other keys of '
                'lean_version.raw, which kept them.'
            ),
        },
    ),
    'sync_run': (
        'One row per run that got past the lock.',
        {
            'id': 'Run id, increasing in commit order.',
            'started_at': (
                'When the run started (after it took the lock); the timestamp of every row it wrote. Always later than'
                " every earlier run's: if the clock stepped back, it is the newest run's plus one microsecond."
            ),
            'finished_at': 'When it committed, or failed.',
            'status': 'success or failed. A run killed before it commits leaves no row.',
            'source': 'The API URL or the file path (stdin for -). Never a credential.',
            'versions_seen': 'Versions in the response.',
            'inserted': 'Versions listed for the first time.',
            'updated': 'Listed versions that opened a new state: a modelled field or another key changed.',
            'unchanged': (
                "Listed versions whose whole object is unchanged, up to spelling (key order, spacing, created's "
                'format, 1 for true): such a re-spelling refreshes raw and raw_digest and still counts here.'
            ),
            'removed': 'Versions no longer listed.',
            'restored': (
                'Versions listed again after a removal (not counted as inserted, even if their fields changed).'
            ),
            'new_hashes': 'Rows added to lean_hash.',
            'error': 'For a failed run, the error message.',
        },
    ),
}

VIEWS = {
    'lean_version_current': (
        'The versions listed now.',
        {
            # the columns it shows of lean_version's, described as there
            **{name: TABLES['lean_version'][1][name] for name in (
                'id', 'name', 'description', 'ref', 'lean_hash', 'lean_cloud_hash', 'public', 'created',
                'first_seen_at', 'updated_at', 'raw')},
            'last_seen_at': (
                'The started_at of the newest successful run (migration 0003; before, a stored column that every run '
                'rewrote).'
            ),
        },
    ),
    'lean_version_event': (
        'One row per event of the change feed.',
        {
            'event_time': (
                'When it happened: the started_at of the run that saw it (for removed, the valid_to of the closed '
                'row).'
            ),
            'event': 'new_version, changed, removed, restored or new_hash.',
            'version_id': (
                'The version. For new_hash: the lowest id that carried the hash in the run that first saw it '
                '(lean_hash.first_version_id).'
            ),
            'changed_fields': (
                'For changed and restored: the comma-separated fields and other keys that differ from the previous '
                'state (lean_version_history.changed_fields; null for a return with nothing changed). Null for the '
                'other events.'
            ),
            'hash_kind': 'For new_hash: lean or lean_cloud; else null.',
            'hash': 'For new_hash: the hash; else null.',
            'history_id': (
                'The lean_version_history row the event opened (new_version, changed, restored) or closed (removed): '
                'join it for the new values. Null for new_hash.'
            ),
            'previous_history_id': (
                "For changed and restored: the version's row before it: join it for the old values. Else null."
            ),
            'sync_run_id': (
                'The sync_run that made the change; for removed, the successful run that started at event_time.'
            ),
        },
    ),
}


def _literal(text: str | None) -> str:
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def _comment_all(*, remove: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for kind, described in (("TABLE", TABLES), ("VIEW", VIEWS)):
        for name, (comment, columns) in described.items():
            statements = [f"COMMENT ON {kind} {name} IS {_literal(None if remove else comment)}"]
            statements += [f"COMMENT ON COLUMN {name}.{column} IS {_literal(None if remove else text)}"
                           for column, text in columns.items()]
            for statement in statements:
                # The driver's own execute: SQLAlchemy's text() would read ":word" as a parameter.
                op.get_bind().exec_driver_sql(statement)


def upgrade() -> None:
    _comment_all(remove=False)


def downgrade() -> None:
    _comment_all(remove=True)
