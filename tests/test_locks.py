"""Locks by key: one holder at a time per key, any number of keys at once, a bounded wait."""

from __future__ import annotations

import threading
import time

import pytest
from flask_bitrix24.services.locks import LocalLocks, LockTimeout, RedisLocks


@pytest.fixture(params=["local", "redis"])
def locks(request):
    if request.param == "local":
        return LocalLocks()
    return RedisLocks(request.getfixturevalue("redis_url"))


def test_one_holder_per_key_and_a_bounded_wait(locks):
    inside, order = threading.Event(), []

    def first():
        with locks.hold(["k1", "k2"]):
            inside.set()
            time.sleep(0.3)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    inside.wait(5)
    with locks.hold(["k2"], timeout=10):  # overlaps the first holder's set: waits for it
        order.append("second in")
    with locks.hold(["other"], timeout=0.1):  # another key: free at once
        pass
    t.join(5)
    assert order == ["first done", "second in"]

    holding = threading.Event()
    release = threading.Event()

    def holder():
        with locks.hold(["busy"]):
            holding.set()
            release.wait(5)

    h = threading.Thread(target=holder)
    h.start()
    holding.wait(5)
    with pytest.raises(LockTimeout):
        with locks.hold(["busy"], timeout=0.2):
            pass
    release.set()
    h.join(5)
    if isinstance(locks, LocalLocks) and not isinstance(locks, RedisLocks):
        assert locks._locks == {}  # keys nobody holds are forgotten


def test_a_redis_lock_held_past_its_expiry_is_renewed_not_lost(redis_url, monkeypatch):
    """Work under a lock can outlast the lock's expiry (a bulk chunk waiting for the bucket): while
    the holder lives the lock is renewed, so nobody else gets in; a dead holder's lock still expires."""
    # Renewed every TTL / 3: a TTL of 1.5 s leaves a renewal a second late on a loaded machine, not 0.4 s.
    monkeypatch.setattr(RedisLocks, "TTL", 1.5)
    locks = RedisLocks(redis_url)
    with locks.hold(["long"]):
        time.sleep(3.75)  # 2.5 expiries
        with pytest.raises(LockTimeout):
            with locks.hold(["long"], timeout=0.1):
                pass
    with locks.hold(["long"], timeout=0.1):  # released at the end
        pass
    dead = locks._redis.lock("bitrix24:lock:dead", timeout=0.6)
    assert dead.acquire()  # a holder that never renews (it died)
    with locks.hold(["dead"], timeout=3):
        pass
