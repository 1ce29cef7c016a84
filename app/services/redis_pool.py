"""The Redis clients of our shared stores (buckets, budgets, locks, the event queue, field labels).

Each gets a connection pool that is bounded and *waits* for a free connection: redis-py 8 limits a plain
pool to 100 connections and then fails the call at once (``MaxConnectionsError``), which a gunicorn
worker of 30 threads, each running bulk batches 4 at a time, reaches under load: every such call failed
as REDIS_UNAVAILABLE although Redis was fine (redis-py 7 and earlier had no such limit). Here a call past
``MAX_CONNECTIONS`` waits up to ``POOL_WAIT`` seconds for a connection another thread gives back.
"""

from __future__ import annotations

from typing import Any

MAX_CONNECTIONS = 512  # per pool and process: more than the threads a process runs Redis calls from at once
POOL_WAIT = 5.0  # seconds a call waits for a free connection before it fails (and is answered as REDIS_UNAVAILABLE)


def redis_client(url: str, *, socket_timeout: float = 5.0, socket_connect_timeout: float = 3.0,
                 pool_wait: float = POOL_WAIT) -> Any:
    """A ``redis.Redis`` on ``url`` with a pool of its own (``redis.BlockingConnectionPool``) whose calls wait up to
    ``pool_wait`` seconds for a free connection."""
    try:
        import redis
    except ImportError:
        raise RuntimeError(
            "BITRIX_REDIS_URL is set but Redis support is not installed: pip install 'flask-bitrix24[redis]'"
        ) from None

    pool = redis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=pool_wait,
                                                 socket_timeout=socket_timeout,
                                                 socket_connect_timeout=socket_connect_timeout)
    return redis.Redis(connection_pool=pool)
