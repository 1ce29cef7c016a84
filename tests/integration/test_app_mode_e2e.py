"""App mode end to end over real HTTP: the emulator plays the portal and the OAuth server
(``--app``), our app runs under gunicorn (2 workers) plus a second server process, on SQLite and
on PostgreSQL. Nothing is mocked: the refresh counter is the emulator's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from bitrix24_emulator import create_emulator, start_server

from ..conftest import API_KEY, _drop_our_tables

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "local.e2e0000000000001.11111111", "e2e-app-secret-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Connection": "close"}  # a new connection: any worker

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One gunicorn (``workers`` processes) serving the standalone app in app mode."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/bitrix"
        self.log = log
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(workers),
               "GUNICORN_THREADS": "16"}
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def deployment(tmp_path, secret_key, database_url):
    emulator = start_server(create_emulator(app=(CLIENT_ID, CLIENT_SECRET), limits=False))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "PROMETHEUS_"))},
           "DATABASE_URL": database_url, "BITRIX_SECRET_KEY": secret_key, "BITRIX_API_KEY": API_KEY,
           "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_ENV_FALLBACK": "0",
           "BITRIX_APP_CLIENT_ID": CLIENT_ID, "BITRIX_APP_CLIENT_SECRET": CLIENT_SECRET,
           "BITRIX_OAUTH_SERVER": emulator.url + "/", "BITRIX_APP_EVENTS": "ONCRMCONTACTADD"}
    first = Server(env, 2, tmp_path / "first.log")
    first.wait()  # the first applies the migrations; the second finds them done
    second = Server(env, 1, tmp_path / "second.log")
    second.wait()
    try:
        yield emulator, first, second
    finally:
        for server in (first, second):
            server.stop()
        emulator.stop()
        if database_url.startswith("postgresql"):
            _drop_our_tables(database_url)


def refreshes(emulator) -> int:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=10).json()["oauth_refreshes"]


def control(emulator, **body) -> None:
    assert requests.post(f"{emulator.url}/_emulator/oauth", json=body, timeout=10).status_code == 200


def test_app_mode_across_processes(deployment):
    emulator, first, second = deployment
    # Install: the emulator posts the install page's request, then ONAPPINSTALL, to our handler.
    r = requests.post(f"{emulator.url}/_emulator/install", json={"handler": f"{first.api}/app/install"}, timeout=30)
    assert r.status_code == 200 and r.json()["installed"] and r.json()["install_status"] == 200, r.text
    member = r.json()["member_id"]
    listed = requests.get(f"{second.api}/app/installations", headers=HEADERS, timeout=10).json()["result"]
    assert [(i["member_id"], i["status"], i["events_verified"]) for i in listed] == [(member, "active", True)]

    # Link to client 5, then CRUD with the app's tokens.
    r = requests.post(f"{first.api}/clients/5/config", json={"member_id": member}, headers=HEADERS, timeout=10)
    assert r.status_code in (200, 201) and r.json()["result"]["source"] == "app", r.text
    r = requests.post(f"{first.api}/clients/5/contacts", json={"fields": {"NAME": "Ann"}}, headers=HEADERS, timeout=10)
    assert r.status_code == 201, r.text
    contact = r.json()["result"]
    assert requests.patch(f"{second.api}/clients/5/contacts/{contact}", json={"LAST_NAME": "Lee"}, headers=HEADERS,
                          timeout=10).status_code == 200
    got = requests.get(f"{second.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=10).json()["result"]
    assert (got["NAME"], got["LAST_NAME"]) == ("Ann", "Lee")
    listed = requests.get(f"{first.api}/clients/5/contacts", headers=HEADERS, timeout=10).json()
    assert [row["ID"] for row in listed["result"]] == [str(contact)]

    # The access token expires; 50 calls at once over 3 processes: exactly one refresh, all succeed.
    for server in (first, second, first, first):  # every process has used (and cached) the current token
        assert requests.get(f"{server.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=10).ok
    control(emulator, expire=True)
    before = refreshes(emulator)
    barrier = threading.Barrier(50)

    def one(i: int) -> int:
        barrier.wait(timeout=30)
        server = first if i % 3 else second
        r = requests.get(f"{server.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=60)
        return r.status_code if r.status_code == 200 else r.text

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses == [200] * 50, [s for s in statuses if s != 200]
    assert refreshes(emulator) - before == 1

    # App events: the install bound ONCRMCONTACTADD offline (BITRIX_APP_EVENTS, the default delivery) on
    # our connector. Contacts added in the portal are queued; the portal's ONOFFLINEEVENT (checked by
    # the installation's application token) makes us drain the queue into client 5's event log. Our own
    # contacts (made with our connector) never come back as events.
    added = requests.post(f"{emulator.url}/_emulator/changes", json={"entity": "contact", "add": 2},
                          timeout=10).json()["added"]
    wanted = {str(i) for i in added}
    deadline = time.monotonic() + 60  # a notification, a drain in another process: seconds on a loaded machine
    while time.monotonic() < deadline:
        events = requests.get(f"{first.api}/clients/5/events", headers=HEADERS, timeout=10).json()["result"]
        if wanted <= {e["entity_id"] for e in events if e["event"] == "ONCRMCONTACTADD"}:
            break
        time.sleep(0.2)
    got = [e["entity_id"] for e in events if e["event"] == "ONCRMCONTACTADD"]
    assert sorted(got) == sorted(wanted), events  # each once, and none for our own contact
    # A forged one (the right member_id, a wrong application token) is stored nowhere.
    forged = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "77", "ts": "1", "auth[member_id]": member,
              "auth[domain]": "127.0.0.1", "auth[application_token]": "f" * 32}
    assert requests.post(f"{second.api}/webhook", data=forged, timeout=10).status_code == 401
    forged["event"] = "ONAPPUNINSTALL"
    assert requests.post(f"{second.api}/app/install", data=forged, timeout=10).status_code == 401
    after = requests.get(f"{first.api}/clients/5/events", headers=HEADERS, timeout=10).json()["result"]
    assert len(after) == len(events) and not any(e["entity_id"] == "77" for e in after)

    # The refresh token is revoked: one refresh attempt, a typed error, then no attempt at all.
    control(emulator, revoke=True, expire=True)
    before = refreshes(emulator)
    r = requests.get(f"{first.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=10)
    assert r.status_code == 409 and r.json()["error"] == "APP_REAUTHORIZATION_REQUIRED", r.text
    for i in range(12):
        server = first if i % 2 else second
        r = requests.get(f"{server.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=10)
        assert r.json()["error"] == "APP_REAUTHORIZATION_REQUIRED"
    assert refreshes(emulator) - before == 1
    view = requests.get(f"{second.api}/app/installations/{member}", headers=HEADERS, timeout=10).json()["result"]
    assert (view["status"], view["problem"]) == ("needs_attention", "invalid_grant")

    # A reinstall gives new tokens; the link to client 5 is kept.
    r = requests.post(f"{emulator.url}/_emulator/install", json={"handler": f"{second.api}/app/install"}, timeout=30)
    assert r.json()["installed"], r.text
    assert requests.get(f"{first.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=10).status_code == 200

    # Uninstall: no token kept, calls refused with a clear error.
    r = requests.post(f"{emulator.url}/_emulator/uninstall", json={}, timeout=30)
    assert r.status_code == 200 and r.json()["event_status"] == 200, r.text
    for server in (first, second):
        r = requests.get(f"{server.api}/clients/5/contacts/{contact}", headers=HEADERS, timeout=10)
        assert r.status_code == 409 and r.json()["error"] == "APP_UNINSTALLED", r.text
