"""Request ids, tenants and redaction in the logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from flask_bitrix24.logs import RedactFilter, redact

from .conftest import PORTAL_BASE, portal_url

ROOT = Path(__file__).resolve().parent.parent
SECRET = PORTAL_BASE.rstrip("/").rsplit("/", 1)[1]


def test_request_id_is_echoed_or_made(configured):
    made = configured.get("/api/bitrix/clients/1/config")
    assert len(made.headers["X-Request-ID"]) == 32
    kept = configured.get("/api/bitrix/clients/1/config", headers={"X-Request-ID": "lb-7f3a.1"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a.1"
    refused = configured.get("/api/bitrix/clients/1/config", headers={"X-Request-ID": "bad id <script>" + "x" * 80})
    assert len(refused.headers["X-Request-ID"]) == 32 and "<" not in refused.headers["X-Request-ID"]
    assert configured.get("/api/bitrix/clients/x/config").headers["X-Request-ID"]  # errors carry it too


def test_log_lines_carry_request_id_and_tenant(configured, portal, caplog):
    portal.post(portal_url("crm.contact.get"), status=400,
                json={"error": "", "error_description": "Not found"})
    with caplog.at_level(logging.INFO, logger="flask_bitrix24"):
        r = configured.get("/api/bitrix/clients/1/contacts/5", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 404
    lines = [rec for rec in caplog.records if "crm.contact.get" in rec.getMessage()]
    assert lines and all((rec.request_id, rec.tenant) == ("req-123", "1") for rec in lines)
    logging.getLogger("flask_bitrix24").warning("outside a request")
    assert (caplog.records[-1].request_id, caplog.records[-1].tenant) == ("-", "-")


def test_secrets_are_redacted_in_messages_and_tracebacks(caplog):
    log = logging.getLogger("flask_bitrix24")
    with caplog.at_level(logging.INFO, logger="flask_bitrix24"):
        log.info("calling %s", PORTAL_BASE + "crm.deal.add")
        log.info("event auth[application_token]=s3cr3tt0k3nvalue&auth[domain]=x")
        log.info('payload {"access_token": "abcdefghijklmnop", "refresh_token": "qrstuvwxyzabcdef"}')
        log.info("header Authorization: Bearer my-api-key-123456")
        try:
            raise ConnectionError(f"could not reach {PORTAL_BASE}crm.deal.add")
        except ConnectionError:
            log.exception("failed")
    text = "\n".join(rec.getMessage() + (rec.exc_text or "") for rec in caplog.records)
    for secret in (SECRET, "s3cr3tt0k3nvalue", "abcdefghijklmnop", "qrstuvwxyzabcdef", "my-api-key-123456"):
        assert secret not in text
    assert "crm.deal.add" in text and "/rest/1/" in text  # what to debug with stays


def test_urllib3_request_lines_are_redacted():
    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1,
                               '%s://%s:%s "%s %s %s" %s %s', ("https", "b24.bitrix24.com", 443, "POST",
                                                               f"/rest/1/{SECRET}/crm.contact.add", "HTTP/1.1",
                                                               200, 55), None)
    assert RedactFilter().filter(record) and SECRET not in record.getMessage()
    for plain in ("no secrets here /api/bitrix/clients/1", "Bearer of bad news", "/api/rest/1/items",
                  "password reset requested"):
        assert redact(plain) == plain
    for text, secret in [("auth%5Bapplication_token%5D=s3cr3tt0k3nvalue&x=1", "s3cr3tt0k3nvalue"),
                         ("GET x%2Frest%2F1%2Fabcdefgh12345678%2Fprofile", "abcdefgh12345678"),
                         ('{"outbound_token": "tok-c1-abcdef123"}', "tok-c1-abcdef123"),
                         ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
                         ("redis://:hunter22pass@redis:6379/0", "hunter22pass"),
                         ("postgresql+psycopg://bitrix:CHANGEME99@db/x", "CHANGEME99")]:
        assert secret not in redact(text), text


def test_json_logs_of_the_standalone_app(tmp_path, secret_key):
    code = (
        "from flask_bitrix24 import create_app\n"
        "app = create_app({'BITRIX_AUTH_DISABLED': True})\n"
        "app.test_client().get('/api/bitrix/clients/9/config', headers={'X-Request-ID': 'json-1'})\n"
        "import logging; logging.getLogger('flask_bitrix24').warning('token auth[application_token]=zzzzyyyyxxxx')\n"
        "try:\n"
        "    raise ConnectionError('could not reach https://a.bitrix24.com/rest/1/qwertyuiop123456/crm.deal.add')\n"
        "except ConnectionError:\n"
        "    logging.getLogger('flask_bitrix24').exception('call failed')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "BITRIX_SECRET_KEY": secret_key, "BITRIX_LOG_FORMAT": "json",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'j.db'}"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "name", "message", "request_id", "tenant"} <= set(r) for r in records)
    warning, failure = records[-2], records[-1]
    assert warning["level"] == "WARNING" and "zzzzyyyyxxxx" not in warning["message"]
    # the traceback too: python-json-logger formats it itself
    assert "qwertyuiop123456" not in result.stderr and "crm.deal.add" in failure.get("exc_info", "")


def test_secrets_with_dashes_underscores_or_few_characters_are_masked():
    for secret in ("ab_cd-ef_gh", "x-y", "Q7", "k3y_w1th-dash3s_and_more"):
        for text in (f"https://b24.bitrix24.com/rest/7/{secret}/crm.deal.add.json",
                     f"POST /rest/7/{secret}/profile HTTP/1.1", f"x%2Frest%2F7%2F{secret}%2Fprofile"):
            assert f"/{secret}/" not in redact(text) and f"%2F{secret}%2F" not in redact(text), text
    assert "/rest/1/" in redact("https://b24.bitrix24.com/rest/1/ab_cd-ef/crm.deal.add")


def test_a_portal_echoing_the_url_leaks_no_secret_in_the_answer_or_the_log(configured, portal, caplog):
    echoed = f"could not process {PORTAL_BASE}crm.contact.add.json (secret {PORTAL_BASE.split('/')[-2]})"
    portal.post(portal_url("crm.contact.add"), status=400,
                json={"error": "ERROR_CORE", "error_description": echoed})
    with caplog.at_level(logging.DEBUG):
        r = configured.post("/api/bitrix/clients/1/contacts", json={"fields": {"NAME": "Ann"}})
    secret = PORTAL_BASE.split("/")[-2]
    assert r.status_code == 400 and r.is_json
    assert secret not in r.get_data(as_text=True) and "could not process" in r.get_json()["error_description"]
    assert all(secret not in rec.getMessage() for rec in caplog.records)
