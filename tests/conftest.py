"""Shared fixtures.

Every test gets a private HOME (so ~/.lean/credentials and the default
database never touch the real ones) and an environment without leansync's
or QuantConnect's variables. ``database_url`` is parametrised over the
backends: each test that takes it runs on SQLite and on PostgreSQL.

The suite runs in parallel (pytest-xdist, see pyproject.toml's addopts):
each worker process has its own PostgreSQL cluster and runs its tests next
to another worker's. So a test takes its files from tmp_path (or
tmp_path_factory) and its ports from the system (bind to port 0), never a
fixed path or port.
"""

import copy
import gc
import json
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest
import urllib3.util.retry
from click.testing import CliRunner

from leansync.cli import cli
from samples import read_tags, response, version_from_tag
from pg_cluster import INSTALL_HINT, PostgresCluster, find_bindir

DATA = Path(__file__).parent / "data"
ENV_VARS = (
    "LEANSYNC_DATABASE_URL",
    "QUANTCONNECT_API_URL",
    "QUANTCONNECT_USER_ID",
    "QUANTCONNECT_API_TOKEN",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return home


def pytest_addoption(parser, pluginmanager):
    """Without pytest-xdist (`-p no:xdist`, or not installed) the suite runs in one process.

    pyproject.toml's addopts ask xdist for parallel workers; these stand-ins
    accept those options so that pytest does not refuse them.
    """
    if not pluginmanager.has_plugin("xdist"):
        for name in ("--numprocesses", "--dist"):
            parser.addoption(name, help="ignored: pytest-xdist is not loaded, the tests run in this process")


MAX_WORKERS = 4  # the longest tests take about a quarter of the suite's time; more workers buy little


@pytest.hookimpl(optionalhook=True, wrapper=True)
def pytest_xdist_auto_num_workers(config):
    """`-n logical`: a worker per CPU this process may run on (not the host's, in a container), at most MAX_WORKERS.

    PYTEST_XDIST_AUTO_NUM_WORKERS, when set, is taken as it is.
    """
    count = yield
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return count
    return max(1, min(count, len(os.sched_getaffinity(0)), MAX_WORKERS))


BACKENDS = ["sqlite", "postgresql"]
REQUIRE_POSTGRES = "LEANSYNC_REQUIRE_POSTGRES"


def _postgres_unavailable(reason: str):
    """Skip, or fail where PostgreSQL is required (CI sets LEANSYNC_REQUIRE_POSTGRES=1)."""
    if os.environ.get(REQUIRE_POSTGRES) == "1":
        pytest.fail(f"{reason} ({REQUIRE_POSTGRES}=1, so PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL server for the whole session, one per xdist worker (see tests/pg_cluster.py)."""
    bindir = find_bindir()
    if bindir is None:
        _postgres_unavailable(INSTALL_HINT)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _postgres_unavailable("psycopg is not installed; pip install '.[test]' (it pulls in leansync[postgres])")
    cluster = PostgresCluster(bindir)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_database(postgres_cluster):
    """The name of an empty database on the session's cluster, as CREATE DATABASE makes it.

    Afterwards it is emptied for a later test, or dropped if the test changed
    it beyond its public schema (PostgresCluster.give_back).
    """
    name = postgres_cluster.take_database()
    yield name
    leaked = _collect_leaked_connections()
    postgres_cluster.give_back(name)
    if leaked:
        pytest.fail(f"the test left {leaked} psycopg connection(s) open; dispose() engines it creates "
                    "(leansync's own engines use NullPool on PostgreSQL)", pytrace=False)


def pytest_collection_finish(session):
    """Leave what exists after collection (modules, test items) out of every later garbage collection.

    `postgres_database` runs a full collection after each test; without this
    each one walks the whole heap of imported libraries again.
    """
    gc.collect()
    gc.freeze()


FULL_COLLECTION_EVERY = 50  # tests; see _collect_leaked_connections
_collections_since_unfreeze = 0


def _collect_leaked_connections() -> int:
    """Collect garbage now, counting psycopg connections that were never closed.

    Otherwise their ResourceWarning surfaces (as an error) in whichever later
    test the garbage collector happens to run.
    """
    global _collections_since_unfreeze
    _collections_since_unfreeze += 1
    if _collections_since_unfreeze >= FULL_COLLECTION_EVERY:
        # Now and then the whole heap: frozen objects that died in reference cycles since are freed.
        _collections_since_unfreeze = 0
        gc.unfreeze()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    # What is still alive now is mostly session state (caches, session fixtures): frozen, as after collection,
    # the next test's collection walks only what that test made (4 ms instead of 40).
    gc.freeze()
    return sum("psycopg" in str(w.message) for w in caught if issubclass(w.category, ResourceWarning))


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, empty database on each backend.

    PostgreSQL URLs name the psycopg 3 driver explicitly
    (``postgresql+psycopg://postgres@127.0.0.1:PORT/test_N``), so tests may hand
    them to SQLAlchemy's create_engine as well as to leansync. The server's
    default zone is Asia/Kolkata (+05:30), not UTC: leansync's engines set
    their sessions to UTC, other connections do not, so in raw SQL give
    timestamp literals a zone (``'2026-03-01 00:00:00+00'``).
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.url(request.getfixturevalue("postgres_database"))


def pytest_collection_modifyitems(config, items):
    """`postgres_only` / `sqlite_only` tests run only with that backend's database_url.

    The other backend's variant is deselected rather than skipped: under
    LEANSYNC_REQUIRE_POSTGRES=1 a skip on PostgreSQL should mean a problem.
    """
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec else None
        if (item.get_closest_marker("postgres_only") and backend == "sqlite") or (
                item.get_closest_marker("sqlite_only") and backend == "postgresql"):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# Outcomes per backend, for the summary line that shows CI ran both. Under
# pytest-xdist the workers run the tests and the controller prints the
# summary: each report carries its backend (xdist sends a report's attributes
# along), and the controller counts the reports it receives.
_OUTCOMES: dict[str, Counter] = {name: Counter() for name in BACKENDS}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    callspec = getattr(item, "callspec", None)
    if callspec and "database_url" in callspec.params:
        report.database_backend = callspec.params["database_url"]
    return report


def pytest_report_header(config):
    bindir = find_bindir()
    required = " (required: LEANSYNC_REQUIRE_POSTGRES=1)" if os.environ.get(REQUIRE_POSTGRES) == "1" else ""
    where = f"server binaries in {bindir}" if bindir else "server binaries not found: PostgreSQL tests will skip"
    return f"leansync backends: sqlite, postgresql ({where}){required}"


def pytest_runtest_logreport(report):
    backend = getattr(report, "database_backend", None)
    if backend is None:
        return
    if report.failed:
        _OUTCOMES[backend]["failed" if report.when == "call" else "error"] += 1
    elif report.skipped:
        _OUTCOMES[backend]["skipped"] += 1
    elif report.when == "call":
        _OUTCOMES[backend]["passed"] += 1


def pytest_terminal_summary(terminalreporter):
    if not any(_OUTCOMES.values()):
        return
    parts = []
    for backend, counts in _OUTCOMES.items():
        done = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "not run"
        parts.append(f"{backend}: {done}")
    terminalreporter.write_line("database backends: " + "; ".join(parts))


@pytest.fixture(scope="session")
def _database_templates() -> dict:
    return {}


@pytest.fixture
def database_copy(request, database_url, _database_templates, tmp_path_factory):
    """``database_copy(key, build)``: the test's database becomes a copy of a template filled once.

    ``build(url, folder)`` fills an empty database at ``url`` (files it needs go in
    ``folder``) once per xdist worker, backend and ``key``; every test then gets
    a byte-for-byte copy (a file copy, or PostgreSQL's CREATE DATABASE ... TEMPLATE)
    and a deep copy of what ``build`` returned. For a history many tests read:
    copying it takes a fraction of the time building it did.
    """
    def make_copy(key: str, build):
        cluster = None if database_url.startswith("sqlite") else request.getfixturevalue("postgres_cluster")
        backend = "sqlite" if cluster is None else "postgresql"
        if (key, backend) not in _database_templates:
            folder = tmp_path_factory.mktemp(f"template-{key}-{backend}")
            template = f"sqlite:///{folder / 'template.db'}" if cluster is None else cluster.url(
                cluster.create_database())
            _database_templates[key, backend] = template, build(template, folder)
        template, built = _database_templates[key, backend]
        if cluster is None:
            source = Path(template.removeprefix("sqlite:///"))
            assert not source.with_name(source.name + "-wal").exists(), "the template's WAL was not checkpointed"
            shutil.copyfile(source, database_url.removeprefix("sqlite:///"))
        else:
            cluster.clone_database(template.rsplit("/", 1)[1], database_url.rsplit("/", 1)[1])
        return copy.deepcopy(built)

    return make_copy


@pytest.fixture
def sleeps(monkeypatch):
    """urllib3's waits between attempts, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", recorded.append)
    return recorded


@pytest.fixture(scope="session")
def tag_versions() -> list[dict]:
    """The 4,289 real LEAN tags as API version objects, newest id first."""
    tags = read_tags(DATA / "lean-tags.tsv")
    return [version_from_tag(t) for t in sorted(tags, key=lambda t: -int(t["id"]))]


@pytest.fixture
def ten(tag_versions):
    """The ten newest tags."""
    return tag_versions[:10]


@pytest.fixture
def synced(run, database_url, write_response, ten):
    """The test's database after a sync of ``ten``; its URL."""
    result = run("sync", "--from-file", write_response(ten))
    assert result.exit_code == 0, result.stderr
    return database_url


@pytest.fixture
def write_response(tmp_path):
    """Write a response document to a file and return its path."""
    counter = iter(range(10**6))

    def write(versions=None, *, document=None) -> Path:
        path = tmp_path / f"response-{next(counter)}.json"
        path.write_text(json.dumps(document if document is not None else response(versions)))
        return path

    return write


@pytest.fixture
def run(database_url):
    """Invoke the CLI in-process on the test's database: run("sync", "--from-file", p)."""

    def invoke(*args, input=None, env=None):
        runner = CliRunner()
        return runner.invoke(cli, ["--database-url", database_url, *map(str, args)], input=input, env=env,
                             catch_exceptions=False)

    return invoke
