"""The save side on a real database (SQLite and PostgreSQL), with no HTTP and no CLI.

Plans come from sync.plan_against (the writer's reads, then the pure diff);
leansync.history.writer writes the plan and the sync_run row. Each test checks the
rows themselves.
"""

import json
import random
import shutil
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.exc import IntegrityError

from leansync.store.database import ensure_schema, make_engine, sqlite_path
from leansync.store.models import API_FIELDS, UTCDateTime, lean_hash, lean_version, lean_version_history, metadata, sync_run
from leansync.source.payload import MODELLED_KEYS, decode_version, digest
from leansync.history.sync import plan_against
from leansync.history.writer import apply_plan, finish_run, insert_run, read_index, read_stored

T0 = datetime(2026, 3, 1, 6, 0, 0, tzinfo=timezone.utc)
V = lean_version.c
H = lean_version_history.c


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture(scope="module")
def empty_sqlite_database(tmp_path_factory):
    """A SQLite database at the newest schema, made once and copied for each test."""
    path = tmp_path_factory.mktemp("writer") / "template.db"
    template = make_engine(f"sqlite:///{path}", create=True)
    ensure_schema(template)
    template.dispose()
    return path


@pytest.fixture
def engine(database_url, empty_sqlite_database):
    """A database at the newest schema on each backend (the writer has per-backend SQL)."""
    path = sqlite_path(database_url)
    if path is not None:
        shutil.copyfile(empty_sqlite_database, path)
        engine = make_engine(database_url)
    else:
        # leansync's PostgreSQL engines have no pool (a run opens a handful of
        # connections); these tests read after every step, so pool them here.
        engine = create_engine(database_url)
        ensure_schema(engine)
    yield engine
    engine.dispose()


def api(id_: int, **fields) -> dict:
    """An API version object; keyword arguments override or add JSON keys."""
    return {
        "id": id_,
        "created": "2023-03-21 20:45:48",
        "description": f"Release {id_}",
        "leanHash": f"{id_:040x}",
        "leanCloudHash": f"{id_ + 10**6:040x}",
        "name": f"v2.5.{id_}",
        "ref": "master",
        "public": True,
        **fields,
    }


def body_of(items: list[dict]) -> bytes:
    return json.dumps({"versions": items, "success": True}).encode()


def decoded(item: dict):
    return decode_version(json.dumps(item).encode(), index=0, source="test")


def other_keys(item: dict) -> dict | None:
    return {k: v for k, v in item.items() if k not in MODELLED_KEYS} or None


def sync_once(engine, items: list[dict], now: datetime):
    """One run as leansync.history.sync does it, minus lock and clock."""
    with engine.begin() as conn:
        plan = plan_against(conn, body_of(items), source="test")
        run_id = insert_run(conn, started_at=now, source="test", status="success", counts=plan.counts())
        apply_plan(conn, plan, run_id=run_id, now=now)
        finish_run(conn, run_id, finished_at=now + timedelta(seconds=1))
    return plan, run_id


def rows(engine, table, *order) -> list[dict]:
    order = order or table.primary_key.columns
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(*order))]


def version_rows(engine) -> dict[int, dict]:
    return {r["id"]: r for r in rows(engine, lean_version)}


def history(engine, version_id: int) -> list[dict]:
    with engine.connect() as conn:
        result = conn.execute(select(lean_version_history).where(H.version_id == version_id).order_by(H.id))
        return [dict(r._mapping) for r in result]


def dump(engine) -> dict[str, dict[tuple, dict]]:
    """Every row of every table, keyed by primary key."""
    out = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            pk = [c.name for c in table.primary_key.columns]
            out[table.name] = {tuple(r._mapping[c] for c in pk): dict(r._mapping) for r in conn.execute(select(table))}
    return out


def check_history_invariants(engine) -> None:
    """At most one open row per version, none for a removed version, the open row = the version
    (its seven fields, and extra = raw's other keys); updated_at is the newest row's start."""
    versions = version_rows(engine)
    all_history = rows(engine, lean_version_history)
    open_rows = {}
    for h in all_history:
        if h["valid_to"] is None:
            assert h["version_id"] not in open_rows, f"two open history rows for {h['version_id']}"
            open_rows[h["version_id"]] = h
        else:
            assert h["valid_to"] > h["valid_from"]
    for vid, v in versions.items():
        if v["removed_at"] is not None:
            assert vid not in open_rows, f"removed version {vid} has an open history row"
        else:
            assert {n: open_rows[vid][n] for n in API_FIELDS} == {n: v[n] for n in API_FIELDS}
            # The open state's other keys are raw's, as JSON (1 is not true).
            assert json.dumps(open_rows[vid]["extra"], sort_keys=True) == json.dumps(other_keys(v["raw"]), sort_keys=True)
    for vid, v in versions.items():
        assert v["updated_at"] == max(h["valid_from"] for h in all_history if h["version_id"] == vid)
    # A version's rows do not overlap: each one starts where the previous one ended or later.
    by_version: dict[int, list[dict]] = {}
    for h in all_history:
        by_version.setdefault(h["version_id"], []).append(h)
    for hs in by_version.values():
        hs.sort(key=lambda h: h["valid_from"])
        for earlier, later in zip(hs, hs[1:]):
            assert earlier["valid_to"] is not None and earlier["valid_to"] <= later["valid_from"]


# --- the first run --------------------------------------------------------------------------------


def test_first_run_writes_versions_history_hashes_and_run(engine):
    items = [api(30, leanHash="shared"), api(12, leanHash="shared", public=0), api(20, public=None, name=None)]
    plan, run_id = sync_once(engine, items, T0)

    versions = version_rows(engine)
    assert sorted(versions) == [12, 20, 30]
    v12 = versions[12]
    assert (v12["name"], v12["description"], v12["ref"], v12["lean_hash"], v12["public"]) == (
        "v2.5.12", "Release 12", "master", "shared", False)
    assert v12["lean_cloud_hash"] == f"{12 + 10**6:040x}"
    assert v12["created"] == datetime(2023, 3, 21, 20, 45, 48, tzinfo=timezone.utc)
    assert versions[20]["public"] is None and versions[20]["name"] is None
    for v in versions.values():
        assert v["first_seen_at"] == v["updated_at"] == T0
        assert v["removed_at"] is None
    assert {vid: v["raw"] for vid, v in versions.items()} == {item["id"]: item for item in items}

    assert {vid: v["raw_digest"] for vid, v in versions.items()} == {
        item["id"]: digest(json.dumps(item).encode()) for item in items}

    hist = rows(engine, lean_version_history)
    assert len(hist) == 3
    for h in hist:
        assert (h["valid_from"], h["valid_to"], h["changed_fields"], h["sync_run_id"], h["extra"]) == (
            T0, None, None, run_id, None)
        assert {n: h[n] for n in API_FIELDS} == {n: versions[h["version_id"]][n] for n in API_FIELDS}

    hashes = {(h["kind"], h["hash"]): h for h in rows(engine, lean_hash)}
    assert len(hashes) == 5  # one shared lean hash, three cloud hashes, one more lean hash
    assert hashes[("lean", "shared")]["first_version_id"] == 12  # the lowest id carrying it
    assert hashes[("lean", f"{20:040x}")]["first_version_id"] == 20
    assert {h["first_seen_at"] for h in hashes.values()} == {T0}
    assert {h["sync_run_id"] for h in hashes.values()} == {run_id}

    [run] = rows(engine, sync_run)
    assert run["id"] == run_id
    assert (run["started_at"], run["finished_at"], run["status"], run["source"], run["error"]) == (
        T0, T0 + timedelta(seconds=1), "success", "test", None)
    assert {k: run[k] for k in plan.counts()} == dict(versions_seen=3, inserted=3, updated=0, unchanged=0,
                                                       removed=0, restored=0, new_hashes=5)
    check_history_invariants(engine)


def test_read_stored_round_trips_what_was_written(engine):
    """Reading back gives equal values, so the same list again is a no-op (no phantom changes)."""
    items = [
        api(1, created="2021-11-26T15:18:27.693Z"),
        api(2, created="2021-11-26T15:18:27.1234567+02:00", public=False),
        api(3, created=None, public=None, description="Ünïcode ✓\nline two", leanHash=""),
        api(4, extra={"nested": [1, 2.5, None, {"k": "v"}]}, flag=True, public=1),
        {"id": 5},
    ]
    sync_once(engine, items, T0)
    with engine.connect() as conn:
        index = read_index(conn)
        stored = read_stored(conn, [1, 2, 3, 4, 5, 6])
    assert (index.listed, index.removed) == ({1, 2, 3, 4, 5}, set())
    assert index.by_digest == {digest(json.dumps(item).encode()): item["id"] for item in items}
    expected = {item["id"]: decoded(item) for item in items}
    assert {vid: (s.fields, s.extra, s.removed) for vid, s in stored.items()} == {
        vid: (v.fields, v.extra, False) for vid, v in expected.items()}
    assert stored[4].extra == {"extra": {"nested": [1, 2.5, None, {"k": "v"}]}, "flag": True}
    # The typed columns hold the same values.
    with engine.connect() as conn:
        columns = {r[0]: tuple(r[1:]) for r in conn.execute(
            select(lean_version.c.id, *[lean_version.c[name] for name in API_FIELDS]))}
    assert columns == {vid: v.fields for vid, v in expected.items()}
    again, _ = sync_once(engine, items, at(1))
    assert (again.unchanged, again.raw_refreshed, again.has_changes) == (5, [], False)
    # Read one by one (every item decoded), the stored state still compares equal.
    respelled = [json.loads(json.dumps(item, indent=2, sort_keys=True)) for item in items]
    with engine.connect() as conn:
        body = json.dumps({"versions": respelled}, indent=2, sort_keys=True).encode()
        third = plan_against(conn, body, source="test")
    assert (third.unchanged, len(third.raw_refreshed), third.has_changes) == (5, 5, False)


# --- later runs -----------------------------------------------------------------------------------


def test_update_remove_unchanged_and_raw_only(engine):
    _, run1 = sync_once(engine, [api(1), api(2), api(3), api(4)], at(0))
    items = [
        api(1),                                              # unchanged
        api(2, description="Fixed", leanHash="new-hash"),    # two fields change
        api(3, leanVersionTag="3.0"),                        # a key the schema does not model
    ]                                                        # 4 is no longer listed
    plan, run2 = sync_once(engine, items, at(1))
    assert plan.counts() == dict(versions_seen=3, inserted=0, updated=2, unchanged=1, removed=1,
                                 restored=0, new_hashes=1)
    v = version_rows(engine)

    assert (v[1]["first_seen_at"], v[1]["updated_at"]) == (at(0), at(0))

    assert (v[2]["description"], v[2]["lean_hash"]) == ("Fixed", "new-hash")
    assert (v[2]["first_seen_at"], v[2]["updated_at"]) == (at(0), at(1))
    assert v[2]["raw"] == items[1]
    [old, new] = history(engine, 2)
    assert (old["valid_from"], old["valid_to"], old["description"], old["sync_run_id"]) == (at(0), at(1), "Release 2", run1)
    assert (new["valid_from"], new["valid_to"], new["description"], new["sync_run_id"]) == (at(1), None, "Fixed", run2)
    assert new["changed_fields"] == "description,lean_hash"

    # Another key: a new state, with the key in extra.
    assert (v[3]["raw"], v[3]["updated_at"]) == (items[2], at(1))
    assert [(h["valid_to"], h["changed_fields"], h["extra"]) for h in history(engine, 3)] == [
        (at(1), None, None), (None, "leanVersionTag", {"leanVersionTag": "3.0"})]

    # Removed: removed_at set, last sighting and fields kept, history closed.
    assert (v[4]["removed_at"], v[4]["updated_at"]) == (at(1), at(0))
    assert v[4]["description"] == "Release 4"
    [only] = history(engine, 4)
    assert only["valid_to"] == at(1)

    new_hash = [h for h in rows(engine, lean_hash) if h["hash"] == "new-hash"]
    assert [(h["first_seen_at"], h["first_version_id"], h["sync_run_id"]) for h in new_hash] == [(at(1), 2, run2)]
    check_history_invariants(engine)


def test_removed_and_still_absent_changes_nothing(engine):
    sync_once(engine, [api(1), api(2)], at(0))
    sync_once(engine, [api(1)], at(1))
    before = dump(engine)
    sync_once(engine, [api(1)], at(2))
    after = dump(engine)
    assert after["lean_version"] == before["lean_version"]
    assert after["lean_version_history"] == before["lean_version_history"]
    assert after["lean_hash"] == before["lean_hash"]


def test_restore_without_and_with_field_changes(engine):
    sync_once(engine, [api(1), api(2), api(3)], at(0))
    sync_once(engine, [api(1, description="Changed while listed"), api(2), api(3)], at(1))
    sync_once(engine, [api(3)], at(2))  # 1 and 2 removed (the guard is the caller's business)
    plan, run4 = sync_once(engine, [api(1, description="Changed while listed"), api(2, ref="hotfix", public=False), api(3)], at(3))
    assert plan.counts()["restored"] == 2
    assert plan.counts()["inserted"] == 0 and plan.counts()["updated"] == 0
    v = version_rows(engine)

    # 1 returns as it left: no field change, but a new state, so updated_at moves.
    assert (v[1]["removed_at"], v[1]["updated_at"], v[1]["first_seen_at"]) == (None, at(3), at(0))
    h1 = history(engine, 1)
    assert [(h["valid_from"], h["valid_to"], h["changed_fields"]) for h in h1] == [
        (at(0), at(1), None), (at(1), at(2), "description"), (at(3), None, None)]
    assert h1[-1]["sync_run_id"] == run4

    # 2 returns changed: changed_fields compare with the state before removal.
    assert (v[2]["removed_at"], v[2]["updated_at"]) == (None, at(3))
    assert (v[2]["ref"], v[2]["public"]) == ("hotfix", False)
    h2 = history(engine, 2)
    assert [(h["valid_from"], h["valid_to"], h["changed_fields"]) for h in h2] == [
        (at(0), at(2), None), (at(3), None, "ref,public")]
    check_history_invariants(engine)


def test_restore_with_another_key_names_it(engine):
    sync_once(engine, [api(1), api(2)], at(0))
    sync_once(engine, [api(2)], at(1))
    back = api(1, leanVersionTag="x")
    plan, _ = sync_once(engine, [back, api(2)], at(2))
    assert plan.counts()["restored"] == 1 and plan.counts()["updated"] == 0
    assert version_rows(engine)[1]["raw"] == back
    assert [(h["changed_fields"], h["extra"]) for h in history(engine, 1)] == [
        (None, None), ("leanVersionTag", {"leanVersionTag": "x"})]


def test_the_same_object_in_other_bytes_refreshes_raw_and_its_digest_only(engine):
    sync_once(engine, [api(1), api(2, extra={"b": 1, "a": [1, 2]})], at(0))
    before = dump(engine)
    # 1 for true: the same field, but raw must keep what was sent (PostgreSQL too).
    items = [api(1, public=1), dict(reversed(list(api(2, extra={"a": [1, 2], "b": 1}).items())))]
    plan, _ = sync_once(engine, items, at(1))
    assert (plan.unchanged, [v.id for v in plan.raw_refreshed], plan.has_changes) == (2, [1, 2], False)
    after = dump(engine)
    for item in items:
        row, old = after["lean_version"][(item["id"],)], before["lean_version"][(item["id"],)]
        assert json.dumps(row["raw"], sort_keys=True) == json.dumps(item, sort_keys=True)  # 1 stays 1, not true
        assert row["raw_digest"] == digest(json.dumps(item).encode()) != old["raw_digest"]
        assert {k: row[k] for k in row if k not in ("raw", "raw_digest")} == {
            k: old[k] for k in old if k not in ("raw", "raw_digest")}
    assert type(after["lean_version"][(1,)]["raw"]["public"]) is int
    assert after["lean_version_history"] == before["lean_version_history"]


def test_extra_is_sql_null_when_there_are_no_other_keys(engine):
    sync_once(engine, [api(1), api(2, k=None), api(3, k={"a": None})], at(0))
    with engine.connect() as conn:
        nulls = conn.exec_driver_sql("SELECT version_id FROM lean_version_history WHERE extra IS NULL").all()
    assert nulls == [(1,)]
    assert {h["version_id"]: h["extra"] for h in rows(engine, lean_version_history)} == {
        1: None, 2: {"k": None}, 3: {"k": {"a": None}}}


def test_a_run_of_new_versions_and_hashes_writes_what_it_planned(engine):
    """The plan (shown by --dry-run, counted in sync_run) is exactly what lands."""
    sync_once(engine, [api(1, leanHash="h1"), api(2, leanHash="h2")], at(0))
    items = [api(1, leanHash="h1"), api(2, leanHash="h3", leanCloudHash="h1"), api(3, leanHash="h3"),
             api(4, leanHash="h1"), api(5, leanHash="")]
    plan, run_id = sync_once(engine, items, at(1))
    written = {(h["kind"], h["hash"], h["first_version_id"]) for h in rows(engine, lean_hash)
               if h["sync_run_id"] == run_id}
    assert written == {(h.kind, h.hash, h.first_version_id) for h in plan.new_hashes}
    assert ("lean", "h3", 2) in written and ("lean_cloud", "h1", 2) in written
    assert [r["new_hashes"] for r in rows(engine, sync_run)] == [4, len(written)]


def test_every_written_cell_carries_the_run_timestamp(engine):
    """Across runs of every kind, each timestamp a run writes is that run's own."""
    runs = [
        [api(1), api(2), api(3), api(4, leanHash="shared"), api(5, leanHash="shared")],
        [api(1), api(2, name="renamed"), api(3), api(4, leanHash="shared", extra=1), api(6)],
        [api(1), api(2, name="renamed"), api(3), api(4, leanHash="shared", extra=1, public=1), api(6)],
        [api(1), api(2, name="renamed"), api(6, leanHash="brand-new")],
        [api(1), api(2, name="renamed"), api(3, description="back, changed"), api(5, leanHash="shared"), api(6, leanHash="brand-new")],
        [api(1), api(2, name="renamed"), api(3, description="back, changed"), api(5, leanHash="shared"), api(6, leanHash="brand-new")],
    ]
    timestamp_columns = {
        table.name: [c.name for c in table.columns if isinstance(c.type, UTCDateTime) and c.name != "created"]
        for table in metadata.sorted_tables
    }
    for n, items in enumerate(runs):
        now = at(n)
        before = dump(engine)
        sync_once(engine, items, now)
        after = dump(engine)
        for table, columns in timestamp_columns.items():
            for key, row in after[table].items():
                old = before[table].get(key)
                for column in columns:
                    if column == "finished_at":
                        continue  # the commit time, set by finish_run
                    if old is None or old[column] != row[column]:
                        assert row[column] in (now, None), (table, key, column, row[column], now)
        check_history_invariants(engine)
    assert [r["started_at"] for r in rows(engine, sync_run)] == [at(n) for n in range(len(runs))]


def test_open_history_row_is_unique_in_the_database(engine):
    _, run_id = sync_once(engine, [api(1)], T0)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(lean_version_history).values(version_id=1, valid_from=at(1), valid_to=None,
                                                         sync_run_id=run_id))


@pytest.mark.sqlite_only  # plain SQLAlchemy Core statements
def test_insert_run_and_finish_run(engine):
    counts = dict(versions_seen=7, inserted=1, updated=2, unchanged=3, removed=1, restored=0, new_hashes=4)
    with engine.begin() as conn:
        ok = insert_run(conn, started_at=at(0), source="/tmp/r.json", status="success", counts=counts)
        failed = insert_run(conn, started_at=at(1), source="https://x/api/v2/lean/versions/read",
                            status="failed", error="boom", finished_at=at(1.5))
        finish_run(conn, ok, finished_at=at(0.5))
    assert failed > ok
    first, second = rows(engine, sync_run)
    assert {k: first[k] for k in counts} == counts
    assert (first["status"], first["finished_at"], first["error"], first["source"]) == ("success", at(0.5), None, "/tmp/r.json")
    assert (second["status"], second["finished_at"], second["error"]) == ("failed", at(1.5), "boom")
    assert {k: second[k] for k in counts} == dict.fromkeys(counts, 0)


@pytest.mark.sqlite_only  # the data, not the backend, is the point
def test_real_tags_first_version_of_shared_hashes(engine, tag_versions):
    sync_once(engine, tag_versions, T0)
    expected: dict[str, int] = {}
    for item in tag_versions:
        expected[item["leanHash"]] = min(expected.get(item["leanHash"], item["id"]), item["id"])
    stored = {h["hash"]: h["first_version_id"] for h in rows(engine, lean_hash) if h["kind"] == "lean"}
    assert stored == expected
    assert len(expected) < len(tag_versions)  # the data really has shared hashes
    assert len(rows(engine, lean_version)) == len(rows(engine, lean_version_history)) == len(tag_versions)


# --- property-style: random runs on the real database ---------------------------------------------


def random_item(rng: random.Random, id_: int) -> dict:
    return api(
        id_,
        name=rng.choice([None, f"v{id_}", "renamed"]),
        description=rng.choice([None, "", "a", "b"]),
        leanHash=rng.choice([None, "", "h1", "h2", "h3", f"own-{id_}"]),
        leanCloudHash=rng.choice([None, "c1", "c2"]),
        public=rng.choice([None, True, False, 0, 1]),
        created=rng.choice([None, "2023-03-21 20:45:48", "2021-11-26T15:18:27.693Z"]),
        **({"tag": rng.choice(["x", "y", 1, True, None, [1, 2], [2, 1]])} if rng.random() < 0.3 else {}),
    )


@pytest.mark.parametrize("seed", range(3))
def test_random_runs_history_answers_as_of_each_run(engine, seed):
    rng = random.Random(seed)
    listed: dict[int, dict] = {}
    lists: list[tuple[datetime, dict[int, dict]]] = []
    totals = dict.fromkeys(["inserted", "updated", "removed", "restored"], 0)
    for n in range(12):
        for id_ in rng.sample(range(1, 25), rng.randint(1, 8)):
            if id_ in listed and rng.random() < 0.4:
                del listed[id_]
            else:
                listed[id_] = random_item(rng, id_)
        items = list(listed.values())
        rng.shuffle(items)
        now = at(n)
        plan, _ = sync_once(engine, items, now)
        totals = {k: totals[k] + plan.counts()[k] for k in totals}
        check_history_invariants(engine)
        versions = [decoded(item) for item in items]
        lists.append((now, {v.id: (v.fields, v.extra) for v in versions}))
        # lean_version mirrors the list; removed ones are flagged.
        stored = version_rows(engine)
        assert {vid for vid, r in stored.items() if r["removed_at"] is None} == set(listed)
        for v in versions:
            assert tuple(stored[v.id][f] for f in API_FIELDS) == v.fields
            assert stored[v.id]["raw"] == listed[v.id]
            assert stored[v.id]["raw_digest"] == v.digest

    assert all(totals.values()), totals  # the walk exercised every kind of change

    # "As of T": every run's list, and the same just before the next run.
    for now, expected in lists:
        for t in (now, now + timedelta(minutes=59)):
            with engine.connect() as conn:
                result = conn.execute(
                    select(H.version_id, *[H[f] for f in API_FIELDS], H.extra)
                    .where(H.valid_from <= t, (H.valid_to.is_(None)) | (H.valid_to > t))
                )
                as_of = {r[0]: (tuple(r[1:8]), r[8]) for r in result}
            assert as_of == expected
