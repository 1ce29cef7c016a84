"""The OpenAPI document: served, complete, and true of the running app (schemathesis, app + emulator over HTTP)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask_bitrix24 import Bitrix24
from flask_bitrix24.controllers.openapi import entity_subset

from ..conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# What must hold of every generated request: no 5xx, and answers as the document says (status
# codes, content types, headers, bodies); authentication is enforced; 405 and Allow are right.
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
])


def test_openapi_document_lists_every_endpoint(make_app):
    app = make_app()
    client = app.test_client()
    spec = client.get("/api/bitrix/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops
                  if method != "parameters"}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("bitrix24.") and rule.endpoint != "bitrix24.not_found":
            # one rule serves every entity; the document has a path per entity that has the resource
            converter = re.search(r"<(bx_\w*entity):entity>", rule.rule)
            names = entity_subset(converter.group(1)) if converter else [None]
            for name in names:
                path = re.sub(r"<bx_\w*entity:entity>", name or "", rule.rule)
                path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
                routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed and documented == routed
    # Every operation has its own id; entities have their own paths and names a generated client reads.
    ids = [op["operationId"] for ops in spec["paths"].values() for m, op in ops.items() if m != "parameters"]
    assert len(ids) == len(set(ids)) == len(documented)
    paths = spec["paths"]
    assert paths["/api/bitrix/clients/{client_id}/contacts"]["post"]["operationId"] == "createContact"
    assert paths["/api/bitrix/clients/{client_id}/deals"]["get"]["operationId"] == "listDeals"
    assert paths["/api/bitrix/clients/{client_id}/companies/{record_id}"]["patch"]["operationId"] == "updateCompany"
    assert paths["/api/bitrix/clients/{client_id}/leads/fields"]["get"]["operationId"] == "getLeadFields"
    assert paths["/api/bitrix/clients/{client_id}/config"]["post"]["operationId"] == "saveConfig"
    assert "/api/bitrix/clients/{client_id}/deals/upsert" not in paths  # deals have no upsert
    # sub-resources only on the entities that have them
    assert "/api/bitrix/clients/{client_id}/deals/{record_id}/products" in paths
    assert "/api/bitrix/clients/{client_id}/activities/{record_id}/products" not in paths
    assert "/api/bitrix/clients/{client_id}/companies/{record_id}/contacts" in paths
    assert "/api/bitrix/clients/{client_id}/contacts/{record_id}/contacts" not in paths
    assert "/api/bitrix/clients/{client_id}/tasks/userfields" not in paths
    create = paths["/api/bitrix/clients/{client_id}/contacts"]["post"]
    assert create["tags"] == ["contacts"] and create["summary"].startswith("Create a contact")
    assert create["requestBody"]["content"]["application/json"]["example"]["fields"]["NAME"] == "Ada"
    assert paths["/api/bitrix/clients/{client_id}/deals/{record_id}"]["patch"]["requestBody"]["content"][
        "application/json"]["example"] == {"fields": {"STAGE_ID": "WON"}}
    assert all(p["name"] != "entity" for ops in paths.values() for p in ops.get("parameters", []))
    assert ("/api/bitrix/webhook", "POST") in documented
    receiver = spec["paths"]["/api/bitrix/webhook"]["post"]
    assert receiver["security"] == []  # it proves itself with auth[application_token], not the API key
    assert "application/x-www-form-urlencoded" in receiver["requestBody"]["content"]
    # Generated from the schemas that check requests: the record body and its rules are there.
    record = spec["components"]["schemas"]["RecordBody"]
    assert record["required"] == ["fields"] and record["additionalProperties"] is False
    # the field-name rules the controllers apply, stated as JSON Schema (OpenAPI 3.1)
    assert record["properties"]["fields"]["propertyNames"] == {"pattern": "^[A-Z][A-Z0-9_]*$"}
    assert record["properties"]["fields"]["minProperties"] == 1
    item = spec["components"]["schemas"]["ItemBody"]
    assert item["properties"]["fields"]["propertyNames"] == {"pattern": "^[a-z][A-Za-z0-9_]*$"}
    ids = spec["paths"]["/api/bitrix/clients/{client_id}/deals/{record_id}"]["parameters"]
    assert {p["name"]: p["schema"].get("minimum") for p in ids}["record_id"] == 1
    assert spec["components"]["responses"]["DEFAULT_ERROR"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}


def test_swagger_ui_page(make_app, monkeypatch):
    client = make_app().test_client()
    page = client.get("/api/bitrix/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "swagger-ui" in html and "/api/bitrix/openapi.json" in html
    # Its scripts come from the installed package, beside the page: no CDN, nothing from the internet.
    assert "http" not in html.split("<body>")[0] and "/api/bitrix/docs/assets/swagger-ui-bundle.js" in html
    script = client.get("/api/bitrix/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.get_data()) > 100_000
    assert client.get("/api/bitrix/docs/assets/../../openapi.json").status_code == 404  # no way out of the folder
    # Without the docs extra (and no URL of its own) the page says what to install, in our JSON.
    from flask_bitrix24.controllers import openapi

    monkeypatch.setattr(openapi, "SWAGGER_UI_DIST", None)
    bare = make_app().test_client().get("/api/bitrix/docs")
    assert bare.status_code == 501 and bare.get_json()["error"] == "DOCS_UI_MISSING"
    assert "flask-bitrix24[docs]" in bare.get_json()["error_description"]
    monkeypatch.undo()
    monkeypatch.setenv("BITRIX_OPENAPI_SWAGGER_UI_URL", "https://static.example.com/swagger/")
    from flask_bitrix24.config import bitrix24_settings

    own = make_app(BITRIX_OPENAPI_SWAGGER_UI_URL=bitrix24_settings()["BITRIX_OPENAPI_SWAGGER_UI_URL"])
    assert "https://static.example.com/swagger/swagger-ui-bundle.js" in own.test_client().get(
        "/api/bitrix/docs").get_data(as_text=True)


def test_host_app_error_pages_are_untouched(secret_key, tmp_path):
    host = Flask("host")
    host.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'h.db'}", BITRIX_SECRET_KEY=secret_key,
                       BITRIX_API_KEY=API_KEY)

    @host.errorhandler(404)
    def host_404(_):
        return "host page", 404

    @host.get("/mine")
    def mine():
        return "ok"

    Bitrix24().init_app(host)
    client = host.test_client()
    assert client.get("/elsewhere").get_data(as_text=True) == "host page"
    assert client.patch("/mine").status_code == 405 and client.patch("/mine").mimetype == "text/html"
    assert client.get("/api/bitrix/openapi.json").status_code == 200


def test_bad_input_refused_by_the_schemas_names_the_field(make_app):
    client = make_app().test_client()
    cases = [
        ("post", "/api/bitrix/clients/1/contacts", {"fields": {"NAME": "a"}, "extra": 1}, "INVALID_BODY", "extra"),
        ("post", "/api/bitrix/clients/1/contacts", {"fields": []}, "INVALID_FIELDS", "fields"),
        ("post", "/api/bitrix/clients/1/contacts", {"fields": {"NAME": "a"}, "params": 3}, "INVALID_PARAMS", "params"),
        ("post", "/api/bitrix/clients/1/batch", {"cmd": {"a": "crm.deal.get?id=1"}, "halt": "yes"}, "INVALID_BODY",
         "halt"),
        ("post", "/api/bitrix/clients/1/deals/batch", {"items": [{"id": "7", "fields": {"TITLE": "x"}}]},
         "INVALID_ID", "items[0].id"),
        ("post", "/api/bitrix/clients/1/config", {"webhook_base": 5}, "INVALID_CONFIG", "webhook_base"),
        ("get", "/api/bitrix/clients/1/events?limit=0", None, "INVALID_LIMIT", "limit"),
        ("get", "/api/bitrix/clients/1/deals?order[ID]=UP", None, "INVALID_ORDER", "order[ID]"),
        ("post", "/api/bitrix/clients/1/contacts", {"fields": {"NAME\n": "a"}}, "INVALID_FIELD_NAME",
         "fields.NAME\n"),
        ("post", "/api/bitrix/clients/1/items/128", {"fields": {"title": "a"}, "params": {}}, "INVALID_BODY",
         "params"),
        ("post", "/api/bitrix/clients/1/config", {"plan": "gold"}, "INVALID_CONFIG", "plan"),
        # found by schemathesis: a line break inside a filter key was a 500
        ("get", "/api/bitrix/clients/1/deals?filter[%0AID]=1", None, "INVALID_FILTER", "filter[\nID]"),
    ]
    for method, url, body, code, field in cases:
        r = getattr(client, method)(url, json=body)
        assert r.status_code == 400, (url, body, r.get_json())
        assert (r.get_json()["error"], r.get_json()["field"]) == (code, field), (url, body, r.get_json())


@pytest.mark.slow  # about 50 s a database: run by make test, not again on the lowest versions
def test_schemathesis_against_the_app_in_front_of_the_emulator(make_stack, capsys):
    # Only the emulator's host is allowed: a generated config cannot point a client at a portal that
    # does not exist (that is a real 502, not a bug).
    # App mode on, so its endpoints are tried for real (the OAuth server is a closed port: an install
    # that passes the checks meets an OAuth server that cannot be reached, which is a 503, not a bug).
    stack = make_stack({"BITRIX_API_KEY": API_KEY, "BITRIX_AUTH_DISABLED": False, "BITRIX_MAX_WAIT": 1.0,
                        "BITRIX_ALLOWED_HOSTS": "127.0.0.1", "BITRIX_APP_CLIENT_ID": "local.fuzz",
                        "BITRIX_APP_CLIENT_SECRET": "fuzz-secret", "BITRIX_OAUTH_SERVER": "http://127.0.0.1:9/"},
                       preload={"contact": 5, "deal": 5})
    stack.http.headers["Authorization"] = f"Bearer {API_KEY}"
    stack.configure()
    command = [
        str(SCHEMATHESIS), "run", f"{stack.api}/openapi.json",
        "--checks", CHECKS,
        "--header", f"Authorization: Bearer {API_KEY}",
        # 10 a path: every entity has its own paths now, so each rule is still tried far more than before
        # (about 3,400 requests a run, against 2,157 at 25 a rule before the per-entity paths)
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261127"),
        "--request-timeout", "30",
        "--no-color",
        "--suppress-health-check", "all",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT,
                            env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    output = result.stdout + result.stderr
    summary = re.search(r"(\d+) generated", output)
    with capsys.disabled():
        print(f"\nschemathesis: {summary.group(0) if summary else 'no summary'} against {stack.api}/openapi.json")
    assert result.returncode == 0, output[output.find("FAILURES"):][:6000]
    assert summary and int(summary.group(1)) >= 200, output[-2000:]
    assert stack.emulator.counters.requests > 0  # the requests went through to the portal


def test_odd_portal_answers_are_passed_on_as_they_came(configured, portal):
    """The answer schemas document the usual types but never reshape what the portal said."""
    from ..conftest import portal_url

    portal.post(portal_url("crm.contact.add"), json={"result": "abc"})
    portal.post(portal_url("crm.contact.list"), json={"result": {"0": {"ID": "1"}}, "total": "many"})
    created = configured.post("/api/bitrix/clients/1/contacts", json={"NAME": "x"})
    assert created.status_code == 201 and created.get_json() == {"result": "abc"}
    listed = configured.get("/api/bitrix/clients/1/contacts")
    assert listed.status_code == 200 and listed.get_json() == {"result": {"0": {"ID": "1"}}, "total": "many"}
