"""Migrations: up from empty, the stairway, models == migrations, and the
schema checks that guard a database leansync does not understand.

Patterns after schireson/pytest-alembic (stairway, model match) and
pallets-eco/flask-alembic (compare_metadata on a live connection).
"""

import gc
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from freezegun import freeze_time
from sqlalchemy import Column, Integer, MetaData, Table, Text, inspect, text

from leansync.store import database
from leansync.store.models import UTCDateTime, metadata
from leansync.timespec import format_utc

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "lean-versions-read.json"
FUTURE_REVISION = "9f3c0ffee"  # a revision written by some newer leansync
LEANSYNC_TABLES = {"lean_version", "lean_hash", "lean_version_history", "sync_run", "notification"}


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(database.alembic_config())


def revisions_oldest_first():
    return list(reversed(list(script_directory().walk_revisions())))


def engine_for(url):
    return database.make_engine(url, create=True)


def revision_of(url) -> str | None:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return database.current_revision(conn)
    finally:
        engine.dispose()


def tables_of(url) -> set[str]:
    engine = engine_for(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def migrate(url, step, target):
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            step(conn, target)
    finally:
        engine.dispose()


def schema_diff(url, target_metadata=metadata) -> list:
    """What autogenerate would write to go from the database to ``target_metadata``."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, target_metadata)
    finally:
        engine.dispose()


def dump(url) -> dict[str, list]:
    """Every row of every table, sorted: a backend-neutral picture of the data."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {name: sorted((tuple(row) for row in conn.execute(text(f'SELECT * FROM "{name}"'))), key=repr)
                    for name in names}
    finally:
        engine.dispose()


def sqlite_bytes(url) -> bytes | None:
    """The SQLite file's bytes once every change has reached it, or None for other backends.

    Connections left open by earlier commands are collected first, and the
    WAL is checkpointed into the file, so that a checkpoint during the step
    under test cannot pass for a write.
    """
    path = database.sqlite_path(url)
    if path is None:
        return None
    gc.collect()
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()
    return path.read_bytes()


def assert_one_clean_line(result, *fragments):
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("leansync: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- upgrade, downgrade, stairway ---------------------------------------------

def test_upgrade_from_empty_to_head(database_url):
    assert tables_of(database_url) == set()
    migrate(database_url, database.upgrade, "head")
    assert revision_of(database_url) == script_directory().get_current_head()
    assert tables_of(database_url) == LEANSYNC_TABLES | {"alembic_version"}


def test_stairway_each_revision_up_down_up(database_url):
    revisions = revisions_oldest_first()
    assert revisions, "no migrations found"
    for revision in revisions:
        migrate(database_url, database.upgrade, revision.revision)
        assert revision_of(database_url) == revision.revision
        migrate(database_url, database.downgrade, revision.down_revision or "base")
        assert revision_of(database_url) == revision.down_revision
        migrate(database_url, database.upgrade, revision.revision)
        assert revision_of(database_url) == revision.revision
    assert revision_of(database_url) == database.SCHEMA_HEAD


def test_downgrade_to_base_and_up_again(database_url, run):
    assert run("sync", "--from-file", EXAMPLE).exit_code == 0
    migrate(database_url, database.downgrade, "base")
    assert revision_of(database_url) is None
    assert tables_of(database_url) - {"alembic_version"} == set()

    migrate(database_url, database.upgrade, "head")
    assert revision_of(database_url) == database.SCHEMA_HEAD
    assert schema_diff(database_url) == []
    # The rebuilt schema takes a full sync again.
    result = run("sync", "--from-file", EXAMPLE, "--json")
    assert result.exit_code == 0, result.output
    assert '"inserted": 4289' in result.stdout


def test_schema_head_constant_matches_the_scripts():
    script = script_directory()
    assert len(script.get_heads()) == 1, "migrations must form one line"
    assert database.SCHEMA_HEAD == script.get_current_head()
    assert database.known_revisions() == {r.revision for r in script.walk_revisions()}


def test_every_migration_file_is_a_revision():
    """A migration file that Alembic does not pick up would never run."""
    files = {p.stem for p in (REPO / "migrations" / "versions").glob("*.py") if p.stem != "__init__"}
    assert files, "no migration files"
    modules = {Path(r.path).stem for r in script_directory().walk_revisions()}
    assert modules == files


# -- models and migrations agree ------------------------------------------------

def test_autogenerate_finds_no_difference_between_models_and_migrations(database_url):
    migrate(database_url, database.upgrade, "head")
    assert schema_diff(database_url) == []


def test_model_check_sees_a_column_or_table_the_migrations_lack(database_url):
    """The check above can fail: a model ahead of the migrations is reported."""
    migrate(database_url, database.upgrade, "head")
    ahead = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(ahead)
    ahead.tables["lean_version"].append_column(Column("maintainer", Text))
    Table("lean_release_note", ahead, Column("id", Integer, primary_key=True))

    diff = schema_diff(database_url, ahead)
    ops = {(entry[0], getattr(entry[-1], "name", None)) for entry in diff if isinstance(entry, tuple)}
    assert ("add_column", "maintainer") in ops
    assert ("add_table", "lean_release_note") in ops


def test_model_check_sees_a_database_that_drifted(database_url):
    """... and so is a database changed behind the migrations' back."""
    migrate(database_url, database.upgrade, "head")
    engine = engine_for(database_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE lean_version ADD COLUMN note TEXT"))
        conn.execute(text("DROP INDEX ix_sync_run_started_at"))
    engine.dispose()

    diff = schema_diff(database_url)
    kinds = {entry[0] for entry in diff if isinstance(entry, tuple)}
    assert "remove_column" in kinds
    assert "add_index" in kinds


# -- the `alembic` command from a checkout ----------------------------------------

def test_alembic_upgrade_head_from_the_checkout_honours_the_env_url(database_url, tmp_path, isolated_env):
    env = {**os.environ, "LEANSYNC_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert revision_of(database_url) == database.SCHEMA_HEAD
    assert schema_diff(database_url) == []
    # It used the URL from the environment, not leansync's default file.
    assert not list(isolated_env.rglob("leansync.db"))


# -- databases leansync must not touch ------------------------------------------------

def _stamp_future(url):
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE_REVISION})
    engine.dispose()


@pytest.mark.parametrize("command", [["sync", "--from-file", str(EXAMPLE)], ["sync", "--dry-run", "--from-file",
                                     str(EXAMPLE)], ["db", "upgrade"]], ids=["sync", "dry-run", "db-upgrade"])
def test_a_schema_from_the_future_is_refused_and_left_untouched(database_url, run, write_response,
                                                                tag_versions, command):
    assert run("sync", "--from-file", write_response(tag_versions[:50])).exit_code == 0
    _stamp_future(database_url)
    before, before_bytes = dump(database_url), sqlite_bytes(database_url)

    result = run(*command)

    assert result.exit_code == 2
    assert_one_clean_line(result, FUTURE_REVISION, "upgrade leansync")
    assert sqlite_bytes(database_url) == before_bytes
    assert dump(database_url) == before


def test_db_current_names_a_revision_from_the_future(database_url, run):
    migrate(database_url, database.upgrade, "head")
    _stamp_future(database_url)
    result = run("db", "current")
    assert FUTURE_REVISION in result.stdout
    assert "upgrade leansync" in result.stdout
    assert "db upgrade" not in result.stdout  # that would be refused


def test_sync_brings_an_emptied_database_to_head(database_url, run):
    migrate(database_url, database.upgrade, "head")
    migrate(database_url, database.downgrade, "base")
    result = run("sync", "--from-file", EXAMPLE)
    assert result.exit_code == 0, result.output
    assert revision_of(database_url) == database.SCHEMA_HEAD


# -- bad URLs and unreachable databases ---------------------------------------------

@pytest.mark.parametrize("command", [["sync", "--from-file", str(EXAMPLE)], ["db", "upgrade"], ["db", "current"]])
@pytest.mark.parametrize("url, expected", [
    ("not a database url", "malformed"),
    ("nosuchdb://host/name", "unsupported"),
])
def test_a_malformed_database_url_is_a_clear_error(tmp_path, monkeypatch, url, expected, command):
    from click.testing import CliRunner

    from leansync.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--database-url", url, *command])
    assert result.exit_code == 2, result.output
    assert_one_clean_line(result, expected)
    assert list(tmp_path.iterdir()) == []


def _invoke(url, *args):
    from click.testing import CliRunner

    from leansync.cli import cli

    return CliRunner().invoke(cli, ["--database-url", url, *args])


@pytest.mark.parametrize("command", [["sync", "--from-file", str(EXAMPLE)], ["db", "upgrade"], ["db", "current"]])
def test_an_unreachable_postgresql_is_a_clear_error_with_the_password_masked(command):
    url = "postgresql://leansync:s3cr3t-pw@127.0.0.1:1/leansync"  # nothing listens on port 1
    result = _invoke(url, *command)
    assert result.exit_code in (1, 2), result.output
    assert_one_clean_line(result, "127.0.0.1:1")
    assert "s3cr3t-pw" not in result.output


@pytest.mark.parametrize("command", [["sync", "--from-file", str(EXAMPLE)], ["db", "upgrade"]])
def test_a_sqlite_file_that_cannot_be_created_is_a_clear_error(tmp_path, command):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    result = _invoke(f"sqlite:///{blocker / 'history.db'}", *command)
    assert result.exit_code in (1, 2), result.output
    assert_one_clean_line(result, str(blocker))


def test_a_folder_given_as_the_sqlite_file_is_a_clear_error(tmp_path):
    result = _invoke(f"sqlite:///{tmp_path}", "sync", "--from-file", str(EXAMPLE))
    assert result.exit_code in (1, 2), result.output
    assert_one_clean_line(result, str(tmp_path))


# -- db current ---------------------------------------------------------------------

def test_db_current_prints_the_url_and_the_revision(database_url, run):
    assert run("db", "upgrade").exit_code == 0
    result = run("db", "current")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == database.safe_url(database_url)
    assert lines[1] == f"revision: {database.SCHEMA_HEAD} (head)"


def test_db_current_masks_the_password():
    from sqlalchemy.engine import make_url

    url = "postgresql://leansync:s3cr3t-pw@127.0.0.1:1/leansync"
    result = _invoke(url, "db", "current")
    assert result.stdout.splitlines()[0] == "postgresql://leansync:***@127.0.0.1:1/leansync"
    assert make_url(result.stdout.splitlines()[0]).password == "***"
    assert "s3cr3t-pw" not in result.output


def test_db_current_does_not_create_a_missing_sqlite_database(tmp_path):
    missing = tmp_path / "sub" / "history.db"
    result = _invoke(f"sqlite:///{missing}", "db", "current")
    assert result.stdout.splitlines()[0] == f"sqlite:///{missing}"
    assert result.exit_code == 2
    assert_one_clean_line(result, str(missing))
    assert not missing.parent.exists()


def test_db_upgrade_creates_the_database_and_is_idempotent(database_url, run):
    first = run("db", "upgrade")
    assert first.exit_code == 0, first.output
    assert f"schema revision {database.SCHEMA_HEAD}" in first.stdout
    second = run("db", "upgrade")
    assert second.exit_code == 0
    assert revision_of(database_url) == database.SCHEMA_HEAD
    assert schema_diff(database_url) == []


# -- 0002 -> 0003 on a database with history ----------------------------------------

T = [datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc) + timedelta(days=7 * n) for n in range(5)]
BASE = {"name": "v2.5.{}", "description": "Release {}", "ref": "master", "leanHash": "{}a", "leanCloudHash": "{}b",
        "public": True, "created": "2025-12-0{} 10:00:00"}


def api_object(vid: int, **changes) -> dict:
    return {"id": vid, **{key: value.format(vid) if isinstance(value, str) else value
                          for key, value in BASE.items()}, **changes}


def history_at_0002(url) -> dict[int, dict]:
    """The rows a 0002-era leansync wrote for this history, written through SQL.

    run 1 (T0): 1, 2, 3, 4 new; 1 carries "deprecated": false, 3 a nested "notes", 4 "channel": "beta"
    run 2 (T1): 2's leanHash changes; 3 is no longer listed
    run 3 (T2): fails
    run 4 (T3): 3 is back unchanged; 4 is no longer listed; 1 sends "deprecated": true
                (0002 only refreshed raw: no new state)
    Returns the last objects sent, by id.
    """
    migrate(url, database.upgrade, "0002")
    notes = {"notes": {"tags": ["b", "a"], "weight": 1.5, "reviewer": None}}
    first = {1: api_object(1, deprecated=False), 2: api_object(2), 3: api_object(3, **notes), 4: api_object(4, channel="beta")}
    last = {**first, 1: api_object(1, deprecated=True), 2: api_object(2, leanHash="retagged")}
    engine = engine_for(url)
    sqlite = engine.dialect.name == "sqlite"
    at = [t.replace(tzinfo=None) if sqlite else t for t in T]  # SQLite's DATETIME takes UTC wall times

    def fields(obj: dict) -> dict:
        created = datetime.fromisoformat(obj["created"])
        return {"name": obj["name"], "description": obj["description"], "ref": obj["ref"],
                "lean_hash": obj["leanHash"], "lean_cloud_hash": obj["leanCloudHash"], "public": obj["public"],
                "created": created if sqlite else created.replace(tzinfo=timezone.utc)}

    tables = MetaData()
    tables.reflect(engine)
    run_, version, history = (tables.tables[n] for n in ("sync_run", "lean_version", "lean_version_history"))
    with engine.begin() as conn:
        for n, (status, counts) in enumerate([
            ("success", dict(versions_seen=4, inserted=4)),
            ("success", dict(versions_seen=3, updated=1, unchanged=2, removed=1)),
            ("failed", {}),
            ("success", dict(versions_seen=3, unchanged=2, removed=1, restored=1)),
        ], 1):
            conn.execute(run_.insert().values(started_at=at[n - 1], finished_at=at[n - 1], status=status,
                                              source="file", **counts))
        timing = {1: (at[0], at[3], at[0], None), 2: (at[0], at[3], at[1], None),
                  3: (at[0], at[3], at[0], None), 4: (at[0], at[1], at[0], at[3])}
        for vid, (first_seen, last_seen, updated, removed) in timing.items():
            conn.execute(version.insert().values(id=vid, **fields(last[vid]), first_seen_at=first_seen,
                                                 last_seen_at=last_seen, updated_at=updated, removed_at=removed,
                                                 raw=last[vid]))
        for vid, obj, valid_from, valid_to, changed, run_id in [
            (1, first[1], at[0], None, None, 1),
            (2, first[2], at[0], at[1], None, 1),
            (2, last[2], at[1], None, "lean_hash", 2),
            (3, first[3], at[0], at[1], None, 1),
            (3, first[3], at[3], None, None, 4),
            (4, first[4], at[0], at[3], None, 1),
        ]:
            conn.execute(history.insert().values(version_id=vid, **fields(obj), valid_from=valid_from,
                                                 valid_to=valid_to, changed_fields=changed, sync_run_id=run_id))
    engine.dispose()
    return last


def query(url, sql) -> list[tuple]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


AS_OF_SQL = ("SELECT version_id, name, lean_hash, public FROM lean_version_history "
             "WHERE valid_from <= '{0}' AND (valid_to IS NULL OR valid_to > '{0}') ORDER BY version_id")


def as_of_answers(url) -> dict:
    moments = [t + delta for t in T[:4] for delta in (timedelta(0), timedelta(hours=1))]
    return {m: query(url, AS_OF_SQL.format(m.strftime("%Y-%m-%d %H:%M:%S.%f+00"))) for m in moments}


def test_0003_keeps_a_history_fills_extra_and_last_seen(database_url, run, write_response):
    last = history_at_0002(database_url)
    as_of_before = as_of_answers(database_url)
    last_seen_before = dict(query(database_url, "SELECT id, last_seen_at FROM lean_version"))
    history_before = query(database_url, "SELECT id, version_id, valid_from, valid_to, changed_fields, sync_run_id "
                                         "FROM lean_version_history ORDER BY id")

    migrate(database_url, database.upgrade, "head")

    assert schema_diff(database_url) == []
    assert as_of_answers(database_url) == as_of_before
    assert query(database_url, "SELECT id, version_id, valid_from, valid_to, changed_fields, sync_run_id "
                               "FROM lean_version_history ORDER BY id") == history_before
    # Open rows: the other keys of the stored object, SQL NULL when there are none; closed rows: NULL.
    extra = {(vid, closed): value for vid, closed, value in query(
        database_url, "SELECT version_id, valid_to IS NOT NULL, extra FROM lean_version_history")}
    decoded = {key: json.loads(value) if isinstance(value, str) else value for key, value in extra.items()}
    assert decoded == {(1, False): {"deprecated": True}, (2, True): None, (2, False): None, (3, True): None,
                       (3, False): {"notes": {"tags": ["b", "a"], "weight": 1.5, "reviewer": None}},
                       (4, True): None}
    assert query(database_url, "SELECT count(*) FROM lean_version_history WHERE extra IS NULL") == [(4,)]
    assert query(database_url, "SELECT count(*) FROM lean_version WHERE raw_digest IS NULL") == [(4,)]

    # Last seen as before, from the CLI and the view; updated_at: the newest state's start (3's return).
    listed = {r["id"]: r for r in json.loads(run("versions", "--all", "--format", "json").stdout)}
    assert {vid: r["last_seen_at"] for vid, r in listed.items()} == {
        vid: format_utc(_aware(seen)) for vid, seen in last_seen_before.items()}
    assert dict(query(database_url, "SELECT id, 1 FROM lean_version_current")) == {1: 1, 2: 1, 3: 1}
    assert {vid: _aware(seen) for vid, seen in query(
        database_url, "SELECT id, last_seen_at FROM lean_version_current")} == {1: T[3], 2: T[3], 3: T[3]}
    assert {vid: r["updated_at"] for vid, r in listed.items()} == {
        1: format_utc(T[0]), 2: format_utc(T[1]), 3: format_utc(T[3]), 4: format_utc(T[0])}
    shown = run("show", "4")
    assert f"last seen {format_utc(T[1])}" in shown.stdout

    # The next run decodes every item once (no digest yet), fills raw_digest and opens no state.
    with freeze_time(T[4]):
        result = run("sync", "--json", "--from-file", write_response(list(last.values())[:3]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"status": "success", "run_id": 5, "versions_seen": 3, "inserted": 0,
                                         "updated": 0, "unchanged": 3, "removed": 0, "restored": 0, "new_hashes": 0}
    assert query(database_url, "SELECT count(*) FROM lean_version_history") == [(6,)]
    assert query(database_url, "SELECT id FROM lean_version WHERE raw_digest IS NULL") == [(4,)]  # not listed

    # 4, removed before 0003 (its closed rows have no extra), comes back as it was: nothing changed,
    # its other keys included (they are compared with the stored raw, which kept them).
    with freeze_time(T[4] + timedelta(days=1)):
        result = run("sync", "--json", "--from-file", write_response(list(last.values())))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["restored"] == 1
    assert query(database_url, "SELECT changed_fields FROM lean_version_history WHERE version_id = 4 "
                               "AND valid_to IS NULL") == [(None,)]


def test_0003_downgrade_gives_last_seen_at_back(database_url):
    history_at_0002(database_url)
    before = query(database_url, "SELECT id, last_seen_at, removed_at, raw FROM lean_version ORDER BY id")
    migrate(database_url, database.upgrade, "head")
    migrate(database_url, database.downgrade, "0002")
    assert query(database_url, "SELECT id, last_seen_at, removed_at, raw FROM lean_version ORDER BY id") == before
    assert query(database_url, "SELECT id, last_seen_at FROM lean_version_current ORDER BY id") == [
        row[:2] for row in before if row[2] is None]
    assert schema_diff(database_url, at_0002()) == []


def at_0002() -> MetaData:
    """The models as they were at 0002: lean_version.last_seen_at, no raw_digest, no extra, no comments."""
    old = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        if table.name != "notification":  # came with 0005
            table.to_metadata(old)
    version, history = old.tables["lean_version"], old.tables["lean_version_history"]
    version._columns.remove(version.c.raw_digest)
    history._columns.remove(history.c.extra)
    version.append_column(Column("last_seen_at", UTCDateTime, nullable=False))
    for table in old.tables.values():  # the descriptions came with 0004
        table.comment = None
        for column in table.columns:
            column.comment = None
    return old


def _aware(value) -> datetime:
    """A timestamp as read through plain SQL: text on SQLite, aware on PostgreSQL."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

