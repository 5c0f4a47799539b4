"""`leansync report` opened in a real browser: Debian's chromium, driven by Selenium through
chromium-driver, headless and with networking off.

The report is built over several weeks of backfilled saved answers (tests/weeks.py). The
test waits until Plotly has drawn, then checks that every chart drew its marks, that the
page logged no console error, that no request left the file, and that each chart's numbers
are the same question asked in SQL. It saves a screenshot (LEANSYNC_SCREENSHOT=PATH keeps
it, e.g. docs/report.png for the README).

Without chromium the test skips, unless LEANSYNC_REQUIRE_BROWSER=1 (as .ci/run sets):
then it fails.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from weeks import MARKUP_NAME, backfill_weeks

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_BROWSER = "LEANSYNC_REQUIRE_BROWSER"
BROWSER_HINT = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
NETWORK_SCHEMES = ("http:", "https:", "ws:", "wss:", "ftp:")  # chrome:// (the new-tab page) is the browser's own


def _browser_unavailable(reason: str):
    """Skip, or fail where the browser is required (.ci/run sets LEANSYNC_REQUIRE_BROWSER=1)."""
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{reason} ({REQUIRE_BROWSER}=1, so the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path):
    """Headless chromium with networking off, a fresh profile, console and network logs on."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _browser_unavailable(BROWSER_HINT)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _browser_unavailable("selenium is not installed; pip install '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2500"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        # The whole report in one screenshot: a viewport as tall as the page (a window is capped by the screen).
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1400, "height": 2900, "deviceScaleFactor": 1, "mobile": False})
        driver.execute_cdp_cmd("Network.enable", {})
        # Networking off: any request that does leave the file fails, and the performance log still shows it.
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


MARKS_JS = """
const gd = document.querySelector('.plotly-graph-div');
if (!gd || !gd._fullLayout) return null;
return {
  subplots: Array.from(gd.querySelectorAll('.cartesianlayer > .subplot')).map(
      s => ({id: s.classList[1], marks: s.querySelectorAll('.point path, .point').length})),
  tableCells: gd.querySelectorAll('.table .column-cell .cell-text').length,
  tableTexts: Array.from(gd.querySelectorAll('.table .cell-text')).map(t => t.textContent),
  tableItalics: gd.querySelectorAll('.table i').length,
  tableLinks: Array.from(gd.querySelectorAll('.table a')).map(
      a => a.getAttribute('href') || a.getAttributeNS('http://www.w3.org/1999/xlink', 'href')),
  titles: Array.from(gd.querySelectorAll('.annotation-text')).map(t => t.textContent),
  title: (gd.querySelector('.gtitle') || {}).textContent,
  traces: gd.data.map(t => ({type: t.type, name: t.name, x: t.x, y: t.y,
                             cells: t.cells ? t.cells.values : null})),
};
"""


def week_sql(dialect: str, column: str) -> str:
    """The Monday starting the UTC week of a timestamp column, as YYYY-MM-DD, in each backend's SQL."""
    if dialect == "sqlite":
        return f"date({column}, 'weekday 0', '-6 days')"
    return f"to_char(date_trunc('week', {column} AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"


def days_sql(dialect: str, later: str, earlier: str) -> str:
    if dialect == "sqlite":
        return f"(julianday({later}) - julianday({earlier}))"
    return f"(extract(epoch from {later} - {earlier}) / 86400)"


def sql_answers(database_url: str) -> dict:
    """Each chart's question, asked in SQL."""
    engine = create_engine(database_url)
    dialect = engine.dialect.name
    first_run = "(SELECT min(started_at) FROM sync_run WHERE status = 'success')"
    try:
        with engine.connect() as conn:
            cadence = {(week, bool(public)): count for week, public, count in conn.execute(text(
                f"SELECT {week_sql(dialect, 'e.event_time')} AS week, h.public, count(*) "
                "FROM lean_version_event e JOIN lean_version_history h ON h.id = e.history_id "
                f"WHERE e.event = 'new_version' AND e.event_time > {first_run} GROUP BY 1, 2"))}
            left_out = conn.execute(text(
                f"SELECT count(*) FROM lean_version WHERE first_seen_at = {first_run}")).scalar_one()
            delays = sorted(float(d) for (d,) in conn.execute(text(
                f"SELECT {days_sql(dialect, 'v.first_seen_at', 'v.created')} FROM lean_version v "
                f"WHERE v.first_seen_at > {first_run} AND v.created IS NOT NULL")))
            changes = {(week, kind): count for week, kind, count in conn.execute(text(
                f"SELECT {week_sql(dialect, 'event_time')}, event, count(*) FROM lean_version_event "
                "WHERE event IN ('changed', 'removed', 'restored') GROUP BY 1, 2"))}
            newest = [tuple(row) for row in conn.execute(text(
                "SELECT id, lean_hash FROM lean_version_current ORDER BY id DESC LIMIT 20"))]
            runs = [(run_id, status, float(seconds)) for run_id, status, seconds in conn.execute(text(
                f"SELECT id, status, {days_sql(dialect, 'finished_at', 'started_at')} * 86400 FROM sync_run "
                "ORDER BY id DESC LIMIT 30"))][::-1]
    finally:
        engine.dispose()
    return {"cadence": cadence, "left_out": left_out, "delays": delays, "changes": changes, "newest": newest,
            "runs": runs}


def bars_by_week(traces: list[dict], names: dict[str, object]) -> dict:
    """{(week, key): count} of the non-zero bars of the named traces."""
    out = {}
    for trace in traces:
        if trace["name"] in names:
            for week, count in zip(trace["x"], trace["y"]):
                if count:
                    out[(week, names[trace["name"]])] = count
    return out


def test_the_report_draws_every_chart_offline_with_the_numbers_sql_gives(
        run, database_url, write_response, tag_versions, tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    backfilled = backfill_weeks(run, write_response, tag_versions, tmp_path)
    report = tmp_path / "report.html"
    result = run("report", "--output", report)
    assert result.exit_code == 0, result.output

    browser.get(report.as_uri())
    # Plotly draws asynchronously: wait until every subplot and the table have marks.
    page = WebDriverWait(browser, 60, poll_frequency=0.2).until(
        lambda d: (lambda r: r if r and len(r["subplots"]) == 4 and r["tableCells"]
                   and all(s["marks"] for s in r["subplots"]) else None)(d.execute_script(MARKS_JS)))

    # Every chart drew its marks: four charts with points, and the table with a link per version.
    assert [s["marks"] > 0 for s in page["subplots"]] == [True] * 4
    assert page["tableCells"] > 0
    # No console error, and no request left the file.
    console = browser.get_log("browser")
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []
    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert report.as_uri() in urls  # the log does see requests...
    assert [url for url in urls if url.lower().startswith(NETWORK_SCHEMES)] == []  # ...and none went out

    shot = Path(os.environ.get("LEANSYNC_SCREENSHOT") or tmp_path / "report.png")
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Each chart's numbers are the same question asked in SQL.
    sql = sql_answers(database_url)
    traces = page["traces"]
    assert bars_by_week(traces, {"new public": True, "new private": False}) == sql["cadence"]
    assert sql["cadence"] and {public for _, public in sql["cadence"]} == {True, False}
    assert any(f"leaving out the {sql['left_out']} versions listed at the first run" in t for t in page["titles"])
    histogram = next(t for t in traces if t["type"] == "histogram")
    assert sql["delays"] and sorted(histogram["x"]) == pytest.approx(sql["delays"], abs=1e-3)
    assert bars_by_week(traces, {k: k for k in ("changed", "removed", "restored")}) == sql["changes"]
    assert {kind for _, kind in sql["changes"]} == {"changed", "removed", "restored"}
    table = next(t for t in traces if t["type"] == "table")["cells"]
    assert [int(v) for v in table[0]] == [version_id for version_id, _ in sql["newest"]]
    assert MARKUP_NAME in page["tableTexts"] and page["tableItalics"] == 0  # the API's text shown as text
    assert page["tableLinks"] == [f"https://github.com/QuantConnect/Lean/commit/{h}" for _, h in sql["newest"]]
    # Runs: backfills marked (those observed at a WHEN), the others drawn with their duration.
    backfill_trace = next(t for t in traces if t["name"] == "backfill (no duration; red: failed)")
    runs = sql["runs"]
    assert backfill_trace["x"] == [f"run {run_id}" for run_id, *_ in runs[:-1]]  # every run but the last
    assert len(runs) == len(backfilled) + 1
    drawn = {x: (t["name"], y) for t in traces if t["name"] in ("success (seconds)", "failed (seconds)")
             for x, y in zip(t["x"], t["y"])}
    last_id, last_status, last_seconds = runs[-1]
    assert list(drawn) == [f"run {last_id}"] and drawn[f"run {last_id}"][0] == f"{last_status} (seconds)"
    assert drawn[f"run {last_id}"][1] == pytest.approx(last_seconds, abs=0.005)  # SQLite julianday: milliseconds
    assert "database sqlite:///" in page["title"] or "database postgresql" in page["title"]


def test_the_browser_check_sees_a_request_that_leaves_the_file(tmp_path, browser):
    """The network check can fail: a page that asks a CDN shows up in the performance log."""
    page = tmp_path / "cdn.html"
    page.write_text('<!doctype html><script src="https://cdn.plot.ly/plotly-2.35.2.min.js"></script><p>x</p>')
    browser.get(page.as_uri())
    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert "https://cdn.plot.ly/plotly-2.35.2.min.js" in urls
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]  # and it failed, offline


def test_chromium_is_debians(browser):
    assert shutil.which("chromium") == str(CHROMIUM)
    assert browser.capabilities["browserName"] in ("chrome", "chromium")


def test_a_missing_browser_fails_where_the_browser_is_required(monkeypatch):
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match="LEANSYNC_REQUIRE_BROWSER=1, so the browser tests must run"):
        _browser_unavailable(BROWSER_HINT)
    monkeypatch.delenv(REQUIRE_BROWSER)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        _browser_unavailable(BROWSER_HINT)
