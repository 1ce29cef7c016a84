"""Locks by name, for work that must not run twice at once for one key (an upsert of one e-mail).

In one process a lock per key; with BITRIX_REDIS_URL a Redis lock, shared by every process and
machine (with an expiry, so a process that dies holding it cannot block the key for good).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

from .redis_pool import redis_client

log = logging.getLogger("flask_bitrix24")


class LockTimeout(RuntimeError):
    """Someone else held the key for longer than we were willing to wait (the API answers 503)."""

    status = 503
    code = "BUSY"


class LocalLocks:
    name = "local"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def _one(self, key: str, timeout: float) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=timeout):
                raise LockTimeout(f"{key!r} stayed locked for {timeout:.0f} s")
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]  # nobody waits: forget it, so keys do not pile up
                else:
                    self._locks[key] = (lock, users - 1)

    @contextmanager
    def hold(self, keys: Iterable[str], timeout: float = 30.0) -> Iterator[None]:
        """All of ``keys`` at once, taken in sorted order (two holders of overlapping sets cannot
        deadlock)."""
        with ExitStack() as stack:
            for key in sorted(set(keys)):
                stack.enter_context(self._one(key, timeout))
            yield


class RedisLocks(LocalLocks):
    name = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._redis = redis_client(url)

    # A lock expires this long after its holder was last heard of: a crashed process frees it soon,
    # while a living one renews it (every third of this) for as long as it holds it, however long
    # the work under it takes (a bulk chunk can wait minutes for the portal's bucket).
    TTL = 60.0

    @contextmanager
    def _one(self, key: str, timeout: float) -> Iterator[None]:
        # thread_local=False: the renewing thread must see the token this one took.
        lock = self._redis.lock(f"bitrix24:lock:{key}", timeout=self.TTL, blocking_timeout=timeout,
                                thread_local=False)
        if not lock.acquire():
            raise LockTimeout(f"{key!r} stayed locked for {timeout:.0f} s")
        released = threading.Event()

        def renew() -> None:
            while not released.wait(self.TTL / 3):
                try:
                    lock.reacquire()  # the expiry starts over
                except Exception:  # noqa: BLE001 - Redis away or the lock lost: the next try, or nothing
                    log.warning("could not renew the lock %r", key, exc_info=True)

        threading.Thread(target=renew, name=f"bitrix24-lock-{key[:40]}", daemon=True).start()
        try:
            yield
        finally:
            released.set()
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired meanwhile: it is free anyway
                pass


def make_locks(redis_url: str | None) -> LocalLocks:
    return RedisLocks(redis_url) if redis_url else LocalLocks()
