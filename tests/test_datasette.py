"""`leansync datasette-metadata`, and a real Datasette server reading it.

The canned queries are the SQL cookbook's (docs/sql.md, run by
tests/test_readme_sql.py); a real `datasette` over a history built by real
syncs must answer each with the same rows as the matching CLI command.
"""

import json
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from freezegun import freeze_time

from leansync.outputs.datasette import CANNED_QUERIES
from leansync.store.models import metadata
from leansync.read import views
from samples import response
from test_readme_sql import DIALECTS, parse_block, sql_blocks

DATASETTE = Path(sys.executable).parent / "datasette"
T1 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
T2 = T1 + timedelta(days=1)
T3 = T2 + timedelta(days=1)
T4 = T3 + timedelta(hours=1)
RETAG = "c" * 40


def test_every_canned_query_is_in_the_sql_cookbook():
    """Verbatim, with its example literals for the parameters; the cookbook may add a LIMIT to keep its
    result short, and marks a SQLite form (which has a PostgreSQL twin) with `-- SQLite`."""
    cookbook = [parse_block(block) for block in sql_blocks()]
    markers = {dialect: marker for marker, dialect in DIALECTS.items()}
    for query in CANNED_QUERIES:
        text = query.with_literals()
        if query.dialect is not None:
            text = f"{markers[query.dialect]}\n{text}"
        found = [(sql, dialect) for sql, _, dialect in cookbook
                 if re.fullmatch(re.escape(text) + r"(\nLIMIT \d+)?;", sql)]
        assert found, f"docs/sql.md has no block with the canned query {query.name}:\n{text}"
        assert found[0][1] == query.dialect
        assert set(re.findall(r":(\w+)", query.sql)) == set(query.example), query.name


def leansync(*args):
    from click.testing import CliRunner

    from leansync.cli import cli

    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_the_metadata_is_keyed_by_the_files_stem(tmp_path):
    result = leansync("--database-url", f"sqlite:///{tmp_path / 'leansync.db'}", "datasette-metadata")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document["databases"]) == ["leansync"]
    assert "QuantConnect" in document["source"]
    database = document["databases"]["leansync"]
    assert set(database["tables"]) == {"lean_version", "lean_version_history", "lean_hash", "sync_run", "notification",
                                       "lean_version_current", "lean_version_event"}
    assert {name: q["sql"] for name, q in database["queries"].items()} == {q.name: q.sql for q in CANNED_QUERIES}
    for table in [*metadata.sorted_tables, *views.sorted_tables]:  # the schema's comments (tests/test_comments.py)
        assert database["tables"][table.name] == {
            "description": table.comment, "columns": {c.name: c.comment for c in table.columns}}
    for query in CANNED_QUERIES:
        if "when" in query.example or "since" in query.example:
            assert "YYYY-MM-DD HH:MM:SS.ffffff+00" in database["queries"][query.name]["description"]
    assert not (tmp_path / "leansync.db").exists()  # it reads nothing, creates nothing


def test_a_postgresql_database_is_refused_in_one_sentence():
    result = leansync("--database-url", "postgresql://leansync@db.example.com/leansync", "datasette-metadata")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "SQLite" in result.stderr


# --- a real Datasette server -----------------------------------------------------

@pytest.fixture
def history(tmp_path, write_response, tag_versions):
    """leansync.db from real syncs: T1 lists 12 versions; T2 retags one, drops one, adds one;
    T3 brings the dropped one back and makes one private; T4 fails."""
    url = f"sqlite:///{tmp_path / 'leansync.db'}"
    first = [dict(v) for v in tag_versions[1:13]]
    second = [dict(v) for v in tag_versions[0:13] if v["id"] != first[4]["id"]]
    second[2]["leanHash"] = RETAG
    third = [dict(v) for v in tag_versions[0:13]]
    third[3]["leanHash"], third[6]["public"] = RETAG, False
    bad = {"success": False, "errors": ["the API said no"]}

    def run(*args):
        return leansync("--database-url", url, *args)

    for moment, document, code in ((T1, response(first), 0), (T2, response(second), 0),
                                   (T3, response(third), 0), (T4, bad, 1)):
        with freeze_time(moment):
            assert run("sync", "-q", "--from-file", write_response(document=document)).exit_code == code
    return url, run, first[4]["id"], second[2]["id"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def datasette(history, tmp_path):
    url, run, *_ = history
    metadata = tmp_path / "metadata.json"
    metadata.write_text(run("datasette-metadata").stdout)
    port = free_port()
    server = subprocess.Popen([DATASETTE, "serve", str(tmp_path / "leansync.db"), "--metadata", str(metadata),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"datasette exited: {server.stderr.read().decode()}"
            try:
                requests.get(f"{base}/-/versions.json", timeout=2).raise_for_status()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "datasette did not start within 30 s"
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stderr.close()


def moment(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def normalised(value):
    """Timestamps as datetimes: the CLI's JSON writes ISO-8601 with Z, Datasette SQLite's stored text.
    (Booleans need nothing: true == 1 in Python.)"""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?", value):
        parsed = datetime.fromisoformat(value.removesuffix("Z"))
        return parsed.replace(tzinfo=timezone.utc)
    return value


def canned(base: str, name: str, **params) -> list[dict]:
    response = requests.get(f"{base}/leansync/{name}.json", params={**params, "_shape": "array"}, timeout=30)
    response.raise_for_status()
    return response.json()


def same_rows(from_datasette: list[dict], from_cli: list[dict]) -> None:
    assert from_datasette, "the query found nothing: a weak comparison"
    columns = list(from_datasette[0])
    assert len(from_datasette) == len(from_cli) and set(columns) <= set(from_cli[0])
    assert [{c: normalised(row[c]) for c in columns} for row in from_datasette] == \
           [{c: normalised(row[c]) for c in columns} for row in from_cli]


def test_every_canned_query_answers_as_the_cli_does(datasette, history):
    _, run, removed_id, retagged_id = history

    def cli(*args):
        result = run(*args, "--format", "json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    same_rows(canned(datasette, "versions_as_of", when=moment(T2)), cli("versions", "--as-of", T2.isoformat()))
    # since inclusive, until exclusive, exactly at the runs' moments
    same_rows(canned(datasette, "changes_between", since=moment(T2), until=moment(T3)),
              cli("changes", "--since", T2.isoformat(), "--until", T3.isoformat()))
    same_rows(canned(datasette, "changes_between", since=moment(T1), until=moment(T4)),
              cli("changes", "--since", T1.isoformat(), "--until", T4.isoformat()))
    for version_id in (removed_id, retagged_id):
        same_rows(canned(datasette, "version_story", version_id=str(version_id)), cli("show", str(version_id)))
    same_rows(canned(datasette, "hashes_since", since=moment(T2)), cli("hashes", "--since", T2.isoformat()))
    runs = canned(datasette, "recent_runs")
    same_rows(runs, cli("runs"))
    assert [r["status"] for r in runs] == ["failed", "success", "success", "success"]
    assert runs[0]["error"]


def test_the_pages_show_the_schemas_descriptions(datasette):
    from html import unescape

    from leansync.store.models import lean_version_history
    from leansync.read import lean_version_event

    for table, column in ((lean_version_history, "changed_fields"), (lean_version_event, "event_time")):
        page = requests.get(f"{datasette}/leansync/{table.name}", timeout=30)
        page.raise_for_status()
        shown = unescape(page.text)
        assert table.comment in shown
        assert f"<dd>{table.c[column].comment}</dd>" in shown, f"{table.name}.{column}"
