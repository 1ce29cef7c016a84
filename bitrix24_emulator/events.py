"""Outbound events: the portal's table of bound handlers and one background worker that posts them.

A portal keeps a table of event handlers: each binding is one event name, one handler URL and its own
``event_handler_id`` (the id a handler receives with every event it is sent). An event is posted once
to every handler bound to its name, in the order they were bound. Bindings come from two places:

- the portal's outbound webhook (``event_url=``/``--event-url``, or :meth:`HandlerTable.bind` with no
  app): Bitrix24 lets an administrator set one up in the portal's settings, with no REST call; the
  emulator binds ``event_url`` to every event the portal raises (the CRM events up front, in a fixed
  order so their ids are 1, 2, ...; any other the first time it is raised);
- ``event.bind`` by an application (eventsapi.py; OAuth only, a webhook is refused).

Delivery is form-encoded (https://apidocs.bitrix24.com/api-reference/events/index.html). As on the
portal, whose queue server "logs the failure but will not resend the event", each post is tried once
and its outcome logged (``events_sent``), never retried
(https://apidocs.bitrix24.com/settings/performance/index.html).
"""

from __future__ import annotations

import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlencode


class DuplicateBinding(ValueError):
    """The same handler is already bound to the event for this app, user and connector."""


@dataclass
class Binding:
    id: int
    event: str  # upper case
    handler: str  # "" for an offline binding (queued, never posted)
    user_id: int = 0  # auth_type: 0 = the user whose action raised the event
    app_id: object = None  # None: the portal's outbound webhook
    connector_id: str = ""
    options: dict = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return self.handler == ""

    def listed(self) -> dict:
        """The row ``event.get`` returns for this binding (USER_ID comes from the database: a string)
        (https://apidocs.bitrix24.com/api-reference/events/event-get.html)."""
        if self.offline:
            return {"event": self.event, "connector_id": self.connector_id, "offline": 1}
        return {"event": self.event, "handler": self.handler, "auth_type": str(self.user_id), "offline": 0}


class HandlerTable:
    """A portal's event bindings. Not locked itself: the portal calls it under its own lock."""

    def __init__(self, default_url: str | None = None, prebound=()):
        self.default_url = default_url
        self._bindings: list[Binding] = []
        self._next_id = 1
        self._defaulted: set[str] = set()  # events the outbound webhook URL has been bound to once
        for name in prebound:
            self._bind_default(name)

    def _bind_default(self, name: str) -> None:
        self._defaulted.add(name)
        if self.default_url:
            self.bind(name, self.default_url)

    def bind(self, event: str, handler: str, *, user_id: int = 0, app_id=None, connector_id: str = "",
             options: dict | None = None) -> Binding:
        event = event.upper()
        for b in self._bindings:
            if (b.app_id, b.event, b.handler, b.user_id, b.connector_id) == (
                    app_id, event, handler, int(user_id), connector_id):
                raise DuplicateBinding("Handler already binded")
        binding = Binding(self._next_id, event, handler, int(user_id), app_id, connector_id, dict(options or {}))
        self._next_id += 1
        self._bindings.append(binding)
        return binding

    def unbind(self, event: str | None = None, handler: str | None = None, *, app_id=None, user_id=None,
               connector_id: str | None = None, any_app: bool = False) -> int:
        """Remove the bindings matching every criterion given (None: any); returns how many."""
        def matches(b: Binding) -> bool:
            return ((any_app or b.app_id == app_id)
                    and (event is None or b.event == event.upper())
                    and (handler is None or b.handler == handler)
                    and (user_id is None or b.user_id == int(user_id))
                    and (connector_id is None or b.connector_id == connector_id))

        kept = [b for b in self._bindings if not matches(b)]
        count = len(self._bindings) - len(kept)
        self._bindings = kept
        return count

    def bindings(self, app_id=None, any_app: bool = True) -> list[Binding]:
        return [b for b in self._bindings if any_app or b.app_id == app_id]

    def handlers_for(self, name: str) -> list[Binding]:
        """The online bindings an event named ``name`` is posted to (binding the outbound webhook URL
        to it first if this is the first time the portal raises it)."""
        name = name.upper()
        if name not in self._defaulted:
            self._bind_default(name)
        return [b for b in self._bindings if b.event == name and not b.offline]

    def offline_for(self, name: str) -> list[Binding]:
        """The offline bindings (``event.bind`` with ``event_type=offline``) of an event named ``name``."""
        name = name.upper()
        return [b for b in self._bindings if b.event == name and b.offline]

    def online_of_apps(self, name: str) -> list[Binding]:
        """The applications' online bindings of ``name`` (never the outbound webhook's: ONOFFLINEEVENT is
        an application's event only)."""
        name = name.upper()
        return [b for b in self._bindings if b.event == name and not b.offline and b.app_id is not None]


class EventSender:
    """One daemon thread posting queued ``(url, pairs)`` in order; started on the first event."""

    def __init__(self, timeout: float, on_attempt):
        self.timeout = timeout
        self.on_attempt = on_attempt  # called with (url, pairs, status, error) after each attempt
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

    def enqueue(self, url: str, pairs: list[tuple[str, str]]) -> None:
        with self._idle:
            self._pending += 1
        self._ensure_worker()
        self._queue.put((url, pairs))

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

    def _post(self, url, pairs) -> tuple[int | None, str | None]:
        data = urlencode(pairs).encode("ascii")
        request = urllib.request.Request(
            url, data=data, method="POST",
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
            url, pairs = self._queue.get()
            try:
                status, error = self._post(url, pairs)
                self.on_attempt(url, pairs, status, error)
            finally:
                self._done()
