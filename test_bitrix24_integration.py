#!/usr/bin/env python
"""Smoke test of a running server: create, get, list, update and delete each entity, end to end.

    python test_bitrix24_integration.py [--base-url http://localhost:5001] [--client-id 1]
                                        [--api-key KEY] [--webhook-base URL]

With --webhook-base it first saves that config for the client; otherwise it relies on what the
server already has (its BITRIX_WEBHOOK_BASE, or `make run`'s built-in emulator). Every record it
creates is deleted again. One line per step, then "N passed, M failed"; exit status 1 on any failure.
Standard library only, so it runs with any Python 3.9+.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

SAMPLES: dict[str, dict[str, Any]] = {
    "contacts": {
        "create": {"NAME": "Ada", "LAST_NAME": "Lovelace (smoke test)",
                   "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}],
                   "EMAIL": [{"VALUE": "ada.smoke@example.com", "VALUE_TYPE": "WORK"}]},
        "update": {"NAME": "Augusta Ada"},
    },
    "deals": {
        "create": {"TITLE": "Smoke test deal", "STAGE_ID": "NEW", "CURRENCY_ID": "USD", "OPPORTUNITY": 5000.00},
        "update": {"STAGE_ID": "WON"},
    },
    "leads": {
        "create": {"TITLE": "Smoke test lead", "NAME": "Grace", "STATUS_ID": "NEW", "SOURCE_ID": "WEB"},
        "update": {"STATUS_ID": "IN_PROCESS"},
    },
}


class Api:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base = base_url.rstrip("/") + "/api/bitrix"
        self.api_key = api_key
        self.timeout = timeout

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {"error": "NOT_JSON", "error_description": raw[:200].decode("utf-8", "replace")}


class Run:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def step(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'}  {name}{('  ' + detail) if detail else ''}", flush=True)
        return ok


def describe(status: int, body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {status} {body.get('error')}: {body.get('error_description')}"
    return f"HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="End-to-end smoke test of a running Bitrix24 integration.")
    parser.add_argument("--base-url", default="http://localhost:5001")
    parser.add_argument("--client-id", type=int, default=1)
    parser.add_argument("--api-key", default=os.environ.get("BITRIX_API_KEY"),
                        help="bearer key for our API (default: $BITRIX_API_KEY)")
    parser.add_argument("--webhook-base", help="save this webhook base for the client first")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    api, run, cid = Api(args.base_url, args.api_key, args.timeout), Run(), args.client_id
    try:
        status, body = api("GET", f"/clients/{cid}/config/debug")
    except (urllib.error.URLError, OSError) as exc:
        run.step(f"reach {args.base_url}", False, f"{exc}: is the server running (make run)?")
        print(f"{run.passed} passed, {run.failed} failed")
        return 1

    if args.webhook_base:
        status, body = api("POST", f"/clients/{cid}/config", {"webhook_base": args.webhook_base})
        run.step("save config", status in (200, 201), describe(status, body))

    status, body = api("GET", f"/clients/{cid}/config/debug?check=1")
    check = (body or {}).get("result", {}).get("check", {}) if isinstance(body, dict) else {}
    source = (body or {}).get("result", {}).get("source") if isinstance(body, dict) else None
    ok = status == 200 and check.get("ok") is True
    if ok:
        detail = f"config from {source}"
    elif status != 200:
        detail = describe(status, body)
    else:
        detail = f"profile failed: {check.get('error')}: {check.get('error_description')}"
    if not run.step("config debug + live profile call", ok, detail):
        print(f"{run.passed} passed, {run.failed} failed")
        return 1

    for entity, sample in SAMPLES.items():
        created: int | None = None
        try:
            status, body = api("POST", f"/clients/{cid}/{entity}", {"fields": sample["create"]})
            ok = status == 201 and isinstance(body.get("result"), int)
            if not run.step(f"create {entity}", ok, f"id {body.get('result')}" if ok else describe(status, body)):
                continue
            created = body["result"]

            status, body = api("GET", f"/clients/{cid}/{entity}/{created}")
            run.step(f"get {entity}", status == 200 and str(body["result"].get("ID")) == str(created),
                     describe(status, body))

            query = urllib.parse.urlencode({"filter[ID]": created, "select[]": "ID"})
            status, body = api("GET", f"/clients/{cid}/{entity}?{query}")
            ids = [str(row.get("ID")) for row in body.get("result", [])] if status == 200 else []
            run.step(f"list {entity}", ids == [str(created)], describe(status, body) if status != 200 else f"got {ids}")

            status, body = api("PATCH", f"/clients/{cid}/{entity}/{created}", {"fields": sample["update"]})
            run.step(f"update {entity}", status == 200 and body.get("result") is True, describe(status, body))
            status, body = api("GET", f"/clients/{cid}/{entity}/{created}")
            record = body.get("result", {}) if status == 200 else {}
            changed = all(str(record.get(k)) == str(v) for k, v in sample["update"].items())
            run.step(f"update {entity} is visible", changed, "" if changed else f"got {record}")
        finally:
            if created is not None:
                status, body = api("DELETE", f"/clients/{cid}/{entity}/{created}")
                run.step(f"delete {entity}", status == 200, describe(status, body))
                status, body = api("GET", f"/clients/{cid}/{entity}/{created}")
                run.step(f"deleted {entity} is gone", status == 404, describe(status, body))

    print(f"{run.passed} passed, {run.failed} failed")
    return 0 if run.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
