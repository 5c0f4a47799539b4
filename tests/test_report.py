"""`leansync report` and `sync --report-file` from the command line.

What the charts draw, and that they draw offline, is checked in a real browser
(tests/test_report_browser.py); here: the file, the options, the errors.
"""

import stat
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from dbstate import raw_rows, runs
from faults import LEANSYNC, error_sentence, leansync
from weeks import build_weeks

NO_PLOTLY = "the report needs Plotly, which is not installed: pip install 'leansync[report]'"
# The installed leansync as if the `report` extra were missing: importing plotly fails.
WITHOUT_PLOTLY = ("import sys; sys.modules['plotly'] = None; from leansync.cli import main; "
                  "sys.argv[0] = 'leansync'; main()")


def without_plotly(*args, url):
    return subprocess.run([sys.executable, "-c", WITHOUT_PLOTLY, "--database-url", url, *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_report_is_one_self_contained_file_read_only(run, database_url, database_copy, tag_versions, tmp_path):
    database_copy("weeks", lambda url, folder: build_weeks(url, folder, tag_versions))
    before = raw_rows(database_url)
    out = tmp_path / "report.html"
    result = run("report", "--output", out)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"report written to {out}\n"
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "<script src=" not in html  # nothing loaded from elsewhere
    assert "plotly.js v" in html  # the library itself is inside
    assert "LEAN engine versions: leansync report" in html and "built 20" in html
    assert raw_rows(database_url) == before  # read only


def test_since_charts_only_what_happened_since(run, database_url, database_copy, tag_versions, tmp_path):
    database_copy("weeks", lambda url, folder: build_weeks(url, folder, tag_versions))
    whole, recent = tmp_path / "whole.html", tmp_path / "recent.html"
    assert run("report", "--output", whole).exit_code == 0
    assert run("report", "--output", recent, "--since", "2026-10-05").exit_code == 0
    assert '"2026-09-14"' in whole.read_text()  # a week on the charts' axes
    assert '"2026-09-14"' not in recent.read_text() and '"2026-10-05"' in recent.read_text()
    assert "since 2026-10-05T00:00:00Z" in recent.read_text() and "the whole history" in whole.read_text()


def test_a_database_without_runs_gives_a_report_that_says_so(run, database_url, tmp_path):
    assert run("db", "upgrade").exit_code == 0
    out = tmp_path / "report.html"
    result = run("report", "--output", out)
    assert result.exit_code == 0, result.output
    assert "This database has no sync runs yet: there is nothing to chart." in out.read_text()


@pytest.mark.postgres_only
def test_the_database_is_shown_without_its_password(run, database_url, write_response, ten, tmp_path):
    url = make_url(database_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    assert "s3cret-pw" in url
    assert leansync("sync", "-q", "--from-file", write_response(ten), url=url).returncode == 0
    out = tmp_path / "report.html"
    result = leansync("report", "--output", out, url=url)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "s3cret-pw" not in html and f"{make_url(url).username}:***@" in html


def test_without_the_report_extra_it_says_what_to_install(synced, database_url, write_response, ten, tmp_path):
    out = tmp_path / "report.html"
    result = without_plotly("report", "--output", out, url=database_url)
    assert result.returncode == 2 and error_sentence(result) == NO_PLOTLY
    assert not out.exists()
    count = len(runs(database_url))
    result = without_plotly("sync", "--from-file", write_response(ten), "--report-file", out, url=database_url)
    assert result.returncode == 2 and error_sentence(result) == NO_PLOTLY
    assert len(runs(database_url)) == count  # refused before the run
    assert without_plotly("feed", url=database_url).returncode == 0  # the feed does not need it


def test_report_file_after_each_successful_run_kept_on_failure(database_url, write_response, tag_versions,
                                                               tmp_path):
    path = tmp_path / "index.html"

    def sync(source):
        return subprocess.run(["/bin/sh", "-c", 'umask 027; exec "$@"', "sh", str(LEANSYNC), "--database-url",
                               database_url, "sync", "-q", "--from-file", str(source), "--report-file", str(path)],
                              capture_output=True, text=True, timeout=120)

    assert sync(write_response(tag_versions[3:10])).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # a plain file under the umask, not 0600
    first = path.read_text()
    assert "run 1" in first
    assert sync(write_response(tag_versions[:10])).returncode == 0
    second = path.read_text()
    assert "run 2" in second and second != first
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert sync(broken).returncode == 1
    assert path.read_text() == second  # the failed run left the previous report
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".index")) == []


def test_report_usage_errors(run, synced, tmp_path):
    missing = run("report")
    assert missing.exit_code == 2 and "--output" in missing.stderr
    nowhere = run("report", "--output", tmp_path / "no" / "report.html")
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.stderr
    dry = run("sync", "--from-file", "-", "--dry-run", "--report-file", tmp_path / "r.html")
    assert dry.exit_code == 2


def test_report_of_a_missing_database_is_a_usage_error(tmp_path):
    result = leansync("report", "--output", tmp_path / "r.html", url=f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 2 and error_sentence(result)
    assert not (tmp_path / "r.html").exists()
