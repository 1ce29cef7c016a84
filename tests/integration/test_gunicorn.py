"""The documented production start: gunicorn with gunicorn.conf.py, several workers, metrics summed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from bitrix24_emulator import create_emulator, start_server

from ..conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_config_checks():
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "-c", "gunicorn.conf.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "BITRIX_SECRET_KEY": "", "DATABASE_URL": "sqlite://"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_gunicorn_workers_serve_and_metrics_add_up(tmp_path, secret_key):
    emulator = start_server(create_emulator(limits=False))
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "PROMETHEUS_"))},
           "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "BITRIX_SECRET_KEY": secret_key,
           "BITRIX_API_KEY": API_KEY, "BITRIX_WEBHOOK_BASE": emulator.base, "BITRIX_ALLOWED_HOSTS": "127.0.0.1",
           "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2",
           "GUNICORN_ACCESSLOG": str(tmp_path / "access.log"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    api = f"http://127.0.0.1:{port}/api/bitrix"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not come up"
            time.sleep(0.3)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        for i in range(20):  # a new connection each: the calls spread over both workers
            r = requests.post(f"{api}/clients/1/contacts", json={"NAME": f"N{i}"},
                              headers={**headers, "Connection": "close"}, timeout=30)
            assert r.status_code == 201, r.text
        for _ in range(6):
            text = requests.get(f"{api}/metrics", headers={**headers, "Connection": "close"}, timeout=30).text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            calls = sum(s.value for s in families["bitrix24_calls"].samples if s.name == "bitrix24_calls_total"
                        and s.labels.get("method") == "crm.contact.add")
            assert calls == 20  # summed over the workers, whichever one answers the scrape
        assert len(list((tmp_path / "metrics").glob("*.db"))) >= 2  # both workers wrote their counters
        # The access log keeps the path, never the query string (it can carry a key).
        r = requests.get(f"{api}/clients/1/contacts?select=ID&api_key=qs-secret-123", headers=headers, timeout=30)
        assert r.status_code in (200, 400)
        deadline = time.monotonic() + 30
        # (wait for the GET's own line: the POSTs above have the same path, and the log is written a
        # little after the answer)
        while ('"GET /api/bitrix/clients/1/contacts"' not in (log := (tmp_path / "access.log").read_text())
               and time.monotonic() < deadline):
            time.sleep(0.2)
        assert '"GET /api/bitrix/clients/1/contacts"' in log and "qs-secret-123" not in log
    finally:
        server.terminate()
        server.wait(timeout=30)
        emulator.stop()


def _gunicorn_settings(monkeypatch, value: str | None) -> dict:
    import runpy

    if value is None:
        monkeypatch.delenv("GUNICORN_GC_THRESHOLD", raising=False)
    else:
        monkeypatch.setenv("GUNICORN_GC_THRESHOLD", value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_a_worker_freezes_what_it_loaded_and_collects_less_often(monkeypatch):
    import gc

    before = gc.get_threshold()
    settings = _gunicorn_settings(monkeypatch, None)
    try:
        settings["post_worker_init"](None)  # as gunicorn calls it once the worker has loaded the app
        assert gc.get_threshold() == (5000, 20, 100)
        assert gc.get_freeze_count() > 10_000  # this process's modules and objects, out of every later pass
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    settings = _gunicorn_settings(monkeypatch, "default")
    settings["post_worker_init"](None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    settings = _gunicorn_settings(monkeypatch, "1000, 15, 50")
    try:
        settings["post_worker_init"](None)
        assert gc.get_threshold() == (1000, 15, 50)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_gc_threshold_gunicorn_cannot_use_stops_it_with_what_to_write():
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "-c", "gunicorn.conf.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "GUNICORN_GC_THRESHOLD": "5000,20", "DATABASE_URL": "sqlite://"})
    assert result.returncode != 0
    assert "GUNICORN_GC_THRESHOLD wants three whole numbers A,B,C or 'default', not '5000,20'" in result.stderr
