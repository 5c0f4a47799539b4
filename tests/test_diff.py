"""The pure diff: stored state + the API's items -> a plan, with plain values.

No database here: every rule of the history is checked on
``leansync.history.diff.plan_sync`` (the same steps a run takes, see leansync.history.diff)
and ``check_mass_removal`` directly, and a seeded random walk checks the
invariants over long sequences of runs. Items are JSON bytes, as the API
sends them; the stored state is what the writer keeps of a decoded item.
"""

import json
import random
from datetime import datetime, timezone

import pytest

from leansync.history.diff import NewHash, Plan, StoredVersion, canonical, check_mass_removal, plan_sync
from leansync.errors import GuardError, PayloadError
from leansync.store.models import API_FIELDS
from leansync.source.payload import decode_version, digest

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


def version(id_: int, *, extra: dict | None = None, **changes) -> bytes:
    """An item as the API sends it: modelled fields by column name, ``extra`` other keys."""
    values = {**BASE, **changes}
    obj = {"id": id_, **{JSON_KEYS[k]: _jsonish(v) for k, v in values.items()}, **(extra or {})}
    return json.dumps(obj).encode()


def _jsonish(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else value


def respelled(item: bytes, **keys) -> bytes:
    """The same item in other bytes (keys reversed, other spacing), ``keys`` replacing JSON values."""
    obj = {**json.loads(item), **keys}
    return json.dumps(dict(reversed(list(obj.items()))), indent=1).encode()


def stored(item: bytes, *, removed: bool = False, with_digest: bool = True) -> tuple[StoredVersion, str | None]:
    """What the writer keeps of an item: its fields, its other keys, its digest."""
    v = decode_version(item, index=0, source="stored")
    return StoredVersion(v.id, v.fields, v.extra, removed), v.digest if with_digest else None


def plan(stored_versions=(), incoming=(), known=frozenset()) -> Plan:
    return plan_sync(stored=list(stored_versions), known_hashes=set(known), items=list(incoming), source="test")


def known_of(*items: bytes) -> set[tuple[str, str]]:
    out = set()
    for item in items:
        obj = json.loads(item)
        out |= {("lean", obj.get("leanHash")), ("lean_cloud", obj.get("leanCloudHash"))}
    return {(k, h) for k, h in out if h}


def ids(versions) -> list[int]:
    return [v.id for v in versions]


# --- versions: new, unchanged, changed, removed, restored ---------------------------------------


def test_field_order_is_the_table_order():
    assert API_FIELDS == ("name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")


def test_empty_database_and_empty_list_plan_nothing():
    p = plan()
    assert p.counts() == dict(versions_seen=0, inserted=0, updated=0, unchanged=0, removed=0,
                              restored=0, new_hashes=0)
    assert not p.has_changes
    assert p.changes() == []


def test_new_version_is_inserted_decoded():
    item = version(100, extra={"deprecated": False})
    p = plan(incoming=[item])
    [v] = p.inserted
    assert (v.id, v.fields, v.extra, v.digest) == (100, tuple(BASE[n] for n in API_FIELDS), {"deprecated": False},
                                                   digest(item))
    assert json.loads(v.raw) == json.loads(item)
    assert (p.updated, p.restored, p.removed, p.raw_refreshed, p.unchanged) == ([], [], [], [], 0)
    assert (p.versions_seen, p.listed_before) == (1, 0)
    assert p.has_changes


def test_unchanged_version():
    v = version(100)
    p = plan([stored(v)], [v], known_of(v))
    assert p.unchanged == 1
    assert (p.inserted, p.updated, p.restored, p.removed, p.raw_refreshed, p.new_hashes) == ([], [], [], [], [], [])
    assert not p.has_changes
    assert p.changes() == []


def test_an_item_with_its_stored_digest_is_never_decoded():
    # Not even validated: this item would be refused if it were decoded.
    bad = json.dumps({"id": 100, "public": "yes"}).encode()
    state, _ = stored(version(100))
    p = plan([(state, digest(bad))], [bad])
    assert (p.unchanged, p.raw_refreshed) == (1, [])
    with pytest.raises(PayloadError, match=r'versions\[0\] \(id 100\): field "public"'):
        plan([(state, None)], [bad])


def test_the_same_object_in_other_bytes_refreshes_raw_only():
    old = version(100, extra={"notes": {"b": [1, 2], "a": None}})
    for new in (respelled(old),  # key order and whitespace, nested too
                respelled(old, created="2023-03-21T20:45:48Z"),  # created's format: the same instant
                respelled(old, public=1)):  # 0/1 for a boolean field
        p = plan([stored(old)], [new], known_of(old))
        assert (p.unchanged, ids(p.raw_refreshed), p.updated) == (1, [100], []), new
        assert p.raw_refreshed[0].digest == digest(new)
        assert not p.has_changes and p.changes() == []


def test_a_stored_version_without_a_digest_is_compared_by_decoding():
    v = version(100)
    p = plan([stored(v, with_digest=False)], [v], known_of(v))
    assert (p.unchanged, ids(p.raw_refreshed)) == (1, [100])  # and its digest gets written


@pytest.mark.parametrize("field", API_FIELDS)
def test_each_field_changing_alone_is_an_update(field):
    old = version(100)
    new = version(100, **{field: OTHER[field]})
    p = plan([stored(old)], [new], known_of(old))
    assert [(c.version.id, c.changed_fields) for c in p.updated] == [(100, (field,))]
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
    for new in (version(100, public=False), version(100, public=0)):
        assert plan([stored(old)], [new]).updated[0].changed_fields == ("public",)


def test_empty_string_and_null_differ():
    old = version(100, description=None)
    new = version(100, description="")
    assert plan([stored(old)], [new]).updated[0].changed_fields == ("description",)


def test_a_missing_field_and_a_null_one_are_the_same_field():
    old = version(100, name=None)
    new = json.dumps({k: v for k, v in json.loads(old).items() if k != "name"}).encode()
    p = plan([stored(old)], [new], known_of(old))
    assert (p.unchanged, ids(p.raw_refreshed)) == (1, [100])


# --- the other keys (extra) ---------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "changed"), [
    ({}, {"deprecated": True}, ("deprecated",)),                                  # added
    ({"deprecated": True}, {"deprecated": False}, ("deprecated",)),               # changed
    ({"deprecated": True}, {}, ("deprecated",)),                                  # removed
    ({}, {"k": None}, ("k",)),                                                    # a null key is present
    ({"k": None}, {}, ("k",)),
    ({"k": 1}, {"k": True}, ("k",)),                                              # 1 is not true
    ({"k": 0}, {"k": False}, ("k",)),
    ({"k": 1}, {"k": 1.5}, ("k",)),
    ({"k": "1"}, {"k": 1}, ("k",)),
    ({"k": [1, 2]}, {"k": [2, 1]}, ("k",)),                                       # array order matters
    ({"k": {"a": 1}}, {"k": {"a": 1, "b": None}}, ("k",)),                        # nested: by the top key
    ({"k": {"a": {"b": 1}}}, {"k": {"a": {"b": True}}}, ("k",)),
    ({"b": 1, "a": 2, "C": 3}, {"b": 2, "a": 3, "C": 4}, ("C", "a", "b")),        # plain string order
    ({"x": 1, "y": 2}, {"x": 1, "z": 2}, ("y", "z")),                             # renamed: one gone, one new
])
def test_other_keys_added_changed_or_removed_open_a_state(before, after, changed):
    old, new = version(100, extra=before), version(100, extra=after)
    p = plan([stored(old)], [new], known_of(old))
    assert [(c.version.id, c.changed_fields) for c in p.updated] == [(100, changed)]
    assert p.updated[0].version.extra == (after or None)
    assert (p.unchanged, p.raw_refreshed) == (0, [])


@pytest.mark.parametrize("extra", [
    {"k": {"a": 1, "b": [1, {"y": 2, "x": 1}]}},
    {"k": [], "j": {}, "n": None, "f": 1.5, "s": "façade → ü"},
])
def test_other_keys_compare_as_json_not_as_text(extra):
    old = version(100, extra=extra)
    nested_reordered = json.dumps(json.loads(old), sort_keys=True, indent=3).encode()
    p = plan([stored(old)], [nested_reordered], known_of(old))
    assert (p.unchanged, ids(p.raw_refreshed), p.updated) == (1, [100], [])


def test_canonical_encoding_is_json_equality():
    assert canonical({"b": {"y": 1, "x": [2, 1]}, "a": None}) == b'{"a":null,"b":{"x":[2,1],"y":1}}'
    assert canonical(1) != canonical(True) and canonical(0) != canonical(False)
    assert canonical(None) == b"null"


def test_a_modelled_change_and_other_keys_together():
    old = version(100, extra={"deprecated": False, "tier": "a"})
    new = version(100, public=False, description="Fixed", extra={"deprecated": True, "added": 1})
    [c] = plan([stored(old)], [new], known_of(old)).updated
    assert c.changed_fields == ("description", "public", "added", "deprecated", "tier")
    assert ",".join(c.changed_fields) == "description,public,added,deprecated,tier"


def test_version_no_longer_listed_is_removed():
    a, b = version(1), version(2)
    p = plan([stored(a), stored(b)], [a], known_of(a, b))
    assert p.removed == [2]
    assert p.unchanged == 1
    assert p.listed_before == 2
    assert p.has_changes
    assert p.changes() == [{"action": "remove", "id": 2}]


def test_removed_ids_are_sorted():
    vs = {i: version(i) for i in (5, 3, 9, 1, 7, 2)}
    p = plan([stored(v) for v in vs.values()], [vs[2], vs[7], vs[9]], known_of(*vs.values()))
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


def test_restore_without_change_is_decoded_even_with_the_same_digest():
    v = version(100)
    p = plan([stored(v, removed=True)], [v], known_of(v))
    assert [(c.version.id, c.changed_fields) for c in p.restored] == [(100, ())]
    assert p.inserted == [] and p.updated == [] and p.unchanged == 0
    assert p.has_changes
    assert p.changes() == [{"action": "restore", "id": 100, "changed_fields": []}]


def test_restore_with_field_change_counts_restored_not_inserted_nor_updated():
    before_removal = version(100)
    back = version(100, description=OTHER["description"], ref=OTHER["ref"])
    p = plan([stored(before_removal, removed=True)], [back], known_of(before_removal))
    # changed_fields compare with the state before removal.
    assert [(c.version.id, c.changed_fields) for c in p.restored] == [(100, ("description", "ref"))]
    assert p.counts()["restored"] == 1
    assert p.counts()["inserted"] == 0
    assert p.counts()["updated"] == 0


def test_restore_with_other_keys_changed_names_them():
    before_removal = version(100, extra={"deprecated": False, "gone": 1})
    back = version(100, public=False, extra={"deprecated": True, "new": [1]})
    p = plan([stored(before_removal, removed=True)], [back], known_of(before_removal))
    assert [(c.version.id, c.changed_fields) for c in p.restored] == [(100, ("public", "deprecated", "gone", "new"))]
    assert p.raw_refreshed == [] and p.updated == []


def test_restore_in_other_bytes_only_is_a_plain_restore():
    v = version(100)
    p = plan([stored(v, removed=True)], [respelled(v, created="2023-03-21T20:45:48.000Z")], known_of(v))
    assert [(c.version.id, c.changed_fields) for c in p.restored] == [(100, ())]
    assert p.raw_refreshed == []  # the restore writes the new raw itself


def test_mixed_run_counts_and_changes_order():
    keep, change, gone, back, fresh = version(1), version(2), version(3), version(4), version(5, lean_hash="e" * 40)
    state = [stored(keep), stored(change), stored(gone), stored(back, removed=True)]
    incoming = [fresh, version(2, name="renamed", extra={"x": 1}), keep, back]
    p = plan(state, incoming, known_of(keep, change, gone, back))
    assert p.counts() == dict(versions_seen=4, inserted=1, updated=1, unchanged=1, removed=1,
                              restored=1, new_hashes=1)
    assert p.listed_before == 3
    assert p.changes() == [
        {"action": "insert", "id": 5},
        {"action": "update", "id": 2, "changed_fields": ["name", "x"]},
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
    assert sorted(ids(p1.inserted)) == sorted(ids(p2.inserted))
    assert p1.removed == p2.removed == [1, 2]


# --- duplicate ids ------------------------------------------------------------------------------


DUPLICATE = "test: versions[2] (id 100) repeats the id of versions[0]"


@pytest.mark.parametrize("case", ["identical-known", "identical-new", "known-then-changed", "changed-then-known",
                                  "both-changed"])
def test_a_repeated_id_is_refused_however_its_items_were_read(case):
    same = version(100)
    other = version(100, description="another")
    state = [stored(same)]
    first, second = {
        "identical-known": (same, same),  # byte for byte, both matched by digest, never decoded
        "identical-new": (other, other),
        "known-then-changed": (same, other),
        "changed-then-known": (other, same),
        "both-changed": (other, version(100, ref="x")),
    }[case]
    with pytest.raises(PayloadError) as info:
        plan(state, [first, version(7), second, version(8)], known_of(same))
    assert str(info.value) == DUPLICATE


def test_a_bad_item_before_a_repeated_id_is_reported_first():
    bad = json.dumps({"id": 5, "public": "yes"}).encode()
    with pytest.raises(PayloadError, match=r"versions\[1\] \(id 5\)"):
        plan([], [version(100), bad, version(100)])


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
    p = plan([stored(old)], [old, version(2, lean_hash="h1", lean_cloud_hash="c2")],
             {("lean", "h1"), ("lean_cloud", "c1")})
    assert p.new_hashes == [NewHash("lean_cloud", "c2", 2)]


def test_hash_known_under_the_other_kind_is_still_new():
    p = plan(incoming=[version(1, lean_hash="x", lean_cloud_hash="y")], known={("lean_cloud", "x")})
    assert p.new_hashes == [NewHash("lean", "x", 1), NewHash("lean_cloud", "y", 1)]


def test_new_hash_from_an_update_and_from_a_restore():
    a, b = version(1, lean_hash="h1"), version(2, lean_hash="h2")
    p = plan([stored(a), stored(b, removed=True)], [version(1, lean_hash="h3"), version(2, lean_hash="h4")],
             known_of(a, b))
    assert [h for h in p.new_hashes if h.kind == "lean"] == [NewHash("lean", "h3", 1), NewHash("lean", "h4", 2)]


def test_an_unchanged_version_brings_no_hash_even_if_unknown():
    # Its hashes were recorded with its state; the diff does not look again.
    v = version(1, lean_hash="h1")
    assert plan([stored(v)], [v], known=set()).new_hashes == []


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
    assert not Plan(unchanged=3, raw_refreshed=plan(incoming=[version(1)]).inserted).has_changes


# --- the mass-removal guard ---------------------------------------------------------------------


def listed(n: int) -> list:
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
EXTRAS = [None, {"tag": "x"}, {"tag": "y"}, {"tag": 1}, {"tag": True}, {"tag": None}, {"tag": "x", "more": [1, 2]},
          {"more": [2, 1]}]


def random_version(rng: random.Random, id_: int) -> bytes:
    values = {name: rng.choice(pool) for name, pool in POOLS.items()}
    return version(id_, extra=rng.choice(EXTRAS), **values)


def random_list(rng: random.Random, previous: list[bytes]) -> list[bytes]:
    """Mostly the previous list with some versions changed, re-spelled, dropped or added back."""
    by_id = {json.loads(v)["id"]: v for v in previous}
    for id_ in rng.sample(range(1, 16), rng.randint(0, 5)):
        if id_ in by_id and rng.random() < 0.5:
            del by_id[id_]
        else:
            by_id[id_] = random_version(rng, id_)
    for id_ in list(by_id):
        if rng.random() < 0.1:
            by_id[id_] = respelled(by_id[id_])
    items = list(by_id.values())
    rng.shuffle(items)
    return items


ABSENT = object()


def as_json(value) -> str:
    """An oracle independent of diff.canonical (an absent key is no JSON value)."""
    return "absent" if value is ABSENT else json.dumps(value, sort_keys=True)


def state_of(item: bytes) -> tuple:
    """An item's whole object up to spelling: its fields and its other keys, canonically."""
    v = decode_version(item, index=0, source="model")
    return v.fields, canonical(v.extra)


def apply_to_model(model: dict[int, tuple[StoredVersion, str]], known: set, p: Plan) -> None:
    """What the writer does, on plain values."""
    for v in p.inserted + [c.version for c in p.updated + p.restored] + p.raw_refreshed:
        model[v.id] = (StoredVersion(v.id, v.fields, v.extra, removed=False), v.digest)
    for vid in p.removed:
        old, old_digest = model[vid]
        model[vid] = (old._replace(removed=True), old_digest)
    known |= {(h.kind, h.hash) for h in p.new_hashes}


@pytest.mark.parametrize("seed", range(30))
def test_random_runs_keep_the_invariants(seed):
    rng = random.Random(seed)
    model: dict[int, tuple[StoredVersion, str]] = {}
    known: set[tuple[str, str]] = set()
    incoming: list[bytes] = []
    totals = dict.fromkeys(["inserted", "updated", "removed", "restored", "new_hashes", "refreshed"], 0)
    for _ in range(25):
        incoming = random_list(rng, incoming)
        before = dict(model)
        known_before = set(known)
        p = plan(model.values(), incoming, known)
        counts = p.counts()
        totals = {k: totals[k] + (len(p.raw_refreshed) if k == "refreshed" else counts[k]) for k in totals}
        by_id = {json.loads(item)["id"]: item for item in incoming}

        # Every listed version is classified exactly once.
        assert counts["inserted"] + counts["updated"] + counts["unchanged"] + counts["restored"] == len(incoming)
        classified = ids(p.inserted) + [c.version.id for c in p.updated + p.restored]
        assert len(classified) == len(set(classified))
        assert p.listed_before == sum(not s.removed for s, _ in before.values())
        for v in p.inserted:
            assert v.id not in before
        for c in p.restored:
            assert before[c.version.id][0].removed
        for c in p.updated:
            assert not before[c.version.id][0].removed
            assert c.changed_fields  # an update always changes something
        for c in p.updated + p.restored:
            old, new = before[c.version.id][0], c.version
            fields = tuple(n for n, a, b in zip(API_FIELDS, old.fields, new.fields) if a != b)
            old_extra, new_extra = old.extra or {}, new.extra or {}
            others = tuple(sorted(k for k in old_extra.keys() | new_extra.keys()
                                  if as_json(old_extra.get(k, ABSENT)) != as_json(new_extra.get(k, ABSENT))))
            assert c.changed_fields == fields + others
        for v in p.raw_refreshed:
            old, old_digest = before[v.id]
            assert (old.fields, canonical(old.extra)) == state_of(by_id[v.id]) and old_digest != v.digest
        unchanged = [i for i in by_id if i in before and not before[i][0].removed]
        assert sum(before[i][1] == digest(by_id[i]) for i in unchanged) + len(p.raw_refreshed) == p.unchanged
        assert p.removed == sorted(i for i, (s, _) in before.items() if not s.removed and i not in by_id)
        assert p.has_changes == any(counts[k] for k in ("inserted", "updated", "removed", "restored", "new_hashes"))

        # New hashes: never known, each with the lowest id carrying it among the new states.
        carriers: dict[tuple[str, str], list[int]] = {}
        for v in p.inserted + [c.version for c in p.updated + p.restored]:
            f = dict(zip(API_FIELDS, v.fields))
            for kind, column in (("lean", "lean_hash"), ("lean_cloud", "lean_cloud_hash")):
                if f[column]:
                    carriers.setdefault((kind, f[column]), []).append(v.id)
        expected = {key: min(vids) for key, vids in carriers.items() if key not in known_before}
        assert {(h.kind, h.hash): h.first_version_id for h in p.new_hashes} == expected

        apply_to_model(model, known, p)

        # The model now mirrors the list, and the same list again is a no-op that decodes nothing.
        for vid, item in by_id.items():
            state, stored_digest = model[vid]
            assert ((state.fields, canonical(state.extra)), stored_digest, state.removed) == (
                state_of(item), digest(item), False)
        assert {i for i, (s, _) in model.items() if not s.removed} == set(by_id)
        again = plan(model.values(), incoming, known)
        assert not again.has_changes
        assert (again.raw_refreshed, again.unchanged) == ([], len(incoming))
    assert all(totals.values()), totals  # the walk exercised every kind of change
