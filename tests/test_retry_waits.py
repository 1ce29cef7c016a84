"""The retry loop's waits themselves: how long, how many, within which bound (no HTTP, no Flask).

A fake portal pool raises the errors a portal would; a clock that moves only when the caller sleeps
records every wait. What is asserted is what a user of a failing portal would see: the backoff grows,
is jittered, never passes the call's bound, and writes that may have landed are not repeated.
"""

from __future__ import annotations

import random

import pytest
from flask_bitrix24.services.caller import PortalCaller, RetryPolicy
from flask_bitrix24.services.errors import RateLimited, ServerError, TransportError
from flask_bitrix24.services.limiter import BucketParams, OperatingBudgets

from .conftest import FakeTime

BASE = "https://b24-x.bitrix24.com/rest/1/secretsecret/"


class FakePool:
    """The portal: raises the queued errors, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), 0

    def for_base(self, base):
        return self

    def call(self, base, method, params):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"result": "ok", "time": {}}


class FreeBuckets:
    """No pacing, so every recorded sleep is a retry's."""

    def reserve(self, portal, bucket, allowed):
        return 0.0

    def fill(self, portal, bucket):
        pass


def limit_exceeded() -> RateLimited:
    return RateLimited("Too many requests", code="QUERY_LIMIT_EXCEEDED", http_status=503)


def caller(pool: FakePool, **policy) -> tuple[PortalCaller, FakeTime, list]:
    clock = FakeTime()
    events: list = []
    c = PortalCaller(pool, FreeBuckets(), OperatingBudgets(clock=clock.time), RetryPolicy(**policy),
                     sleep=clock.sleep, clock=clock.monotonic, on_event=lambda name, info: events.append(name))
    return c, clock, events


def call(c: PortalCaller, method: str = "crm.contact.get", **kwargs):
    return c.call(BASE, method, b"id=1", bucket=BucketParams(50, 2.0, 0.99), **kwargs)


def test_backoff_doubles_up_to_its_cap_then_the_last_error_surfaces(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the top of each jitter window
    pool = FakePool(*[limit_exceeded() for _ in range(10)])
    c, clock, events = caller(pool, attempts=6, backoff_base=0.5, backoff_max=3.0, max_wait=60)
    with pytest.raises(RateLimited):
        call(c)
    assert pool.calls == 6
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]  # 0.5 * 2**(n-1), capped at backoff_max
    assert events.count("retry") == 5  # one per wait actually taken


def test_waits_are_jittered_within_each_window():
    pool = FakePool(*[limit_exceeded() for _ in range(5)])
    c, clock, _ = caller(pool, attempts=6, backoff_base=0.5, backoff_max=8.0, max_wait=60)
    assert call(c)["result"] == "ok"
    windows = [RetryPolicy(backoff_base=0.5, backoff_max=8.0).window(n) for n in range(1, 6)]
    assert len(clock.sleeps) == 5 and all(0 <= s <= w for s, w in zip(clock.sleeps, windows, strict=True))
    assert len(set(clock.sleeps)) > 1  # not one fixed delay


def test_no_wait_passes_the_calls_bound(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    pool = FakePool(*[limit_exceeded() for _ in range(10)])
    c, clock, events = caller(pool, attempts=10, backoff_base=0.5, backoff_max=8.0)
    with pytest.raises(RateLimited):
        call(c, max_wait=3.0)
    assert clock.sleeps == [0.5, 1.0]  # a third wait (2 s) would end past 3 s: the error is raised instead
    assert pool.calls == 3 and events.count("retry") == 2


def test_a_create_that_may_have_landed_is_not_repeated_but_a_read_is():
    pool = FakePool(TransportError("connection reset", sent=True))
    c, clock, _ = caller(pool)
    with pytest.raises(TransportError):
        call(c, "crm.contact.add")
    assert pool.calls == 1 and clock.sleeps == []

    pool = FakePool(TransportError("connection reset", sent=True), ServerError("Internal error", http_status=500))
    c, clock, _ = caller(pool)
    assert call(c, "crm.contact.get")["result"] == "ok"
    assert pool.calls == 3 and len(clock.sleeps) == 2


def test_a_create_never_sent_is_retried():
    pool = FakePool(TransportError("connection refused", sent=False))
    c, _, _ = caller(pool)
    assert call(c, "crm.deal.add")["result"] == "ok" and pool.calls == 2


class CountingBudgets(OperatingBudgets):
    """The in-memory budgets, counting how often room() is asked."""

    def __init__(self, clock) -> None:
        super().__init__(clock=clock)
        self.asked = 0

    def room(self, *args, **kwargs):
        self.asked += 1
        return super().room(*args, **kwargs)


def test_room_of_a_method_with_no_known_cost_is_asked_again_after_a_second_or_once_it_has_a_cost():
    import math

    from flask_bitrix24.services.caller import NO_COST_RECHECK
    from flask_bitrix24.services.limiter import BACKGROUND_RESERVE

    class CostlyPool(FakePool):
        def call(self, base, method, params):
            return {"result": "ok", "time": {"operating": 2.0, "processing": 2.0, "finish": clock.time()}}

    clock = FakeTime()
    budgets = CountingBudgets(clock.time)
    c = PortalCaller(CostlyPool(), FreeBuckets(), budgets, RetryPolicy(), sleep=clock.sleep, clock=clock.monotonic)
    assert c.room(BASE, "crm.contact.update") is None and budgets.asked == 1  # nothing known yet
    assert c.room(BASE, "crm.contact.update") is None and budgets.asked == 1  # not asked again at once
    assert c.room(BASE, "crm.deal.update") is None and budgets.asked == 2  # another method: its own answer
    clock.sleep(NO_COST_RECHECK + 0.01)
    assert c.room(BASE, "crm.contact.update") is None and budgets.asked == 3  # asked again after the second
    call(c, "crm.contact.update")  # an answer that gives the method a cost (2 s of processing, 2 s used)
    fits = math.floor((480 * (1 - BACKGROUND_RESERVE) - 2.0) / 2.0)  # background work's share, less what was used
    assert c.room(BASE, "crm.contact.update") == fits and budgets.asked == 4  # asked at once
    assert c.room(BASE, "crm.contact.update") == fits and budgets.asked == 5  # a known cost: asked every time


def test_a_batch_answer_that_gives_a_method_a_cost_clears_what_room_remembered():
    from flask_bitrix24.services.wire import batch_body, encode_command

    clock = FakeTime()

    class BatchPool(FakePool):
        def call(self, base, method, params):
            timing = {"operating": 3.0, "processing": 1.5, "finish": clock.time()}
            return {"result": {"result": {"a": True, "b": True}, "result_time": {"a": timing, "b": timing}}, "time": {}}

    budgets = CountingBudgets(clock.time)
    c = PortalCaller(BatchPool(), FreeBuckets(), budgets, RetryPolicy(), sleep=clock.sleep, clock=clock.monotonic)
    assert c.room(BASE, "crm.deal.update") is None and c.room(BASE, "crm.deal.update") is None
    assert budgets.asked == 1
    body = batch_body(False, {k: encode_command("crm.deal.update", {"id": 1, "fields": {"TITLE": k}}) for k in "ab"})
    c.call(BASE, "batch", body, bucket=BucketParams(50, 2.0, 0.99))
    assert c.room(BASE, "crm.deal.update") is not None and budgets.asked == 2  # asked at once: it has a cost now


def test_room_does_not_remember_no_cost_when_an_answer_gave_one_while_it_asked():
    clock = FakeTime()

    class Racing(CountingBudgets):
        def room(self, *args, **kwargs):
            clock.sleep(0.01)
            c._cost_learnt(("b24-x.bitrix24.com", "crm.contact.update"))  # another thread's answer, meanwhile
            clock.sleep(0.01)
            self.asked += 1
            return None, 0.0  # what the budgets had said before that answer was recorded

    budgets = Racing(clock.time)
    c = PortalCaller(FakePool(), FreeBuckets(), budgets, RetryPolicy(), sleep=clock.sleep, clock=clock.monotonic)
    assert c.room(BASE, "crm.contact.update") is None
    assert c.room(BASE, "crm.contact.update") is None and budgets.asked == 2  # asked again: nothing was kept
