"""Legacy crm.{contact,deal,lead,company}.*: per-method results, errors, entities and multi-fields, value quirks.

Sources, named in the tests below by the method or topic they document:
crm.contact.add https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-add.html,
crm.contact.get https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-get.html,
crm.contact.update https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-update.html,
crm.contact.delete https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-delete.html,
crm.contact.fields https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-fields.html,
crm.deal.add https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-add.html,
crm.deal.get https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-get.html,
crm.lead.add https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-add.html,
crm.contact.userfield.add
https://apidocs.bitrix24.com/api-reference/crm/contacts/userfield/crm-contact-userfield-add.html,
crm.duplicate.findbycomm https://apidocs.bitrix24.com/api-reference/crm/duplicates/crm-duplicate-find-by-comm.html,
crm_multifield https://apidocs.bitrix24.com/api-reference/crm/data-types.html#crm_multifield.
"The portal's source" is the portal's PHP source: the crm module's modules/crm/classes/general/restservice.php
(CCrmRestProxyBase, CCrmRestHelper, the entity proxies, internalizeFields, the multi-field merge),
modules/crm/classes/general/crm_contact.php and crm_company.php (CheckFields), and
modules/rest/classes/general/rest_util.php (ConvertDate, which shifts dates by the offset).
"""

import pytest

from .conftest import T0, make_api


def test_add_returns_int_and_get_returns_strings(api):
    """add returns an int id (the crm.contact.add page); get returns strings for ids and numbers, null for unset
    (the crm.contact.get page)."""
    new_id = api.ok("crm.deal.add", {"fields": {"TITLE": "Big", "OPPORTUNITY": 5000, "CONTACT_ID": 7}})
    assert new_id == 1 and isinstance(new_id, int)
    deal = api.ok("crm.deal.get", {"id": new_id})
    assert deal["ID"] == "1"
    assert deal["OPPORTUNITY"] == "5000.00"
    assert deal["CONTACT_ID"] == "7"
    assert deal["COMPANY_ID"] is None
    assert deal["ASSIGNED_BY_ID"] == "1" and deal["CREATED_BY_ID"] == "1"


def test_deal_defaults(api):
    """deal TITLE 'Deal #id', STAGE_ID NEW, OPPORTUNITY 0.00, CATEGORY_ID 0, currency, OPENED Y (the
    crm.deal.add page)."""
    deal = api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {}})})
    assert deal["TITLE"] == "Deal #1"
    assert deal["STAGE_ID"] == "NEW" and deal["STAGE_SEMANTIC_ID"] == "P"
    assert deal["OPPORTUNITY"] == "0.00" and deal["CATEGORY_ID"] == "0"
    assert deal["CURRENCY_ID"] == "RUB" and deal["OPENED"] == "Y" and deal["CLOSED"] == "N"
    assert deal["DATE_CREATE"] == "2026-11-27T11:00:00+03:00"
    assert deal["BEGINDATE"] == "2026-11-27T03:00:00+03:00"  # date shifted by the offset (ConvertDate)
    assert deal["CLOSEDATE"].startswith("2026-12-04")


def test_deal_category_stage_and_immutability(api):
    """a deal in funnel 3 starts at C3:NEW; CATEGORY_ID cannot change on update; WON closes it (the
    crm.deal.add page; https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html).
    (The funnels must exist: a portal puts a deal of an unknown one in the default funnel, test_catalog.py.)"""
    for name in ("One", "Two", "Three"):
        api.ok("crm.category.add", {"entityTypeId": 2, "fields": {"name": name}})
    deal_id = api.ok("crm.deal.add", {"fields": {"CATEGORY_ID": 3}})
    assert api.emu.records["deal"][deal_id]["STAGE_ID"] == "C3:NEW"
    api.ok("crm.deal.update", {"id": deal_id, "fields": {"CATEGORY_ID": 2, "STAGE_ID": "C3:WON"}})
    deal = api.ok("crm.deal.get", {"id": deal_id})
    assert deal["CATEGORY_ID"] == "3"
    assert (deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == ("S", "Y")


def test_lead_defaults(api):
    """lead STATUS_ID NEW, OPENED Y (the crm.lead.add page)."""
    lead = api.ok("crm.lead.get", {"id": api.ok("crm.lead.add", {"fields": {"NAME": "L"}})})
    assert lead["STATUS_ID"] == "NEW" and lead["OPENED"] == "Y" and lead["HAS_PHONE"] == "N"


def test_contact_without_name_fails(api):
    """contact add with neither NAME nor LAST_NAME fails the legacy required check (the portal's source,
    crm_contact.php CheckFields)."""
    status, body = api("crm.contact.add", {"fields": {"POST": "CEO"}})
    assert status == 400 and body["error"] == ""
    assert "required" in body["error_description"]
    assert api.ok("crm.contact.add", {"fields": {"LAST_NAME": "Only"}}) == 1


def test_company_requires_title(api):
    """company TITLE is required (the portal's source, CCrmCompany::CheckFields in crm_company.php)."""
    status, body = api("crm.company.add", {"fields": {"INDUSTRY": "IT"}})
    assert status == 400 and "required" in body["error_description"]
    assert api.ok("crm.company.add", {"fields": {"TITLE": "Acme"}}) == 1


def test_unknown_and_read_only_fields_ignored(api):
    """unknown, lower-case and read-only fields are silently ignored on add and update (the crm.contact.add and
    crm.contact.update pages; the portal's source, internalizeFields)."""
    contact_id = api.ok("crm.contact.add", {"fields": {
        "NAME": "A", "NOPE": 1, "name": "lower", "ID": 99, "DATE_CREATE": "2001-01-01T00:00:00+03:00",
        "HAS_PHONE": "Y", "CREATED_BY_ID": 42}})
    record = api.emu.records["contact"][contact_id]
    assert contact_id == 1 and record["NAME"] == "A" and "NOPE" not in record and "name" not in record
    assert record["DATE_CREATE"].startswith("2026-11-27") and record["HAS_PHONE"] == "N"
    assert record["CREATED_BY_ID"] == "1"


def test_import_mode_sets_dates(api):
    """params[IMPORT]=Y lets add set DATE_CREATE and CREATED_BY_ID (the crm.contact.add page)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "DATE_CREATE": "2020-05-01T10:00:00+03:00",
                                                       "CREATED_BY_ID": 9}, "params": {"IMPORT": "Y"}})
    record = api.emu.records["contact"][contact_id]
    assert record["DATE_CREATE"] == "2020-05-01T10:00:00+03:00" and record["CREATED_BY_ID"] == "9"


def test_update_returns_true_and_touches_date_modify(api, clock):
    """update returns true; DATE_MODIFY moves (the crm.contact.update page)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    clock.advance(3600)
    assert api.ok("crm.contact.update", {"id": contact_id, "fields": {"LAST_NAME": "B"}}) is True
    contact = api.ok("crm.contact.get", {"id": contact_id})
    assert contact["LAST_NAME"] == "B" and contact["NAME"] == "A"
    assert contact["DATE_MODIFY"] == "2026-11-27T12:00:00+03:00"
    assert contact["DATE_CREATE"] == "2026-11-27T11:00:00+03:00"


def test_delete_returns_true(api):
    """delete returns true and the record is gone (the crm.contact.delete page)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    assert api.ok("crm.contact.delete", {"id": contact_id}) is True
    assert api("crm.contact.get", {"id": contact_id}) == (400, {"error": "", "error_description": "Not found"})


@pytest.mark.parametrize("method", ["crm.contact.get", "crm.deal.delete", "crm.lead.update"])
@pytest.mark.parametrize("id_value", [None, 0, -5, "abc"])
def test_invalid_id(api, method, id_value):
    """id missing, <=0 or non-numeric -> 'ID is not defined or invalid.' (the portal's source,
    CCrmRestProxyBase get/update/delete cast it with (int))."""
    payload = {"fields": {"TITLE": "x"}} if id_value is None else {"id": id_value, "fields": {"TITLE": "x"}}
    assert api(method, payload) == (400, {"error": "", "error_description": "ID is not defined or invalid."})


def test_id_param_upper_case(api):
    """ID is read as 'ID' or 'id' (the portal's source, resolveEntityID)."""
    api.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    assert api.ok("crm.contact.get", {"ID": "1"})["NAME"] == "A"


def test_not_found_texts(api):
    """unknown id: get/delete 'Not found'; update 'Contact is not found' for contacts, 'Not found' for deals (the
    crm.contact.get page; the portal's source, the proxies' innerGet/innerUpdate)."""
    assert api("crm.contact.get", {"id": 5})[1]["error_description"] == "Not found"
    assert api("crm.contact.delete", {"id": 5})[1]["error_description"] == "Not found"
    status, body = api("crm.contact.update", {"id": 5, "fields": {"NAME": "x"}})
    assert (status, body) == (400, {"error": "", "error_description": "Contact is not found"})
    assert api("crm.deal.update", {"id": 5, "fields": {}})[1]["error_description"] == "Not found"
    assert api("crm.lead.update", {"id": 5, "fields": {}})[1]["error_description"] == "Not found"


def test_delete_missing_docs_variant():
    """The crm.contact.delete page says ERROR_CORE 'Element not found' for deleting an unknown contact (an
    option)."""
    api = make_api(delete_missing_error="docs")
    assert api("crm.contact.delete", {"id": 5}) == (400, {"error": "ERROR_CORE",
                                                          "error_description": "Element not found"})


def test_parameter_must_be_array(api):
    """fields/params/order/filter that are not arrays (the portal's source, processMethodRequest)."""
    assert api("crm.contact.add", {"fields": "x"})[1]["error_description"] == "Parameter 'fields' must be array."
    assert api("crm.contact.add", {"fields": {"NAME": "a"}, "params": "x"})[1]["error_description"] == \
        "Parameter 'params' must be array."
    assert api("crm.contact.list", {"order": "ID"})[1]["error_description"] == "Parameter 'order' must be array."
    assert api("crm.contact.list", {"filter": "x"})[1]["error_description"] == "Parameter 'filter' must be array."
    assert api("crm.contact.update", {"id": 1, "fields": "x"})[1]["error_description"] == \
        "Parameter 'fields' must be array."


def test_param_name_case_variants(api):
    """FIELDS, Fields and arFields are accepted too (the portal's source, CCrmRestHelper::resolveArrayParam)."""
    assert api.ok("crm.contact.add", {"FIELDS": {"NAME": "a"}}) == 1
    assert api.ok("crm.contact.add", {"arFields": {"NAME": "b"}}) == 2
    assert api.ok("crm.contact.add", {"Fields": {"NAME": "c"}}) == 3


def test_multifield_shape_and_default_type(api):
    """items are {ID, VALUE_TYPE, VALUE, TYPE_ID} (crm_multifield); default VALUE_TYPE WORK, OTHER for IM (the
    portal's source)."""
    contact_id = api.ok("crm.contact.add", {"fields": {
        "NAME": "A", "PHONE": [{"VALUE": " +1 555 "}], "IM": [{"VALUE": "tg:ann"}], "WEB": [{"VALUE": ""}]}})
    contact = api.ok("crm.contact.get", {"id": contact_id})
    assert contact["PHONE"] == [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": "+1 555", "TYPE_ID": "PHONE"}]
    assert contact["IM"][0]["VALUE_TYPE"] == "OTHER"
    assert "WEB" not in contact and "EMAIL" not in contact  # absent when empty (the crm.contact.get page)
    assert contact["HAS_PHONE"] == "Y" and contact["HAS_EMAIL"] == "N"


def test_multifield_update_merges(api):
    """update merges: add without ID, change with ID, delete with empty VALUE or DELETE=Y, keep others (the
    crm.contact.update page, "Working with Multiple Fields"; the portal's source)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "PHONE": [
        {"VALUE": "111"}, {"VALUE": "222", "VALUE_TYPE": "MOBILE"}, {"VALUE": "333"}, {"VALUE": "444"}]}})
    ids = [p["ID"] for p in api.emu.records["contact"][contact_id]["PHONE"]]
    api.ok("crm.contact.update", {"id": contact_id, "fields": {"PHONE": [
        {"ID": ids[0], "VALUE": "111-changed"},
        {"ID": ids[1], "VALUE": ""},
        {"ID": ids[2], "VALUE": "333", "DELETE": "Y"},
        {"VALUE": "555", "VALUE_TYPE": "HOME"},
    ]}})
    phones = api.ok("crm.contact.get", {"id": contact_id})["PHONE"]
    assert [(p["ID"], p["VALUE"]) for p in phones] == [(ids[0], "111-changed"), (ids[3], "444"), ("5", "555")]
    assert phones[2]["VALUE_TYPE"] == "HOME"


def test_multifield_identical_value_reused(api):
    """an item without ID equal to an existing (VALUE_TYPE, VALUE) is reused, not duplicated (the portal's
    source)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "EMAIL": [{"VALUE": "a@x.io"}]}})
    api.ok("crm.contact.update", {"id": contact_id, "fields": {"EMAIL": [{"VALUE": "a@x.io", "VALUE_TYPE": "WORK"}]}})
    assert len(api.emu.records["contact"][contact_id]["EMAIL"]) == 1
    api.ok("crm.contact.update", {"id": contact_id, "fields": {"EMAIL": [{"VALUE": "a@x.io", "VALUE_TYPE": "HOME"}]}})
    assert len(api.emu.records["contact"][contact_id]["EMAIL"]) == 2


def test_clearing_all_phones_updates_has_phone(api):
    """clearing phones means sending each ID with an empty value; HAS_PHONE follows (the crm.contact.update
    page)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "PHONE": [{"VALUE": "1"}]}})
    phone_id = api.emu.records["contact"][contact_id]["PHONE"][0]["ID"]
    api.ok("crm.contact.update", {"id": contact_id, "fields": {"PHONE": []}})
    assert api.ok("crm.contact.get", {"id": contact_id})["HAS_PHONE"] == "Y"  # an empty list changes nothing
    api.ok("crm.contact.update", {"id": contact_id, "fields": {"PHONE": [{"ID": phone_id, "VALUE": ""}]}})
    contact = api.ok("crm.contact.get", {"id": contact_id})
    assert contact["HAS_PHONE"] == "N" and "PHONE" not in contact


def test_bad_email_is_error_core(api):
    """a bad e-mail gives ERROR_CORE (HTTP 400) and nothing is stored (the crm.contact.add page)."""
    status, body = api("crm.contact.add", {"fields": {"NAME": "A", "EMAIL": [{"VALUE": "not-an-email"}]}})
    assert status == 400 and body["error"] == "ERROR_CORE" and "e-mail" in body["error_description"]
    assert api.emu.records["contact"] == {}


def test_value_normalisation(api):
    """Y/N flags, money with two decimals (comma accepted), ints as strings, dates with offset (the crm.deal.get
    page; ConvertDate in the portal's source)."""
    deal_id = api.ok("crm.deal.add", {"fields": {"OPENED": "N", "OPPORTUNITY": "1 234,5", "PROBABILITY": "30",
                                                 "CLOSEDATE": "2026-12-31", "IS_RECURRING": True}})
    deal = api.ok("crm.deal.get", {"id": deal_id})
    assert deal["OPENED"] == "N" and deal["IS_RECURRING"] == "Y"
    assert deal["OPPORTUNITY"] == "1234.50" and deal["PROBABILITY"] == "30"
    assert deal["CLOSEDATE"] == "2026-12-31T03:00:00+03:00"


def test_empty_string_clears_date(api):
    """an empty string on a date field clears it; an empty date reads as '' (the portal's source,
    internalizeFields)."""
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "BIRTHDATE": "1990-02-03"}})
    assert api.ok("crm.contact.get", {"id": contact_id})["BIRTHDATE"] == "1990-02-03T03:00:00+03:00"
    api.ok("crm.contact.update", {"id": contact_id, "fields": {"BIRTHDATE": ""}})
    assert api.ok("crm.contact.get", {"id": contact_id})["BIRTHDATE"] == ""


def test_fields_metadata_shape(api):
    """crm.*.fields returns {FIELD: {type, isRequired, isReadOnly, isImmutable, isMultiple, isDynamic, title}}
    (the crm.contact.fields page)."""
    meta = api.ok("crm.contact.fields")
    assert meta["ID"] == {"type": "integer", "isRequired": False, "isReadOnly": True, "isImmutable": False,
                          "isMultiple": False, "isDynamic": False, "title": "ID"}
    assert meta["NAME"]["isRequired"] is True
    assert meta["PHONE"]["type"] == "crm_multifield" and meta["PHONE"]["isMultiple"] is True
    assert meta["SOURCE_ID"]["statusType"] == "SOURCE"
    deal_meta = api.ok("crm.deal.fields")
    assert deal_meta["CATEGORY_ID"]["isImmutable"] is True
    assert set(api.ok("crm.company.fields")) >= {"TITLE", "EMAIL", "IS_MY_COMPANY"}
    assert "STATUS_ID" in api.ok("crm.lead.fields")


def test_user_fields_option():
    """user fields (option) are isDynamic, stored and returned by get (the crm.contact.userfield.add and
    crm.contact.fields pages)."""
    api = make_api(user_fields={"contact": ["UF_CRM_SOURCE"]})
    meta = api.ok("crm.contact.fields")["UF_CRM_SOURCE"]
    assert meta["isDynamic"] is True and meta["title"] == "UF_CRM_SOURCE" and "listLabel" in meta
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "UF_CRM_SOURCE": "web"}})
    assert api.ok("crm.contact.get", {"id": contact_id})["UF_CRM_SOURCE"] == "web"


def test_findbycomm(api):
    """findbycomm returns {TYPE: [int ids]} across leads, contacts and companies (the crm.duplicate.findbycomm
    page)."""
    api.ok("crm.contact.add", {"fields": {"NAME": "A", "PHONE": [{"VALUE": "+7 (999) 123-45-67"}],
                                          "EMAIL": [{"VALUE": "Ann@Example.com"}]}})
    api.ok("crm.lead.add", {"fields": {"TITLE": "L", "EMAIL": [{"VALUE": "ann@example.com"}]}})
    api.ok("crm.company.add", {"fields": {"TITLE": "C", "PHONE": [{"VALUE": "79991234567"}]}})
    assert api.ok("crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["ann@example.com"]}) == \
        {"LEAD": [1], "CONTACT": [1]}
    assert api.ok("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["+79991234567"]}) == \
        {"CONTACT": [1], "COMPANY": [1]}
    assert api.ok("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["+79991234567"],
                                               "entity_type": "COMPANY"}) == {"COMPANY": [1]}


def test_findbycomm_nothing_is_empty_list(api):
    """findbycomm with no match returns [] (an empty PHP array) (the crm.duplicate.findbycomm page)."""
    assert api.ok("crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["none@x.io"]}) == []


def test_findbycomm_errors(api):
    """findbycomm errors use error '' and HTTP 400 (the crm.duplicate.findbycomm page; the portal's source,
    CCrmDuplicateRestProxy)."""
    cases = [
        ({"values": ["a"]}, "Communication type is not defined."),
        ({"type": "FAX", "values": ["a"]}, "Communication type 'FAX' is not supported in current context."),
        ({"type": "EMAIL"}, "Communication values is not defined."),
        ({"type": "EMAIL", "values": "a@b.c"}, "Communication values is not defined."),
        ({"type": "EMAIL", "values": ["a@b.c"], "entity_type": "DEAL"}, "Deal is not supported in current context."),
    ]
    for payload, text in cases:
        assert api("crm.duplicate.findbycomm", payload) == (400, {"error": "", "error_description": text})


def test_findbycomm_values_capped_at_20(api):
    """at most 20 values are looked at (the crm.duplicate.findbycomm page)."""
    for i in range(22):
        api.ok("crm.contact.add", {"fields": {"NAME": f"n{i}", "EMAIL": [{"VALUE": f"u{i}@x.io"}]}})
    found = api.ok("crm.duplicate.findbycomm", {"type": "EMAIL", "values": [f"u{i}@x.io" for i in range(22)]})
    assert found == {"CONTACT": list(range(1, 21))}


def test_records_exposed_by_int_id(api):
    """emu.records[entity] maps int id -> stored record."""
    api.ok("crm.company.add", {"fields": {"TITLE": "Acme"}})
    assert api.emu.records["company"][1]["TITLE"] == "Acme"
    assert api.emu.records["company"][1]["DATE_CREATE"] == api.emu.clock.iso(T0)


@pytest.mark.parametrize("entity", ["contact", "deal"])
def test_keyset_pages_bounded_on_both_sides_and_either_way_up(entity):
    """start=-1 in ID order, ascending or descending, within ">ID"/"<=ID" bounds (the nTopCount query on the
    primary key, https://apidocs.bitrix24.com/settings/performance/huge-data.html): the same rows, in the same
    order, as the plain sorted listing gives."""
    api = make_api(limits=False)
    ids = [api.ok(f"crm.{entity}.add", {"fields": {"NAME": f"n{i}", "TITLE": f"t{i}"}}) for i in range(120)]
    api.ok(f"crm.{entity}.delete", {"id": ids[30]})
    live = [i for i in ids if i != ids[30]]
    for order, bounds in ((("ASC"), {">ID": ids[10], "<=ID": ids[70]}), ("DESC", {">ID": ids[10], "<=ID": ids[70]}),
                          ("DESC", {}), ("ASC", {"<ID": ids[5]})):
        page = api.ok(f"crm.{entity}.list", {"order": {"ID": order}, "filter": bounds, "select": ["ID"], "start": -1})
        wanted = [i for i in live if (">ID" not in bounds or i > bounds[">ID"]) and
                  ("<=ID" not in bounds or i <= bounds["<=ID"]) and ("<ID" not in bounds or i < bounds["<ID"])]
        wanted = (sorted(wanted, reverse=order == "DESC"))[:50]
        assert [int(r["ID"]) for r in page] == wanted, (order, bounds)
