"""The exact history of the keys the schema does not model, through the CLI.

One version over six runs at frozen times; the expected rows are written out
by hand from the story, not computed by leansync's own code:

    T1  listed with no other key                                      new
    T2  "deprecated": false added                                     changed
    T3  "deprecated" true, "notes" added, public false (a modelled change)  changed
    T4  not listed                                                    removed
    T5  back: "deprecated" gone, "notes" reordered (the same JSON), ref changed  restored
    T6  the same object in other bytes (key order, created's format)  nothing
"""

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time

UTC = timezone.utc
T = {n: datetime(2026, 5, n, 9, 0, tzinfo=UTC) for n in range(1, 7)}
NOTES = {"tags": ["b", "a"], "weight": 1.5, "reviewer": None}


def at(n: int) -> str:
    return T[n].strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def story(run, write_response, tag_versions):
    base, other = dict(tag_versions[0]), dict(tag_versions[1])
    states = {
        1: base,
        2: {**base, "deprecated": False},
        3: {**base, "deprecated": True, "public": False, "notes": NOTES},
        5: {**base, "public": False, "ref": "release", "notes": dict(reversed(list(NOTES.items())))},
    }
    states[6] = {"created": states[5]["created"].replace(" ", "T") + "Z",
                 **{k: v for k, v in reversed(list(states[5].items())) if k != "created"}}
    counts = {}
    for n in range(1, 7):
        listed = [other] + ([states[n]] if n in states else [])
        with freeze_time(T[n]):
            result = run("sync", "--json", "--from-file", write_response(listed))
        assert result.exit_code == 0, result.output
        counts[n] = {k: v for k, v in json.loads(result.stdout).items() if k not in ("status", "run_id")}
    return base["id"], states, counts, len({base["leanHash"], other["leanHash"]}) * 2


def test_each_run_counts_other_keys_like_any_change(story):
    _, _, counts, hashes = story
    zero = dict(versions_seen=2, inserted=0, updated=0, unchanged=1, removed=0, restored=0, new_hashes=0)
    assert counts == {
        1: {**zero, "inserted": 2, "unchanged": 0, "new_hashes": hashes},
        2: {**zero, "updated": 1},
        3: {**zero, "updated": 1},
        4: {**zero, "versions_seen": 1, "removed": 1},
        5: {**zero, "restored": 1},
        6: {**zero, "unchanged": 2},  # re-spelled only: no state, not an update
    }


def test_show_gives_every_state_with_its_other_keys_and_what_changed(run, story):
    vid, *_ = story
    result = run("show", vid, "--format", "json")
    assert result.exit_code == 0, result.output
    states = json.loads(result.stdout)
    assert [(s["valid_from"], s["valid_to"], s["event"], s["ended_by"], s["changed_fields"]) for s in states] == [
        (at(1), at(2), "new_version", "changed", None),
        (at(2), at(3), "changed", "changed", "deprecated"),
        (at(3), at(4), "changed", "removed", "public,deprecated,notes"),
        (at(5), None, "restored", None, "ref,deprecated"),  # notes: the same JSON, reordered
    ]
    assert [s["extra"] for s in states] == [None, {"deprecated": False}, {"deprecated": True, "notes": NOTES},
                                            {"notes": NOTES}]
    assert [s["public"] for s in states] == [True, True, False, False]
    assert [s["changes"] for s in states] == [
        None,
        {"deprecated": {"new": False}},
        {"public": {"old": True, "new": False}, "deprecated": {"old": False, "new": True}, "notes": {"new": NOTES}},
        {"ref": {"old": "master", "new": "release"}, "deprecated": {"old": True}},
    ]
    table = run("show", vid).stdout
    assert "deprecated: (absent) → false" in table
    assert "ref: master → release; deprecated: true → (absent)" in table


def test_the_stored_object_is_always_the_last_one_sent(run, story, database_url):
    vid, states, *_ = story
    rows = {r["id"]: r for r in json.loads(run("versions", "--all", "--format", "json").stdout)}
    assert rows[vid]["raw"] == states[6]
    if database_url.startswith("sqlite"):  # jsonb keeps no key order
        assert list(rows[vid]["raw"]) == list(states[6])  # in the order sent
    assert (rows[vid]["updated_at"], rows[vid]["last_seen_at"], rows[vid]["removed_at"]) == (at(5), at(6), None)


def test_as_of_and_changes_carry_the_other_keys(run, story):
    vid, *_ = story

    def as_of(n: int) -> dict | None:
        rows = json.loads(run("versions", "--as-of", at(n), "--format", "json").stdout)
        return {r["id"]: r["extra"] for r in rows}.get(vid, "not listed")

    assert [as_of(n) for n in range(1, 7)] == [None, {"deprecated": False}, {"deprecated": True, "notes": NOTES},
                                              "not listed", {"notes": NOTES}, {"notes": NOTES}]
    feed = json.loads(run("changes", "--since", at(2), "--format", "json").stdout)
    mine = [(e["event_time"], e["event"], e["changed_fields"], e["extra"]) for e in feed if e["version_id"] == vid]
    assert mine == [
        (at(2), "changed", "deprecated", {"deprecated": False}),
        (at(3), "changed", "public,deprecated,notes", {"deprecated": True, "notes": NOTES}),
        (at(4), "removed", None, {"deprecated": True, "notes": NOTES}),
        (at(5), "restored", "ref,deprecated", {"notes": NOTES}),
    ]
    [restored] = [r for r in csv.DictReader(io.StringIO(run("changes", "--since", at(5), "--format", "csv").stdout))
                  if r["version_id"] == str(vid)]
    assert json.loads(restored["extra"]) == {"notes": NOTES}
    assert json.loads(restored["changes"]) == {"ref": {"old": "master", "new": "release"}, "deprecated": {"old": True}}
