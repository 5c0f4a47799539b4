"""`leansync metrics` and `sync --metrics-file`: Prometheus metrics from the database.

The output is parsed with prometheus_client's own parser and every value is
checked against a history built by real syncs at frozen times, on both backends.
"""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families

T1 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
T2 = T1 + timedelta(hours=1)
T3 = T2 + timedelta(hours=1)
RETAG = "b" * 40


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} for every sample of the exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def distinct(versions: list[dict], key: str) -> set[str]:
    return {v[key] for v in versions}


@pytest.fixture
def history(run, write_response, tag_versions):
    """Run 1 (T1) lists 20 versions; run 2 (T2) retags one, drops two and adds one;
    run 3 (T3) fails on a bad answer. Returns what each successful run sent."""
    first = [dict(v) for v in tag_versions[1:21]]
    second = [dict(v) for v in tag_versions[0:20] if v["id"] != tag_versions[5]["id"]]
    second[3]["leanHash"] = RETAG
    for moment, versions in ((T1, first), (T2, second)):
        with freeze_time(moment, tick=True):  # ticking: the run takes some time
            assert run("sync", "-q", "--from-file", write_response(versions)).exit_code == 0
    with freeze_time(T3, tick=True):
        failed = run("sync", "-q", "--from-file", write_response(document={"success": False, "errors": ["boom"]}))
    assert failed.exit_code == 1
    return first, second


def expected_values(run, first: list[dict], second: list[dict]) -> dict[tuple, float]:
    runs = json.loads(run("runs", "--format", "json").stdout)  # newest first: the failed run 3, then run 2
    newest, last_success = runs[0], runs[1]
    assert (newest["status"], last_success["status"]) == ("failed", "success")
    duration = (datetime.fromisoformat(newest["finished_at"]) - datetime.fromisoformat(newest["started_at"]))
    ever = first + second
    return {
        ("leansync_last_success_timestamp_seconds", ()): datetime.fromisoformat(last_success["started_at"]).timestamp(),
        ("leansync_last_run_timestamp_seconds", ()): datetime.fromisoformat(newest["started_at"]).timestamp(),
        ("leansync_last_run_success", ()): 0,
        ("leansync_last_run_duration_seconds", ()): duration.total_seconds(),
        ("leansync_versions_listed", ()): len(second),
        ("leansync_versions_removed", ()): len(distinct(ever, "id")) - len(second),
        ("leansync_hashes_total", (("kind", "lean"),)): len(distinct(ever, "leanHash")),
        ("leansync_hashes_total", (("kind", "lean_cloud"),)): len(distinct(ever, "leanCloudHash")),
        ("leansync_runs_total", (("status", "success"),)): 2,
        ("leansync_runs_total", (("status", "failed"),)): 1,
        # run 2's changes
        ("leansync_last_run_changes", (("change", "inserted"),)): len(distinct(second, "id") - distinct(first, "id")),
        ("leansync_last_run_changes", (("change", "updated"),)): 1,  # the retag
        ("leansync_last_run_changes", (("change", "removed"),)): len(distinct(first, "id") - distinct(second, "id")),
        ("leansync_last_run_changes", (("change", "restored"),)): 0,
        ("leansync_last_run_changes", (("change", "new_hashes"),)): sum(
            len(distinct(ever, key) - distinct(first, key)) for key in ("leanHash", "leanCloudHash")),
        # the outbox, as `runs` counts it per run (tests/test_notify.py has runs with targets)
        **{("leansync_notifications", (("status", status),)): sum(r[f"notifications_{status}"] for r in runs)
           for status in ("pending", "sent", "abandoned")},
    }


def test_every_metric_matches_the_history(run, history):
    result = run("metrics")
    assert result.exit_code == 0, result.output
    got = samples(result.stdout)
    expected = expected_values(run, *history)
    assert got == pytest.approx(expected)
    assert got[("leansync_last_success_timestamp_seconds", ())] == pytest.approx(T2.timestamp(), abs=5)
    assert got[("leansync_last_run_timestamp_seconds", ())] == pytest.approx(T3.timestamp(), abs=5)
    assert got[("leansync_last_run_duration_seconds", ())] > 0


def test_only_leansync_metrics_with_their_types(run, history):
    families = {f.name: f.type for f in text_string_to_metric_families(run("metrics").stdout)}
    assert families == {
        "leansync_last_success_timestamp_seconds": "gauge", "leansync_last_run_timestamp_seconds": "gauge",
        "leansync_last_run_success": "gauge", "leansync_last_run_duration_seconds": "gauge",
        "leansync_versions_listed": "gauge", "leansync_versions_removed": "gauge",
        "leansync_hashes": "counter", "leansync_runs": "counter", "leansync_last_run_changes": "gauge",
        "leansync_notifications": "gauge",
    }


def test_a_database_with_no_run_has_zeros_and_no_last_run(run):
    assert run("db", "upgrade", "-q").exit_code == 0
    got = samples(run("metrics").stdout)
    assert got == {
        ("leansync_versions_listed", ()): 0, ("leansync_versions_removed", ()): 0,
        ("leansync_hashes_total", (("kind", "lean"),)): 0, ("leansync_hashes_total", (("kind", "lean_cloud"),)): 0,
        ("leansync_runs_total", (("status", "success"),)): 0, ("leansync_runs_total", (("status", "failed"),)): 0,
        **{("leansync_notifications", (("status", status),)): 0 for status in ("pending", "sent", "abandoned")},
    }


def test_only_failed_runs_leave_no_success_and_no_changes(run, write_response):
    with freeze_time(T1):
        assert run("sync", "--from-file", write_response(document={"success": False})).exit_code == 1
    got = samples(run("metrics").stdout)
    assert ("leansync_last_success_timestamp_seconds", ()) not in got
    assert not any(name == "leansync_last_run_changes" for name, _ in got)
    assert got[("leansync_last_run_success", ())] == 0
    assert got[("leansync_last_run_timestamp_seconds", ())] == T1.timestamp()
    assert got[("leansync_runs_total", (("status", "failed"),))] == 1


@pytest.mark.sqlite_only
def test_metrics_of_a_missing_database_is_one_sentence(run, database_url):
    result = run("metrics")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "history.db" in result.stderr


def test_the_metrics_file_is_written_after_success_and_after_failure(run, write_response, tag_versions, tmp_path):
    target = tmp_path / "textfile" / "leansync.prom"
    target.parent.mkdir()
    with freeze_time(T1):
        assert run("sync", "-q", "--from-file", write_response(tag_versions[:3]),
                   "--metrics-file", target).exit_code == 0
    assert target.read_text() == run("metrics").stdout
    assert samples(target.read_text())[("leansync_last_run_success", ())] == 1
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    with freeze_time(T2):
        failed = run("sync", "-q", "--from-file", garbage, "--metrics-file", target)
    assert failed.exit_code == 1
    got = samples(target.read_text())
    assert got[("leansync_last_run_success", ())] == 0
    assert got[("leansync_last_run_timestamp_seconds", ())] == T2.timestamp()
    assert got[("leansync_last_success_timestamp_seconds", ())] == T1.timestamp()
    assert [p.name for p in target.parent.iterdir()] == ["leansync.prom"]  # the temporary file was renamed


@pytest.mark.sqlite_only
def test_no_metrics_file_without_a_database(run, database_url, tmp_path):
    """A run that fails before there is a database (here: no credentials) has nothing to report."""
    target = tmp_path / "leansync.prom"
    result = run("sync", "--metrics-file", target)
    assert result.exit_code == 2
    assert not target.exists()
    assert "warning" not in result.stderr


def test_a_metrics_file_in_a_missing_directory_is_a_usage_error(run, write_response, tag_versions, tmp_path):
    result = run("sync", "--from-file", write_response(tag_versions[:3]),
                 "--metrics-file", tmp_path / "nowhere" / "leansync.prom")
    assert result.exit_code == 2
    assert "--metrics-file" in result.stderr and "nowhere" in result.stderr
    assert run("runs").exit_code == 2  # nothing ran: there is still no database


def test_a_dry_run_takes_no_metrics_file(run, write_response, tag_versions, tmp_path):
    result = run("sync", "--dry-run", "--from-file", write_response(tag_versions[:3]),
                 "--metrics-file", tmp_path / "leansync.prom")
    assert result.exit_code == 2
    assert "--dry-run" in result.stderr
    assert not (tmp_path / "leansync.prom").exists()


@pytest.mark.sqlite_only
def test_a_database_that_cannot_be_read_leaves_the_file_and_says_one_sentence(run, database_url, tmp_path,
                                                                              write_response, tag_versions):
    Path(database_url.removeprefix("sqlite:///")).write_bytes(b"not a database, only its name")
    target = tmp_path / "leansync.prom"
    target.write_text("# the last good metrics\n")
    result = run("sync", "--from-file", write_response(tag_versions[:3]), "--metrics-file", target)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("leansync: error: ")
    assert target.read_text() == "# the last good metrics\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_a_metrics_file_that_cannot_be_written_is_a_warning_after_a_good_run(run, write_response, tag_versions):
    result = run("sync", "-q", "--from-file", write_response(tag_versions[:3]), "--metrics-file",
                 "/proc/leansync.prom")
    assert result.exit_code == 0  # the run itself succeeded and is recorded
    assert result.stderr == ("leansync: warning: metrics file not written: cannot write the metrics file "
                             "/proc/leansync.prom: No such file or directory\n")
    assert json.loads(run("runs", "--format", "json").stdout)[0]["status"] == "success"
