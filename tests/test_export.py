"""`leansync export [--as-of WHEN]` and leansync.export: the API's answer as it stood at a moment.

The command through the installed command (an export at a moment, and a
missing database), otherwise in this process as `main()` runs it
(tests/main_in_process.py); the function called directly; all on each backend. The round trip (export, then backfill the export into
a database on the other backend) is tests/test_export_roundtrip.py.
"""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

import leansync
from dbstate import has_schema, raw_rows
from leansync.cli import cli
from main_in_process import leansync_in_process

UTC = timezone.utc
T1 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
T3 = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
LEANSYNC = Path(sys.executable).parent / "leansync"
EMPTY = {"versions": [], "success": True, "errors": []}
KEYS = ["id", "name", "description", "ref", "leanHash", "leanCloudHash", "public", "created"]


def leansync_cmd(url, *args):
    """The installed command."""
    return subprocess.run([str(LEANSYNC), "--database-url", url, *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def in_process(url, *args):
    """In this process, as `main()` runs it (tests/main_in_process.py)."""
    return leansync_in_process(*args, url=url)


def item(version_id, **fields):
    base = {"id": version_id, "name": f"v2.5.{version_id}", "description": "a release", "ref": "master",
            "leanHash": f"{version_id:040x}", "leanCloudHash": f"{version_id + 1:040x}", "public": True,
            "created": "2026-02-01 10:00:00"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}  # ... leaves a key out


@pytest.fixture
def synced(database_url, write_response):
    """Three runs: T1 two versions; T2 one changed (an unmodelled key too), one new; T3 one removed."""
    steps = [
        (T1, [item(2), item(1, created="2026-02-01T10:00:00.250000Z", public=None, ref=...)]),
        (T2, [item(3, public=0), item(2, description=None, notes={"beta": True}), item(1, public=False)]),
        (T3, [item(3, public=0), item(2, description=None, notes={"beta": True})]),
    ]
    for at, versions in steps:
        with freeze_time(at):
            result = CliRunner().invoke(cli, ["--database-url", database_url, "sync", "--from-file",
                                              str(write_response(versions))], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return database_url


def test_export_as_of_each_moment(synced):
    """The first export through the installed command, the others in this process."""
    at_t1 = leansync_cmd(synced, "export", "--as-of", "2026-03-01T06:00")
    assert at_t1.returncode == 0, at_t1.stderr
    assert at_t1.stderr == ""
    document = json.loads(at_t1.stdout)
    assert document == {"versions": [
        {"id": 1, "name": "v2.5.1", "description": "a release", "ref": None, "leanHash": f"{1:040x}",
         "leanCloudHash": f"{2:040x}", "public": None, "created": "2026-02-01T10:00:00.250000Z"},
        {"id": 2, "name": "v2.5.2", "description": "a release", "ref": "master", "leanHash": f"{2:040x}",
         "leanCloudHash": f"{3:040x}", "public": True, "created": "2026-02-01T10:00:00Z"},
    ], "success": True, "errors": []}
    assert [list(v) for v in document["versions"]] == [KEYS, KEYS]  # the API's keys, in this order
    assert list(document) == ["versions", "success", "errors"]

    at_t2 = json.loads(in_process(synced, "export", "--as-of", "2026-03-02T06:00").stdout)["versions"]
    assert [v["id"] for v in at_t2] == [1, 2, 3]
    assert at_t2[0]["public"] is False
    assert at_t2[1] == {"id": 2, "name": "v2.5.2", "description": None, "ref": "master", "leanHash": f"{2:040x}",
                        "leanCloudHash": f"{3:040x}", "public": True, "created": "2026-02-01T10:00:00Z",
                        "notes": {"beta": True}}
    assert at_t2[2]["public"] is False  # 0 is the API's false
    just_before = json.loads(in_process(synced, "export", "--as-of", "2026-03-02T05:59:59.999999").stdout)
    assert just_before == document
    now = json.loads(in_process(synced, "export").stdout)
    assert [v["id"] for v in now["versions"]] == [2, 3]


def test_the_function_gives_the_same_document(synced):
    assert leansync.export(database_url=synced, as_of=T2) == json.loads(
        in_process(synced, "export", "--as-of", T2.isoformat()).stdout)
    assert leansync.export(database_url=synced, as_of=T1 - timedelta(microseconds=1)) == EMPTY
    assert [v["id"] for v in leansync.export(database_url=synced)["versions"]] == [2, 3]
    with pytest.raises(leansync.ConfigError, match="timezone-aware"):
        leansync.export(database_url=synced, as_of=datetime(2026, 3, 2))


def test_export_is_read_only(synced, database_url):
    before = raw_rows(synced)
    assert in_process(synced, "export").returncode == 0
    assert raw_rows(synced) == before


def test_before_the_first_run_the_answer_is_empty(database_url):
    assert in_process(database_url, "db", "upgrade", "-q").returncode == 0
    result = in_process(database_url, "export")
    assert (result.returncode, json.loads(result.stdout)) == (0, EMPTY)
    assert result.stdout == '{"versions": [], "success": true, "errors": []}\n'
    assert leansync.export(database_url=database_url) == EMPTY


def test_a_missing_database_is_exit_2_and_nothing_is_created(database_url, tmp_path):
    if database_url.startswith("sqlite"):
        message = f"no leansync database at {database_url}"
    else:
        message = "is not a leansync database (it has no schema)"
    result = leansync_cmd(database_url, "export", "--as-of", "2026-03-01")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("leansync: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not has_schema(database_url)
    with pytest.raises(leansync.ConfigError, match="not a leansync database|no leansync database"):
        leansync.export(database_url=database_url)
    assert not has_schema(database_url)


def test_an_export_syncs_back_unchanged(synced, write_response):
    document = leansync.export(database_url=synced)
    path = write_response(document=document)
    with freeze_time(T3 + timedelta(days=1)):
        result = CliRunner().invoke(cli, ["--database-url", synced, "sync", "--from-file", str(path), "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert (counts["unchanged"], counts["updated"], counts["inserted"], counts["removed"]) == (2, 0, 0, 0)
