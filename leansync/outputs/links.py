"""Links to LEAN's code: the one place every output builds them.

`leanHash` is a commit of the public QuantConnect/Lean repository (or a
mirror named by LEANSYNC_LEAN_REPO_URL). `leanCloudHash` is a commit of a
private repository, so nothing here ever takes one.
"""

import os

DEFAULT_LEAN_REPO_URL = "https://github.com/QuantConnect/Lean"
ENV_LEAN_REPO_URL = "LEANSYNC_LEAN_REPO_URL"


def lean_repo_url(environ=os.environ) -> str:
    """The repository links point into, without a trailing slash."""
    return (environ.get(ENV_LEAN_REPO_URL) or DEFAULT_LEAN_REPO_URL).rstrip("/")


def commit_url(lean_hash: str | None, *, repo: str | None = None) -> str | None:
    """`<repo>/commit/<leanHash>`; None without a hash."""
    if not lean_hash:
        return None
    return f"{repo or lean_repo_url()}/commit/{lean_hash}"


def compare_url(old_lean_hash: str | None, new_lean_hash: str | None, *, repo: str | None = None) -> str | None:
    """`<repo>/compare/<old>...<new>`; None unless both hashes are known and differ."""
    if not old_lean_hash or not new_lean_hash or old_lean_hash == new_lean_hash:
        return None
    return f"{repo or lean_repo_url()}/compare/{old_lean_hash}...{new_lean_hash}"
