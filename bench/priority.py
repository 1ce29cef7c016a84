#!/usr/bin/env python
"""A person waiting on a view while bulk jobs run on the same portal: interactive calls ahead of bulk.

    .venv/bin/python bench/priority.py [--jobs 4] [--items 1500] [--probes 15]

The emulator enforces Bitrix24's request bucket (burst 50, drained 2 per second). ``--jobs`` bulk writes
(``POST /clients/<n>/contacts/batch``, ``--items`` creates each, 50 per batch request) run at once on one
portal, as several tenants' sync jobs or several worker threads do. Once they have filled the bucket, a
"person" opens a contact (``GET /clients/1/contacts/1``) ``--probes`` times, one second apart, and we note
how long each answer took. Run twice, side by side on fresh emulators: as shipped (bulk work is
background: it leaves a fifth of the bucket and books nothing ahead) and with every call treated alike
(the bulk calls' ``background`` flag forced off, which is how the client behaved before). Prints the
person's latency (p50 / max), the bulk jobs' total time and the 503s the portal had to send (0 expected).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def run(priority: bool, jobs: int, items: int, probes: int) -> dict:
    from cryptography.fernet import Fernet
    from flask_bitrix24 import create_app, runtime

    from bitrix24_emulator import create_emulator, start_server

    emu = create_emulator(limits=True, burst=50, rate=2.0)
    emu_server = start_server(emu)
    folder = tempfile.mkdtemp(prefix="bench-priority-")
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/b.db", "BITRIX_SECRET_KEY": Fernet.generate_key().decode(),
        "BITRIX_AUTH_DISABLED": True, "BITRIX_WEBHOOK_BASE": "", "BITRIX_OUTBOUND_TOKEN": "",
        "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_VERIFY_CONFIG": False,
        "BITRIX_MAX_WAIT": 120.0, "BITRIX_BULK_MAX_WAIT": 900.0,
    })
    caller = runtime(app).caller
    if not priority:
        call = caller.call
        caller.call = lambda *a, **k: call(*a, **{**k, "background": False})
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.port}/api/bitrix"
    http = requests.Session()
    for client in range(1, jobs + 1):
        assert http.post(f"{api}/clients/{client}/config", json={"webhook_base": emu_server.base}).status_code == 201
    assert http.post(f"{api}/clients/1/contacts", json={"fields": {"NAME": "Ann"}}).status_code == 201

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
    threads = [threading.Thread(target=job, args=(n,)) for n in range(1, jobs + 1)]
    for t in threads:
        t.start()
    time.sleep(3)  # the jobs have filled the bucket by now
    latencies, sent_at = [], []
    for _ in range(probes):
        t0 = time.perf_counter()
        r = http.get(f"{api}/clients/1/contacts/1", timeout=120)
        latencies.append(time.perf_counter() - t0)
        sent_at.append(t0)
        assert r.status_code == 200, r.text[:300]
        time.sleep(max(0.0, 1.0 - latencies[-1]))
    for t in threads:
        t.join()
    # Only the GETs sent while every job still ran count: that is the contention being measured.
    during = [lat for lat, t0 in zip(latencies, sent_at, strict=True) if t0 + lat < min(ended)]
    elapsed = time.perf_counter() - started
    server.shutdown()
    emu_server.stop()
    return {"p50": statistics.median(during), "max": max(during), "bulk_max": max(bulk_seconds),
            "elapsed": elapsed, "rate_limited": emu.counters.rate_limited, "during": len(during),
            "requests": emu.counters.requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--probes", type=int, default=15)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    rows = [("as shipped (bulk is background)", run(True, args.jobs, args.items, args.probes)),
            ("every call alike", run(False, args.jobs, args.items, args.probes))]
    print(f"{args.jobs} bulk jobs x {args.items} creates on one portal (burst 50, 2/s); "
          f"{args.probes} person's GETs, 1 s apart, while they run")
    print("| mode | person's GETs during the jobs | p50 s | max s | slowest job s | 503s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['during']} | {r['p50']:.3f} | {r['max']:.3f} | {r['bulk_max']:.1f} "
              f"| {r['rate_limited']} |")
    ratio = rows[1][1]["p50"] / max(rows[0][1]["p50"], 1e-6)
    print(f"person's p50 latency, every-call-alike / as-shipped: {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
