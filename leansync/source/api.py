"""The QuantConnect API client: one authenticated POST to lean/versions/read.

Retries use urllib3's Retry on requests' HTTPAdapter (POST included, since
this call only reads). The token is used only to build the Authorization
header and never appears in a message, a log line or an exception.

Two bounds keep an unattended run from hanging or swelling: a deadline over
the whole fetch (every attempt, read and wait between attempts) and a cap
on the size of the answer, counted after decompression while it streams in.
"""

import base64
import hashlib
import io
import logging
import re
import time

import requests
import urllib3.exceptions
from urllib3.util.retry import Retry

from leansync import __version__
from leansync.config import Credentials
from leansync.source.deadline import Deadline, DeadlinePassed, DeadlineTimeout, WatchedAdapter
from leansync.errors import AuthError, FetchError
from leansync.source.payload import api_errors, parse_json

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


MIB = 1024 * 1024
CHUNK_BYTES = 64 * 1024  # decoded bytes per read: urllib3 decompresses no more than asked for


class CappedRetry(Retry):
    """urllib3's Retry, honouring Retry-After but never for more than a minute,
    and never waiting past the fetch's deadline."""

    # urllib3 would also retry a 413 that carries Retry-After; other 4xx are
    # final answers, so only the statuses retried anyway may ask for a wait.
    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    deadline: Deadline | None = None

    def new(self, **kw):
        retry = super().new(**kw)
        retry.deadline = self.deadline
        return retry

    def get_retry_after(self, response):
        value = super().get_retry_after(response)
        return None if value is None else min(value, RETRY_AFTER_CAP)

    def sleep(self, response=None) -> None:
        """urllib3's choice of wait (Retry-After, else the backoff), refused if it would end past the deadline."""
        wait = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        wait = wait or self.get_backoff_time()
        if self.deadline is not None:
            self.deadline.check(wait)
        if wait > 0:
            time.sleep(wait)


def make_session(*, retries: int, deadline: Deadline | None = None) -> requests.Session:
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
    retry.deadline = deadline
    session = requests.Session()
    adapter = WatchedAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def fetch_versions(*, api_url: str, credentials: Credentials, timeout: float, retries: int,
                   deadline: float = 600, max_bytes: int = 256 * MIB) -> bytes:
    """POST lean/versions/read and return the response body.

    ``deadline`` (seconds) bounds the whole fetch, ``max_bytes`` the body
    after decompression. Raises FetchError (network, HTTP status, deadline,
    size), AuthError (rejected credentials) or PayloadError (not JSON); the
    body is parsed and validated by the run (leansync.source.payload).
    """
    url = endpoint_url(api_url)
    attempts = retries + 1
    headers = auth_headers(credentials, timestamp=int(time.time()))
    log.debug("POST %s (timeout %ss, up to %d attempts, deadline %ss)", url, timeout, attempts, deadline)
    late = FetchError(f"QuantConnect at {url} did not deliver an answer within the deadline of "
                      f"{deadline:g} s (--deadline); the run stopped waiting")
    with Deadline(deadline) as bound:
        try:
            with make_session(retries=retries, deadline=bound) as session:
                with session.post(url, json={}, headers=headers, timeout=DeadlineTimeout(timeout, bound),
                                  stream=True) as response:
                    log.debug("HTTP %s from %s", response.status_code, url)
                    if response.status_code != 200:
                        raise FetchError(_status_message(response.status_code, url, attempts, credentials))
                    body = _read_body(response, url=url, max_bytes=max_bytes, deadline=bound)
        except DeadlinePassed:
            raise late from None
        except requests.exceptions.RetryError as exc:
            raise FetchError(f"QuantConnect at {url} kept failing after {attempts} attempts: {_reason(exc)}") from None
        except requests.exceptions.RequestException as exc:
            if bound.passed():  # the watchdog cut the connection, or a timeout shrunk to the deadline fired
                raise late from None
            if _timed_out(exc):
                raise FetchError(f"QuantConnect at {url} did not answer within {timeout:g} s ({attempts} attempts)") from None
            raise FetchError(f"could not reach QuantConnect at {url} after {attempts} attempts: {_reason(exc)}") from None

    log.debug("%d bytes from %s", len(body), url)
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


def _read_body(response: requests.Response, *, url: str, max_bytes: int, deadline: Deadline) -> bytes:
    """The decoded body, read in chunks: never more than the cap in memory, never past the deadline."""
    cap = f"the size cap of {max_bytes / MIB:g} MiB (--max-response-mb)"
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"QuantConnect at {url} announced an answer of {int(declared) / MIB:.1f} MiB "
                         f"(Content-Length), more than {cap}; nothing was read")
    body = io.BytesIO()
    for chunk in response.iter_content(CHUNK_BYTES):  # decompressed by urllib3, at most CHUNK_BYTES at a time
        arrived = body.tell() + len(chunk)
        if arrived > max_bytes:
            raise FetchError(f"the answer of QuantConnect at {url} is larger than {cap}: "
                             f"{arrived / MIB:.1f} MiB had arrived when leansync stopped reading")
        body.write(chunk)
        deadline.check()
    return body.getvalue()


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
