"""Every timestamp within the calendar round-trips, whatever zone the PostgreSQL session would have (issue 15, item 2).

A `created` at the calendar's edge (.NET's DateTime.MaxValue, which a C# API
can send, or year 1) is stored, read back by every read command in every
format, and touched again by a later sync, on both backends. On PostgreSQL
the session's zone would come from ``PGTZ`` in the command's environment,
the database's default or the role's (``ALTER DATABASE`` / ``ALTER ROLE ...
SET timezone``): in any zone but UTC, 9999-12-31T23:59:59Z east of
Greenwich is year 10000, which Python cannot hold. leansync's sessions are
UTC whatever those say.

A date that only leaves the calendar once its offset is applied is a bad
answer, refused by name on both backends (tests/test_bad_answers.py has the
message's style).

The first sync of each round trip is the installed command, its environment
(PGTZ, TZ) its own from the start; the later sync, the read commands and the
refused answers run in-process (tests/main_in_process.py), in the same
environment: os.environ for the call, time.tzset() for TZ.
"""

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from dbstate import check_invariants, data_tables, engine_for, runs
from faults import assert_failed_run, leansync
from main_in_process import leansync_in_process

EDGES = {  # id: (created as sent, as leansync shows it)
    1: ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
    2: ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    3: ("9999-12-31 23:59:59", "9999-12-31T23:59:59Z"),  # the API's own form: UTC without a zone
    4: ("0001-01-01T05:30:00+05:30", "0001-01-01T00:00:00Z"),
    5: ("9999-12-31T18:59:59.5-05:00", "9999-12-31T23:59:59.500000Z"),
}
PGTZ = {"PGTZ": "Europe/Berlin", "TZ": "America/New_York"}  # east of UTC for the server, west for the process
NO_PGTZ = {"TZ": "America/New_York"}  # the session's zone then comes from the database or the role


def edge_versions(suffix: str = "") -> list[dict]:
    return [{"id": id_, "name": f"v{id_}", "description": f"edge {id_}{suffix}", "ref": None,
             "leanHash": f"{id_:040x}", "leanCloudHash": None, "public": True, "created": sent}
            for id_, (sent, _) in EDGES.items()]


def sql(url: str, statement: str) -> None:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(statement)
    finally:
        engine.dispose()


def read(url: str, env: dict, *args) -> str:
    """A read command, in-process, in the same zones."""
    result = leansync_in_process(*args, url=url, env=env)
    assert result.returncode == 0, (args, result.stderr)
    assert result.stderr == ""
    return result.stdout


def assert_round_trip(url: str, env: dict) -> None:
    """Every read command, in every format, shows each `created` as sent (in UTC)."""
    expected = {id_: shown for id_, (_, shown) in EDGES.items()}
    assert {v["id"]: v["created"] for v in json.loads(read(url, env, "versions", "--format", "json"))} == expected
    rows = csv.DictReader(io.StringIO(read(url, env, "versions", "--all", "--format", "csv")))
    assert {int(r["id"]): r["created"] for r in rows} == expected
    table = read(url, env, "versions")
    assert all(shown in table for shown in expected.values()), table
    for id_, shown in expected.items():
        states = json.loads(read(url, env, "show", str(id_), "--format", "json"))
        assert {s["created"] for s in states} == {shown}
    assert {r["created"] for r in csv.DictReader(io.StringIO(read(url, env, "show", "1", "--format", "csv")))} \
        == {expected[1]}
    assert expected[2] in read(url, env, "show", "2")
    as_of = json.loads(read(url, env, "versions", "--as-of", datetime.now(timezone.utc).isoformat(), "--format",
                            "json"))
    assert {v["id"]: v["created"] for v in as_of} == expected
    exported = json.loads(read(url, env, "export"))
    assert {v["id"]: v["created"] for v in exported["versions"]} == expected
    for fmt in ("json", "csv", "table"):
        assert "new_version" in read(url, env, "changes", "--since", "2000-01-01", "--format", fmt)


def sync_and_read_back(url: str, write_response, env: dict) -> None:
    first = leansync("sync", "-q", "--from-file", write_response(edge_versions()), url=url, env=env)
    assert first.returncode == 0, first.stderr
    assert_round_trip(url, env)
    # A later run touches every edge version: it reads their stored state and opens new ones.
    later = leansync_in_process("sync", "--json", "--from-file", write_response(edge_versions(" (amended)")),
                                url=url, env=env)
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["updated"] == len(EDGES)
    assert_round_trip(url, env)
    assert [r["status"] for r in runs(url)] == ["success", "success"]
    check_invariants(url)


def test_edge_timestamps_round_trip_under_pgtz(database_url, write_response):
    sync_and_read_back(database_url, write_response, PGTZ)


@pytest.mark.postgres_only
@pytest.mark.parametrize("setting", [
    'ALTER DATABASE "{database}" SET timezone = \'Pacific/Kiritimati\'',  # UTC+14
    'ALTER ROLE postgres IN DATABASE "{database}" SET timezone = \'Asia/Tokyo\'',  # UTC+9
], ids=["alter-database", "alter-role"])
def test_edge_timestamps_round_trip_whatever_the_database_or_role_says(database_url, postgres_database,
                                                                      write_response, setting, monkeypatch):
    monkeypatch.delenv("PGTZ", raising=False)
    # IN DATABASE: the role's setting goes with the test's database when it is dropped.
    sql(database_url, setting.format(database=postgres_database))
    sync_and_read_back(database_url, write_response, NO_PGTZ)


@pytest.mark.parametrize("created", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_a_date_that_leaves_the_calendar_in_utc_is_a_bad_answer(database_url, write_response, created):
    good = leansync_in_process("sync", "-q", "--from-file", write_response(edge_versions()[:2]), url=database_url,
                               env=PGTZ)
    assert good.returncode == 0, good.stderr
    before = data_tables(database_url)
    versions = edge_versions()[:2] + [dict(edge_versions()[2], id=17993, created=created)]
    path = write_response(versions)
    result = leansync_in_process("sync", "--from-file", path, url=database_url, env=PGTZ)
    assert_failed_run(result, database_url, before,
                      f'{path}: versions[2] (id 17993): field "created" leaves the calendar (years 1 to 9999) once '
                      f"converted to UTC: '{created}'")
