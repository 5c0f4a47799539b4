"""Shared fixtures.

Every test gets a private HOME (so ~/.lean/credentials and the default
database never touch the real ones) and an environment without leansync's
or QuantConnect's variables. ``database_url`` is parametrised over the
backends: each test that takes it runs on SQLite and on PostgreSQL.
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from leansync.cli import cli
from leansync.samples import read_tags, response, version_from_tag

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


@pytest.fixture(params=["sqlite"])
def database_url(request, tmp_path):
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    raise NotImplementedError(request.param)


@pytest.fixture(scope="session")
def tag_versions() -> list[dict]:
    """The 4,289 real LEAN tags as API version objects, newest id first."""
    tags = read_tags(DATA / "lean-tags.tsv")
    return [version_from_tag(t) for t in sorted(tags, key=lambda t: -int(t["id"]))]


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
