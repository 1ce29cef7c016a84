"""The command line reaches every behaviour that is a choice (docs/emulator.md, "Choices"): the same
portal a test builds with create_emulator(...) can be started with ``python -m bitrix24_emulator``."""

from __future__ import annotations

from bitrix24_emulator import create_emulator
from bitrix24_emulator.__main__ import build_parser, emulator_options

from .conftest import Api


def portal(*argv) -> Api:
    options = emulator_options(build_parser().parse_args(list(argv)))
    return Api(create_emulator(**options))


def test_defaults_refuse_an_unknown_currency_and_answer_401():
    api = portal()
    status, body = api("crm.deal.add", {"fields": {"TITLE": "x", "CURRENCY_ID": "XYZ"}})
    assert status == 400 and body["error"] == "" and "Currency" in body["error_description"]
    assert api.client.post("/rest/1/wrong/profile").status_code == 401
    assert api.ok("crm.currency.base.get") == "RUB"


def test_flags_switch_each_choice():
    api = portal("--no-currency-check", "--auth-error-status", "403", "--currency", "USD",
                 "--delete-missing-error", "docs", "--batch-operating", "batch")
    deal = api.ok("crm.deal.add", {"fields": {"TITLE": "x", "CURRENCY_ID": "XYZ"}})
    assert api.ok("crm.deal.get", {"id": deal})["CURRENCY_ID"] == "XYZ"
    assert api.client.post("/rest/1/wrong/profile").status_code == 403
    assert api.ok("crm.currency.base.get") == "USD"
    assert api("crm.deal.delete", {"id": 999})[1]["error"] == "ERROR_CORE"
    assert api.emu.batch_operating == "batch"
