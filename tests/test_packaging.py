"""The wheel ships the migrations, and works from a folder outside the checkout.

The wheel is built from a copy of the checkout, so the build's by-products
(build/, *.egg-info) never land in the shared working tree. It is built
offline, without build isolation: with this environment's setuptools, which
the `test` extra brings to the version pyproject.toml's [build-system] needs
(a fresh venv's bundled setuptools is older and has no bdist_wheel). pip
checks that version first, so a stale environment fails saying what is missing.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "lean-versions-read.json"
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".ci-venv",
                                     ".pytest_cache", "benchmarks", "*.db", "*.db-*", "*.db.lock")

pytestmark = pytest.mark.slow


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--check-build-dependencies",
          "--no-index", "-q", "-w", str(work / "dist")], cwd=source)
    [built] = (work / "dist").glob("leansync-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)])
    return site


def test_wheel_contains_the_package_and_every_migration(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "leansync/migrations/env.py",
        "leansync/migrations/script.py.mako",
        "leansync/migrations/versions/0001_initial.py",
    }
    expected |= {f"leansync/migrations/versions/{p.name}" for p in (REPO / "migrations" / "versions").glob("*.py")}
    expected |= {p.relative_to(REPO).as_posix() for p in (REPO / "leansync").rglob("*.py")}
    assert expected <= names, sorted(expected - names)
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "leansync = leansync.cli:main" in entry_points


def test_installed_wheel_syncs_from_a_folder_outside_the_checkout(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = elsewhere / "x.db"
    env = {**os.environ, "PYTHONPATH": str(installed)}

    def leansync(*args):
        return _run([sys.executable, "-c", "from leansync.cli import main; main()", *args], cwd=elsewhere, env=env)

    # The code (and so the migrations) come from the installed wheel, not from the checkout.
    where = _run([sys.executable, "-c", "import leansync.store.database as d; print(d.__file__); "
                  "print(d.alembic_config().get_main_option('script_location'))"], cwd=elsewhere, env=env)
    module_file, script_location = where.stdout.split()
    assert Path(module_file).is_relative_to(installed)
    assert Path(script_location).is_relative_to(installed)

    result = leansync("--database-url", f"sqlite:///{database}", "sync", "--from-file", str(EXAMPLE), "--json")
    assert '"inserted": 4289' in result.stdout
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM lean_version").fetchone() == (4289,)
    conn.close()
    current = leansync("--database-url", f"sqlite:///{database}", "db", "current")
    assert "(head)" in current.stdout
