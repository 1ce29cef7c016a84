"""Product rows of deals, leads and smart-process items over real HTTP against the emulator: PUT replaces
(and says so), PATCH keeps what it is not told to change, many deals' rows come back from batched reads."""

from __future__ import annotations

import pytest

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
