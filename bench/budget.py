#!/usr/bin/env python
"""10,000 updates of a costly method, paced by its operating budget: no 429, and how near the least time.

    .venv/bin/python bench/budget.py [--updates 10000] [--cost 0.5] [--scale 0.05]

Bitrix24 lets each method run 480 s per 10 minutes on a portal (https://apidocs.bitrix24.com/limits.html).
A method whose calls cost ``--cost`` seconds of server time each (an update that starts automation rules,
say) can then be called about 480 / cost times per window, and a job bigger than that must spread over
several windows. An emulator process preloaded with ``--updates`` contacts charges ``crm.contact.update``
that cost (``--method-cost``) and enforces the real bucket (burst 50, 2 per second). Time is compressed by
``--scale`` so the run fits in minutes: the window is 600 x scale seconds (ten buckets) and every answer
takes its server time x scale; the limit (480) and the cost per call are not scaled, so the number of
calls each window allows is the portal's. Our side is told the same window (BITRIX_OPERATING_BUCKET).

The job is what a person runs: ``flask bitrix24 import contacts updates.jsonl --client 1`` (every row has
an ID, so every row is an update, 50 to a batch request; ``--via python``: one ``bulk_write`` call of all
of them, as a host's own job would make, in this process). Printed: wall time, requests, 503s and 429s
(HTTP and batch commands), operating seconds charged, the lines the command printed while it waited for
the budget, and the bound:

- budget: each window allows n = floor(480 / cost) + 1 calls (the call that passes 480 still completes);
  the updates need w = ceil(updates / n) windows; the earliest the last window's calls can start is
  (w - 1) x window after the first, less one bucket (a window / 10: the first calls may be made at the very
  end of a bucket, which drops out a window after it began). The calls' own server time is not counted.
- bucket: max(0, requests - 50) / 2 s (the burst, then 2 a second).
- bound = the larger of the two; ratio = bound / wall time (1.0 = as fast as the limits permit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import EmulatorProcess

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 480.0


def bounds(updates: int, cost: float, window: float) -> dict:
    per_window = math.floor(LIMIT / cost) + 1
    windows = math.ceil(updates / per_window)
    budget = max(0.0, (windows - 1) * window - window / 10)
    requests = math.ceil(updates / 50)
    bucket = max(0, requests - 50) / 2
    return {"calls_per_window": per_window, "windows": windows, "budget_s": budget, "bucket_s": bucket,
            "bound_s": max(budget, bucket)}


def in_process(env: dict[str, str], updates: int) -> subprocess.CompletedProcess:
    """The same updates through the Python API, ``bulk_write``, in one call (what a host's own job does)."""
    sys.path.insert(0, str(ROOT))
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from flask_bitrix24 import create_app
        from flask_bitrix24.services.bulk import bulk_write

        app = create_app()
        with app.app_context():
            outcomes = bulk_write("crm.contact", [{"id": i, "fields": {"NAME": f"Updated {i}"}}
                                                  for i in range(1, updates + 1)], client_id=1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    failed = sum(o.error is not None for o in outcomes)
    summary = f"bulk_write: {len(outcomes):,} items: updated {len(outcomes) - failed:,}, failed {failed:,}"
    return subprocess.CompletedProcess([], 1 if failed else 0, summary, "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--cost", type=float, default=0.5, help="server seconds one crm.contact.update takes")
    parser.add_argument("--scale", type=float, default=0.05, help="time compression (1: a real portal's time)")
    parser.add_argument("--parallel", type=int, default=None, help="BITRIX_BULK_PARALLEL (default: as shipped, 4)")
    parser.add_argument("--chunk", type=int, default=None, help="the import's --chunk (default: as shipped, 400)")
    parser.add_argument("--via", choices=["cli", "python"], default="cli",
                        help="cli: flask bitrix24 import (default); python: one bulk_write() call in this process")
    args = parser.parse_args()
    window = 600 * args.scale
    emulator = EmulatorProcess(preload=args.updates, time_scale=args.scale, extra=[
        "--operating-window", str(window), "--method-cost", f"crm.contact.update={args.cost}"])
    try:
        with tempfile.TemporaryDirectory(prefix="bench-budget-") as folder:
            rows = Path(folder, "updates.jsonl")
            with rows.open("w") as out:
                for i in range(1, args.updates + 1):
                    out.write(json.dumps({"ID": str(i), "NAME": f"Updated {i}"}) + "\n")
            from cryptography.fernet import Fernet

            env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_") and k != "DATABASE_URL"}
            env.update(BITRIX_WEBHOOK_BASE=emulator.base, BITRIX_ALLOWED_HOSTS="127.0.0.1",
                       BITRIX_SECRET_KEY=Fernet.generate_key().decode(), DATABASE_URL=f"sqlite:///{folder}/b.db",
                       BITRIX_OPERATING_BUCKET=str(window / 10), BITRIX_VERIFY_CONFIG="0")
            if args.parallel:
                env["BITRIX_BULK_PARALLEL"] = str(args.parallel)
            chunk = ["--chunk", str(args.chunk)] if args.chunk else []
            flask = [sys.executable, "-m", "flask", "--app", "app", "bitrix24"]
            subprocess.run([*flask, "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
            before = emulator.stats()
            started = time.monotonic()
            if args.via == "cli":
                done = subprocess.run([*flask, "import", "contacts", str(rows), "--client", "1", *chunk], cwd=ROOT,
                                      env=env, capture_output=True, text=True)
            else:
                done = in_process(env, args.updates)
            elapsed = time.monotonic() - started
            after = emulator.stats()
    finally:
        emulator.stop()
    if done.returncode != 0:
        print(done.stdout, done.stderr)
        raise SystemExit(f"the import failed ({done.returncode})")
    def section(stats: dict, name: str) -> dict:
        value = stats.get(name)  # an empty section is [] (PHP's json_encode of an empty array)
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}

    status = {k: v - section(before, "by_status").get(k, 0) for k, v in section(after, "by_status").items()}
    found = bounds(args.updates, args.cost, window)
    operating = (section(after, "operating_seconds").get("crm.contact.update", 0)
                 - section(before, "operating_seconds").get("crm.contact.update", 0))
    result = {
        "updates": args.updates, "cost_s": args.cost, "scale": args.scale, "window_s": window,
        "via": args.via, "parallel": args.parallel or "default (4)", "chunk": args.chunk or "default (400)",
        "seconds": round(elapsed, 2), "requests": after["requests"] - before["requests"],
        "http_503": status.get("503", 0), "http_429": status.get("429", 0),
        "refused_for_budget": after["operating_limited"] - before["operating_limited"],
        "operating_s": round(operating, 1), **found, "ratio_to_bound": round(found["bound_s"] / elapsed, 3),
        "summary": done.stdout.strip().splitlines()[-1:],
        "waits_shown": [line for line in done.stderr.splitlines() if "waiting" in line][:3],
        "wait_lines": sum("waiting" in line for line in done.stderr.splitlines()),
    }
    print(json.dumps(result, indent=1))
    print(f"\n| updates | cost s | window s | seconds | requests | 503s | 429s | operating s | bound s "
          f"(budget / bucket) | ratio to bound |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
          f"| {args.updates:,} | {args.cost} | {window:g} | {elapsed:.1f} | {result['requests']} | "
          f"{result['http_503']} | {result['http_429'] + result['refused_for_budget']} | {operating:,.1f} | "
          f"{found['bound_s']:.1f} ({found['budget_s']:.1f} / {found['bucket_s']:.1f}) | "
          f"{result['ratio_to_bound']:.2f} |")


if __name__ == "__main__":
    main()
