"""Start-up loads only what the command needs.

`leansync --help` and `--version`: no SQLAlchemy, Alembic or requests. A no-op
`sync --from-file` on a database at head: no Alembic, requests or prometheus_client
(without --metrics-file), and on SQLite no PostgreSQL dialect or asyncio module of its own.

Checked in a fresh interpreter with `python -X importtime`, which lists every
module the command imported.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("sqlalchemy", "alembic", "requests", "urllib3", "psycopg")


def imported_modules(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "leansync", *args],
        capture_output=True, text=True, check=True,
    )
    # Lines look like: "import time:   123 |   456 |   package.module"
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("sync", "--help"), ("versions", "--help")])
def test_help_and_version_do_not_import_heavy_libraries(args):
    modules = imported_modules(*args)
    assert "leansync.cli" in modules  # the check sees leansync's own imports
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"`leansync {' '.join(args)}` imported {heavy[:5]}"


def test_the_check_can_fail():
    """A command that needs the database does import SQLAlchemy: the check sees it."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "leansync", "--database-url", "sqlite://", "db", "current"],
        capture_output=True, text=True,
    )
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "sqlalchemy" in modules


# --- a no-op sync loads only what the run needs --------------------------------------------------

# Never on a no-op `sync --from-file` of a database at head: migrations, HTTP, metrics.
NOT_ON_A_NOOP = ("alembic", "requests", "urllib3", "prometheus_client")
# Never on a SQLite run: the PostgreSQL dialect (whose package imports its asyncpg module) and drivers.
NOT_ON_SQLITE = ("sqlalchemy.dialects.postgresql", "asyncpg", "psycopg", "sqlalchemy.ext.asyncio")


def command_imports(*args: str) -> set[str]:
    """Every module the installed `leansync` command imports for ``args`` (PYTHONPROFILEIMPORTTIME)."""
    command = Path(sys.executable).with_name("leansync")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run([str(command), *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def python_imports(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            check=True)
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def named(modules: set[str], prefixes) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.fixture
def noop_sync(database_url, write_response, tag_versions):
    """argv of a no-op `sync --from-file` on a database at head (a first run made it so)."""
    argv = ["--database-url", database_url, "sync", "-q", "--from-file", write_response(tag_versions[:50])]
    first = command_imports(*argv)
    assert named(first, ["alembic"]), "the first run migrates, so it imports Alembic: the check sees it"
    return argv


def test_a_noop_sync_imports_only_what_it_needs(noop_sync, database_url):
    modules = command_imports(*noop_sync)
    assert "leansync.history.sync" in modules  # the check sees the run's own imports
    assert named(modules, NOT_ON_A_NOOP) == []
    if database_url.startswith("sqlite"):
        assert named(modules, NOT_ON_SQLITE) == []
        # SQLAlchemy itself imports asyncio (sqlalchemy.util.compat); the run adds no asyncio module to it.
        assert named(modules, ["asyncio"]) == named(python_imports("import sqlalchemy"), ["asyncio"])
    else:
        assert "sqlalchemy.dialects.postgresql.psycopg" in modules  # a PostgreSQL run loads its dialect


def test_the_noop_check_sees_metrics_and_postgresql(noop_sync, tmp_path):
    """Asked for metrics, the same run imports prometheus_client, and the check would say so."""
    modules = command_imports(*noop_sync, "--metrics-file", str(tmp_path / "leansync.prom"))
    assert named(modules, NOT_ON_A_NOOP) == ["prometheus_client"] + sorted(
        m for m in modules if m.startswith("prometheus_client."))
    # And the PostgreSQL dialect, once anything names it, is seen by the SQLite check.
    assert named(python_imports("import leansync.store.models, sqlalchemy.dialects.postgresql"),
                 NOT_ON_SQLITE)
