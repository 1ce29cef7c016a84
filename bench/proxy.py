#!/usr/bin/env python
"""What our app costs on top of the portal: latency added per call, throughput, connections.

    .venv/bin/python bench/proxy.py [--calls 1000] [--clients 8] [--throughput-calls 2000] [--rounds 1]

Both servers run under gunicorn on loopback, in their own processes: the emulator (1 worker,
gthread, keep-alive, no limits, so it is never the thing waited for) and our app (gunicorn.conf.py:
gthread; 2 workers x 8 threads here). The same call is made two ways, interleaved one by one so
that the machine's noise falls on both alike:

- direct:  POST <emulator>/rest/1/demo/crm.contact.get   (id=1), what a client of Bitrix24 pays
- proxied: GET  <app>/api/bitrix/clients/1/contacts/1,          the same call through us

Prints p50 / p99 of each and the difference (our overhead), the throughput with N concurrent
clients through us and directly, and how many TCP connections the emulator saw for the proxied
calls (our pooled, kept-alive session per portal should open a handful, not one per call).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from benchkit import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key-0123456789"




def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats(emulator: str) -> dict:
    return requests.get(f"{emulator}/_emulator/stats", timeout=10).json()


def throughput(make_call, clients: int, total: int) -> tuple[float, int]:
    """(calls per second, failures) for ``total`` calls spread over ``clients`` threads."""
    counter = iter(range(total))
    lock = threading.Lock()
    failures = 0

    def worker() -> None:
        nonlocal failures
        session = requests.Session()
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                ok = make_call(session).status_code == 200
            except requests.RequestException:
                ok = False
            if not ok:
                with lock:
                    failures += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total / (time.perf_counter() - started), failures


def bare_app():
    """The floor for any proxy in Python: gunicorn + Flask answering a constant, no outbound call."""
    from flask import Flask

    bare = Flask("bare")
    bare.get("/x")(lambda: {"result": {"ID": "1", "NAME": "Preloaded 0"}})
    return bare


def in_process_times(env: dict, emulator: str, calls: int, call_direct, direct) -> dict[str, list[float]]:
    """The same proxied call into our app's WSGI callable in this process (no HTTP server in front),
    interleaved with direct calls: what our own code adds, apart from the extra HTTP hop."""
    import tempfile as _tempfile

    sys.path.insert(0, str(ROOT))
    from flask_bitrix24 import create_app

    config = {key: env[key] for key in ("BITRIX_SECRET_KEY", "BITRIX_API_KEY", "BITRIX_WEBHOOK_BASE",
                                        "BITRIX_ALLOWED_HOSTS")}
    config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{_tempfile.mkdtemp()}/inproc.db", BITRIX_RATE_BURST=10**6,
                  BITRIX_RATE_DRAIN=10.0**6)
    logging.getLogger().setLevel(logging.WARNING)
    client = create_app(config).test_client()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for _ in range(50):
        assert client.get("/api/bitrix/clients/1/contacts/1", headers=headers).status_code == 200
    times: dict[str, list[float]] = {"direct": [], "in_process": []}
    for _ in range(calls):
        started = time.perf_counter()
        call_direct(direct)
        times["direct"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        assert client.get("/api/bitrix/clients/1/contacts/1", headers=headers).status_code == 200
        times["in_process"].append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--calls", type=int, default=1000, help="single-client calls each way")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--throughput-calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the single-client comparison this many times, each round printed")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    tmp = tempfile.mkdtemp(prefix="bench-proxy-")
    emu_port, app_port = free_port(), free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    gunicorn = [sys.executable, "-m", "gunicorn", "--log-level", "warning"]
    bare_port = free_port()
    procs = [subprocess.Popen(
        [*gunicorn, "-c", "/dev/null", "-w", "1", "-k", "gthread", "--threads", "16", "--keep-alive", "60",
         "-b", f"127.0.0.1:{emu_port}", "bitrix24_emulator:create_emulator(limits=False, preload={'contact': 10})"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    # The floor: a bare Flask app under the same gunicorn settings, answering without calling anything.
    procs.append(subprocess.Popen(
        [*gunicorn, "-c", "/dev/null", "-w", "2", "-k", "gthread", "--threads", "8", "--keep-alive", "5",
         "-b", f"127.0.0.1:{bare_port}", "--chdir", str(ROOT / "bench"), "proxy:bare_app()"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "PROMETHEUS_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp}/bench.db", BITRIX_SECRET_KEY=Fernet.generate_key().decode(),
        BITRIX_API_KEY=API_KEY, BITRIX_WEBHOOK_BASE=f"{emulator}/rest/1/demo/", BITRIX_ALLOWED_HOSTS="127.0.0.1",
        BITRIX_RATE_BURST="1000000", BITRIX_RATE_DRAIN="1000000", PORT=str(app_port),
        GUNICORN_BIND=f"127.0.0.1:{app_port}", WEB_CONCURRENCY=os.environ.get("BENCH_WORKERS", "2"),
        GUNICORN_THREADS="8", GUNICORN_WORKER_CLASS=os.environ.get("BENCH_WORKER_CLASS", "gthread"),
        GUNICORN_ACCESSLOG="", BITRIX_LOG_FORMAT="text",
    )
    procs.append(subprocess.Popen([*gunicorn, "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    app = f"http://127.0.0.1:{app_port}/api/bitrix"
    try:
        wait_http(f"{emulator}/_emulator/stats")
        wait_http(f"{app}/health")
        wait_http(f"http://127.0.0.1:{bare_port}/x")
        direct, proxied, bare = requests.Session(), requests.Session(), requests.Session()
        proxied.headers["Authorization"] = f"Bearer {API_KEY}"

        def call_direct(session: requests.Session) -> requests.Response:
            return session.post(f"{emulator}/rest/1/demo/crm.contact.get", data={"id": "1"}, timeout=30)

        def call_proxied(session: requests.Session) -> requests.Response:
            if session is not proxied and "Authorization" not in session.headers:
                session.headers["Authorization"] = f"Bearer {API_KEY}"
            return session.get(f"{app}/clients/1/contacts/1", timeout=30)

        for _ in range(100):  # warm up both (imports, pools, first-call setup in every worker)
            assert call_direct(direct).status_code == 200
            assert call_proxied(proxied).status_code == 200, call_proxied(proxied).text
        before = stats(emulator)
        def call_bare(session: requests.Session) -> requests.Response:
            return session.get(f"http://127.0.0.1:{bare_port}/x", timeout=30)

        for _ in range(100):
            call_bare(bare)
        rounds: list[dict[str, list[float]]] = []
        for _ in range(args.rounds):
            times: dict[str, list[float]] = {"direct": [], "proxied": [], "bare": []}
            for _ in range(args.calls):
                for name, fn, session in (("direct", call_direct, direct), ("proxied", call_proxied, proxied),
                                          ("bare", call_bare, bare)):
                    started = time.perf_counter()
                    response = fn(session)
                    times[name].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200 and response.json()["result"]["ID"] in ("1", 1), \
                        response.text
            rounds.append(times)
        after = stats(emulator)
        # Both sessions were connected during the warm-up: any new connection is one we failed to reuse.
        single_connections = after["connections"] - before["connections"]
        inprocess = in_process_times(env, emulator, args.calls, call_direct, direct)

        before = stats(emulator)
        proxied_rate, proxied_failures = throughput(call_proxied, args.clients, args.throughput_calls)
        after = stats(emulator)
        concurrent_connections = after["connections"] - before["connections"]
        concurrent_requests = after["requests"] - before["requests"]
        direct_rate, direct_failures = throughput(call_direct, args.clients, args.throughput_calls)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)

    if len(rounds) > 1:
        print(f"single client, {len(rounds)} rounds of {args.calls} calls each way, interleaved (p50 ms):")
        for number, each in enumerate(rounds, 1):
            rd, rp, rb = (pct(each[name], 0.50) for name in ("direct", "proxied", "bare"))
            print(f"  round {number}: direct {rd:5.2f}  through our app {rp:5.2f}  added {rp - rd:5.2f}  "
                  f"bare hop {rb:5.2f}  added / bare hop {(rp - rd) / rb:4.2f}x")
        print("all rounds together:")
    times = {name: [value for each in rounds for value in each[name]] for name in ("direct", "proxied", "bare")}
    d50, d99 = pct(times["direct"], 0.50), pct(times["direct"], 0.99)
    p50, p99 = pct(times["proxied"], 0.50), pct(times["proxied"], 0.99)
    print(f"single client, {args.calls * len(rounds)} calls each way, interleaved (ms):")
    print(f"  direct to the emulator   p50 {d50:6.2f}  p99 {d99:6.2f}  mean {statistics.mean(times['direct']):6.2f}")
    print(f"  through our app          p50 {p50:6.2f}  p99 {p99:6.2f}  mean {statistics.mean(times['proxied']):6.2f}")
    print(f"  our overhead             p50 {p50 - d50:6.2f}  p99 {p99 - d99:6.2f}")
    b50, b99 = pct(times["bare"], 0.50), pct(times["bare"], 0.99)
    print(f"  a bare Flask app under the same gunicorn, calling nothing: p50 {b50:6.2f}  p99 {b99:6.2f} "
          "(the cost of any extra HTTP hop)")
    print(f"  our overhead / the bare hop at p50: {(p50 - d50) / b50:4.2f}x")
    i50, i99 = pct(inprocess["in_process"], 0.50), pct(inprocess["in_process"], 0.99)
    e50, e99 = pct(inprocess["direct"], 0.50), pct(inprocess["direct"], 0.99)
    print(f"  our app called in-process (no HTTP server in front; direct p50 {e50:.2f} p99 {e99:.2f} in that run):")
    print(f"                           p50 {i50:6.2f}  p99 {i99:6.2f}  -> our code adds p50 {i50 - e50:5.2f}  "
          f"p99 {i99 - e99:5.2f}")
    print(f"  new portal connections during those {args.calls * len(rounds)} calls: {single_connections} "
          "(the pooled connections from the warm-up were reused)")
    print(f"{args.clients} concurrent clients, {args.throughput_calls} calls:")
    print(f"  through our app (gunicorn, gthread):  {proxied_rate:7.0f} calls/s, failures {proxied_failures}")
    print(f"  direct to the emulator:               {direct_rate:7.0f} calls/s, failures {direct_failures}")
    print(f"  portal connections opened by our app for {concurrent_requests} calls: {concurrent_connections}")


if __name__ == "__main__":
    main()
