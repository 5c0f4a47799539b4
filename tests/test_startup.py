"""`leansync --help` and `--version` start fast: no SQLAlchemy, Alembic or requests.

Checked in a fresh interpreter with `python -X importtime`, which lists every
module the command imported.
"""

import subprocess
import sys

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
