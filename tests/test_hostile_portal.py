"""A hostile or broken portal, over real HTTP on loopback: it drips its answer, sends a gzip bomb,
nests its JSON absurdly deep, or sends Retry-After values no one can use. Every case is a bounded
502/504 (or 429) JSON answer from our API, never a 500, never a request held open indefinitely."""

from __future__ import annotations

import datetime as dt
import gzip
import socket
import threading
import time

import pytest
from flask_bitrix24.services.portal import MAX_RETRY_AFTER, parse_retry_after

SECRET = "hostile0secret"


class HostilePortal:
    """A one-trick HTTP server: every request gets ``answer(conn)``."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}/rest/1/{SECRET}/"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                rest += conn.recv(65536)
            self.answer(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def http_answer(body: bytes, *, status: str = "200 OK", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}",
             "Connection: close", *[f"{k}: {v}" for k, v in (headers or {}).items()]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def hostile(make_app):
    made = []

    def factory(answer, **config):
        portal = HostilePortal(answer)
        made.append(portal)
        app = make_app(real_time=True, BITRIX_ALLOWED_HOSTS="127.0.0.1", BITRIX_RETRY_ATTEMPTS=1, **config)
        client = app.test_client()
        r = client.post("/api/bitrix/clients/1/config", json={"webhook_base": portal.base})
        assert r.status_code == 201, r.get_json()
        return client

    yield factory
    for portal in made:
        portal.close()


def test_a_portal_dripping_its_answer_is_cut_at_the_total_deadline(hostile):
    def drip(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        while not stop.is_set():  # one byte every 0.1 s: each read is quick, the answer never ends
            conn.sendall(b" ")
            time.sleep(0.1)

    client = hostile(drip, BITRIX_TIMEOUT_TOTAL=1.0, BITRIX_TIMEOUT_READ=5.0)
    started = time.monotonic()
    r = client.get("/api/bitrix/clients/1/contacts/1")
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.get_json()["error"] == "PORTAL_TIMEOUT"
    assert "BITRIX_TIMEOUT_TOTAL" in r.get_json()["error_description"]
    assert elapsed < 8  # the drip would take ~3 hours to finish


def test_a_gzip_bomb_is_refused_past_the_cap_after_decompression(hostile):
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KiB on the wire
    assert len(bomb) < 200_000

    def answer(conn, stop):
        conn.sendall(http_answer(bomb, headers={"Content-Encoding": "gzip"}))

    client = hostile(answer, BITRIX_MAX_ANSWER_BYTES=1024 * 1024)
    r = client.get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 502 and r.get_json()["error"] == "ANSWER_TOO_LARGE"
    assert "BITRIX_MAX_ANSWER_BYTES" in r.get_json()["error_description"]


def test_absurdly_nested_json_is_a_bad_answer_not_a_crash(hostile):
    deep = b"[" * 200_000 + b"]" * 200_000

    def answer(conn, stop):
        conn.sendall(http_answer(b'{"result": ' + deep + b"}"))

    r = hostile(answer).get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 502 and r.is_json
    assert "not a Bitrix24 JSON envelope" in r.get_json()["error_description"]


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "1e400", "soon", "9" * 80])
def test_unusable_retry_after_still_gives_a_429_with_a_sane_retry_after(hostile, value):
    def answer(conn, stop):
        body = b'{"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}'
        conn.sendall(http_answer(body, status="503 Service Unavailable", headers={"Retry-After": value}))

    r = hostile(answer).get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 429 and r.get_json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert 1 <= int(r.headers["Retry-After"]) <= 3600


def test_retry_after_in_seconds_or_as_an_http_date_capped():
    now = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Tue, 01 Dec 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now=now) == 0.0  # in the past: now
    assert parse_retry_after("Wed, 01 Dec 2027 12:00:00 GMT", now=now) == MAX_RETRY_AFTER
    assert parse_retry_after("999999999") == MAX_RETRY_AFTER
    for bad in (None, "", "inf", "-inf", "nan", "-1", "soon", "1e400", "Thu, 99 Foo 2026"):
        assert parse_retry_after(bad, now=now) is None, bad


def test_the_deadline_watchdog_runs_only_what_is_still_armed():
    from flask_bitrix24.services.portal import Watchdog

    dog, fired = Watchdog(), []
    # Disarmed well inside its half second however this thread is scheduled, and due before the kept one:
    # had it stayed armed it would fire first.
    dropped = dog.arm(0.5, lambda: fired.append("dropped"))
    dog.disarm(dropped)
    kept = dog.arm(0.5, lambda: fired.append("kept"))
    deadline = time.monotonic() + 10
    while not fired and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert fired == ["kept"] and kept != dropped


def test_the_watchdog_wakes_for_an_earlier_deadline_and_keeps_its_heap_small():
    from flask_bitrix24.services.portal import Watchdog

    dog, fired = Watchdog(), []
    dog.arm(60, lambda: fired.append("late"))  # the thread now waits a minute
    dog.arm(0.05, lambda: fired.append("soon"))  # earlier: it must be woken to wait less
    deadline = time.monotonic() + 5
    while not fired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fired == ["soon"]
    for _ in range(1000):  # calls that finish in time: their deadlines are disarmed, never run
        dog.disarm(dog.arm(60, lambda: fired.append("disarmed")))
    assert len(dog._heap) <= 2 * len(dog._live) + 64
    assert fired == ["soon"]


def test_a_call_sends_what_session_post_sent_and_keeps_the_portals_cookies():
    """PortalClient prepares its request itself (not through session.post): the same request line,
    headers and body, and a cookie the portal set comes back on the next call, as with the session."""
    import requests
    from flask_bitrix24.services.portal import _FORM_HEADERS, PortalClient, Timeouts

    seen: list[bytes] = []
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(5)
            for number in range(2):
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(b"id=1"):
                    data += conn.recv(65536)
                seen.append(data)
                cookie = "Set-Cookie: BITRIX_SM_GUEST=g1; Path=/\r\n" if number == 0 else ""
                conn.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n"
                              f"{cookie}\r\n").encode() + b'{"result": 1}')

    threading.Thread(target=serve, daemon=True).start()
    client = PortalClient(f"http://127.0.0.1:{port}", timeouts=Timeouts())
    base = f"http://127.0.0.1:{port}/rest/1/{SECRET}/"
    try:
        assert client.call(base, "crm.contact.get", {"id": 1}) == {"result": 1}
        assert client.call(base, "crm.contact.get", {"id": 1}) == {"result": 1}
    finally:
        client.close()
        sock.close()
    first, second = seen
    expected = client.session.prepare_request(requests.Request(
        "POST", base + "crm.contact.get.json", data=b"id=1", headers=_FORM_HEADERS))
    for request, cookie in ((first, None), (second, "BITRIX_SM_GUEST=g1")):
        head = request.split(b"\r\n\r\n")[0].decode().split("\r\n")
        assert head[0] == f"POST /rest/1/{SECRET}/crm.contact.get.json HTTP/1.1"
        sent = dict(line.split(": ", 1) for line in head[1:])
        assert sent.pop("Host") == f"127.0.0.1:{port}" and sent.get("Cookie") == cookie
        assert list(sent.items()) == [(k, v) for k, v in expected.headers.items() if cookie or k != "Cookie"]
        assert sent["User-Agent"].startswith("flask-bitrix24/") and sent["Accept"] == "application/json"
        assert request.endswith(b"\r\n\r\nid=1")


def test_kept_request_heads_are_dropped_when_a_config_changes(make_app):
    """The heads PortalClient keeps per URL hold the webhook's secret: a saved or deleted config drops them."""
    from flask_bitrix24 import runtime
    from flask_bitrix24.services.client_config import forget_target

    app = make_app()
    with app.app_context():
        pool = runtime().portals
        client = pool.for_base("https://old.bitrix24.com/rest/1/oldsecret0/")
        client._prepare("https://old.bitrix24.com/rest/1/oldsecret0/profile.json", b"")
        assert list(client._templates) == ["https://old.bitrix24.com/rest/1/oldsecret0/profile.json"]
        forget_target(1)
        assert client._templates == {}
