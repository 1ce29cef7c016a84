"""One portal's HTTP client: a pooled session, timeouts, no redirects, answers turned into results.

A ``PortalClient`` is shared by every call to one portal origin (scheme://host:port) in one app, so
keep-alive connections are reused. It never logs or raises with the webhook URL: the URL holds the
secret. What to retry and how fast to go are decided above it (see ``bitrix24_service``).

A portal is not trusted to be well-behaved: the read timeout bounds each socket read, so a portal
that drips its answer a byte at a time is also held to a total deadline per call (the socket is shut
when it passes); the answer is capped in size after decompression (a small gzip body can expand to
gigabytes); JSON that nests absurdly deep is a bad answer, not a crash.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import heapq
import json
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .._version import __version__
from .errors import PortalMoved, PortalTimeout, ServerError, TransportError, classify
from .numbers import is_digits
from .secrets import mask_url
from .wire import form_body

USER_AGENT = f"flask-bitrix24/{__version__} (+python-requests)"
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.05
    read: float = 30.0  # Bitrix24 cloud stops a single request at 60 s; most answer in well under 1 s
    total: float = 65.0  # the whole call, connect to last byte (the portal's 60 s, plus a margin)
    max_answer_bytes: int = 50 * 1024 * 1024  # decompressed


MAX_RETRY_AFTER = 3600.0  # a Retry-After further away than this is taken as this
_CHUNK = 8192  # decompressed bytes per read: a gzip bomb expands by at most ~1,000x per chunk
MAX_TEMPLATES = 4096  # prepared request heads kept per portal host (one per webhook and method)


class AnswerTooLarge(ServerError):
    default_code = "ANSWER_TOO_LARGE"


class Watchdog:
    """One thread per process that runs each armed callback once its deadline passes, unless it was
    disarmed first. Arming costs a heap push, not a thread per call, and wakes the thread only when
    the new deadline is the earliest: every call arms one, and waking the thread each time made it
    take the GIL from the request being served (nearly every deadline is later than one already armed).
    Disarmed entries stay in the heap until they reach its top, or until they outnumber the armed
    ones, when the heap is rebuilt without them (so it stays within about twice the calls in flight)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._live: set[int] = set()
        self._next = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, delay: float, callback: Any) -> int:
        with self._cond:
            self._next += 1
            token = self._next
            entry = (time.monotonic() + delay, token, callback)
            heapq.heappush(self._heap, entry)
            self._live.add(token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bitrix24-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:  # earlier than what the thread waits for: wake it to wait less
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)
            if len(self._heap) > 2 * len(self._live) + 64:
                self._heap = [entry for entry in self._heap if entry[1] in self._live]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # disarmed: drop it
                if not self._heap:
                    self._cond.wait(timeout=60)
                    continue
                due, token, callback = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
            try:
                callback()
            except Exception:  # noqa: BLE001 - a failed shutdown of a socket is nothing to report
                pass


WATCHDOG = Watchdog()


class PortalClient:
    def __init__(self, origin: str, *, timeouts: Timeouts, pool_size: int = 10) -> None:
        self.origin = origin
        self.timeouts = timeouts
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # Ignore proxies and netrc from the environment: the webhook URL carries a secret.
        self.session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._templates: dict[str, requests.PreparedRequest] = {}  # url -> its request, without body or cookies

    def call(self, base: str, method: str, params: Any = None) -> dict[str, Any]:
        """POST ``method`` with form-encoded ``params`` (or a ready ``EncodedForm``); return the
        decoded envelope or raise."""
        body = form_body(params)
        url = base + method + ".json"
        started = time.monotonic()
        session = self.session
        try:
            prepared = self._prepare(url, body.encode("utf-8"))
            response = session.send(
                prepared,
                timeout=(self.timeouts.connect, self.timeouts.read),
                allow_redirects=False,
                stream=True,  # read below, within the deadline and the size cap
                proxies=session.proxies,
                verify=session.verify,
                cert=session.cert,
            )
        except requests.exceptions.ConnectTimeout:
            raise PortalTimeout(
                f"could not connect to {self.origin} within {self.timeouts.connect} s", sent=False, method=method
            ) from None
        except requests.exceptions.Timeout:
            raise PortalTimeout(
                f"{self.origin} did not answer within {self.timeouts.read} s", sent=True, method=method
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise TransportError(
                f"could not reach {self.origin}: {_reason(exc)}", sent=_maybe_sent(exc), method=method
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"request to {self.origin} failed: {type(exc).__name__}", method=method) from None
        content = self._read(response, method, started)
        return self._envelope(response, content, method)

    def _prepare(self, url: str, body: bytes) -> requests.PreparedRequest:
        """What ``session.post(url, data=body, headers=_FORM_HEADERS)`` would send, byte for byte.

        Session.request merges the session's headers, cookies and hooks (and the environment's settings,
        which trust_env=False leaves out) through requests' generic paths, and prepares the URL and the
        headers again, on every call: ~0.1 ms of CPU. Here the URL and the headers are prepared once per
        URL (a copy of that is ~4 us); each call adds its body and the session's cookies as they are now,
        in the order PreparedRequest.prepare does. The send is still the session's (adapters, hooks, the
        cookies the portal sets)."""
        template = self._templates.get(url)
        if template is None:
            session = self.session
            template = requests.PreparedRequest()
            template.prepare(method="POST", url=url, hooks=session.hooks,
                             headers={**{k: v for k, v in session.headers.items() if v is not None}, **_FORM_HEADERS})
            template.headers.pop("Content-Length", None)  # "0" for a POST without a body: each call sets its own
            template._cookies = None  # each call takes the session's jar: nothing to copy
            if len(self._templates) >= MAX_TEMPLATES:  # many tenants' webhooks on one portal host
                self._templates.clear()
            self._templates[url] = template
        prepared = template.copy()
        prepared.prepare_cookies(self.session.cookies)
        prepared.prepare_body(body, None)
        return prepared

    def _read(self, response: requests.Response, method: str, started: float) -> bytes:
        """The answer's body, decompressed, or PortalTimeout past the total deadline, or
        AnswerTooLarge past the cap. The connection is never reused after either."""
        remaining = self.timeouts.total - (time.monotonic() - started)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the read blocked on it
            except OSError:
                pass

        token = WATCHDOG.arm(max(0.0, remaining), expire)
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(_CHUNK):
                size += len(chunk)
                if size > self.timeouts.max_answer_bytes:
                    raise AnswerTooLarge(
                        f"the portal's answer is larger than {self.timeouts.max_answer_bytes} bytes "
                        "(BITRIX_MAX_ANSWER_BYTES)", http_status=response.status_code, method=method
                    )
                chunks.append(chunk)
                if expired.is_set():
                    break
        except requests.exceptions.RequestException as exc:
            if not expired.is_set():
                raise TransportError(
                    f"{self.origin} broke off its answer: {_reason(exc)}", sent=True, method=method
                ) from None
        except AnswerTooLarge:
            response.close()
            raise
        finally:
            WATCHDOG.disarm(token)
        if expired.is_set():
            response.close()
            raise PortalTimeout(
                f"{self.origin} did not finish answering within {self.timeouts.total} s (BITRIX_TIMEOUT_TOTAL)",
                sent=True, method=method,
            )
        return b"".join(chunks)

    def _envelope(self, response: requests.Response, content: bytes, method: str) -> dict[str, Any]:
        status = response.status_code
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("Location", ""))
            where = target.hostname or "an unknown address"
            raise PortalMoved(
                f"the portal answered {status} and points to {where}; if the portal was renamed, "
                "save the new webhook base for this client",
                http_status=status,
                method=method,
            )
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past Python's limit
            data = None
        if not isinstance(data, dict):
            raise ServerError(
                f"the portal answered HTTP {status} with something that is not a Bitrix24 JSON envelope",
                http_status=status,
                method=method,
            )
        if "error" in data or status >= 400:
            retry_after = _retry_after(response)
            error = classify(status, data.get("error"), data.get("error_description"), method=method, body=data)
            error.retry_after = retry_after
            raise error
        if "result" not in data:
            raise ServerError("the portal's answer has no 'result'", http_status=status, method=method)
        return data

    def forget_prepared(self) -> None:
        """Drop the kept request heads (their URLs hold webhook secrets): a client's config changed."""
        self._templates = {}

    def close(self) -> None:
        self.session.close()


def parse_retry_after(header: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110, section 10.2.3), capped
    at MAX_RETRY_AFTER; None when absent or not either form (``inf``, ``nan``, ``-1``, garbage)."""
    if not header or len(header) > 64:
        return None
    text = header.strip()
    if is_digits(text):
        return min(float(text), MAX_RETRY_AFTER)
    try:
        seconds = float(text)  # not the RFC's form, but some servers send "1.5"
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
        return min(max(0.0, seconds), MAX_RETRY_AFTER)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def _retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def _reason(exc: Exception) -> str:
    # The exception text from urllib3 contains the full URL (and so the secret): keep only its class.
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
        "Connection aborted",
        "RemoteDisconnected",
        "certificate verify failed",
        "No route to host",
        "timed out",
    ):
        if marker in text:
            return marker
    return type(exc).__name__


def _maybe_sent(exc: Exception) -> bool:
    """Whether the request may have reached the portal, decided by the exception's type (as
    urllib3's ``Retry`` does), never by its text: failures to connect (refused, DNS, connect
    timeout, TLS handshake) happen before a byte of the request leaves; anything else (reset,
    remote closed, an unknown cause) may come after the portal read it, so it counts as sent."""
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
    from urllib3.exceptions import SSLError as Urllib3SSLError

    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return False
    cause: Any = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return not isinstance(cause, (NewConnectionError, ConnectTimeoutError, Urllib3SSLError))


class PortalPool:
    """The app's ``PortalClient`` per origin, created on first use. Thread-safe."""

    def __init__(self, timeouts: Timeouts, pool_size: int = 10) -> None:
        self.timeouts = timeouts
        self.pool_size = pool_size
        self._clients: dict[str, PortalClient] = {}
        self._lock = threading.Lock()

    def for_base(self, base: str) -> PortalClient:
        parts = urlsplit(base)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            client = self._clients.get(origin)
            if client is None:
                client = self._clients[origin] = PortalClient(origin, timeouts=self.timeouts, pool_size=self.pool_size)
            return client

    def forget_prepared(self) -> None:
        """A client's config changed: no request head built from an old webhook URL is kept."""
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            client.forget_prepared()

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


__all__ = ["AnswerTooLarge", "PortalClient", "PortalPool", "Timeouts", "mask_url", "parse_retry_after"]
