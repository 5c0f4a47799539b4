"""One source for the column docs: docs/schema.md, the models' comments and PostgreSQL's agree.

Every table, view and column has a description: the `comment=` of its
model (leansync.store.models for tables, leansync.read.views for views), which
migration 0004 puts on PostgreSQL and `datasette-metadata` hands to Datasette.

The rule that relates them to docs/schema.md, word for word:
- a column's comment is the Meaning cell of its row in its section's table,
  with Markdown's backticks dropped and links reduced to their text (a row
  naming several columns gives each of them that cell);
- a column of lean_version_current that its section's table does not list
  has the comment of lean_version's column of that name, as the section says
  ("with the same types and meanings as in `lean_version`");
- a table's or view's comment is its heading's text after the colon, with a
  capital letter and a full stop: "## `lean_hash`: one row per distinct
  commit hash" gives "One row per distinct commit hash.".
"""

import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from leansync.store import database
from leansync.store.models import metadata
from leansync.read import views

SCHEMA = (Path(__file__).resolve().parent.parent / "docs" / "schema.md").read_text(encoding="utf-8")
HEADING = re.compile(r"^#{2,3} `(\w+)`: (.+)$", re.M)
ROW = re.compile(r"^\| (`[^|]+`) \| [^|]+ \| (.+) \|$", re.M)
LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
TABLES = [*metadata.sorted_tables, *views.sorted_tables]
COLUMNS = [(table, column) for table in TABLES for column in table.columns]


def plain(markdown: str) -> str:
    return LINK.sub(r"\1", markdown).replace("`", "")


def documented() -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """({table: description}, {(table, column): description}) as docs/schema.md writes them."""
    tables, columns = {}, {}
    headings = list(HEADING.finditer(SCHEMA))
    for heading, following in zip(headings, [*headings[1:], None]):
        name, tail = heading.groups()
        section = SCHEMA[heading.end():following.start() if following else len(SCHEMA)]
        section = re.split(r"^#", section, flags=re.M)[0]  # up to any heading
        tables[name] = plain(tail[0].upper() + tail[1:] + ".")
        for row in ROW.finditer(section):
            for column in re.findall(r"`(\w+)`", row.group(1)):
                columns[(name, column)] = plain(row.group(2))
    return tables, columns


DOC_TABLES, DOC_COLUMNS = documented()


def expected_comment(table: str, column: str) -> str | None:
    if (table, column) in DOC_COLUMNS:
        return DOC_COLUMNS[(table, column)]
    if table == "lean_version_current":
        return DOC_COLUMNS.get(("lean_version", column))
    return None


def test_the_rule_reads_every_table_of_the_schema_reference():
    assert set(DOC_TABLES) == {t.name for t in TABLES}
    assert {t for t, _ in DOC_COLUMNS} == {t.name for t in TABLES}


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_every_table_and_view_is_described_as_its_heading(table):
    assert table.comment == DOC_TABLES[table.name]


@pytest.mark.parametrize("table, column", COLUMNS, ids=[f"{t.name}.{c.name}" for t, c in COLUMNS])
def test_every_column_is_described_as_docs_schema_md_says(table, column):
    assert column.comment, f"{table.name}.{column.name} has no comment"
    assert column.comment == expected_comment(table.name, column.name)


def test_the_schema_reference_describes_no_column_that_does_not_exist():
    existing = {(t.name, c.name) for t, c in COLUMNS}
    assert set(DOC_COLUMNS) <= existing


def database_comments(url: str) -> tuple[dict[str, str | None], dict[tuple[str, str], str | None]]:
    """PostgreSQL's own descriptions of leansync's tables, views and their columns."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            relations = dict(conn.execute(text(
                "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v') "
                "AND c.relname <> 'alembic_version'")).all())
            columns = {(table, column): comment for table, column, comment in conn.execute(text(
                "SELECT c.relname, a.attname, col_description(c.oid, a.attnum) FROM pg_class c "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v') "
                "AND c.relname <> 'alembic_version'"))}
    finally:
        engine.dispose()
    return relations, columns


@pytest.mark.postgres_only
def test_postgresql_carries_the_same_descriptions(database_url, run):
    assert run("db", "upgrade", "-q").exit_code == 0
    relations, columns = database_comments(database_url)
    assert relations == {t.name: t.comment for t in TABLES}
    assert columns == {(t.name, c.name): c.comment for t, c in COLUMNS}


@pytest.mark.postgres_only
def test_downgrading_0004_takes_the_descriptions_off(database_url, run):
    assert run("db", "upgrade", "-q").exit_code == 0
    engine = database.make_engine(database_url)
    with engine.begin() as conn:
        database.downgrade(conn, "0003")
    engine.dispose()
    relations, columns = database_comments(database_url)
    assert set(relations.values()) == {None} and set(columns.values()) == {None}


@pytest.mark.sqlite_only
def test_on_sqlite_0004_changes_nothing(database_url):
    engine = database.make_engine(database_url, create=True)

    def schema():
        with engine.connect() as conn:
            return conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY name")).all()

    with engine.begin() as conn:
        database.upgrade(conn, "0003")
    before = schema()
    with engine.begin() as conn:
        database.upgrade(conn, "0004")
    assert schema() == before
    engine.dispose()
