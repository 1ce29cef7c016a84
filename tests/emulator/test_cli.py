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


def test_gc_threshold_is_parsed_and_applied_as_asked(capsys):
    import gc

    import pytest

    from bitrix24_emulator.__main__ import tune_gc

    assert build_parser().parse_args([]).gc_threshold == (5000, 20, 100)
    assert build_parser().parse_args(["--gc-threshold", "default"]).gc_threshold is None
    assert build_parser().parse_args(["--gc-threshold", "900,12,40"]).gc_threshold == (900, 12, 40)
    for wrong in ("5000,20", "a,b,c", "1,2,-3"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--gc-threshold", wrong])
        assert f"three whole numbers A,B,C or 'default', not '{wrong}'" in capsys.readouterr().err
    before = gc.get_threshold()
    try:
        tune_gc((900, 12, 40))
        assert gc.get_threshold() == (900, 12, 40) and gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    tune_gc(None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
