#!/usr/bin/env python
"""Many tenants at once: N tenants on N portals, each starting a bulk write at the same moment.

Our app runs as deployed in production (gunicorn, 4 workers, 2 RQ workers, Redis); the emulator enforces each
portal's own limits.

    .venv/bin/python bench/tenants.py [--tenants 100] [--items 5000] [--database-url URL] [--time-scale 0]
                                      [--redis-url redis://127.0.0.1:6379/4] [--workers 4] [--threads 15]
                                      [--job creates|updates] [--cost 0.5] [--scale 0.05] [--emulators 1]
                                      [--gc-threshold A,B,C|default]

What runs, each in a process of its own:

- the emulator, ``python -m bitrix24_emulator --portals N``: N portals in one process, each with its own
  records, request bucket (Bitrix24's: burst 50, drained 2 per second, limits on) and operating budget.
  ``--emulators K`` spreads the portals over K such processes, each on its own port (tenant n's portal on
  process (n - 1) % K): one Python process answers with one core at most, whatever the machine has, so with
  many busy portals in one, the bench measures that process, not our app (100 portals' batches of 50 creates
  need about 1.5 cores of the emulator's CPU at the bucket's pace; a real portal's CPU is not ours at all);
- our app under gunicorn with ``gunicorn.conf.py`` (4 workers, gthread) on SQLite (a temporary file) or on
  ``--database-url`` (PostgreSQL: give it a database of its own, e.g. ``bench_tenants``; its tables are
  created, clients 1..N's configs replaced), ``BITRIX_REDIS_URL`` (database 4 by default, emptied first; below
  15-10, which ``make test`` flushes) shared by every process, ``BITRIX_ENV_FALLBACK=0`` (no global webhook),
  metrics summed across workers;
- 2 RQ workers, ``flask bitrix24 worker``, as the README's production section starts them.

Each tenant (client n) saves its own portal's webhook through the API (``DELETE``, then ``POST
/api/bitrix/clients/<n>/config``, checked with one ``profile`` call, as a user does). Then every tenant POSTs
``--items`` new contacts to ``/api/bitrix/clients/<n>/contacts/batch`` at the same moment (requests of at most
5,000 items, the default ``BITRIX_BATCH_MAX_ITEMS``, one after another per tenant), 50 creates per Bitrix24
``batch`` request.

Why every job is a bulk write, none an RQ job: the RQ jobs our app has are mirror runs, reconciliation and
event handlers. A mirror copy reads 2,500 rows per request (50 keyset pages in a batch), so a job past the
burst (more than 40 requests) means copying over 100,000 rows per tenant (bench/sync.py: 43 requests for
100,000 contacts, 11 s for one tenant alone): half of 100 tenants would be 5,000,000 rows through one emulator
process and our database, which neither this 2-core machine nor the 10-minute budget holds; a smaller copy
fits in the burst and has no bound to measure against. So the RQ workers run as deployed, with no job
queued; their CPU is counted with ours all the same.

Each portal has its own address, 127.0.0.<k> (the emulator listens on 0.0.0.0, routes by webhook secret; every
127.x.y.z is this machine). Our app paces calls per portal host and port, as a portal is its domain: tenants
given http://127.0.0.1:PORT/rest/1/<secret>/ each would share one bucket in our app and go 1/N as fast.

gunicorn gets ``--threads`` threads per worker, 15 by default (the shipped default is 8). A bulk write holds its
thread for the whole job; jobs a worker accepted beyond its threads wait for one (whichever worker accepts first
gets the job, so the jobs need not spread evenly): with many tenants some jobs start only when others end. (This
bench first found a bulk write also holding the database connection of its first query, idle in transaction, for
the whole job, so a 16th job at once in one worker failed with 500; a lookup now ends the read it began.)

Per tenant: ``needed`` = ceil(items / 50), the fewest requests for its job; ``requests`` = what its portal saw
(the emulator's counter); ``bound = max(0, needed - 40) / 2`` seconds, the least time the portal's bucket
allows a background job (bulk work may fill only four fifths of the burst, 40 of 50 places, at once:
``BucketParams.background_capacity`` in app/services/limiter.py; then 2 per second:
https://apidocs.bitrix24.com/limits.html); ``achieved`` = from the common start to its answer; ``share = bound /
achieved`` (1.0: as fast as the portal permits; our pacing, 39 places then 99% of the drain rate, makes about 0.97
the most one job of 100 requests reaches). A job that did not create every item counts as share 0 and as failed.
The 503s and 429s each portal sent come from the emulator's counters.

``--job updates``: the job most bulk work on a portal is, one whose pace is the method's operating budget
rather than the bucket (https://apidocs.bitrix24.com/limits.html: 480 s of server time per method per 10
minutes). Each portal is preloaded with ``--items`` contacts and charges ``--cost`` seconds for each
``crm.contact.update``; each tenant POSTs an update of every one (items with an ``id``). Time is compressed as
in bench/budget.py: the window is 600 x ``--scale`` seconds and every answer takes its server time x scale,
while the limit (480) and the cost per call are not scaled, so each window allows a portal's number of calls;
the bucket is the real one (burst 50, 2 a second), and our side is told the window (BITRIX_OPERATING_BUCKET).
The bound is bench/budget.py's: the larger of the budget's, (windows - 1) x window less one bucket, with
floor(480 / cost) + 1 calls a window, and the bucket's, max(0, requests - 40) / 2 (background places).

CPU: utime + stime (children included) of the gunicorn master and workers and of both RQ workers, read from
/proc/<pid>/stat before and after the jobs, divided by the requests the portals received in that window,
per 1,000 calls (each call a batch of 50 creates). The emulator's own CPU is shown apart (it is not ours),
with the bench's client threads, the Redis server's (``INFO cpu``: it runs the limiter's Lua scripts) and the
machine's busy share of both cores over the same window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from benchkit import free_port, wait_http
from budget import bounds as budget_bounds

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND_PLACES, DRAIN = 40, 2.0  # of the portal's burst of 50; requests per second
PER_REQUEST = 50  # creates in one batch request
MAX_ITEMS = 5000  # BITRIX_BATCH_MAX_ITEMS: items in one POST
API_KEY = "bench-tenants-key"
TICK = os.sysconf("SC_CLK_TCK")


def address(n: int) -> str:
    """Tenant n's portal address: its own loopback IP (127.0.0.2, 127.0.0.3, ..., then 127.0.1.1, ...)."""
    return f"127.0.{n // 250}.{n % 250 + 1}"


# -- CPU from /proc ----------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime + cutime + cstime in seconds) of a live process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant, each with its reaped children (cutime, cstime)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            parents[int(entry)], cpu[int(entry)] = found
    members, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in members} - members
        members |= more
        grew = bool(more)
    return sum(cpu.get(pid, 0.0) for pid in members)


def redis_cpu(client) -> float:
    """CPU seconds the Redis server has used (``INFO cpu``: user + system, its main thread and the rest):
    it runs our Lua scripts (the buckets and the budgets) on the same two cores. The whole server's, so
    read it where nothing else uses that server."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over every core, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the processes ---------------------------------------------------------------------------------------


def start(cmd: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed with the process (stop)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = out  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    proc.log.close()  # type: ignore[attr-defined]


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def app_env(tmp: Path, database_url: str, redis_url: str, tenants: int, workers: int, threads: int,
            port: int) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "PROMETHEUS_", "GUNICORN_"))
           and k not in ("DATABASE_URL", "WEB_CONCURRENCY")}
    env.update(DATABASE_URL=database_url, BITRIX_SECRET_KEY=Fernet.generate_key().decode(), BITRIX_API_KEY=API_KEY,
               BITRIX_REDIS_URL=redis_url, BITRIX_ENV_FALLBACK="0",
               BITRIX_ALLOWED_HOSTS=",".join(address(n) for n in range(1, tenants + 1)),
               GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=str(workers), GUNICORN_THREADS=str(threads),
               GUNICORN_ACCESSLOG=str(tmp / "access.log"), PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"))
    return env


def _seconds(stats: dict) -> float:
    """Operating seconds charged on a portal, every method (an empty map comes as [], PHP's empty array)."""
    charged = stats.get("operating_seconds") or {}
    return sum(charged.values()) if isinstance(charged, dict) else 0.0


def emulator_stats(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=120).json()


# -- one run ---------------------------------------------------------------------------------------------


def contacts(tenant: int, count: int, job: str = "creates") -> list[bytes]:
    """The tenant's job as the JSON bodies of its POSTs, at most MAX_ITEMS items each: new contacts, or an
    update of each preloaded one (ids 1..count)."""
    if job == "updates":
        items = [{"id": i, "fields": {"NAME": f"Tenant {tenant} updated {i}"}} for i in range(1, count + 1)]
    else:
        items = [{"fields": {"NAME": f"Tenant {tenant}", "LAST_NAME": f"Contact {i}",
                             "EMAIL": [{"VALUE": f"t{tenant}.c{i}@example.com"}]}} for i in range(count)]
    return [json.dumps({"items": items[i:i + MAX_ITEMS]}).encode() for i in range(0, count, MAX_ITEMS)]


def placement(n: int, emulators: int) -> tuple[int, int]:
    """Where tenant n's portal lives: (emulator process, 0-based; portal number in that process, from 1)."""
    return (n - 1) % emulators, (n - 1) // emulators + 1


def run(tenants: int, items: int, database_url: str | None, redis_url: str, time_scale: float,
        workers_n: int, threads: int, job_kind: str = "creates", cost: float = 0.5, keep_logs: bool = False,
        emulators_n: int = 1, gc_threshold: str | None = None) -> dict:
    """One run; with ``job_kind="updates"``, ``time_scale`` is the compression of the portal's time (its
    operating window is 600 x time_scale seconds). The portals are spread over ``emulators_n`` emulator
    processes, tenant n's on process (n - 1) % emulators_n. ``gc_threshold`` (e.g. "default"): given to
    gunicorn (GUNICORN_GC_THRESHOLD) and to the emulators (--gc-threshold); None leaves both as shipped."""
    import redis

    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    procs: list[subprocess.Popen] = []
    try:
        emulators_n = min(emulators_n, tenants)
        emu_ports, app_port = [free_port() for _ in range(emulators_n)], free_port()
        window = 600 * time_scale
        costly = ["--preload", f"contact={items}", "--method-cost", f"crm.contact.update={cost}",
                  "--operating-window", str(window)] if job_kind == "updates" else []
        emulators = []
        for e, emu_port in enumerate(emu_ports):
            count = len(range(e + 1, tenants + 1, emulators_n))  # tenants e + 1, e + 1 + K, ... (placement)
            emulators.append(start([sys.executable, "-m", "bitrix24_emulator", "--host", "0.0.0.0", "--port",
                                    str(emu_port), "--portals", str(count), "--secret", "bench{n}", "--burst", "50",
                                    "--rate", "2", "--time-scale", str(time_scale), *costly,
                                    *(["--gc-threshold", gc_threshold] if gc_threshold else [])], None,
                                   tmp / f"emulator{e + 1}.log"))
        procs.extend(emulators)
        env = app_env(tmp, database_url or f"sqlite:///{tmp / 'bench.db'}", redis_url, tenants, workers_n, threads,
                      app_port)
        if job_kind == "updates":
            env["BITRIX_OPERATING_BUCKET"] = str(window / 10)
        if gc_threshold:
            env["GUNICORN_GC_THRESHOLD"] = gc_threshold
        flask = [sys.executable, "-m", "flask", "--app", "app", "bitrix24"]
        setup = subprocess.run([*flask, "setup"], cwd=ROOT, env=env, capture_output=True, text=True)
        if setup.returncode != 0:
            raise SystemExit(f"setup failed: {setup.stdout[-1000:]}{setup.stderr[-2000:]}")
        gunicorn = start([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], env, tmp / "gunicorn.log")
        procs.append(gunicorn)
        workers = [start([*flask, "worker"], env, tmp / f"worker{i}.log") for i in (1, 2)]
        procs.extend(workers)
        api = f"http://127.0.0.1:{app_port}/api/bitrix"
        for emu_port in emu_ports:
            wait_http(f"http://127.0.0.1:{emu_port}/_emulator/stats", timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{api}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or gunicorn.poll() is not None:
                raise SystemExit(f"gunicorn did not come up:\n{tail(tmp / 'gunicorn.log')}")
            time.sleep(0.3)
        for worker in workers:
            if worker.poll() is not None:
                raise SystemExit(f"an RQ worker stopped:\n{tail(Path(worker.log.name))}")  # type: ignore[attr-defined]

        headers = {"Authorization": f"Bearer {API_KEY}"}

        def register(n: int) -> None:
            # A config an earlier run saved (in a --database-url database) is under another run's secret key:
            # removed first, as README's "Remove a client's config" does.
            r = requests.delete(f"{api}/clients/{n}/config", headers=headers, timeout=60)
            if r.status_code not in (200, 204, 404):
                raise SystemExit(f"client {n}: removing its old config answered {r.status_code} {r.text[:300]}")
            e, local = placement(n, emulators_n)
            base = f"http://{address(n)}:{emu_ports[e]}/rest/1/bench{local}/"
            r = requests.post(f"{api}/clients/{n}/config", json={"webhook_base": base}, headers=headers, timeout=60)
            if r.status_code not in (200, 201):
                raise SystemExit(f"client {n}: saving its config answered {r.status_code} {r.text[:300]}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(register, range(1, tenants + 1)))
        bodies = {n: contacts(n, items, job_kind) for n in range(1, tenants + 1)}
        time.sleep(3)  # the profile checks' places drain (one each, 0.5 s)

        results: dict[int, dict] = {}
        gate = threading.Barrier(tenants + 1)

        def job(n: int) -> None:
            session = requests.Session()
            outcome = {"created": 0, "errors": []}
            gate.wait()
            try:
                for body in bodies[n]:
                    r = session.post(f"{api}/clients/{n}/contacts/batch", data=body, timeout=1800,
                                     headers={**headers, "Content-Type": "application/json"})
                    if r.status_code != 200:
                        outcome["errors"].append(f"{r.status_code} {r.text[:200]}")
                        continue
                    answer = r.json()
                    outcome["created"] += answer["created"] + answer["updated"]
                    outcome["errors"] += sorted({f"{o['error']}: {o['error_description'][:120]}"
                                                 for o in answer["result"] if not o["ok"]})[:3]
            except requests.RequestException as exc:
                outcome["errors"].append(repr(exc)[:200])
            outcome["done"] = time.perf_counter()
            results[n] = outcome

        jobs = [threading.Thread(target=job, args=(n,), daemon=True) for n in range(1, tenants + 1)]
        for t in jobs:
            t.start()
        roots = {"gunicorn": [gunicorn.pid], "rq": [w.pid for w in workers]}
        before_stats = [emulator_stats(port) for port in emu_ports]
        before = {name: sum(tree_cpu(p) for p in pids) for name, pids in roots.items()}
        before_emulator = sum(tree_cpu(emulator.pid) for emulator in emulators)
        before_self, before_machine, before_redis = own_cpu(), machine_jiffies(), redis_cpu(store)
        gate.wait()
        started = time.perf_counter()
        for t in jobs:
            t.join()
        wall = time.perf_counter() - started
        after = {name: sum(tree_cpu(p) for p in pids) for name, pids in roots.items()}
        after_emulator = sum(tree_cpu(emulator.pid) for emulator in emulators)
        after_self, after_machine, after_redis = own_cpu(), machine_jiffies(), redis_cpu(store)
        after_stats = [emulator_stats(port) for port in emu_ports]
        alive = {"gunicorn": gunicorn.poll() is None, "rq": all(w.poll() is None for w in workers)}
    except SystemExit as exc:
        raise SystemExit(f"{exc}\n(the processes' logs are in {tmp})") from None
    finally:
        for proc in reversed(procs):
            stop(proc)
    per_tenant = []
    needed = sum(math.ceil(min(MAX_ITEMS, items - i) / PER_REQUEST) for i in range(0, items, MAX_ITEMS))
    bound = max(0, needed - BACKGROUND_PLACES) / DRAIN
    if job_kind == "updates":
        bound = max(bound, budget_bounds(items, cost, 600 * time_scale)["budget_s"])
    for n in range(1, tenants + 1):
        e, local = placement(n, emulators_n)
        b, a = before_stats[e]["by_portal"][local - 1], after_stats[e]["by_portal"][local - 1]
        done = results[n]
        achieved = done["done"] - started
        ok = not done["errors"] and done["created"] == items
        # A job that did not create every item did not get its share: 0 (counted in "failed" too).
        share = (round(bound / achieved, 3) if ok else 0.0) if bound else None
        per_tenant.append({"tenant": n, "requests": a["requests"] - b["requests"],
                           "503s": a["rate_limited"] - b["rate_limited"],
                           "429s": a["operating_limited"] - b["operating_limited"],
                           "operating_s": round(_seconds(a) - _seconds(b), 1),
                           "achieved_s": round(achieved, 2), "share": share, "created": done["created"],
                           "errors": done["errors"][:3]})
    calls = sum(t["requests"] for t in per_tenant)
    ours = {name: after[name] - before[name] for name in after}
    busy = (after_machine[0] - before_machine[0]) / max(1, after_machine[1] - before_machine[1])
    shares = [t["share"] for t in per_tenant if t["share"] is not None]
    failed = [t for t in per_tenant if t["errors"] or t["created"] != items]
    summary = {
        "tenants": tenants, "job": job_kind, "items": items, "needed": needed, "bound_s": bound, "workers": workers_n,
        "threads": threads, "emulators": emulators_n, "gc_threshold": gc_threshold or "as shipped",
        "database": "postgresql" if database_url and database_url.startswith("postgres") else "sqlite",
        "share_min": min(shares) if shares else None, "share_median": statistics.median(shares) if shares else None,
        "share_max": max(shares) if shares else None, "below_0_9": sum(1 for s in shares if s < 0.9),
        "503s": sum(t["503s"] for t in per_tenant), "429s": sum(t["429s"] for t in per_tenant),
        "operating_s_per_tenant": {"min": min(t["operating_s"] for t in per_tenant),
                                   "max": max(t["operating_s"] for t in per_tenant)},
        "calls": calls, "records_created": sum(t["created"] for t in per_tenant), "tenants_failed": len(failed),
        "cpu_s": {**{k: round(v, 2) for k, v in ours.items()}, "ours": round(sum(ours.values()), 2),
                  "emulator": round(after_emulator - before_emulator, 2),
                  "bench_client": round(after_self - before_self, 2), "redis": round(after_redis - before_redis, 2)},
        "cpu_per_1000_calls": round(1000 * sum(ours.values()) / calls, 2) if calls else None,
        "emulator_cpu_per_1000_calls": round(1000 * (after_emulator - before_emulator) / calls, 2) if calls else None,
        "redis_cpu_per_1000_calls": round(1000 * (after_redis - before_redis) / calls, 2) if calls else None,
        "machine_busy": round(busy, 3), "wall_s": round(wall, 2), "processes_alive_at_end": alive,
        "logs": str(tmp),  # kept when a job failed (or --keep-logs), for a look
    }
    if failed:
        summary["first_failures"] = [{k: t[k] for k in ("tenant", "created", "errors")} for t in failed[:3]]
    elif not keep_logs:
        shutil.rmtree(tmp, ignore_errors=True)
        summary["logs"] = None
    # Per tenant, compactly: [tenant, requests its portal saw, 503s, 429s, seconds, share, operating seconds]
    rows = [[t["tenant"], t["requests"], t["503s"], t["429s"], t["achieved_s"], t["share"], t["operating_s"]]
            for t in per_tenant]
    return {"summary": summary, "per_tenant": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[100],
                        help="tenants (and portals) per run; several numbers: one run each, in turn (default 100)")
    parser.add_argument("--items", type=int, default=5000, help="contacts each tenant creates (default 5000: "
                        "100 requests, a bound of 30 s; past about 9,000 the portal's operating budget for "
                        "crm.contact.add, 0.05 s a create of 480 s per 10 minutes, slows the job too)")
    parser.add_argument("--database-url", default=None,
                        help="our app's database (a PostgreSQL database of its own); default: a SQLite file")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4",
                        help="BITRIX_REDIS_URL for every process (this database is emptied first)")
    parser.add_argument("--time-scale", type=float, default=0.0,
                        help="the emulator answers in its modelled server time times this (0: at once)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--threads", type=int, default=15, help="gunicorn threads per worker (default 15)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed: where)")
    parser.add_argument("--job", choices=["creates", "updates"], default="creates",
                        help="creates (paced by the bucket, the default) or updates of a costly method (paced by "
                             "its operating budget: --cost, --scale)")
    parser.add_argument("--cost", type=float, default=0.5,
                        help="--job updates: server seconds one crm.contact.update takes (default 0.5)")
    parser.add_argument("--scale", type=float, default=0.05,
                        help="--job updates: time compression (default 0.05: a 30-s window; answers take their "
                             "server time x this)")
    parser.add_argument("--emulators", type=int, default=1,
                        help="emulator processes the portals are spread over (default 1: every portal in one)")
    parser.add_argument("--gc-threshold", default=None, metavar="A,B,C|default",
                        help="the garbage collector's thresholds for gunicorn's workers and the emulators (default: "
                             "as shipped, 5000,20,100 after freezing what startup made; 'default': Python's own)")
    args = parser.parse_args()
    if any(not 1 <= n <= 62_000 for n in args.tenants) or args.items < 1:
        parser.error("--tenants wants 1 to 62000 tenants, --items at least 1")
    runs = []
    for tenants in args.tenants:
        outcome = run(tenants, args.items, args.database_url, args.redis_url,
                      args.scale if args.job == "updates" else args.time_scale, args.workers, args.threads,
                      args.job, args.cost, args.keep_logs, args.emulators, args.gc_threshold)
        runs.append(outcome)
        print(json.dumps(outcome["summary"]), file=sys.stderr, flush=True)

    print("| tenants | requests each | bound s | share min | median | max | below 0.9 | 503s | 429s "
          "| our CPU s / 1,000 calls | emulator CPU s / 1,000 calls | machine busy | wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for outcome in runs:
        s = outcome["summary"]

        def f(value, digits=2):
            return "-" if value is None else f"{value:.{digits}f}"

        print(f"| {s['tenants']} | {s['needed']} | {s['bound_s']:.1f} | {f(s['share_min'])} | "
              f"{f(s['share_median'])} | {f(s['share_max'])} | {s['below_0_9']} | {s['503s']} | {s['429s']} | "
              f"{f(s['cpu_per_1000_calls'])} | {f(s['emulator_cpu_per_1000_calls'])} | {s['machine_busy']:.0%} | "
              f"{s['wall_s']:.1f} |")
    for outcome in runs:
        s = outcome["summary"]
        cpu = s["cpu_s"]
        print(f"\n{s['tenants']} tenants x {s['items']:,} contacts, {s['job']} ({s['database']}, {s['threads']} "
              f"threads per gunicorn worker, {s['emulators']} emulator process(es), GC {s['gc_threshold']}): "
              f"{s['records_created']:,} written in {s['calls']:,} calls; CPU seconds: "
              f"gunicorn {cpu['gunicorn']}, RQ workers {cpu['rq']} (ours {cpu['ours']}), emulator {cpu['emulator']}, "
              f"bench client {cpu['bench_client']}, Redis server {cpu['redis']}, "
              f"over {s['wall_s']:.1f} s of {os.cpu_count()} cores; "
              f"tenants that failed: {s['tenants_failed']}")
        if s.get("logs") and not s.get("first_failures"):
            print(f"logs kept in {s['logs']}")
        if s.get("first_failures"):
            print(f"first failures: {json.dumps(s['first_failures'])}; logs kept in {s['logs']}")
    print("\n" + json.dumps({"runs": runs}))
    return 0 if all(not o["summary"]["tenants_failed"] for o in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
