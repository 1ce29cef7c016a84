"""gunicorn settings for production: ``gunicorn -c gunicorn.conf.py`` (the app is ``app:create_app()``).

Every value can be overridden by the environment variable named beside it.

Why these:
- ``gthread`` workers with threads. A request to us mostly waits: on Bitrix24 (up to
  BITRIX_TIMEOUT_READ per call), on the portal's rate limit (up to BITRIX_MAX_WAIT), or for a long
  bulk job (up to BITRIX_BULK_MAX_WAIT). Threads keep a worker serving others while some wait;
  sync workers would be tied up. Our state (portal sessions, limiter, metrics) is thread-safe.
- workers = 2 x CPU cores: enough processes to use the cores for JSON and encoding work, each with
  ``threads`` (8) requests in flight. The pacing is shared: in-process per worker without Redis,
  exact across workers and machines with BITRIX_REDIS_URL (use it as soon as workers > 1).
- ``timeout`` 120 s: a gthread worker's heartbeat comes from its main loop, not from requests, so
  this only restarts a worker that is truly stuck; long bulk requests are not killed by it.
  ``graceful_timeout`` 30 s lets requests in flight finish on a reload or shutdown.
- ``keepalive`` 5 s: longer than a load balancer's idle reuse gap is pointless; shorter costs handshakes.
- ``max_requests`` with jitter recycles workers now and then (bounded memory over weeks).
- The garbage collector (``GUNICORN_GC_THRESHOLD``, "5000,20,100"; "default" keeps Python's 700,10,10): once
  a worker has loaded the app, what it loaded (modules, schemas, table metadata: 130,000 objects) is
  frozen out of every later collection, and the young generation is collected every 5,000 new objects
  rather than 700. A bulk request holds thousands of items for minutes; with Python's defaults the full
  collections that scan them and the app took 10% of a busy worker's CPU (bench/tenants.py).
- Prometheus: with PROMETHEUS_MULTIPROC_DIR set (an empty folder), /api/bitrix/metrics sums all
  workers; ``child_exit`` below tells prometheus_client when a worker is gone.
"""

import gc
import multiprocessing
import os

wsgi_app = "app:create_app()"
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '5001')}")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "1000"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # empty: no access log
# The request id is in our own log lines; the access log gets it from the answer's header.
# %(m)s %(U)s (method and path) instead of %(r)s (the request line): a query string can carry a key.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
gc_threshold = os.environ.get("GUNICORN_GC_THRESHOLD", "5000,20,100").strip()
if gc_threshold != "default":
    try:
        gc_generations = tuple(int(n) for n in gc_threshold.split(","))
    except ValueError:
        gc_generations = ()
    if len(gc_generations) != 3 or min(gc_generations) < 0:
        raise SystemExit(f"GUNICORN_GC_THRESHOLD wants three whole numbers A,B,C or 'default', not {gc_threshold!r}")


def post_worker_init(worker):  # noqa: ARG001 - gunicorn's hook signature
    """The app is loaded (gunicorn calls this after load_wsgi): freeze it, then collect less often."""
    if gc_threshold != "default":
        gc.collect()
        gc.freeze()
        gc.set_threshold(*gc_generations)


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

    def on_starting(server):  # noqa: ARG001 - counters of an earlier run must not be added in
        folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))

    def child_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
