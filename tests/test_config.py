"""Configuration through the CLI: credentials, the API URL, the default database.

Requests go to a real local server (tests/qc_server.py) that checks the
credentials the way QuantConnect does, so "these credentials were used"
means the server accepted a signature made with them.
"""

import base64
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from leansync.cli import cli
from qc_server import FakeQuantConnect

FILE_USER, FILE_TOKEN = "777001", "file-token-5d0c2a"
ENV_USER, ENV_TOKEN = "888002", "env-token-91b3ee"


@pytest.fixture
def qc(tag_versions):
    with FakeQuantConnect(versions=tag_versions[:3]) as server:
        yield server


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'config.db'}"


@pytest.fixture
def leansync(db):
    """Run the CLI in-process on a SQLite database in tmp_path."""

    def invoke(*args, database_url=db):
        prefix = ["--database-url", database_url] if database_url else []
        return CliRunner().invoke(cli, [*prefix, *map(str, args)], catch_exceptions=False)

    return invoke


def write_lean_credentials(home: Path, *, user_id=FILE_USER, token=FILE_TOKEN, text=None) -> Path:
    path = home / ".lean" / "credentials"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps({"user-id": user_id, "api-token": token}))
    path.chmod(0o600)  # as a careful user has it: no permission warning in these tests
    return path


def user_id_sent(request) -> str:
    basic = request.headers["Authorization"].removeprefix("Basic ")
    return base64.b64decode(basic).decode().partition(":")[0]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_accepted(result, qc):
    assert result.exit_code == 0, result.output
    assert qc.problems == []
    assert qc.count == 1


# -- where the credentials come from ---------------------------------------------

def test_credentials_from_the_environment(qc, leansync, monkeypatch, isolated_env):
    qc.user_id, qc.token = ENV_USER, ENV_TOKEN
    monkeypatch.setenv("QUANTCONNECT_USER_ID", ENV_USER)
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", ENV_TOKEN)
    result = leansync("sync", "--api-url", qc.url)
    assert_accepted(result, qc)
    assert user_id_sent(qc.requests[0]) == ENV_USER
    assert ENV_TOKEN not in result.output


def test_credentials_from_the_lean_cli_file(qc, leansync, isolated_env):
    qc.user_id, qc.token = FILE_USER, FILE_TOKEN
    write_lean_credentials(isolated_env)
    result = leansync("sync", "--api-url", qc.url)
    assert_accepted(result, qc)
    assert user_id_sent(qc.requests[0]) == FILE_USER
    assert FILE_TOKEN not in result.output


def test_the_environment_comes_before_the_file(qc, leansync, monkeypatch, isolated_env):
    qc.user_id, qc.token = ENV_USER, ENV_TOKEN
    write_lean_credentials(isolated_env)  # valid-looking, but not what this server accepts
    monkeypatch.setenv("QUANTCONNECT_USER_ID", ENV_USER)
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", ENV_TOKEN)
    assert_accepted(leansync("sync", "--api-url", qc.url), qc)


def test_a_rejection_names_the_source_that_was_used(qc, leansync, monkeypatch, isolated_env):
    """The file is right, the environment wrong: the environment wins, and says so."""
    qc.user_id, qc.token = FILE_USER, FILE_TOKEN
    write_lean_credentials(isolated_env)
    monkeypatch.setenv("QUANTCONNECT_USER_ID", FILE_USER)
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", ENV_TOKEN)
    result = leansync("sync", "--api-url", qc.url)
    assert result.exit_code == 1
    assert "rejected" in result.stderr
    assert "QUANTCONNECT_API_TOKEN" in result.stderr  # the source, not the value
    assert ENV_TOKEN not in result.output


@pytest.mark.parametrize("source", ["env", "file"])
def test_user_id_option_overrides(qc, leansync, monkeypatch, isolated_env, source):
    qc.user_id = "555003"
    if source == "env":
        qc.token = ENV_TOKEN
        monkeypatch.setenv("QUANTCONNECT_USER_ID", ENV_USER)
        monkeypatch.setenv("QUANTCONNECT_API_TOKEN", ENV_TOKEN)
    else:
        qc.token = FILE_TOKEN
        write_lean_credentials(isolated_env)
    result = leansync("sync", "--api-url", qc.url, "--user-id", "555003")
    assert_accepted(result, qc)
    assert user_id_sent(qc.requests[0]) == "555003"


@pytest.mark.parametrize("option", ["--api-token", "--token"])
def test_there_is_no_option_for_the_token(qc, leansync, option):
    result = leansync("sync", "--api-url", qc.url, "--user-id", "1", option, "secret-on-the-command-line")
    assert result.exit_code == 2
    assert "No such option" in result.output
    assert qc.count == 0
    help_text = leansync("sync", "--help").output
    assert "--api-token" not in help_text and "--token" not in help_text


# -- missing or broken credentials: exit 2, nothing sent ------------------------------

def test_missing_credentials_name_both_ways_and_send_nothing(qc, leansync, db, tmp_path):
    result = leansync("sync", "--api-url", qc.url)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("leansync: error: ") and "\n" not in message
    assert "QUANTCONNECT_USER_ID" in message and "QUANTCONNECT_API_TOKEN" in message
    assert "~/.lean/credentials" in message and "lean login" in message
    assert qc.count == 0
    assert not (tmp_path / "config.db").exists()


def test_missing_credentials_with_the_default_api_url_send_nothing(leansync, tmp_path):
    """Not even to QuantConnect: the check comes before any network use."""
    result = leansync("sync", "--retries", "0", "--timeout", "0.5")
    assert result.exit_code == 2
    assert "QUANTCONNECT_API_TOKEN" in result.stderr
    assert not (tmp_path / "config.db").exists()


def test_a_token_without_a_user_id_is_a_configuration_error(qc, leansync, monkeypatch):
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", ENV_TOKEN)
    result = leansync("sync", "--api-url", qc.url)
    assert result.exit_code == 2
    assert "QUANTCONNECT_USER_ID" in result.stderr
    assert ENV_TOKEN not in result.output
    assert qc.count == 0


@pytest.mark.parametrize("text, expected", [
    ('{"user-id": "1", "api-token": "tok-in-broken-json"', "not valid JSON"),
    ('{"user-id": "1"}', '"api-token"'),
    ('["tok-in-a-list"]', '"api-token"'),
])
def test_a_broken_credentials_file_is_named_and_not_echoed(qc, leansync, isolated_env, text, expected):
    path = write_lean_credentials(isolated_env, text=text)
    result = leansync("sync", "--api-url", qc.url)
    assert result.exit_code == 2
    assert str(path) in result.stderr and expected in result.stderr
    assert "tok-in" not in result.output
    assert "Traceback" not in result.output
    assert qc.count == 0


# -- the API URL --------------------------------------------------------------------

@pytest.mark.parametrize("trailing_slash", [True, False], ids=["with-slash", "without-slash"])
def test_api_url_with_or_without_trailing_slash(qc, leansync, monkeypatch, trailing_slash):
    monkeypatch.setenv("QUANTCONNECT_USER_ID", qc.user_id)
    monkeypatch.setenv("QUANTCONNECT_API_TOKEN", qc.token)
    base = qc.url if trailing_slash else qc.url.rstrip("/")
    assert_accepted(leansync("sync", "--api-url", base), qc)
    assert qc.requests[0].path == "/api/v2/lean/versions/read"
    assert qc.requests[0].method == "POST"


def test_api_url_from_the_environment(qc, leansync, monkeypatch):
    for name, value in qc.env().items():
        monkeypatch.setenv(name, value)
    result = leansync("sync", "--json")
    assert_accepted(result, qc)
    assert json.loads(result.stdout)["versions_seen"] == 3


def test_api_url_option_overrides_the_environment(qc, leansync, monkeypatch):
    for name, value in qc.env(QUANTCONNECT_API_URL=f"http://127.0.0.1:{closed_port()}/api/v2/").items():
        monkeypatch.setenv(name, value)
    assert_accepted(leansync("sync", "--api-url", qc.url, "--retries", "0"), qc)


def test_the_sync_run_records_the_endpoint_not_the_credentials(qc, leansync, monkeypatch, db):
    from sqlalchemy import create_engine, text

    for name, value in qc.env().items():
        monkeypatch.setenv(name, value)
    assert_accepted(leansync("sync"), qc)
    engine = create_engine(db)
    with engine.connect() as conn:
        source = conn.execute(text("SELECT source FROM sync_run")).scalar_one()
    engine.dispose()
    assert source == qc.url + "lean/versions/read"


# -- the database URL ------------------------------------------------------------------

def default_db_path(home: Path) -> Path:
    # conftest sets XDG_DATA_HOME=$HOME/.local/share; platformdirs honours it on Linux.
    return home / ".local" / "share" / "leansync" / "leansync.db"


def test_default_database_is_leansync_db_in_the_user_data_dir(leansync, isolated_env):
    expected = default_db_path(isolated_env)
    before = leansync("db", "current", database_url=None)
    assert before.stdout.splitlines()[0] == f"sqlite:///{expected}"
    assert before.exit_code == 2 and str(expected) in before.stderr  # a read: nothing created
    assert not expected.exists()

    sync = leansync("sync", "--from-file", Path(__file__).parent.parent / "examples" / "lean-versions-read.json",
                    "-q", database_url=None)
    assert sync.exit_code == 0, sync.output
    assert expected.exists()
    after = leansync("db", "current", database_url=None)
    assert after.exit_code == 0
    assert after.stdout.splitlines() == [f"sqlite:///{expected}", after.stdout.splitlines()[1]]
    assert "(head)" in after.stdout


def test_database_url_from_the_environment_and_the_option_wins(leansync, monkeypatch, tmp_path, isolated_env):
    env_db, option_db = tmp_path / "env.db", tmp_path / "option.db"
    monkeypatch.setenv("LEANSYNC_DATABASE_URL", f"sqlite:///{env_db}")
    assert leansync("db", "upgrade", database_url=None).exit_code == 0
    assert env_db.exists()
    assert leansync("db", "current", database_url=None).stdout.splitlines()[0] == f"sqlite:///{env_db}"
    assert leansync("db", "upgrade", database_url=f"sqlite:///{option_db}").exit_code == 0
    assert option_db.exists()
    assert not default_db_path(isolated_env).exists()
