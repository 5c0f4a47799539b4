"""WHEN and DURATION: the time arguments of the read commands."""

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from leansync.timespec import TimespecError, format_age, format_utc, parse_duration, parse_when

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),  # a date is midnight UTC
        ("2026-03-01T12:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),  # no zone: UTC
        ("2026-03-01 12:30:15", datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)),
        ("2026-03-01T12:30:15.250000", datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)),
        ("2026-03-01T12:30Z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30+02:00", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),  # a zone is honoured
        ("2026-03-01T00:30-05:00", datetime(2026, 3, 1, 5, 30, tzinfo=UTC)),
        ("90m", NOW - timedelta(minutes=90)),
        ("12h", NOW - timedelta(hours=12)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("30s", NOW - timedelta(seconds=30)),
        ("0d", NOW),
        (" 7D ", NOW - timedelta(days=7)),
    ],
)
def test_parse_when(text, expected):
    parsed = parse_when(text, now=NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_relative_when_counts_back_from_the_given_now_in_utc():
    berlin = timezone(timedelta(hours=1))
    assert parse_when("1h", now=NOW.astimezone(berlin)) == NOW - timedelta(hours=1)
    assert parse_when("1h", now=NOW.astimezone(berlin)).utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-02-30", "2026-13-01", "7", "d7", "-7d", "7 days",
                                  "1.5h", "2026-03-01T25:00"])
def test_parse_when_rejects_with_what_is_expected(text):
    with pytest.raises(TimespecError) as caught:
        parse_when(text, now=NOW)
    message = str(caught.value)
    assert repr(text) in message
    assert "ISO date" in message and "90m" in message


def test_parse_when_too_far_back():
    with pytest.raises(TimespecError, match="too long|before the year 1"):
        parse_when("999999999d", now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90m", timedelta(minutes=90)), ("26h", timedelta(hours=26)), ("7d", timedelta(days=7)),
     ("1w", timedelta(weeks=1)), ("45s", timedelta(seconds=45)), ("0m", timedelta(0))],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["2026-03-01", "h", "12", "-1h", "1y", "1.5d", "99999999999999d"])
def test_parse_duration_rejects(text):
    with pytest.raises(TimespecError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 3, 1, 9, 0, tzinfo=UTC), "2026-03-01T09:00:00Z"),
        (datetime(2026, 3, 1, 9, 0, 0, 250000, tzinfo=UTC), "2026-03-01T09:00:00.250000Z"),
        (datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))), "2026-03-01T09:00:00Z"),
    ],
)
def test_format_utc(moment, expected):
    assert format_utc(moment) == expected
    assert parse_when(expected, now=NOW) == moment  # what we print, we read back


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3660, "1h 1m"), (47 * 3600, "47h"),
     (48 * 3600, "2d"), (50 * 3600 + 59, "2d 2h")],
)
def test_format_age(seconds, expected):
    assert format_age(seconds) == expected


# --- on the command line -------------------------------------------------------

@pytest.fixture
def synced(run, write_response, tag_versions):
    with freeze_time("2026-03-01 09:00:00"):
        assert run("sync", "-q", "--from-file", write_response(tag_versions[3:6])).exit_code == 0


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_bad_when_on_the_command_line_is_a_usage_error(run, synced, option):
    args = ["changes", "--since", "2026-01-01"] if option == "--until" else ["changes"]
    result = run(*args, option, "last tuesday")
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert "'last tuesday' is not a valid time" in result.stderr
    assert "Traceback" not in result.output


def test_relative_when_on_the_command_line_uses_the_frozen_clock(run, synced):
    # The sync ran at 09:00; at 10:00, "90m" ago is before it and "30m" ago after it.
    with freeze_time("2026-03-01 10:00:00"):
        assert run("hashes", "--since", "90m", "--format", "json").stdout.count('"hash"') == 6
        assert run("hashes", "--since", "30m", "--format", "json").stdout.strip() == "[]"
