"""Fixtures for the emulator tests: a controllable clock and a tiny JSON-calling helper."""

from __future__ import annotations

import json

import pytest
from werkzeug.test import Client

from bitrix24_emulator import create_emulator

BASE = "/rest/1/demo/"
T0 = 1795766400.0  # 2026-11-27T08:00:00Z, i.e. 11:00 at +03:00


class FakeClock:
    def __init__(self, start: float = T0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """Calls the WSGI app in-process and decodes the JSON answer."""

    def __init__(self, emu):
        self.emu = emu
        self.client = Client(emu)

    def raw(self, method: str, payload=None, **kwargs):
        if payload is not None:
            kwargs["json"] = payload
        return self.client.post(BASE + method, **kwargs)

    def __call__(self, method: str, payload=None, **kwargs):
        response = self.raw(method, payload, **kwargs)
        return response.status_code, json.loads(response.get_data(as_text=True))

    def ok(self, method: str, payload=None, **kwargs):
        status, body = self(method, payload, **kwargs)
        assert status == 200, body
        return body["result"]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def emu(clock):
    return create_emulator(clock=clock)


@pytest.fixture
def api(emu):
    return Api(emu)


def make_api(**options) -> Api:
    options.setdefault("clock", FakeClock())
    return Api(create_emulator(**options))
