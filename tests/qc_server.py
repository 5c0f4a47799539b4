"""A fake QuantConnect API: a real HTTP server on 127.0.0.1 in a thread.

It authenticates every request exactly as QuantConnect does, so tests can
run leansync (in-process or the installed command in a subprocess) against
it without mocking anything:

- ``Timestamp`` must be unix seconds, at most ``max_clock_skew`` (7200 s)
  away from the server's clock;
- ``Authorization`` must be ``"Basic " + base64("<user_id>:" +
  sha256_hex(f"{token}:{timestamp}"))``, built from that same timestamp.

As QuantConnect does, a failed check is answered with HTTP 200 and
``{"success": false, "errors": ["Hash doesn't match."]}`` (a wrong token, a
stale timestamp or a missing header) or ``["UserID not valid"]`` (another
user id). It also checks that the method is POST, that the path ends with
``/lean/versions/read`` (else 405 / 404) and, unless ``user_agent_pattern``
is None, that the User-Agent names leansync and its version (else 400).
Every problem found is appended to ``server.problems``, so a test can
assert ``server.problems == []`` to see *why* something was refused.

Usage::

    with FakeQuantConnect(versions=[...]) as qc:
        env = qc.env()                # QUANTCONNECT_API_URL/USER_ID/API_TOKEN
        ...run leansync...
        assert qc.count == 1          # requests received (any outcome)
        qc.requests[0].headers["User-Agent"]

Answers: requests are answered from ``qc.replies`` (a list consumed front to
back, one Reply per request); once it is empty, ``qc.default`` answers
(initially ``Reply()``: the authenticated versions list). A Reply can set

- ``status`` (HTTP status), ``headers`` (e.g. ``{"Retry-After": "1"}``);
- ``json`` (a document to send) or ``body`` (raw bytes/str, e.g. HTML);
  with neither, a 200 sends ``{"versions": qc.versions, "success": true,
  "errors": []}`` and any other status sends a short text body;
- ``delay`` seconds to wait before answering (for read timeouts);
- ``drop=True`` to close the connection without any answer;
- ``authenticate=False`` to skip the credential check for that reply;
- ``trickle`` seconds between single bytes of the answer: of all of it
  (status line and headers too), or with ``trickle_headers=False`` of the
  body only (a server that sends a byte every few seconds never trips a
  per-read timeout);
- ``chunks``: an iterable of bytes sent as the body, without a
  Content-Length (the connection's end ends it), until it is exhausted or
  the client hangs up: for bodies far larger than the client should read;
- ``content_length`` to announce a length other than the body's.

``qc.reply(*replies)`` appends to the queue. The handler runs in its own
thread per request (ThreadingHTTPServer), so delays do not block other
requests; ``stop()`` (or leaving the ``with`` block) cuts delays short.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENDPOINT = "/lean/versions/read"
DEFAULT_USER_ID = "424242"
DEFAULT_TOKEN = "fake-token-7c1e9b2d4a"  # distinctive, so tests can grep outputs for it
HASH_MISMATCH = "Hash doesn't match."
USER_ID_INVALID = "UserID not valid"


def expected_authorization(user_id: str, token: str, timestamp: str | int) -> str:
    digest = hashlib.sha256(f"{token}:{timestamp}".encode()).hexdigest()
    return "Basic " + base64.b64encode(f"{user_id}:{digest}".encode()).decode("ascii")


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    authenticate: bool = True
    trickle: float = 0.0
    trickle_headers: bool = True
    chunks: Iterable[bytes] | None = None
    content_length: int | None = None


@dataclass(frozen=True)
class Request:
    """One request as received (recorded before it is answered)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeQuantConnect:
    def __init__(self, *, versions: list[dict] | None = None, user_id: str = DEFAULT_USER_ID,
                 token: str = DEFAULT_TOKEN, max_clock_skew: float = 7200,
                 user_agent_pattern: str | None = r"\bleansync/\d+\.\d+"):
        self.versions = list(versions or [])
        self.user_id = user_id
        self.token = token
        self.max_clock_skew = max_clock_skew
        self.user_agent_pattern = user_agent_pattern
        self.replies: list[Reply] = []
        self.default = Reply()
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> FakeQuantConnect:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        # A client that hangs up during a delayed answer is expected, not an error.
        server.handle_error = lambda request, client_address: None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-quantconnect", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeQuantConnect:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests use ----------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The API base URL, with the trailing slash like QuantConnect's."""
        return f"http://127.0.0.1:{self.port}/api/v2/"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment variables pointing leansync at this server."""
        return {"QUANTCONNECT_API_URL": self.url, "QUANTCONNECT_USER_ID": self.user_id,
                "QUANTCONNECT_API_TOKEN": self.token, **overrides}

    def document(self) -> dict:
        return {"versions": self.versions, "success": True, "errors": []}

    # -- the server side -----------------------------------------------------
    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.replies.pop(0) if self.replies else self.default

    def _problem(self, message: str) -> str:
        with self._lock:
            self.problems.append(message)
        return message

    def _auth_error(self, headers: dict[str, str]) -> str | None:
        """QuantConnect's answer to bad credentials, or None if they are good."""
        timestamp = headers.get("Timestamp", "")
        authorization = headers.get("Authorization", "")
        if not re.fullmatch(r"\d+", timestamp):
            self._problem(f"Timestamp header is not unix seconds: {timestamp!r}")
            return HASH_MISMATCH
        if abs(time.time() - int(timestamp)) > self.max_clock_skew:
            self._problem(f"Timestamp {timestamp} is more than {self.max_clock_skew:g} s off")
            return HASH_MISMATCH
        if not authorization.startswith("Basic "):
            self._problem("Authorization header is not Basic")
            return HASH_MISMATCH
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode()
        except ValueError:
            self._problem("Authorization header is not base64")
            return HASH_MISMATCH
        user_id, _, _digest = decoded.partition(":")
        if user_id != self.user_id:
            self._problem(f"user id {user_id!r} is not {self.user_id!r}")
            return USER_ID_INVALID
        if authorization != expected_authorization(self.user_id, self.token, timestamp):
            self._problem("Authorization hash does not match the token and Timestamp")
            return HASH_MISMATCH
        return None

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()}
        request = Request(method=handler.command, path=handler.path, headers=headers, body=body)
        reply = self._next_reply(request)
        if reply.delay and self._stopping.wait(reply.delay):
            return
        if reply.drop:
            handler.close_connection = True
            return

        status, payload = reply.status, None
        if handler.command != "POST":
            status, payload = 405, self._problem(f"method {handler.command} is not POST")
        elif not handler.path.rstrip("/").endswith(ENDPOINT):
            status, payload = 404, self._problem(f"path {handler.path} does not end with {ENDPOINT}")
        elif self.user_agent_pattern and not re.search(self.user_agent_pattern, headers.get("User-Agent", "")):
            status, payload = 400, self._problem(f"User-Agent {headers.get('User-Agent')!r} does not name leansync")
        elif reply.authenticate and (error := self._auth_error(headers)):
            status, payload = 200, {"success": False, "errors": [error]}
        elif reply.json is not None:
            payload = reply.json
        elif reply.body is not None:
            payload = reply.body
        elif status == 200:
            payload = self.document()
        else:
            payload = f"HTTP {status} from the fake QuantConnect"

        if isinstance(payload, (bytes, str)):
            data = payload.encode() if isinstance(payload, str) else payload
            content_type = "text/html; charset=utf-8" if data.lstrip().startswith(b"<") else "text/plain"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        headers = {"Content-Type": content_type}
        if reply.chunks is None:
            headers["Content-Length"] = str(len(data) if reply.content_length is None else reply.content_length)
        elif reply.content_length is not None:
            headers["Content-Length"] = str(reply.content_length)
        headers.update(reply.headers)
        head = f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        handler.close_connection = True
        try:
            if reply.trickle:
                self._trickle(handler, (head.encode() if reply.trickle_headers else b"") + data, reply.trickle,
                              head=b"" if reply.trickle_headers else head.encode())
            elif reply.chunks is not None:
                handler.wfile.write(head.encode())
                for chunk in reply.chunks:
                    if self._stopping.is_set():
                        return
                    handler.wfile.write(chunk)
            else:
                handler.wfile.write(head.encode() + data)
        except OSError:  # the client hung up, as it should on a too large or too slow answer
            pass

    def _trickle(self, handler: BaseHTTPRequestHandler, data: bytes, seconds: float, *, head: bytes) -> None:
        if head:
            handler.wfile.write(head)
        for i in range(len(data)):
            handler.wfile.write(data[i:i + 1])
            if self._stopping.wait(seconds):
                return


def _make_handler(fake: FakeQuantConnect) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            fake._answer(self)

        do_GET = do_PUT = do_DELETE = do_POST

        def log_message(self, format, *args):  # keep test output clean
            pass

    return Handler
