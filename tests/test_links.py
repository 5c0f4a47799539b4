"""The one link builder every output uses (leansync.outputs.links)."""

from leansync.outputs.links import DEFAULT_LEAN_REPO_URL, commit_url, compare_url, lean_repo_url


def test_default_repository(monkeypatch):
    monkeypatch.delenv("LEANSYNC_LEAN_REPO_URL", raising=False)
    assert lean_repo_url() == DEFAULT_LEAN_REPO_URL == "https://github.com/QuantConnect/Lean"
    assert commit_url("abc123") == "https://github.com/QuantConnect/Lean/commit/abc123"
    assert compare_url("abc", "def") == "https://github.com/QuantConnect/Lean/compare/abc...def"


def test_mirror_from_the_environment(monkeypatch):
    monkeypatch.setenv("LEANSYNC_LEAN_REPO_URL", "https://git.example.com/mirror/Lean/")
    assert commit_url("abc123") == "https://git.example.com/mirror/Lean/commit/abc123"
    assert compare_url("a", "b") == "https://git.example.com/mirror/Lean/compare/a...b"


def test_no_hash_no_link():
    assert commit_url(None) is None
    assert commit_url("") is None
    assert compare_url(None, "b") is None
    assert compare_url("a", None) is None
    assert compare_url("a", "a") is None
