"""Offline events end to end over real HTTP: our app is stopped, the portal changes 500 records, our app
starts again and every change reaches the handlers exactly once; a drain killed between fetching and
storing loses nothing and runs nothing twice. The emulator plays the portal (its offline queue follows
https://apidocs.bitrix24.com/api-reference/events/offline-events.html)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import pytest
import requests
from flask_bitrix24.extensions import bitrix24
from werkzeug.serving import make_server

from bitrix24_emulator import create_emulator, start_server

from .conftest import _Quiet

CLIENT_ID, CLIENT_SECRET = "local.offline000000001.11111111", "offline-app-secret-0123456789"
EVENTS = ("ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE")

pytestmark = pytest.mark.slow


class Crash(BaseException):
    """The process dies here (not an error anything catches)."""


class Server:
    """Our app on a fixed port, so it can be stopped and started again where the portal posts."""

    def __init__(self, app, port: int) -> None:
        self.app, self.port = app, port
        self.api = f"http://127.0.0.1:{port}/api/bitrix"
        self._server = None
        self._thread = None

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True, request_handler=_Quiet)
        # stop() waits for the request threads (serve_forever joins them as it ends): an ONOFFLINEEVENT's
        # drain runs in one after the answer and looks at the queue again once the notification pause is
        # over; it must not outlive the test.
        self._server.daemon_threads = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._thread.join(timeout=60)
            self._server.server_close()
            self._server = None


@pytest.fixture
def seen():
    """Handlers for the contact events, counting what each one receives; removed afterwards."""
    calls: Counter = Counter()
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}

    def count(event):
        calls[(event.name, event.entity_id)] += 1

    for name in EVENTS:
        bitrix24.hooks.add_handler(name, count)
    yield calls
    bitrix24.hooks._handlers.clear()
    bitrix24.hooks._handlers.update(saved)


@pytest.fixture
def deployment(request, make_app, seen):
    """The emulator and our app served on a port; ``request.param`` (indirect parametrization): more config."""
    emulator = start_server(create_emulator(app=(CLIENT_ID, CLIENT_SECRET), limits=False, preload={"contact": 300}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app(real_time=True, BITRIX_ALLOWED_HOSTS="127.0.0.1", BITRIX_ENV_FALLBACK=False,
                   BITRIX_APP_CLIENT_ID=CLIENT_ID, BITRIX_APP_CLIENT_SECRET=CLIENT_SECRET,
                   BITRIX_OAUTH_SERVER=emulator.url + "/", BITRIX_APP_EVENTS=",".join(EVENTS),
                   **getattr(request, "param", {}))
    server = Server(app, port)
    server.start()
    try:
        yield emulator, app, server
    finally:
        server.stop()
        emulator.stop()


def drain(app) -> str:
    result = app.test_cli_runner().invoke(args=["bitrix24", "offline-drain"])
    assert result.exit_code == 0, result.output
    return result.output


def queued(emulator) -> int:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=10).json()["offline_queued"]


def test_changes_made_while_we_were_down_reach_the_handlers_exactly_once(deployment, seen):
    emulator, app, server = deployment
    r = requests.post(f"{emulator.url}/_emulator/install", json={"handler": f"{server.api}/app/install"}, timeout=30)
    assert r.json()["installed"], r.text
    assert requests.post(f"{server.api}/clients/5/config", json={"member_id": r.json()["member_id"]},
                         timeout=10).status_code in (200, 201)

    server.stop()  # deploying, crashed, cut off: the portal's pushes find nobody
    changes = requests.post(f"{emulator.url}/_emulator/changes", timeout=60, json={
        "entity": "contact", "add": 250, "update": list(range(1, 151)), "delete": list(range(151, 251))}).json()
    assert (len(changes["added"]), len(changes["updated"]), len(changes["deleted"])) == (250, 150, 100)
    assert queued(emulator) == 500
    server.start()

    output = drain(app)  # what the worker does every BITRIX_OFFLINE_DRAIN_SECONDS
    assert "500 stored" in output, output
    expected = {("ONCRMCONTACTADD", str(i)) for i in changes["added"]} | \
        {("ONCRMCONTACTUPDATE", str(i)) for i in changes["updated"]} | \
        {("ONCRMCONTACTDELETE", str(i)) for i in changes["deleted"]}
    assert set(seen) == expected and set(seen.values()) == {1}
    assert queued(emulator) == 0
    listed = requests.get(f"{server.api}/clients/5/events?limit=500", timeout=10).json()
    assert listed["total"] >= 500

    # Our own writes (on our auth_connector) are not queued for us: no echo.
    mine = requests.post(f"{server.api}/clients/5/contacts", json={"fields": {"NAME": "Ours"}}, timeout=10).json()
    assert queued(emulator) == 0 and ("ONCRMCONTACTADD", str(mine["result"])) not in seen

    # Online again: a change in the portal is pushed as ONOFFLINEEVENT, and we drain at once. (The portal
    # notified once while we were down and then pauses for minTimeout; the drain above returned only after
    # looking at the queue again once that pause was over, so this change is announced.)
    more = requests.post(f"{emulator.url}/_emulator/changes", json={"entity": "contact", "add": 1}, timeout=10).json()
    deadline = time.monotonic() + 30  # a notification, a drain and the handlers: seconds on a loaded machine
    while ("ONCRMCONTACTADD", str(more["added"][0])) not in seen and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen[("ONCRMCONTACTADD", str(more["added"][0]))] == 1


MIN_TIMEOUT = 3


@pytest.mark.parametrize("deployment", [{"BITRIX_OFFLINE_MIN_TIMEOUT": MIN_TIMEOUT}], indirect=True)
def test_a_change_during_the_notification_pause_reaches_the_handlers(deployment, seen):
    """The portal posts ONOFFLINEEVENT at most once per minTimeout and drops the ones in between (it never
    sends them later): a change made after our drain and before the pause ends is announced by nobody.
    The drain looks at the queue again once the pause is over, so it comes all the same, long before the
    worker's schedule (BITRIX_OFFLINE_DRAIN_SECONDS) would find it."""
    emulator, app, server = deployment
    r = requests.post(f"{emulator.url}/_emulator/install", json={"handler": f"{server.api}/app/install"}, timeout=30)
    assert r.json()["installed"], r.text
    requests.post(f"{server.api}/clients/5/config", json={"member_id": r.json()["member_id"]}, timeout=10)

    def change() -> str:
        added = requests.post(f"{emulator.url}/_emulator/changes", json={"entity": "contact", "add": 1},
                              timeout=10).json()["added"]
        return str(added[0])

    def arrives(contact: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while ("ONCRMCONTACTADD", contact) not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        return ("ONCRMCONTACTADD", contact) in seen

    started = time.monotonic()  # before the first change's hit ends, so before its notification
    first = change()
    assert arrives(first, 30)  # notified and drained at once (a loaded machine can take seconds)
    second = change()  # after that drain: only the pause's end can bring it
    within_pause = time.monotonic() - started < MIN_TIMEOUT
    # Nothing but the drain's second look can bring it (no worker runs here), so a long wait proves the same.
    assert arrives(second, MIN_TIMEOUT + 30), "a change made during the notification pause was not fetched"
    notifications = [e for e in emulator.emulator.events_sent if e["event"] == "ONOFFLINEEVENT"]
    if within_pause:  # (a very slow machine may have made the second change after the pause: then it was notified)
        assert len(notifications) == 1, notifications
    assert seen[("ONCRMCONTACTADD", first)] == 1 and seen[("ONCRMCONTACTADD", second)] == 1
    assert queued(emulator) == 0


def test_a_drain_killed_between_fetching_and_storing_loses_nothing(deployment, seen, monkeypatch):
    emulator, app, server = deployment
    r = requests.post(f"{emulator.url}/_emulator/install", json={"handler": f"{server.api}/app/install"}, timeout=30)
    requests.post(f"{server.api}/clients/5/config", json={"member_id": r.json()["member_id"]}, timeout=10)
    server.stop()
    changes = requests.post(f"{emulator.url}/_emulator/changes", json={"entity": "contact", "update": 120},
                            timeout=30).json()
    server.start()

    from flask_bitrix24.services import events as events_service

    real, calls = events_service.store_pulled_event, {"n": 0}

    def dies_on_the_40th(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 40:
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(events_service, "store_pulled_event", dies_on_the_40th)
    with pytest.raises(Crash), app.app_context():
        from flask_bitrix24.services import offline

        offline.drain(r.json()["member_id"])
    assert len(seen) < 120 and queued(emulator) == 120  # the batch is still the portal's, reserved
    monkeypatch.setattr(events_service, "store_pulled_event", real)

    output = drain(app)
    assert "already stored" in output and queued(emulator) == 0, output
    assert set(seen) == {("ONCRMCONTACTUPDATE", str(i)) for i in changes["updated"]}
    assert set(seen.values()) == {1}
