#!/usr/bin/env python
"""The mirror at size: ``flask bitrix24 sync contacts --client 1`` against a portal of 100,000 contacts.

    .venv/bin/python bench/sync.py [--rows 100000] [--updates 1000] [--deletes 100] [--database-url URL]
                                   [--redis-url URL]

An emulator process preloaded with ``--rows`` contacts, with Bitrix24's request bucket (burst 50, 2 per
second) and its cost model (each call charged the server time a portal would spend, against 480 s per
method per 10 minutes: bitrix24_emulator/costs.py); our app paces itself to the same bucket. Three runs
of the command, each a fresh process, the way a person or a cron job runs it:

1. the first copy of every contact (every field: ``*``, ``UF_*`` and the multi-fields);
2. then, with ``--updates`` random contacts changed and ``--deletes`` deleted in the portal (no event
   reaches us: none is bound), a run that finds them by date and by comparing IDs (``--check-ids``);
3. runs with nothing to do: the walk by date alone (``--no-check-ids``, what the worker does every
   ``BITRIX_SYNC_SECONDS``), then with every ID compared (``--check-ids``, once a day by default).

For each: wall seconds, the requests the portal saw, the 503s and 429s it had to send, and the operating
seconds it charged. Then the mirror (SQLite by default) is compared with what the portal lists, field by
field: the figures count only if they are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from benchkit import EmulatorProcess

ROOT = Path(__file__).resolve().parent.parent


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "app", "bitrix24", *args]


OVERLAP = 5  # seconds each incremental run looks behind its cursor (default 300; see below)


def app_env(emulator: EmulatorProcess, database_url: str, redis_url: str | None) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_") and k != "DATABASE_URL"}
    env.update(BITRIX_WEBHOOK_BASE=emulator.base, BITRIX_ALLOWED_HOSTS="127.0.0.1",
               BITRIX_SECRET_KEY=Fernet.generate_key().decode(), DATABASE_URL=database_url,
               BITRIX_SYNC_ENTITIES="contacts", BITRIX_RECONCILE_OVERLAP=str(OVERLAP))
    if redis_url:
        env["BITRIX_REDIS_URL"] = redis_url
    return env


def measured(emulator: EmulatorProcess, name: str, cmd: list[str], env: dict[str, str]) -> dict:
    before = emulator.stats()
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = emulator.stats()
    operating = sum((after.get("operating_seconds") or {}).values()) - \
        sum((before.get("operating_seconds") or {}).values())
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    result = {"run": name, "exit": done.returncode, "seconds": round(seconds, 2),
              "requests": after["requests"] - before["requests"],
              "503s": after["rate_limited"] - before["rate_limited"],
              "429s": after.get("operating_limited", 0) - before.get("operating_limited", 0),
              "operating_s": round(operating, 2), "summary": summary.split(": ", 1)[-1],
              "by_method": {m: n - (before.get("by_method") or {}).get(m, 0)
                            for m, n in (after.get("by_method") or {}).items()
                            if n != (before.get("by_method") or {}).get(m, 0)},
              "batch_commands": {m: n - (before.get("batch_commands") or {}).get(m, 0)
                                 for m, n in (after.get("batch_commands") or {}).items()
                                 if n != (before.get("batch_commands") or {}).get(m, 0)}}
    print(json.dumps(result), file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stderr}")
    return result


def compare(env: dict[str, str]) -> dict:
    """The mirror against the portal, field by field (run in this process, on the app's own client)."""
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    from flask_bitrix24.runtime import runtime
    from flask_bitrix24.services import mirror
    from flask_bitrix24.services.bulk import bx_list_all
    from flask_bitrix24.standalone import create_app
    from sqlalchemy import select

    app = create_app()
    with app.app_context():
        fields = mirror.select_fields(mirror.ENTITIES["contacts"], 1)
        portal = {int(r["ID"]): r for r in bx_list_all("crm.contact.list", {"select": fields}, client_id=1)}
        model = runtime().mirror_models["contacts"]
        live, gone = {}, set()
        for rid, data, deleted in runtime().session.execute(select(model.bitrix_id, model.data, model.deleted)):
            if deleted:
                gone.add(int(rid))
            else:
                live[int(rid)] = data
    differing = sum(1 for i in portal if i in live and portal[i] != live[i])
    return {"portal_rows": len(portal), "mirror_rows": len(live), "mirror_deleted": len(gone),
            "missing_in_mirror": len(set(portal) - set(live)), "extra_in_mirror": len(set(live) - set(portal)),
            "differing": differing, "equal": set(portal) == set(live) and differing == 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=1_000)
    parser.add_argument("--deletes", type=int, default=100)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default=None, help="share the portal's bucket between the runs' processes "
                        "through Redis, as a deployment with BITRIX_REDIS_URL does (its database is emptied)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    emulator = EmulatorProcess(preload=args.rows, limits=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.redis_url:
                import redis

                redis.Redis.from_url(args.redis_url).flushdb()
            env = app_env(emulator, args.database_url or f"sqlite:///{tmp}/bench.db", args.redis_url)
            subprocess.run(flask("setup"), cwd=ROOT, env=env, check=True, capture_output=True)
            # A portal's records were mostly modified long before a first copy; the preloaded ones a moment
            # ago. Each incremental run lists again what changed in the overlap before its cursor: with the
            # default 300 s that would be every preloaded contact, each run. So the overlap is 5 s here,
            # and the copy starts once the preload is older than that.
            time.sleep(OVERLAP + 1.5)
            runs = [measured(emulator, f"first copy of {args.rows:,} contacts", flask("sync", "contacts", "--client",
                                                                                       "1"), env)]
            picked = rng.sample(range(1, args.rows + 1), args.updates + args.deletes)
            time.sleep(1.1)
            changed = requests.post(f"http://127.0.0.1:{emulator.port}/_emulator/changes", json={
                "entity": "contact", "update": picked[:args.updates], "delete": picked[args.updates:]},
                timeout=120).json()
            assert len(changed["updated"]) == args.updates and len(changed["deleted"]) == args.deletes, changed
            runs.append(measured(emulator, f"{args.updates:,} updates and {args.deletes:,} deletions, no events",
                                 flask("sync", "contacts", "--client", "1", "--check-ids"), env))
            runs.append(measured(emulator, "nothing changed: what changed since the cursor",
                                 flask("sync", "contacts", "--client", "1", "--no-check-ids"), env))
            runs.append(measured(emulator, "nothing changed: and every ID compared",
                                 flask("sync", "contacts", "--client", "1", "--check-ids"), env))
            check = compare(env)
    finally:
        emulator.stop()
    print("| run | seconds | requests | 503s | 429s | operating s | what the command said |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(f"| {r['run']} | {r['seconds']} | {r['requests']} | {r['503s']} | {r['429s']} | {r['operating_s']} | "
              f"{r['summary']} |")
    print()
    print(f"mirror against portal: {json.dumps(check)}")
    return 0 if check["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
