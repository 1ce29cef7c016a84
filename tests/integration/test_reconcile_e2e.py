"""Reconciliation over real HTTP: the portal's pushed events are lost on the way (the emulator drops
them), and a reconciliation run finds every change no event announced and hands it to the handlers,
once; changes whose events did arrive are left alone."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests
from flask_bitrix24.extensions import bitrix24

EVENTS = ("ONCRMCONTACTADD", "ONCRMCONTACTUPDATE")

pytestmark = pytest.mark.slow


@pytest.fixture
def seen():
    calls: Counter = Counter()
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}

    def count(event):
        calls[(event.name, event.entity_id, bool(event.payload.get("synthetic")))] += 1

    for name in EVENTS:
        bitrix24.hooks.add_handler(name, count)
    yield calls
    bitrix24.hooks._handlers.clear()
    bitrix24.hooks._handlers.update(saved)


def reconcile(app) -> str:
    result = app.test_cli_runner().invoke(args=["bitrix24", "reconcile", "--client-id", "1"])
    assert result.exit_code == 0, result.output
    return result.output


def test_changes_whose_events_were_lost_are_found_once(make_stack, seen):
    # No look back and a short overlap: the preloaded contacts (made without events) stay out of it.
    stack = make_stack({"BITRIX_RECONCILE_ENTITIES": "contacts", "BITRIX_RECONCILE_LOOKBACK": 0,
                        "BITRIX_RECONCILE_OVERLAP": 0.5},
                       preload={"contact": 20})
    stack.configure()
    emulator_url = stack.emulator_server.url
    time.sleep(2.1)  # the preloaded contacts are older than the first run and its overlap (timestamps have seconds)
    assert ": 0 changed, 0 not announced" in reconcile(stack.app)  # the first run starts the cursor now

    # Pushes lost on the way: 5 contacts added and 4 updated in the portal, no event reaches us.
    assert requests.post(f"{emulator_url}/_emulator/events", json={"drop": True}, timeout=10).status_code == 200
    changes = requests.post(f"{emulator_url}/_emulator/changes", json={"entity": "contact", "add": 5,
                                                                       "update": [3, 4, 5, 6]}, timeout=10).json()
    stack.emulator.wait_events()
    assert not seen
    output = reconcile(stack.app)
    assert ": 9 changed, 9 not announced" in output, output
    expected = {("ONCRMCONTACTADD", str(i), True) for i in changes["added"]} | \
        {("ONCRMCONTACTUPDATE", str(i), True) for i in changes["updated"]}
    assert set(seen) == expected and set(seen.values()) == {1}
    assert "9 changed, 0 not announced" in reconcile(stack.app)  # the overlap reads them again: not twice
    assert set(seen.values()) == {1}

    # Pushes arrive again: a change whose event came is not reported as missed.
    requests.post(f"{emulator_url}/_emulator/events", json={"drop": False}, timeout=10)
    requests.post(f"{emulator_url}/_emulator/changes", json={"entity": "contact", "update": [7]}, timeout=10)
    assert stack.emulator.wait_events(30)
    deadline = time.monotonic() + 30  # its handler runs after the answer: a loaded machine can take seconds
    while ("ONCRMCONTACTUPDATE", "7", False) not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen[("ONCRMCONTACTUPDATE", "7", False)] == 1
    assert ", 0 not announced" in reconcile(stack.app)
    assert ("ONCRMCONTACTUPDATE", "7", True) not in seen
