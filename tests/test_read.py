"""The read commands on a history built by real syncs.

One scenario, synced through the CLI at frozen times (inserts, changes,
removals, restores and a failed run), answers every question. It is synced
once per backend (and xdist worker) into a template database, and each test
reads its own copy of that, byte for byte (SQLite) or as a PostgreSQL
CREATE DATABASE ... TEMPLATE. The expected
values below are written out by hand from the scenario, not computed by
leansync's own code.

    T1 2026-01-05 09:00         a b c d e f listed (f private)         run 1
    T2 2026-02-02 09:00:00.25   b: description + lean_hash change;     run 2
                                c removed; g new; e made private
    T3 2026-03-02 09:00         c back with a new name; d removed      run 3
    T4 2026-03-09 09:00         a broken response: the run fails       run 4
    T5 2026-04-06 09:30         d back unchanged; b: ref change; h new run 5
                                (h carries a key the schema does not model)
    T6 2026-04-13 09:00         a removed                              run 6
"""

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from clitext import error_line
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import create_engine, inspect, text

from leansync import read
from leansync.store import database
from leansync.cli import cli
from samples import response

UTC = timezone.utc
T1 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T2 = datetime(2026, 2, 2, 9, 0, 0, 250000, tzinfo=UTC)
T3 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T4 = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
T5 = datetime(2026, 4, 6, 9, 30, tzinfo=UTC)
T6 = datetime(2026, 4, 13, 9, 0, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)

NEW_HASH = "0123456789abcdef0123456789abcdef01234567"
NEW_DESCRIPTION = "Retagged: Skip stale chain universe open interest"
# Kept only in lean_version.raw: nested, non-ASCII, a float and a null.
UNMODELLED = {"notes": {"tags": ["beta", "façade → ü, \"quoted\""], "weight": 1.5, "reviewer": None}}
API_KEYS = ("id", "name", "description", "ref", "lean_hash", "lean_cloud_hash", "public", "created")

INT_COLUMNS = {"id", "version_id", "first_version_id", "sync_run_id", "versions_seen", "inserted", "updated",
               "unchanged", "removed", "restored", "new_hashes", "notifications_pending", "notifications_sent",
               "notifications_abandoned"}
TIME_COLUMNS = {"created", "first_seen_at", "last_seen_at", "updated_at", "removed_at", "valid_from",
                "valid_to", "event_time", "started_at", "finished_at"}


def iso(moment: datetime) -> str:
    """The documented output spelling: ISO-8601 UTC, microseconds only when there are some."""
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


@dataclass
class Scenario:
    v: dict[str, dict]  # the API objects as last sent, by letter
    original: dict[str, dict]  # as first sent
    snapshots: dict[datetime, list[dict]]  # the list each successful run saw
    bad_file: str

    def ids(self, letters: str) -> list[int]:
        return sorted((self.v[x]["id"] for x in letters), reverse=True)


def api_row(version: dict) -> dict:
    """An API object in output columns and spelling."""
    return {
        "id": version["id"], "name": version["name"], "description": version["description"],
        "ref": version["ref"], "lean_hash": version["leanHash"], "lean_cloud_hash": version["leanCloudHash"],
        "public": version["public"], "created": version["created"].replace(" ", "T") + "Z",
    }


def newest_first(versions: list[dict]) -> list[dict]:
    return sorted((api_row(v) for v in versions), key=lambda r: -r["id"])


def build_scenario(url: str, tag_versions: list[dict], folder: Path) -> Scenario:
    """Sync the scenario into the empty database at ``url``; its responses are written to ``folder``."""
    v = {letter: dict(version) for letter, version in zip("abcdefgh", tag_versions[:8])}
    original = {k: dict(x) for k, x in v.items()}
    snapshots = {}

    def run(*args):
        return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)

    def sync_at(moment, letters):
        listed = [dict(v[x]) for x in letters]
        path = folder / f"response-{len(snapshots)}.json"
        path.write_text(json.dumps(response(listed)))
        with freeze_time(moment):
            result = run("sync", "-q", "--from-file", path)
        assert result.exit_code == 0, result.output
        snapshots[moment] = listed

    v["f"]["public"] = False
    sync_at(T1, "abcdef")
    v["b"].update(description=NEW_DESCRIPTION, leanHash=NEW_HASH)
    v["e"]["public"] = False
    sync_at(T2, "abdefg")
    v["c"]["name"] += "-rc"
    sync_at(T3, "abcefg")
    bad = folder / "truncated.json"
    bad.write_text('{"versions": [')
    with freeze_time(T4):
        failed = run("sync", "-q", "--from-file", bad)
    assert failed.exit_code == 1
    v["b"]["ref"] = "release"
    v["h"].update(UNMODELLED)
    sync_at(T5, "abcdefgh")
    sync_at(T6, "bcdefgh")
    return Scenario(v=v, original=original, snapshots=snapshots, bad_file=str(bad))


@pytest.fixture
def scenario(database_copy, tag_versions) -> Scenario:
    """The test's database holds the scenario: a copy of a template synced once, exactly as the syncs left it."""
    return database_copy("read-scenario", lambda url, folder: build_scenario(url, tag_versions, folder))


def stdout_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def json_and_csv(run, *args) -> list[dict]:
    """Run a listing as JSON and as CSV; both must parse to the same rows."""
    from_json = stdout_json(run(*args, "--format", "json"))
    result = run(*args, "--format", "csv")
    assert result.exit_code == 0, result.output
    reader = csv.DictReader(io.StringIO(result.stdout))
    from_csv = [typed_csv_row(row) for row in reader]
    if from_json:
        assert reader.fieldnames == list(from_json[0])  # same columns, same order
    assert from_csv == [typed_json_row(row) for row in from_json]
    return from_json


def _time(value: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", value), value
    return datetime.fromisoformat(value)


def typed_json_row(row: dict) -> dict:
    return {k: _time(v) if k in TIME_COLUMNS and v is not None else v for k, v in row.items()}


def typed_csv_row(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if value == "":
            out[key] = None
        elif key in INT_COLUMNS:
            out[key] = int(value)
        elif key in TIME_COLUMNS:
            out[key] = _time(value)
        elif key == "public":
            out[key] = {"true": True, "false": False}[value]
        elif key in ("changes", "raw", "extra"):  # JSON text in CSV, an object in JSON
            out[key] = json.loads(value)
        else:
            out[key] = value
    return out


def parse_table(output: str) -> list[dict]:
    """Cut an aligned table at its header's column starts: works only if aligned."""
    header, *lines = output.rstrip("\n").split("\n")
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines:
        for start in starts[1:]:
            assert line[start - 2:start].strip() == "" or len(line) < start, f"misaligned: {line!r}"
        bounds = zip(starts, starts[1:] + [None])
        rows.append({name: line[a:b].strip() for name, (a, b) in zip(names, bounds)})
    return rows


def subset(rows: list[dict], keys=API_KEYS) -> list[dict]:
    return [{k: r[k] for k in keys} for r in rows]


# --- versions ---------------------------------------------------------------------

def test_versions_lists_the_current_list_newest_id_first_with_every_column(run, scenario):
    v = scenario.v
    rows = json_and_csv(run, "versions")
    assert subset(rows) == newest_first([v[x] for x in "bcdefgh"])
    assert list(rows[0]) == ["id", "name", "description", "ref", "lean_hash", "lean_cloud_hash", "public",
                             "created", "first_seen_at", "last_seen_at", "updated_at", "removed_at", "raw",
                             "commit_url"]  # links come last (tests/test_read_links.py)
    # raw: the API's object exactly as last sent, unmodelled keys included
    assert {r["id"]: r["raw"] for r in rows} == {v[x]["id"]: v[x] for x in "bcdefgh"}
    assert rows[-1]["id"] == v["h"]["id"] and rows[-1]["raw"]["notes"] == UNMODELLED["notes"]
    times = {r["id"]: (r["first_seen_at"], r["last_seen_at"], r["updated_at"], r["removed_at"]) for r in rows}
    assert times == {
        v["b"]["id"]: (iso(T1), iso(T6), iso(T5), None),
        v["c"]["id"]: (iso(T1), iso(T6), iso(T3), None),  # back with a new name: updated then
        v["d"]["id"]: (iso(T1), iso(T6), iso(T5), None),  # back unchanged: a new state all the same
        v["e"]["id"]: (iso(T1), iso(T6), iso(T2), None),
        v["f"]["id"]: (iso(T1), iso(T6), iso(T1), None),
        v["g"]["id"]: (iso(T2), iso(T6), iso(T2), None),
        v["h"]["id"]: (iso(T5), iso(T6), iso(T5), None),
    }


def test_versions_all_and_removed(run, scenario):
    v = scenario.v
    everything = json_and_csv(run, "versions", "--all")
    assert subset(everything) == newest_first([v[x] for x in "abcdefgh"])
    removed = json_and_csv(run, "versions", "--removed")
    assert subset(removed) == newest_first([v["a"]])
    assert (removed[0]["first_seen_at"], removed[0]["last_seen_at"], removed[0]["removed_at"]) == (
        iso(T1), iso(T5), iso(T6))
    assert removed[0]["raw"] == v["a"]  # as the last run that listed it saw it
    assert [r for r in everything if r["id"] == v["a"]["id"]] == removed


def test_versions_public_private_and_limit(run, scenario):
    v = scenario.v
    assert [r["id"] for r in json_and_csv(run, "versions", "--public")] == scenario.ids("bcdgh")
    assert [r["id"] for r in json_and_csv(run, "versions", "--private")] == scenario.ids("ef")
    assert [r["id"] for r in json_and_csv(run, "versions", "--all", "--public")] == scenario.ids("abcdgh")
    assert [r["id"] for r in json_and_csv(run, "versions", "--limit", "2")] == scenario.ids("bcdefgh")[:2]
    assert [r["id"] for r in json_and_csv(run, "versions", "--private", "--limit", "1")] == [v["e"]["id"]]
    assert json_and_csv(run, "versions", "--removed", "--private") == []


def test_versions_as_of_every_run_returns_exactly_that_runs_list(run, scenario):
    assert len(scenario.snapshots) == 5
    for moment, listed in scenario.snapshots.items():
        expected = newest_first(listed)
        assert subset(json_and_csv(run, "versions", "--as-of", iso(moment))) == expected, moment
        # ... and it stays that list until the next successful run
        later = moment + timedelta(days=6, hours=23)
        assert subset(json_and_csv(run, "versions", "--as-of", iso(later))) == expected, later
    # The failed run at T4 changed nothing; before the first run there was nothing.
    assert subset(json_and_csv(run, "versions", "--as-of", iso(T4))) == newest_first(scenario.snapshots[T3])
    assert json_and_csv(run, "versions", "--as-of", iso(T1 - ONE_US)) == []
    assert subset(json_and_csv(run, "versions", "--as-of", iso(T2 - ONE_US))) == newest_first(
        scenario.snapshots[T1])


def test_versions_as_of_columns_and_validity(run, scenario):
    v = scenario.v
    rows = json_and_csv(run, "versions", "--as-of", iso(T5))
    assert list(rows[0]) == [*API_KEYS, "extra", "valid_from", "valid_to", "commit_url"]
    # extra: the state's other keys, null where there are none.
    assert {r["id"]: r["extra"] for r in rows if r["extra"] is not None} == {v["h"]["id"]: UNMODELLED}
    validity = {r["id"]: (r["valid_from"], r["valid_to"]) for r in rows}
    assert validity == {
        v["a"]["id"]: (iso(T1), iso(T6)),
        v["b"]["id"]: (iso(T5), None),
        v["c"]["id"]: (iso(T3), None),
        v["d"]["id"]: (iso(T5), None),
        v["e"]["id"]: (iso(T2), None),
        v["f"]["id"]: (iso(T1), None),
        v["g"]["id"]: (iso(T2), None),
        v["h"]["id"]: (iso(T5), None),
    }


def test_versions_as_of_accepts_dates_zones_and_relative_times(run, scenario):
    snap = scenario.snapshots
    # A date is midnight UTC: 2026-03-02 00:00 is before T3 (09:00).
    assert subset(json_and_csv(run, "versions", "--as-of", "2026-03-02")) == newest_first(snap[T2])
    # 10:00+02:00 is 08:00 UTC (before T3); 11:30+02:00 is 09:30 UTC (after).
    assert subset(json_and_csv(run, "versions", "--as-of", "2026-03-02T10:00+02:00")) == newest_first(snap[T2])
    assert subset(json_and_csv(run, "versions", "--as-of", "2026-03-02T11:30+02:00")) == newest_first(snap[T3])
    with freeze_time(T6 + timedelta(days=3)):
        assert subset(json_and_csv(run, "versions", "--as-of", "4d")) == newest_first(snap[T5])
        assert subset(json_and_csv(run, "versions", "--as-of", "72h")) == newest_first(snap[T6])


def test_versions_as_of_with_public_private_and_limit(run, scenario):
    v = scenario.v
    at = iso(T2)  # listed: a b d e g public, f e private (e made private at T2)
    assert [r["id"] for r in json_and_csv(run, "versions", "--as-of", at, "--public")] == scenario.ids("abdg")
    assert [r["id"] for r in json_and_csv(run, "versions", "--as-of", at, "--private")] == scenario.ids("ef")
    at_t1 = iso(T1)  # e was still public then
    assert [r["id"] for r in json_and_csv(run, "versions", "--as-of", at_t1, "--private")] == [v["f"]["id"]]
    assert [r["id"] for r in json_and_csv(run, "versions", "--as-of", at, "--limit", "3")] == scenario.ids("abdg")[:3]


@pytest.mark.parametrize("args", [("--all", "--removed"), ("--as-of", "2026-03-01", "--all"),
                                  ("--as-of", "2026-03-01", "--removed")])
def test_versions_conflicting_options_are_usage_errors(run, scenario, args):
    result = run("versions", *args)
    assert result.exit_code == 2
    assert "cannot be combined" in result.stderr
    assert result.stdout == ""


def test_versions_table_is_aligned_with_full_hashes(run, scenario):
    v = scenario.v
    result = run("versions", "--all")
    assert result.exit_code == 0
    # raw and the bookkeeping times are for export, not for the table
    assert result.stdout.split("\n")[0].split() == ["id", "name", "ref", "public", "created", "lean_hash",
                                                     "lean_cloud_hash", "removed_at", "description"]
    rows = parse_table(result.stdout)
    assert [int(r["id"]) for r in rows] == scenario.ids("abcdefgh")
    for row, version in zip(rows, sorted(v.values(), key=lambda x: -x["id"])):
        assert row["lean_hash"] == version["leanHash"] and len(row["lean_hash"]) == 40
        assert row["lean_cloud_hash"] == version["leanCloudHash"]
        assert row["public"] == ("true" if version["public"] else "false")
        assert row["removed_at"] == (iso(T6) if version is v["a"] else "")
    # Long descriptions are shortened in the table only.
    assert all(len(r["description"]) <= 60 for r in rows)
    as_of = parse_table(run("versions", "--as-of", iso(T3)).stdout)
    assert [(int(r["id"]), r["valid_from"]) for r in as_of][:2] == [(v["a"]["id"], iso(T1)), (v["b"]["id"], iso(T2))]


def test_versions_with_no_rows_prints_the_header_or_an_empty_export(run, scenario):
    assert run("versions", "--as-of", "2025-01-01").stdout.split() == [
        "id", "name", "ref", "public", "created", "lean_hash", "lean_cloud_hash", "valid_from", "description"]
    assert run("versions", "--as-of", "2025-01-01", "--format", "json").stdout.strip() == "[]"
    assert run("versions", "--as-of", "2025-01-01", "--format", "csv").stdout.strip() == ",".join(
        [*API_KEYS, "extra", "valid_from", "valid_to", "commit_url"])


# --- show -------------------------------------------------------------------------

def test_show_lists_every_state_with_old_and_new_values(run, scenario):
    v, o = scenario.v, scenario.original
    states = json_and_csv(run, "show", v["b"]["id"])
    assert list(states[0]) == ["version_id", "valid_from", "valid_to", "event", "ended_by", "changed_fields",
                               "changes", *API_KEYS[1:], "extra", "sync_run_id",
                               "commit_url"]  # the history keeps no raw
    assert [(s["valid_from"], s["valid_to"], s["event"], s["ended_by"], s["changed_fields"], s["sync_run_id"])
            for s in states] == [
        (iso(T1), iso(T2), "new_version", "changed", None, 1),
        (iso(T2), iso(T5), "changed", "changed", "description,lean_hash", 2),
        (iso(T5), None, "changed", None, "ref", 5),
    ]
    assert [s["changes"] for s in states] == [
        None,
        {"description": {"old": o["b"]["description"], "new": NEW_DESCRIPTION},
         "lean_hash": {"old": o["b"]["leanHash"], "new": NEW_HASH}},
        {"ref": {"old": "master", "new": "release"}},
    ]
    assert states[-1]["version_id"] == v["b"]["id"]
    assert {k: states[-1][k] for k in API_KEYS if k != "id"} == {k: api_row(v["b"])[k] for k in API_KEYS if k != "id"}
    assert {k: states[0][k] for k in ("lean_hash", "description", "ref")} == {
        "lean_hash": o["b"]["leanHash"], "description": o["b"]["description"], "ref": "master"}


def test_show_removals_and_restores(run, scenario):
    v, o = scenario.v, scenario.original
    c = json_and_csv(run, "show", v["c"]["id"])
    assert [(s["valid_from"], s["valid_to"], s["event"], s["ended_by"], s["changes"]) for s in c] == [
        (iso(T1), iso(T2), "new_version", "removed", None),
        (iso(T3), None, "restored", None, {"name": {"old": o["c"]["name"], "new": v["c"]["name"]}}),
    ]
    d = json_and_csv(run, "show", v["d"]["id"])
    assert [(s["valid_from"], s["valid_to"], s["event"], s["ended_by"], s["changed_fields"], s["changes"])
            for s in d] == [(iso(T1), iso(T3), "new_version", "removed", None, None),
                            (iso(T5), None, "restored", None, None, None)]
    e = json_and_csv(run, "show", v["e"]["id"])
    assert [s["changes"] for s in e] == [None, {"public": {"old": True, "new": False}}]


def test_show_table_has_the_version_and_its_states(run, scenario):
    v, o = scenario.v, scenario.original
    result = run("show", v["b"]["id"])
    assert result.exit_code == 0
    head, _, table = result.stdout.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == (f"version {v['b']['id']}: listed; first seen {iso(T1)}, last seen {iso(T6)}, "
                        f"updated {iso(T5)}")
    assert f"  lean_hash        {NEW_HASH}" in lines
    assert "  ref              release" in lines
    states = parse_table(table)
    assert [(s["valid_from"], s["valid_to"], s["event"], s["ended_by"]) for s in states] == [
        (iso(T1), iso(T2), "new_version", "changed"),
        (iso(T2), iso(T5), "changed", "changed"),
        (iso(T5), "", "changed", ""),
    ]
    assert f"lean_hash: {o['b']['leanHash']} → {NEW_HASH}" in states[1]["changes"]  # full hashes
    assert states[2]["changes"] == "ref: master → release"
    removed = run("show", v["a"]["id"]).stdout.split("\n")[0]
    assert removed.startswith(f"version {v['a']['id']}: removed {iso(T6)}; first seen {iso(T1)}")


def test_show_unknown_version(run, scenario):
    """A mistyped id is a usage error (2), not a failed run."""
    result = run("show", "4242")
    assert result.exit_code == 2
    assert error_line(result.stderr).startswith("version 4242 is not in the history at ")
    assert result.stderr.rstrip().endswith("(never listed); `leansync versions --all` lists every version it holds")
    assert result.stdout == ""


# --- hashes -----------------------------------------------------------------------

def test_hashes_with_first_seen_and_first_version(run, scenario):
    v, o = scenario.v, scenario.original
    rows = json_and_csv(run, "hashes")
    assert list(rows[0]) == ["kind", "hash", "first_seen_at", "first_version_id", "sync_run_id"]
    h = v["h"]
    assert rows[:3] == [
        {"kind": "lean", "hash": h["leanHash"], "first_seen_at": iso(T5), "first_version_id": h["id"],
         "sync_run_id": 5},
        {"kind": "lean_cloud", "hash": h["leanCloudHash"], "first_seen_at": iso(T5), "first_version_id": h["id"],
         "sync_run_id": 5},
        {"kind": "lean", "hash": NEW_HASH, "first_seen_at": iso(T2), "first_version_id": v["b"]["id"],
         "sync_run_id": 2},
    ]
    # T1: a b c d share one commit (first on d, the lowest id), e and f have their own.
    first = {(r["kind"], r["hash"]): r["first_version_id"] for r in rows[3:]}
    assert first == {
        ("lean", o["d"]["leanHash"]): v["d"]["id"], ("lean_cloud", o["d"]["leanCloudHash"]): v["d"]["id"],
        ("lean", o["e"]["leanHash"]): v["e"]["id"], ("lean_cloud", o["e"]["leanCloudHash"]): v["e"]["id"],
        ("lean", o["f"]["leanHash"]): v["f"]["id"], ("lean_cloud", o["f"]["leanCloudHash"]): v["f"]["id"],
    }
    assert {r["first_seen_at"] for r in rows[3:]} == {iso(T1)}
    assert o["a"]["leanHash"] == o["d"]["leanHash"] and o["f"]["leanHash"] == o["g"]["leanHash"]


def test_hashes_kind_and_since(run, scenario):
    v = scenario.v
    lean = json_and_csv(run, "hashes", "--kind", "lean")
    assert len(lean) == 5 and {r["kind"] for r in lean} == {"lean"}
    cloud = json_and_csv(run, "hashes", "--kind", "lean_cloud")
    assert len(cloud) == 4 and {r["kind"] for r in cloud} == {"lean_cloud"}
    since_t2 = json_and_csv(run, "hashes", "--since", iso(T2))  # inclusive
    assert [(r["kind"], r["hash"]) for r in since_t2] == [
        ("lean", v["h"]["leanHash"]), ("lean_cloud", v["h"]["leanCloudHash"]), ("lean", NEW_HASH)]
    assert len(json_and_csv(run, "hashes", "--since", iso(T2 + ONE_US))) == 2
    assert json_and_csv(run, "hashes", "--kind", "lean_cloud", "--since", "2026-02-01") == [since_t2[1]]
    with freeze_time(T5 + timedelta(hours=1)):
        assert len(json_and_csv(run, "hashes", "--since", "2h")) == 2
    table = parse_table(run("hashes", "--kind", "lean").stdout)
    assert [r["hash"] for r in table] == [r["hash"] for r in lean]


def test_hashes_bad_kind(run, scenario):
    result = run("hashes", "--kind", "git")
    assert result.exit_code == 2
    assert "Invalid value for '--kind'" in result.stderr


# --- changes ----------------------------------------------------------------------

def _feed(rows):
    return [(r["event_time"], r["event"], r["version_id"], r["changed_fields"], r["hash_kind"], r["hash"],
             r["sync_run_id"]) for r in rows]


def test_changes_feed_in_time_order(run, scenario):
    v, o = scenario.v, scenario.original
    a, b, c, d, e, f, g, h = (v[x]["id"] for x in "abcdefgh")
    rows = json_and_csv(run, "changes", "--since", iso(T2))
    assert list(rows[0]) == ["event_time", "event", "version_id", "changed_fields", "changes", "extra", "hash_kind",
                             "hash", "sync_run_id", "commit_url", "compare_url"]
    assert _feed(rows) == [
        (iso(T2), "new_version", g, None, None, None, 2),
        (iso(T2), "changed", e, "public", None, None, 2),
        (iso(T2), "removed", c, None, None, None, 2),
        (iso(T2), "changed", b, "description,lean_hash", None, None, 2),
        (iso(T2), "new_hash", b, None, "lean", NEW_HASH, 2),
        (iso(T3), "removed", d, None, None, None, 3),
        (iso(T3), "restored", c, "name", None, None, 3),
        (iso(T5), "new_version", h, None, None, None, 5),
        (iso(T5), "new_hash", h, None, "lean", v["h"]["leanHash"], 5),
        (iso(T5), "new_hash", h, None, "lean_cloud", v["h"]["leanCloudHash"], 5),
        (iso(T5), "restored", d, None, None, None, 5),
        (iso(T5), "changed", b, "ref", None, None, 5),
        (iso(T6), "removed", a, None, None, None, 6),
    ]
    changes = {(r["event"], r["version_id"], r["event_time"]): r["changes"] for r in rows}
    assert changes[("changed", e, iso(T2))] == {"public": {"old": True, "new": False}}
    assert changes[("changed", b, iso(T2))] == {
        "description": {"old": o["b"]["description"], "new": NEW_DESCRIPTION},
        "lean_hash": {"old": o["b"]["leanHash"], "new": NEW_HASH}}
    assert changes[("restored", c, iso(T3))] == {"name": {"old": o["c"]["name"], "new": v["c"]["name"]}}
    assert changes[("restored", d, iso(T5))] is None
    assert changes[("changed", b, iso(T5))] == {"ref": {"old": "master", "new": "release"}}
    assert all(r["changes"] is None for r in rows if r["event"] in ("new_version", "removed", "new_hash"))


def test_changes_first_run_is_new_versions_and_hashes(run, scenario):
    rows = json_and_csv(run, "changes", "--since", "2026-01-01", "--until", "2026-01-06")
    assert [r["version_id"] for r in rows if r["event"] == "new_version"] == sorted(scenario.ids("abcdef"))
    assert sum(r["event"] == "new_hash" for r in rows) == 6
    assert len(rows) == 12 and {r["event_time"] for r in rows} == {iso(T1)}


def test_changes_since_is_inclusive_and_until_exclusive(run, scenario):
    only_t3 = json_and_csv(run, "changes", "--since", iso(T3), "--until", iso(T5))
    assert {r["event_time"] for r in only_t3} == {iso(T3)} and len(only_t3) == 2
    assert json_and_csv(run, "changes", "--since", iso(T3 + ONE_US), "--until", iso(T5)) == []
    assert len(json_and_csv(run, "changes", "--since", iso(T3), "--until", iso(T5 + ONE_US))) == 7
    assert json_and_csv(run, "changes", "--since", iso(T6 + ONE_US)) == []
    with freeze_time(T6 + timedelta(days=2)):
        week = json_and_csv(run, "changes", "--since", "7d")  # what changed this week
        assert _feed(week) == [(iso(T6), "removed", scenario.v["a"]["id"], None, None, None, 6)]
        assert len(json_and_csv(run, "changes", "--since", "9d", "--until", "8d")) == 5  # T5


def test_changes_table(run, scenario):
    v, o = scenario.v, scenario.original
    rows = parse_table(run("changes", "--since", iso(T2), "--until", iso(T3)).stdout)
    assert [(r["event"], r["version_id"]) for r in rows] == [
        ("new_version", str(v["g"]["id"])), ("changed", str(v["e"]["id"])), ("removed", str(v["c"]["id"])),
        ("changed", str(v["b"]["id"])), ("new_hash", str(v["b"]["id"]))]
    details = [r["detail"] for r in rows]
    assert details[1] == "public: true → false"
    assert f"lean_hash: {o['b']['leanHash']} → {NEW_HASH}" in details[3]
    assert details[4] == f"lean {NEW_HASH}"


def test_changes_needs_since_and_a_sensible_range(run, scenario):
    missing = run("changes")
    assert missing.exit_code == 2 and "Missing option '--since'" in missing.stderr
    backwards = run("changes", "--since", "2026-03-01", "--until", "2026-02-01")
    assert backwards.exit_code == 2 and "--until must be later than --since" in backwards.stderr


# --- runs -------------------------------------------------------------------------

def test_runs_newest_first_with_counts_and_errors(run, scenario):
    rows = json_and_csv(run, "runs")
    assert list(rows[0]) == ["id", "started_at", "finished_at", "status", "source", "versions_seen", "inserted",
                             "updated", "unchanged", "removed", "restored", "new_hashes", "error",
                             "notifications_pending", "notifications_sent", "notifications_abandoned"]
    assert all(r[f"notifications_{s}"] == 0 for r in rows for s in ("pending", "sent", "abandoned"))  # no target
    assert [(r["id"], r["started_at"], r["status"]) for r in rows] == [
        (6, iso(T6), "success"), (5, iso(T5), "success"), (4, iso(T4), "failed"), (3, iso(T3), "success"),
        (2, iso(T2), "success"), (1, iso(T1), "success")]
    counts = ("versions_seen", "inserted", "updated", "unchanged", "removed", "restored", "new_hashes")
    assert {r["id"]: tuple(r[k] for k in counts) for r in rows} == {
        6: (7, 0, 0, 7, 1, 0, 0),
        5: (8, 1, 1, 5, 0, 1, 2),
        4: (0, 0, 0, 0, 0, 0, 0),
        3: (6, 0, 0, 5, 1, 1, 0),
        2: (6, 1, 2, 3, 1, 0, 1),
        1: (6, 6, 0, 0, 0, 0, 6),
    }
    failed = rows[2]
    assert failed["source"] == scenario.bad_file
    assert "not JSON" in failed["error"] and scenario.bad_file in failed["error"]
    assert all(r["error"] is None for r in rows if r["status"] == "success")
    assert all(r["finished_at"] == r["started_at"] for r in rows)  # frozen clock


def test_runs_limit_and_table(run, scenario):
    assert [r["id"] for r in json_and_csv(run, "runs", "--limit", "2")] == [6, 5]
    table = parse_table(run("runs", "--limit", "3").stdout)
    assert [(r["id"], r["status"], r["new_hashes"]) for r in table] == [
        ("6", "success", "0"), ("5", "success", "2"), ("4", "failed", "0")]
    assert table[2]["error"].startswith("the response from")
    assert run("runs", "--limit", "0").exit_code == 2


# --- read-only, and which database -------------------------------------------------

COMMANDS = [("versions",), ("show", "1"), ("hashes",), ("changes", "--since", "7d"), ("runs",)]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_read_commands_never_create_a_database(tmp_path, args):
    path = tmp_path / "missing" / "leansync.db"
    url = f"sqlite:///{path}"
    result = CliRunner().invoke(cli, ["--database-url", url, *args])
    assert result.exit_code == 2
    assert result.stderr == f"leansync: error: no leansync database at {url}; run `leansync sync` first or set " \
                            "--database-url / LEANSYNC_DATABASE_URL\n"
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_read_commands_do_not_create_a_schema(run, database_url, args):
    engine = database.make_engine(database_url, create=True)
    try:
        with engine.begin() as conn:  # an existing, empty database (on SQLite: an empty file)
            conn.execute(text("CREATE TABLE unrelated (x INTEGER)"))
        result = run(*args)
        assert result.exit_code == 2
        assert "is not a leansync database (it has no schema); run `leansync sync` first" in result.stderr
        assert inspect(engine).get_table_names() == ["unrelated"]
    finally:
        engine.dispose()


def test_read_commands_do_not_migrate_an_older_schema(run, database_url):
    engine = database.make_engine(database_url, create=True)
    try:
        with engine.begin() as conn:
            database.upgrade(conn, "0001")
        result = run("versions")
        assert result.exit_code == 2
        assert "has an older schema (0001); run `leansync db upgrade`" in result.stderr
        with engine.connect() as conn:
            assert database.current_revision(conn) == "0001"
        assert inspect(engine).get_view_names() == []
    finally:
        engine.dispose()


def test_database_url_from_the_environment(scenario, database_url):
    result = CliRunner().invoke(cli, ["runs", "--limit", "1", "--format", "json"],
                                env={"LEANSYNC_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["id"] == 6


# --- help -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["versions", "show", "hashes", "changes", "runs", "check"])
def test_help_has_a_summary_and_an_example(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    usage, summary, *_ = result.output.split("\n\n")
    assert "\n" not in summary.strip()  # one line
    assert summary.strip().endswith(".") and not summary.strip().startswith("Example")
    lines = result.output.split("\n")
    example = lines.index("  Example:")
    assert lines[example + 1].startswith(f"    leansync {name}")
    summaries = CliRunner().invoke(cli, ["--help"]).output
    assert re.search(rf"^  {name} +{re.escape(summary.strip())}$", summaries, re.MULTILINE)  # not cut short


# --- the views --------------------------------------------------------------------

def test_views_have_the_documented_columns(scenario, database_url):
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        assert sorted(inspector.get_view_names()) == ["lean_version_current", "lean_version_event"]
        for view in read.views.tables.values():
            assert [c["name"] for c in inspector.get_columns(view.name)] == [c.name for c in view.columns]
    finally:
        engine.dispose()


def test_event_view_is_what_the_feed_prints(run, scenario, database_url):
    """A reporting tool reading the view sees the same events as `leansync changes`."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            counts = dict(conn.execute(text("SELECT event, COUNT(*) FROM lean_version_event GROUP BY event")).all())
            listed = conn.execute(text("SELECT id FROM lean_version_current ORDER BY id DESC")).scalars().all()
    finally:
        engine.dispose()
    feed = json_and_csv(run, "changes", "--since", "2000-01-01")
    assert counts == {kind: sum(r["event"] == kind for r in feed) for kind in read.EVENT_KINDS}
    assert counts == {"new_version": 8, "changed": 3, "removed": 3, "restored": 2, "new_hash": 9}
    assert listed == scenario.ids("bcdefgh")


def test_downgrade_drops_the_views_and_upgrade_restores_them(scenario, database_url):
    engine = database.make_engine(database_url)
    try:
        with engine.begin() as conn:
            database.downgrade(conn, "0001")
        assert inspect(engine).get_view_names() == []
        assert "lean_version_history" in inspect(engine).get_table_names()
        with engine.begin() as conn:
            database.upgrade(conn)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM lean_version_event")).scalar() == 25
    finally:
        engine.dispose()


# --- -q on the listing commands ------------------------------------------------

@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_quiet_prints_nothing_when_there_are_no_rows(run, scenario, fmt):
    """`leansync changes -q --since 7d` in cron mails only when there was news."""
    for args in (["changes", "--since", "1m"], ["hashes", "--since", "1m"], ["versions", "--as-of", "2000-01-01"]):
        quiet = run(*args, "-q", "--format", fmt)
        assert quiet.exit_code == 0 and (quiet.stdout, quiet.stderr) == ("", ""), args
        loud = run(*args, "--format", fmt)
        assert loud.exit_code == 0 and loud.stdout.strip() != "", args  # a header, [] or a header row
    listed = run("-q", "versions", "--format", fmt)
    assert listed.stdout == run("versions", "--format", fmt).stdout != ""


def test_quiet_leaves_the_answering_commands_alone(run, scenario):
    """check, metrics, export and db current print their answer under -q too: it is why they are run."""
    for args in (["check", "--max-age", "10000d"], ["metrics"], ["export"], ["db", "current"]):
        quiet, loud = run("-q", *args), run(*args)
        assert quiet.stdout.strip() and quiet.exit_code == loud.exit_code, args
        if args[0] != "check":  # check's line holds its age
            assert quiet.stdout == loud.stdout, args
