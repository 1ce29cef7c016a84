"""Our Redis clients under many threads at once: a call waits for a free connection, it never fails for
want of one (redis-py 8's plain pool stops at 100 connections and raises at once)."""

from __future__ import annotations

import threading

import pytest
import redis
from flask_bitrix24.services import event_queue, limiter, locks
from flask_bitrix24.services.redis_pool import MAX_CONNECTIONS, redis_client


def test_more_calls_at_once_than_the_pool_holds_wait_for_a_connection_instead_of_failing(redis_url, monkeypatch):
    monkeypatch.setattr("flask_bitrix24.services.redis_pool.MAX_CONNECTIONS", 20)  # a small pool, 60 calls
    client = redis_client(redis_url)
    errors: list[BaseException] = []
    answers: list = []
    start = threading.Barrier(60)

    def call() -> None:
        try:
            start.wait()
            answers.append(client.blpop(["bitrix24:test:nothing-here"], timeout=0.3))  # holds its connection 0.3 s
        except BaseException as exc:  # noqa: BLE001 - what failed is the assertion's subject
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and answers == [None] * 60
    assert client.connection_pool.max_connections == 20  # and they shared 20 connections


@pytest.mark.parametrize("make", [
    lambda url: limiter.RedisBuckets(url), lambda url: limiter.RedisOperatingBudgets(url),
    lambda url: locks.RedisLocks(url), lambda url: event_queue.RQQueue(url),
])
def test_every_shared_store_takes_its_client_from_the_waiting_pool(make, redis_url):
    store = make(redis_url)
    client = getattr(store, "_redis", None) or store.connection
    assert isinstance(client.connection_pool, redis.BlockingConnectionPool)
    assert client.connection_pool.max_connections == MAX_CONNECTIONS


def test_field_labels_wait_at_most_a_second_for_a_connection_as_for_an_answer(app, redis_url):
    from flask_bitrix24.services import field_labels

    app.config["BITRIX_REDIS_URL"] = redis_url
    with app.app_context():
        pool = field_labels.cache().redis.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.timeout == 1.0 and pool.connection_kwargs["socket_timeout"] == 1.0  # a label lookup fails fast
