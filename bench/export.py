#!/usr/bin/env python
"""``flask bitrix24 export`` and ``flask bitrix24 import`` as subprocesses against the emulator.

    .venv/bin/python bench/export.py [--rows 100000] [--small 1000] [--import-rows 10000] [--limits]

Export: an emulator preloaded with ``--rows`` contacts; the export command writes ``--small`` of them
(``--filter <=ID=N``) and then all of them, as JSON Lines and as CSV, each in a fresh process. For each run:
wall seconds (process start to exit, imports included), rows/s, the requests the portal saw and the
process's peak RSS (``ru_maxrss`` from ``wait4``: its VmHWM at exit). The figure that matters is the
growth from the small run to the large one: a streaming export holds one batch (2,500 rows), whatever
the total (target: under 30 MB).

Import: a fresh emulator, a JSON Lines file of ``--import-rows`` new contacts; the import is killed
(SIGKILL) once the portal holds half of them, then run again to the end. The emulator's own count
(``/_emulator/stats``) must then be exactly ``--import-rows``.

By default the emulator runs with ``--no-limits`` and our app paces freely; ``--limits`` keeps Bitrix24's
bucket (burst 50, 2 requests/s) on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import EmulatorProcess

ROOT = Path(__file__).resolve().parent.parent


class Emulator(EmulatorProcess):
    def __init__(self, preload: int, limits: bool) -> None:
        super().__init__(preload=preload, limits=limits)


def app_env(emulator: Emulator, tmp: str, limits: bool) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_") and k != "DATABASE_URL"}
    env.update(BITRIX_WEBHOOK_BASE=emulator.base, BITRIX_ALLOWED_HOSTS="127.0.0.1",
               BITRIX_SECRET_KEY=Fernet.generate_key().decode(), DATABASE_URL=f"sqlite:///{tmp}/bench.db")
    if not limits:
        env.update(BITRIX_RATE_BURST="100000", BITRIX_RATE_DRAIN="100000")
    return env


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "app", "bitrix24", *args]


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[int, float, int, str]:
    """(exit code, wall seconds, peak RSS in kB, stderr's last line) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return proc.returncode, elapsed, usage.ru_maxrss, last


def export_runs(rows: int, small: int, limits: bool, tmp: str) -> list[dict]:
    emulator = Emulator(rows, limits)
    results = []
    try:
        env = app_env(emulator, tmp, limits)
        subprocess.run(flask("setup"), cwd=ROOT, env=env, check=True, capture_output=True)  # the database, once
        for fmt in ("jsonl", "csv"):
            for n in (small, rows):
                out = Path(tmp) / f"contacts-{n}.{fmt}"
                before = emulator.stats()["requests"]
                code, seconds, rss_kb, last = run_measured(
                    flask("export", "contacts", "--client", "1", "--filter", f"<=ID={n}", "--format", fmt,
                          "--output", str(out)), env)
                lines = sum(1 for _ in out.open()) - (1 if fmt == "csv" else 0) if out.exists() else 0
                results.append({"run": f"export {n:,} contacts ({fmt})", "rows": lines, "exit": code,
                                "seconds": round(seconds, 2), "rows_per_s": round(lines / seconds),
                                "requests": emulator.stats()["requests"] - before,
                                "peak_rss_mb": round(rss_kb / 1024, 1),
                                "bytes": out.stat().st_size if out.exists() else 0, "last_line": last,
                                # the command's own figure: from its first call to its last row, no start-up
                                "listing_rows_per_s": int(m[1].replace(",", "")) if (
                                    m := re.search(r"\(([0-9,]+) rows/s\)", last)) else None})
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
                if lines != n or code != 0:
                    raise SystemExit(f"export of {n} rows wrote {lines} (exit {code}): {last}")
                out.unlink()
    finally:
        emulator.stop()
    return results


def import_run(n: int, limits: bool, tmp: str) -> dict:
    emulator = Emulator(0, limits)
    try:
        env = app_env(emulator, tmp, limits)
        src = Path(tmp) / "import-contacts.jsonl"
        with src.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"NAME": f"Imported {i}", "LAST_NAME": f"#{i}",
                                    "EMAIL": [{"VALUE": f"p{i}@example.com", "VALUE_TYPE": "WORK"}]}) + "\n")
        cmd = flask("import", "contacts", str(src), "--client", "1")
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and (emulator.stats()["records"].get("contact") or 0) < n // 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first_seconds = time.perf_counter() - started
        at_kill = emulator.stats()["records"].get("contact") or 0
        started = time.perf_counter()
        rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        rerun_seconds = time.perf_counter() - started
        stats = emulator.stats()
        final = stats["records"].get("contact") or 0
        summary = next((line for line in rerun.stdout.splitlines() if "created" in line), rerun.stdout.strip())
        return {"run": f"import {n:,} contacts, killed at half, run again", "rows": n,
                "records_at_kill": at_kill, "killed_after_s": round(first_seconds, 2),
                "rerun_seconds": round(rerun_seconds, 2), "rerun_exit": rerun.returncode,
                "rerun_summary": summary.split(": ", 2)[-1], "records_final": final,
                "requests": stats["requests"], "exactly_n": final == n}
    finally:
        emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--import-rows", type=int, default=10_000)
    parser.add_argument("--limits", action="store_true", help="Bitrix24's bucket on the emulator and in our app")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exports = export_runs(args.rows, args.small, args.limits, tmp)
        imported = import_run(args.import_rows, args.limits, tmp) if args.import_rows else None
    print("| run | rows | seconds | rows/s | rows/s after start-up | requests | peak RSS MB | file MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in exports:
        print(f"| {r['run']} | {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | {r['listing_rows_per_s']:,} | "
              f"{r['requests']} | {r['peak_rss_mb']} | {r['bytes'] / 1e6:.1f} |")
    for fmt in ("jsonl", "csv"):
        small, large = [r for r in exports if f"({fmt})" in r["run"]]
        print(f"\npeak RSS growth ({fmt}), {small['rows']:,} -> {large['rows']:,} rows: "
              f"{large['peak_rss_mb'] - small['peak_rss_mb']:+.1f} MB")
    if imported:
        print(f"\n{imported['run']}: {imported['records_at_kill']:,} records when killed "
              f"({imported['killed_after_s']} s), rerun {imported['rerun_seconds']} s (exit {imported['rerun_exit']}: "
              f"{imported['rerun_summary']}), {imported['records_final']:,} records in the end; "
              f"{imported['requests']} requests in all")
    print("\n" + json.dumps({"exports": exports, "import": imported}))
    ok = all(r["exit"] == 0 for r in exports) and (imported is None or imported["exactly_n"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
