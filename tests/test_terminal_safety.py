"""Text from the API is safe to print: tables, sync's summary, show, check and errors escape control characters.

A hostile or broken answer can carry escape sequences (retitle the
terminal, clear the screen), BEL, carriage returns, C1 controls (U+009B is
an 8-bit CSI) and newlines that forge lines in a cron mail. Human output
writes each as Python does in a string literal (``\\x1b``, ``\\n``); JSON and
CSV carry the exact value.
"""

import csv
import io
import json
import re

import pytest

from samples import response

OSC_TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title, ends with BEL
FORGED = "\nrun 999: 0 versions listed; forged line"
HOSTILE_DESCRIPTION = f"Release {OSC_TITLE}{FORGED}\rOK \x9b2J\x7f end"
HOSTILE_NAME = "v\x1b[31mred"
HOSTILE_HASH = "abc\x1b[2Jdef"  # a "hash" is any text to the API
HOSTILE_KEY = "note\x1b[0m"  # an other key, whose name shows in sync's summary and in changes
HOSTILE_ERROR = f"{OSC_TITLE}bad token{FORGED}\x9b"

# Raw controls that must never reach a terminal: C0 (bar the newline between lines), DEL, C1.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def assert_printable(text: str) -> None:
    assert not RAW_CONTROL.search(text), f"a raw control character reaches the terminal: {text!r}"
    for line in text.splitlines():
        assert not line.startswith("run 999"), f"a forged line: {text}"


def hostile(ten):
    versions = [dict(v) for v in ten]
    versions[0].update(description=HOSTILE_DESCRIPTION, name=HOSTILE_NAME, leanHash=HOSTILE_HASH)
    versions[0][HOSTILE_KEY] = "x\ny"
    return versions


@pytest.fixture
def hostile_history(run, write_response, ten):
    """A history whose newest version holds control characters, changed once, and a failed run."""
    versions = hostile(ten)
    first = run("sync", "--from-file", write_response(versions))
    assert first.exit_code == 0, first.stderr
    versions[0][HOSTILE_KEY] = f"{OSC_TITLE}changed"
    versions[0]["description"] = HOSTILE_DESCRIPTION + " 2"
    second = run("sync", "--from-file", write_response(versions))
    assert second.exit_code == 0, second.stderr
    failed = run("sync", "--from-file", "-",  # "stdin" keeps the error short enough for the runs table
                 input=json.dumps({"success": False, "errors": [HOSTILE_ERROR]}))
    assert failed.exit_code == 1
    return versions[0]["id"], first, second, failed


def test_syncs_summary_escapes_the_answers_text(hostile_history):
    version_id, first, second, failed = hostile_history
    for result in (first, second):
        assert_printable(result.stdout)
    assert "abc\\x1b[2Jdef" in first.stdout  # the new hash, escaped
    assert f"changed    {version_id} (description, note\\x1b[0m)" in second.stdout
    assert_printable(failed.stderr)
    assert failed.stderr.count("\n") == 1
    assert "\\x1b]0;pwned\\x07bad token\\nrun 999: 0 versions listed; forged line\\x9b" in failed.stderr


def test_every_table_escapes_the_answers_text(hostile_history, run):
    version_id, *_ = hostile_history
    outputs = {}
    for args in (["versions"], ["versions", "--all"], ["versions", "--as-of", "0s"], ["show", version_id],
                 ["hashes"], ["changes", "--since", "1h"], ["runs"]):
        result = run(*args)
        assert result.exit_code == 0, result.stderr
        assert_printable(result.stdout)
        outputs.setdefault(args[0], "")
        outputs[args[0]] += result.stdout
    assert "v\\x1b[31mred" in outputs["versions"]
    assert "Release \\x1b]0;pwned\\x07\\nrun 999" in outputs["versions"]  # shortened, still escaped
    assert "  name             v\\x1b[31mred" in outputs["show"]
    assert "\\rOK \\x9b2J\\x7f end" in outputs["show"]
    assert "note\\x1b[0m: x\\ny → \\x1b]0;pwned\\x07changed" in outputs["show"]
    assert "lean abc\\x1b[2Jdef" in outputs["changes"]
    assert "abc\\x1b[2Jdef" in outputs["hashes"]
    assert "from stdin: \\x1b]0;pwn…" in outputs["runs"]


def test_check_escapes_the_last_error(hostile_history, run):
    result = run("check", "--max-age", "1h")
    assert result.exit_code == 1  # WARNING: a run failed since the last success
    assert_printable(result.stdout)
    assert result.stdout.count("\n") == 1
    assert "last error: " in result.stdout and "\\x1b]0;pwned\\x07bad token" in result.stdout


def test_json_and_csv_carry_the_exact_text(hostile_history, run):
    version_id, *_ = hostile_history
    versions = json.loads(run("versions", "--format", "json").stdout)
    newest = next(v for v in versions if v["id"] == version_id)
    assert newest["description"] == HOSTILE_DESCRIPTION + " 2"
    assert newest["name"] == HOSTILE_NAME and newest["lean_hash"] == HOSTILE_HASH
    rows = list(csv.DictReader(io.StringIO(run("versions", "--format", "csv").stdout)))
    assert next(r for r in rows if r["id"] == str(version_id))["description"] == HOSTILE_DESCRIPTION + " 2"
    runs = json.loads(run("runs", "--format", "json").stdout)
    assert HOSTILE_ERROR in runs[0]["error"]
    states = json.loads(run("show", version_id, "--format", "json").stdout)
    assert states[-1]["changes"][HOSTILE_KEY] == {"old": "x\ny", "new": f"{OSC_TITLE}changed"}


def test_a_json_sync_carries_the_exact_text(run, write_response, ten):
    result = run("sync", "--json", "--dry-run", "--from-file", write_response(hostile(ten)))
    assert result.exit_code == 0, result.stderr
    assert {"action": "new_hash", "kind": "lean", "hash": HOSTILE_HASH,
            "first_version_id": ten[0]["id"]} in json.loads(result.stdout)["changes"]


def test_a_long_escaped_text_is_never_cut_inside_an_escape():
    from leansync.cli.render import shorten

    for position in range(50, 62):
        text = "x" * position + "\x1b" + "y" * 20
        short = shorten(text)
        assert short.endswith("…") and len(short) <= 60
        assert re.search(r"\\(x.?)?…$", short) is None, short  # no "\", "\x" or "\x1" before the ellipsis


def test_the_installed_command_prints_no_raw_control_character(database_url, write_response, ten):
    """End to end, as cron would mail it: the bytes on stdout and stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    leansync = Path(sys.executable).parent / "leansync"
    env = {**os.environ, "LEANSYNC_DATABASE_URL": database_url}
    outputs = []
    for args in (["sync", "--from-file", str(write_response(hostile(ten)))], ["versions", "--limit", "3"],
                 ["show", str(ten[0]["id"])], ["changes", "--since", "1h"]):
        result = subprocess.run([str(leansync), *args], env=env, capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.decode())
    for text in outputs:
        assert_printable(text)
    assert all("\\x1b" in text for text in outputs)
