"""Links to LEAN's code in `versions`, `show` and `changes`, on both backends, every format.

A small history, synced at frozen times (ids p < q < r < s < t):

    T1  p q r listed (r has no leanHash)                          run 1
    T2  q's leanHash changes; s and t new                          run 2
    T3  p removed                                                  run 3

The expected links are written out by hand from it.
"""

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time

UTC = timezone.utc
T1 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T2 = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
T3 = datetime(2026, 1, 19, 9, 0, tzinfo=UTC)
NEW_HASH = "0123456789abcdef0123456789abcdef01234567"
MIRROR = "https://git.example.com/mirror/Lean"
REPOS = {"default": (None, "https://github.com/QuantConnect/Lean"), "mirror": (MIRROR + "/", MIRROR)}


@pytest.fixture
def history(run, write_response, tag_versions):
    distinct = list({v["leanHash"]: v for v in tag_versions[:20]}.values())[:5]  # tags may share a commit
    p, q, r, s, t = (dict(v) for v in sorted(distinct, key=lambda v: v["id"]))
    r["leanHash"] = None
    old_q = q["leanHash"]
    for moment, listed in ((T1, [p, q, r]), (T2, None), (T3, None)):
        if moment == T2:
            q["leanHash"] = NEW_HASH
            listed = [p, q, r, s, t]
        if moment == T3:
            listed = [q, r, s, t]
        with freeze_time(moment):
            result = run("sync", "-q", "--from-file", write_response(listed))
        assert result.exit_code == 0, result.output
    return {"p": p, "q": q, "r": r, "s": s, "t": t, "old_q": old_q}


def both_formats(run, env, *args) -> list[dict]:
    """The rows of a listing as JSON, checked to carry the same links in CSV."""
    as_json = run(*args, "--format", "json", env=env)
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    as_csv = run(*args, "--format", "csv", env=env)
    assert as_csv.exit_code == 0, as_csv.output
    csv_rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    for name in ("commit_url", "compare_url"):
        if rows and name in rows[0]:
            assert [row[name] or "" for row in csv_rows] == [row[name] or "" for row in rows]
    return rows


def no_cloud_hash_linked(rows: list[dict], h: dict) -> None:
    cloud = {v["leanCloudHash"] for k, v in h.items() if k != "old_q"}
    links = [row.get(name) for row in rows for name in ("commit_url", "compare_url") if row.get(name)]
    assert links and not [link for link in links for c in cloud if c in link]


@pytest.mark.parametrize("repo", REPOS)
def test_versions_link_each_rows_lean_hash(run, history, repo):
    env_value, base = REPOS[repo]
    env = {"LEANSYNC_LEAN_REPO_URL": env_value}
    h = history
    for args in (("versions",), ("versions", "--all"), ("versions", "--as-of", "2026-01-06")):
        rows = both_formats(run, env, *args)
        assert rows and list(rows[0])[-1] == "commit_url"
        for row in rows:
            expected = None if row["lean_hash"] is None else f"{base}/commit/{row['lean_hash']}"
            assert row["commit_url"] == expected
        no_cloud_hash_linked(rows, h)
    as_of = {row["id"]: row["commit_url"] for row in both_formats(run, env, "versions", "--as-of", "2026-01-06")}
    assert as_of == {h["p"]["id"]: f"{base}/commit/{h['p']['leanHash']}",
                     h["q"]["id"]: f"{base}/commit/{h['old_q']}",  # the hash of that moment
                     h["r"]["id"]: None}


@pytest.mark.parametrize("repo", REPOS)
def test_show_links_each_states_hash_in_every_format(run, history, repo):
    env_value, base = REPOS[repo]
    env = {"LEANSYNC_LEAN_REPO_URL": env_value}
    h = history
    states = both_formats(run, env, "show", h["q"]["id"])
    assert [s["commit_url"] for s in states] == [f"{base}/commit/{h['old_q']}", f"{base}/commit/{NEW_HASH}"]
    no_cloud_hash_linked(states, h)
    table = run("show", h["q"]["id"], env=env)
    assert table.exit_code == 0
    assert f"  commit_url       {base}/commit/{NEW_HASH}" in table.stdout.split("\n")
    no_hash = [line.rstrip() for line in run("show", h["r"]["id"], env=env).stdout.split("\n")]
    assert "  commit_url" in no_hash and "  lean_hash" in no_hash  # shown, and empty: r has no leanHash


@pytest.mark.parametrize("repo", REPOS)
def test_changes_link_commits_and_compare_new_versions(run, history, repo):
    env_value, base = REPOS[repo]
    env = {"LEANSYNC_LEAN_REPO_URL": env_value}
    h = history
    p, q, r, s, t = (h[x] for x in "pqrst")
    rows = both_formats(run, env, "changes", "--since", "2026-01-01")
    assert list(rows[0])[-2:] == ["commit_url", "compare_url"]

    def commit(x):
        return f"{base}/commit/{x}"

    version_events = [(row["event"], row["version_id"], row["commit_url"], row["compare_url"])
                      for row in rows if row["event"] != "new_hash"]
    assert version_events == [
        ("new_version", p["id"], commit(p["leanHash"]), None),  # nothing listed below it
        ("new_version", q["id"], commit(h["old_q"]), f"{base}/compare/{p['leanHash']}...{h['old_q']}"),
        ("new_version", r["id"], None, None),  # no leanHash
        ("changed", q["id"], commit(NEW_HASH), None),
        ("new_version", s["id"], commit(s["leanHash"]), None),  # the version below it (r) has no leanHash
        ("new_version", t["id"], commit(t["leanHash"]), f"{base}/compare/{s['leanHash']}...{t['leanHash']}"),
        ("removed", p["id"], commit(p["leanHash"]), None),
    ]
    new_hashes = [(row["hash_kind"], row["hash"], row["commit_url"], row["compare_url"])
                  for row in rows if row["event"] == "new_hash"]
    assert new_hashes and all(
        url == (commit(value) if kind == "lean" else None) and compare is None
        for kind, value, url, compare in new_hashes)
    assert {kind for kind, *_ in new_hashes} == {"lean", "lean_cloud"}
    no_cloud_hash_linked(rows, h)


def test_changes_table_is_unchanged_by_the_links(run, history):
    header = run("changes", "--since", "2026-01-01").stdout.split("\n")[0].split()
    assert header == ["event_time", "event", "version_id", "detail"]
