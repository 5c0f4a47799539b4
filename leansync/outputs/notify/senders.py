"""Sending one digest to one target: through Apprise, or leansync's own signed webhook.

Each sender returns None when the target accepted the message, else a
one-line reason (masked by the caller before it is stored or shown).
"""

import hashlib
import hmac
import logging
import re

from leansync import __version__
from leansync.outputs.notify.digest import Digest
from leansync.outputs.notify.targets import Target
from leansync.timespec import format_utc

SIGNATURE_HEADER = "X-Leansync-Signature-256"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def idempotency_key(digest: Digest, target: Target) -> str:
    """Stable for a run and a target: every attempt carries the same key."""
    text = f"{digest.run_id}|{format_utc(digest.started_at)}|{target.key}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def signature(secret: str, body: bytes) -> str:
    """GitHub's convention: ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(target: Target, digest: Digest, *, timeout: float) -> str | None:
    if target.kind == "webhook":
        return send_webhook(target, digest, timeout=timeout)
    return send_apprise(target, digest, timeout=timeout)


def send_webhook(target: Target, digest: Digest, *, timeout: float) -> str | None:
    import requests

    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"leansync/{__version__}",
        IDEMPOTENCY_HEADER: idempotency_key(digest, target),
    }
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(target.secret, digest.document)
    try:
        # No redirects: the signed body goes to the configured URL or nowhere.
        response = requests.post(target.url, data=digest.document, headers=headers, timeout=timeout,
                                 allow_redirects=False)
    except requests.Timeout:
        return f"no answer within {timeout:.3g} s"
    except requests.ConnectionError as exc:
        found = _ERRNO.search(str(exc))
        return f"could not connect: {found.group(0).strip()}" if found else "could not connect"
    except requests.RequestException as exc:
        return type(exc).__name__
    response.close()
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


def send_apprise(target: Target, digest: Digest, *, timeout: float) -> str | None:
    import apprise

    from leansync.outputs.notify.targets import asset

    plugin = target.plugin
    # The run's budget bounds every wait, whatever the URL asks for (cto=, rto=).
    plugin.socket_connect_timeout = min(plugin.socket_connect_timeout or timeout, timeout)
    plugin.socket_read_timeout = min(plugin.socket_read_timeout or timeout, timeout)
    sender = apprise.Apprise(asset=asset())
    sender.add(plugin)
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as logs:
        accepted = sender.notify(title=digest.title, body=digest.body, body_format=apprise.NotifyFormat.MARKDOWN)
    if accepted:
        return None
    lines = [line.strip() for line in logs.getvalue().splitlines() if line.strip()]
    return lines[-1] if lines else "Apprise reported a failure"
