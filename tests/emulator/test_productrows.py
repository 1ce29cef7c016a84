"""Product rows: the legacy crm.deal/lead.productrows.{get,set} and crm.item.productrow.*, over the same rows.

Sources: https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-get.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-set.html,
https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-productrows-set.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-add.html (the 80000 example),
.../crm-item-productrow-list.html, .../crm-item-productrow-set.html, .../crm-item-productrow-delete.html,
.../crm-item-productrow-fields.html; a real list answer in leshchenko1979/fast_bitrix24
(tests/real_responses/crm_item_productrow_list.py: key order, "ownerType": "Tb3").
"""

from __future__ import annotations

from bitrix24_emulator import productrows

from .conftest import make_api

DOCS_ROW = {"productId": 9621, "productName": "iphone 14", "price": 80000, "quantity": 2, "discountTypeId": 2,
            "discountRate": 20, "taxRate": 20, "taxIncluded": "Y", "measureCode": 796, "sort": 10}


def test_add_fills_in_the_derived_prices_of_the_docs_example(api):
    deal = api.ok("crm.deal.add", {"fields": {"TITLE": "d"}})
    row = api.ok("crm.item.productrow.add", {"fields": {"ownerType": "D", "ownerId": deal, **DOCS_ROW}})["productRow"]
    assert row == {"id": 1, "ownerId": deal, "ownerType": "D", "productId": 9621, "productName": "iphone 14",
                   "price": 80000, "priceAccount": 80000, "priceExclusive": 66666.67, "priceNetto": 83333.34,
                   "priceBrutto": 100000.01, "quantity": 2, "discountTypeId": 2, "discountRate": 20,
                   "discountSum": 16666.67, "taxRate": 20, "taxIncluded": "Y", "customized": "Y", "measureCode": 796,
                   "measureName": "", "sort": 10, "xmlId": "", "type": 1}
    assert isinstance(row["id"], int) and isinstance(row["priceNetto"], float)
    # Not manual: the deal's amount follows its rows (price x quantity).
    assert api.ok("crm.deal.get", {"id": deal})["OPPORTUNITY"] == "160000.00"


def test_legacy_set_replaces_rows_and_get_has_mixed_types(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    assert api.ok("crm.deal.productrows.set", {"id": deal, "rows": [
        {"PRODUCT_NAME": "B", "PRICE": 899.1, "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 10, "TAX_INCLUDED": "Y",
         "SORT": 20},
        {"PRICE": "100", "QUANTITY": 3, "SORT": 10}]}) is True
    rows = api.ok("crm.deal.productrows.get", {"id": deal})
    assert [r["SORT"] for r in rows] == [10, 20]
    plain, discounted = rows
    assert plain["ID"] == "2" and plain["OWNER_ID"] == str(deal) and plain["OWNER_TYPE"] == "D"
    assert plain["PRODUCT_NAME"] == "[2]" and plain["PRODUCT_ID"] == 0 and plain["TAX_RATE"] is None
    assert plain["QUANTITY"] == 3 and plain["PRICE_ACCOUNT"] == "100.00" and plain["TAX_INCLUDED"] == "N"
    assert (discounted["PRICE"], discounted["PRICE_EXCLUSIVE"], discounted["PRICE_NETTO"]) == (899.1, 899.1, 999)
    assert discounted["DISCOUNT_SUM"] == 99.9 and discounted["PRICE_ACCOUNT"] == "899.10"
    assert api.ok("crm.deal.get", {"id": deal})["OPPORTUNITY"] == "1199.10"
    # set replaces every row; an empty set wipes them and the amount follows.
    api.ok("crm.deal.productrows.set", {"id": deal, "rows": [{"PRODUCT_NAME": "C", "PRICE": 5}]})
    assert [r["PRODUCT_NAME"] for r in api.ok("crm.deal.productrows.get", {"id": deal})] == ["C"]
    api.ok("crm.deal.productrows.set", {"id": deal, "rows": []})
    assert api.ok("crm.deal.productrows.get", {"id": deal}) == []
    assert api.ok("crm.deal.get", {"id": deal})["OPPORTUNITY"] == "0.00"


def test_a_manual_amount_is_left_alone(api):
    lead = api.ok("crm.lead.add", {"fields": {"OPPORTUNITY": 7, "IS_MANUAL_OPPORTUNITY": "Y"}})
    api.ok("crm.lead.productrows.set", {"id": lead, "rows": [{"PRICE": 50}]})
    assert api.ok("crm.lead.get", {"id": lead})["OPPORTUNITY"] == "7.00"
    assert api.ok("crm.lead.productrows.get", {"id": lead})[0]["OWNER_TYPE"] == "L"


def test_legacy_refusals(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    assert api("crm.deal.productrows.get", {"id": 0}) == (
        400, {"error": "", "error_description": "The parameter id is invalid or not defined."})
    assert api("crm.lead.productrows.set", {"id": 77, "rows": []}) == (400, {"error": "", "error_description": "Not found"})
    status, body = api("crm.deal.productrows.set", {"id": deal, "rows": [
        {"PRICE": 0, "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 100}]})
    assert status == 400 and body == {"error": "ERROR_CORE", "error_description":
                                      "Discount Sum (DISCOUNT_SUM) is required if Percentage Discount Type "
                                      "(DISCOUNT_TYPE_ID) is defined and Discount Rate (DISCOUNT_RATE) is 100%<br>"}
    assert api("crm.deal.productrows.set", {"id": deal, "rows": [{"DISCOUNT_TYPE_ID": 1}]})[1][
        "error_description"].startswith("Discount Sum (DISCOUNT_SUM) is required if Monetary")
    assert api("crm.deal.productrows.set", {"id": deal, "rows": [{"DISCOUNT_TYPE_ID": 2}]})[1][
        "error_description"].startswith("Discount Rate (DISCOUNT_RATE) is required")


def test_both_families_see_the_same_rows_and_deleting_the_deal_drops_them(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    api.ok("crm.deal.productrows.set", {"id": deal, "rows": [{"PRODUCT_NAME": "A", "PRICE": 10}]})
    status, body = api("crm.item.productrow.list", {"filter": {"=ownerType": "D", "=ownerId": deal}})
    assert status == 200 and body["total"] == 1
    row = body["result"]["productRows"][0]
    assert (row["productName"], row["price"], row["ownerType"]) == ("A", 10, "D")
    api.ok("crm.item.productrow.update", {"id": row["id"], "fields": {"quantity": 4}})
    assert api.ok("crm.deal.productrows.get", {"id": deal})[0]["QUANTITY"] == 4
    assert api.ok("crm.deal.get", {"id": deal})["OPPORTUNITY"] == "40.00"
    assert api.ok("crm.item.productrow.delete", {"id": row["id"]}) is None
    assert api("crm.item.productrow.get", {"id": row["id"]}) == (
        400, {"error": "NOT_FOUND", "error_description": "Item not found"})
    api.ok("crm.item.productrow.add", {"fields": {"ownerType": "D", "ownerId": deal, "price": 1}})
    api.ok("crm.deal.delete", {"id": deal})
    assert api.emu.state(productrows).rows == {}


def test_item_productrow_set_and_smart_process_owners():
    api = make_api(smart_processes={179: "Waste"})
    item = api.ok("crm.item.add", {"entityTypeId": 179, "fields": {"title": "x"}})["item"]["id"]
    result = api.ok("crm.item.productrow.set", {"ownerType": "Tb3", "ownerId": item, "productRows": [
        {"productName": "a", "price": 2, "quantity": 0.5, "sort": 20}, {"productName": "b", "price": 3}]})
    assert [(r["productName"], r["ownerType"], r["quantity"]) for r in result["productRows"]] == [
        ("b", "Tb3", 1), ("a", "Tb3", 0.5)]
    assert api.ok("crm.item.get", {"entityTypeId": 179, "id": item})["item"]["opportunity"] == 4.0
    listed = api.ok("crm.item.productrow.list", {"filter": {"=ownerType": "Tb3", "=ownerId": item, ">price": 2}})
    assert [r["productName"] for r in listed["productRows"]] == ["b"]
    result = api.ok("crm.item.productrow.set", {"ownerType": "Tb3", "ownerId": item, "productRows": []})
    assert result == {"productRows": []}


def test_item_productrow_refusals(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    assert api("crm.item.productrow.list", {"filter": {"=ownerId": deal}}) == (
        400, {"error": "REQUIRED_ARG_MISSING", "error_description": "Argument '=ownerType' is required"})
    assert api("crm.item.productrow.list", {"filter": {"=ownerType": "D"}})[1]["error_description"] == \
        "Argument '=ownerId' is required"
    assert api("crm.item.productrow.add", {"fields": {"ownerType": "D", "ownerId": 999}}) == (
        400, {"error": "OWNER_NOT_FOUND", "error_description": "Owner was not found"})
    assert api("crm.item.productrow.add", {"fields": {"ownerType": "C", "ownerId": 1}}) == (
        400, {"error": "ENTITY_TYPE_NOT_SUPPORTED", "error_description": "Entity type CONTACT is not supported"})
    assert api("crm.item.productrow.add", {})[1] == {"error": "100", "error_description":
                                                      "Could not find value for parameter {fields}"}
    row = api.ok("crm.item.productrow.add", {"fields": {"ownerType": "D", "ownerId": deal}})["productRow"]
    assert api("crm.item.productrow.update", {"id": row["id"], "fields": {"priceNetto": 5}})[1]["error"] == \
        "INVALID_ARG_VALUE"


def test_fields_describe_the_row(api):
    fields = api.ok("crm.item.productrow.fields")["fields"]
    assert fields["ownerType"] == {"type": "string", "isRequired": True, "isReadOnly": False, "isImmutable": True,
                                   "isMultiple": False, "isDynamic": False, "title": "Owner Type"}
    assert fields["priceNetto"]["isReadOnly"] is True and "quantity" in fields
