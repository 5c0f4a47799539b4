"""Every ```sql block in README.md and docs/ (the SQL cookbook, docs/sql.md) runs and returns what the README says.

Each block is one statement followed by its expected rows, one
`-- result: a | b | c` line per row (`-- result: (no rows)` for none). A
block whose first line is `-- SQLite` or `-- PostgreSQL` runs only on that
backend; the others run on both. Values are compared as text: NULL as
`NULL`, booleans as `1`/`0` (as SQLite stores them), timestamps in UTC as `YYYY-MM-DD HH:MM:SS` (fractions only when
non-zero) whatever the backend returns, and the third run's moment (the
real clock's, below) as `now`.

The database is the README's reference history, built by real syncs of the
sample tags:
  1. 2026-01-05 09:00 UTC: every version created before then;
  2. 2026-03-02 09:00 UTC: every version created before then; 17453 now
     points at another commit (a retag), 17449 is no longer listed;
  3. now (the real clock: the README asks "this month", "this week"): all
     4,289 versions; 17449 is back, 17553 is no longer public, and 18024
     is new but not public.
"""

import hashlib
import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)
RESULT = "-- result:"
NOW = "now"  # how a result shows the third run's moment (the real clock's)
DIALECTS = {"-- SQLite": "sqlite", "-- PostgreSQL": "postgresql"}

R1 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
R2 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
RETAG_HASH = hashlib.sha1(b"retag 17453").hexdigest()


def sql_blocks() -> list[str]:
    return [block for path in DOCUMENTS for block in SQL_BLOCK.findall(path.read_text(encoding="utf-8"))]


def parse_block(block: str) -> tuple[str, list[list[str]], str | None]:
    """(the SQL, the expected rows, the only dialect it is for or None)."""
    lines = block.rstrip("\n").split("\n")
    dialect = DIALECTS.get(lines[0].strip())
    expected = [line[len(RESULT):].strip() for line in lines if line.startswith(RESULT)]
    sql = "\n".join(line for line in lines if not line.startswith(RESULT)).strip()
    rows = [] if expected == ["(no rows)"] else [[cell.strip() for cell in row.split(" | ")] for row in expected]
    return sql, rows, dialect


def test_the_readme_has_checkable_sql():
    blocks = sql_blocks()
    assert len(blocks) >= 6, "README.md has no (or too few) ```sql examples: merge the `Query it` section"
    for block in blocks:
        sql, rows, _ = parse_block(block)
        assert RESULT in block, f"this README example says nothing about its result:\n{block}"
        assert sql.rstrip().endswith(";") and sql.count(";") == 1, f"one statement per block:\n{block}"
    dialects = [parse_block(b)[2] for b in blocks]
    assert dialects.count("sqlite") == dialects.count("postgresql") >= 1  # each variant has its twin


def as_text(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):  # PostgreSQL's; SQLite stores 1 and 0
        value = int(value)
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    elif isinstance(value, Decimal):
        value = format(value, "f")
    value = str(value)
    # SQLite hands timestamps back as the stored text: YYYY-MM-DD HH:MM:SS.ffffff
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{6}))?", value)
    if match:
        seconds, fraction = match.groups()
        return seconds if not fraction or fraction == "000000" else f"{seconds}.{fraction}"
    return value


@pytest.fixture
def reference_history(run, write_response, tag_versions):
    now = datetime.now(timezone.utc)

    def created_before(moment):
        limit = moment.strftime("%Y-%m-%d %H:%M:%S")
        return [dict(v) for v in tag_versions if v["created"] < limit]

    def sync_at(moment, versions):
        with freeze_time(moment):
            result = run("sync", "-q", "--from-file", write_response(versions))
        assert result.exit_code == 0, result.output

    sync_at(R1, created_before(R1))
    second = [v for v in created_before(R2) if v["id"] != 17449]
    for v in second:
        if v["id"] == 17453:
            v["leanHash"] = RETAG_HASH
    sync_at(R2, second)
    third = [dict(v) for v in tag_versions]
    for v in third:
        if v["id"] == 17453:
            v["leanHash"] = RETAG_HASH
        if v["id"] in (17553, 18024):  # 17553 made private; 18024 new and private
            v["public"] = False
    sync_at(now, third)
    return now


def test_every_readme_sql_example_returns_what_the_readme_says(reference_history, database_url):
    today = as_text(reference_history)  # the third run's moment, which the README writes as `now`
    engine = create_engine(database_url)
    backend = engine.dialect.name
    failures, ran = [], 0
    # The driver's own cursor, as psql or sqlite3 would run it: no bind
    # parameters, so `:00` and `%` in the SQL mean what they say.
    connection = engine.raw_connection()
    try:
        for block in sql_blocks():
            sql, expected, dialect = parse_block(block)
            if dialect not in (None, backend):
                continue
            ran += 1
            cursor = connection.cursor()
            cursor.execute(sql)
            got = [[NOW if cell == today else cell for cell in map(as_text, row)] for row in cursor.fetchall()]
            cursor.close()
            if got != expected:
                failures.append(f"{sql}\n  README says: {expected}\n  {backend} returns: {got}")
    finally:
        connection.close()
        engine.dispose()
    assert ran >= 1
    assert not failures, "\n\n".join(failures)
