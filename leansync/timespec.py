"""WHEN and DURATION arguments of the read commands.

WHEN is an ISO date (midnight UTC), an ISO date-time (UTC unless it names a
zone) or a relative time such as ``90m``, ``12h``, ``7d`` (that long before
now). DURATION is a relative form alone. Pure Python: the command line
imports this at start-up, so it must not pull in SQLAlchemy.
"""

import re
from datetime import date, datetime, timedelta, timezone

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
RELATIVE = re.compile(r"(\d+)([smhdw])")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

WHEN_HELP = "an ISO date (2026-03-01), an ISO date-time (2026-03-01T12:00, UTC unless a zone is given) " \
            "or a relative time such as 90m, 12h, 7d"
DURATION_HELP = "a number with a unit s, m, h, d or w, such as 90m, 12h, 7d"


class TimespecError(ValueError):
    """The text is not a WHEN or DURATION; the message says what is expected."""


def parse_duration(text: str) -> timedelta:
    """``90m`` -> 90 minutes. Zero is allowed (for WHEN: "now")."""
    match = RELATIVE.fullmatch(text.strip().lower())
    if not match:
        raise TimespecError(f"{text!r} is not a duration; expected {DURATION_HELP}")
    amount, unit = match.groups()
    try:
        return timedelta(**{UNITS[unit]: int(amount)})
    except OverflowError:
        raise TimespecError(f"{text!r} is too long a duration") from None


def parse_when(text: str, *, now: datetime) -> datetime:
    """A moment as a timezone-aware UTC datetime; relative forms count back from ``now``."""
    stripped = text.strip()
    if RELATIVE.fullmatch(stripped.lower()):
        try:
            return now.astimezone(timezone.utc) - parse_duration(stripped)
        except OverflowError:
            raise TimespecError(f"{text!r} reaches back before the year 1") from None
    try:
        if DATE.fullmatch(stripped):
            day = date.fromisoformat(stripped)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise TimespecError(f"{text!r} is not a valid time; expected {WHEN_HELP}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise TimespecError(f"{text!r} lies outside the calendar (years 1 to 9999) in UTC") from None


def format_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with a Z: seconds, and microseconds only when there are some."""
    moment = moment.astimezone(timezone.utc)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def utc_text_values(value):
    """``value`` as JSON output writes it: every timestamp in it as format_utc text, the rest as is."""
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, dict):
        return {k: utc_text_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [utc_text_values(v) for v in value]
    return value


def format_age(seconds: float) -> str:
    """A short human age: 45s, 12m, 5h 3m, 2d 4h."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
