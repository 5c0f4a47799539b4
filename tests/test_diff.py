"""The pure diff: stored state + the API's list -> a plan, with plain values.

No database here: every rule of the history is checked on
``leansync.diff.plan_sync`` and ``check_mass_removal`` directly, and a
seeded random walk checks the invariants over long sequences of runs.
"""

import random
from datetime import datetime, timezone

import pytest

from leansync.diff import NewHash, Plan, StoredVersion, check_mass_removal, plan_sync
from leansync.errors import GuardError
from leansync.models import API_FIELDS
from leansync.payload import Version, encode_raw

CREATED = datetime(2023, 3, 21, 20, 45, 48, tzinfo=timezone.utc)
BASE = {
    "name": "v2.5.100",
    "description": "Release 100",
    "ref": "master",
    "lean_hash": "a" * 40,
    "lean_cloud_hash": "c" * 40,
    "public": True,
    "created": CREATED,
}
# A different value for each field, to change one field at a time.
OTHER = {
    "name": "v2.5.100-renamed",
    "description": "Release 100, fixed",
    "ref": "refs/heads/hotfix",
    "lean_hash": "b" * 40,
    "lean_cloud_hash": "d" * 40,
    "public": False,
    "created": datetime(2023, 3, 22, 8, 0, 0, tzinfo=timezone.utc),
}
JSON_KEYS = dict(name="name", description="description", ref="ref", lean_hash="leanHash",
                 lean_cloud_hash="leanCloudHash", public="public", created="created")


def version(id_: int, **changes) -> Version:
    """An incoming version; ``extra`` adds keys the schema does not model to raw."""
    extra = changes.pop("extra", {})
    values = {**BASE, **changes}
    raw = {"id": id_, **{JSON_KEYS[k]: _jsonish(v) for k, v in values.items()}, **extra}
    return Version(id=id_, fields=tuple(values[name] for name in API_FIELDS), raw=raw)


def _jsonish(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else value


def stored(v: Version, *, removed: bool = False) -> StoredVersion:
    return StoredVersion(id=v.id, fields=v.fields, raw=v.raw, removed=removed)


def plan(stored_versions=(), incoming=(), known=frozenset()) -> Plan:
    return plan_sync(stored=list(stored_versions), known_hashes=set(known), incoming=list(incoming))


def known_of(*versions: Version) -> set[tuple[str, str]]:
    out = set()
    for v in versions:
        f = dict(zip(API_FIELDS, v.fields))
        out |= {("lean", f["lean_hash"]), ("lean_cloud", f["lean_cloud_hash"])} - {("lean", None), ("lean_cloud", None)}
    return out


# --- versions: new, unchanged, changed, removed, restored ---------------------------------------


def test_field_order_is_the_table_order():
    assert API_FIELDS == ("name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")


def test_empty_database_and_empty_list_plan_nothing():
    p = plan()
    assert p.counts() == dict(versions_seen=0, inserted=0, updated=0, unchanged=0, removed=0,
                              restored=0, new_hashes=0)
    assert not p.has_changes
    assert p.changes() == []


def test_new_version_is_inserted():
    v = version(100)
    p = plan(incoming=[v])
    assert p.inserted == [v]
    assert (p.updated, p.restored, p.removed, p.raw_refreshed, p.unchanged) == ([], [], [], [], 0)
    assert p.versions_seen == 1
    assert p.listed_before == 0
    assert p.has_changes


def test_unchanged_version():
    v = version(100)
    p = plan([stored(v)], [v], known_of(v))
    assert p.unchanged == 1
    assert (p.inserted, p.updated, p.restored, p.removed, p.raw_refreshed, p.new_hashes) == ([], [], [], [], [], [])
    assert not p.has_changes
    assert p.changes() == []
    assert p.counts()["unchanged"] == 1


@pytest.mark.parametrize("field", API_FIELDS)
def test_each_field_changing_alone_is_an_update(field):
    old = version(100)
    new = version(100, **{field: OTHER[field]})
    p = plan([stored(old)], [new], known_of(old))
    assert [(c.version, c.changed_fields) for c in p.updated] == [(new, (field,))]
    assert p.unchanged == 0
    assert p.inserted == [] and p.restored == [] and p.removed == []
    assert p.raw_refreshed == []  # the update itself carries the new raw
    assert p.has_changes


@pytest.mark.parametrize("field", API_FIELDS)
@pytest.mark.parametrize("direction", ["to_null", "from_null"])
def test_each_field_changing_to_or_from_null_is_an_update(field, direction):
    with_value, null = version(100), version(100, **{field: None})
    old, new = (with_value, null) if direction == "to_null" else (null, with_value)
    p = plan([stored(old)], [new], known_of(old))
    assert [c.changed_fields for c in p.updated] == [(field,)]


def test_several_fields_changing_are_listed_in_table_order():
    old = version(100)
    # Given in reverse order on purpose: the result follows the table, not the call.
    new = version(100, created=OTHER["created"], public=False, lean_hash=OTHER["lean_hash"], name=OTHER["name"])
    p = plan([stored(old)], [new], known_of(old))
    assert p.updated[0].changed_fields == ("name", "lean_hash", "public", "created")
    assert p.changes()[0] == {"action": "update", "id": 100,
                              "changed_fields": ["name", "lean_hash", "public", "created"]}


def test_all_seven_fields_changing():
    old = version(100)
    new = version(100, **OTHER)
    p = plan([stored(old)], [new], known_of(old))
    assert p.updated[0].changed_fields == API_FIELDS


def test_public_false_and_null_differ():
    # None, False and 0 must not be confused: "unknown" is not "private".
    old = version(100, public=None)
    new = version(100, public=False)
    assert plan([stored(old)], [new]).updated[0].changed_fields == ("public",)


def test_empty_string_and_null_differ():
    old = version(100, description=None)
    new = version(100, description="")
    assert plan([stored(old)], [new]).updated[0].changed_fields == ("description",)


def test_version_no_longer_listed_is_removed():
    a, b = version(1), version(2)
    p = plan([stored(a), stored(b)], [a], known_of(a, b))
    assert p.removed == [2]
    assert p.unchanged == 1
    assert p.listed_before == 2
    assert p.has_changes
    assert p.changes() == [{"action": "remove", "id": 2}]


def test_removed_ids_are_sorted():
    vs = [version(i) for i in (5, 3, 9, 1, 7, 2)]
    p = plan([stored(v) for v in vs], [version(2), version(7), version(9)], known_of(*vs))
    assert p.removed == [1, 3, 5]


def test_already_removed_and_still_absent_is_nothing():
    a, gone = version(1), version(2)
    p = plan([stored(a), stored(gone, removed=True)], [a], known_of(a, gone))
    assert p.removed == []
    assert p.restored == []
    assert p.listed_before == 1  # a removed version is not "listed"
    assert not p.has_changes
    assert p.counts() == dict(versions_seen=1, inserted=0, updated=0, unchanged=1, removed=0,
                              restored=0, new_hashes=0)


def test_restore_without_field_change():
    v = version(100)
    p = plan([stored(v, removed=True)], [v], known_of(v))
    assert [(c.version, c.changed_fields) for c in p.restored] == [(v, ())]
    assert p.inserted == [] and p.updated == [] and p.unchanged == 0
    assert p.has_changes
    assert p.changes() == [{"action": "restore", "id": 100, "changed_fields": []}]


def test_restore_with_field_change_counts_restored_not_inserted_nor_updated():
    before_removal = version(100)
    back = version(100, description=OTHER["description"], ref=OTHER["ref"])
    p = plan([stored(before_removal, removed=True)], [back], known_of(before_removal))
    # changed_fields compare with the state before removal.
    assert [(c.version, c.changed_fields) for c in p.restored] == [(back, ("description", "ref"))]
    assert p.counts()["restored"] == 1
    assert p.counts()["inserted"] == 0
    assert p.counts()["updated"] == 0


def test_restore_with_only_raw_change_is_a_plain_restore():
    v = version(100)
    back = version(100, extra={"newField": 1})
    p = plan([stored(v, removed=True)], [back], known_of(v))
    assert [(c.version, c.changed_fields) for c in p.restored] == [(back, ())]
    assert p.raw_refreshed == []  # the restore writes the new raw itself


def test_raw_only_change_is_unchanged_and_refreshes_raw():
    old = version(100)
    new = version(100, extra={"leanVersionTag": "x"})
    p = plan([stored(old)], [new], known_of(old))
    assert p.unchanged == 1
    assert p.raw_refreshed == [new]
    assert p.updated == []
    assert p.counts()["updated"] == 0 and p.counts()["unchanged"] == 1
    assert not p.has_changes  # no history: only raw and last_seen_at move
    assert p.changes() == []


def test_raw_key_order_is_not_a_change():
    old = version(100)
    reordered = Version(id=100, fields=old.fields, raw=dict(reversed(list(old.raw.items()))))
    p = plan([stored(old)], [reordered], known_of(old))
    assert p.unchanged == 1
    assert p.raw_refreshed == []


def test_raw_is_compared_by_value_not_by_spelling():
    # Deliberate: raw is compared as Python values, so 1 vs 1.0 (which a jsonb
    # round trip may produce) or true vs 1 is no refresh. Otherwise a backend that
    # normalises numbers would rewrite raw on every run.
    old = Version(id=100, fields=version(100).fields, raw={**version(100).raw, "public": True, "build": 1.0})
    new = Version(id=100, fields=old.fields, raw={**old.raw, "public": 1, "build": 1})
    p = plan([stored(old)], [new], known_of(old))
    assert p.unchanged == 1
    assert p.raw_refreshed == []
    newer = Version(id=100, fields=old.fields, raw={**old.raw, "build": 2})
    assert plan([stored(old)], [newer], known_of(old)).raw_refreshed == [newer]


def test_mixed_run_counts_and_changes_order():
    keep, change, gone, back, fresh = version(1), version(2), version(3), version(4), version(5, lean_hash="e" * 40)
    state = [stored(keep), stored(change), stored(gone), stored(back, removed=True)]
    incoming = [fresh, version(2, name="renamed"), keep, back]
    p = plan(state, incoming, known_of(keep, change, gone, back))
    assert p.counts() == dict(versions_seen=4, inserted=1, updated=1, unchanged=1, removed=1,
                              restored=1, new_hashes=1)
    assert p.listed_before == 3
    assert p.changes() == [
        {"action": "insert", "id": 5},
        {"action": "update", "id": 2, "changed_fields": ["name"]},
        {"action": "restore", "id": 4, "changed_fields": []},
        {"action": "remove", "id": 3},
        {"action": "new_hash", "kind": "lean", "hash": "e" * 40, "first_version_id": 5},
    ]


def test_incoming_order_does_not_change_the_classification():
    vs = [version(i, name=f"n{i}") for i in range(1, 8)]
    state = [stored(v) for v in vs[:4]]
    p1 = plan(state, vs[2:], known_of(*vs))
    p2 = plan(list(reversed(state)), list(reversed(vs[2:])), known_of(*vs))
    assert p1.counts() == p2.counts()
    assert sorted(v.id for v in p1.inserted) == sorted(v.id for v in p2.inserted)
    assert p1.removed == p2.removed == [1, 2]


# --- hashes -------------------------------------------------------------------------------------


def test_new_hashes_of_a_first_run():
    a = version(10, lean_hash="h1", lean_cloud_hash="c1")
    b = version(11, lean_hash="h2", lean_cloud_hash="c2")
    p = plan(incoming=[a, b])
    assert p.new_hashes == [
        NewHash("lean", "h1", 10), NewHash("lean", "h2", 11),
        NewHash("lean_cloud", "c1", 10), NewHash("lean_cloud", "c2", 11),
    ]
    assert p.counts()["new_hashes"] == 4


def test_shared_hash_is_new_once_with_the_lowest_id_in_the_run():
    # Listed newest first, as the API does: the lowest id is last.
    vs = [version(i, lean_hash="shared", lean_cloud_hash="cloud-shared") for i in (30, 12, 25, 17)]
    p = plan(incoming=vs)
    assert p.new_hashes == [NewHash("lean", "shared", 12), NewHash("lean_cloud", "cloud-shared", 12)]


def test_same_value_as_lean_and_lean_cloud_hash_are_two_hashes():
    v = version(1, lean_hash="same", lean_cloud_hash="same")
    assert plan(incoming=[v]).new_hashes == [NewHash("lean", "same", 1), NewHash("lean_cloud", "same", 1)]


@pytest.mark.parametrize("empty", [None, ""])
def test_null_or_empty_hash_is_no_hash(empty):
    v = version(1, lean_hash=empty, lean_cloud_hash=empty)
    p = plan(incoming=[v])
    assert p.new_hashes == []
    assert p.counts()["new_hashes"] == 0


def test_known_hashes_are_not_repeated():
    old = version(1, lean_hash="h1", lean_cloud_hash="c1")
    p = plan([stored(old)], [old, version(2, lean_hash="h1", lean_cloud_hash="c2")], {("lean", "h1"), ("lean_cloud", "c1")})
    assert p.new_hashes == [NewHash("lean_cloud", "c2", 2)]


def test_hash_known_under_the_other_kind_is_still_new():
    p = plan(incoming=[version(1, lean_hash="x", lean_cloud_hash="y")], known={("lean_cloud", "x")})
    assert p.new_hashes == [NewHash("lean", "x", 1), NewHash("lean_cloud", "y", 1)]


def test_new_hash_from_an_update_and_from_a_restore():
    a, b = version(1, lean_hash="h1"), version(2, lean_hash="h2")
    known = known_of(a, b)
    p = plan([stored(a), stored(b, removed=True)],
             [version(1, lean_hash="h3"), version(2, lean_hash="h4")], known)
    assert [h for h in p.new_hashes if h.kind == "lean"] == [NewHash("lean", "h3", 1), NewHash("lean", "h4", 2)]


def test_hash_of_a_removed_version_stays_known():
    # The hash was seen before: a version that carried it is gone, another one carries it now.
    gone = version(1, lean_hash="h1")
    p = plan([stored(gone, removed=True)], [version(2, lean_hash="h1")], known_of(gone))
    assert all(h.hash != "h1" for h in p.new_hashes)


def test_hash_change_only_adds_a_hash_and_an_update():
    old = version(1)
    new = version(1, lean_hash="f" * 40)
    p = plan([stored(old)], [new], known_of(old))
    assert p.changes() == [
        {"action": "update", "id": 1, "changed_fields": ["lean_hash"]},
        {"action": "new_hash", "kind": "lean", "hash": "f" * 40, "first_version_id": 1},
    ]


def test_a_new_hash_alone_makes_has_changes_true():
    # Cannot happen without another change in practice; checks has_changes on its own.
    p = Plan(new_hashes=[NewHash("lean", "h", 1)])
    assert p.has_changes
    assert not Plan(unchanged=3, raw_refreshed=[version(1)]).has_changes


# --- the mass-removal guard ---------------------------------------------------------------------


def listed(n: int) -> list[StoredVersion]:
    return [stored(version(i)) for i in range(1, n + 1)]


def test_guard_more_than_half_removed_fails():
    state = listed(5)
    p = plan(state, [version(1), version(2)], known_of(version(1)))  # 3 of 5 removed
    with pytest.raises(GuardError) as info:
        check_mass_removal(p, allow=False)
    message = str(info.value)
    assert "3 of 5" in message
    assert "--allow-mass-removal" in message


def test_guard_exactly_half_passes():
    p = plan(listed(4), [version(1), version(2)], known_of(version(1)))  # 2 of 4
    assert p.removed == [3, 4]
    check_mass_removal(p, allow=False)  # no exception


def test_guard_one_over_half_fails_on_odd_counts():
    p = plan(listed(3), [version(1)], known_of(version(1)))  # 2 of 3
    with pytest.raises(GuardError):
        check_mass_removal(p, allow=False)


def test_guard_empty_list_with_listed_versions_fails():
    p = plan(listed(4), [], known_of(version(1)))
    assert p.removed == [1, 2, 3, 4]
    with pytest.raises(GuardError, match="4 of 4"):
        check_mass_removal(p, allow=False)


def test_guard_single_listed_version_removed_fails():
    p = plan(listed(1), [version(2)], known_of(version(1)))
    with pytest.raises(GuardError, match="1 of 1"):
        check_mass_removal(p, allow=False)


def test_guard_allow_flag_lets_it_through():
    p = plan(listed(4), [], known_of(version(1)))
    with pytest.raises(GuardError):
        check_mass_removal(p, allow=False)
    check_mass_removal(p, allow=True)  # the same plan, allowed: no exception


def test_guard_empty_database_and_empty_list_passes():
    check_mass_removal(plan(), allow=False)


def test_guard_ignores_versions_removed_earlier():
    # 2 listed + 10 removed long ago; removing 1 of the 2 listed is exactly half.
    state = listed(2) + [stored(version(i), removed=True) for i in range(10, 20)]
    p = plan(state, [version(1)], known_of(version(1)))
    assert (p.listed_before, p.removed) == (2, [2])
    check_mass_removal(p, allow=False)


def test_guard_counts_removals_against_listed_before_not_after():
    # Many new versions do not dilute a mass removal.
    p = plan(listed(4), [version(i) for i in range(100, 120)], known_of(version(1)))
    with pytest.raises(GuardError, match="4 of 4"):
        check_mass_removal(p, allow=False)


# --- property-style: random runs against an in-memory model ------------------------------------

POOLS = {
    "name": [None, "v1", "v2"],
    "description": [None, "", "fix", "feature"],
    "ref": [None, "master"],
    "lean_hash": [None, "", "h1", "h2", "h3", "h4", "h5"],
    "lean_cloud_hash": [None, "c1", "c2", "c3"],
    "public": [None, True, False],
    "created": [None, CREATED, OTHER["created"]],
}


def random_version(rng: random.Random, id_: int) -> Version:
    values = {name: rng.choice(pool) for name, pool in POOLS.items()}
    extra = {"tag": rng.choice(["x", "y"])} if rng.random() < 0.3 else {}
    return version(id_, extra=extra, **values)


def random_list(rng: random.Random, previous: list[Version]) -> list[Version]:
    """Mostly the previous list with some versions changed, dropped or added back."""
    by_id = {v.id: v for v in previous}
    for id_ in rng.sample(range(1, 16), rng.randint(0, 5)):
        if id_ in by_id and rng.random() < 0.5:
            del by_id[id_]
        else:
            by_id[id_] = random_version(rng, id_)
    for id_ in list(by_id):
        if rng.random() < 0.1:  # a raw-only change
            old = by_id[id_]
            by_id[id_] = Version(id=old.id, fields=old.fields, raw={**old.raw, "tag": rng.random()})
    versions = list(by_id.values())
    rng.shuffle(versions)
    return versions


def apply_to_model(model: dict[int, StoredVersion], known: set, p: Plan) -> None:
    """What the writer does, on plain values."""
    for v in p.inserted:
        model[v.id] = StoredVersion(v.id, v.fields, v.raw, removed=False)
    for c in p.updated + p.restored:
        model[c.version.id] = StoredVersion(c.version.id, c.version.fields, c.version.raw, removed=False)
    for v in p.raw_refreshed:
        model[v.id] = StoredVersion(v.id, v.fields, v.raw, removed=False)
    for vid in p.removed:
        old = model[vid]
        model[vid] = StoredVersion(vid, old.fields, old.raw, removed=True)
    known |= {(h.kind, h.hash) for h in p.new_hashes}


def as_read(s: StoredVersion, form: str) -> StoredVersion:
    """A stored version in the form the diff gets it: with its fields, or (as
    leansync.writer.read_state gives it) only the raw object, as a dict
    (PostgreSQL jsonb) or as the JSON text it was written as (SQLite)."""
    if form == "fields":
        return s
    return StoredVersion(s.id, None, encode_raw(s.raw) if form == "raw-text" else s.raw, s.removed)


@pytest.mark.parametrize("form", ["fields", "raw-dict", "raw-text"])
@pytest.mark.parametrize("seed", range(20))
def test_random_runs_keep_the_invariants(seed, form):
    rng = random.Random(seed)
    model: dict[int, StoredVersion] = {}
    known: set[tuple[str, str]] = set()
    incoming: list[Version] = []
    totals = dict.fromkeys(["inserted", "updated", "removed", "restored", "new_hashes"], 0)
    for _ in range(25):
        incoming = random_list(rng, incoming)
        before = dict(model)
        known_before = set(known)
        p = plan_sync(stored=[as_read(m, form) for m in model.values()], known_hashes=set(known), incoming=incoming)
        counts = p.counts()
        totals = {k: totals[k] + counts[k] for k in totals}

        # Every listed version is classified exactly once.
        assert counts["inserted"] + counts["updated"] + counts["unchanged"] + counts["restored"] == len(incoming)
        classified = ([v.id for v in p.inserted] + [c.version.id for c in p.updated + p.restored])
        assert len(classified) == len(set(classified))
        assert p.listed_before == sum(not s.removed for s in before.values())
        for v in p.inserted:
            assert v.id not in before
        for c in p.restored:
            assert before[c.version.id].removed
        for c in p.updated:
            assert not before[c.version.id].removed
            assert c.changed_fields  # an update always changes a modelled field
        for c in p.updated + p.restored:
            old = dict(zip(API_FIELDS, before[c.version.id].fields))
            new = dict(zip(API_FIELDS, c.version.fields))
            assert c.changed_fields == tuple(n for n in API_FIELDS if old[n] != new[n])
        for v in p.raw_refreshed:
            assert before[v.id].fields == v.fields and before[v.id].raw != v.raw
        listed_now = {v.id for v in incoming}
        assert p.removed == sorted(i for i, s in before.items() if not s.removed and i not in listed_now)
        assert p.has_changes == any(counts[k] for k in ("inserted", "updated", "removed", "restored", "new_hashes"))

        # New hashes: never known, each with the lowest id carrying it.
        carriers: dict[tuple[str, str], list[int]] = {}
        for v in incoming:
            f = dict(zip(API_FIELDS, v.fields))
            for kind, column in (("lean", "lean_hash"), ("lean_cloud", "lean_cloud_hash")):
                if f[column]:
                    carriers.setdefault((kind, f[column]), []).append(v.id)
        expected = {key: min(ids) for key, ids in carriers.items() if key not in known_before}
        assert {(h.kind, h.hash): h.first_version_id for h in p.new_hashes} == expected

        apply_to_model(model, known, p)

        # The model now mirrors the list, and the same list again is a no-op.
        for v in incoming:
            assert model[v.id] == StoredVersion(v.id, v.fields, v.raw, removed=False)
        assert {i for i, s in model.items() if not s.removed} == listed_now
        again = plan_sync(stored=[as_read(m, form) for m in model.values()], known_hashes=set(known), incoming=incoming)
        assert not again.has_changes
        assert again.raw_refreshed == []
        assert again.unchanged == len(incoming)
    assert all(totals.values()), totals  # the walk exercised every kind of change
