"""The QuantConnect API client: one authenticated POST to lean/versions/read.

Retries use urllib3's Retry on requests' HTTPAdapter (POST included, since
this call only reads). The token is used only to build the Authorization
header and never appears in a message, a log line or an exception.
"""

import base64
import hashlib
import logging
import re
import time
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from leansync import __version__
from leansync.config import Credentials
from leansync.errors import AuthError, FetchError
from leansync.payload import api_errors, parse_json

log = logging.getLogger(__name__)

ENDPOINT = "lean/versions/read"
RETRY_STATUSES = (429, 500, 502, 503, 504)
RETRY_AFTER_CAP = 60.0  # seconds; a server asking for longer is not waited for
BACKOFF_FACTOR = 0.5  # waits 0, 1, 2, 4 ... seconds (plus jitter) between attempts
USER_AGENT = f"leansync/{__version__} (+https://pypi.org/project/leansync/)"
AUTH_REJECTIONS = ("Hash doesn't match", "UserID not valid")


def endpoint_url(api_url: str) -> str:
    """Join so that a base URL with or without the trailing slash works."""
    return api_url.rstrip("/") + "/" + ENDPOINT


def auth_headers(credentials: Credentials, *, timestamp: int) -> dict[str, str]:
    """QuantConnect's scheme: Basic user_id:sha256(token:timestamp), one timestamp."""
    digest = hashlib.sha256(f"{credentials.api_token}:{timestamp}".encode()).hexdigest()
    basic = base64.b64encode(f"{credentials.user_id}:{digest}".encode()).decode("ascii")
    return {"Timestamp": str(timestamp), "Authorization": f"Basic {basic}"}


class CappedRetry(Retry):
    """urllib3's Retry, honouring Retry-After but never for more than a minute."""

    # urllib3 would also retry a 413 that carries Retry-After; other 4xx are
    # final answers, so only the statuses retried anyway may ask for a wait.
    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    def get_retry_after(self, response):
        value = super().get_retry_after(response)
        return None if value is None else min(value, RETRY_AFTER_CAP)


def make_session(*, retries: int) -> requests.Session:
    retry = CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=None,  # retry the POST too: it only reads
        status_forcelist=RETRY_STATUSES,
        backoff_factor=BACKOFF_FACTOR,
        backoff_jitter=0.5,
        backoff_max=RETRY_AFTER_CAP,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last response so its status can be reported
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def fetch_versions(*, api_url: str, credentials: Credentials, timeout: float, retries: int) -> Any:
    """POST lean/versions/read and return the response body.

    Raises FetchError (network, HTTP status), AuthError (rejected
    credentials) or PayloadError (not JSON); the body is parsed and validated
    by the run (leansync.payload).
    """
    url = endpoint_url(api_url)
    attempts = retries + 1
    headers = auth_headers(credentials, timestamp=int(time.time()))
    log.debug("POST %s (timeout %ss, up to %d attempts)", url, timeout, attempts)
    try:
        with make_session(retries=retries) as session:
            response = session.post(url, json={}, headers=headers, timeout=(timeout, timeout))
    except requests.exceptions.RetryError as exc:
        raise FetchError(f"QuantConnect at {url} kept failing after {attempts} attempts: {_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        if _timed_out(exc):
            raise FetchError(f"QuantConnect at {url} did not answer within {timeout:g} s ({attempts} attempts)") from None
        raise FetchError(f"could not reach QuantConnect at {url} after {attempts} attempts: {_reason(exc)}") from None

    log.debug("HTTP %s from %s, %d bytes", response.status_code, url, len(response.content))
    if response.status_code != 200:
        raise FetchError(_status_message(response.status_code, url, attempts, credentials))

    body = response.content
    if _may_be_a_failure(body):
        document = parse_json(body, source=url)  # HTML or garbage fails here, with its own message
        errors = api_errors(document)
        if errors and any(e.startswith(AUTH_REJECTIONS) for e in errors):
            raise AuthError(
                f"QuantConnect rejected the credentials read from {credentials.source} "
                f"({'; '.join(errors)}); check them, and check this machine's clock: a clock more "
                "than two hours off gets the same answer"
            )
    return body


SMALL_BODY = 64 * 1024
FAILURE_MARK = re.compile(rb'(?<!\\)"success"\s*:\s*false')


def _may_be_a_failure(body: bytes) -> bool:
    """Whether to parse the body here to look for QuantConnect's failure answers.

    A list of versions is large and is parsed by the run, which can then skip
    the versions it already stores; a failure (`"success": false`) is small.
    A large body is looked at only if it does not start like a JSON object or
    if it says `"success": false`. Missing a failure here costs nothing but
    the message's credentials hint: the run's validation refuses it anyway.
    """
    head = body[:64].lstrip()
    return len(body) <= SMALL_BODY or not head.startswith((b"{", b"\xef\xbb\xbf")) or bool(FAILURE_MARK.search(body))


def _status_message(status: int, url: str, attempts: int, credentials: Credentials) -> str:
    message = f"QuantConnect at {url} answered HTTP {status}"
    if status in RETRY_STATUSES:  # only these were retried
        message += f" ({'too many requests' if status == 429 else 'server error'}) after {attempts} attempts"
    elif status >= 500:
        message += " (server error)"
    if status == 500:
        return (f"{message}; QuantConnect also answers 500 to some invalid credentials, "
                f"so check those read from {credentials.source}")
    if status in (401, 403):
        return f"{message}: the credentials read from {credentials.source} were refused"
    return message


def _timed_out(exc: Exception) -> bool:
    """requests reports a read timeout that exhausted the retries as a
    ConnectionError wrapping urllib3's MaxRetryError, not as a Timeout."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)
    # NewConnectionError (refused, unreachable) subclasses the connect timeout.
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError)


def _reason(exc: Exception) -> str:
    """The innermost cause, in a few words (no URL parameters or headers)."""
    inner = exc.args[0] if exc.args else exc
    reason = getattr(inner, "reason", None) or inner
    text = str(reason)
    # urllib3 wraps as "<object at 0x..>: Failed to establish ...": keep the tail.
    if ": " in text and text.startswith("<"):
        text = text.split(": ", 1)[1]
    return text.strip().rstrip(".")
