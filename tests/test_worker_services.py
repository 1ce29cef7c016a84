"""Which Redis database each pytest-xdist worker gets (tests/conftest.py ``service_url``): README's
"Run it standalone" promises that ``make test``'s workers never share one."""

from __future__ import annotations

import pytest

from tests.conftest import service_url, spare_redis_url


def _redis_for(monkeypatch, url: str, worker: str | None) -> tuple[str, str]:
    monkeypatch.setenv("TEST_REDIS_URL", url)
    monkeypatch.setenv("TEST_REQUIRE_SERVICES", "1")  # a refusal fails here instead of skipping
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    return service_url("TEST_REDIS_URL"), spare_redis_url()


def test_each_worker_gets_two_redis_databases_of_its_own(monkeypatch):
    got = [_redis_for(monkeypatch, "redis://127.0.0.1:6379/15", f"gw{n}") for n in range(3)]
    assert got == [("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/14"),
                   ("redis://127.0.0.1:6379/13", "redis://127.0.0.1:6379/12"),
                   ("redis://127.0.0.1:6379/11", "redis://127.0.0.1:6379/10")]
    assert len({db for pair in got for db in pair}) == 6


def test_without_xdist_the_url_is_used_as_given(monkeypatch):
    assert _redis_for(monkeypatch, "redis://:pw@127.0.0.1:6379/8", None)[0] == "redis://:pw@127.0.0.1:6379/8"


def test_an_index_given_as_db_in_the_query_counts_like_one_in_the_path(monkeypatch):
    mine, spare = _redis_for(monkeypatch, "redis://127.0.0.1:6379?db=9&socket_timeout=5", "gw1")
    assert (mine, spare) == ("redis://127.0.0.1:6379/7?socket_timeout=5", "redis://127.0.0.1:6379/6?socket_timeout=5")


def test_too_many_workers_for_the_index_is_a_clear_refusal(monkeypatch):
    with pytest.raises(pytest.fail.Exception, match="index is too low"):
        _redis_for(monkeypatch, "redis://127.0.0.1:6379/2", "gw1")
