"""Bulk updates several batch requests at a time (BITRIX_BULK_PARALLEL), with the portal mocked by
``responses``: how many are in flight, what a failure leaves undone, and creates kept in order."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qsl

import pytest
from flask_bitrix24.services.bulk import bulk_write

from tests.conftest import PORTAL_BASE, portal_url


def _keys(request) -> list[str]:
    body = request.body if isinstance(request.body, str) else request.body.decode()
    return [k[4:-1] for k, _ in parse_qsl(body) if k.startswith("cmd[")]


class SlowPortal:
    """Answers each batch with true for every command after ``delay`` seconds (real time), counting how
    many requests are in flight at once; ``refuse`` names command keys whose whole request gets a 401.

    ``hold_until(portal)``: a batch it answers is first held until that holds (at most 10 s, once), then takes its
    ``delay``: requests that leave our threads together overlap here however late a loaded machine starts a
    thread, instead of the first being answered before the last has come."""

    def __init__(self, delay: float = 0.15, refuse: str | None = None, hold_until=None) -> None:
        self.delay, self.refuse, self.hold_until = delay, refuse, hold_until
        self.in_flight = self.peak = 0
        self.order: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, request):
        keys = _keys(request)
        with self._changed:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.order.append(keys[0])
            self._changed.notify_all()
        try:
            if self.refuse in keys:
                return 401, {}, '{"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}'
            with self._changed:
                if not self._changed.wait_for(lambda: self.hold_until is None or self.hold_until(self), 10):
                    self.hold_until = None  # it never came: hold nothing more (the test's assertions will say)
                    self._changed.notify_all()
            time.sleep(self.delay)
            return 200, {}, json.dumps({"result": {"result": {k: True for k in keys}, "result_error": [],
                                                   "result_total": [], "result_next": [], "result_time": []}})
        finally:
            with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()


@pytest.fixture
def app(make_app):
    return make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_BULK_PARALLEL=4)


def test_updates_go_four_batches_at_a_time(app, portal):
    slow = SlowPortal(hold_until=lambda p: p.in_flight >= 4)  # 8 batches: two rounds of four
    portal.add_callback("POST", portal_url("batch"), callback=slow)
    with app.app_context():
        outcomes = bulk_write("crm.contact", [{"id": i + 1, "fields": {"NAME": f"N{i}"}} for i in range(400)])
    assert [o.error for o in outcomes] == [None] * 400 and [o.id for o in outcomes] == list(range(1, 401))
    assert len(portal.calls) == 8 and slow.peak == 4


def test_a_failure_starts_nothing_more_and_says_so_on_every_item_left(make_app, portal):
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_BULK_PARALLEL=2)
    # The second batch is refused at once; the first is answered only after that refusal came in, and slowly.
    slow = SlowPortal(delay=1.0, refuse="w50", hold_until=lambda p: "w50" in p.order)
    portal.add_callback("POST", portal_url("batch"), callback=slow)
    with app.app_context():
        outcomes = bulk_write("crm.contact", [{"id": i + 1, "fields": {"NAME": "x"}} for i in range(200)])
    assert [o.error for o in outcomes[:50]] == [None] * 50  # in flight when it failed: finished
    assert {o.error.code for o in outcomes[50:]} == {"INVALID_CREDENTIALS"}  # its own, and the two never sent
    assert len(portal.calls) == 2


def test_a_call_with_creates_sends_its_batches_in_order(app, portal):
    slow = SlowPortal(delay=0.05)
    portal.add_callback("POST", portal_url("batch"), callback=slow)
    with app.app_context():
        bulk_write("crm.contact", [{"fields": {"NAME": f"N{i}"}} for i in range(150)])
    assert slow.peak == 1 and slow.order == ["w0", "w50", "w100"]  # new IDs follow the items


def test_each_methods_wait_for_room_comes_out_of_the_time_left_not_on_top_of_it(monkeypatch):
    """A batch of creates and updates waits for room in two budgets: the second wait gets what the first
    left of the request's time (BITRIX_BULK_MAX_WAIT, which a proxy in front of us waits for), not all of it."""
    from flask_bitrix24.services.bulk import write

    clock, given = [0.0], []

    def room(name, *, client_id, max_wait, at_least):
        given.append((name, max_wait, at_least))
        clock[0] += 40  # it waited 40 s for room
        return 3

    monkeypatch.setattr(write, "operating_room", room)
    chunk = [(None, ("crm.contact.add", {}))] * 2 + [(None, ("crm.contact.update", {}))] * 12
    assert write._fitting(chunk, 1, lambda: 100 - clock[0]) == 5  # both adds, then 3 updates: what fits
    assert given == [("crm.contact.add", 100, 2), ("crm.contact.update", 60, 10)]
