#!/usr/bin/env python
"""PostgreSQL restarts under event load: what senders see, and how long recovery takes.

    .venv/bin/python bench/outage.py [--seconds 12] [--senders 8] [--down-at 3] [--down-for 3] [--pg URL]

Our app (threaded WSGI server on loopback) talks to PostgreSQL through a TCP proxy that this script
severs (every connection killed, new ones refused, as a restart does) and restores. Senders post
genuine, distinct Bitrix24 events the whole time. Prints: deliveries by answer status (5xx other
than 503 is the figure that must be 0), seconds from the database's return to the first stored
event, and whether every delivery answered 200 has its row (accepted events lost).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "outage-bench-token"


class Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--down-at", type=float, default=3.0)
    parser.add_argument("--down-for", type=float, default=3.0)
    parser.add_argument("--pg", default=os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    from cryptography.fernet import Fernet
    from flask_bitrix24 import create_app, runtime
    from sqlalchemy import create_engine, func, inspect, select, text

    from tests.faults.proxy import SeverableProxy  # the proxy the fault tests sever

    parts = urlsplit(args.pg)
    engine = create_engine(args.pg)
    with engine.begin() as conn:  # a clean database
        for name in inspect(conn).get_table_names():
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    proxy = SeverableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = f"{parts.username + '@' if parts.username else ''}127.0.0.1:{proxy.port}"
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
        "BITRIX_SECRET_KEY": Fernet.generate_key().decode(), "BITRIX_AUTH_DISABLED": True,
        "BITRIX_OUTBOUND_TOKEN": TOKEN, "BITRIX_WEBHOOK_BASE": "",
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}, "pool_size": args.senders},
    })
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}/api/bitrix/webhook"

    results: list[tuple[float, int, int]] = []  # (time, status, n)
    lock, counter, stop = threading.Lock(), iter(range(10**9)), threading.Event()
    started = time.monotonic()

    def sender() -> None:
        with requests.Session() as http:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                body = urlencode({"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": str(n), "ts": str(n),
                                  "auth[domain]": "bench.bitrix24.com", "auth[application_token]": TOKEN})
                try:
                    status = http.post(url, data=body, timeout=30,
                                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code
                except requests.RequestException:
                    status = 0
                with lock:
                    results.append((time.monotonic() - started, status, n))

    threads = [threading.Thread(target=sender) for _ in range(args.senders)]
    for t in threads:
        t.start()
    time.sleep(args.down_at)
    proxy.sever()
    down_at = time.monotonic() - started
    time.sleep(args.down_for)
    proxy.restore()
    up_at = time.monotonic() - started
    time.sleep(max(0.0, args.seconds - args.down_at - args.down_for))
    stop.set()
    for t in threads:
        t.join(60)
    server.shutdown()

    by_status = collections.Counter(status for _, status, _ in results)
    accepted = {n for _, status, n in results if status == 200}
    after_up = [t for t, status, _ in results if status == 200 and t >= up_at]
    with app.app_context():
        model = runtime(app).event_model
        stored = set(int(x) for x in runtime(app).session.execute(select(model.entity_id)).scalars())
        total_rows = runtime(app).session.execute(select(func.count()).select_from(model)).scalar_one()
    lost = accepted - stored
    print(f"deliveries: {len(results)} from {args.senders} senders in {args.seconds:.0f} s; "
          f"database down from {down_at:.1f} s to {up_at:.1f} s")
    print(f"answers by status: {dict(sorted(by_status.items()))}")
    print(f"5xx other than 503: {sum(v for k, v in by_status.items() if k >= 500 and k != 503)}; "
          f"no answer at all: {by_status.get(0, 0)}")
    print(f"first stored event after the database came back: "
          f"{(min(after_up) - up_at):.2f} s" if after_up else "no event stored after the database came back")
    print(f"accepted (200) but not stored: {len(lost)}; rows {total_rows}, accepted {len(accepted)}")
    with engine.begin() as conn:
        for name in inspect(conn).get_table_names():
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    proxy.sever()
    return 1 if lost or any(k >= 500 and k != 503 for k in by_status) else 0


if __name__ == "__main__":
    sys.exit(main())
