"""The overall deadline of one fetch (`sync --deadline`).

A per-read timeout does not stop a server that trickles its answer a byte
at a time. Three pieces bound the fetch as a whole: urllib3's `total`
timeout of each attempt is what is left of the deadline (DeadlineTimeout),
the retry policy refuses a wait that would end past it (api.CappedRetry),
and a watchdog shuts down the fetch's sockets when it passes, which ends a
read at once, in the headers or the body.
"""

import contextvars
import socket
import threading
import time

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager
from urllib3.util.timeout import Timeout


class DeadlinePassed(Exception):
    """Raised inside the HTTP stack when the fetch's deadline has passed (or a wait would pass it)."""


class Deadline:
    """The bound of one fetch, on the monotonic clock; a context manager
    that runs the watchdog and makes itself the current deadline, which the
    connections made meanwhile register their sockets with."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def left(self) -> float:
        return self.expires_at - time.monotonic()

    def passed(self) -> bool:
        return self._expired or self.left() <= 0

    def check(self, wait: float = 0.0) -> None:
        if self.passed() or wait >= self.left():
            raise DeadlinePassed()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self._expired:
                _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut_down(sock)

    def __enter__(self) -> "Deadline":
        self._timer.start()
        self._token = _current_deadline.set(self)
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current_deadline.reset(self._token)


def _shut_down(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also under TLS: it only wakes the reader with EOF.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


_current_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("deadline", default=None)


class _Watched:
    """A urllib3 connection whose socket the current fetch's deadline can shut down."""

    def _new_conn(self):
        sock = super()._new_conn()
        deadline = _current_deadline.get()
        if deadline is not None:
            deadline.watch(sock)
        return sock


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


WATCHED_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """requests' adapter, with connections the deadline's watchdog knows of (proxied ones too)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # SOCKS managers bring their own pools
            manager.pool_classes_by_scheme = WATCHED_POOLS
        return manager


class DeadlineTimeout(Timeout):
    """Per attempt (urllib3 clones the timeout for each), urllib3's own `total`
    bound is what is left of the deadline."""

    def __init__(self, seconds: float, deadline: Deadline):
        super().__init__(connect=seconds, read=seconds)
        self.deadline = deadline

    def clone(self) -> Timeout:
        return Timeout(connect=self._connect, read=self._read, total=max(self.deadline.left(), 0.001))
