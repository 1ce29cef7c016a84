"""Pipelines, stages, dictionaries, currencies and stage history (bitrix24_emulator/catalog.py).

Shapes from https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-list.html (and the other
crm.status pages), https://apidocs.bitrix24.com/api-reference/crm/universal/category/crm-category-list.html
(and the other crm.category pages), https://apidocs.bitrix24.com/api-reference/crm/currency/crm-currency-list.html,
.../crm-currency-get.html, .../crm-currency-base-get.html and
https://apidocs.bitrix24.com/api-reference/crm/crm-stage-history-list.html; the deal and lead checks from
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-add.html, .../crm-deal-update.html and the
portal's own code as catalog.py and crm.py describe.
"""

from __future__ import annotations

from .conftest import make_api


def _stages(api, entity_id):
    return api("crm.status.list", {"filter": {"ENTITY_ID": entity_id}})


# ---- crm.status.* -----------------------------------------------------------------------------------

def test_status_list_of_the_default_pipeline_is_the_new_portals_eight_stages(api):
    status, body = _stages(api, "DEAL_STAGE")
    assert status == 200 and body["total"] == 8 and "next" not in body
    rows = body["result"]
    assert [r["STATUS_ID"] for r in rows] == ["NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING",
                                              "FINAL_INVOICE", "WON", "LOSE", "APOLOGY"]
    new = rows[0]
    assert set(new) == {"ID", "ENTITY_ID", "STATUS_ID", "NAME", "NAME_INIT", "SORT", "SYSTEM", "CATEGORY_ID",
                        "COLOR", "SEMANTICS", "EXTRA"}
    assert new["SORT"] == "10" and isinstance(new["ID"], str) and new["SYSTEM"] == "Y"
    assert new["CATEGORY_ID"] is None and new["SEMANTICS"] is None
    assert new["EXTRA"] == {"SEMANTICS": "process", "COLOR": "#39A8EF"}
    assert [(r["SEMANTICS"], r["EXTRA"]["SEMANTICS"]) for r in rows[5:]] == [
        ("S", "success"), ("F", "failure"), ("F", "apology")]
    assert rows[1]["NAME_INIT"] == "" and rows[1]["SYSTEM"] == "N"


def test_status_list_seeds_lead_statuses_and_dictionaries_and_orders_by_request(api):
    leads = _stages(api, "STATUS")[1]["result"]
    assert [r["STATUS_ID"] for r in leads] == ["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK"]
    assert [r["SEMANTICS"] for r in leads][-2:] == ["S", "F"]
    for entity_id, first in (("SOURCE", "CALL"), ("CONTACT_TYPE", "CLIENT"), ("COMPANY_TYPE", "CUSTOMER"),
                             ("INDUSTRY", "IT"), ("EMPLOYEES", "EMPLOYEES_1"), ("DEAL_TYPE", "SALE"),
                             ("HONORIFIC", "HNR_EN_1")):
        rows = _stages(api, entity_id)[1]["result"]
        assert rows[0]["STATUS_ID"] == first and "EXTRA" not in rows[0], entity_id
    desc = api.ok("crm.status.list", {"order": {"SORT": "DESC"}, "filter": {"ENTITY_ID": "DEAL_TYPE"}})
    assert [r["STATUS_ID"] for r in desc][0] == "SERVICE"
    status, body = api("crm.status.list", {"filter": {"ENTITY_ID": ["STATUS", "SOURCE"]}})
    assert (status, body["error"], body["error_description"]) == (400, "", "Filter by ENTITY_ID must be a string")


def test_status_add_prefixes_a_pipelines_stage_and_get_returns_it(api):
    api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Wholesale"}})
    new_id = api.ok("crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE_1", "STATUS_ID": "DECISION",
                                                  "NAME": "Decision", "SORT": 55, "COLOR": "#123456"}})
    assert isinstance(new_id, int)
    row = api.ok("crm.status.get", {"id": new_id})
    assert (row["STATUS_ID"], row["SYSTEM"], row["CATEGORY_ID"], row["SORT"]) == ("C1:DECISION", "N", "1", "55")
    kept = api.ok("crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE_1", "STATUS_ID": "C1:TALKS",
                                                "NAME": "Talks", "SORT": 15}})
    assert api.ok("crm.status.get", {"id": kept})["STATUS_ID"] == "C1:TALKS"
    assert "C1:DECISION" in [r["STATUS_ID"] for r in _stages(api, "DEAL_STAGE_1")[1]["result"]]


def test_status_add_refusals(api):
    status, body = api("crm.status.add", {"fields": {"NAME": "x"}})
    assert (status, body["error"]) == (400, "")
    assert body["error_description"] == "The field ENTITY_ID is required.\nThe field STATUS_ID is required."
    assert api("crm.status.add", {"fields": {"ENTITY_ID": "NOPE", "STATUS_ID": "A", "NAME": "a"}})[1][
        "error_description"] == "Specified entity type is not supported."
    assert api("crm.status.add", {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "A"}})[1][
        "error_description"] == "The field Title is required."
    status, body = api("crm.status.add", {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "CALL", "NAME": "Call"}})
    assert (status, body["error"], body["error_description"]) == (
        400, "ERROR_CORE", "The specified status ID already exists.")
    status, body = api("crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LATE", "NAME": "L",
                                                     "SORT": 65}})
    assert status == 400 and body["error_description"].startswith("Cannot create more stages after the final stage")
    # A failure stage may follow WON.
    assert api("crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LATE", "NAME": "L",
                                             "SORT": 90, "SEMANTICS": "F"}})[0] == 200


def test_status_update_and_delete(api):
    source = api.ok("crm.status.add", {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "FAIR", "NAME": "Fair"}})
    assert api.ok("crm.status.update", {"id": source, "fields": {"NAME": "Trade fair", "SORT": 5}}) is True
    row = api.ok("crm.status.get", {"id": source})
    assert (row["NAME"], row["SORT"]) == ("Trade fair", "5")
    assert api.ok("crm.status.delete", {"id": source}) is True
    status, body = api("crm.status.get", {"id": source})
    assert (status, body["error"], body["error_description"]) == (400, "", "CRM Status is not found.")
    assert api("crm.status.update", {"id": source, "fields": {"NAME": "x"}})[1][
        "error_description"] == "Status is not found."
    won = next(r for r in _stages(api, "DEAL_STAGE")[1]["result"] if r["STATUS_ID"] == "WON")
    status, body = api("crm.status.delete", {"id": won["ID"]})
    assert status == 400 and body["error_description"] == \
        'CRM System Status can be deleted only if parameter FORCED is specified and equal to "Y".'
    api.ok("crm.deal.add", {"fields": {"STAGE_ID": "WON"}})
    status, body = api("crm.status.delete", {"id": won["ID"], "params": {"FORCED": "Y"}})
    assert (status, body["error_description"]) == (400, "There are active items in this status.")
    apology = next(r for r in _stages(api, "DEAL_STAGE")[1]["result"] if r["STATUS_ID"] == "APOLOGY")
    assert api.ok("crm.status.delete", {"id": apology["ID"]}) is True
    assert _stages(api, "DEAL_STAGE")[1]["total"] == 7


def test_entity_types_and_entity_items(api):
    api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Newest"}})
    types = {t["ID"]: t for t in api.ok("crm.status.entity.types")}
    assert types["DEAL_STAGE"]["CATEGORY_ID"] == 0 and types["DEAL_STAGE"]["ENTITY_TYPE_ID"] == 2
    assert types["DEAL_STAGE_1"]["PREFIX"] == "C1" and types["DEAL_STAGE_1"]["CATEGORY_ID"] == "1"
    assert types["DEAL_STAGE_1"]["SEMANTIC_INFO"]["START_FIELD"] == "C1:NEW"
    assert types["STATUS"]["SEMANTIC_INFO"]["FINAL_SUCCESS_FIELD"] == "CONVERTED"
    spa = types["DYNAMIC_128_STAGE_1"]
    assert (spa["PREFIX"], spa["CATEGORY_ID"], spa["IS_DEFAULT_CATEGORY"]) == ("DT128_1", 1, True)
    assert types["SOURCE"] == {"ID": "SOURCE", "NAME": "Sources"}
    items = api.ok("crm.status.entity.items", {"entityId": "DEAL_STAGE_1"})
    assert items[0] == {"NAME": "New", "SORT": 10, "STATUS_ID": "C1:NEW"} and len(items) == 8
    status, body = api("crm.status.entity.items", {})
    assert (status, body["error_description"]) == (400, "The parameter entityId is not defined or invalid.")
    assert set(api.ok("crm.status.fields")["STATUS_ID"]) >= {"type", "isRequired", "isReadOnly", "title"}


# ---- crm.category.* ---------------------------------------------------------------------------------

def test_category_list_of_deals_has_the_default_pipeline_zero(api):
    status, body = api("crm.category.list", {"entityTypeId": 2})
    assert status == 200 and body["total"] == 1 and "next" not in body
    assert body["result"] == {"categories": [{"id": 0, "name": "General", "sort": 100, "entityTypeId": 2,
                                              "isDefault": "Y"}]}


def test_category_add_creates_its_stages_and_get_update_delete(api):
    added = api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Wholesale", "sort": -5}})
    assert added == {"category": {"id": 1, "name": "Wholesale", "sort": 0, "entityTypeId": 2, "isDefault": "N",
                                  "originId": "", "originatorId": ""}}
    assert [r["STATUS_ID"] for r in _stages(api, "DEAL_STAGE_1")[1]["result"]][:2] == ["C1:NEW", "C1:PREPARATION"]
    updated = api.ok("crm.category.update", {"entityTypeId": 2, "id": 1, "fields": {"name": "Retail", "sort": 700}})
    assert (updated["category"]["name"], updated["category"]["sort"]) == ("Retail", 700)
    assert api.ok("crm.category.get", {"entityTypeId": 2, "id": 1})["category"]["name"] == "Retail"
    assert api.ok("crm.category.list", {"entityTypeId": 2})["categories"][-1]["id"] == 1  # sorted by sort
    api.ok("crm.deal.add", {"fields": {"CATEGORY_ID": 1}})
    status, body = api("crm.category.delete", {"entityTypeId": 2, "id": 1})
    assert (status, body["error"], body["error_description"]) == (400, 0, "Deals related to the funnel Retail found")
    status, body = api("crm.category.delete", {"entityTypeId": 2, "id": 0})
    assert (status, body["error_description"]) == (400, "Default deal category cannot be deleted")
    other = api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Empty"}})["category"]["id"]
    assert api.ok("crm.category.delete", {"entityTypeId": 2, "id": other}) is None
    assert _stages(api, f"DEAL_STAGE_{other}")[1]["total"] == 0
    status, body = api("crm.category.get", {"entityTypeId": 2, "id": other})
    assert (status, body["error"], body["error_description"]) == (400, "NOT_FOUND", "Element not found")


def test_category_refusals_and_smart_process_defaults(api):
    status, body = api("crm.category.list", {"entityTypeId": 1})
    assert (status, body["error"], body["error_description"]) == (
        400, "ENTITY_TYPE_NOT_SUPPORTED", "Entity type LEAD is not supported")
    status, body = api("crm.category.list", {"entityTypeId": 999})
    assert (status, body["error"]) == (400, "NOT_FOUND")
    status, body = api("crm.category.add", {"entityTypeId": 2, "fields": {"sort": 10}})
    assert (status, body["error"], body["error_description"]) == (400, 0, "Field 'NAME' is required")
    spa = api.ok("crm.category.list", {"entityTypeId": 128})["categories"]
    assert spa == [{"id": 1, "name": "General", "sort": 500, "entityTypeId": 128, "isDefault": "Y"}]
    new = api.ok("crm.category.add", {"entityTypeId": 128, "fields": {"name": "Second", "isDefault": "Y"}})
    new_id = new["category"]["id"]
    assert new_id > 1 and new["category"]["isDefault"] == "Y"
    assert api.ok("crm.category.get", {"entityTypeId": 128, "id": 1})["category"]["isDefault"] == "N"
    assert _stages(api, f"DYNAMIC_128_STAGE_{new_id}")[1]["result"][0]["STATUS_ID"] == f"DT128_{new_id}:NEW"
    status, body = api("crm.category.delete", {"entityTypeId": 128, "id": new_id})
    assert (status, body["error"], body["error_description"]) == (400, "BX_ERROR", "This funnel is the default funnel")
    assert api.ok("crm.category.list", {"entityTypeId": 3})["categories"][0]["isDefault"] == "Y"
    fields = api.ok("crm.category.fields", {"entityTypeId": 2})["fields"]
    assert fields["isDefault"]["isReadOnly"] is True and fields["name"]["upperName"] == "NAME"


# ---- crm.currency.* ---------------------------------------------------------------------------------

def test_currencies_of_a_new_portal_are_all_strings(api):
    status, body = api("crm.currency.list")
    assert status == 200 and body["total"] == 0  # "currently always has a value of 0"
    rows = body["result"]
    assert [r["CURRENCY"] for r in rows] == ["RUB", "USD", "EUR"]
    rub = rows[0]
    assert (rub["BASE"], rub["AMOUNT"], rub["AMOUNT_CNT"], rub["SORT"], rub["DECIMALS"]) == (
        "Y", "1.0000", "1", "100", "2")
    assert all(isinstance(v, str) or v is None for r in rows for v in r.values()) and "LANG" not in rub
    assert api.ok("crm.currency.base.get") == "RUB"
    usd = api.ok("crm.currency.get", {"id": "USD"})
    assert usd["BASE"] == "N" and usd["LANG"]["en"]["THOUSANDS_VARIANT"] == "C"
    status, body = api("crm.currency.get", {"id": "XYZ"})
    assert (status, body["error"], body["error_description"]) == (400, "", "Not found")
    assert [r["CURRENCY"] for r in api.ok("crm.currency.list", {"order": {"CURRENCY": "desc"}})] == [
        "USD", "RUB", "EUR"]


def test_currency_writes_and_a_usd_portal():
    api = make_api(currency="USD")
    assert api.ok("crm.currency.base.get") == "USD"
    assert [r["CURRENCY"] for r in api.ok("crm.currency.list")] == ["USD", "RUB", "EUR"]
    assert api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {}})})["CURRENCY_ID"] == "USD"
    assert api.ok("crm.currency.add", {"fields": {"CURRENCY": "KZT", "AMOUNT_CNT": 100, "AMOUNT": 0.2}}) == "KZT"
    assert api.ok("crm.currency.get", {"id": "KZT"})["AMOUNT"] == "0.2000"
    assert api.ok("crm.currency.update", {"id": "KZT", "fields": {"AMOUNT": "0.21"}}) is True
    status, body = api("crm.currency.delete", {"id": "USD"})
    assert (status, body["error_description"]) == (400, "Cannot delete base currency.")
    assert api.ok("crm.currency.base.set", {"id": "EUR"}) is True
    assert api.ok("crm.currency.base.get") == "EUR"
    assert api.ok("crm.currency.delete", {"id": "USD"}) is True
    assert "USD" not in [r["CURRENCY"] for r in api.ok("crm.currency.list")]


# ---- what a portal does with deal and lead stages, pipelines and currencies ---------------------------

def test_deal_add_puts_an_unknown_stage_or_pipeline_at_the_default(api):
    deal = api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {"STAGE_ID": "NOPE"}})})
    assert deal["STAGE_ID"] == "NEW" and deal["IS_NEW"] == "Y"
    deal = api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {"CATEGORY_ID": 7}})})
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"]) == ("0", "NEW")
    api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "B2B"}})
    # Another pipeline's final stage: the first stage of this pipeline with the same semantics.
    deal = api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {"CATEGORY_ID": 1, "STAGE_ID": "WON"}})})
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"], deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == (
        "1", "C1:WON", "S", "Y")


def test_deal_update_ignores_a_stage_of_another_pipeline_and_stamps_moves(api, clock):
    api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "B2B"}})
    deal_id = api.ok("crm.deal.add", {"fields": {"TITLE": "x"}})
    created = api.ok("crm.deal.get", {"id": deal_id})
    assert (created["MOVED_BY_ID"], created["MOVED_TIME"]) == ("1", "2026-11-27T11:00:00+03:00")
    clock.advance(60)
    assert api.ok("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "C1:WON", "TITLE": "y"}}) is True
    deal = api.ok("crm.deal.get", {"id": deal_id})
    assert (deal["STAGE_ID"], deal["TITLE"], deal["MOVED_TIME"]) == ("NEW", "y", "2026-11-27T11:00:00+03:00")
    api.ok("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "EXECUTING"}})
    deal = api.ok("crm.deal.get", {"id": deal_id})
    assert (deal["STAGE_ID"], deal["MOVED_TIME"], deal["IS_NEW"]) == ("EXECUTING", "2026-11-27T11:01:00+03:00", "N")
    assert api.ok("crm.deal.fields")["MOVED_TIME"]["isReadOnly"] is True


def test_crm_item_update_moves_a_deal_to_another_pipeline(api):
    """crm.deal.update cannot change CATEGORY_ID; crm.item.update with categoryId can, as the STAGE_ID entry of
    https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html says."""
    api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": "B2B"}})
    deal_id = api.ok("crm.deal.add", {"fields": {"TITLE": "x"}})
    moved = api.ok("crm.item.update", {"entityTypeId": 2, "id": deal_id,
                                       "fields": {"categoryId": 1, "stageId": "C1:PREPARATION"}})["item"]
    assert (moved["categoryId"], moved["stageId"]) == (1, "C1:PREPARATION")
    deal = api.ok("crm.deal.get", {"id": deal_id})
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"], deal["IS_NEW"]) == ("1", "C1:PREPARATION", "N")
    # without a stage (or with one of another pipeline): the new pipeline's first stage of the same semantics
    moved = api.ok("crm.item.update", {"entityTypeId": 2, "id": deal_id, "fields": {"categoryId": 0}})["item"]
    assert (moved["categoryId"], moved["stageId"]) == (0, "NEW")
    moved = api.ok("crm.item.update", {"entityTypeId": 2, "id": deal_id,
                                       "fields": {"categoryId": 1, "stageId": "WON"}})["item"]
    assert (moved["categoryId"], moved["stageId"]) == (1, "C1:WON")
    # an unknown pipeline leaves the deal where it is
    moved = api.ok("crm.item.update", {"entityTypeId": 2, "id": deal_id, "fields": {"categoryId": 9}})["item"]
    assert (moved["categoryId"], moved["stageId"]) == (1, "C1:WON")
    history = api.ok("crm.stagehistory.list", {"entityTypeId": 2, "filter": {"OWNER_ID": deal_id}})["items"]
    assert [(h["CATEGORY_ID"], h["STAGE_ID"]) for h in history] == [("0", "NEW"), ("1", "C1:PREPARATION"),
                                                                     ("0", "NEW"), ("1", "C1:WON")]


def test_custom_stage_semantics_come_from_the_dictionary(api):
    api.ok("crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "GONE", "NAME": "Gone",
                                         "SORT": 90, "SEMANTICS": "F"}})
    deal = api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {"STAGE_ID": "GONE"}})})
    assert (deal["STAGE_ID"], deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == ("GONE", "F", "Y")


def test_lead_status_that_is_no_lead_status_is_replaced_or_ignored(api):
    lead_id = api.ok("crm.lead.add", {"fields": {"TITLE": "L", "STATUS_ID": "WON"}})
    assert api.ok("crm.lead.get", {"id": lead_id})["STATUS_ID"] == "NEW"
    api.ok("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "EXECUTING"}})
    assert api.ok("crm.lead.get", {"id": lead_id})["STATUS_ID"] == "NEW"
    api.ok("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "JUNK"}})
    assert api.ok("crm.lead.get", {"id": lead_id})["STATUS_SEMANTIC_ID"] == "F"


def test_an_unknown_currency_is_refused_unless_currency_check_is_off(api):
    for entity, fields in (("deal", {}), ("lead", {"TITLE": "L"}), ("company", {"TITLE": "C"})):
        status, body = api(f"crm.{entity}.add", {"fields": {**fields, "CURRENCY_ID": "XYZ"}})
        assert (status, body["error"], body["error_description"]) == (
            400, "", 'Invalid value for the "Currency" field'), entity
    assert api.emu.records["deal"] == {} and api.emu.records["company"] == {}
    deal_id = api.ok("crm.deal.add", {"fields": {"CURRENCY_ID": "EUR"}})
    status, body = api("crm.deal.update", {"id": deal_id, "fields": {"CURRENCY_ID": "XYZ", "TITLE": "no"}})
    assert status == 400 and api.ok("crm.deal.get", {"id": deal_id})["CURRENCY_ID"] == "EUR"
    lax = make_api(currency_check=False)
    deal_id = lax.ok("crm.deal.add", {"fields": {"CURRENCY_ID": "XYZ"}})
    assert lax.ok("crm.deal.get", {"id": deal_id})["CURRENCY_ID"] == "XYZ"


# ---- crm.stagehistory.list ----------------------------------------------------------------------------

def test_stage_history_records_creation_and_moves_as_strings(api):
    deal_id = api.ok("crm.deal.add", {"fields": {}})
    api.ok("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "PREPARATION"}})
    api.ok("crm.deal.update", {"id": deal_id, "fields": {"TITLE": "no move"}})
    api.ok("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "LOSE"}})
    status, body = api("crm.stagehistory.list", {"entityTypeId": 2})
    assert status == 200 and body["total"] == 3
    items = body["result"]["items"]
    assert items[0] == {"ID": "1", "TYPE_ID": "1", "OWNER_ID": str(deal_id), "CREATED_TIME": "2026-11-27T11:00:00+03:00",
                        "CATEGORY_ID": "0", "STAGE_SEMANTIC_ID": "P", "STAGE_ID": "NEW"}
    assert [(i["TYPE_ID"], i["STAGE_ID"], i["STAGE_SEMANTIC_ID"]) for i in items[1:]] == [
        ("2", "PREPARATION", "P"), ("3", "LOSE", "F")]
    lead_id = api.ok("crm.lead.add", {"fields": {"TITLE": "L"}})
    api.ok("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "CONVERTED"}})
    leads = api.ok("crm.stagehistory.list", {"entityTypeId": 1, "order": {"ID": "DESC"},
                                             "select": ["ID", "TYPE_ID", "STATUS_ID"]})["items"]
    assert leads == [{"ID": "5", "TYPE_ID": "3", "STATUS_ID": "CONVERTED"}, {"ID": "4", "TYPE_ID": "1",
                                                                            "STATUS_ID": "NEW"}]
    filtered = api.ok("crm.stagehistory.list", {"entityTypeId": 2, "filter": {">=TYPE_ID": 2, "OWNER_ID": deal_id}})
    assert [i["STAGE_ID"] for i in filtered["items"]] == ["PREPARATION", "LOSE"]


def test_stage_history_pages_by_fifty_and_refuses_what_a_portal_refuses():
    api = make_api(limits=False)
    for _ in range(51):
        api.ok("crm.deal.add", {"fields": {}})
    status, body = api("crm.stagehistory.list", {"entityTypeId": 2})
    assert (len(body["result"]["items"]), body["next"], body["total"]) == (50, 50, 51)
    assert len(api("crm.stagehistory.list", {"entityTypeId": 2, "start": 50})[1]["result"]["items"]) == 1
    status, body = api("crm.stagehistory.list", {"entityTypeId": 3})
    assert (status, body["error"], body["error_description"]) == (
        400, "ENTITY_TYPE_NOT_SUPPORTED", "Entity type CONTACT is not supported")
    status, body = api("crm.stagehistory.list", {"entityTypeId": 2, "filter": {"TITLE": "x"}})
    assert (status, body["error"], body["error_description"]) == (
        400, "INVALID_ARG_VALUE", "Invalid filter: field 'TITLE' is not allowed in filter")
    status, body = api("crm.stagehistory.list", {"entityTypeId": 2, "order": {"ID": "UP"}})
    assert (status, body["error"]) == (400, "INVALID_ARG_VALUE")
    assert body["error_description"] == "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field 'ID'"
    assert api("crm.stagehistory.list", {"entityTypeId": 2, "order": {"STATUS_ID": "ASC"}})[1]["error_description"] \
        == "Invalid order: field 'STATUS_ID' is not allowed in order"
    assert api.ok("crm.stagehistory.list", {"entityTypeId": 128}) == {"items": []}


# ---- field sets ---------------------------------------------------------------------------------------

def test_field_sets_carry_the_documented_fields(api):
    deal = api.ok("crm.deal.fields")
    assert deal["MOVED_BY_ID"]["type"] == "user" and deal["MOVED_BY_ID"]["isReadOnly"] is True
    assert deal["LOCATION_ID"] == {"type": "location", "isRequired": False, "isReadOnly": False,
                                   "isImmutable": False, "isMultiple": False, "isDynamic": False, "title": "Location"}
    lead = api.ok("crm.lead.fields")
    assert lead["ADDRESS_CITY"]["title"] == "City" and lead["ADDRESS_LOC_ADDR_ID"]["type"] == "integer"
    assert lead["TITLE"]["isRequired"] is False  # as crm-lead-fields.md and a real portal show
    company = api.ok("crm.company.fields")
    assert company["REG_ADDRESS_CITY"]["title"] == "Legal Address City" and "ADDRESS_COUNTRY_CODE" in company
    company_id = api.ok("crm.company.add", {"fields": {"TITLE": "Acme", "REG_ADDRESS_CITY": "Berlin"}})
    assert api.ok("crm.company.get", {"id": company_id})["REG_ADDRESS_CITY"] == "Berlin"
