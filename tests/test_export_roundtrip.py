"""Property: a history replayed from its own exports is the same history.

A random history (seeded: inserts, changes of modelled fields and of other
keys, values sent as null or left out, removals, returns) is synced with a
frozen clock; it is exported at each run's started_at, and each export is
backfilled in order with --observed-at into a fresh database on the OTHER
backend. At every one of those moments both give the same as-of listing,
and their change feeds (changed_fields, old -> new) are the same.
"""

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

import leansync
from leansync.cli import cli
from leansync.source.payload import FIELD_KEYS

UTC = timezone.utc
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
END = datetime(2026, 6, 1, tzinfo=UTC)  # "now" while backfilling and comparing
STEPS = 8
API_KEYS = [key for _, key in FIELD_KEYS]


@pytest.fixture
def other_url(database_url, request, tmp_path):
    if database_url.startswith("sqlite"):
        return request.getfixturevalue("postgres_cluster").url(request.getfixturevalue("postgres_database"))
    return f"sqlite:///{tmp_path / 'other.db'}"


def invoke(url, *args, at):
    with freeze_time(at):
        result = CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def new_value(rng: random.Random, key: str):
    """A value the API could send for ``key``; ... means the key is left out."""
    if rng.random() < 0.2:
        return rng.choice([None, ...])
    if key == "public":
        return rng.choice([True, False, 0, 1])
    if key == "created":
        moment = START - timedelta(days=rng.randint(1, 900), seconds=rng.randint(0, 86400))
        if rng.random() < 0.5:
            return moment.strftime("%Y-%m-%d %H:%M:%S")  # the API's own form
        return moment.replace(microsecond=rng.choice([0, 1, 250000])).isoformat().replace("+00:00", "Z")
    if key in ("leanHash", "leanCloudHash"):
        return f"{rng.getrandbits(160):040x}"
    return rng.choice(["master", "release", "v2.5 ‘beta’", "", "fix: #123"])


def new_extra(rng: random.Random, item: dict) -> None:
    """Add, change or drop a key the schema does not model."""
    key = rng.choice(["notes", "flags", "build"])
    if key in item and rng.random() < 0.4:
        del item[key]
    else:
        item[key] = rng.choice([{"beta": True}, [1, 2, "x"], "nightly", 7, None, {"a": {"b": [None]}}])


def random_history(rng: random.Random, pool: list[dict]) -> list[list[dict]]:
    """STEPS listings, each a list of version objects in a shuffled order."""
    current = {v["id"]: dict(v) for v in pool[:8]}  # every version ever listed, as last sent
    listed = set(current)
    unseen = [dict(v) for v in pool[8:]]
    listings = []
    for _ in range(STEPS):
        for vid in sorted(current):
            item = current[vid]
            roll = rng.random()
            if vid in listed and roll < 0.12:
                listed.discard(vid)  # removed
            elif vid not in listed and roll < 0.4:
                listed.add(vid)  # returns, sometimes changed
            if roll < 0.5:
                key = rng.choice(API_KEYS[:-1] + ["created"])
                value = new_value(rng, key)
                if value is ...:
                    item.pop(key, None)
                else:
                    item[key] = value
            elif roll < 0.75:
                new_extra(rng, item)
        for _ in range(rng.randint(0, 2)):
            if unseen:
                item = unseen.pop()
                current[item["id"]] = item
                listed.add(item["id"])
        listing = [dict(current[vid]) for vid in listed]
        rng.shuffle(listing)
        listings.append(listing)
    return listings


def listing_at(url, moment) -> list[dict]:
    return json.loads(invoke(url, "versions", "--as-of", moment.isoformat(), "--format", "json", at=END))


def feed(url) -> list[dict]:
    """The change feed without run ids (the copy's runs are numbered on their own)."""
    events = json.loads(invoke(url, "changes", "--since", "2000-01-01", "--format", "json", at=END))
    return [{k: v for k, v in e.items() if k != "sync_run_id"} for e in events]


@pytest.mark.parametrize("seed", [11, 23])
def test_exports_replayed_on_the_other_backend_give_the_same_history(seed, database_url, other_url,
                                                                      write_response, tag_versions):
    rng = random.Random(seed)
    for step, listing in enumerate(random_history(rng, tag_versions[:20])):
        at = START + timedelta(hours=step * 7, microseconds=rng.choice([0, 1, 999999]))
        invoke(database_url, "sync", "--from-file", write_response(listing), "--allow-mass-removal", at=at)
    runs = json.loads(invoke(database_url, "runs", "--format", "json", at=END))
    moments = sorted(datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) for r in runs)
    assert len(moments) == STEPS

    exports = []
    for moment in moments:
        document = leansync.export(database_url=database_url, as_of=moment)
        exports.append(document)
        invoke(other_url, "sync", "--from-file", write_response(document=document), "--observed-at",
               moment.isoformat(), "--allow-mass-removal", at=END)

    for moment in moments:
        for when in (moment - timedelta(microseconds=1), moment):
            assert listing_at(other_url, when) == listing_at(database_url, when), when
        assert leansync.export(database_url=other_url, as_of=moment) == leansync.export(
            database_url=database_url, as_of=moment)
    other_keys = {key for document in exports for v in document["versions"] for key in v} - {"id", *API_KEYS}
    assert other_keys  # states with keys the schema does not model were exported and replayed
    source_feed = feed(database_url)
    assert any(e["event"] == "changed" for e in source_feed)  # the history has what the test is about
    assert any(e["event"] == "restored" for e in source_feed)
    assert feed(other_url) == source_feed
