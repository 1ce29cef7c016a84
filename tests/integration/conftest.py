"""End to end over real HTTP on loopback: our app and the emulator, each on a free port, no mocks."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import requests
from flask_bitrix24.config import BITRIX24_SETTINGS
from werkzeug.serving import WSGIRequestHandler, make_server

from bitrix24_emulator import create_emulator, start_server

EVENT_TOKEN = "e2e-application-token"


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


class AppServer:
    def __init__(self, app):
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.port}"
        self.port = self._server.port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Stack:
    app: object
    app_server: AppServer
    emulator: object
    emulator_server: object
    http: requests.Session

    @property
    def api(self) -> str:
        return self.app_server.url + "/api/bitrix"

    def configure(self, client_id=1, token=EVENT_TOKEN, base=None):
        r = self.http.post(f"{self.api}/clients/{client_id}/config",
                           json={"webhook_base": base or self.emulator_server.base, "outbound_token": token})
        assert r.status_code in (200, 201), r.text
        self.emulator.reset_counters()  # the save's own check (one `profile` call) is not the test's
        return r


@pytest.fixture
def make_stack(make_app):
    """Factory: our app on a free port, then an emulator (options as keywords) posting events to it."""
    stops = []

    def factory(app_config=None, **emulator_options):
        # Our own pacing matches the emulator's bucket; with its limits off, pace freely.
        limits = emulator_options.get("limits", False)
        app_config = {
            "BITRIX_MAX_WAIT": 3.0,
            "BITRIX_VERIFY_CONFIG": True,  # a saved webhook is tried on the emulator, as on a portal
            "BITRIX_LIST_CHAINS": BITRIX24_SETTINGS["BITRIX_LIST_CHAINS"][0],  # as shipped (unit tests use 1)
            "BITRIX_BULK_PARALLEL": BITRIX24_SETTINGS["BITRIX_BULK_PARALLEL"][0],
            "BITRIX_RATE_BURST": emulator_options.get("burst", 50) if limits else 100_000,
            "BITRIX_RATE_DRAIN": emulator_options.get("rate", 2.0) if limits else 100_000.0,
            **(app_config or {}),
        }
        app = make_app(real_time=True, **{"BITRIX_ALLOWED_HOSTS": "127.0.0.1,localhost,*.bitrix24.com", **app_config})
        app_server = AppServer(app)
        stops.append(app_server.stop)
        emulator_options.setdefault("event_url", f"{app_server.url}/api/bitrix/webhook")
        emulator_options.setdefault("application_token", EVENT_TOKEN)
        emulator_options.setdefault("limits", False)
        emu = create_emulator(**emulator_options)
        emu_server = start_server(emu)
        stops.append(emu_server.stop)
        http = requests.Session()
        stops.append(http.close)
        return Stack(app, app_server, emu, emu_server, http)

    yield factory
    for stop in reversed(stops):
        stop()


@pytest.fixture
def stack(make_stack):
    s = make_stack()
    s.configure()
    return s
