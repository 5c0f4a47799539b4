"""The sync is set-based: its number of SQL statements does not grow with N.

Counted with SQLAlchemy's before_cursor_execute event (an executemany counts
once, as one round of the driver) on real syncs of 10 and 2,000 versions, on
databases already at the newest schema. PostgreSQL's COPY goes to psycopg
directly, so this count leaves its (at most two) COPYs out;
tests/test_postgres.py counts them in the protocol trace.
"""

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event

from leansync.cli import cli
from samples import response

BATCHES = 4  # "at most a few batches": the allowed difference between N=10 and N=2,000


@pytest.fixture
def count_statements():
    executed: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _executemany):
        executed.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield executed
    event.remove(Engine, "before_cursor_execute", record)


def statements_per_run(run, write_response, executed, versions) -> list[int]:
    """Statements of: initial sync, no-op re-sync, 1% churn (changed, new, gone) re-sync.

    The database is migrated first: the migrations' statements are a fixed
    cost of the first run ever, not part of what a sync does per version.
    """
    assert run("db", "upgrade").exit_code == 0
    n = len(versions)
    k = max(1, n // 100)
    churned = [dict(v, description=v["description"] + " (rebuilt)") for v in versions[:k]]
    churned += versions[k:n - k]
    churned += [dict(versions[0], id=100_000 + i, leanHash=f"{i:040x}") for i in range(k)]
    counts = []
    for payload in (versions, versions, churned):
        path = write_response(document=response(payload))
        executed.clear()
        result = run("sync", "--from-file", path)
        assert result.exit_code == 0, result.output
        counts.append(len(executed))
    return counts


@pytest.fixture
def second_run(request, database_url, tmp_path):
    """Like the `run` fixture, on a second empty database of the same backend."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'second.db'}"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        name = cluster.create_database()
        request.addfinalizer(lambda: cluster.drop_database(name))
        url = cluster.url(name)

    def invoke(*args):
        return CliRunner().invoke(cli, ["--database-url", url, *map(str, args)], catch_exceptions=False)

    return invoke


def test_statement_count_does_not_grow_with_versions(run, second_run, write_response, count_statements,
                                                     tag_versions):
    small = statements_per_run(run, write_response, count_statements, tag_versions[:10])
    large = statements_per_run(second_run, write_response, count_statements, tag_versions[:2000])
    print(f"statements for 10 versions: {small}; for 2,000: {large}")
    for scenario, few, many in zip(("initial", "no-op", "churn"), small, large):
        assert many - few <= BATCHES, f"{scenario}: {few} statements for 10 versions, {many} for 2,000"
    # And it is a handful in absolute terms, not one per version.
    assert max(large) < 40, large


TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)
READS_LEAN_VERSION = re.compile(r"\bFROM lean_version\b")  # not lean_version_history
# What a run may execute before it reads the versions, besides the schema check.
NOT_THE_SCHEMA_CHECK = {
    "the run lock (PostgreSQL)": "pg_try_advisory_lock(",
    "the run clock": "SELECT max(sync_run.started_at)",
}


def test_schema_check_is_one_query_when_at_head(run, write_response, count_statements, tag_versions):
    """Every statement before the run's first read of lean_version is accounted
    for, and exactly one of them is the schema check: no inspection of tables."""
    path = write_response(tag_versions[:5])
    assert run("sync", "--from-file", path).exit_code == 0
    count_statements.clear()
    assert run("sync", "--from-file", path).exit_code == 0
    first_read = next((i for i, s in enumerate(count_statements) if READS_LEAN_VERSION.search(s)), None)
    assert first_read is not None, count_statements
    before = [s for s in count_statements[:first_read] if not TRANSACTION_CONTROL.match(s)]
    schema_check = [s for s in before if "alembic_version" in s]
    unexpected = [s for s in before if s not in schema_check
                  and not any(marker in s for marker in NOT_THE_SCHEMA_CHECK.values())]
    assert len(schema_check) == 1, schema_check
    assert unexpected == [], unexpected
