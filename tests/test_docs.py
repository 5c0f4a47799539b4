"""The documentation keeps up with the code (after simonw/sqlite-utils' tests/test_docs.py).

Every command has a help text with a one-line summary and an example, and is
named in README.md; every column of the schema is in docs/schema.md; the
docs build as a site (Sphinx, MyST, Furo) without a warning.
"""

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from leansync.cli import cli
from leansync.store.models import metadata

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SCHEMA = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")


def walk(group: click.Group, path: tuple[str, ...] = ()):
    yield path, group
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            if not command.hidden:
                yield from walk(command, (*path, name))


COMMANDS = list(walk(cli))
SUBCOMMANDS = [(path, command) for path, command in COMMANDS if path]


def ids(entries):
    return [" ".join(path) or "leansync" for path, _ in entries]


def rendered_help(path) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_there_are_commands_to_check():
    assert {("sync",), ("db",), ("db", "upgrade"), ("db", "current")} <= {path for path, _ in COMMANDS}


@pytest.mark.parametrize("path, command", COMMANDS, ids=ids(COMMANDS))
def test_help_starts_with_a_one_line_summary(path, command):
    assert command.help, f"`leansync {' '.join(path)}` has no help text"
    lines = command.help.strip().splitlines()
    summary = lines[0].strip()
    assert summary.endswith("."), f"the summary {summary!r} is not a sentence"
    assert len(lines) == 1 or not lines[1].strip(), "the summary runs over more than one line"


@pytest.mark.parametrize("path, command", COMMANDS, ids=ids(COMMANDS))
def test_help_has_an_example_of_the_command(path, command):
    text = rendered_help(path)
    match = re.search(r"^ *Examples?:\n((?: {2,}\S.*\n)+)", text, re.M)
    assert match, f"`leansync {' '.join(path)} --help` has no Example section:\n{text}"
    examples = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    words = " ".join(path)
    assert any(line.startswith("leansync") and f" {words}" in f" {line} " for line in examples), (
        f"no example runs `leansync {words}`: {examples}")


@pytest.mark.parametrize("path, command", COMMANDS, ids=ids(COMMANDS))
def test_every_option_has_help(path, command):
    undocumented = [param.opts[0] for param in command.params
                    if isinstance(param, click.Option) and not param.hidden and not param.help]
    assert undocumented == []


@pytest.mark.parametrize("path, command", SUBCOMMANDS, ids=ids(SUBCOMMANDS))
def test_command_is_named_in_the_readme(path, command):
    mention = f"`leansync {' '.join(path)}"
    found = re.search(re.escape(mention) + r"[` ]", README) is not None
    assert found, f"README.md does not mention {mention}`"


COLUMNS = [(table.name, column.name) for table in metadata.sorted_tables for column in table.columns]


@pytest.mark.parametrize("table, column", COLUMNS, ids=[f"{t}.{c}" for t, c in COLUMNS])
def test_every_column_is_in_the_schema_reference(table, column):
    match = re.search(rf"^## `{table}`.*?\n(.*?)(?=^#|\Z)", SCHEMA, re.S | re.M)
    assert match, f"docs/schema.md has no '## `{table}`' section"
    assert f"`{column}`" in match.group(1), f"docs/schema.md does not document {table}.{column}"


def test_the_docs_build_as_a_site_without_warnings(tmp_path):
    """`sphinx-build -W`: a broken link, a page missing from the toctree or a bad block fails."""
    result = subprocess.run([str(Path(sys.executable).parent / "sphinx-build"), "-W", "-q", "-b", "html",
                             str(ROOT / "docs"), str(tmp_path / "html")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    pages = {path.stem for path in (ROOT / "docs").glob("*.md")}
    assert pages <= {path.stem for path in (tmp_path / "html").glob("*.html")}
    index = (tmp_path / "html" / "index.html").read_text(encoding="utf-8")
    assert "Quick start" in index and 'href="history.html#backfill-saved-responses"' in index  # the README, linked


def test_the_exit_code_table_covers_every_command():
    table = re.search(r"^### Exit codes\n\n(.*?)\n\n", README, re.S | re.M).group(1)
    first_cells = [line.split("|")[1] for line in table.splitlines()[2:]]
    named = {name.removesuffix(" ID") for cell in first_cells for name in re.findall(r"`([a-z -]+(?: ID)?)`", cell)}
    leaves = {" ".join(path) for path, command in SUBCOMMANDS if not isinstance(command, click.Group)}
    assert leaves == named
