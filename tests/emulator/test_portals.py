"""Several portals in one process (not a Bitrix24 feature: a way to test many tenants at once), each
behaving as one cloud portal: its own domain, member_id, webhook and application token, records,
request bucket and operating budget.

What each portal keeps to itself follows https://apidocs.bitrix24.com/limits.html (request intensity
"is tracked separately for each Bitrix24 account", and per source IP address; a method's operating
time is summed per account) and https://apidocs.bitrix24.com/api-reference/events/index.html (an
event's auth[domain], auth[member_id] and auth[application_token] name the portal that raised it).
A webhook secret no portal has is INVALID_CREDENTIALS, 401
(https://apidocs.bitrix24.com/api-reference/common/system-errors.html).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import requests
from werkzeug.test import Client

from bitrix24_emulator import create_emulator, create_portals, start_server
from bitrix24_emulator.portals import Portals, numbered

from .conftest import FakeClock
from .test_http import Receiver

ROOT = Path(__file__).resolve().parents[2]


class PortalsApi:
    """Calls a Portals app in-process with a Host header and a source address of our choosing."""

    def __init__(self, app):
        self.app = app
        self.client = Client(app)

    def __call__(self, secret, method, payload=None, host="127.0.0.1:5002", address="10.0.0.1", query=""):
        response = self.client.post(f"/rest/1/{secret}/{method}{query}", json=payload, headers={"Host": host},
                                    environ_base={"REMOTE_ADDR": address})
        return response.status_code, json.loads(response.get_data(as_text=True))

    def stats(self, host="127.0.0.1:5002", query=""):
        return self.client.get(f"/_emulator/stats{query}", headers={"Host": host}).get_json()


@pytest.fixture
def three():
    return PortalsApi(create_portals(3, clock=FakeClock()))


def test_each_portal_has_its_own_identity(three):
    portals = three.app.portals
    assert [p.domain for p in portals] == [f"portal-{n}.bitrix24.test" for n in (1, 2, 3)]
    assert [p.secret for p in portals] == ["demo", "demo2", "demo3"]
    assert len({p.member_id for p in portals}) == 3 and all(len(p.member_id) == 32 for p in portals)
    assert len({p.application_token for p in portals}) == 3
    assert three.app.portal(2) is portals[1]


def test_the_secret_in_the_path_reaches_its_portal_with_any_host(three):
    status, body = three("demo2", "crm.contact.add", {"fields": {"NAME": "Ann"}})
    assert (status, body["result"]) == (200, 1)
    assert [len(p.records["contact"]) for p in three.app.portals] == [0, 1, 0]
    assert three("demo3", "crm.contact.add", {"fields": {"NAME": "Bo"}})[1]["result"] == 1  # ids are per portal


def test_the_host_reaches_its_portal_which_checks_its_own_secret(three):
    assert three("demo3", "crm.contact.add", {"fields": {"NAME": "A"}}, host="Portal-3.bitrix24.test:8443")[0] == 200
    assert len(three.app.portal(3).records["contact"]) == 1
    # Portal 3's domain with portal 2's secret: portal 3 does not know that webhook.
    status, body = three("demo2", "profile", host="portal-3.bitrix24.test")
    assert (status, body) == (401, {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"})
    assert three.app.portal(3).counters.by_status[401] == 1 and three.app.portal(2).counters.requests == 0


def test_a_request_for_no_portal_is_refused_like_an_unknown_webhook(three):
    assert three("nobody", "profile") == (401, {"error": "INVALID_CREDENTIALS",
                                                "error_description": "Invalid request credentials"})
    assert three("nobody", "crm.nothing.here")[1]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert sum(p.counters.requests for p in three.app.portals) == 0
    assert three.stats()["stray_requests"] == 2


def test_stats_per_portal_by_host_or_number_and_in_total(three):
    three("demo", "crm.contact.add", {"fields": {"NAME": "A"}})
    three("demo2", "profile")
    three("demo2", "profile")
    one = three.stats(host="portal-2.bitrix24.test")
    assert one["member_id"] == three.app.portal(2).member_id and one["domain"] == "portal-2.bitrix24.test"
    assert one["requests"] == 2 and one["records"]["contact"] == 0
    assert three.stats(query="?portal=1")["records"]["contact"] == 1
    total = three.stats()
    assert total["portals"] == 3 and total["requests"] == 3 and total["by_method"] == {"crm.contact.add": 1,
                                                                                       "profile": 2}
    assert total["records"]["contact"] == 1 and total["by_status"] == {"200": 3}
    assert [(p["portal"], p["requests"], p["member_id"]) for p in total["by_portal"]] == [
        (n, r, three.app.portal(n).member_id) for n, r in ((1, 1), (2, 2), (3, 0))]


def test_the_request_bucket_is_per_portal_and_address():
    api = PortalsApi(create_portals(2, clock=FakeClock(), burst=2, rate=0.001))
    assert [api("demo", "profile")[0] for _ in range(3)] == [200, 200, 503]
    assert [api("demo2", "profile")[0] for _ in range(2)] == [200, 200]  # another portal: its own bucket
    assert api("demo", "profile", address="10.0.0.9")[0] == 200  # another address: its own bucket
    assert [p.counters.rate_limited for p in api.app.portals] == [1, 0]


def test_the_operating_budget_is_per_portal():
    api = PortalsApi(create_portals(2, clock=FakeClock(), operating_limit=5, cost_per_call=6, burst=1000))
    assert [api("demo", "crm.contact.list")[0] for _ in range(2)] == [200, 429]
    assert api("demo2", "crm.contact.list")[0] == 200


def test_events_carry_their_portals_domain_member_id_and_token():
    receiver = Receiver()
    portals = create_portals(2, event_url=receiver.url, limits=False)
    server = start_server(portals)
    try:
        assert server.bases == [f"{server.url}/rest/1/demo/", f"{server.url}/rest/1/demo2/"]
        assert server.base == server.bases[0]
        for base in reversed(server.bases):
            requests.post(base + "crm.deal.add", json={"fields": {"TITLE": "D"}}, timeout=5)
        assert portals.wait_events(5)
        # Each portal posts its events from its own thread, so the two may arrive in either order.
        events = sorted((dict(pairs) for _, pairs in receiver.received), key=lambda e: e["auth[domain]"])
        assert [(e["event"], e["auth[domain]"]) for e in events] == [
            ("ONCRMDEALADD", "portal-1.bitrix24.test"), ("ONCRMDEALADD", "portal-2.bitrix24.test")]
        for event, portal in zip(events, portals.portals, strict=True):
            assert event["auth[client_endpoint]"] == f"https://{portal.domain}/rest/"
            assert event["auth[member_id]"] == portal.member_id
            assert event["auth[application_token]"] == portal.application_token
        assert [len(p.events_sent) for p in portals.portals] == [1, 1]
    finally:
        server.stop()
        receiver.close()


def test_preloaded_portals_each_hold_their_own_copy():
    portals = create_portals(3, clock=FakeClock(), preload={"contact": 5, "deal": 2})
    alone = create_emulator(clock=FakeClock(), preload={"contact": 5, "deal": 2})
    for portal in portals.portals:
        assert portal.records == alone.records
    api = PortalsApi(portals)
    assert api("demo2", "crm.contact.add", {"fields": {"NAME": "New"}})[1]["result"] == 6
    api("demo3", "crm.contact.update", {"id": 1, "fields": {"NAME": "Changed"}})
    assert [len(p.records["contact"]) for p in portals.portals] == [5, 6, 5]
    assert [p.records["contact"][1]["NAME"] for p in portals.portals] == ["Preloaded 0", "Preloaded 0", "Changed"]


def test_a_hundred_portals_of_a_megabyte_each_start_fast():
    tracemalloc.start()
    try:
        # This thread's CPU time: what starting them costs, not how long other processes kept the CPU
        started = time.thread_time()
        portals = create_portals(100, preload={"contact": 700})
        elapsed = time.thread_time() - started
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(portals) == 100 and len(portals.portal(100).records["contact"]) == 700
    assert 80e6 < size < 400e6, size  # about 1 MB a portal
    assert elapsed < 10, elapsed  # a few seconds even under tracemalloc (adding each record: ~30 times that)


def test_options_that_cannot_work():
    with pytest.raises(ValueError, match=r"\{n\}"):
        create_portals(2, domain="acme.bitrix24.com")
    with pytest.raises(ValueError, match="two portals"):
        Portals([create_emulator(domain="a.test"), create_emulator(domain="a.test", secret="x")])
    assert create_portals(1, domain="acme.bitrix24.com").portal(1).domain == "acme.bitrix24.com"
    assert [numbered("s-{n}", n) for n in (1, 2)] == ["s-1", "s-2"]
    tokens = [p.application_token for p in create_portals(2, application_token="tok").portals]
    assert tokens == ["tok", "tok2"]


def test_cli_serves_several_portals_and_says_how_their_bases_are_formed():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bitrix24_emulator", "--port", "0", "--portals", "3",
                             "--no-limits"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        first, how, counters = (proc.stdout.readline() for _ in range(3))
        base = first.strip().split()[-1]
        assert "3 portal(s)" in first and base.endswith("/rest/1/demo/")
        url = base[: -len("/rest/1/demo/")]
        assert f"{url}/rest/1/demoN/" in how and "portal 3: demo3" in how and "portal-N.bitrix24.test" in how
        assert f"{url}/_emulator/stats" in counters
        requests.post(f"{url}/rest/1/demo3/crm.contact.add", json={"fields": {"NAME": "A"}}, timeout=5)
        by_host = requests.get(f"{url}/_emulator/stats", headers={"Host": "portal-3.bitrix24.test"}, timeout=5)
        assert by_host.json()["records"]["contact"] == 1
        assert requests.get(f"{url}/_emulator/stats", timeout=5).json()["requests"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
