"""Readers need no write access (issue 15).

The SQLite database and its folder belong to the user who syncs (here root);
the reader is another user, `nobody`, who may read everything but write
nothing: the installed command runs under setpriv with only the capability
to read and search (CAP_DAC_READ_SEARCH, so it can reach this Python under
/root), never to write (root would bypass the permissions; chmod alone
proves nothing). On PostgreSQL the reader is a role with SELECT only, and
reads through the installed command too.

The owner's side runs in-process (click's CliRunner, as the owner: this
process): the syncs that build the history and what the owner sees, which
every reader's output must equal. The history is synced once per module and
copied, closed, into each test's folder.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from leansync.cli import cli
from qc_server import FakeQuantConnect

LEANSYNC = str(Path(sys.executable).with_name("leansync"))
EXAMPLE = Path(__file__).parent.parent / "examples" / "lean-versions-read.json"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]

READ_COMMANDS = [
    ["versions", "--limit", "5", "--format", "json"],
    ["versions", "--as-of", "1h", "--format", "json"],
    ["show", "17453", "--format", "json"],
    ["hashes", "--kind", "lean", "--format", "json"],
    ["changes", "--since", "3650d", "--format", "json"],
    ["runs", "--format", "json"],
    ["check", "--max-age", "1h"],
    ["metrics"],
    ["export"],
    ["db", "current"],
    ["sync", "--dry-run", "--json", "--from-file", str(EXAMPLE)],
]

needs_another_user = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                        reason="needs root and setpriv to run the reader as another user")


def leansync(url: str, *args: str, reader: bool) -> subprocess.CompletedProcess:
    command = [LEANSYNC, "--database-url", url, *args]
    return subprocess.run([*AS_NOBODY, *command] if reader else command, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "HOME": "/nonexistent"})


def owner_sees(url: str, *args: str, env: dict | None = None):
    """The owner's side, in-process (CliRunner, as this process's user), with the reader's HOME."""
    return CliRunner().invoke(cli, ["--database-url", url, *args], env={"HOME": "/nonexistent", **(env or {})},
                              catch_exceptions=False)


def folder_state(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_uid, p.stat().st_mode) for p in sorted(folder.iterdir())}


def comparable(command: list[str], stdout: str) -> str:
    """check's age moves between two runs; the rest must match what the owner sees."""
    return re.sub(r"sync \S+ ago|age=\d+s", "", stdout) if command[0] == "check" else stdout


@pytest.fixture(scope="module")
def synced_once(tmp_path_factory) -> Path:
    """The owner's history of the example (4,289 versions), synced once in-process; its folder (db and lock file)."""
    folder = tmp_path_factory.mktemp("synced-once")
    result = owner_sees(f"sqlite:///{folder / 'leansync.db'}", "sync", "-q", "--from-file", str(EXAMPLE))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["leansync.db", "leansync.db.lock"]  # closed: no -wal
    return folder


@pytest.fixture
def owned(isolated_env, synced_once) -> tuple[str, Path]:
    """A history synced by its owner, in a folder only the owner may write.

    Under /tmp, not pytest's private (0700) folder: SQLite checks with
    access(2), which ignores the reader's capability, that the -wal is there.
    """
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="leansync-owned-") as where:
        folder = Path(where)
        folder.chmod(0o755)
        for name in ("leansync.db", "leansync.db.lock"):
            shutil.copyfile(synced_once / name, folder / name)
            assert (folder / name).stat().st_mode == (synced_once / name).stat().st_mode  # as the sync made them
        url = f"sqlite:///{folder / 'leansync.db'}"
        yield url, folder


@needs_another_user
@pytest.mark.parametrize("mode", [0o644, 0o444], ids=["owner-writable", "nobody-writable"])
def test_every_read_command_works_for_a_user_who_may_not_write(owned, mode):
    """The realistic case: the writer has closed, so there is no -wal or -shm, and the reader may not create them."""
    url, folder = owned
    (folder / "leansync.db").chmod(mode)
    before = folder_state(folder)
    assert sorted(before) == ["leansync.db", "leansync.db.lock"]
    seen = {}
    for command in READ_COMMANDS:
        result = leansync(url, *command, reader=True)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert result.stderr == ""
        seen[command[0]] = result.stdout
        owner = owner_sees(url, *command)
        assert owner.exit_code == 0, f"{command}: {owner.stderr}"
        assert comparable(command, result.stdout) == comparable(command, owner.stdout), command
    assert len(json.loads(seen["export"])["versions"]) == 4289  # what the reader's export printed
    assert folder_state(folder) == before  # nothing written, created or left behind


@needs_another_user
def test_the_reader_really_may_not_write(owned):
    """The check can fail: as `nobody`, a sync cannot write the database."""
    url, folder = owned
    before = folder_state(folder)
    result = leansync(url, "sync", "--from-file", str(EXAMPLE), reader=True)
    assert result.returncode == 1
    assert "readonly" in result.stderr or "Permission denied" in result.stderr, result.stderr
    assert folder_state(folder) == before


@needs_another_user
def test_a_reader_sees_what_is_still_in_the_wal_files_it_may_not_write(owned, tag_versions):
    """A connection of the owner holds the WAL open, so the newest run is still in -wal, with -shm beside it."""
    url, folder = owned
    database = folder / "leansync.db"
    holder = sqlite3.connect(database)  # the owner's other connection: the next sync cannot checkpoint and remove the WAL
    try:
        holder.execute("SELECT count(*) FROM sync_run").fetchone()
        with FakeQuantConnect(versions=tag_versions[:10]) as qc:  # the owner's next sync, in-process
            result = owner_sees(url, "sync", "-q", "--allow-mass-removal", "--api-url", qc.url, env=qc.env())
        assert result.exit_code == 0, result.stderr
        wal = folder / "leansync.db-wal"
        assert wal.stat().st_size > 0 and (folder / "leansync.db-shm").exists()
        before = folder_state(folder)
        result = leansync(url, "runs", "--format", "json", reader=True)
        assert result.returncode == 0, result.stderr
        runs = json.loads(result.stdout)
        assert [r["status"] for r in runs] == ["success", "success"]
        listed = json.loads(leansync(url, "versions", "--format", "json", reader=True).stdout)
        assert len(listed) == 10
        check = leansync(url, "check", "--max-age", "1h", reader=True)
        assert check.returncode == 0 and "run 2 at" in check.stdout, check.stdout
        assert {name for name in folder_state(folder)} == set(before)
        assert folder_state(folder)["leansync.db"] == before["leansync.db"]
    finally:
        holder.close()


@pytest.mark.postgres_only
def test_every_read_command_works_with_a_select_only_role(database_url, postgres_cluster):
    import psycopg

    synced = owner_sees(database_url, "sync", "-q", "--from-file", str(EXAMPLE))
    assert synced.exit_code == 0, synced.stderr
    name = database_url.rsplit("/", 1)[1]
    role = f"reader_{name}"
    admin = psycopg.connect(host="127.0.0.1", port=postgres_cluster.port, user="postgres", dbname=name,
                            autocommit=True)
    try:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        reader_url = database_url.replace("postgres@", f"{role}@", 1)
        for command in READ_COMMANDS:
            result = leansync(reader_url, *command, reader=False)
            assert result.returncode == 0, f"{command}: {result.stderr}"
            owner = owner_sees(database_url, *command)
            assert owner.exit_code == 0, f"{command}: {owner.stderr}"
            shown = result.stdout.replace(f"{role}@", "postgres@")  # db current names the role
            assert comparable(command, shown) == comparable(command, owner.stdout), command
        # The check can fail: this role may not write (in-process: what matters is the role, not the process).
        refused = owner_sees(reader_url, "sync", "--from-file", str(EXAMPLE))
        assert refused.exit_code == 1 and "permission denied" in refused.stderr, refused.stderr
    finally:
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
