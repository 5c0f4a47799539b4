"""Timestamps are stored in UTC whatever the machine's time zone (item 9).

The process runs under TZ=America/New_York (UTC-5 in January) with the
clock frozen at 03:30 UTC, when it is still the previous day in New York;
a timestamp taken or converted in local time would land five hours off and
on the wrong date. The stored values are read back as text, not through
leansync's own type, so a wrong conversion in both directions cannot cancel
out.
"""

import time
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from dbstate import engine_for, is_sqlite

FROZEN = "2026-01-15 03:30:00"  # UTC; 2026-01-14 22:30 in New York


@pytest.fixture
def new_york(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    monkeypatch.setenv("PGTZ", "America/New_York")  # the PostgreSQL session zone too
    time.tzset()
    assert time.timezone == 5 * 3600  # the zone really is in effect
    yield
    monkeypatch.undo()
    time.tzset()


def stored_text(url: str, column: str, table: str) -> list[str]:
    """The column's values as the database holds them, rendered in UTC."""
    if is_sqlite(url):
        expression = column  # SQLite keeps the UTC wall time as text
    else:
        expression = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text(f"SELECT {expression} FROM {table} ORDER BY 1"))]
    finally:
        engine.dispose()


def test_run_timestamps_are_stored_in_utc(new_york, run, database_url, write_response, tag_versions):
    with freeze_time(FROZEN):
        result = run("sync", "--from-file", write_response(tag_versions[:3]))
    assert result.exit_code == 0, result.stderr

    utc = "2026-01-15 03:30:00.000000"
    assert stored_text(database_url, "started_at", "sync_run") == [utc]
    assert stored_text(database_url, "finished_at", "sync_run") == [utc]
    for column in ("first_seen_at", "updated_at"):
        assert stored_text(database_url, column, "lean_version") == [utc] * 3
    assert set(stored_text(database_url, "valid_from", "lean_version_history")) == {utc}
    assert set(stored_text(database_url, "first_seen_at", "lean_hash")) == {utc}


def test_a_removal_in_another_zone_is_stored_in_utc(new_york, run, database_url, write_response, tag_versions):
    with freeze_time("2026-07-01 23:15:00"):  # 19:15 EDT (UTC-4 in summer)
        assert run("sync", "--from-file", write_response(tag_versions[:3])).exit_code == 0
    with freeze_time("2026-07-02 01:45:00"):  # still 2026-07-01 in New York
        assert run("sync", "--from-file", write_response(tag_versions[:2])).exit_code == 0
    assert stored_text(database_url, "removed_at", "lean_version WHERE removed_at IS NOT NULL") == [
        "2026-07-02 01:45:00.000000"]
    assert stored_text(database_url, "valid_to", "lean_version_history WHERE valid_to IS NOT NULL") == [
        "2026-07-02 01:45:00.000000"]


@pytest.mark.parametrize("created,expected", [
    ("2023-03-21 20:45:48", "2023-03-21 20:45:48.000000"),  # the API's own form: UTC without a zone
    ("2021-11-26T15:18:27.693Z", "2021-11-26 15:18:27.693000"),  # the documented form
    ("2024-07-01T01:00:00+02:00", "2024-06-30 23:00:00.000000"),  # an explicit offset is converted
])
def test_created_is_stored_in_utc(new_york, run, database_url, write_response, tag_versions, created, expected):
    with freeze_time(FROZEN):
        result = run("sync", "--from-file", write_response([dict(tag_versions[0], created=created)]))
    assert result.exit_code == 0, result.stderr
    assert stored_text(database_url, "created", "lean_version") == [expected]
    assert stored_text(database_url, "created", "lean_version_history") == [expected]


def test_values_read_back_are_aware_utc(new_york, run, database_url, write_response, tag_versions):
    from dbstate import runs

    with freeze_time(FROZEN):
        assert run("sync", "--from-file", write_response(tag_versions[:1])).exit_code == 0
    started = runs(database_url)[0]["started_at"]
    assert started == datetime(2026, 1, 15, 3, 30, tzinfo=timezone.utc)
    assert started.utcoffset().total_seconds() == 0
