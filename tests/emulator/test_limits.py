"""Limits: the leaky bucket (503) and the per-method operating budget (429), with an injected clock.

Sources: "the limits page" below is https://apidocs.bitrix24.com/limits.html (both limits); "the portal's
source" is the portal's PHP source, modules/rest/lib/engine/access/loadlimiter.php (the operating budget) and
modules/rest/classes/general/rest.php.
"""

import pytest

from bitrix24_emulator import costs

from .conftest import T0, make_api


def test_burst_then_503():
    """burst requests pass at once; the next gets 503 QUERY_LIMIT_EXCEEDED 'Too many requests'
    (https://apidocs.bitrix24.com/limits.html, https://apidocs.bitrix24.com/error-codes.html)."""
    api = make_api(burst=5, rate=2.0)
    assert [api.raw("profile").status_code for _ in range(5)] == [200] * 5
    status, body = api("profile")
    assert (status, body) == (503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    assert api.emu.counters.rate_limited == 1 and api.emu.counters.by_status[503] == 1


def test_bucket_drains_at_rate():
    """the counter drains by `rate` per second; rejected requests add nothing (the limits page)."""
    api = make_api(burst=5, rate=2.0)
    clock = api.emu.bucket.clock
    for _ in range(5):
        api.raw("profile")
    for _ in range(3):
        assert api.raw("profile").status_code == 503  # rejections do not fill the bucket further
    clock.advance(1.0)  # drains 2
    assert [api.raw("profile").status_code for _ in range(3)] == [200, 200, 503]
    clock.advance(100)
    assert [api.raw("profile").status_code for _ in range(5)] == [200] * 5


def test_limits_false_turns_off_both():
    """limits=False: neither 503 nor 429 ever."""
    api = make_api(burst=1, operating_limit=1, cost_per_call=5, limits=False)
    assert {api.raw("profile").status_code for _ in range(20)} == {200}


def test_operating_limit_blocks_next_call():
    """the call that pushes the total over completes; the next one is 429 OPERATION_TIME_LIMIT (the portal's
    source: loadlimiter.php checks before a call and records after it)."""
    api = make_api(operating_limit=10, cost_per_call=4, burst=1000)
    results = [api("crm.contact.list") for _ in range(4)]
    assert [s for s, _ in results] == [200, 200, 200, 429]
    assert results[2][1]["time"]["operating"] == 12.0
    assert results[3][1] == {"error": "OPERATION_TIME_LIMIT",
                             "error_description": "Method is blocked due to operation time limit."}
    assert api.emu.counters.operating_limited == 1 and api.emu.counters.by_status[429] == 1


def test_reaching_the_limit_exactly_is_not_over_it():
    """blocked once the total is *over* the limit (the portal's source, loadlimiter.php:
    $totalTime > getLimitTime())."""
    api = make_api(operating_limit=12, cost_per_call=4, burst=1000)
    assert [api.raw("crm.contact.list").status_code for _ in range(5)] == [200, 200, 200, 200, 429]


def test_operating_limit_is_per_method():
    """other methods are not affected (the limits page)."""
    api = make_api(operating_limit=5, cost_per_call=5, burst=1000)
    api("crm.contact.list")  # reaches the limit exactly: not over it yet
    api("crm.contact.list")  # pushes it over, still completes
    assert api.raw("crm.contact.list").status_code == 429
    assert api.raw("crm.deal.list").status_code == 200


def test_operating_window_buckets_expire():
    """10 buckets of window/10; operating_reset_at is when the oldest bucket expires (the limits page)."""
    api = make_api(operating_limit=10, operating_window=600, cost_per_call=6, burst=1000)
    clock = api.emu.budget.clock
    _, first = api("crm.contact.list")
    assert first["time"]["operating_reset_at"] == int(T0 + 600)
    clock.advance(120)
    _, second = api("crm.contact.list")
    assert second["time"]["operating"] == 12.0 and second["time"]["operating_reset_at"] == int(T0 + 600)
    assert api.raw("crm.contact.list").status_code == 429
    clock.advance(480)  # the first bucket (T0) drops out: 6 s left
    _, third = api("crm.contact.list")
    assert third["time"]["operating"] == 12.0
    assert third["time"]["operating_reset_at"] == int(T0 + 120 + 600)


def test_rate_limit_checked_before_operating_limit():
    """rate limit (503) comes before the operating limit (429), which the portal's source checks just before
    the method runs (rest.php)."""
    api = make_api(operating_limit=1, cost_per_call=2, burst=1)
    api.raw("profile")
    assert api.raw("profile").status_code == 503


def test_batch_commands_charged_per_method():
    """inner batch commands are counted per method; the outer batch is not blocked (the limits page)."""
    api = make_api(operating_limit=10, cost_per_call=4, burst=1000)
    status, body = api("batch", {"cmd": {f"k{i}": "crm.contact.list" for i in range(5)}})
    out = body["result"]
    assert status == 200
    assert set(out["result"]) == {"k0", "k1", "k2"}
    assert out["result_error"]["k3"]["error"] == "OPERATION_TIME_LIMIT"
    assert out["result_time"]["k2"]["operating"] == 12.0
    assert api.raw("crm.contact.list").status_code == 429
    assert api.raw("batch", {"cmd": ["profile"]}).status_code == 200


def test_batch_charged_as_batch_option():
    """the option batch_operating='batch' charges the budget to `batch` itself, as measured in the official JS
    SDK's repository (bitrix24/b24jssdk, pull request #539), unlike what the limits page says."""
    api = make_api(operating_limit=10, cost_per_call=4, burst=1000, batch_operating="batch")
    status, body = api("batch", {"cmd": ["crm.contact.list", "crm.contact.list", "crm.contact.list"]})
    # 3 x 4 s, plus the three pages' server time (costs.PAGE each): together past the 0.1 s threshold
    assert status == 200 and body["time"]["operating"] == pytest.approx(12.0 + 3 * costs.PAGE)
    assert api.raw("batch", {"cmd": ["profile"]}).status_code == 429
    assert api.raw("crm.contact.list").status_code == 200


def test_injected_503_comes_before_the_method_runs():
    """Fault injection: fail_status=503 answers QUERY_LIMIT_EXCEEDED and nothing is written."""
    api = make_api(fail_rate=1.0, fail_status=503, limits=False)
    r = api.raw("crm.contact.add", {"fields": {"NAME": "A"}})
    assert r.status_code == 503 and r.get_json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert api.emu.records["contact"] == {}


def test_injected_500_after_the_write():
    """Fault injection: fail_phase='after' runs the method, then answers 500 (the write happened)."""
    api = make_api(fail_rate=1.0, fail_phase="after", limits=False)
    r = api.raw("crm.contact.add", {"fields": {"NAME": "A"}})
    assert r.status_code == 500 and r.get_json()["error"] == "INTERNAL_SERVER_ERROR"
    assert [c["NAME"] for c in api.emu.records["contact"].values()] == ["A"]


def test_an_offset_page_costs_what_its_count_costs_and_a_keyset_page_stays_flat():
    """https://apidocs.bitrix24.com/settings/performance/huge-data.html: with start >= 0 each page
    COUNTs the matching set (49.9 s on 2,387,743 leads); start=-1 with a >ID cursor took 0.0685 s at
    any depth. Calls under 0.1 s are not charged (https://apidocs.bitrix24.com/limits.html)."""
    from bitrix24_emulator import create_emulator

    from .conftest import Api, FakeClock

    api = Api(create_emulator(clock=FakeClock(), burst=10_000, preload={"lead": 20_000}))
    # `operating` is the method's total in the window: a keyset walk at any depth leaves it at 0 (each
    # page is under the threshold), one deep offset page adds its COUNT and its skipping.
    for after in (0, 10_000, 19_950):
        page = api("crm.lead.list", {"start": -1, "order": {"ID": "ASC"}, "filter": {">ID": after}})[1]
        assert len(page["result"]) == 50 and page["time"]["operating"] == 0
    offset = api("crm.lead.list", {"start": 19_950})[1]
    assert len(offset["result"]) == 50
    expected = costs.PAGE + 20_000 * costs.PER_COUNTED_ROW + 19_950 * costs.PER_SKIPPED_ROW  # ~0.5 s
    assert offset["time"]["operating"] == pytest.approx(expected) and expected > 0.1
    # /_emulator/stats adds up every second charged, by method, for benchmarks to report.
    import json
    stats = json.loads(api.client.get("/_emulator/stats").get_data(as_text=True))
    assert stats["operating_seconds"] == {"crm.lead.list": pytest.approx(expected)}
    # On the docs' portal the model gives the docs' figure.
    assert costs.server_time("crm.lead.list", {"start": 0}, 2_387_743) == pytest.approx(49.9 + costs.PAGE)


def test_offset_paging_exhausts_a_small_budget_then_recovers():
    """Deep offset pages push crm.lead.list past a small operating limit: 429 OPERATION_TIME_LIMIT,
    with operating_reset_at; other methods still work; once the window has passed it works again."""
    from bitrix24_emulator import create_emulator

    from .conftest import Api, FakeClock

    clock = FakeClock()
    api = Api(create_emulator(clock=clock, burst=10_000, preload={"lead": 20_000}, operating_limit=1.0))
    statuses = []
    for start in range(0, 20_000, 50):
        status, body = api("crm.lead.list", {"start": start})
        statuses.append(status)
        if status == 429:
            break
        reset_at = body["time"]["operating_reset_at"]
    assert statuses[-1] == 429 and body["error"] == "OPERATION_TIME_LIMIT" and len(statuses) <= 4
    assert reset_at == int(clock.now + 600)
    assert api("crm.lead.get", {"id": 1})[0] == 200  # another method's budget is its own
    clock.advance(601)
    assert api("crm.lead.list", {"start": 0})[0] == 200


def client_from(emu, address: str, port: str = "40000"):
    """A werkzeug test client whose requests come from ``address:port`` (REMOTE_ADDR, REMOTE_PORT)."""
    from werkzeug.test import Client

    from .conftest import BASE

    client = Client(emu)
    return lambda method: client.post(BASE + method, environ_base={"REMOTE_ADDR": address, "REMOTE_PORT": port})


def test_the_bucket_is_per_client_address_and_the_port_does_not_matter():
    """https://apidocs.bitrix24.com/limits.html: request intensity is tracked per Bitrix24 account, and
    "Bitrix24 only considers the IP address from which the REST request is made": applications on one
    server share the limit. Two clients from one address (different ports) share a bucket; another
    address has its own."""
    from bitrix24_emulator import create_emulator

    from .conftest import FakeClock

    emu = create_emulator(clock=FakeClock(), burst=2, rate=0.001)
    first = client_from(emu, "10.0.0.1", "50001")
    second = client_from(emu, "10.0.0.1", "50002")
    other_host = client_from(emu, "10.0.0.2", "50001")
    assert [c("profile").status_code for c in (first, second, first, second)] == [200, 200, 503, 503]
    assert [other_host("profile").status_code for _ in range(3)] == [200, 200, 503]
    assert emu.counters.rate_limited == 3 and emu.counters.connections == 3
    assert emu.bucket.level("10.0.0.1") == pytest.approx(2) and emu.bucket.level("10.0.0.3") == 0


def test_the_operating_budget_is_the_portals_whatever_the_address():
    """https://apidocs.bitrix24.com/limits.html: past the limit "this method is blocked for all
    applications and webhooks of that account": a second address gets the 429 too."""
    from bitrix24_emulator import create_emulator

    from .conftest import FakeClock

    emu = create_emulator(clock=FakeClock(), operating_limit=5, cost_per_call=6, burst=1000)
    first, other_host = client_from(emu, "10.0.0.1"), client_from(emu, "10.0.0.2")
    assert first("crm.contact.list").status_code == 200
    assert other_host("crm.contact.list").status_code == 429
    assert other_host("crm.deal.list").status_code == 200


def test_drained_address_buckets_are_dropped_once_there_are_many():
    """Not Bitrix24: a portal reached from very many addresses forgets those whose bucket has drained."""
    from bitrix24_emulator.limits import AddressBuckets

    from .conftest import FakeClock

    clock = FakeClock()
    buckets = AddressBuckets(rate=1.0, burst=5, clock=clock)
    buckets.PRUNE_AT = 3
    for address in ("a", "b", "c"):
        assert buckets.try_acquire(address)
    clock.advance(0.5)
    assert buckets.try_acquire("c")  # c is at 1.5, a and b at 0.5
    clock.advance(0.6)  # a and b have drained; c has not
    assert buckets.try_acquire("d")
    assert sorted(buckets.addresses()) == ["c", "d"] and buckets.level("c") == pytest.approx(0.9)


def test_server_time_is_spent_side_by_side_as_a_portals_workers_do():
    """--time-scale makes each call take its modelled server time, and a portal serves several requests at
    once (only the bucket and the operating budget limit them): a short call made while a long batch is
    being worked on is answered before that batch, not after it."""
    import threading
    import time

    import requests

    from bitrix24_emulator import create_emulator, start_server

    server = start_server(create_emulator(limits=False, time_scale=1.0, preload={"contact": 2000}))
    try:
        done: list[str] = []
        started = threading.Event()

        def long_batch() -> None:
            # 40 keyset pages: 40 x 0.0685 s = 2.7 s of modelled server time.
            cmd = {f"p{i}": f"crm.contact.list?start=-1&filter[>ID]={i * 50}" for i in range(40)}
            started.set()
            r = requests.post(f"{server.base}batch", json={"cmd": cmd}, timeout=60)
            assert r.status_code == 200 and not r.json()["result"]["result_error"]
            done.append("batch")

        thread = threading.Thread(target=long_batch)
        thread.start()
        started.wait()
        threading.Event().wait(0.3)  # the batch is in its server time now
        asked = time.perf_counter()
        assert requests.post(f"{server.base}profile", timeout=60).status_code == 200
        waited = time.perf_counter() - asked
        done.append("profile")
        thread.join()
        batch_took = time.perf_counter() - asked + 0.3
        # Compared within this run: the short call did not wait for the batch (one after the other, it
        # would have waited out the rest of its 2.7 s).
        assert done == ["profile", "batch"] and waited < batch_took / 3, (waited, batch_took)
    finally:
        server.stop()


def test_a_bucket_drops_out_a_window_after_its_first_call_not_at_a_minute_boundary():
    """operating_reset_at is "10 minutes after the first recorded call of that bucket's minute": the emulator
    keeps the minute's total until then, so a client waking at operating_reset_at finds it gone."""
    api = make_api(operating_limit=10, operating_window=600, cost_per_call=11, burst=1000)
    clock = api.emu.budget.clock
    clock.advance(30)  # half a minute into the bucket
    _, first = api("crm.contact.list")
    assert first["time"]["operating_reset_at"] == int(T0 + 30 + 600)
    clock.advance(599)  # past the boundary of minute ten, before the reset
    assert api.raw("crm.contact.list").status_code == 429
    clock.advance(1)
    assert api.raw("crm.contact.list").status_code == 200


def test_a_batchs_commands_finish_and_are_charged_one_after_another():
    """On a portal a batch's commands run in turn: each one's result_time.finish (and the moment its time is
    charged) comes its server time after the one before, even though the emulator sleeps that time once, at
    the end of the request."""
    api = make_api(operating_limit=480, burst=1000, time_scale=0.1, method_costs={"crm.contact.update": 0.2})
    for i in range(3):
        api("crm.contact.add", {"fields": {"NAME": f"N{i}"}})
    _, body = api("batch", {"cmd": {f"u{i}": f"crm.contact.update?id={i + 1}&fields[NAME]=X" for i in range(3)}})
    times = body["result"]["result_time"]
    finishes = [times[f"u{i}"]["finish"] for i in range(3)]
    assert [round(b - a, 3) for a, b in zip(finishes, finishes[1:], strict=False)] == [0.02, 0.02]
    assert [times[f"u{i}"]["operating"] for i in range(3)] == pytest.approx([0.2, 0.4, 0.6])
    assert times["u0"]["start"] == pytest.approx(finishes[0] - 0.02)
    assert times["u1"]["processing"] == pytest.approx(0.2)  # the portal's own time on it, unscaled


def test_a_commands_figures_count_only_what_was_recorded_by_its_own_end():
    """A portal records a call's time when the call ends, so ``operating`` in a command's result_time counts
    the calls that ended before it, whichever request arrived first. The emulator works a request out at
    once and sleeps its modelled time after: two batches running side by side must still give figures that
    only grow with ``finish`` (a later figure lower than an earlier one sent our own planner wrong)."""
    import threading

    api = make_api(operating_limit=480, burst=1000, time_scale=0.1, method_costs={"crm.contact.update": 0.2})
    for i in range(6):
        api("crm.contact.add", {"fields": {"NAME": f"N{i}"}})
    bodies = []

    def batch(first):
        bodies.append(api("batch", {"cmd": {f"u{i}": f"crm.contact.update?id={i + 1}&fields[NAME]=X"
                                            for i in range(first, first + 3)}})[1])

    threads = [threading.Thread(target=batch, args=(first,)) for first in (0, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = [(min(t["start"] for t in b["result"]["result_time"].values()),
              max(t["finish"] for t in b["result"]["result_time"].values())) for b in bodies]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the two batches did run side by side
    timings = sorted((t["finish"], t["operating"]) for body in bodies for t in body["result"]["result_time"].values())
    assert len(timings) == 6
    figures = [operating for _, operating in timings]
    assert figures == sorted(figures) and figures[-1] == pytest.approx(1.2)


def test_the_budget_as_of_a_moment_leaves_out_what_ends_later():
    from bitrix24_emulator.limits import OperatingBudget

    now = [1000.0]
    budget = OperatingBudget(limit=10, window=600, clock=lambda: now[0])
    budget.record("m", 6, at=1001)  # ends in a second (worked out early, slept after)
    budget.record("m", 5, at=1000.5)
    assert budget.used("m", 1000.5) == 5 and budget.time_keys("m", 1000.9)["operating"] == 5
    assert not budget.blocked("m", 1000.9) and budget.blocked("m", 1001)  # 11 > 10 once both have ended
    assert budget.time_keys("m", 1001) == {"operating": 11, "operating_reset_at": 1600}
    now[0] = 1601  # the bucket dropped out a window after its first record
    assert budget.used("m") == 0


def test_figures_as_of_a_past_moment_count_a_bucket_that_has_dropped_out_since():
    """An answer's figures are filled in as of its finish once its modelled time is slept; by then a bucket
    live at that finish may have dropped out, and another request may have asked first. The figures must
    still count it (a portal works them out at the call's end): leaving it out told the client a total lower
    than the portal's by that bucket, so the client took the bucket off a second time when it dropped."""
    from bitrix24_emulator.limits import OperatingBudget

    now = [1000.0]
    budget = OperatingBudget(limit=480, window=30, clock=lambda: now[0])
    budget.record("m", 40, at=1000.0)  # bucket 1: drops out at 1030
    budget.record("m", 30, at=1010.0)  # bucket 2
    now[0] = 1030.4  # bucket 1 has dropped out; a request asks as of now first
    assert budget.used("m") == 30
    # An answer whose finish was 1029.9 is settled now: bucket 1 was still in at its finish.
    assert budget.used("m", 1029.9) == 70
    assert budget.time_keys("m", 1029.9) == {"operating": 70, "operating_reset_at": 1030}
    budget.record("m", 5, at=1030.2)  # a record meanwhile does not lose it either
    assert budget.used("m", 1029.9) == 70 and budget.used("m", 1030.3) == 35
    now[0] = 1060.1  # a window after it dropped out, it is gone for good (kept no longer than that)
    assert budget.used("m") == 5
    assert sorted(entry[0] for entry in budget._usage["m"].values()) == [1010.0, 1030.2]


def test_a_cost_per_call_under_a_tenth_of_a_second_is_not_recorded_as_a_portal_would_not():
    from bitrix24_emulator.limits import OperatingBudget

    budget = OperatingBudget(limit=10, window=600, clock=lambda: 1000.0)
    assert budget.charge_for(0.05, 0.01) == 0.0  # what the client reads as nothing charged is nothing
    assert budget.charge_for(0.05, 0.2) == pytest.approx(0.25) and budget.charge_for(0.3, 0.01) == 0.3
