#!/usr/bin/env python
"""Bulk throughput against the emulator with Bitrix24's real bucket (burst 50, drain 2/s), ours
side by side with other clients, each run on a fresh emulator process in the same invocation.

    .venv/bin/pip install -r bench/requirements.txt    # first: the other clients (b24pysdk, fast_bitrix24)
    .venv/bin/python bench/bulk.py [--list 20000 100000] [--create 5000] [--memory 100000]
                                   [--time-scale 0] [--timeout 300]

Listings: ours (``bx_list_all``) with ``BITRIX_LIST_CHAINS=4`` (ID ranges walked side by side, as shipped)
and with ``BITRIX_LIST_CHAINS=1`` (the single keyset chain); Bitrix24's official SDK b24pysdk,
``client.crm.contact.list(...).as_list_fast()`` (its keyset walk: one page, then batches of 50 chained
pages); fast_bitrix24's ``get_all`` (offset pages). Creates: ours ``bulk_write``, fast_bitrix24 ``call``.
``--create 0`` and ``--memory 0`` skip those runs.

The emulator charges each call the server time a portal would spend (bitrix24_emulator/costs.py: an
offset page COUNTs the matching set, a start=-1 keyset page does not) to the method's operating budget
(480 s per 10 min); ``--time-scale 1`` also makes it answer that slowly. A client still running after
``--timeout`` seconds is recorded as such, with what it had used by then.

For each run: rows returned (counted as they come: what a run cut off had by then), seconds, rows/s,
requests the portal saw, 503s and 429s provoked, the operating seconds the portal charged, and the ratio
to the bound the limits allow: bound = max(0, requests needed - burst) / drain seconds, where "needed" is the
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

    def stats(self) -> dict:
        # At --time-scale > 0 the emulator serves one call at a time, at its modelled pace: a client that gave
        # up may have left batches it is still working through. Wait for them, so that they are counted too.
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_emulator/stats", timeout=1800) as r:
            return json.loads(r.read())


def our_app(base: str, tmp: str, **config):
    from cryptography.fernet import Fernet
    from flask_bitrix24 import create_app

    return create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench-{time.monotonic_ns()}.db",
        "BITRIX_SECRET_KEY": Fernet.generate_key().decode(), "BITRIX_WEBHOOK_BASE": base,
        "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_AUTH_DISABLED": True, **config,
    })


def fast_client(base: str):
    from fast_bitrix24 import Bitrix

    client = Bitrix(base, ssl=False, verbose=False)
    logging.getLogger("fast_bitrix24").disabled = True  # it logs every response at DEBUG
    return client


def sdk_client(base: str):
    """b24pysdk's Client on an incoming webhook (``BitrixWebhook``: the portal's domain and ``user/key``). The
    SDK builds ``https://{domain}/rest/...`` and the emulator speaks plain HTTP, so its one URL builder is
    pointed at ``http://`` instead; requests, retries and paging stay the SDK's own."""
    from urllib.parse import urlsplit

    from b24pysdk import BitrixWebhook, Client
    from b24pysdk.api.callers.call_method import _MethodCaller

    _MethodCaller._base_url = property(lambda caller: f"http://{caller._domain}/rest")
    url = urlsplit(base)  # http://127.0.0.1:<port>/rest/1/bench/
    user, key = url.path.strip("/").split("/")[1:3]
    return Client(BitrixWebhook(domain=url.netloc, webhook_token=f"{user}/{key}"))


def count_ids(rows, seen: dict) -> int:
    """Count rows as they come (``seen`` is read if the run is cut off) and the distinct IDs among them."""
    ids = set()
    for row in rows:
        ids.add(row["ID"])
        seen["rows"] += 1
    seen["distinct"] = len(ids)
    return len(ids)


def measure(label: str, rows: int, setup, preload: int = 0, needed: int = 0, timeout: float = 300) -> dict:
    """``setup(base)`` builds the client (not timed) and returns the work to time: ``work(seen)`` returns
    the rows listed (distinct IDs) or created, and counts them into ``seen["rows"]`` as it goes."""
    emulator = Emulator(preload=preload)
    try:
        work = setup(emulator.base)
        outcome: dict = {}
        seen = {"rows": 0, "distinct": None}

        def run() -> None:
            try:
                outcome["got"] = work(seen)
            except Exception as exc:  # a client giving up is a result too: record it, go on
                outcome["error"] = f"{type(exc).__name__}: {exc}"

        started = time.perf_counter()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        elapsed = time.perf_counter() - started
        stats = emulator.stats()
        got, error = outcome.get("got"), outcome.get("error")
        returned, distinct = seen["rows"], seen["distinct"]
        if error:
            error = error[:200]  # a batch's errors repeat 50 times
        if worker.is_alive():
            error = f"still running after {timeout:.0f} s"
    finally:
        emulator.stop()
    if error is None and (got != rows or returned != rows):
        error = f"expected {rows} rows, got {returned} ({got} distinct)"
    requests = stats["requests"]
    bound = max(0, needed - BURST) / DRAIN  # the least time the fewest requests can take
    return {"run": label, "rows": rows, "returned": returned, "distinct": distinct, "seconds": round(elapsed, 2),
            "rows_per_s": None if error else round(rows / elapsed), "requests": requests,
            "503s": stats["rate_limited"], "429s": stats.get("operating_limited", 0),
            "operating_s": round(sum((stats.get("operating_seconds") or {}).values()), 1), "bound_s": bound,
            "ratio_to_bound": round(bound / elapsed, 3) if bound and not error else None,
            "records_created": stats["records"].get("contact"), "error": error}


def ours_list(tmp: str, chains: int):
    def setup(base: str):
        from flask_bitrix24.services.bitrix24_service import bx_list_all

        app = our_app(base, tmp, BITRIX_LIST_CHAINS=chains)

        def work(seen: dict) -> int:
            with app.app_context():
                return count_ids(bx_list_all("crm.contact.list", {"select": ["ID", "NAME"]}), seen)
        return work
    return setup


def sdk_list(base: str):
    client = sdk_client(base)

    def work(seen: dict) -> int:
        # A lazy request: the pages are fetched while .result (a generator) is consumed.
        return count_ids(client.crm.contact.list(select=["ID", "NAME"]).as_list_fast().result, seen)
    return work


def fast_list(base: str):
    client = fast_client(base)

    def work(seen: dict) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return count_ids(client.get_all("crm.contact.list", {"select": ["ID", "NAME"]}), seen)
    return work


def items(n: int) -> list[dict]:
    return [{"fields": {"NAME": f"Bench {i}", "LAST_NAME": "Create", "EMAIL": [{"VALUE": f"b{i}@example.com"}]}}
            for i in range(n)]


def ours_create(tmp: str, n: int):
    def setup(base: str):
        from flask_bitrix24.services.bulk import bulk_write

        app, payload = our_app(base, tmp), items(n)

        def work(seen: dict) -> int:
            with app.app_context():
                outcomes = bulk_write("crm.contact", payload)
            seen["rows"] = sum(1 for o in outcomes if o.error is None)
            return seen["rows"]
        return work
    return setup


def fast_create(n: int):
    def setup(base: str):
        client, payload = fast_client(base), items(n)

        def work(seen: dict) -> int:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seen["rows"] = len(client.call("crm.contact.add", payload))
            return seen["rows"]
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


CLIENTS = ("ours4", "ours1", "b24pysdk", "fast_bitrix24")  # the listings, in the order they run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--list", type=int, nargs="*", default=[20_000, 100_000], help="rows per listing (0: skip)")
    parser.add_argument("--create", type=int, nargs="*", default=[5_000], help="rows per create run (0: skip)")
    parser.add_argument("--memory", type=int, default=100_000, help="rows for the memory run (0: skip)")
    parser.add_argument("--time-scale", type=float, default=0.0,
                        help="the emulator answers in its modelled server time times this (0: at once)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take before it is cut off")
    parser.add_argument("--clients", nargs="*", default=list(CLIENTS), choices=list(CLIENTS),
                        help="which clients list (default: all of them)")
    args = parser.parse_args()
    Emulator.time_scale = args.time_scale
    logging.basicConfig(level=logging.WARNING)
    for name in ("fast_bitrix24", "flask_bitrix24", "werkzeug", "b24pysdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # fast_bitrix24 leaves its other requests' tasks unretrieved when it gives up: asyncio logs each one
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # needed: the fewest requests that can do it (a first page, then 50 pages per batch; 50 adds per batch)
        def pages(n: int) -> int:
            return 1 + math.ceil(max(0, n - 50) / 2500)

        runs = []
        listings = {"ours4": ("ours, 4 ID ranges side by side", lambda: ours_list(tmp, 4)),
                    "ours1": ("ours, 1 keyset chain", lambda: ours_list(tmp, 1)),
                    "b24pysdk": ("b24pysdk as_list_fast", lambda: sdk_list),
                    "fast_bitrix24": ("fast_bitrix24 get_all", lambda: fast_list)}
        for n in (n for n in args.list if n > 0):
            for client in (c for c in CLIENTS if c in args.clients):
                name, setup = listings[client]
                runs.append((f"list {n:,} ({name})", n, setup(), n, pages(n)))
        for n in (n for n in args.create if n > 0):
            runs.append((f"create {n:,} (ours, bulk_write)", n, ours_create(tmp, n), 0, math.ceil(n / 50)))
            runs.append((f"create {n:,} (fast_bitrix24 call)", n, fast_create(n), 0, math.ceil(n / 50)))
        runs.sort(key=lambda run: run[0].split(" ")[0])  # creates first, as before; ours and theirs side by side
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

    print("| run | rows | returned | seconds | rows/s | requests | 503s | 429s | operating s | bound s "
          "| ratio to bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        common = f"{r['requests']} | {r['503s']} | {r['429s']} | {r['operating_s']} | {r['bound_s']:.1f}"
        head = f"| {r['run']} | {r['rows']:,} | {r['returned']:,}"
        if r["error"]:
            print(f"{head} | failed after {r['seconds']} s | - | {common} | {r['error'][:60]} |")
            continue
        ratio = "within burst" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.2f}"
        print(f"{head} | {r['seconds']} | {r['rows_per_s']:,} | {common} | {ratio} |")
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
