"""Pipelines, product rows and linked contacts through app.test_client() with the portal mocked by ``responses``:
the exact Bitrix24 methods and the bodies the portal receives (batch commands decoded as PHP reads them)."""

from __future__ import annotations

import pytest
from flask_bitrix24.services.wire import parse_php_form

from tests.conftest import portal_url, sent_pairs, sent_params

API = "/api/bitrix/clients/1"


def batch_answer(results: dict, errors: dict | None = None) -> dict:
    return {"result": {"result": results, "result_error": errors or [], "result_total": [], "result_next": [],
                       "result_time": []}}


def commands(call) -> dict:
    """A batch request's commands: {key: (method, params as PHP reads them)}."""
    out = {}
    for key, command in sent_params(call)["cmd"].items():
        method, _, query = command.partition("?")
        out[key] = (method, parse_php_form(query))
    return out


def methods(portal) -> list[str]:
    return [call.request.url.rsplit("/", 1)[-1].removesuffix(".json") for call in portal.calls]


STAGES = [{"ID": "2", "STATUS_ID": "NEW", "NAME": "New", "SORT": "10", "COLOR": "#39A8EF", "SEMANTICS": None},
          {"ID": "1", "STATUS_ID": "WON", "NAME": "Won", "SORT": "60", "COLOR": "#7BD500", "SEMANTICS": "S"},
          {"ID": "3", "STATUS_ID": "LOSE", "NAME": "Lost", "SORT": "70", "COLOR": "#FF5752", "SEMANTICS": "F"}]
C3 = [{**row, "STATUS_ID": f"C3:{row['STATUS_ID']}"} for row in STAGES]


# ---- pipelines and stages -------------------------------------------------------------------------------

def test_pipelines_one_category_list_then_every_pipelines_stages_in_one_batch(configured, portal):
    portal.post(portal_url("crm.category.list"), json={"result": {"categories": [
        {"id": 0, "name": "General", "sort": 100, "entityTypeId": 2, "isDefault": "Y"},
        {"id": 3, "name": "Wholesale", "sort": 200, "entityTypeId": 2, "isDefault": "N"}]}, "total": 2})
    # stages come back out of order: we sort them by SORT
    portal.post(portal_url("batch"), json=batch_answer({"0": list(reversed(STAGES)), "3": C3}))
    r = configured.get(f"{API}/deals/pipelines")
    assert r.status_code == 200, r.get_json()
    assert methods(portal) == ["crm.category.list", "batch"]
    assert sent_params(portal.calls[0]) == {"entityTypeId": "2"}
    assert commands(portal.calls[1]) == {
        "0": ("crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}, "order": {"SORT": "ASC"}}),
        "3": ("crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_3"}, "order": {"SORT": "ASC"}})}
    general, wholesale = r.get_json()["result"]
    assert general == {"id": 0, "name": "General", "sort": 100, "is_default": True, "entity_id": "DEAL_STAGE",
                       "stage_prefix": "", "stages": [
                           {"id": "NEW", "name": "New", "sort": 10, "color": "#39A8EF", "semantics": "process"},
                           {"id": "WON", "name": "Won", "sort": 60, "color": "#7BD500", "semantics": "won"},
                           {"id": "LOSE", "name": "Lost", "sort": 70, "color": "#FF5752", "semantics": "lost"}]}
    assert wholesale["stage_prefix"] == "C3:" and [s["id"] for s in wholesale["stages"]] == ["C3:NEW", "C3:WON",
                                                                                             "C3:LOSE"]


@pytest.mark.parametrize("category_id", ["abc", {"a": 1}, "1.0", 1.5, True, -1, "²"])
def test_a_pipeline_id_the_portal_garbles_is_a_502_portal_error(configured, portal, category_id):
    portal.post(portal_url("crm.category.list"), json={"result": {"categories": [{"id": category_id}]}})
    r = configured.get(f"{API}/deals/pipelines")
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_ERROR", r.get_json()
    assert "crm.category.list" in r.get_json()["error_description"] and methods(portal) == ["crm.category.list"]


@pytest.mark.parametrize("category_id", ["abc", [1], {"a": 1}, "1.0", 1.5, True, "²"])
def test_a_deal_pipeline_the_portal_garbles_is_a_502_and_nothing_is_written(configured, portal, category_id):
    portal.post(portal_url("crm.deal.get"), json={"result": {"ID": "5", "CATEGORY_ID": category_id}})
    r = configured.patch(f"{API}/deals/5", json={"STAGE_ID": "NEW"})
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_ERROR", r.get_json()
    assert methods(portal) == ["crm.deal.get"]


def test_odd_semantics_in_status_rows_read_as_in_progress(configured, portal):
    rows = [{"STATUS_ID": "NEW", "SEMANTICS": ["S"]}, {"STATUS_ID": "X", "SEMANTICS": {"x": 1}}]
    portal.post(portal_url("crm.status.list"), json={"result": rows})
    r = configured.get(f"{API}/leads/statuses")
    assert r.status_code == 200 and [s["semantics"] for s in r.get_json()["result"]] == ["process", "process"]
    portal.post(portal_url("crm.category.list"), json={"result": {"categories": [{"id": "0"}]}})
    portal.post(portal_url("batch"), json=batch_answer({"0": rows}))
    r = configured.get(f"{API}/deals/pipelines")
    assert r.status_code == 200 and r.get_json()["result"][0]["stages"][0]["semantics"] == "process"


@pytest.mark.parametrize("value", ["²", "①", "٣", "0٣"])
def test_a_pipeline_id_of_non_ascii_digits_is_a_400_before_the_portal(configured, portal, value):
    r = configured.post(f"{API}/deals", json={"TITLE": "x", "CATEGORY_ID": value})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_CATEGORY", r.get_json()
    r = configured.patch(f"{API}/deals/1", json={"CATEGORY_ID": value})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_CATEGORY", r.get_json()
    r = configured.put(f"{API}/deals/1/pipeline", json={"CATEGORY_ID": value})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_CATEGORY", r.get_json()
    assert len(portal.calls) == 0


def test_lead_statuses_and_sources_read_their_dictionaries(configured, portal):
    portal.post(portal_url("crm.status.list"), json={"result": STAGES})
    assert configured.get(f"{API}/leads/statuses").get_json()["result"][1]["semantics"] == "won"
    assert configured.get(f"{API}/leads/sources").get_json()["result"][0] == {"id": "NEW", "name": "New", "sort": 10}
    assert [sent_params(c) for c in portal.calls] == [
        {"filter": {"ENTITY_ID": "STATUS"}, "order": {"SORT": "ASC"}},
        {"filter": {"ENTITY_ID": "SOURCE"}, "order": {"SORT": "ASC"}}]


def test_deal_create_in_pipeline_3_sends_the_full_stage_id(configured, portal):
    portal.post(portal_url("crm.status.list"), json={"result": C3})
    portal.post(portal_url("crm.deal.add"), json={"result": 9})
    r = configured.post(f"{API}/deals", json={"TITLE": "T", "CATEGORY_ID": 3, "STAGE_ID": "NEW"})
    assert r.status_code == 201
    assert methods(portal) == ["crm.status.list", "crm.deal.add"]
    assert sent_params(portal.calls[0])["filter"] == {"ENTITY_ID": "DEAL_STAGE_3"}
    assert sent_params(portal.calls[1]) == {"fields": {"TITLE": "T", "CATEGORY_ID": "3", "STAGE_ID": "C3:NEW"}}


def test_deal_create_with_a_stage_the_pipeline_lacks_sends_nothing(configured, portal):
    portal.post(portal_url("crm.status.list"), json={"result": C3})
    r = configured.post(f"{API}/deals", json={"TITLE": "T", "CATEGORY_ID": 3, "STAGE_ID": "PREPARATION"})
    assert r.status_code == 400
    assert r.get_json() == {"error": "INVALID_STAGE", "field": "fields.STAGE_ID",
                            "error_description": "fields.STAGE_ID 'C3:PREPARATION' is not a stage of pipeline 3: "
                                                 "use one of C3:NEW, C3:WON, C3:LOSE",
                            "valid_stages": ["C3:NEW", "C3:WON", "C3:LOSE"]}
    assert methods(portal) == ["crm.status.list"]
    # a pipeline with no stages does not exist
    portal.replace("POST", portal_url("crm.status.list"), json={"result": []})
    r = configured.post(f"{API}/deals", json={"TITLE": "T", "CATEGORY_ID": 8})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_CATEGORY"


def test_deal_update_without_stage_or_pipeline_sends_only_the_update(configured, portal):
    portal.post(portal_url("crm.deal.update"), json={"result": True})
    assert configured.patch(f"{API}/deals/5", json={"TITLE": "x"}).status_code == 200
    assert methods(portal) == ["crm.deal.update"]


def test_deal_update_prefixes_a_bare_stage_with_the_deals_pipeline(configured, portal):
    portal.post(portal_url("crm.deal.get"), json={"result": {"ID": "5", "CATEGORY_ID": "3", "STAGE_ID": "C3:NEW"}})
    portal.post(portal_url("crm.status.list"), json={"result": C3})
    portal.post(portal_url("crm.deal.update"), json={"result": True})
    assert configured.patch(f"{API}/deals/5", json={"STAGE_ID": "WON", "TITLE": "x"}).status_code == 200
    assert methods(portal) == ["crm.deal.get", "crm.status.list", "crm.deal.update"]
    assert sent_params(portal.calls[1])["filter"] == {"ENTITY_ID": "DEAL_STAGE_3"}
    assert sent_params(portal.calls[2]) == {"id": "5", "fields": {"STAGE_ID": "C3:WON", "TITLE": "x"}}


def test_deal_update_refuses_a_pipeline_change(configured, portal):
    portal.post(portal_url("crm.deal.get"), json={"result": {"ID": "5", "CATEGORY_ID": "0", "STAGE_ID": "NEW"}})
    r = configured.patch(f"{API}/deals/5", json={"CATEGORY_ID": 3, "STAGE_ID": "C3:NEW"})
    assert r.status_code == 400 and r.get_json()["error"] == "PIPELINE_CHANGE_REFUSED"
    assert "PUT /api/bitrix/clients/1/deals/5/pipeline" in r.get_json()["error_description"]
    assert methods(portal) == ["crm.deal.get"]


def test_move_sends_crm_item_update_and_checks_the_answer(configured, portal):
    portal.post(portal_url("crm.status.list"), json={"result": C3})
    portal.post(portal_url("crm.item.update"), json={"result": {"item": {"id": 5, "categoryId": 3,
                                                                         "stageId": "C3:WON"}}})
    r = configured.put(f"{API}/deals/5/pipeline", json={"CATEGORY_ID": 3, "STAGE_ID": "WON"})
    assert r.status_code == 200 and r.get_json() == {"result": {"ID": 5, "CATEGORY_ID": 3, "STAGE_ID": "C3:WON"}}
    assert sent_params(portal.calls[1]) == {"entityTypeId": "2", "id": "5",
                                            "fields": {"categoryId": "3", "stageId": "C3:WON"}}
    # the portal answered without moving it: not reported as done
    portal.replace("POST", portal_url("crm.item.update"), json={"result": {"item": {"id": 5, "categoryId": 0,
                                                                                      "stageId": "NEW"}}})
    r = configured.put(f"{API}/deals/5/pipeline", json={"CATEGORY_ID": 3})
    assert r.status_code == 502 and r.get_json()["error"] == "MOVE_NOT_APPLIED"
    assert sent_params(portal.calls[-1])["fields"] == {"categoryId": "3", "stageId": "C3:NEW"}  # the first stage


# ---- product rows ----------------------------------------------------------------------------------------

ROW = {"ID": "7", "OWNER_ID": "5", "OWNER_TYPE": "D", "PRODUCT_ID": 0, "PRODUCT_NAME": "Chair", "PRICE": 100.0,
       "PRICE_NETTO": 100.0, "QUANTITY": 2.0, "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 0.0, "DISCOUNT_SUM": 0.0,
       "TAX_RATE": None, "TAX_INCLUDED": "N", "MEASURE_CODE": 796, "MEASURE_NAME": "pcs", "SORT": 10}


def test_put_rows_reads_then_sets_every_row_and_says_how_many_it_replaced(configured, portal):
    portal.post(portal_url("crm.deal.productrows.get"), json={"result": [ROW, {**ROW, "ID": "8"}]})
    portal.post(portal_url("crm.deal.productrows.set"), json={"result": True})
    r = configured.put(f"{API}/deals/5/products", json={"rows": [{"PRODUCT_NAME": "Desk", "PRICE": 350.5,
                                                                  "QUANTITY": 1}]})
    assert r.status_code == 200 and r.get_json()["replaced"] == 2
    assert methods(portal) == ["crm.deal.productrows.get", "crm.deal.productrows.set", "crm.deal.productrows.get"]
    assert sent_params(portal.calls[1]) == {"id": "5", "rows": [{"PRODUCT_NAME": "Desk", "PRICE": "350.5",
                                                                 "QUANTITY": "1"}]}


def test_put_with_an_explicit_empty_list_sends_rows_as_an_empty_array(configured, portal):
    portal.post(portal_url("crm.lead.productrows.get"), json={"result": []})
    portal.post(portal_url("crm.lead.productrows.set"), json={"result": True})
    r = configured.put(f"{API}/leads/4/products", json={"rows": []})
    assert r.status_code == 200 and r.get_json() == {"result": [], "replaced": 0}
    assert methods(portal)[1] == "crm.lead.productrows.set"
    # the key arrives as an empty array (wire.flatten_params' choice for empty lists), so the portal deletes them
    assert sent_pairs(portal.calls[1]) == [("id", "4"), ("rows[]", "")]


def test_patch_rows_keeps_each_rows_id_and_input_fields(configured, portal):
    other = {**ROW, "ID": "8", "PRODUCT_NAME": "Desk", "TAX_RATE": 20.0, "TAX_INCLUDED": "Y"}
    portal.post(portal_url("crm.deal.productrows.get"), json={"result": [ROW, other]})
    portal.post(portal_url("crm.deal.productrows.set"), json={"result": True})
    r = configured.patch(f"{API}/deals/5/products", json={"update": [{"ID": 7, "QUANTITY": 5}],
                                                          "add": [{"PRODUCT_NAME": "Lamp", "PRICE": 20}]})
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["added"], r.get_json()["updated"], r.get_json()["removed"]) == (1, 1, 0)
    # read, read again (nobody changed them), set, read the result
    assert methods(portal) == ["crm.deal.productrows.get"] * 2 + ["crm.deal.productrows.set",
                                                                   "crm.deal.productrows.get"]
    rows = sent_params(portal.calls[2])["rows"]
    assert rows[0] == {"ID": "7", "PRODUCT_ID": "0", "PRODUCT_NAME": "Chair", "PRICE": "100.0", "QUANTITY": "5",
                       "DISCOUNT_TYPE_ID": "2", "DISCOUNT_RATE": "0.0", "DISCOUNT_SUM": "0.0", "TAX_INCLUDED": "N",
                       "MEASURE_CODE": "796", "MEASURE_NAME": "pcs", "SORT": "10"}
    assert rows[1]["ID"] == "8" and rows[1]["TAX_RATE"] == "20.0" and rows[1]["TAX_INCLUDED"] == "Y"
    assert rows[2] == {"PRODUCT_NAME": "Lamp", "PRICE": "20"}


def test_patch_rows_writes_nothing_when_the_rows_changed(configured, portal):
    portal.post(portal_url("crm.deal.productrows.get"), json={"result": [ROW]})
    portal.post(portal_url("crm.deal.productrows.get"), json={"result": [ROW, {**ROW, "ID": "9"}]})
    r = configured.patch(f"{API}/deals/5/products", json={"remove": [7]})
    assert r.status_code == 409 and r.get_json()["error"] == "ROWS_CHANGED"
    assert "crm.deal.productrows.set" not in methods(portal)


def test_item_rows_use_crm_item_productrow(configured, portal):
    row = {"id": 11, "ownerId": 5, "ownerType": "Tb3", "productName": "Design", "price": 1000, "quantity": 1}
    portal.post(portal_url("crm.item.productrow.list"), json={"result": {"productRows": [row]}, "total": 1})
    portal.post(portal_url("crm.item.productrow.set"), json={"result": {"productRows": [{**row, "id": 12}]}})
    r = configured.put(f"{API}/items/179/5/products", json={"rows": [{"productName": "Design", "price": 1000}]})
    assert r.status_code == 200 and r.get_json() == {"result": [{**row, "id": 12}], "replaced": 1}
    assert sent_params(portal.calls[0]) == {"filter": {"=ownerType": "Tb3", "=ownerId": "5"}, "order": {"id": "ASC"},
                                            "start": "0"}
    assert sent_params(portal.calls[1]) == {"ownerType": "Tb3", "ownerId": "5",
                                            "productRows": [{"productName": "Design", "price": "1000"}]}


def test_item_rows_of_quotes_and_invoices_use_their_short_owner_type(configured, portal):
    # https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-add.html: ownerType
    # is the short code (Q for a quote, SI for an invoice); T{hex} only for smart processes
    portal.post(portal_url("crm.item.productrow.list"), json={"result": {"productRows": []}, "total": 0})
    for type_id, owner_type in ((7, "Q"), (31, "SI")):
        r = configured.get(f"{API}/items/{type_id}/5/products")
        assert r.status_code == 200, r.get_json()
        assert sent_params(portal.calls[-1])["filter"] == {"=ownerType": owner_type, "=ownerId": "5"}
    r = configured.get(f"{API}/items/4/5/products")
    assert r.status_code == 400 and r.get_json()["error"] == "NO_PRODUCT_ROWS"
    assert len(portal.calls) == 2


def test_item_rows_patch_changes_only_the_named_rows_in_one_batch(configured, portal):
    rows = [{"id": 11, "productName": "A"}, {"id": 12, "productName": "B"}]
    portal.post(portal_url("crm.item.productrow.list"), json={"result": {"productRows": rows}, "total": 2})
    portal.post(portal_url("batch"), json=batch_answer({"c0": {"productRow": {}}, "c1": None,
                                                        "c2": {"productRow": {}}}))
    r = configured.patch(f"{API}/items/179/5/products", json={"update": [{"id": 11, "price": 5}], "remove": [12],
                                                              "add": [{"productName": "C"}]})
    assert r.status_code == 200, r.get_json()
    assert methods(portal) == ["crm.item.productrow.list", "batch", "crm.item.productrow.list"]
    assert sent_params(portal.calls[1])["halt"] == "1"
    assert commands(portal.calls[1]) == {
        "c0": ("crm.item.productrow.update", {"id": "11", "fields": {"price": "5"}}),
        "c1": ("crm.item.productrow.delete", {"id": "12"}),
        "c2": ("crm.item.productrow.add", {"fields": {"ownerType": "Tb3", "ownerId": "5", "productName": "C"}})}


def test_rows_of_many_deals_are_read_fifty_to_a_batch(configured, portal):
    ids = list(range(1, 52))
    portal.post(portal_url("batch"), json=batch_answer({str(i): [ROW] for i in ids[:50]}))
    portal.post(portal_url("batch"), json=batch_answer({}, {"51": {"error": "", "error_description": "Not found"}}))
    r = configured.post(f"{API}/deals/products/get", json={"ids": ids})
    assert r.status_code == 200
    body = r.get_json()
    assert len(body["result"]) == 50 and body["result"]["1"] == [ROW]
    assert body["errors"] == {"51": {"error": "NOT_FOUND", "error_description": "Not found"}}
    first, second = commands(portal.calls[0]), commands(portal.calls[1])
    assert len(first) == 50 and first["1"] == ("crm.deal.productrows.get", {"id": "1"})
    assert second == {"51": ("crm.deal.productrows.get", {"id": "51"})}


# ---- contacts ---------------------------------------------------------------------------------------------

def test_put_contacts_sends_items_set_in_order_then_reads_them(configured, portal):
    portal.post(portal_url("crm.deal.contact.items.set"), json={"result": True})
    portal.post(portal_url("crm.deal.contact.items.get"), json={"result": [
        {"CONTACT_ID": 3, "SORT": 20, "ROLE_ID": 0, "IS_PRIMARY": "Y"},
        {"CONTACT_ID": 4, "SORT": 10, "ROLE_ID": 0, "IS_PRIMARY": "N"}]})
    r = configured.put(f"{API}/deals/5/contacts", json={"contacts": [{"CONTACT_ID": 4},
                                                                     {"CONTACT_ID": 3, "IS_PRIMARY": "Y"}]})
    assert r.status_code == 200
    assert [row["CONTACT_ID"] for row in r.get_json()["result"]] == [4, 3]  # in SORT order
    assert sent_params(portal.calls[0]) == {"id": "5", "items": [{"CONTACT_ID": "4", "SORT": "10"},
                                                                 {"CONTACT_ID": "3", "SORT": "20",
                                                                  "IS_PRIMARY": "Y"}]}
    assert sent_params(portal.calls[1]) == {"id": "5"}


def test_put_no_contacts_unlinks_all_with_items_delete(configured, portal):
    portal.post(portal_url("crm.lead.contact.items.delete"), json={"result": True})
    portal.post(portal_url("crm.lead.contact.items.get"), json={"result": []})
    r = configured.put(f"{API}/leads/6/contacts", json={"contacts": []})
    assert r.status_code == 200 and r.get_json() == {"result": []}
    assert methods(portal) == ["crm.lead.contact.items.delete", "crm.lead.contact.items.get"]


def test_two_primaries_are_refused_before_the_portal(configured, portal):
    r = configured.put(f"{API}/deals/5/contacts", json={"contacts": [{"CONTACT_ID": 4, "IS_PRIMARY": "Y"},
                                                                     {"CONTACT_ID": 3, "IS_PRIMARY": "Y"}]})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_LINKS"
    assert len(portal.calls) == 0


def test_company_contacts_and_contact_companies_methods(configured, portal):
    for method in ("crm.company.contact.items.set", "crm.contact.company.items.set"):
        portal.post(portal_url(method), json={"result": True})
    for method in ("crm.company.contact.items.get", "crm.contact.company.items.get"):
        portal.post(portal_url(method), json={"result": []})
    configured.put(f"{API}/companies/2/contacts", json={"contacts": [{"CONTACT_ID": 3, "IS_PRIMARY": "Y"},
                                                                    {"CONTACT_ID": 4, "IS_PRIMARY": "Y"}]})
    configured.put(f"{API}/contacts/3/companies", json={"companies": [{"COMPANY_ID": 2, "SORT": 5}]})
    assert methods(portal) == ["crm.company.contact.items.set", "crm.company.contact.items.get",
                               "crm.contact.company.items.set", "crm.contact.company.items.get"]
    assert sent_params(portal.calls[0])["items"][1] == {"CONTACT_ID": "4", "SORT": "20", "IS_PRIMARY": "Y"}
    assert sent_params(portal.calls[2])["items"] == [{"COMPANY_ID": "2", "SORT": "5"}]


def test_contact_ids_on_create_are_sent_as_an_array(configured, portal):
    portal.post(portal_url("crm.deal.add"), json={"result": 9})
    r = configured.post(f"{API}/deals", json={"TITLE": "T", "CONTACT_IDS": [3, 4]})
    assert r.status_code == 201
    assert sent_params(portal.calls[0]) == {"fields": {"TITLE": "T", "CONTACT_IDS": ["3", "4"]}}
