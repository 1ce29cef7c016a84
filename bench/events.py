#!/usr/bin/env python
"""Event receiver under load: our app under gunicorn (4 workers), 2,000 deliveries from 20 concurrent
senders on loopback, 10% of them re-deliveries, plus forged ones; on SQLite and on PostgreSQL.

    .venv/bin/python bench/events.py [--deliveries 2000] [--senders 20] [--pg URL | --no-pg]

Checks and prints: events lost (genuine deliveries with no row), stored twice, non-2xx answers to
genuine deliveries, forged events stored; and the acknowledgement latency (p50, p99) and rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import requests
from benchkit import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLIENTS = 4




def payload(client: int, n: int, token: str) -> str:
    return urlencode({
        "event": "ONCRMDEALUPDATE", "event_handler_id": "7", "data[FIELDS][ID]": str(n), "ts": str(1_790_000_000 + n),
        "auth[domain]": f"portal{client}.bitrix24.com", "auth[member_id]": f"{client:032x}",
        "auth[application_token]": token,
    })


def run(database_url: str, deliveries: int, senders: int, label: str) -> dict:
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine, text

    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_")}
    env.update(DATABASE_URL=database_url, BITRIX_SECRET_KEY=Fernet.generate_key().decode(), BITRIX_AUTH_DISABLED="1")
    engine = create_engine(database_url)
    with engine.begin() as conn:  # a clean slate
        for table in ("bitrix_events", "client_crm_auth", '"CRMs"', "bitrix24_alembic_version"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    subprocess.run([sys.executable, "setup_bitrix24_crm.py"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        # -c /dev/null: sync workers, as recorded in RESULTS.md (not gunicorn.conf.py's gthread)
        [sys.executable, "-m", "gunicorn", "-c", "/dev/null", "-w", "4", "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/api/bitrix"
    try:
        wait_http(f"{base}/clients/1/config")
        tokens = {}
        for client in range(1, CLIENTS + 1):
            tokens[client] = f"token-{client}-{random.getrandbits(64):x}"
            r = requests.post(f"{base}/clients/{client}/config", json={
                "webhook_base": f"https://portal{client}.bitrix24.com/rest/1/secret{client}/",
                "outbound_token": tokens[client]}, timeout=10)
            assert r.status_code == 201, r.text
        unique = deliveries - deliveries // 10
        genuine = [(i % CLIENTS + 1, i) for i in range(unique)]
        plan = [("genuine", c, n, payload(c, n, tokens[c])) for c, n in genuine]
        plan += [("again", c, n, payload(c, n, tokens[c])) for c, n in random.sample(genuine, deliveries - unique)]
        forged = [("forged", c, 10**6 + n, payload(c, 10**6 + n, "forged-token")) for c, n in genuine[:50]]
        random.shuffle(plan)
        plan += forged
        random.shuffle(plan)
        results: list[tuple[str, int, float]] = []
        lock = threading.Lock()
        cursor = iter(plan)

        def sender() -> None:
            session = requests.Session()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                kind, _, _, body = item
                started = time.perf_counter()
                status = session.post(f"{base}/webhook", data=body, headers=headers, timeout=30).status_code
                elapsed = time.perf_counter() - started
                with lock:
                    results.append((kind, status, elapsed))

        started = time.perf_counter()
        threads = [threading.Thread(target=sender) for _ in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        time.sleep(1)  # inline handlers run after each answer
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT client_id, entity_id, status FROM bitrix_events")).all()
    finally:
        server.terminate()
        server.wait(timeout=20)
        engine.dispose()

    stored = [(r[0], int(r[1])) for r in rows]
    expected = set(genuine)
    genuine_latencies = sorted(e for kind, s, e in results if kind != "forged")
    return {
        "backend": label,
        "deliveries": sum(1 for kind, _, _ in results if kind != "forged"),
        "re_deliveries": sum(1 for kind, _, _ in results if kind == "again"),
        "forged": sum(1 for kind, _, _ in results if kind == "forged"),
        "stored": len(stored),
        "lost": len(expected - set(stored)),
        "stored_twice": len(stored) - len(set(stored)),
        "forged_stored": len(set(stored) - expected),
        "non_2xx_genuine": sum(1 for kind, s, _ in results if kind != "forged" and not 200 <= s < 300),
        "forged_refused_401": sum(1 for kind, s, _ in results if kind == "forged" and s == 401),
        "not_done": sum(1 for r in rows if r[2] != "done"),
        "p50_ms": round(statistics.median(genuine_latencies) * 1000, 1),
        "p99_ms": round(genuine_latencies[int(len(genuine_latencies) * 0.99) - 1] * 1000, 1),
        "per_s": round(len(results) / wall),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--pg", default=os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        out.append(run(f"sqlite:///{tmp}/events.db", args.deliveries, args.senders, "SQLite (WAL)"))
    if not args.no_pg:
        out.append(run(args.pg, args.deliveries, args.senders, "PostgreSQL"))
    print("| backend | deliveries (re-deliveries) | forged | stored | lost | stored twice | non-2xx genuine "
          "| forged stored | p50 ms | p99 ms | deliveries/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in out:
        forged = f"{r['forged']} ({r['forged_refused_401']} got 401)"
        print(f"| {r['backend']} | {r['deliveries']:,} ({r['re_deliveries']}) | {forged} "
              f"| {r['stored']:,} | {r['lost']} | {r['stored_twice']} | {r['non_2xx_genuine']} | {r['forged_stored']} "
              f"| {r['p50_ms']} | {r['p99_ms']} | {r['per_s']} |")
    print("\n" + json.dumps(out))
    failed = any(r["lost"] or r["stored_twice"] or r["non_2xx_genuine"] or r["forged_stored"] for r in out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
