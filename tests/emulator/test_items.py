"""crm.item.* beyond smart processes: the system types over the legacy records, smart invoices and estimates,
the standard fields of smart-process items, and nested filters.

Sources: https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-add.html (a deal's answer, the field
lists per type, the "Expected iterable value for multiple field" error),
https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-get.html (a lead's answer: ints, "Y"/"N",
fm entries), https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html (nested logic/OR
groups, fm only through "*", the order errors), https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-fields.html
(the SPA field set), https://apidocs.bitrix24.com/api-reference/crm/universal/object-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/invoice.html (type 31, ONCRMDYNAMICITEM*, type 5
refused), https://apidocs.bitrix24.com/api-reference/crm/quote/events/on-crm-quote-add.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-list.html (legacy lists have no logic/OR);
leshchenko1979/fast_bitrix24 tests/real_responses/crm_item_add.py and crm_item_list.py (real answers).
"""

from __future__ import annotations

import pytest

from bitrix24_emulator import links

from .conftest import make_api

DEAL, LEAD, CONTACT, COMPANY, QUOTE, INVOICE, SPA = 2, 1, 3, 4, 7, 31, 128


@pytest.fixture
def api():
    return make_api(limits=False)


def add(api, type_id, **fields):
    return api.ok("crm.item.add", {"entityTypeId": type_id, "fields": fields})["item"]


def update(api, type_id, item_id, **fields):
    return api.ok("crm.item.update", {"entityTypeId": type_id, "id": item_id, "fields": fields})["item"]


def ids(api, type_id, **payload):
    return [row["id"] for row in api.ok("crm.item.list", {"entityTypeId": type_id, **payload})["items"]]


def record_events(api) -> list[tuple[str, dict]]:
    seen: list[tuple[str, dict]] = []
    api.emu._post_event = lambda name, data, context: seen.append((name, dict(data)))
    return seen


# ---- system types over the legacy records ----------------------------------------------------------

def test_a_deal_added_as_an_item_is_the_legacy_deal_and_back(api):
    item = add(api, DEAL, title="Big one", opportunity="999.99", isManualOpportunity="Y", probability=50,
               typeId="SERVICE", begindate="2026-12-01", comments="Hi", nope=1, createdBy=7)
    assert item["id"] == 1 and item["entityTypeId"] == DEAL and list(item)[-1] == "entityTypeId"
    assert item["opportunity"] == 999.99 and item["probability"] == 50 and item["categoryId"] == 0
    assert (item["isManualOpportunity"], item["isNew"], item["closed"], item["opened"]) == ("Y", "Y", "N", "Y")
    assert item["companyId"] == 0 and item["leadId"] is None and item["createdBy"] == 1 and "nope" not in item
    assert item["begindate"] == "2026-12-01T03:00:00+03:00" and item["stageId"] == "NEW"
    assert item["createdTime"] == item["movedTime"] == "2026-11-27T11:00:00+03:00" and item["movedBy"] == 1
    assert "fm" not in item  # deals have no multi-fields
    legacy = api.ok("crm.deal.get", {"id": 1})
    assert (legacy["TITLE"], legacy["OPPORTUNITY"], legacy["PROBABILITY"], legacy["TYPE_ID"]) == \
        ("Big one", "999.99", "50", "SERVICE")
    assert legacy["IS_MANUAL_OPPORTUNITY"] == "Y" and legacy["COMMENTS"] == "Hi"

    deal_id = api.ok("crm.deal.add", {"fields": {"TITLE": "Legacy", "COMPANY_ID": 12, "OPPORTUNITY": 5}})
    got = api.ok("crm.item.get", {"entityTypeId": DEAL, "id": deal_id})["item"]
    assert (got["id"], got["title"], got["companyId"], got["opportunity"]) == (2, "Legacy", 12, 5.0)
    assert api.ok("crm.item.list", {"entityTypeId": DEAL, "select": ["*"]})["items"][1] == got

    changed = update(api, DEAL, deal_id, stageId="WON", assignedById="3")
    assert (changed["stageId"], changed["stageSemanticId"], changed["closed"], changed["assignedById"]) == \
        ("WON", "S", "Y", 3)
    assert api.ok("crm.deal.get", {"id": deal_id})["STAGE_ID"] == "WON"
    assert api.raw("crm.item.delete", {"entityTypeId": DEAL, "id": deal_id}).get_data(as_text=True) \
        .startswith('{"result":[]')
    assert api("crm.deal.get", {"id": deal_id})[1]["error_description"] == "Not found"
    assert api("crm.item.get", {"entityTypeId": DEAL, "id": deal_id}) == \
        (400, {"error": "NOT_FOUND", "error_description": "Item not found"})


def test_a_lead_is_stage_id_and_fm_over_its_phones(api):
    lead = add(api, LEAD, name="Ann", stageId="IN_PROCESS", fm=[{"typeId": "PHONE", "value": "+1 555"}])
    assert (lead["title"], lead["stageId"], lead["stageSemanticId"], lead["hasPhone"]) == \
        ("Lead #1", "IN_PROCESS", "P", "Y")
    assert lead["fm"] == [{"id": 1, "valueType": "WORK", "value": "+1 555", "typeId": "PHONE"}]
    assert "statusId" not in lead and "address" not in lead
    legacy = api.ok("crm.lead.get", {"id": 1})
    assert legacy["STATUS_ID"] == "IN_PROCESS" and legacy["PHONE"][0]["VALUE"] == "+1 555"
    api.ok("crm.lead.update", {"id": 1, "fields": {"STATUS_ID": "JUNK"}})
    assert api.ok("crm.item.get", {"entityTypeId": LEAD, "id": 1})["item"]["stageSemanticId"] == "F"


def test_contacts_and_companies_need_no_name_and_keep_legacy_checks(api):
    contact = add(api, CONTACT, post="CEO")
    assert contact["name"] is None and contact["post"] == "CEO" and contact["export"] == "Y"
    assert api.ok("crm.contact.get", {"id": 1})["NAME"] is None
    company = add(api, COMPANY)
    assert company["title"] == "Company #1" and company["isMyCompany"] == "N" and company["typeId"] is None
    status, body = api("crm.item.add", {"entityTypeId": CONTACT, "fields": {
        "name": "Bob", "fm": [{"typeId": "EMAIL", "value": "not-an-email"}]}})
    assert status == 400 and body["error"] == "ERROR_CORE" and len(api.emu.records["contact"]) == 1


def test_system_type_events_are_the_legacy_ones(api):
    seen = record_events(api)
    add(api, DEAL, title="D")
    update(api, CONTACT, add(api, CONTACT, name="C")["id"], post="x")
    api.ok("crm.item.delete", {"entityTypeId": DEAL, "id": 1})
    add(api, QUOTE)
    add(api, INVOICE)
    assert seen == [("ONCRMDEALADD", {"data[FIELDS][ID]": "1"}), ("ONCRMCONTACTADD", {"data[FIELDS][ID]": "1"}),
                    ("ONCRMCONTACTUPDATE", {"data[FIELDS][ID]": "1"}), ("ONCRMDEALDELETE", {"data[FIELDS][ID]": "1"}),
                    ("ONCRMQUOTEADD", {"data[FIELDS][ID]": "1"}),
                    ("ONCRMDYNAMICITEMADD", {"data[FIELDS][ID]": "1", "data[FIELDS][ENTITY_TYPE_ID]": "31"})]


def test_system_type_fields_are_camel_case_with_item_types(api):
    fields = api.ok("crm.item.fields", {"entityTypeId": DEAL})["fields"]
    assert fields["isManualOpportunity"]["type"] == "boolean" and fields["opportunity"]["type"] == "double"
    assert fields["stageId"]["upperName"] == "STAGE_ID" and fields["createdTime"]["isReadOnly"] is True
    assert fields["observers"]["isMultiple"] is True and "OPPORTUNITY" not in fields and "fm" not in fields
    contact_fields = api.ok("crm.item.fields", {"entityTypeId": CONTACT})["fields"]
    assert contact_fields["fm"]["type"] == "crm_multifield" and "PHONE" not in contact_fields
    assert api.ok("crm.item.fields", {"entityTypeId": LEAD})["fields"]["stageId"]["statusType"] == "STATUS"


def test_system_type_lists_filter_order_and_select_in_camel_case(api):
    for i in range(1, 6):
        add(api, DEAL, title=f"Deal {i}", opportunity=i * 100, stageId="WON" if i % 2 else "NEW", observers=[i])
    assert ids(api, DEAL, filter={">=opportunity": 200, "stageId": "WON"}) == [3, 5]
    assert ids(api, DEAL, order={"opportunity": "DESC"})[:2] == [5, 4]
    assert ids(api, DEAL, filter={"observers": 4}) == [4]
    assert ids(api, DEAL, filter={"!observers": 4}) == [1, 2, 3, 5]
    rows = api.ok("crm.item.list", {"entityTypeId": DEAL, "select": ["title"], "filter": {"id": 2}})["items"]
    assert rows == [{"id": 2, "title": "Deal 2"}]
    # A known field's UPPER_CASE name is taken as its camelCase one (see test_upper_case_names_of_known_fields...);
    # an unknown name is refused under the UPPER_CASE form the portal's converter gave it.
    assert ids(api, DEAL, filter={"STAGE_ID": "WON"}) == [1, 3, 5]
    status, body = api("crm.item.list", {"entityTypeId": DEAL, "filter": {"stageCode": "WON"}})
    assert (status, body["error_description"]) == (400, "Invalid filter: field 'STAGE_CODE' is not allowed in filter")
    assert api("crm.item.list", {"entityTypeId": DEAL, "order": {"observers": "ASC"}})[0] == 400
    _, body = api("crm.item.list", {"entityTypeId": DEAL, "order": {"id": "UP"}})
    assert body == {"error": "INVALID_ARG_VALUE", "error_description":
                    "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field 'ID'"}


@pytest.mark.skipif(not hasattr(links, "State"), reason="links.py (deal contacts) is not there yet")
def test_deal_contact_ids_are_its_contact_links(api):
    deal = add(api, DEAL, contactIds=[4, 5])
    assert deal["contactIds"] == [4, 5] and deal["contactId"] == 4
    assert [r["CONTACT_ID"] for r in api.ok("crm.deal.contact.items.get", {"id": deal["id"]})] == [4, 5]
    assert update(api, DEAL, deal["id"], contactIds=[7])["contactIds"] == [7]
    status, body = api("crm.item.update", {"entityTypeId": DEAL, "id": deal["id"], "fields": {"contactIds": 7}})
    assert (status, body["error"]) == (400, "100")


# ---- smart invoices, estimates and unsupported types ------------------------------------------------

def test_smart_invoices_have_dt31_stages_and_their_own_numbers(api):
    invoice = add(api, INVOICE, accountNumber="INV-1", opportunity=10)
    category = invoice["categoryId"]
    assert invoice["id"] == 1 and invoice["title"] == "Invoice #1" and invoice["entityTypeId"] == INVOICE
    assert invoice["stageId"] == f"DT31_{category}:N" and invoice["stageSemanticId"] == "P"
    assert invoice["accountNumber"] == "INV-1" and "fm" not in invoice
    paid = update(api, INVOICE, 1, stageId=f"DT31_{category}:P")
    assert paid["stageSemanticId"] == "S" and paid["previousStageId"] == f"DT31_{category}:N"
    assert add(api, SPA)["id"] == 1  # its own numbering
    fields = api.ok("crm.item.fields", {"entityTypeId": INVOICE})["fields"]
    assert fields["stageId"]["statusType"] == f"SMART_INVOICE_STAGE_{category}"


def test_estimates_have_quote_statuses_and_no_pipelines(api):
    quote = add(api, QUOTE, title="Offer", dealId=3, opportunity=5)
    assert quote["stageId"] == "DRAFT" and quote["closed"] == "N" and "categoryId" not in quote
    assert quote["dealId"] == 3 and quote["entityTypeId"] == QUOTE
    approved = update(api, QUOTE, quote["id"], stageId="APPROVED")
    assert (approved["stageSemanticId"], approved["closed"]) == ("S", "Y")


def test_old_invoices_are_not_supported(api):
    assert api("crm.item.list", {"entityTypeId": 5}) == \
        (400, {"error": "ENTITY_TYPE_NOT_SUPPORTED", "error_description": "Entity type INVOICE is not supported"})


# ---- smart-process standard fields ------------------------------------------------------------------

def test_smart_process_items_carry_the_standard_fields(api):
    item = add(api, SPA, fm=[{"typeId": "PHONE", "value": "+1"}], observers=[3, "4", 3], contactId=9)
    assert item["xmlId"] == "" and item["movedBy"] == 1 and item["movedTime"] == item["createdTime"]
    assert item["begindate"] == "2026-11-27T03:00:00+03:00" and item["closedate"] == "2026-12-04T03:00:00+03:00"
    assert item["observers"] == [3, 4] and item["contactIds"] == [9] and item["contactId"] == 9
    assert item["previousStageId"] is None and item["isManualOpportunity"] == "N" and item["taxValue"] == 0.0
    assert item["webformId"] is None and item["mycompanyId"] == 0 and item["utmSource"] is None
    assert item["sourceId"] == "CALL" and item["lastActivityBy"] == 1 and "fm" not in item
    api.emu.clock.now.advance(60)
    moved = update(api, SPA, item["id"], stageId="DT128_1:PREPARATION", contactIds=[5, 6])
    assert moved["previousStageId"] == "DT128_1:NEW" and moved["movedTime"] == "2026-11-27T11:01:00+03:00"
    assert moved["contactIds"] == [5, 6] and moved["contactId"] == 5
    status, body = api("crm.item.add", {"entityTypeId": SPA, "fields": {"observers": 3}})
    assert (status, body) == (400, {"error": "100", "error_description":
                                    "Expected iterable value for multiple field, but got integer instead"})
    fields = api.ok("crm.item.fields", {"entityTypeId": SPA})["fields"]
    assert fields["contactIds"]["isMultiple"] is True and fields["movedBy"]["isReadOnly"] is True
    assert fields["contactId"]["isDeprecated"] is True and fields["companyId"]["settings"] == {"parentEntityTypeId": 4}
    assert fields["stageId"]["statusType"] == "DYNAMIC_128_STAGE_1" and "fm" not in fields


# ---- nested filters ---------------------------------------------------------------------------------

@pytest.fixture
def spa_items(api):
    for i in range(1, 61):
        add(api, SPA, title=f"P{i}", opportunity=i, assignedById=1 + i % 3)
    return api


def test_item_list_logic_or_groups_nest(spa_items):
    or_group = {"0": {"logic": "OR", "0": {"<opportunity": 3}, "1": {">opportunity": 58}}}
    assert ids(spa_items, SPA, filter=or_group) == [1, 2, 59, 60]
    nested = {"logic": "OR", "0": {"id": 5}, "1": {"logic": "AND", "0": {">id": 50}, "assignedById": 1}}
    assert ids(spa_items, SPA, filter=nested) == [5, 51, 54, 57, 60]
    assert ids(spa_items, SPA, filter={**or_group, "assignedById": 3}) == [2, 59]
    status, body = spa_items("crm.item.list", {"entityTypeId": SPA, "filter": {"0": {"logic": "OR", "0": {"x": 1}}}})
    assert (status, body["error_description"]) == (400, "Invalid filter: field 'X' is not allowed in filter")
    # A keyset page whose top level is OR takes no lower bound from its >id.
    _, body = spa_items("crm.item.list", {"entityTypeId": SPA, "start": -1,
                                          "filter": {"logic": "OR", ">id": 58, "id": 1}})
    assert [r["id"] for r in body["result"]["items"]] == [1, 59, 60] and "total" not in body


def test_item_list_or_groups_work_for_system_types(api):
    for name in ("Ann", "Bob", "Cid"):
        add(api, CONTACT, name=name)
    assert ids(api, CONTACT, filter={"0": {"logic": "OR", "0": {"name": "Ann"}, "1": {"%name": "ci"}}}) == [1, 3]


def test_legacy_lists_drop_logic_groups(api):
    """The legacy list unsets every key that is not a field (crm-deal-list.md: no logic/OR), groups included."""
    for title in ("A", "B"):
        api.ok("crm.deal.add", {"fields": {"TITLE": title}})
    rows = api.ok("crm.deal.list", {"filter": {"0": {"LOGIC": "OR", "TITLE": "A"}, "LOGIC": "OR"}, "select": ["ID"]})
    assert [r["ID"] for r in rows] == ["1", "2"]


def test_a_user_field_made_later_is_an_item_field_at_once(api):
    """crm.deal.userfield.add's UF_CRM_BUDGET is ufCrm_BUDGET in crm.item (camelCase UF names, crm-item-get.md)."""
    add(api, DEAL)
    api.ok("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "BUDGET", "USER_TYPE_ID": "string"}})
    assert update(api, DEAL, 1, ufCrm_BUDGET="10")["ufCrm_BUDGET"] == "10"
    assert api.ok("crm.deal.get", {"id": 1})["UF_CRM_BUDGET"] == "10"
    assert api.ok("crm.item.list", {"entityTypeId": DEAL, "filter": {"ufCrm_BUDGET": "10"},
                                    "select": ["ufCrm_BUDGET"]})["items"] == [{"id": 1, "ufCrm_BUDGET": "10"}]


def test_upper_case_names_of_known_fields_are_taken_in_filter_and_order(spa_items, api):
    """The portal converts crm.item.list's filter and order keys to UPPER_CASE before it checks them, and its
    converter passes the UPPER name of a field the factory knows through unchanged, so ``{"ID": "ASC"}`` (what
    fast_bitrix24's get_all adds to every list) sorts as ``{"id": "ASC"}``; only an unknown name is refused,
    under its converted form. Source: the portal's crm module, lib/controller/item.php (listAction: convertKeysToUpper,
    then validateFilter/validateOrder) and lib/service/converter/ormobject.php; the refusal's text:
    https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html."""
    assert ids(spa_items, SPA, order={"ID": "DESC"})[:3] == [60, 59, 58]
    assert ids(spa_items, SPA, filter={">ID": 56, "ASSIGNED_BY_ID": 1}, order={"ID": "ASC"}) == [57, 60]
    assert ids(spa_items, SPA, filter={"0": {"logic": "OR", "0": {"ID": 2}, "1": {"id": 4}}}) == [2, 4]
    for param, text in (({"order": {"nope": "ASC"}}, "Invalid order: field 'NOPE' is not allowed in order"),
                        ({"filter": {"TITLE_X": "a"}}, "Invalid filter: field 'T_IT_LE__X' is not allowed in filter")):
        status, body = spa_items("crm.item.list", {"entityTypeId": SPA, **param})
        assert (status, body) == (400, {"error": "INVALID_ARG_VALUE", "error_description": text})
    for i in range(1, 4):
        add(api, DEAL, title=f"Deal {i}")
    assert ids(api, DEAL, order={"ID": "DESC"}) == [3, 2, 1]
