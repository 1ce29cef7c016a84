#!/usr/bin/env python
"""A person waiting on a view while bulk jobs run on the same portal: interactive calls ahead of bulk.

    .venv/bin/python bench/priority.py [--jobs 4] [--items 1500] [--probes 40] [--interval 0.5]
                                       [--time-scale 1] [--fill-wait 15]

The emulator enforces Bitrix24's request bucket (burst 50, drained 2 per second) and, at ``--time-scale 1``,
answers each call after the server time a portal would spend on it (``bitrix24_emulator/costs.py``: 0.05 s a
create, so a batch of 50 creates takes 2.5 s; 0.02 s a single read); ``--time-scale 0`` answers at once.
``--jobs`` bulk writes (``POST /clients/<n>/contacts/batch``, ``--items`` creates each, 50 per batch request)
run at once on one portal, as several tenants' sync jobs or several worker threads do. A "person" opens a
contact (``GET /clients/1/contacts/1``) ``--probes`` times, ``--interval`` seconds apart (start to start), and
we note how long each answer took. The probes start once the jobs have filled our app's bucket for the portal
to within one place of the level bulk work may take (39 of 50), or after ``--fill-wait`` seconds if they never
do (at ``--time-scale 1`` four jobs, one 2.5 s batch at a time each, send 1.6 requests a second, less than the
2 the bucket drains, so only the person's own GETs raise it).

Three runs, side by side, each on a fresh emulator and a fresh app:

- unloaded: the same probes with no bulk job running (the baseline);
- as shipped: bulk work is background (it leaves a fifth of the bucket and books nothing ahead);
- every call alike: the bulk calls' ``background`` flag forced off, which is how the client behaved before.

Prints, per run: the person's GETs counted (with jobs running, only those answered while every job still ran),
their latency p50 / p95 / max, our app's bucket for the portal when each GET was sent (median / max; places
booked ahead by calls not yet sent count, so it can pass 50 when every call books ahead), the slowest job's
time and the 503s the portal sent (0 expected); then p95(as shipped) / p95(unloaded), whose target is at most
2.0, and the p50 and p95 of every-call-alike against as-shipped.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = {
    "unloaded": "unloaded (no bulk job)",
    "shipped": "as shipped (bulk is background)",
    "alike": "every call alike",
}


class Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def pct(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run(mode: str, jobs: int, items: int, probes: int, interval: float, time_scale: float,
        fill_wait: float) -> dict:
    from cryptography.fernet import Fernet
    from flask_bitrix24 import create_app, runtime

    from bitrix24_emulator import create_emulator, start_server

    emu = create_emulator(limits=True, burst=50, rate=2.0, time_scale=time_scale)
    emu_server = start_server(emu)
    folder = tempfile.mkdtemp(prefix="bench-priority-")
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/b.db", "BITRIX_SECRET_KEY": Fernet.generate_key().decode(),
        "BITRIX_AUTH_DISABLED": True, "BITRIX_WEBHOOK_BASE": "", "BITRIX_OUTBOUND_TOKEN": "",
        "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_VERIFY_CONFIG": False, "BITRIX_REDIS_URL": "",
        "BITRIX_MAX_WAIT": 120.0, "BITRIX_BULK_MAX_WAIT": 900.0,
    })
    rt = runtime(app)
    caller = rt.caller
    if mode == "alike":
        call = caller.call
        caller.call = lambda *a, **k: call(*a, **{**k, "background": False})
    portal, params = urlsplit(emu_server.base).netloc, rt.default_bucket

    def level() -> float:
        return rt.buckets.level(portal, params)

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.port}/api/bitrix"
    http = requests.Session()
    for client in range(1, jobs + 1):
        assert http.post(f"{api}/clients/{client}/config", json={"webhook_base": emu_server.base}).status_code == 201
    assert http.post(f"{api}/clients/1/contacts", json={"fields": {"NAME": "Ann"}}).status_code == 201
    assert http.get(f"{api}/clients/1/contacts/1", timeout=120).status_code == 200  # warm: connections, caches

    bulk_seconds: list[float] = []
    ended: list[float] = []

    def job(client: int) -> None:
        body = {"items": [{"fields": {"NAME": f"J{client}-{i}"}} for i in range(items)]}
        started = time.perf_counter()
        r = requests.post(f"{api}/clients/{client}/contacts/batch", json=body, timeout=900)
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:300]
        bulk_seconds.append(time.perf_counter() - started)
        ended.append(time.perf_counter())

    started = time.perf_counter()
    threads = [threading.Thread(target=job, args=(n,)) for n in range(1, jobs + 1)] if mode != "unloaded" else []
    for t in threads:
        t.start()
    if threads:
        # Wait until the jobs have filled the bucket to what bulk work may take (its ceiling, less one place).
        deadline = time.perf_counter() + fill_wait
        while level() < params.background_capacity - 1 and time.perf_counter() < deadline:
            time.sleep(0.05)
    latencies, sent_at, levels = [], [], []
    for _ in range(probes):
        levels.append(level())
        t0 = time.perf_counter()
        r = http.get(f"{api}/clients/1/contacts/1", timeout=120)
        latencies.append(time.perf_counter() - t0)
        sent_at.append(t0)
        assert r.status_code == 200, r.text[:300]
        time.sleep(max(0.0, interval - latencies[-1]))
    for t in threads:
        t.join()
    if threads:
        # Only the GETs answered while every job still ran count: that is the contention being measured.
        kept = [i for i, (lat, t0) in enumerate(zip(latencies, sent_at, strict=True)) if t0 + lat < min(ended)]
    else:
        kept = list(range(probes))
    during = [latencies[i] for i in kept]
    seen = [levels[i] for i in kept]
    elapsed = time.perf_counter() - started
    server.shutdown()
    emu_server.stop()
    if not during:
        raise SystemExit(f"{MODES[mode]}: no GET was answered while every job ran; use fewer --probes")
    return {"p50": statistics.median(during), "p95": pct(during, 0.95), "max": max(during),
            "level_p50": statistics.median(seen), "level_max": max(seen),
            "bulk_max": max(bulk_seconds) if bulk_seconds else None, "elapsed": elapsed,
            "rate_limited": emu.counters.rate_limited, "during": len(during), "requests": emu.counters.requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds from one GET's start to the next's")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="the emulator answers after its modelled server time times this (0: at once)")
    parser.add_argument("--fill-wait", type=float, default=15.0,
                        help="longest wait for the jobs to fill the bucket before the probes start")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    rows = {mode: run(mode, args.jobs, args.items, args.probes, args.interval, args.time_scale, args.fill_wait)
            for mode in MODES}
    print(f"{args.jobs} bulk jobs x {args.items} creates on one portal (burst 50, 2/s, time scale "
          f"{args.time_scale:g}); {args.probes} person's GETs, {args.interval:g} s apart")
    print("| mode | person's GETs counted | p50 s | p95 s | max s | bucket at GETs, median / max "
          "| slowest job s | 503s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        job = "-" if r["bulk_max"] is None else f"{r['bulk_max']:.1f}"
        print(f"| {MODES[mode]} | {r['during']} | {r['p50']:.3f} | {r['p95']:.3f} | {r['max']:.3f} "
              f"| {r['level_p50']:.1f} / {r['level_max']:.1f} | {job} | {r['rate_limited']} |")
    base, shipped, alike = rows["unloaded"], rows["shipped"], rows["alike"]
    print(f"person's p95, as shipped / unloaded: {shipped['p95'] / max(base['p95'], 1e-6):.2f}x (target: at most 2.0)")
    print(f"person's p50, as shipped / unloaded: {shipped['p50'] / max(base['p50'], 1e-6):.2f}x")
    print(f"every call alike / as shipped: p50 {alike['p50'] / max(shipped['p50'], 1e-6):.1f}x, "
          f"p95 {alike['p95'] / max(shipped['p95'], 1e-6):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
