"""Shared fixtures: the app (SQLite in a temp folder by default), its clients, a mocked portal.

PostgreSQL and Redis tests read TEST_DATABASE_URL / TEST_REDIS_URL (``.ci/run`` sets them). Without
them those tests skip with the reason; with TEST_REQUIRE_SERVICES=1 (CI) a missing service fails.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import responses
from cryptography.fernet import Fernet
from flask_bitrix24 import create_app
from flask_bitrix24.services.wire import parse_php_form

PORTAL_HOST = "b24-test.bitrix24.com"
PORTAL_SECRET = "s3cr3tW3bh00kXyZ"
PORTAL_BASE = f"https://{PORTAL_HOST}/rest/1/{PORTAL_SECRET}/"
API_KEY = "test-api-key-0123456789"


def service_url(name: str) -> str:
    """TEST_DATABASE_URL / TEST_REDIS_URL, or skip (fail in CI) with a clear reason.

    Under pytest-xdist (``make test`` runs the suite in TEST_WORKERS processes) each worker gets a
    database of its own: PostgreSQL database ``<name>_gw<N>`` (made on first use) and Redis database
    ``<index> - 2N`` (the one below it is the worker's spare, see ``spare_redis_url``)."""
    url = os.environ.get(name)
    if not url:
        _unavailable(f"{name} is not set: start the service and export {name} (.ci/run does both)")
    worker = _worker_number()
    if worker is None:
        return url
    if name == "TEST_REDIS_URL":
        return _redis_database(url, _redis_index(url) - 2 * worker)
    if name == "TEST_DATABASE_URL":
        return _worker_database(url, worker)
    return url


def spare_redis_url() -> str:
    """A second Redis database on TEST_REDIS_URL's server, for a test that needs one apart from the
    suite's (the adoption tests' host app): the index just below the worker's own."""
    url = service_url("TEST_REDIS_URL")
    return _redis_database(url, _redis_index(url) - 1)


def _worker_number() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under pytest-xdist
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def _redis_index(url: str) -> int:
    """The database index of a Redis URL: redis-py reads it from ``?db=N`` first, then the path."""
    parts = urlsplit(url)
    query_db = dict(parse_qsl(parts.query)).get("db", "")
    path = parts.path.strip("/")
    return int(query_db) if query_db.isdigit() else int(path) if path.isdigit() else 0


def _redis_database(url: str, index: int) -> str:
    if index < 0:
        _unavailable(f"TEST_REDIS_URL's database index is too low for this many test workers ({url}): "
                     "point it at a high one (.ci/run uses 15) or run fewer workers (TEST_WORKERS)")
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "db"])
    return urlunsplit((parts.scheme, parts.netloc, f"/{index}", query, ""))


_made_databases: set[str] = set()


def _worker_database(url: str, worker: int) -> str:
    """TEST_DATABASE_URL with ``_gw<N>`` added to the database's name, made if the server lacks it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_gw{worker}"
    mine = base.set(database=name).render_as_string(hide_password=False)
    if mine in _made_databases:
        return mine
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach or create it is "unavailable"
        _unavailable(f"could not make the test worker's database {name} on {base.host}: {exc}")
    finally:
        engine.dispose()
    _made_databases.add(mine)
    return mine


def _unavailable(message: str) -> None:
    if os.environ.get("TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    """A reachable, empty Redis database: TEST_REDIS_URL's (.ci/run points it at database 15), or under
    pytest-xdist the worker's own (``service_url``)."""
    import redis

    url = service_url("TEST_REDIS_URL")
    try:
        redis.Redis.from_url(url).flushdb()
    except redis.exceptions.ConnectionError as exc:
        _unavailable(f"Redis at {url} is not reachable: {exc}")
    return url


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode("ascii")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Every test that uses the app runs on SQLite and on PostgreSQL (TEST_DATABASE_URL)."""
    if request.param == "postgresql":
        url = service_url("TEST_DATABASE_URL")
        _drop_our_tables(url)  # a crashed earlier run may have left rows behind
        return url
    return f"sqlite:///{tmp_path / 'test.db'}"


def _drop_our_tables(url: str) -> None:
    """Empty the test database: every table a test made (the standalone app's, the host apps' of
    tests/test_host_mode.py, migration histories), whatever a crashed test left behind."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for name in inspect(conn).get_table_names():
                conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


class FakeTime:
    """A clock that moves only when something sleeps: retries and pacing run instantly, and the
    waits they asked for are recorded in ``sleeps``."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_790_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


def use_fake_time(app) -> FakeTime:
    fake = FakeTime()
    state = app.extensions["bitrix24"]
    state.caller.sleep, state.caller.clock = fake.sleep, fake.monotonic
    if hasattr(state.buckets, "_clock"):
        state.buckets._clock = fake.monotonic
    state.budgets._clock = fake.time
    app.fake_time = fake
    return fake


@pytest.fixture
def make_app(tmp_path, secret_key, database_url):
    """Factory for apps with test defaults; keyword arguments override config keys. Unless
    ``real_time=True``, the app's pacing and retries run on a ``FakeTime`` (``app.fake_time``)."""
    created = []

    def factory(real_time=False, **overrides):
        config = {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "BITRIX_SECRET_KEY": secret_key,
            "BITRIX_API_KEY": "",
            "BITRIX_AUTH_DISABLED": True,
            "BITRIX_WEBHOOK_BASE": "",
            "BITRIX_OUTBOUND_TOKEN": "",
            "BITRIX_ALLOWED_HOSTS": "",
            # Unit tests mock the portal call by call; the save-time check has tests of its own, and
            # the end-to-end stack (tests/integration) runs it against the emulator.
            "BITRIX_VERIFY_CONFIG": False,
            # Unit tests mock list pages one by one: one keyset chain. The ID ranges walked side by side
            # (the default, 4) are tested against the emulator (tests/integration/test_bulk.py).
            "BITRIX_LIST_CHAINS": 1,
            # ...and batch answers one by one: bulk writes send their batches one after another here (the
            # default, 4 in flight, runs against the emulator in tests/integration).
            "BITRIX_BULK_PARALLEL": 1,
        }
        config.update(overrides)
        app = create_app(config)
        app.instance_path = str(tmp_path / "instance")
        if not real_time:
            use_fake_time(app)
        created.append(app)
        return app

    yield factory
    from flask_bitrix24.extensions import db

    for app in created:
        with app.app_context():
            db.engine.dispose()
        if database_url.startswith("postgresql"):
            _drop_our_tables(database_url)
        app.extensions["bitrix24"].portals.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def portal():
    """The Bitrix24 portal, mocked with ``responses``; nothing else may be called."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def configured(client):
    """Client 1 configured with the mocked portal."""
    r = client.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "tok-c1-abcdef"})
    assert r.status_code == 201, r.get_json()
    return client


def portal_url(method: str) -> str:
    return f"{PORTAL_BASE}{method}.json"


def sent_pairs(call) -> list[tuple[str, str]]:
    """The (key, value) pairs the portal received, decoded with the standard library."""
    body = call.request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    return parse_qsl(body or "", keep_blank_values=True, strict_parsing=False)


def sent_params(call) -> dict:
    """The params as PHP would read them from what the portal received."""
    body = call.request.body
    return parse_php_form(body or b"")


def refused() -> Exception:
    """What requests raises when the portal refuses the connection: nothing was sent."""
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/rest/1/x/m.json", reason))


def reset() -> Exception:
    """What requests raises when the portal drops the connection after the request went out."""
    import requests
    from urllib3.exceptions import ProtocolError

    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))
