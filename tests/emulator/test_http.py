"""Over real HTTP via start_server: connection drops (which clients such as fast_bitrix24 retry), outbound
events (https://apidocs.bitrix24.com/api-reference/events/index.html), thread safety, the CLI, and fast_bitrix24
(leshchenko1979/fast_bitrix24) running unchanged against the emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import requests

from bitrix24_emulator import create_emulator, start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def serve():
    running = []

    def _start(**options):
        server = start_server(create_emulator(**options))
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop()


class Receiver:
    """A tiny event handler endpoint that records form posts and answers with `status`."""

    def __init__(self, status: int = 200):
        received = self.received = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                received.append((self.headers["Content-Type"], parse_qsl(body, keep_blank_values=True)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/b24/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


def test_server_urls_and_roundtrip(serve):
    """start_server exposes url, port and the webhook base; requests works against it (the URL shape:
    https://apidocs.bitrix24.com/local-integrations/local-webhooks.html)."""
    server = serve(secret="s3cret", user_id=7)
    assert server.base == f"http://127.0.0.1:{server.port}/rest/7/s3cret/"
    response = requests.post(server.base + "crm.contact.add.json", json={"fields": {"NAME": "Ann"}}, timeout=5)
    assert response.status_code == 200 and response.json()["result"] == 1
    response = requests.get(server.base + "crm.contact.get", params={"id": 1}, timeout=5)
    assert response.json()["result"]["NAME"] == "Ann"


def test_drop_after_runs_method_then_closes(serve):
    """fast_bitrix24 retries connection errors: drop 'after' runs the method, then the client gets a
    ConnectionError, so a blind retry of an add creates a duplicate."""
    server = serve(drop_rate=1.0, drop_phase="after", seed=1)
    with pytest.raises(requests.ConnectionError):
        requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "Ann"}}, timeout=5)
    emu = server.emulator
    assert len(emu.records["contact"]) == 1 and emu.counters.dropped == 1
    emu.drop_rate = 0.0
    requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "Ann"}}, timeout=5)
    assert len(emu.records["contact"]) == 2  # the duplicate a blind retry makes


def test_drop_before_does_not_run_method(serve):
    """drop 'before': connection closed with no response and nothing stored."""
    server = serve(drop_rate=1.0, drop_phase="before")
    with pytest.raises(requests.ConnectionError):
        requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "Ann"}}, timeout=5)
    assert server.emulator.records["contact"] == {}


def test_drop_rate_fraction_is_seeded(serve):
    """drop_rate is a fraction; with a seed the sequence is repeatable."""
    outcomes = []
    for _ in range(2):
        server = serve(drop_rate=0.5, seed=42, limits=False)
        run = []
        for _ in range(20):
            try:
                run.append(requests.get(server.base + "profile", timeout=5).status_code)
            except requests.ConnectionError:
                run.append("dropped")
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count("dropped") < 20


def test_events_payload(serve, receiver):
    """add/update/delete POST form-encoded payloads in order, with the documented keys
    (https://apidocs.bitrix24.com/api-reference/events/index.html,
    https://apidocs.bitrix24.com/api-reference/crm/contacts/events/on-crm-contact-add.html)."""
    server = serve(event_url=receiver.url, application_token="tok123")
    base = server.base
    requests.post(base + "crm.contact.add", json={"fields": {"NAME": "Ann"}}, timeout=5)
    requests.post(base + "crm.contact.update", json={"id": 1, "fields": {"NAME": "Bo"}}, timeout=5)
    requests.post(base + "crm.deal.add", json={"fields": {}}, timeout=5)
    requests.post(base + "crm.contact.delete", json={"id": 1}, timeout=5)
    assert server.emulator.wait_events(5)
    events = [dict(pairs) for _, pairs in receiver.received]
    assert [e["event"] for e in events] == ["ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMDEALADD",
                                            "ONCRMCONTACTDELETE"]
    first_type, first_pairs = receiver.received[0]
    assert first_type == "application/x-www-form-urlencoded"
    assert [k for k, _ in first_pairs] == ["event", "event_handler_id", "data[FIELDS][ID]", "ts", "auth[domain]",
                                           "auth[client_endpoint]", "auth[server_endpoint]", "auth[member_id]",
                                           "auth[application_token]"]
    event = events[0]
    host = f"127.0.0.1:{server.port}"
    assert event["data[FIELDS][ID]"] == "1" and event["auth[application_token]"] == "tok123"
    assert event["auth[domain]"] == host
    assert event["auth[client_endpoint]"] == f"http://{host}/rest/"
    assert event["auth[server_endpoint]"] == "https://oauth.bitrix.info/rest/"
    assert len(event["auth[member_id]"]) == 32 and int(event["auth[member_id]"], 16) >= 0
    assert event["ts"].isdigit() and event["event_handler_id"].isdigit()
    sent = server.emulator.events_sent
    assert len(sent) == 4 and all(e["ok"] and e["status"] == 200 for e in sent)
    assert sent[0]["payload"]["event"] == "ONCRMCONTACTADD"


def test_events_domain_option_and_batch(serve, receiver):
    """domain option sets auth[domain]; changes made inside a batch also raise events
    (https://apidocs.bitrix24.com/api-reference/events/index.html)."""
    server = serve(event_url=receiver.url, domain="acme.bitrix24.com")
    requests.post(server.base + "batch", json={"cmd": ["crm.lead.add?fields[TITLE]=x",
                                                       "crm.company.add?fields[TITLE]=y"]}, timeout=5)
    assert server.emulator.wait_events(5)
    events = [dict(pairs) for _, pairs in receiver.received]
    assert [e["event"] for e in events] == ["ONCRMLEADADD", "ONCRMCOMPANYADD"]
    assert events[0]["auth[domain]"] == "acme.bitrix24.com"
    assert events[0]["auth[client_endpoint]"] == "https://acme.bitrix24.com/rest/"


def test_failed_events_not_retried(serve):
    """A failing handler is logged in events_sent and never retried ("No retries" at
    https://apidocs.bitrix24.com/api-reference/events/index.html)."""
    bad = Receiver(status=500)
    try:
        server = serve(event_url=bad.url)
        requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "A"}}, timeout=5)
        assert server.emulator.wait_events(5)
        assert len(bad.received) == 1
        outcome = server.emulator.events_sent[0]
        assert outcome["ok"] is False and outcome["status"] == 500
    finally:
        bad.close()
    refused = serve(event_url="http://127.0.0.1:9/nothing", event_timeout=1)
    requests.post(refused.base + "crm.contact.add", json={"fields": {"NAME": "A"}}, timeout=5)
    assert refused.emulator.wait_events(5)
    outcome = refused.emulator.events_sent[0]
    assert outcome["ok"] is False and outcome["status"] is None and outcome["error"]


def test_concurrent_requests_are_safe(serve):
    """Threaded server: concurrent adds get distinct ids and nothing is lost."""
    server = serve(limits=False)

    def add(i):
        return requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": f"n{i}"}},
                             timeout=10).json()["result"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(add, range(200)))
    assert sorted(ids) == list(range(1, 201))
    assert len(server.emulator.records["contact"]) == 200
    assert server.emulator.counters.requests == 200


def test_concurrent_burst_hits_rate_limit(serve):
    """Parallel requests beyond the burst get 503 and are counted (https://apidocs.bitrix24.com/limits.html)."""
    server = serve(burst=10, rate=0.001)
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda _: requests.get(server.base + "profile", timeout=10).status_code, range(30)))
    assert codes.count(200) == 10 and codes.count(503) == 20
    assert server.emulator.counters.rate_limited == 20


def test_fast_bitrix24_unchanged(serve):
    """fast_bitrix24 (a real third-party client) works unchanged: batched add
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html), get_all with paging over 120 records
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/list-methods-pecularities.html), get_by_ID."""
    from fast_bitrix24 import Bitrix

    server = serve()
    b = Bitrix(server.base, ssl=False, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = b.call("crm.contact.add", [{"fields": {"NAME": f"Name{i}", "PHONE": [{"VALUE": f"+1{i:04}"}]}}
                                         for i in range(120)])
        assert sorted(ids) == list(range(1, 121))
        rows = b.get_all("crm.contact.list", {"select": ["ID", "NAME", "PHONE"]})
        assert len(rows) == 120 and len({r["ID"] for r in rows}) == 120
        assert {r["NAME"] for r in rows} == {f"Name{i}" for i in range(120)}
        # fast_bitrix24 sends batches concurrently and returns results in completion order, so
        # compare get_by_ID with the records the emulator holds instead of with input positions.
        got = b.get_by_ID("crm.contact.get", [5, 60, 119])
        records = server.emulator.records["contact"]
        assert {k: v["NAME"] for k, v in got.items()} == {str(i): records[i]["NAME"] for i in (5, 60, 119)}
        assert {k: v["PHONE"][0]["VALUE"] for k, v in got.items()} == {
            str(i): "+1" + records[i]["NAME"][4:].zfill(4) for i in (5, 60, 119)}
        deals = b.get_all("crm.deal.list")
        assert deals == []
    counters = server.emulator.counters
    assert counters.by_method["batch"] >= 4 and counters.batch_commands["crm.contact.add"] == 120
    assert counters.rate_limited == 0


def test_cli_starts_prints_base_and_stops_on_sigterm():
    """CLI: python -m bitrix24_emulator prints the webhook base and exits cleanly on SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bitrix24_emulator", "--port", "0", "--secret", "cli",
                             "--no-limits"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "/rest/1/cli/" in line
        base = line.strip().split()[-1]
        assert requests.get(base + "profile", timeout=5).json()["result"]["ID"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_preload_and_stats_endpoint(serve):
    """Not Bitrix24: preload fills the store for demos and benchmarks; /_emulator/stats shows counters."""
    from bitrix24_emulator import create_emulator, start_server

    server = start_server(create_emulator(preload={"contact": 120}, limits=False))
    try:
        assert requests.post(server.base + "crm.contact.list.json", timeout=5).json()["total"] == 120
        stats = requests.get(server.url + "/_emulator/stats", timeout=5).json()
        assert stats["records"]["contact"] == 120 and stats["requests"] == 1 and stats["rate_limited"] == 0
    finally:
        server.stop()


def test_stats_count_connections():
    """Connections are told apart by the client's address and port: requests on a kept-alive
    connection count once (werkzeug's server closes every connection; gunicorn keeps them)."""
    from werkzeug.test import Client

    emu = create_emulator(limits=False)
    client = Client(emu)
    for port in (40001, 40001, 40001, 40002):
        client.post("/rest/1/demo/profile", environ_overrides={"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": port})
    stats = client.get("/_emulator/stats").json
    assert stats["requests"] == 4 and stats["connections"] == 2


def _raw_request(conn, method, path, body=b"", headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def test_connections_stay_open_between_requests_as_a_portals_do(serve):
    """One connection, several requests (a client's pool reuses it, as with a portal's web server); the
    emulator's counters see one connection."""
    import http.client

    server = serve(limits=False)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for name in ("Ann", "Bob", "Cy"):
        response, body = _raw_request(conn, "POST", "/rest/1/demo/crm.contact.add.json",
                                      f"fields[NAME]={name}".encode(),
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status == 200 and response.getheader("Connection") is None, response.getheaders()
    assert [r["NAME"] for r in server.emulator.records["contact"].values()] == ["Ann", "Bob", "Cy"]
    stats = requests.get(f"{server.url}/_emulator/stats", timeout=5).json()
    assert stats["connections"] == 1  # (the stats request is not counted)
    # Kept connections answer without Nagle's wait: the answer's body would otherwise sit until the client's
    # delayed ACK of its head (40 ms a call).
    import socket

    from bitrix24_emulator.server import _connections

    kept = list(_connections(server._server))
    assert kept and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in kept)
    conn.close()


def test_a_body_left_unread_does_not_spill_into_the_next_request(serve):
    """The next request on a kept connection is read from where the last body ended, whatever the app
    read of it (a refused call reads nothing of a large body)."""
    import http.client

    server = serve(limits=False)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    junk = b"GET /rest/1/demo/profile HTTP/1.1\r\nHost: x\r\n\r\n" * 2000  # would parse as requests if left
    response, _ = _raw_request(conn, "POST", "/rest/1/wrong-secret/profile.json", junk)
    assert response.status == 401
    response, body = _raw_request(conn, "POST", "/rest/1/demo/crm.contact.add.json", b"fields[NAME]=Dee",
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 200 and b'"result":1' in body
    assert server.emulator.counters.requests == 2


def test_a_client_that_asks_to_close_or_sends_chunked_gets_its_connection_closed(serve):
    import http.client

    server = serve(limits=False)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    response, _ = _raw_request(conn, "POST", "/rest/1/demo/profile.json", b"", {"Connection": "close"})
    assert response.status == 200 and response.getheader("Connection") == "close"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/rest/1/demo/crm.contact.add.json", body=iter([b"fields[NAME]=", b"Eve"]),
                 headers={"Content-Type": "application/x-www-form-urlencoded"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Connection") == "close" and b'"result":1' in response.read()


def test_a_stopped_emulator_answers_no_one_not_even_on_a_connection_opened_before(serve):
    """Tests stop the emulator to play a portal that is down: a connection a client's pool kept must
    not go on being answered."""
    server = serve(limits=False)
    session = requests.Session()
    assert session.post(server.base + "profile.json", timeout=5).status_code == 200
    server.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(server.base + "profile.json", timeout=5)
