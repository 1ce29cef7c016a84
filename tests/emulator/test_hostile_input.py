"""No input makes the emulator answer 5xx: a portal refuses bad parameters with a 4xx error body
(https://apidocs.bitrix24.com/error-codes.html), so an emulator that crashes on them would hide a
client's bugs behind a 500 a real portal never sends.

Every method the emulator serves is called with parameters of the wrong shape (strings where arrays
are expected and back, unknown ids, nested garbage, huge numbers), as JSON and as a PHP form.
"""

from __future__ import annotations

import json

import pytest

from bitrix24_emulator import create_emulator
from bitrix24_emulator.emulator import METHODS

from .conftest import BASE, Api

HOSTILE = [
    None, {}, {"id": "abc"}, {"id": -5}, {"id": 1}, {"ID": [1, 2]}, {"fields": "x"},
    {"fields": {"TITLE": {"a": 1}}},
    {"fields": {"ID": 1, "STAGE_ID": ["x"], "CURRENCY_ID": {"a": "b"}, "NAME": None, "CONTACT_IDS": "x"}},
    {"filter": "x"}, {"filter": {">ID": {"a": 1}}}, {"filter": {"logic": "OR", "0": "x"}},
    {"filter": {"0": {"logic": ["x"]}}}, {"order": {"ID": ["x"]}}, {"order": ["y"], "sort": ["x"]},
    {"select": "x"}, {"start": "abc"}, {"start": 10**30}, {"params": "x", "fields": {}},
    {"entityTypeId": "2"}, {"entityTypeId": 2, "id": 1, "fields": {"title": ["x"], "fm": "x"}},
    {"entityTypeId": 128, "fields": {"stageId": {"x": 1}, "categoryId": "abc"}},
    {"taskId": "x"}, {"taskId": 1, "fields": {"TITLE": ["x"], "RESPONSIBLE_ID": {"a": 1}}},
    {"rows": "x", "id": 1}, {"rows": [{"PRICE": "abc", "QUANTITY": {"x": 1}, "DISCOUNT_RATE": "z"}], "id": 1},
    {"items": "x", "id": 1}, {"items": [{"CONTACT_ID": "abc"}], "id": 1},
    {"id": 1, "fields": {"CONTACT_ID": "x", "IS_PRIMARY": ["Y"]}},
    {"entityId": ["x"]}, {"fields": {"FIELD_NAME": ["x"], "USER_TYPE_ID": {"a": 1}, "LIST": "x"}},
    {"fields": {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": ["x"], "NAME": {"a": 1}}},
    {"FILTER": "x"}, {"name": ["x"]}, {"ownerType": ["D"], "ownerId": {"x": 1}},
    {"filter": {"=ownerType": "D", "=ownerId": "abc"}}, {"fields": {"ownerType": "T", "ownerId": "z"}},
    {"cmd": "x"}, {"cmd": {"a": ["x"], "b": "crm.deal.get?id[]=1"}},
    # huge numbers: past DECIMAL(18,2), past a double (JSON allows any length), and strings of them
    {"id": 1, "rows": [{"PRICE": 1e308, "QUANTITY": 1e308}]}, {"id": 1, "rows": [{"PRICE": 10**40}]},
    {"id": 1, "rows": [{"PRICE": 10**30, "QUANTITY": 10**30, "DISCOUNT_SUM": 10**400, "TAX_RATE": -100}]},
    {"id": 1, "fields": {"OPPORTUNITY": 10**400, "TAX_VALUE": "1e400", "PROBABILITY": 10**400}},
    {"id": 10**400, "fields": {"OPPORTUNITY": 1e308}}, {"start": 10**400},
    {"ownerType": "D", "ownerId": 1, "productRows": [{"price": 10**40, "quantity": 1e308}]},
    {"id": 1, "fields": {"price": 1e308, "discountRate": 10**400}},
    {"fields": {"ownerType": "D", "ownerId": 1, "price": 10**40, "taxRate": -100}},
    {"entityTypeId": 2, "id": 1, "fields": {"opportunity": 10**400, "taxValue": 1e308}},
]
FORM = "fields[a][]=1&id[]=x&filter[][x]=1&start[]=1&order=x&cmd[a]=crm.deal.get?id[]=1&taskId[]=2"


@pytest.fixture(scope="module")
def portal():
    api = Api(create_emulator(rate=1e9, burst=1e9))
    for method, payload in [("crm.contact.add", {"fields": {"NAME": "a"}}), ("crm.deal.add", {"fields": {"TITLE": "d"}}),
                            ("crm.lead.add", {"fields": {"TITLE": "l"}}), ("crm.company.add", {"fields": {"TITLE": "c"}}),
                            ("tasks.task.add", {"fields": {"TITLE": "t", "RESPONSIBLE_ID": 1}})]:
        api.ok(method, payload)
    return api


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_parameters_make_a_method_answer_5xx(portal, method):
    failures = []
    for payload in HOSTILE:
        response = portal.raw(method, payload)
        if response.status_code >= 500:
            failures.append((payload, response.status_code, response.get_data(as_text=True)[:300]))
        else:
            body = json.loads(response.get_data(as_text=True))
            assert "result" in body or "error" in body, body
    form = portal.client.post(BASE + method, data=FORM, content_type="application/x-www-form-urlencoded")
    if form.status_code >= 500:
        failures.append((FORM, form.status_code, form.get_data(as_text=True)[:300]))
    assert not failures


@pytest.mark.parametrize(("method", "payload"), [
    ("crm.deal.productrows.set", {"id": 1, "rows": [{"PRICE": 1e308}]}),
    ("crm.deal.productrows.set", {"id": 1, "rows": [{"PRICE": 10**40}]}),
    ("crm.deal.productrows.set", {"id": 1, "rows": [{"PRICE": 9e15}, {"PRICE": 9e15}]}),  # the deal's total
    ("crm.item.productrow.set", {"ownerType": "D", "ownerId": 1, "productRows": [{"price": 10**40}]}),
    ("crm.deal.update", {"id": 1, "fields": {"OPPORTUNITY": 10**400}}),
    ("crm.deal.update", {"id": 1, "fields": {"OPPORTUNITY": "1e17"}}),
])
def test_an_amount_past_decimal_18_2_is_refused_and_nothing_changes(method, payload):
    api = Api(create_emulator(rate=1e9, burst=1e9))
    deal = api.ok("crm.deal.add", {"fields": {"TITLE": "d"}})
    api.ok("crm.deal.productrows.set", {"id": deal, "rows": [{"PRODUCT_NAME": "kept", "PRICE": 5}]})
    response = api.raw(method, payload)
    body = json.loads(response.get_data(as_text=True))
    assert response.status_code == 400 and body["error"] == "", body
    assert "DECIMAL(18,2)" in body["error_description"], body
    assert api.ok("crm.deal.get", {"id": deal})["OPPORTUNITY"] == "5.00"
    assert [r["PRODUCT_NAME"] for r in api.ok("crm.deal.productrows.get", {"id": deal})] == ["kept"]


# The emulator's own endpoints for synchronisation tests (not part of Bitrix24: controls.py) refuse bad
# input with a 4xx JSON too: a benchmark's typo must not look like a crashed portal.
ADMIN_BODIES = [
    b"", b"null", b"[]", b"{garbage", b'"x"', b"1e400", b"[" * 5000, b'{"entity": {"a": 1}}',
    b'{"entity": "contact", "add": 1e400}', b'{"entity": "contact", "add": "5"}', b'{"entity": "contact", "add": NaN}',
    b'{"entity": "contact", "update": [1e400]}', b'{"entity": "contact", "update": [99999999999999999999999]}',
    b'{"entity": "contact", "delete": {"a": 1}}', b'{"entity": "contact", "seed": 1.5}',
    b'{"entity": "contact", "seed": 99999999999999999999999999}',
    b'{"entity": "contact", "add": 1, "fields": {"NAME": {"a": [1, {"b": 2}]}, "EMAIL": "x", "PHONE": [1]}}',
    b'{"entity": "deal", "add": 1, "fields": {"OPPORTUNITY": 1e400, "CURRENCY_ID": ["x"], "STAGE_ID": {}}}',
    b'{"entity": "company", "update": 1, "fields": {"TITLE": null}}', b'{"entity": "lead", "delete": 1}',
    b'{"drop": "x"}', b'{"drop_rate": NaN}', b'{"drop_rate": 1e400}', b'{"drop_rate": [0.5]}', b'{"drop": null}',
]


@pytest.mark.parametrize("path", ["/_emulator/changes", "/_emulator/events"])
def test_bad_input_to_the_emulators_own_endpoints_is_never_5xx(path):
    api = Api(create_emulator(rate=1e9, burst=1e9))
    api.ok("crm.company.add", {"fields": {"TITLE": "c"}})
    for body in ADMIN_BODIES:
        response = api.client.post(path, data=body, content_type="application/json")
        assert response.status_code < 500, (body[:80], response.status_code, response.get_data(as_text=True)[:300])
        answer = json.loads(response.get_data(as_text=True))
        assert response.status_code == 200 or set(answer) >= {"error", "error_description"}, (body[:80], answer)
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = api.client.open(path, method=method)
        assert response.status_code in (200, 405), (method, response.status_code)
    form = api.client.post(path, data="entity=contact&add=1", content_type="application/x-www-form-urlencoded")
    assert 400 <= form.status_code < 500
