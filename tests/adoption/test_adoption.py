"""A host developer adopts the extension: our wheel, installed with a small host app (``host/``) into a
fresh virtualenv, used over real HTTP against the emulator. Nothing here imports the repository's
sources into the host: every step runs in the fresh venv, on loopback, with timeouts.

The module-scoped fixtures build on each other (wheel and venv -> migrated database -> running
servers), so any one test can run alone; together they take well under a minute or two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import _unavailable, spare_redis_url

# One worker builds the wheel and the host's virtualenv once and runs every adoption test in it.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("adoption")]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the repository: pyproject.toml, app/, bitrix24_emulator/
HOST_FIXTURE = HERE / "host"
TOKEN = "adoption-application-token"
SECRET = "adoptsecret"
HTTP_TIMEOUT = 15  # seconds, every request the test makes
LOOPBACK = "127.0.0.1,localhost"
# The web process and the worker share the host's settings, as a deployment would.
HOST_SETTINGS = {"BITRIX_ALLOWED_HOSTS": LOOPBACK, "BITRIX_MAX_WAIT": "10"}


# -- small helpers ---------------------------------------------------------------------------------


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on a non-zero exit (when ``check``) fail with everything it printed."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} ran over {timeout} s\n{exc.stdout or ''}\n{exc.stderr or ''}")
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(probe: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2) -> Any:
    """``probe()``'s first truthy value within ``timeout`` seconds (else its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read the host's SQLite database as a host developer would, with sqlite3."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        return con.execute(sql, args).fetchall()


def _clean_env(venv: Path) -> dict[str, str]:
    """The outer environment minus anything that would leak our settings or interpreter into the
    host's processes, with the venv first on PATH and loopback never proxied."""
    drop = ("BITRIX_", "FLASK_", "HOST_", "PYTHON", "PYTEST_", "VIRTUAL_ENV", "SQLALCHEMY", "SECRET_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), LOOPBACK]))
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        SECRET_KEY="adoption-host-secret",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
    )
    return env


def _redis_url() -> str:
    """A Redis database apart from the suite's (conftest.spare_redis_url: the one below the worker's own, 14
    when that is 15), reachable and flushed (else skip; fail in CI)."""
    url = spare_redis_url()
    try:
        import redis
    except ImportError:
        _unavailable("the redis package is not installed in the test environment")
    try:
        with closing(redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)) as conn:
            conn.flushdb()
    except redis.exceptions.RedisError as exc:
        _unavailable(f"Redis at {url} is not reachable: {exc}")
    return url


def _flush(url: str) -> None:
    import redis

    with closing(redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)) as conn:
        conn.flushdb()


# -- the fresh virtualenv with our wheel and the host ------------------------------------------------


@dataclass
class Venv:
    path: Path
    host: Path  # the host app's copy: cwd of everything run in the venv
    wheel: Path
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    @property
    def python(self) -> str:
        return self.bin("python")

    @property
    def db(self) -> Path:
        return self.host / "instance" / "host.db"  # the host's default database

    def run(self, *cmd: str, timeout: float = 60, check: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return _run(list(cmd), cwd=self.host, env={**self.env, **(extra_env or {})}, timeout=timeout, check=check)

    def flask(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return self.run(self.bin("flask"), "--app", "app", *args, **kwargs)


def _build_wheel(workdir: Path) -> Path:
    """Our wheel, built from a copy of the sources (a build leaves build/ and egg-info behind)."""
    src = workdir / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "venv", "__pycache__", "*.egg-info", "build", "dist", "instance", "tests", "bench",
        ".pytest_cache", ".ruff_cache", "*.db", "*.pyc"))
    out = workdir / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
          "-w", str(out), str(src)], cwd=workdir, timeout=240)
    wheels = sorted(out.glob("flask_bitrix24-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    workdir = tmp_path_factory.mktemp("adoption")
    wheel = _build_wheel(workdir)
    path = workdir / "venv"
    _run([sys.executable, "-m", "venv", str(path)], cwd=workdir, timeout=120)
    env = _clean_env(path)
    _run([str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
          f"{wheel}[redis,metrics]", "-r", str(HOST_FIXTURE / "requirements.txt"), "pytest"],
         cwd=workdir, env=env, timeout=300)
    host = workdir / "host"
    shutil.copytree(HOST_FIXTURE, host, ignore=shutil.ignore_patterns(
        "__pycache__", "instance", ".pytest_cache", "*.db", "*.pyc"))
    return Venv(path, host, wheel, env)


# -- 1. installing and importing -----------------------------------------------------------------------

# Snapshot every logger (level, handlers, filters, propagate, disabled) and the root's, import
# flask_bitrix24, compare. Our dependencies are imported first: SQLAlchemy, for one, sets its own
# logger's level on import, which is not ours to answer for. A new logger left in its default state
# is no change. The checker proves itself at the end by flagging a deliberate change.
LOGGER_PROBE = r"""
import json, logging, sys

def state(lg):
    return {"level": lg.level, "handlers": [repr(h) for h in lg.handlers],
            "filters": [repr(f) for f in lg.filters], "propagate": lg.propagate, "disabled": lg.disabled}

def snapshot():
    out = {name: ("placeholder" if isinstance(lg, logging.PlaceHolder) else state(lg))
           for name, lg in list(logging.root.manager.loggerDict.items())}
    out["<root>"] = state(logging.root)
    out["<disable>"] = logging.root.manager.disable
    out["<lastResort>"] = repr(logging.lastResort)
    return out

DEFAULT = {"level": 0, "handlers": [], "filters": [], "propagate": True, "disabled": False}

def changes(before, after):
    found = {}
    for name in sorted(set(before) | set(after)):
        if name == "flask_bitrix24" or name.startswith("flask_bitrix24."):
            continue
        b, a = before.get(name), after.get(name)
        if b is None and a in ("placeholder", DEFAULT):
            continue
        if a != b:
            found[name] = {"before": b, "after": a}
    return found

for dep in ("flask", "werkzeug", "flask_sqlalchemy", "sqlalchemy.orm", "requests", "cryptography.fernet",
            "flask_smorest", "marshmallow"):
    __import__(dep)
before = snapshot()
import flask_bitrix24
after = snapshot()
import app
logging.getLogger("werkzeug").addHandler(logging.NullHandler())
print(json.dumps({
    "changed": changes(before, after),
    "self_check": sorted(changes(before, snapshot())),
    "flask_bitrix24": flask_bitrix24.__file__,
    "version": flask_bitrix24.__version__,
    "app": app.__file__,
    "prefix": sys.prefix,
}))
"""


def test_install_import_and_console_script(venv):
    probe = json.loads(venv.run(venv.python, "-c", LOGGER_PROBE).stdout)
    assert probe["changed"] == {}, f"importing flask_bitrix24 changed loggers outside it: {probe['changed']}"
    assert "werkzeug" in probe["self_check"], probe["self_check"]  # the comparison does see changes

    # Our code comes from the wheel in the fresh venv, the host's `app` from the host's folder.
    assert Path(probe["prefix"]).resolve() == venv.path.resolve()
    assert Path(probe["flask_bitrix24"]).resolve().is_relative_to(venv.path.resolve() / "lib")
    assert Path(probe["app"]).resolve() == (venv.host / "app" / "__init__.py").resolve()
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?([a-z]+\d*)?(\.post\d+)?(\.dev\d+)?", probe["version"]), probe["version"]
    assert venv.wheel.name.startswith(f"flask_bitrix24-{probe['version']}-")

    help_text = venv.run(venv.bin("bitrix24-emulator"), "--help", timeout=30).stdout
    assert "--event-url" in help_text and "--application-token" in help_text


# -- 2. the host's migrations take our table in; setup adds the CRMs row ---------------------------------

# Setup with a CRMRow that cannot add the row (no defaults; defaults without the NOT NULL slug):
# a separate app on the same database, run through Flask's CLI runner.
NO_DEFAULTS_PROBE = r"""
import json, os
from flask import Flask
from flask_bitrix24 import Bitrix24, CRMRow, ModelStore
from app import db, models

results = {}
for label, crm in (("none", CRMRow(models.CRMs)), ("no_slug", CRMRow(models.CRMs, defaults={}))):
    probe = Flask(f"probe_{label}", instance_path=os.path.abspath("instance"))
    probe.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.abspath("instance/host.db")
    db.init_app(probe)
    Bitrix24(db=db).init_app(probe, store=ModelStore(
        models.ClientCRMAuth, webhook_base="webhook_url", outbound_token="app_token", crm=crm))
    result = probe.test_cli_runner().invoke(args=["bitrix24", "setup"])
    results[label] = [result.exit_code, result.output]
print(json.dumps(results))
"""


@dataclass
class Migrated:
    revision: Path  # the revision `flask db migrate -m bitrix24` wrote
    migrate_output: str
    again_output: str
    again_revisions: list[Path]  # what a second `flask db migrate` wrote (nothing, or an empty one)
    refused: dict[str, list]  # NO_DEFAULTS_PROBE's results
    setup: subprocess.CompletedProcess
    setup_again: subprocess.CompletedProcess


def _upgrade_body(revision_text: str) -> str:
    return revision_text.split("def upgrade", 1)[1].split("def downgrade", 1)[0]


@pytest.fixture(scope="module")
def migrated(venv) -> Migrated:
    versions = venv.host / "migrations" / "versions"
    venv.flask("db", "upgrade")  # the host's own history: its tables only
    before = set(versions.glob("*.py"))
    made = venv.flask("db", "migrate", "-m", "bitrix24")
    new = sorted(set(versions.glob("*.py")) - before)
    assert len(new) == 1, f"expected one new revision, got {new}\n{_output(made)}"
    venv.flask("db", "upgrade")
    before = set(versions.glob("*.py"))
    again = venv.flask("db", "migrate", "-m", "nothing to do")
    again_revisions = sorted(set(versions.glob("*.py")) - before)
    refused = json.loads(venv.run(venv.python, "-c", NO_DEFAULTS_PROBE).stdout)
    setup = venv.flask("bitrix24", "setup", check=False)
    setup_again = venv.flask("bitrix24", "setup", check=False)
    with closing(sqlite3.connect(venv.db, timeout=10)) as con, con:  # the host's users
        con.executemany("INSERT INTO clients (id, name) VALUES (?, ?)", [(1, "Acme"), (2, "Globex")])
        con.executemany("INSERT INTO users (id, email, client_id) VALUES (?, ?, ?)",
                        [(1, "ann@acme.test", 1), (2, "bob@globex.test", 2)])
    return Migrated(new[0], _output(made), _output(again), again_revisions, refused, setup, setup_again)


def test_host_migrations_take_in_our_table_and_setup_adds_the_crm_row(venv, migrated):
    history = (HOST_FIXTURE / "migrations" / "versions")
    assert [p for p in history.glob("*.py") if "bitrix24" in p.read_text()] == []  # the host's own history

    text = migrated.revision.read_text()
    upgrade = _upgrade_body(text)
    assert re.findall(r"create_table\(\s*['\"](\w+)['\"]", upgrade) == ["bitrix24_events"], upgrade
    assert "drop_table" not in upgrade and "drop_column" not in upgrade, upgrade
    tables = {name for (name,) in _query(venv.db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"users", "clients", "CRMs", "ClientCRMAuth", "seen_events", "bitrix24_events"} <= tables
    head = re.search(r"^revision = ['\"](\w+)['\"]", text, re.M).group(1)
    assert _query(venv.db, "SELECT version_num FROM alembic_version") == [(head,)]

    # Autogenerate finds nothing more to do: no message of changes, or an empty revision.
    for path in migrated.again_revisions:
        body = _upgrade_body(path.read_text())
        assert re.sub(r"#.*", "", body).split() == ["():", "pass"], body
    assert migrated.again_revisions or "No changes in schema detected" in migrated.again_output, migrated.again_output

    # Without defaults for the CRMs row, setup says what to do and exits 1.
    code, out = migrated.refused["none"]
    assert code == 1 and "CRMs table has no 'Bitrix24' row" in out and "defaults" in out, out
    code, out = migrated.refused["no_slug"]
    assert code == 1 and "slug" in out, out

    assert migrated.setup.returncode == 0, _output(migrated.setup)
    rows = _query(venv.db, 'SELECT id, name, slug FROM "CRMs"')
    assert [(name, slug) for _, name, slug in rows] == [("Bitrix24", "bitrix24")]
    assert f"added Bitrix24 to the CRMs table (id {rows[0][0]})" in migrated.setup.stdout
    assert migrated.setup_again.returncode == 0, _output(migrated.setup_again)
    assert "nothing to do" in migrated.setup_again.stdout
    assert _query(venv.db, 'SELECT count(*) FROM "CRMs"') == [(1,)]


# -- 3. over real HTTP: the host app served by `flask run`, the emulator by its console script ---------


class Server:
    """A process we started, its output in a file (never a pipe that could fill up)."""

    def __init__(self, cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cmd, self.log = cmd, log
        self._file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._file,
                                     stderr=subprocess.STDOUT)

    def output(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.cmd[0]} exited {self.proc.returncode}:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._file.close()


@dataclass
class Stack:
    venv: Venv
    port: int
    logs: Path
    host: Server | None = None
    emulator: Server | None = None
    emulator_base: str = ""
    sessions: list[requests.Session] = field(default_factory=list)
    config_response: requests.Response | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> str:
        return f"{self.url}/api/bitrix{path}"

    def session(self, user_id: int | None = None) -> requests.Session:
        http = requests.Session()
        http.trust_env = False  # loopback only, never a proxy
        self.sessions.append(http)
        if user_id is not None:
            r = http.get(f"{self.url}/login/{user_id}", timeout=HTTP_TIMEOUT)
            assert r.status_code == 200, r.text
        return http

    def start_host(self, **extra_env: str) -> None:
        """(Re)start the host app on the same port (the emulator posts its events there)."""
        if self.host is not None:
            self.host.stop()
        cmd = [self.venv.bin("flask"), "--app", "app", "run", "--host", "127.0.0.1", "--port", str(self.port),
               "--no-debugger", "--no-reload"]
        self.host = Server(cmd, cwd=self.venv.host, env={**self.venv.env, **HOST_SETTINGS, **extra_env},
                           log=self.logs / "host.log")
        probe = requests.Session()
        probe.trust_env = False

        def ready() -> bool:
            self.host.alive()
            try:
                return probe.get(self.url + "/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            assert _poll(ready, timeout=30), f"the host app did not answer:\n{self.host.output()}"
        finally:
            probe.close()

    def start_emulator(self) -> None:
        cmd = [self.venv.bin("bitrix24-emulator"), "--host", "127.0.0.1", "--port", "0", "--secret", SECRET,
               "--event-url", self.api("/webhook"), "--application-token", TOKEN]
        self.emulator = Server(cmd, cwd=self.venv.host, env=self.venv.env, log=self.logs / "emulator.log")

        def base() -> str | None:
            self.emulator.alive()
            found = re.search(r"webhook base: (http://127\.0\.0\.1:\d+/rest/\d+/\w+/)", self.emulator.output())
            return found.group(1) if found else None

        self.emulator_base = _poll(base, timeout=30) or ""
        assert self.emulator_base, f"the emulator did not start:\n{self.emulator.output()}"

    def close(self) -> None:
        for http in self.sessions:
            http.close()
        for server in (self.host, self.emulator):
            if server is not None:
                server.stop()

    def diagnostics(self) -> str:
        return "\n".join(f"--- {s.cmd[0]}\n{s.output()}" for s in (self.host, self.emulator) if s is not None)


@pytest.fixture(scope="module")
def stack(venv, migrated, tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(venv, _free_port(), tmp_path_factory.mktemp("adoption-logs"))
    try:
        stack.start_host()
        stack.start_emulator()
        ann = stack.session(user_id=1)  # client 1's user
        stack.config_response = ann.post(stack.api("/clients/1/config"), timeout=HTTP_TIMEOUT,
                                         json={"webhook_base": stack.emulator_base, "outbound_token": TOKEN})
        yield stack
    finally:
        stack.close()


def _seen(db: Path, entity_id: int) -> list[tuple]:
    return _query(db, "SELECT event, client_id, name, via FROM seen_events WHERE entity_id = ?", (str(entity_id),))


def _event_rows(db: Path, entity_id: int) -> list[tuple]:
    return _query(db, "SELECT status, client_id, attempts, last_error FROM bitrix24_events "
                      "WHERE event = 'ONCRMCONTACTADD' AND entity_id = ?", (str(entity_id),))


def test_the_host_uses_the_api_over_http(venv, stack):
    ann = stack.sessions[0]
    r = stack.config_response
    assert r.status_code == 201, f"{r.status_code} {r.text}\n{stack.diagnostics()}"

    # The host's own row, in its own table: the webhook in clear, the token, the Bitrix24 CRM.
    (crm_id,) = _query(venv.db, """SELECT id FROM "CRMs" WHERE name = 'Bitrix24'""")[0]
    assert _query(venv.db, 'SELECT client_id, crm_id, webhook_url, app_token FROM "ClientCRMAuth"') == [
        (1, crm_id, stack.emulator_base, TOKEN)]

    # Contacts through our endpoints.
    contacts = stack.api("/clients/1/contacts")
    r = ann.post(contacts, json={"fields": {"NAME": "Ada", "LAST_NAME": "Lovelace"}}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    ada = int(r.json()["result"])
    r = ann.get(f"{contacts}/{ada}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert (r.json()["result"]["NAME"], r.json()["result"]["LAST_NAME"]) == ("Ada", "Lovelace")
    r = ann.patch(f"{contacts}/{ada}", json={"fields": {"NAME": "Augusta"}}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert ann.get(f"{contacts}/{ada}", timeout=HTTP_TIMEOUT).json()["result"]["NAME"] == "Augusta"
    r = ann.get(contacts, params={"filter[LAST_NAME]": "Lovelace", "select": ["ID", "NAME"]}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert [(int(row["ID"]), row["NAME"]) for row in r.json()["result"]] == [(ada, "Augusta")]
    r = ann.delete(f"{contacts}/{ada}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert ann.get(f"{contacts}/{ada}", timeout=HTTP_TIMEOUT).status_code == 404

    # A host view calling bx_call; the contact is in the portal.
    r = ann.post(f"{stack.url}/my/contacts", json={"name": "Grace"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, f"{r.text}\n{stack.diagnostics()}"
    grace = int(r.json()["id"])
    r = ann.get(f"{contacts}/{grace}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["result"]["NAME"] == "Grace", r.text

    # The host's authorize hook: nobody signed in -> 401; another client's user, or another client -> 403.
    anonymous = stack.session()
    r = anonymous.get(contacts, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and r.json()["error"] == "UNAUTHORIZED", r.text
    bob = stack.session(user_id=2)
    r = bob.get(contacts, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["error"] == "FORBIDDEN", r.text
    assert ann.get(stack.api("/clients/2/contacts"), timeout=HTTP_TIMEOUT).status_code == 403

    # The emulator's ONCRMCONTACTADD reached our receiver and the host's handler ran inline, fetched
    # the contact (event.fetch) and wrote its row in the host's session.
    seen = _poll(lambda: _seen(venv.db, grace), timeout=20)
    assert seen == [("ONCRMCONTACTADD", 1, "Grace", "inline")], f"{seen}\n{stack.diagnostics()}"
    # (the outcome is committed just after the handler's own commit)
    done = _poll(lambda: [row for row in _event_rows(venv.db, grace) if row[0] == "done"], timeout=10)
    assert done == [("done", 1, 1, None)], _event_rows(venv.db, grace)

    # A ModelStore keeps the host's secrets as the host does: no encryption key was ever needed.
    assert list(venv.host.rglob("bitrix24_secret.key")) == []


# -- 4. the RQ worker -------------------------------------------------------------------------------------

JOBS_PROBE = r"""
import json, sys
from redis import Redis
from rq import Queue
with Redis.from_url(sys.argv[1], socket_connect_timeout=3, socket_timeout=5) as conn:
    print(json.dumps([job.func_name for job in Queue("bitrix24-events", connection=conn).jobs]))
"""


@pytest.fixture(scope="module")
def redis_db13() -> Iterator[str]:
    """Module-scoped and asked for first, so that without Redis the test skips before any server starts."""
    url = _redis_url()
    yield url
    _flush(url)


def test_events_queued_to_redis_are_handled_by_the_worker(redis_db13, venv, stack):
    redis_url = redis_db13
    stack.start_host(BITRIX_REDIS_URL=redis_url)
    ann = stack.session(user_id=1)
    r = ann.post(stack.api("/clients/1/contacts"), json={"fields": {"NAME": "Rosalind"}}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    rosalind = int(r.json()["result"])

    # Stored and queued, not handled in the web process.
    rows = _poll(lambda: [row for row in _event_rows(venv.db, rosalind) if row[0] == "queued"], timeout=20)
    assert rows == [("queued", 1, 0, None)], f"{_event_rows(venv.db, rosalind)}\n{stack.diagnostics()}"
    jobs = json.loads(venv.run(venv.python, "-c", JOBS_PROBE, redis_url).stdout)
    assert jobs and all(name.startswith("flask_bitrix24.") for name in jobs), jobs
    assert _seen(venv.db, rosalind) == []

    worker = venv.flask("bitrix24", "worker", "--burst", timeout=90,
                        extra_env={**HOST_SETTINGS, "BITRIX_REDIS_URL": redis_url})
    assert "Bitrix24 event worker (RQ)" in worker.stdout, _output(worker)
    assert _seen(venv.db, rosalind) == [("ONCRMCONTACTADD", 1, "Rosalind", "rq")], _output(worker)
    assert _event_rows(venv.db, rosalind) == [("done", 1, 1, None)], _output(worker)


# -- 5. the host's own test suite, in the venv ------------------------------------------------------------


def test_the_hosts_own_tests_pass_in_the_venv(venv):
    proc = venv.run(venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(venv.host / "tests"),
                    timeout=120, check=False)
    assert proc.returncode == 0, _output(proc)
    assert re.search(r"\b6 passed\b", proc.stdout), proc.stdout
