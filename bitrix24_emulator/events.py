"""Outbound event delivery (§8): one background worker posts form-encoded payloads in order.

Like the Bitrix queue server, a failed delivery is logged (in ``events_sent``) and never retried.
"""

from __future__ import annotations

import queue
import threading
import urllib.error
import urllib.request
from urllib.parse import urlencode


class EventSender:
    def __init__(self, url: str, timeout: float, on_attempt):
        self.url = url
        self.timeout = timeout
        self.on_attempt = on_attempt  # called with (pairs, status, error) after each attempt
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="b24-emulator-events", daemon=True)
                self._thread.start()

    def enqueue(self, pairs: list[tuple[str, str]]) -> None:
        with self._idle:
            self._pending += 1
        self._ensure_worker()
        self._queue.put(pairs)

    def discard_pending(self) -> None:
        """Drop events not yet posted (used by reset)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._done()

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until every queued event has been attempted; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def _post(self, pairs) -> tuple[int | None, str | None]:
        data = urlencode(pairs).encode("ascii")
        request = urllib.request.Request(
            self.url, data=data, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "User-Agent": "Bitrix24 Webhook Engine"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                return response.status, None
        except urllib.error.HTTPError as err:
            return err.code, f"HTTP {err.code}"
        except Exception as err:  # timeouts, refused connections: logged, never retried
            return None, f"{type(err).__name__}: {err}"

    def _run(self) -> None:
        while True:
            pairs = self._queue.get()
            try:
                status, error = self._post(pairs)
                self.on_attempt(pairs, status, error)
            finally:
                self._done()
