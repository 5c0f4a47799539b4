"""The README works as written, tried as a new user would (after the quick start).

Every ```sh block of README.md runs, command by command, with the installed
`leansync` in a subprocess, against the database the quick start made from
the shipped sample; each must exit 0 and print something (or fill the file
it redirects to). The blocks that cannot run here (they install packages,
run the suite or serve until stopped) carry an HTML comment
`<!-- not run by tests/test_readme_commands.py: why -->`, and NOT_RUN below
lists them by their first line, so nothing is skipped silently. The same
holds for the ```python blocks of docs/python.md (the Python API), which run
from the clone's folder. ```cron, ```text and other blocks are not shell
commands a user types.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PYTHON_DOC = ROOT / "docs" / "python.md"
BIN = Path(sys.executable).parent
MARK = "not run by tests/test_readme_commands.py:"
BLOCK = re.compile(rf"(?:^<!-- ({re.escape(MARK)}[^>]*) -->\n)?^```(\w+)\n(.*?)^```", re.M | re.S)

NOT_RUN = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && leansync sync --from-file "
    "examples/lean-versions-read.json": "the quick start itself (test_the_quick_start_says_where_and_what_next)",
    "python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' && pytest": "runs the suite",
    "pip install '.[datasette]'": "installs packages (the test extra has Datasette)",
    'datasette "$(leansync db path)" --metadata <(leansync datasette-metadata)':
        "serves until stopped (test_the_datasette_command_works_from_any_folder runs it with --get)",
    "pip install '.[docs]' && sphinx-build -W -b html docs docs/_build/html":
        "installs packages (tests/test_docs.py builds the site)",
    "# Slack (an incoming webhook's three tokens) and email through your SMTP server":
        "needs real notification targets (tests/test_notify.py sends to local ones)",
    "import pendulum": "needs Airflow and a PostgreSQL server",
    "import dagster as dg": "needs Dagster and a PostgreSQL server",
}


def blocks(path: Path, language: str) -> list[tuple[str | None, str]]:
    """(the not-run comment or None, the block's text) for each block in ``language``."""
    return [(mark, text) for mark, lang, text in BLOCK.findall(path.read_text(encoding="utf-8")) if lang == language]


def runnable(path: Path, language: str) -> list[str]:
    return [text for mark, text in blocks(path, language) if not mark]


def test_the_blocks_not_run_are_exactly_the_listed_ones():
    marked = {text.strip().splitlines()[0] for path, lang in ((README, "sh"), (PYTHON_DOC, "python"))
              for mark, text in blocks(path, lang) if mark}
    assert marked == set(NOT_RUN)
    assert len(runnable(README, "sh")) >= 3 and len(runnable(PYTHON_DOC, "python")) >= 1


def commands(block: str) -> list[str]:
    """One command per line; a trailing `# comment` is the README's, not the shell's business."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def shell_env(isolated_env):
    """The environment of a new user: the installed leansync on PATH, a fresh HOME (conftest)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture
def quick_start(shell_env):
    """The quick start's sync, from the clone, with the installed command: its output."""
    block = next(text for mark, text in blocks(README, "sh") if mark and "examples/lean-versions-read.json" in text)
    sync = block.strip().split(" && ")[-1]
    assert sync == "leansync sync --from-file examples/lean-versions-read.json"
    result = subprocess.run(shlex.split(sync), cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def elsewhere(tmp_path):
    """A folder other than the clone, where the sample is at examples/ as in the README."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    return folder


def shell(command: str, *, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_quick_start_says_where_and_what_next(quick_start, shell_env, elsewhere):
    lines = quick_start.splitlines()
    assert lines[0] == ("run 1: 4289 versions listed; 4289 new, 0 changed, 0 removed, 0 restored, 0 unchanged; "
                        "4872 new hashes")
    shown = [line for line in lines[1:] if line.startswith("  new        ")]
    more = re.fullmatch(r"  \.\.\. and (\d+) more version changes and (\d+) more new hashes; to list them all: (.+)",
                        lines[len(shown) + 1])
    assert more, lines[len(shown) + 1]
    assert len(shown) + int(more.group(1)) == 4289 and int(more.group(2)) == 4872  # they add up to the head
    database = lines[len(shown) + 2].removeprefix("database: ")
    path = shell("leansync db path", cwd=elsewhere, env=shell_env)
    assert path.returncode == 0 and path.stdout.strip() == database
    assert Path(database).is_file()
    assert lines[len(shown) + 3] == "try next:"
    suggestions = [line.strip() for line in lines[len(shown) + 4:]]
    assert suggestions == ["leansync versions --limit 5", "leansync show 18024", more.group(3)]
    for command in suggestions:  # each works when pasted, from any folder
        result = shell(command, cwd=elsewhere, env=shell_env)
        assert result.returncode == 0 and result.stdout.strip(), (command, result.stderr)
    events = shell(f"{more.group(3)} --format json", cwd=elsewhere, env=shell_env)
    assert len(json.loads(events.stdout)) == 4289 + 4872  # every change of the run, as the line says


def test_every_readme_command_runs_after_the_quick_start(quick_start, shell_env, elsewhere):
    failures, ran = [], 0
    for block in runnable(README, "sh"):
        for command in commands(block):
            ran += 1
            result = shell(command, cwd=elsewhere, env=shell_env)
            redirect = re.search(r" (?:>|--output) (\S+)", command)  # the answer is that file
            printed = (elsewhere / redirect.group(1)).read_text() if redirect else result.stdout
            if result.returncode != 0 or not printed.strip():
                failures.append(f"$ {command}\nexit {result.returncode}\n{result.stdout[-500:]}{result.stderr}")
    assert ran >= 10
    assert not failures, "\n\n".join(failures)
    # The --as-of and --since examples answer on the history they backfilled a week into the past.
    demo = next(b for b in runnable(README, "sh") if "--observed-at 7d" in b)
    as_of = next(c for c in commands(demo) if "--as-of 3d" in c).split("#")[0]
    assert len(json.loads(shell(f"{as_of} --format json", cwd=elsewhere, env=shell_env).stdout)) == 3
    week = json.loads((elsewhere / "week.json").read_text())
    assert len(week) == 4289 + 4872 and {event["event"] for event in week} == {"new_version", "new_hash"}
    empty = next(c for c in commands(demo) if "--as-of 8d" in c).split("#")[0]
    assert json.loads(shell(f"{empty} --format json", cwd=elsewhere, env=shell_env).stdout) == []


def test_the_datasette_command_works_from_any_folder(quick_start, shell_env, elsewhere):
    [(_, block)] = [(mark, text) for mark, text in blocks(README, "sh") if mark and text.startswith("datasette")]
    query = "/leansync/lean_version.json?_shape=array&_size=2&_sort_desc=id"
    result = shell(f"{block.strip()} --get '{query}'", cwd=elsewhere, env=shell_env)
    assert result.returncode == 0, result.stderr
    assert [row["id"] for row in json.loads(result.stdout)] == [18024, 18022]


def test_sync_json_on_failure_is_as_the_readme_says(shell_env, elsewhere):
    """One object on stdout, also for a configuration error (no credentials here); none for a bad command line."""
    failed = shell("leansync sync --json", cwd=elsewhere, env=shell_env)
    assert failed.returncode == 2
    document = json.loads(failed.stdout)
    assert document == {"status": "failed", "run_id": None,
                        "error": failed.stderr.strip().removeprefix("leansync: error: ")}
    unparsable = shell("leansync sync --json --timeout soon", cwd=elsewhere, env=shell_env)
    assert unparsable.returncode == 2 and unparsable.stdout == "" and "soon" in unparsable.stderr


def python_example() -> str:
    [example] = runnable(PYTHON_DOC, "python")
    return example


def test_the_python_example_runs_from_the_clone(quick_start, shell_env):
    result = subprocess.run([sys.executable, "-c", python_example()], cwd=ROOT, env=shell_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    counts = "{'versions_seen': 4289, 'inserted': 0, 'updated': 0, 'unchanged': 4289, 'removed': 0, " \
             "'restored': 0, 'new_hashes': 0}"
    first = result.stdout.splitlines()[0]
    assert first.startswith("2 ") and first.endswith(counts), first
    assert result.stdout.splitlines()[1] == "4289 versions listed now"


def test_the_python_example_migrates_a_new_database_from_the_clone(shell_env, tmp_path):
    """The checkout's leansync/ shadows the installed package, which alone has leansync.migrations.

    An editable install maps leansync.migrations for the checkout too, so
    the subprocess runs without site (-S: no .pth files, no editable
    finder), with the installed dependencies on PYTHONPATH: what a plain
    `pip install .` gives Python started in the clone.
    """
    env = {**shell_env, "PYTHONPATH": sysconfig.get_paths()["purelib"],
           "LEANSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    probe = subprocess.run([sys.executable, "-S", "-c", "import leansync.migrations"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'leansync.migrations'" in probe.stderr  # the setup is real
    result = subprocess.run([sys.executable, "-S", "-c", python_example()], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("1 ")
    assert "'inserted': 4289" in result.stdout.splitlines()[0]
    assert result.stdout.splitlines()[1] == "4289 versions listed now"


def test_db_path_is_absolute_and_refuses_what_is_not_a_sqlite_file(shell_env, elsewhere):
    relative = shell("leansync --database-url sqlite:///here.db db path", cwd=elsewhere, env=shell_env)
    assert (relative.returncode, relative.stdout) == (0, f"{elsewhere / 'here.db'}\n")
    assert not (elsewhere / "here.db").exists()  # it names the file, it creates nothing
    server = shell("leansync --database-url postgresql://leansync:s3cret@db.example.com/leansync db path",
                   cwd=elsewhere, env=shell_env)
    assert server.returncode == 2 and server.stdout == ""
    assert server.stderr == ("leansync: error: `leansync db path` names a SQLite file, and the database "
                             "postgresql://leansync:***@db.example.com/leansync is not one "
                             "(`leansync db current` prints any database's URL)\n")
