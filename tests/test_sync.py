"""`leansync sync` through the CLI, over several runs with frozen clocks.

Runs on every backend of the ``database_url`` fixture: the database is
inspected with SQLAlchemy only. Tests of output formatting and input
handling, where the backend does not matter, are marked ``sqlite_only``.
"""

import copy
import gc
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import MetaData, create_engine, inspect, select

from clitext import error_line
from dbstate import check_invariants, runs
from leansync.cli import cli
from leansync.store import models
from leansync.store.database import make_engine, sqlite_path
from leansync.history.lock import lock_file_path, run_lock
from leansync.store.models import API_FIELDS, lean_hash, lean_version, lean_version_history, sync_run
from leansync.source.payload import parse_created

UTC = timezone.utc
T1 = datetime(2026, 3, 1, 6, 0, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 2, 6, 0, 0, tzinfo=UTC)
T3 = datetime(2026, 3, 3, 6, 0, 0, tzinfo=UTC)
T4 = datetime(2026, 3, 4, 6, 0, 0, tzinfo=UTC)
T5 = datetime(2026, 3, 5, 6, 0, 0, tzinfo=UTC)
COUNT_KEYS = ["versions_seen", "inserted", "updated", "unchanged", "removed", "restored", "new_hashes"]
JSON_KEYS = {"status", "run_id", *COUNT_KEYS}
H = lean_version_history.c


@pytest.fixture
def six(tag_versions):
    """Six real versions with six distinct commits, newest first (deep copies: tests change them)."""
    picked, hashes = [], set()
    for item in tag_versions:
        if item["leanHash"] not in hashes:
            hashes.add(item["leanHash"])
            picked.append(copy.deepcopy(item))
        if len(picked) == 6:
            return picked
    raise AssertionError("the tag list has fewer than six commits")


@pytest.fixture
def sync(run, write_response):
    """sync(versions, *options, at=T) -> the CliRunner result; asserts exit code 0."""

    def invoke(versions, *options, at: datetime):
        path = write_response(versions)
        with freeze_time(at):
            result = run("sync", "--from-file", path, *options)
        assert result.exit_code == 0, result.output + result.stderr
        return result

    return invoke


@pytest.fixture
def db(database_url):
    """Read the test's database with SQLAlchemy; every engine is disposed."""

    class Reader:
        def rows(self, table, *where) -> list[dict]:
            engine = make_engine(database_url)
            try:
                with engine.connect() as conn:
                    query = select(table).where(*where).order_by(*table.primary_key.columns)
                    return [dict(r._mapping) for r in conn.execute(query)]
            finally:
                engine.dispose()

        def versions(self) -> dict[int, dict]:
            return {r["id"]: r for r in self.rows(lean_version)}

        def history(self, version_id: int) -> list[dict]:
            return self.rows(lean_version_history, H.version_id == version_id)

        def as_of(self, t: datetime) -> dict[int, tuple]:
            """The documented query: valid_from <= T AND (valid_to IS NULL OR valid_to > T)."""
            found = self.rows(lean_version_history, H.valid_from <= t, H.valid_to.is_(None) | (H.valid_to > t))
            return {r["version_id"]: tuple(r[f] for f in API_FIELDS) for r in found}

        def dump(self) -> dict[str, dict]:
            """Every row of every table (reflected, so nothing is missed), keyed by primary key."""
            engine = make_engine(database_url)
            try:
                reflected = MetaData()
                reflected.reflect(engine)
                out = {}
                with engine.connect() as conn:
                    for table in reflected.sorted_tables:
                        # leansync's own tables typed as the models say (aware UTC timestamps, JSON).
                        table = models.metadata.tables.get(table.name, table)
                        key = [c.name for c in table.primary_key.columns] or [c.name for c in table.columns]
                        out[table.name] = {
                            tuple(r._mapping[k] for k in key): dict(r._mapping) for r in conn.execute(select(table))
                        }
                return out
            finally:
                engine.dispose()

        def table_names(self) -> list[str]:
            engine = make_engine(database_url)
            try:
                return inspect(engine).get_table_names()
            finally:
                engine.dispose()

    return Reader()


def api_fields(item: dict) -> tuple:
    """The seven columns as the database should hold them for an API object."""
    created = item.get("created")
    return (item.get("name"), item.get("description"), item.get("ref"), item.get("leanHash"),
            item.get("leanCloudHash"), item.get("public"), parse_created(created) if created else None)


def counts_of(result) -> dict:
    document = json.loads(result.stdout)
    return {k: document[k] for k in COUNT_KEYS}


def expect(**changed) -> dict:
    return {**dict.fromkeys(COUNT_KEYS, 0), **changed}


# --- inserts --------------------------------------------------------------------------------------


def test_first_sync_inserts_everything(sync, db, six, database_url):
    six[1]["leanHash"] = six[0]["leanHash"]  # two ids share one commit
    result = sync(six, "--json", at=T1)
    document = json.loads(result.stdout)
    assert set(document) == JSON_KEYS
    assert document["status"] == "success"
    assert counts_of(result) == expect(versions_seen=6, inserted=6, new_hashes=11)

    versions = db.versions()
    assert sorted(versions) == sorted(v["id"] for v in six)
    for item in six:
        row = versions[item["id"]]
        assert tuple(row[f] for f in API_FIELDS) == api_fields(item)
        assert row["raw"] == item
        assert row["first_seen_at"] == row["updated_at"] == T1
        assert row["removed_at"] is None
        [h] = db.history(item["id"])
        assert (h["valid_from"], h["valid_to"], h["changed_fields"], h["sync_run_id"]) == (T1, None, None, document["run_id"])
        assert tuple(h[f] for f in API_FIELDS) == api_fields(item)

    hashes = {(h["kind"], h["hash"]): h for h in db.rows(lean_hash)}
    assert len(hashes) == 11
    shared = hashes[("lean", six[0]["leanHash"])]
    assert shared["first_version_id"] == min(six[0]["id"], six[1]["id"])
    assert {(h["first_seen_at"], h["sync_run_id"]) for h in hashes.values()} == {(T1, document["run_id"])}

    [run_row] = db.rows(sync_run)
    assert run_row["id"] == document["run_id"]
    assert (run_row["status"], run_row["started_at"], run_row["finished_at"], run_row["error"]) == ("success", T1, T1, None)
    assert {k: run_row[k] for k in COUNT_KEYS} == counts_of(result)
    check_invariants(database_url)


@pytest.mark.sqlite_only
def test_source_is_the_resolved_file_path(run, db, six, tmp_path, monkeypatch):
    path = tmp_path / "saved.json"
    path.write_text(json.dumps({"versions": six, "success": True, "errors": []}))
    monkeypatch.chdir(tmp_path)
    with freeze_time(T1):
        result = run("sync", "--from-file", "saved.json")
    assert result.exit_code == 0, result.stderr
    [run_row] = db.rows(sync_run)
    assert run_row["source"] == str(path.resolve())


@pytest.mark.sqlite_only
def test_stdin(run, db, six):
    with freeze_time(T1):
        result = run("sync", "--json", "--from-file", "-", input=json.dumps({"versions": six, "success": True}))
    assert result.exit_code == 0, result.stderr
    assert counts_of(result)["inserted"] == 6
    [run_row] = db.rows(sync_run)
    assert run_row["source"] == "stdin"
    assert set(db.versions()) == {v["id"] for v in six}


# --- updates, removals, restores ------------------------------------------------------------------


def test_update_moves_updated_at_and_opens_history(sync, db, six, database_url):
    sync(six, at=T1)
    six[2]["description"] = "Reworded"
    six[2]["public"] = False
    result = sync(six, "--json", at=T2)
    assert counts_of(result) == expect(versions_seen=6, updated=1, unchanged=5)

    versions = db.versions()
    changed = versions[six[2]["id"]]
    assert (changed["description"], changed["public"]) == ("Reworded", False)
    assert (changed["first_seen_at"], changed["updated_at"]) == (T1, T2)
    assert changed["raw"] == six[2]
    for item in six[:2] + six[3:]:
        row = versions[item["id"]]
        assert (row["first_seen_at"], row["updated_at"]) == (T1, T1)
    old, new = db.history(six[2]["id"])
    assert (old["valid_from"], old["valid_to"], old["public"]) == (T1, T2, True)
    assert (new["valid_from"], new["valid_to"], new["changed_fields"], new["public"]) == (T2, None, "description,public", False)
    assert new["sync_run_id"] == json.loads(result.stdout)["run_id"]
    check_invariants(database_url)


def test_removal_absence_and_restore(sync, db, six, database_url):
    gone_same, gone_changed = six[1], six[4]
    sync(six, at=T1)

    # T2: two of six disappear.
    listed = [v for v in six if v not in (gone_same, gone_changed)]
    result = sync(listed, "--json", at=T2)
    assert counts_of(result) == expect(versions_seen=4, unchanged=4, removed=2)
    v = db.versions()
    for item in (gone_same, gone_changed):
        row = v[item["id"]]
        assert (row["removed_at"], row["updated_at"]) == (T2, T1)
        assert tuple(row[f] for f in API_FIELDS) == api_fields(item)  # the last known state is kept
        assert [h["valid_to"] for h in db.history(item["id"])] == [T2]
    check_invariants(database_url)

    # T3: still absent: nothing happens to them, nor to the listed ones.
    before = db.versions()
    result = sync(listed, "--json", at=T3)
    assert counts_of(result) == expect(versions_seen=4, unchanged=4)
    v = db.versions()
    assert v == before
    assert len(db.history(gone_same["id"])) == 1

    # T4: both return, one of them changed meanwhile: restored, not inserted or updated.
    back_changed = {**gone_changed, "ref": "hotfix", "leanHash": "f" * 40}
    result = sync(listed + [gone_same, back_changed], "--json", at=T4)
    assert counts_of(result) == expect(versions_seen=6, unchanged=4, restored=2, new_hashes=1)
    v = db.versions()
    same, changed = v[gone_same["id"]], v[gone_changed["id"]]
    assert (same["removed_at"], same["updated_at"], same["first_seen_at"]) == (None, T4, T1)
    assert (changed["removed_at"], changed["updated_at"]) == (None, T4)
    assert (changed["ref"], changed["lean_hash"]) == ("hotfix", "f" * 40)
    assert [(h["valid_from"], h["valid_to"], h["changed_fields"]) for h in db.history(gone_same["id"])] == [
        (T1, T2, None), (T4, None, None)]
    # changed_fields compare with the state before removal.
    assert [(h["valid_from"], h["valid_to"], h["changed_fields"]) for h in db.history(gone_changed["id"])] == [
        (T1, T2, None), (T4, None, "ref,lean_hash")]
    assert [r["restored"] for r in db.rows(sync_run)] == [0, 0, 0, 2]
    assert [r["inserted"] for r in db.rows(sync_run)] == [6, 0, 0, 0]
    check_invariants(database_url)


def test_the_same_object_in_other_bytes_refreshes_raw_and_counts_unchanged(sync, db, six, database_url):
    sync(six, at=T1)
    before = db.dump()
    # The API switching to its documented created format: the same instant.
    six[4]["created"] = six[4]["created"].replace(" ", "T") + ".000Z"
    six[3]["public"] = 1  # 0/1 for a boolean: the same field value
    six[2] = dict(reversed(list(six[2].items())))  # other key order
    result = sync(six, "--json", at=T2)
    assert counts_of(result) == expect(versions_seen=6, unchanged=6)
    after = db.dump()

    for item in (six[2], six[3], six[4]):
        row = after["lean_version"][(item["id"],)]
        assert row["raw"] == item
        assert {k: v for k, v in row.items() if k not in ("raw", "raw_digest")} == {
            k: v for k, v in before["lean_version"][(item["id"],)].items() if k not in ("raw", "raw_digest")}
        assert row["raw_digest"] != before["lean_version"][(item["id"],)]["raw_digest"]
    assert after["lean_version"][(six[4]["id"],)]["raw"]["created"].endswith(".000Z")
    assert after["lean_version_history"] == before["lean_version_history"]
    assert after["lean_hash"] == before["lean_hash"]
    check_invariants(database_url)


def test_a_key_the_schema_does_not_model_opens_a_state(sync, db, six, database_url):
    sync(six, at=T1)
    six[3]["leanVersionTag"] = "2.5.x"
    result = sync(six, "--json", at=T2)
    assert counts_of(result) == expect(versions_seen=6, updated=1, unchanged=5)
    row = db.versions()[six[3]["id"]]
    assert (row["raw"], row["updated_at"]) == (six[3], T2)
    old, new = db.history(six[3]["id"])
    assert (old["valid_to"], old["extra"]) == (T2, None)
    assert (new["valid_from"], new["changed_fields"], new["extra"]) == (T2, "leanVersionTag", {"leanVersionTag": "2.5.x"})
    check_invariants(database_url)


@pytest.mark.sqlite_only
def test_the_same_object_in_other_bytes_is_silent_with_q(sync, six):
    sync(six, at=T1)
    six[0]["created"] = six[0]["created"].replace(" ", "T") + "Z"
    result = sync(six, "-q", at=T2)
    assert result.stdout == ""


def test_no_change_run_writes_only_its_run_row(sync, db, six):
    sync(six[:5], at=T1)
    sync(six, at=T2)  # one more version, so first_seen_at differs between rows
    before = db.dump()
    result = sync(six, "--json", at=T3)
    assert counts_of(result) == expect(versions_seen=6, unchanged=6)
    after = db.dump()

    assert set(after) == set(before)
    for table in before:
        if table == "sync_run":
            new_keys = set(after[table]) - set(before[table])
            assert {k: after[table][k] for k in before[table]} == before[table]
            [new_run] = [after[table][k] for k in new_keys]
            assert (new_run["started_at"], new_run["status"], new_run["unchanged"]) == (T3, "success", 6)
        else:
            assert after[table] == before[table], table


# --- hashes and runs ------------------------------------------------------------------------------


def test_lean_hash_rows_over_runs(sync, db, six):
    for v in six[:3]:
        v["leanHash"] = "a" * 40  # one commit tagged three times
    result1 = sync(six[:4], "--json", at=T1)
    six[5]["leanHash"] = "a" * 40  # an old hash on a new version is not new
    six[4]["leanCloudHash"] = "b" * 40
    result2 = sync(six, "--json", at=T2)
    run1, run2 = (json.loads(r.stdout)["run_id"] for r in (result1, result2))

    hashes = {(h["kind"], h["hash"]): h for h in db.rows(lean_hash)}
    shared = hashes[("lean", "a" * 40)]
    assert (shared["first_seen_at"], shared["first_version_id"], shared["sync_run_id"]) == (
        T1, min(v["id"] for v in six[:3]), run1)
    assert counts_of(result1)["new_hashes"] == 2 + 4  # lean: shared + six[3]; cloud: four
    # Run 2: six[4] brings its lean hash and the new cloud hash; six[5] only its cloud hash.
    assert counts_of(result2)["new_hashes"] == 3
    new_in_2 = {key for key, h in hashes.items() if h["sync_run_id"] == run2}
    assert new_in_2 == {("lean", six[4]["leanHash"]), ("lean_cloud", "b" * 40), ("lean_cloud", six[5]["leanCloudHash"])}
    assert {hashes[k]["first_seen_at"] for k in new_in_2} == {T2}


@pytest.mark.sqlite_only
def test_null_and_empty_hashes_make_no_rows(sync, db, six):
    six[0]["leanHash"] = None
    six[0]["leanCloudHash"] = ""
    del six[1]["leanHash"]
    sync(six[:2], at=T1)
    assert db.rows(lean_hash) == [
        {"kind": "lean_cloud", "hash": six[1]["leanCloudHash"], "first_seen_at": T1,
         "first_version_id": six[1]["id"], "sync_run_id": 1}
    ]


def test_sync_run_rows_record_every_run(sync, db, six):
    outputs = [
        sync(six[:4], "--json", at=T1),
        sync(six, "--json", at=T2),
        sync(six, "--json", at=T3),
        sync(six[1:], "--json", at=T4),
    ]
    runs = db.rows(sync_run)
    assert [r["id"] for r in runs] == [json.loads(o.stdout)["run_id"] for o in outputs]
    assert [r["id"] for r in runs] == sorted(r["id"] for r in runs)
    assert [r["started_at"] for r in runs] == [T1, T2, T3, T4]
    assert [r["finished_at"] for r in runs] == [T1, T2, T3, T4]
    assert [r["status"] for r in runs] == ["success"] * 4
    assert [{k: r[k] for k in COUNT_KEYS} for r in runs] == [counts_of(o) for o in outputs]
    assert [counts_of(o) for o in outputs] == [
        expect(versions_seen=4, inserted=4, new_hashes=8),
        expect(versions_seen=6, inserted=2, unchanged=4, new_hashes=4),
        expect(versions_seen=6, unchanged=6),
        expect(versions_seen=5, unchanged=5, removed=1),
    ]


@pytest.mark.sqlite_only
def test_finished_at_is_the_commit_time(run, db, six, write_response):
    """started_at is read after the lock, finished_at at the commit: both from the clock."""
    path = write_response(six)
    with freeze_time(T1, auto_tick_seconds=1):
        result = run("sync", "--from-file", path)
    assert result.exit_code == 0, result.stderr
    [row] = db.rows(sync_run)
    assert T1 <= row["started_at"] < row["finished_at"] < T1 + timedelta(minutes=5)
    assert {r["first_seen_at"] for r in db.versions().values()} == {row["started_at"]}


# --- as of T --------------------------------------------------------------------------------------


def test_as_of_each_run_returns_that_runs_list(sync, db, six, database_url):
    lists = [
        (T1, six[:4]),
        (T2, [*six[:3], {**six[3], "name": "renamed"}, six[4]]),          # update + insert
        (T3, [six[0], {**six[3], "name": "renamed"}, six[4], six[5]]),    # two removed, one inserted
        (T4, [six[0], six[1], {**six[3], "name": "again"}, six[4], six[5]]),  # restore + update
        (T5, six),
    ]
    for at, items in lists:
        sync(items, at=at)
    check_invariants(database_url)

    for n, (at, items) in enumerate(lists):
        expected = {item["id"]: api_fields(item) for item in items}
        assert db.as_of(at) == expected, at
        assert db.as_of(at + timedelta(hours=23)) == expected, at  # unchanged until the next run
    assert db.as_of(T1 - timedelta(seconds=1)) == {}


# --- --dry-run ------------------------------------------------------------------------------------


def database_files(database_url) -> dict[str, bytes] | None:
    """For SQLite: the database and lock files that exist, with their bytes."""
    path = sqlite_path(database_url)
    if path is None:
        return None
    gc.collect()  # close engines of earlier in-process runs, so SQLite checkpoints their WAL
    candidates = [path, lock_file_path(path), path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")]
    # A reader's empty -wal file is not a write; a non-empty one would be.
    return {p.name: p.read_bytes() for p in candidates if p.exists() and (p.stat().st_size or p.name != f"{path.name}-wal")}


@pytest.mark.sqlite_only  # on PostgreSQL "missing" is an empty database: test_dry_run_on_an_empty_database_writes_nothing
def test_dry_run_on_a_missing_database_creates_nothing(run, database_url, six, write_response):
    path = write_response(six)
    with freeze_time(T1):
        result = run("sync", "--dry-run", "--json", "--from-file", path)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "dry_run"
    assert {k: document[k] for k in COUNT_KEYS} == expect(versions_seen=6, inserted=6, new_hashes=12)
    assert database_files(database_url) == {}  # no database file, no lock file
    assert sorted(p.name for p in sqlite_path(database_url).parent.iterdir()) == [path.name]


def test_dry_run_on_the_missing_default_database_creates_nothing(isolated_env, six, write_response):
    """Without --database-url: not even the user data directory is created."""
    from click.testing import CliRunner

    from leansync.cli import cli

    with freeze_time(T1):
        result = CliRunner().invoke(cli, ["sync", "--dry-run", "--json", "--from-file", str(write_response(six))])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 6
    assert sorted(str(p.relative_to(isolated_env)) for p in isolated_env.rglob("*")) == []


def test_dry_run_on_an_empty_database_writes_nothing(run, db, database_url, six, write_response):
    if sqlite_path(database_url) is not None:
        sqlite_path(database_url).touch()  # an existing file without a schema
    with freeze_time(T1):
        result = run("sync", "--dry-run", "--json", "--from-file", write_response(six))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 6
    if sqlite_path(database_url) is not None:
        assert database_files(database_url) == {"history.db": b""}
    assert db.table_names() == []


def test_dry_run_on_an_existing_database_writes_nothing(sync, run, db, database_url, six, write_response):
    sync(six, at=T1)
    before, files = db.dump(), database_files(database_url)
    changed = [{**six[0], "description": "Reworded"}, *six[1:4], {**six[4], "leanVersionTag": "x"}]
    changed.append({**six[0], "id": 1, "leanHash": "e" * 40})
    with freeze_time(T2):
        result = run("sync", "--dry-run", "--json", "--from-file", write_response(changed))
    assert result.exit_code == 0, result.stderr
    assert db.dump() == before  # no sync_run row, nothing
    assert database_files(database_url) == files  # byte for byte (SQLite)

    document = json.loads(result.stdout)
    assert set(document) == JSON_KEYS | {"changes"}
    assert document["run_id"] is None
    assert {k: document[k] for k in COUNT_KEYS} == expect(versions_seen=6, inserted=1, updated=2, unchanged=3,
                                                          removed=1, new_hashes=1)
    assert document["changes"] == [
        {"action": "insert", "id": 1},
        {"action": "update", "id": six[0]["id"], "changed_fields": ["description"]},
        {"action": "update", "id": six[4]["id"], "changed_fields": ["leanVersionTag"]},
        {"action": "remove", "id": six[5]["id"]},
        {"action": "new_hash", "kind": "lean", "hash": "e" * 40, "first_version_id": 1},
    ]


@pytest.mark.sqlite_only
def test_dry_run_human_output_lists_every_change(sync, run, db, six, write_response, tag_versions):
    sync(six, at=T1)
    many = copy.deepcopy(tag_versions[:40])  # 34 new versions: more than a normal run shows
    with freeze_time(T2):
        result = run("sync", "--dry-run", "--from-file", write_response(many))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dry run, nothing written: 40 versions listed; 34 new, 0 changed, 0 removed, 0 restored, 6 unchanged")
    assert sum(re.fullmatch(r"  new +\d+", line) is not None for line in lines[1:]) == 34
    assert len(db.rows(sync_run)) == 1


@pytest.mark.sqlite_only
def test_dry_run_then_real_run_agree(sync, run, six, write_response):
    sync(six[:4], at=T1)
    items = [{**six[0], "ref": "x"}, *six[1:3], six[5]]
    with freeze_time(T2):
        planned = json.loads(run("sync", "--dry-run", "--json", "--from-file", write_response(items)).stdout)
    done = json.loads(sync(items, "--json", at=T2).stdout)
    assert {k: planned[k] for k in COUNT_KEYS} == {k: done[k] for k in COUNT_KEYS}


# --- output ---------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_json_keys_are_exactly_the_documented_ones(sync, six):
    for at, items in ((T1, six), (T2, six), (T3, six[:4])):
        document = json.loads(sync(items, "--json", at=at).stdout)
        assert set(document) == JSON_KEYS
        assert document["status"] == "success"
        assert isinstance(document["run_id"], int)
        assert all(type(document[k]) is int for k in COUNT_KEYS)


@pytest.mark.sqlite_only
def test_json_prints_exactly_one_line_even_with_q(sync, six):
    result = sync(six, "--json", "-q", at=T1)
    assert len(result.stdout.splitlines()) == 1
    assert json.loads(result.stdout)["inserted"] == 6
    result = sync(six, "--json", "-q", at=T2)  # nothing changed: the JSON is still printed
    assert json.loads(result.stdout)["unchanged"] == 6


@pytest.mark.sqlite_only
@pytest.mark.parametrize("where", ["after", "before"])
def test_quiet_prints_nothing_unless_something_changed(run, six, write_response, where):
    def quiet_sync(items, at):
        args = ["sync", "-q", "--from-file", write_response(items)]
        if where == "before":
            args = ["-q", *args[:1], *args[2:]]
        with freeze_time(at):
            result = run(*args)
        assert result.exit_code == 0, result.stderr
        return result

    first = quiet_sync(six, T1)
    assert first.stdout.startswith("run 1: 6 versions listed; 6 new")
    nothing = quiet_sync(six, T2)
    assert (nothing.stdout, nothing.stderr) == ("", "")
    changed = quiet_sync([{**six[0], "name": "renamed"}, *six[1:]], T3)
    assert changed.stdout.splitlines() == [
        "run 3: 6 versions listed; 0 new, 1 changed, 0 removed, 0 restored, 5 unchanged; 0 new hashes",
        f"  changed    {six[0]['id']} (name)",
    ]
    removed = quiet_sync(six[1:], T4)
    assert f"removed    {six[0]['id']}" in removed.stdout


@pytest.mark.sqlite_only
def test_human_summary_of_a_big_run_is_cut_short(sync, tag_versions, database_url):
    """The first run: 20 changes, counts that add up to the summary's, where the database is, what to try next."""
    result = sync(tag_versions[:30], at=T1)
    lines = result.stdout.splitlines()
    hashes = 2 * len({v["leanHash"] for v in tag_versions[:30]})
    assert lines[0] == (f"run 1: 30 versions listed; 30 new, 0 changed, 0 removed, 0 restored, 0 unchanged; "
                        f"{hashes} new hashes")
    assert lines[1:21] == [f"  new        {v['id']}" for v in tag_versions[:20]]
    since = "leansync changes --since 2026-03-01T06:00:00Z"
    assert lines[21:] == [
        f"  ... and 10 more version changes and {hashes} more new hashes; to list them all: {since}",
        f"database: {sqlite_path(database_url)}",
        "try next:",
        "  leansync versions --limit 5",
        f"  leansync show {tag_versions[0]['id']}",
        f"  {since}",
    ]


@pytest.mark.sqlite_only
def test_the_pasted_hint_lists_every_change_of_the_run(sync, run, tag_versions):
    result = sync(tag_versions[:30], at=T1)
    hint = result.stdout.splitlines()[21].split("to list them all: ")[1]
    assert hint.startswith("leansync changes --since ")
    with freeze_time(T1 + timedelta(minutes=5)):
        events = json.loads(run(*hint.split()[1:], "--format", "json").stdout)
    assert sum(e["event"] == "new_version" for e in events) == 30
    assert sum(e["event"] == "new_hash" for e in events) == 2 * len({v["leanHash"] for v in tag_versions[:30]})


@pytest.mark.sqlite_only
def test_human_summary_without_q(sync, six):
    first = sync(six, at=T1)
    assert first.stdout.splitlines()[0] == (
        "run 1: 6 versions listed; 6 new, 0 changed, 0 removed, 0 restored, 0 unchanged; 12 new hashes")
    same = sync(six, at=T2)
    assert same.stdout.splitlines()[:1] == [
        "run 2: 6 versions listed; 0 new, 0 changed, 0 removed, 0 restored, 6 unchanged; 0 new hashes"]
    assert same.stdout.splitlines()[1].startswith("database: ")  # every run but the first: no "try next"
    assert len(same.stdout.splitlines()) == 2
    restored = sync([*six[:5]], at=T3)
    back = sync([*six[:5], {**six[5], "description": "new text"}], at=T4)
    assert f"  restored   {six[5]['id']} (description)" in back.stdout.splitlines()
    assert restored.stdout.splitlines()[1] == f"  removed    {six[5]['id']}"


@pytest.mark.sqlite_only
def test_raw_is_the_object_as_sent_and_the_digest_its_bytes(run, database_url, tmp_path):
    """raw is the object JSON-equal to what was sent, its keys in the order sent;
    raw_digest is the digest of the item's bytes exactly as sent."""
    item = '{"id": 7,   "name": "v2.5.7", "extra": [1, 2.50]}'
    path = tmp_path / "as-sent.json"
    path.write_text('{"success": true, "versions": [ %s ]}' % item)
    assert run("sync", "--from-file", path).exit_code == 0
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored, stored_digest = conn.exec_driver_sql("SELECT raw, raw_digest FROM lean_version WHERE id = 7").one()
    engine.dispose()
    assert stored == '{"id":7,"name":"v2.5.7","extra":[1,2.5]}'
    assert stored_digest == hashlib.blake2b(item.encode(), digest_size=16).hexdigest()


# --- --json on every failure ----------------------------------------------------------------------

def invoke(url: str, *args):
    return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)


def _missing_credentials(tmp_path, write_response):
    return [f"sqlite:///{tmp_path / 'h.db'}", "sync", "--json"], 2


def _malformed_driver_option(tmp_path, write_response):
    # SQLAlchemy raises a plain ValueError for it: the "unexpected error" path.
    return [f"sqlite:///{tmp_path / 'h.db'}?timeout=soon", "sync", "--json", "--from-file", write_response([])], 1


def _file_in_the_way(tmp_path, write_response):
    (tmp_path / "data").write_text("a file where the database folder should be")
    return [f"sqlite:///{tmp_path / 'data' / 'h.db'}", "sync", "--json", "--from-file", write_response([])], 2


def _lock_file_unusable(tmp_path, write_response):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert invoke(url, "db", "upgrade").exit_code == 0
    lock = lock_file_path(sqlite_path(url))
    lock.unlink()
    lock.mkdir()  # a folder where the lock file should be
    return [url, "sync", "--json", "--from-file", write_response([])], 1


FAILURES = {
    "missing-credentials": (_missing_credentials, "QUANTCONNECT_API_TOKEN"),
    "unexpected-exception": (_malformed_driver_option, "unexpected error: ValueError"),
    "file-in-the-way": (_file_in_the_way, "cannot create the folder"),
    "lock-file-unusable": (_lock_file_unusable, "cannot open the lock file"),
}


@pytest.mark.parametrize("scenario", FAILURES)
def test_every_failure_of_json_sync_prints_one_json_object(tmp_path, write_response, scenario):
    make, expected = FAILURES[scenario]
    (url, *args), code = make(tmp_path, write_response)
    result = invoke(url, *args)
    assert result.exit_code == code, result.output
    [line] = result.stdout.splitlines()
    document = json.loads(line)
    assert document == {"status": "failed", "run_id": None, "error": document["error"]}
    assert expected in document["error"]
    # stderr keeps its one sentence: the same one (plus the -v hint for an unexpected error).
    [stderr_line] = result.stderr.splitlines()
    assert stderr_line.startswith(f"leansync: error: {document['error']}")
    assert "Traceback" not in result.output


@pytest.mark.sqlite_only
def test_a_busy_lock_with_json_prints_one_json_object(run, database_url, write_response, six):
    assert run("sync", "--from-file", write_response(six)).exit_code == 0
    engine = make_engine(database_url)
    try:
        with run_lock(engine, timeout=0):
            result = run("sync", "--json", "--lock-timeout", "0", "--from-file", write_response(six))
    finally:
        engine.dispose()
    assert result.exit_code == 75
    [line] = result.stdout.splitlines()
    assert json.loads(line) == {"status": "failed", "run_id": None, "error": error_line(result.stderr)}


# --- the run clock follows commit order -------------------------------------------------------------

LATER = datetime(2026, 3, 2, 6, 0, 0, tzinfo=UTC)
EARLIER = LATER - timedelta(minutes=10)  # where NTP puts the clock back to
MICROSECOND = timedelta(microseconds=1)


def test_run_timestamps_follow_commit_order_when_the_clock_steps_back(run, database_url, write_response, six):
    ten = six
    changed = [dict(ten[0], description="Reworded"), *ten[1:]]
    with freeze_time(LATER):
        assert run("sync", "--from-file", write_response(ten)).exit_code == 0
    with freeze_time(EARLIER):  # NTP stepped the clock back between the runs
        assert run("sync", "--from-file", write_response(changed)).exit_code == 0
        failed = run("sync", "--from-file", write_response(document={"versions": "none"}))
    assert failed.exit_code == 1

    rows = runs(database_url)
    assert [r["status"] for r in rows] == ["success", "success", "failed"]
    assert [r["started_at"] for r in rows] == [LATER, LATER + MICROSECOND, LATER + 2 * MICROSECOND]
    assert all(r["finished_at"] >= r["started_at"] for r in rows)

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            history = conn.execute(
                select(lean_version_history.c.valid_from, lean_version_history.c.valid_to)
                .where(lean_version_history.c.version_id == ten[0]["id"])
                .order_by(lean_version_history.c.valid_from)).all()
    finally:
        engine.dispose()
    assert [tuple(h) for h in history] == [(LATER, LATER + MICROSECOND), (LATER + MICROSECOND, None)]
    check_invariants(database_url)
