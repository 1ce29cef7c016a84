#!/usr/bin/env python
"""CPU per ``batch`` call of a bulk write, ours and the emulator's, in one process (no HTTP, no sleeping).

    .venv/bin/python bench/cpu_batch.py [--items 5000] [--rounds 5] [--profile ours|emulator] [--top 25]
                                        [--http] [--redis redis://127.0.0.1:6379/3] [--peers]

What bench/tenants.py does per portal call, without the sockets: our app (Flask test client, SQLite, local
buckets and budgets, pacing waits skipped) answers ``POST /api/bitrix/clients/1/contacts/batch`` with
``--items`` contacts shaped as tenants.py makes them (NAME, LAST_NAME, one EMAIL): the body is loaded and
checked, ``bulk_write`` builds the commands, each ``batch`` call of 50 creates is encoded, admitted,
recorded and its answer read. The portal is the emulator's WSGI app (one portal, limits on, its bucket made
large enough never to refuse), called in-process for each ``batch`` request: the time spent inside it is the
emulator's (decoding the form and commands, 50 creates, the JSON answer); the rest is ours. Building the
WSGI environ (an HTTP server's parsing) is counted on neither side, nor is the HTTP client (requests).

CPU is ``time.process_time()`` (this process, every thread), so other load on the machine does not count;
each round is one POST, the best and median rounds are shown as CPU ms per batch call (the median is higher:
the garbage collector's full passes fall in some rounds, more of them as the emulator's records pile up).

``--http`` puts the sockets back: the emulator runs as ``python -m bitrix24_emulator`` in a process of its own
(its CPU read from /proc, its HTTP server's included; it keeps connections open between requests, as a
portal does) and our calls go through requests, as deployed. ``--redis URL`` (a database of its own: it is
emptied) keeps the buckets and operating budgets in Redis, as bench/tenants.py's app does.

``--profile ours`` / ``--profile emulator`` runs one more round under cProfile (timed by CPU, not by the
clock) and prints the top functions of that side by own time, then the cumulative figures of known hot spots.

``--peers`` (with ``--http``; first ``.venv/bin/pip install -r bench/requirements.txt``) then has two other
clients write the same rounds of contacts to the same emulator process, each in this process, timed the same
way (this process' CPU per ``batch`` request the emulator saw): fast_bitrix24's ``call("crm.contact.add",
items)`` (it batches by 50 itself) and Bitrix24's official SDK b24pysdk, ``client.call_batches`` of
``client.crm.contact.add`` requests (50 to a batch). They are bare clients: no HTTP request of ours to answer,
no rate or operating-budget bookkeeping, no markers that make a lost answer safe to retry; ours does all of
that in the figure above them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = "http://127.0.0.1:9/rest/1/bench/"


class Meter:
    """CPU spent inside the emulator, and on building environs (neither side's)."""

    def __init__(self) -> None:
        self.emulator = 0.0
        self.environ = 0.0
        self.calls = 0
        self.profile: cProfile.Profile | None = None  # set: the emulator's side runs under it


def make_client_class(emulator, meter: Meter):
    from flask_bitrix24.services.portal import PortalClient
    from flask_bitrix24.services.wire import form_body
    from werkzeug.test import EnvironBuilder

    class Answer:
        def __init__(self, status: int, headers: dict) -> None:
            self.status_code = status
            self.headers = headers

    class InProcessClient(PortalClient):
        """PortalClient.call without the socket: the same body, the same reading of the answer."""

        def call(self, base, method, params=None):
            body = form_body(params)
            data = body.encode("utf-8")
            tick = time.process_time()
            environ = EnvironBuilder(path=urlsplit(base).path + method + ".json", method="POST", data=data,
                                     content_type="application/x-www-form-urlencoded; charset=utf-8",
                                     environ_base={"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": 5000}).get_environ()
            got: dict = {}

            def start_response(status, headers, exc_info=None):
                got["status"], got["headers"] = int(status.split()[0]), dict(headers)

            start = time.process_time()
            meter.environ += start - tick
            if meter.profile is not None:
                meter.profile.enable()
            content = b"".join(emulator(environ, start_response))
            if meter.profile is not None:
                meter.profile.disable()
            meter.emulator += time.process_time() - start
            meter.calls += 1
            return self._envelope(Answer(got["status"], got["headers"]), content, method)

    return InProcessClient


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HttpEmulator:
    """The emulator in a process of its own (bench/benchkit.py), its bucket too large to refuse."""

    def __init__(self, meter: Meter) -> None:
        from benchkit import EmulatorProcess

        self.process = EmulatorProcess(extra=["--burst", "1000000000", "--rate", "1000000"])
        self.meter = meter


def build(items: int, http: bool = False, redis_url: str | None = None):
    from cryptography.fernet import Fernet
    from flask_bitrix24 import create_app

    from bitrix24_emulator import create_emulator

    logging.disable(logging.WARNING)
    meter = Meter()
    if http:
        emulator = HttpEmulator(meter)
        base = emulator.process.base
    else:
        emulator = create_emulator(secret="bench", burst=10**9, rate=10**6, limits=True, time_scale=0.0)
        base = BASE
    if redis_url:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    tmp = tempfile.mkdtemp(prefix="cpu-batch-")
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.db", "BITRIX_SECRET_KEY": Fernet.generate_key().decode(),
        "BITRIX_WEBHOOK_BASE": base, "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_AUTH_DISABLED": True,
        "BITRIX_API_KEY": "", "BITRIX_RATE_BURST": 10**9, "BITRIX_VERIFY_CONFIG": False,
        "BITRIX_BATCH_MAX_ITEMS": max(items, 5000), "BITRIX_REDIS_URL": redis_url or "",
    })
    state = app.extensions["bitrix24"]
    state.caller.sleep = lambda seconds: None
    if http:
        return app, emulator, meter
    client_class = make_client_class(emulator, meter)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(BASE))
    state.caller.pool._clients[origin] = client_class(origin, timeouts=state.caller.pool.timeouts)
    return app, emulator, meter


def contacts(round_no: int, items: int) -> list[dict]:
    """tenants.py's contacts' fields, one round's worth."""
    return [{"NAME": f"Tenant {round_no}", "LAST_NAME": f"Contact {i}",
             "EMAIL": [{"VALUE": f"t{round_no}.c{i}@example.com"}]} for i in range(items)]


def body(round_no: int, items: int) -> bytes:
    """Our batch endpoint's body for those contacts."""
    return json.dumps({"items": [{"fields": fields} for fields in contacts(round_no, items)]}).encode()


def one_round(client, meter: Meter, data: bytes, items: int) -> tuple[float, float, int]:
    process = getattr(client.application.extensions["bitrix24"], "_bench_emulator", None)
    emulator_before, environ_before, calls_before = meter.emulator, meter.environ, meter.calls
    if process is not None:
        requests_before = process.stats()["requests"]
        emu_cpu = process_cpu(process.proc.pid)
    start = time.process_time()
    r = client.post("/api/bitrix/clients/1/contacts/batch", data=data, content_type="application/json")
    total = time.process_time() - start
    if process is not None:
        meter.emulator += process_cpu(process.proc.pid) - emu_cpu
        meter.calls += process.stats()["requests"] - requests_before
        total += meter.emulator - emulator_before  # its CPU is not this process': taken off again below
    answer = r.get_json()
    if r.status_code != 200 or answer.get("created") != items:
        raise SystemExit(f"the bulk write failed: {r.status_code} {str(answer)[:500]}")
    emulator = meter.emulator - emulator_before
    ours = total - emulator - (meter.environ - environ_before)
    return ours, emulator, meter.calls - calls_before


HOT = ("encode_form", "flatten_params", "form_body", "quote", "command_string", "batch_methods", "_check_sendable",
       "run_chunk", "bulk_write", "_record", "_admit", "call", "_envelope", "loads", "parse_str", "unquote_plus",
       "run_batch", "add", "dumps", "_handle", "read_params", "_batch_command", "_call")


def show_profile(profile: cProfile.Profile, top: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats("|".join(rf"\({name}\)" for name in HOT))
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000, help="contacts per POST (default 5000: 100 batch calls)")
    parser.add_argument("--rounds", type=int, default=5, help="POSTs timed (default 5), after one to warm up")
    parser.add_argument("--profile", choices=("ours", "emulator"), help="one more round under cProfile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--http", action="store_true", help="the emulator in its own process, calls over HTTP")
    parser.add_argument("--redis", metavar="URL", help="buckets and budgets in this Redis database (emptied)")
    parser.add_argument("--peers", action="store_true",
                        help="then fast_bitrix24 and b24pysdk write the same rounds (needs --http)")
    args = parser.parse_args()
    if args.peers and not args.http:
        parser.error("--peers needs --http: the other clients call the emulator over HTTP")
    if args.http and args.profile == "emulator":
        parser.error("--profile emulator needs the in-process emulator (leave out --http)")

    app, emulator, meter = build(args.items, args.http, args.redis)
    if args.http:
        app.extensions["bitrix24"]._bench_emulator = emulator.process
    client = app.test_client()
    one_round(client, meter, body(0, args.items), args.items)  # warm up: imports, first queries, caches
    ours, emu = [], []
    for n in range(1, args.rounds + 1):
        data = body(n, args.items)
        o, e, calls = one_round(client, meter, data, args.items)
        ours.append(o * 1000 / calls)
        emu.append(e * 1000 / calls)
    how = ("over HTTP" if args.http else "in-process") + (", Redis" if args.redis else ", local limiter")
    print(f"{args.items} contacts per POST, {calls} batch calls of 50 creates each, {args.rounds} rounds ({how})")
    print(f"ours:          CPU ms per batch call  best {min(ours):6.2f}  median {statistics.median(ours):6.2f}")
    print(f"emulator:      CPU ms per batch call  best {min(emu):6.2f}  median {statistics.median(emu):6.2f}")
    if args.profile:
        profile = cProfile.Profile(time.process_time)  # CPU, not time spent waiting for an answer
        data = body(args.rounds + 1, args.items)
        if args.profile == "emulator":
            meter.profile = profile
            one_round(client, meter, data, args.items)
            meter.profile = None
        else:
            # Our side: the whole POST under the profiler, the emulator's part left out of it.
            class Paused:
                def enable(self):
                    profile.disable()

                def disable(self):
                    profile.enable()

            meter.profile = Paused()  # type: ignore[assignment]
            profile.enable()
            one_round(client, meter, data, args.items)
            profile.disable()
            meter.profile = None
        show_profile(profile, args.top)
    if args.peers:
        peer_rounds(emulator.process, args.items, args.rounds)
    if args.http:
        emulator.process.stop()


def peer_rounds(process, items: int, rounds: int) -> None:
    """fast_bitrix24 and b24pysdk writing the same contacts to the same emulator: this process' CPU per
    batch request the emulator counted, best and median of ``rounds`` (after one round to warm up)."""
    import warnings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bulk import fast_client, sdk_client  # the same clients, built as bench/bulk.py builds them

    def fast(client, rows):
        client.call("crm.contact.add", [{"fields": f} for f in rows])

    def sdk(client, rows):
        answer = client.call_batches([client.crm.contact.add(fields=f) for f in rows]).result
        if len(answer.result) != len(rows):
            raise SystemExit(f"b24pysdk created {len(answer.result)} of {len(rows)}")

    warnings.filterwarnings("ignore")  # fast_bitrix24 warns that ssl=False is insecure
    for name, make, write in (("fast_bitrix24", fast_client, fast), ("b24pysdk", sdk_client, sdk)):
        client = make(process.base)
        per_call = []
        for n in range(rounds + 1):
            rows = contacts(1000 + n, items)  # not the rounds' above: new contacts
            before = process.stats()["requests"]
            start = time.process_time()
            write(client, rows)
            cpu = time.process_time() - start
            calls = process.stats()["requests"] - before
            if n:  # round 0 warms up: imports, the first connection
                per_call.append(cpu * 1000 / calls)
        print(f"{name + ':':<15}CPU ms per batch call  best {min(per_call):6.2f}  median "
              f"{statistics.median(per_call):6.2f}  ({calls} batch calls a round)")


if __name__ == "__main__":
    main()
