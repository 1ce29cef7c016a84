#!/usr/bin/env python
"""Bulk throughput against the emulator with Bitrix24's real bucket (burst 50, drain 2/s), ours
side by side with fast_bitrix24, each run on a fresh emulator process in the same invocation.

    .venv/bin/python bench/bulk.py [--list 20000 100000] [--create 5000] [--memory 100000]
                                   [--time-scale 0] [--timeout 300]

The emulator charges each call the server time a portal would spend (bitrix24_emulator/costs.py: an
offset page COUNTs the matching set, a start=-1 keyset page does not) to the method's operating budget
(480 s per 10 min); ``--time-scale 1`` also makes it answer that slowly. A client still running after
``--timeout`` seconds is recorded as such, with what it had used by then.

For each run: seconds, rows/s, requests the portal saw, 503s and 429s provoked, the operating seconds
the portal charged, and the ratio to the bound
the limits allow: bound = max(0, requests needed - burst) / drain seconds, where "needed" is the
fewest requests that can do the job (50 adds, or 50 pages of 50 rows, per batch); ratio = bound /
elapsed (1.0 is as fast as the portal permits; listings that fit in the burst have no bound). The memory run serves
our app in its own process and compares its peak RSS (VmHWM) after streaming N rows through
GET .../contacts?all=1 with another fresh process that streamed 1,000.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

from benchkit import EmulatorProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BURST, DRAIN = 50, 2.0



def wait_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


class Emulator(EmulatorProcess):
    time_scale = 0.0  # --time-scale, set once by main()

    def __init__(self, preload: int = 0, limits: bool = True) -> None:
        super().__init__(preload=preload, limits=limits, time_scale=self.time_scale)


def our_app(base: str, tmp: str):
    from cryptography.fernet import Fernet
    from flask_bitrix24 import create_app

    return create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench-{time.monotonic_ns()}.db",
        "BITRIX_SECRET_KEY": Fernet.generate_key().decode(), "BITRIX_WEBHOOK_BASE": base,
        "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_AUTH_DISABLED": True,
    })


def fast_client(base: str):
    from fast_bitrix24 import Bitrix

    client = Bitrix(base, ssl=False, verbose=False)
    logging.getLogger("fast_bitrix24").disabled = True  # it logs every response at DEBUG
    return client


def measure(label: str, rows: int, setup, preload: int = 0, needed: int = 0, timeout: float = 300) -> dict:
    """``setup(base)`` builds the client (not timed) and returns the work to time."""
    emulator = Emulator(preload=preload)
    try:
        work = setup(emulator.base)
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["got"] = work()
            except Exception as exc:  # a client giving up is a result too: record it, go on
                outcome["error"] = f"{type(exc).__name__}: {exc}"

        started = time.perf_counter()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        elapsed = time.perf_counter() - started
        stats = emulator.stats()
        got, error = outcome.get("got"), outcome.get("error")
        if error:
            error = error[:200]  # a batch's errors repeat 50 times
        if worker.is_alive():
            error = f"still running after {timeout:.0f} s"
    finally:
        emulator.stop()
    if error is None and got != rows:
        error = f"expected {rows} rows, got {got}"
    requests = stats["requests"]
    bound = max(0, needed - BURST) / DRAIN  # the least time the fewest requests can take
    return {"run": label, "rows": rows, "seconds": round(elapsed, 2),
            "rows_per_s": None if error else round(rows / elapsed), "requests": requests,
            "503s": stats["rate_limited"], "429s": stats.get("operating_limited", 0),
            "operating_s": round(sum((stats.get("operating_seconds") or {}).values()), 1), "bound_s": bound,
            "ratio_to_bound": round(bound / elapsed, 3) if bound and not error else None,
            "records_created": stats["records"].get("contact"), "error": error}


def ours_list(tmp: str):
    def setup(base: str):
        from flask_bitrix24.services.bitrix24_service import bx_list_all

        app = our_app(base, tmp)

        def work() -> int:
            with app.app_context():
                return sum(1 for _ in bx_list_all("crm.contact.list", {"select": ["ID", "NAME"]}))
        return work
    return setup


def fast_list(base: str):
    client = fast_client(base)

    def work() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return len(client.get_all("crm.contact.list", {"select": ["ID", "NAME"]}))
    return work


def items(n: int) -> list[dict]:
    return [{"fields": {"NAME": f"Bench {i}", "LAST_NAME": "Create", "EMAIL": [{"VALUE": f"b{i}@example.com"}]}}
            for i in range(n)]


def ours_create(tmp: str, n: int):
    def setup(base: str):
        from flask_bitrix24.services.bulk import bulk_write

        app, payload = our_app(base, tmp), items(n)

        def work() -> int:
            with app.app_context():
                outcomes = bulk_write("crm.contact", payload)
            return sum(1 for o in outcomes if o.error is None)
        return work
    return setup


def fast_create(n: int):
    def setup(base: str):
        client, payload = fast_client(base), items(n)

        def work() -> int:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return len(client.call("crm.contact.add", payload))
        return work
    return setup


def peak_rss_after_listing(emulator: Emulator, rows: int, tmp: str) -> tuple[int, int]:
    """Serve our app in a fresh process, stream ``rows`` contacts through it, return its VmHWM (kB)
    before and after."""
    from cryptography.fernet import Fernet

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_")}
    env.update(BITRIX_WEBHOOK_BASE=emulator.base, BITRIX_ALLOWED_HOSTS="127.0.0.1", BITRIX_AUTH_DISABLED="1",
               BITRIX_SECRET_KEY=Fernet.generate_key().decode(), DATABASE_URL=f"sqlite:///{tmp}/mem-{port}.db")
    server = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/api/bitrix/clients/1/contacts"
        with urllib.request.urlopen(url + "?filter%5B%3C%3DID%5D=1", timeout=60) as r:  # warm up: imports, DB
            r.read()
        before = _hwm(server.pid)
        query = f"?all=1&select=ID&select=NAME&filter%5B%3C%3DID%5D={rows}"
        count, tail, carry = 0, b"", b""
        with urllib.request.urlopen(url + query, timeout=600) as r:
            while chunk := r.read(65536):
                data = carry + chunk  # a '"ID":' may straddle two chunks
                count += data.count(b'"ID":')
                carry = data[-4:]  # shorter than the marker: never counted twice
                tail = (tail + chunk)[-200:]
        assert count == rows and b'"total":%d}' % rows in tail, (count, tail)
        return before, _hwm(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--list", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--create", type=int, nargs="*", default=[5_000])
    parser.add_argument("--memory", type=int, default=100_000, help="rows for the memory run (0: skip)")
    parser.add_argument("--time-scale", type=float, default=0.0,
                        help="the emulator answers in its modelled server time times this (0: at once)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take before it is cut off")
    args = parser.parse_args()
    Emulator.time_scale = args.time_scale
    logging.basicConfig(level=logging.WARNING)
    for name in ("fast_bitrix24", "flask_bitrix24", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # needed: the fewest requests that can do it (a first page, then 50 pages per batch; 50 adds per batch)
        def pages(n: int) -> int:
            return 1 + math.ceil(max(0, n - 50) / 2500)

        runs = [(f"list {n:,} (ours, keyset batches)", n, ours_list(tmp), n, pages(n)) for n in args.list]
        runs += [(f"list {n:,} (fast_bitrix24 get_all)", n, fast_list, n, pages(n)) for n in args.list]
        for n in args.create:
            runs.append((f"create {n:,} (ours, bulk_write)", n, ours_create(tmp, n), 0, math.ceil(n / 50)))
            runs.append((f"create {n:,} (fast_bitrix24 call)", n, fast_create(n), 0, math.ceil(n / 50)))
        runs.sort(key=lambda run: (run[0].split(" (")[0]))  # ours and theirs side by side
        for label, n, setup, preload, needed in runs:
            results.append(measure(label, n, setup, preload=preload, needed=needed, timeout=args.timeout))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        memory = None
        if args.memory:
            emulator = Emulator(preload=args.memory, limits=False)
            try:
                small = peak_rss_after_listing(emulator, 1_000, tmp)
                large = peak_rss_after_listing(emulator, args.memory, tmp)
            finally:
                emulator.stop()
            memory = {"rows": args.memory, "hwm_kb_1000": small, "hwm_kb_large": large,
                      "extra_mb": round((large[1] - small[1]) / 1024, 1)}

    print("| run | rows | seconds | rows/s | requests | 503s | 429s | operating s | bound s | ratio to bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        common = f"{r['requests']} | {r['503s']} | {r['429s']} | {r['operating_s']} | {r['bound_s']:.1f}"
        if r["error"]:
            print(f"| {r['run']} | {r['rows']:,} | failed after {r['seconds']} s | - | {common} | {r['error'][:60]} |")
            continue
        ratio = "within burst" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.2f}"
        print(f"| {r['run']} | {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | {common} | {ratio} |")
    if memory:
        (b1, a1), (b2, a2) = memory["hwm_kb_1000"], memory["hwm_kb_large"]
        print(f"\nstreamed listing through GET .../contacts?all=1, server peak RSS (VmHWM): "
              f"1,000 rows {a1 / 1024:.1f} MB (warm {b1 / 1024:.1f} MB); "
              f"{memory['rows']:,} rows {a2 / 1024:.1f} MB (warm {b2 / 1024:.1f} MB); "
              f"difference {memory['extra_mb']} MB")
    print("\n" + json.dumps({"results": results, "memory": memory}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
