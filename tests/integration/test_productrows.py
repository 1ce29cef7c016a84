"""Product rows of deals, leads and smart-process items over real HTTP against the emulator: PUT replaces
(and says so), PATCH keeps what it is not told to change, many deals' rows come back from batched reads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

ROWS = [{"PRODUCT_NAME": "Chair", "PRICE": 100, "QUANTITY": 2}, {"PRODUCT_NAME": "Desk", "PRICE": 350.5, "QUANTITY": 1}]


def new(stack, entity, **fields):
    r = stack.http.post(f"{stack.api}/clients/1/{entity}", json={"TITLE": "With rows", **fields})
    assert r.status_code == 201, r.text
    return r.json()["result"]


def names(rows, key="PRODUCT_NAME"):
    return [row[key] for row in rows]


@pytest.mark.parametrize("entity", ["deals", "leads"])
def test_put_replaces_every_row_and_says_how_many(stack, entity):
    record = new(stack, entity)
    url = f"{stack.api}/clients/1/{entity}/{record}/products"
    assert stack.http.get(url).json() == {"result": []}
    r = stack.http.put(url, json={"rows": ROWS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["replaced"] == 0 and names(body["result"]) == ["Chair", "Desk"]
    assert body["result"][0]["PRICE"] == 100 and body["result"][0]["QUANTITY"] == 2
    assert body["result"][0]["OWNER_TYPE"] == ("D" if entity == "deals" else "L")
    r = stack.http.put(url, json={"rows": [{"PRODUCT_NAME": "Lamp", "PRICE": 20, "QUANTITY": 3}]})
    assert r.json()["replaced"] == 2 and names(r.json()["result"]) == ["Lamp"]
    assert names(stack.http.get(url).json()["result"]) == ["Lamp"]
    # the amount follows the rows (the record's amount is not manual)
    assert float(stack.http.get(f"{stack.api}/clients/1/{entity}/{record}").json()["result"]["OPPORTUNITY"]) == 60


def test_put_never_wipes_rows_by_accident(stack):
    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    stack.http.put(url, json={"rows": ROWS})
    for body in ({}, {"rows": None}, {"rows": {}}, {"row": []}, {"rows": [{"product_name": "x"}]}, {"rows": ["x"]}):
        r = stack.http.put(url, json=body)
        assert r.status_code == 400, body
        assert r.json()["error"] in ("INVALID_ROWS", "INVALID_BODY", "INVALID_FIELD_NAME"), r.json()
    assert names(stack.http.get(url).json()["result"]) == ["Chair", "Desk"]
    missing = stack.http.put(url, json={})
    assert missing.json()["error"] == "INVALID_ROWS" and missing.json()["field"] == "rows"
    r = stack.http.put(url, json={"rows": []})  # explicit: delete them all
    assert r.status_code == 200 and r.json() == {"result": [], "replaced": 2}


def test_patch_adds_updates_and_removes_by_id_keeping_the_rest(stack):
    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    rows = stack.http.put(url, json={"rows": [*ROWS, {"PRODUCT_NAME": "Shelf", "PRICE": 80, "QUANTITY": 1,
                                                      "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 10,
                                                      "TAX_RATE": 20, "TAX_INCLUDED": "Y"}]}).json()["result"]
    chair, desk, shelf = (int(r["ID"]) for r in rows)
    r = stack.http.patch(url, json={"add": [{"PRODUCT_NAME": "Lamp", "PRICE": 20, "QUANTITY": 4}],
                                    "update": [{"ID": chair, "QUANTITY": 5}], "remove": [desk]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["added"], body["updated"], body["removed"]) == (1, 1, 1)
    after = {row["PRODUCT_NAME"]: row for row in body["result"]}
    assert set(after) == {"Chair", "Shelf", "Lamp"}
    assert after["Chair"]["QUANTITY"] == 5 and int(after["Chair"]["ID"]) == chair and after["Chair"]["PRICE"] == 100
    # the untouched row keeps its id, price, discount and tax
    before_shelf = next(row for row in rows if int(row["ID"]) == shelf)
    for key in ("ID", "PRICE", "QUANTITY", "DISCOUNT_TYPE_ID", "DISCOUNT_RATE", "TAX_RATE", "TAX_INCLUDED",
                "PRICE_NETTO"):
        assert after["Shelf"][key] == before_shelf[key], key
    assert stack.http.get(url).json()["result"] == body["result"]


def test_patch_refuses_unknown_row_ids_and_empty_patches(stack):
    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    rows = stack.http.put(url, json={"rows": ROWS}).json()["result"]
    r = stack.http.patch(url, json={"remove": [987654]})
    assert r.status_code == 400 and r.json()["error"] == "ROW_NOT_FOUND" and "987654" in r.json()["error_description"]
    r = stack.http.patch(url, json={"update": [{"PRICE": 1}]})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS"
    r = stack.http.patch(url, json={"add": [{"ID": 5, "PRODUCT_NAME": "x"}]})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS"
    r = stack.http.patch(url, json={})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS"
    assert stack.http.get(url).json()["result"] == rows


def test_patch_refuses_to_write_when_the_rows_changed_meanwhile(stack, monkeypatch):
    from flask_bitrix24.services import productrows

    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    stack.http.put(url, json={"rows": ROWS})
    real_get = productrows.get_rows
    reads = []

    def get_rows(owner, *, client_id):
        reads.append(owner.owner_id)
        if len(reads) == 2:  # someone else sets the rows between our read and our write
            stack.http.post(stack.emulator_server.base + "crm.deal.productrows.set",
                            json={"id": deal, "rows": [{"PRODUCT_NAME": "Theirs", "PRICE": 1}]})
        return real_get(owner, client_id=client_id)

    monkeypatch.setattr(productrows, "get_rows", get_rows)
    r = stack.http.patch(url, json={"add": [{"PRODUCT_NAME": "Mine", "PRICE": 2}]})
    assert r.status_code == 409 and r.json()["error"] == "ROWS_CHANGED"
    monkeypatch.undo()
    assert names(stack.http.get(url).json()["result"]) == ["Theirs"]  # theirs kept, ours not written over it


def test_parallel_patches_and_a_put_keep_every_row(make_stack):
    # 12 PATCHes at once, each read-merge-set 30 ms a call apart: without the per-record lock the later sets
    # dropped the rows the earlier ones had added, each answered 200.
    stack = make_stack(latency_ms=30)
    stack.configure()
    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    stack.http.put(url, json={"rows": [{"PRODUCT_NAME": "base", "PRICE": 1, "QUANTITY": 1}]})

    def add(i):
        r = requests.patch(url, json={"add": [{"PRODUCT_NAME": f"r{i}", "PRICE": 1, "QUANTITY": 1}]}, timeout=60)
        return r.status_code, r.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(add, range(12)))
    assert [status for status, _ in answers] == [200] * 12, answers
    assert sorted(names(stack.http.get(url).json()["result"])) == sorted(["base", *(f"r{i}" for i in range(12))])
    # a PUT waits for a PATCH (or the PATCH for it): the PATCH's row is on the PUT's rows or the PUT replaced it
    with ThreadPoolExecutor(2) as pool:
        put = pool.submit(requests.put, url, json={"rows": [{"PRODUCT_NAME": "put", "PRICE": 2}]}, timeout=60)
        patch = pool.submit(requests.patch, url, json={"add": [{"PRODUCT_NAME": "patched", "PRICE": 1}]}, timeout=60)
        put_answer, patch_answer = put.result(), patch.result()
    assert put_answer.status_code == 200 and patch_answer.status_code == 200
    final = names(stack.http.get(url).json()["result"])
    assert final in (["put", "patched"], ["put"]), final
    if final == ["put"]:  # the PUT came second: it replaced the 13 rows and the patched one
        assert put_answer.json()["replaced"] == 14
    else:
        assert put_answer.json()["replaced"] == 13


def test_row_keys_are_the_documented_input_fields(stack):
    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    rows = stack.http.put(url, json={"rows": ROWS}).json()["result"]
    chair = int(rows[0]["ID"])
    r = stack.http.put(url, json={"rows": [{"NAME": "Lamp", "COST": 20, "QTY": 3}]})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS", r.json()
    assert "'NAME', 'COST', 'QTY'" in r.json()["error_description"]
    assert "PRODUCT_NAME" in r.json()["error_description"] and r.json()["accepted"][:2] == ["ID", "PRODUCT_ID"]
    assert "https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-set.html" in \
        r.json()["error_description"]
    assert r.json()["field"] == "rows[0].NAME"
    r = stack.http.patch(url, json={"update": [{"ID": chair, "QTY": 9}]})
    assert r.status_code == 400 and r.json()["field"] == "update[0].QTY", r.json()
    r = stack.http.patch(url, json={"add": [{"PRODUCT_NAME": "x", "UF_CRM_X": 1}]})
    assert r.status_code == 400 and r.json()["field"] == "add[0].UF_CRM_X", r.json()
    for body in ({"rows": [{}]}, {"rows": [{"ID": chair}]}):
        r = stack.http.put(url, json=body)
        assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS" and r.json()["field"] == "rows[0]"
    for body in ({"add": [{}]}, {"update": [{"ID": chair}]}):
        r = stack.http.patch(url, json=body)
        assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS", r.json()
    assert stack.http.get(url).json()["result"] == rows  # nothing written
    lead = new(stack, "leads")
    r = stack.http.put(f"{stack.api}/clients/1/leads/{lead}/products", json={"rows": [{"COST": 1}]})
    assert "https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-productrows-set.html" in \
        r.json()["error_description"]
    item = stack.http.post(f"{stack.api}/clients/1/items/128", json={"title": "P"}).json()["result"]
    r = stack.http.put(f"{stack.api}/clients/1/items/128/{item}/products", json={"rows": [{"productNam": "x"}]})
    assert r.status_code == 400 and r.json()["field"] == "rows[0].productNam" and "productName" in r.json()["accepted"]
    # the ID a PUT row may carry (the legacy set keeps it)
    r = stack.http.put(url, json={"rows": [{"ID": chair, "PRODUCT_NAME": "Chair", "PRICE": 90, "QUANTITY": 1}]})
    assert r.status_code == 200 and [int(x["ID"]) for x in r.json()["result"]] == [chair]


def test_patch_refuses_a_row_both_updated_and_removed_and_names_a_missing_row_once(stack):
    deal = new(stack, "deals")
    url = f"{stack.api}/clients/1/deals/{deal}/products"
    rows = stack.http.put(url, json={"rows": ROWS}).json()["result"]
    chair = int(rows[0]["ID"])
    r = stack.http.patch(url, json={"update": [{"ID": chair, "QUANTITY": 9}], "remove": [chair]})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS" and str(chair) in r.json()["error_description"]
    r = stack.http.patch(url, json={"update": [{"ID": chair, "QUANTITY": 9}, {"ID": chair, "PRICE": 1}]})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ROWS"
    r = stack.http.patch(url, json={"remove": [987654, 987654]})
    assert r.status_code == 400 and r.json()["error"] == "ROW_NOT_FOUND"
    assert "no product row 987654 on" in r.json()["error_description"]
    assert stack.http.get(url).json()["result"] == rows
    r = stack.http.patch(url, json={"remove": [chair, chair]})
    assert r.status_code == 200 and r.json()["removed"] == 1 and names(r.json()["result"]) == ["Desk"]


def test_item_rows_of_a_deal_or_lead_use_their_owner_type_and_other_types_are_refused(stack):
    deal = new(stack, "deals")
    stack.http.put(f"{stack.api}/clients/1/deals/{deal}/products", json={"rows": ROWS})
    r = stack.http.get(f"{stack.api}/clients/1/items/2/{deal}/products")
    assert r.status_code == 200, r.text
    assert names(r.json()["result"], "productName") == ["Chair", "Desk"] and r.json()["result"][0]["ownerType"] == "D"
    lead = new(stack, "leads")
    r = stack.http.put(f"{stack.api}/clients/1/items/1/{lead}/products", json={"rows": [{"productName": "Pen"}]})
    assert r.status_code == 200 and r.json()["result"][0]["ownerType"] == "L", r.text
    assert names(stack.http.get(f"{stack.api}/clients/1/leads/{lead}/products").json()["result"]) == ["Pen"]
    for type_id in (3, 5, 127):
        r = stack.http.get(f"{stack.api}/clients/1/items/{type_id}/1/products")
        assert r.status_code == 400 and r.json()["error"] == "NO_PRODUCT_ROWS", r.text
        assert "/clients/1/deals/1/products" in r.json()["error_description"]


def test_smart_process_item_rows_through_crm_item_productrow(stack):
    item = stack.http.post(f"{stack.api}/clients/1/items/128", json={"title": "Project"}).json()["result"]
    url = f"{stack.api}/clients/1/items/128/{item}/products"
    assert stack.http.get(url).json() == {"result": []}
    r = stack.http.put(url, json={"rows": [{"productName": "Design", "price": 1000, "quantity": 1},
                                           {"productName": "Build", "price": 500, "quantity": 3}]})
    assert r.status_code == 200, r.text
    assert r.json()["replaced"] == 0 and names(r.json()["result"], "productName") == ["Design", "Build"]
    assert r.json()["result"][0]["ownerType"] == "T80" and r.json()["result"][0]["ownerId"] == item
    design, build = (row["id"] for row in r.json()["result"])
    r = stack.http.patch(url, json={"update": [{"id": build, "quantity": 4}], "remove": [design]})
    assert r.status_code == 200, r.text
    assert [(row["id"], row["productName"], row["quantity"]) for row in r.json()["result"]] == [(build, "Build", 4)]
    assert stack.http.put(url, json={"rows": [{"PRODUCT_NAME": "x"}]}).json()["error"] == "INVALID_FIELD_NAME"
    assert names(stack.http.get(url).json()["result"], "productName") == ["Build"]


def test_rows_of_many_deals_in_batches_of_fifty(stack):
    deals = [new(stack, "deals") for _ in range(60)]
    for i, deal in enumerate(deals[:3]):
        stack.http.put(f"{stack.api}/clients/1/deals/{deal}/products",
                       json={"rows": [{"PRODUCT_NAME": f"P{i}", "PRICE": i + 1, "QUANTITY": 1}]})
    stack.emulator.reset_counters()
    r = stack.http.post(f"{stack.api}/clients/1/deals/products/get", json={"ids": [*deals, 999999]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["result"]) == {str(d) for d in deals}
    assert names(body["result"][str(deals[0])]) == ["P0"] and names(body["result"][str(deals[2])]) == ["P2"]
    assert body["result"][str(deals[10])] == []
    assert body["errors"] == {"999999": {"error": "NOT_FOUND", "error_description": "Not found"}}
    counters = stack.emulator.counters
    assert counters.by_method["batch"] == 2 and counters.requests == 2  # 61 reads: 50 + 11
    assert counters.batch_commands["crm.deal.productrows.get"] == 61
    bad = stack.http.post(f"{stack.api}/clients/1/deals/products/get", json={"ids": []})
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_IDS"
    assert stack.http.post(f"{stack.api}/clients/1/contacts/products/get", json={"ids": [1]}).status_code == 404


def test_rows_of_a_missing_deal_or_of_a_contact(stack):
    r = stack.http.get(f"{stack.api}/clients/1/deals/999999/products")
    assert r.status_code == 404 and r.json()["error"] == "NOT_FOUND"
    r = stack.http.get(f"{stack.api}/clients/1/contacts/1/products")
    assert r.status_code == 404 and r.json()["error"] == "UNKNOWN_ENTITY"
