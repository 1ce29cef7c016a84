"""CRM user fields: crm.*.userfield.* and how a field made there lives on its entity.

Sources: https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-add.html,
.../crm-deal-userfield-get.html, .../crm-deal-userfield-list.html, .../crm-deal-userfield-update.html,
.../crm-deal-userfield-delete.html, .../events/on-crm-deal-user-field-add.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-types.html,
.../crm-userfield-fields.html, .../crm-userfield-enumeration-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/companies/crm-company-fields.html (a UF in crm.*.fields),
https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-list.html (null/false of empty UFs);
the portal's source modules/rest/lib/userfieldproxy.php. Choices the sources leave open are listed in
bitrix24_emulator/userfields.py.
"""

from __future__ import annotations

from .conftest import make_api


def add_field(api, entity="deal", **fields):
    return api.ok(f"crm.{entity}.userfield.add", {"fields": fields})


def test_add_normalises_the_name_and_get_answers_strings_and_label_maps(api):
    first = add_field(api, FIELD_NAME="budget_note", USER_TYPE_ID="string", LABEL="Note", SHOW_FILTER="Y",
                      EDIT_FORM_LABEL={"de": "Notiz"}, LIST_COLUMN_LABEL="Column", MULTIPLE="Y")
    assert isinstance(first, int)
    assert add_field(api, FIELD_NAME="UF_SECOND", USER_TYPE_ID="integer") == first + 1
    third = add_field(api, FIELD_NAME="UF_CRM_THIRD", USER_TYPE_ID="boolean", MULTIPLE="Y", SORT=0)
    field = api.ok("crm.deal.userfield.get", {"id": first})
    assert field["FIELD_NAME"] == "UF_CRM_BUDGET_NOTE" and field["ENTITY_ID"] == "CRM_DEAL"
    assert field["ID"] == str(first) and field["SORT"] == "100" and field["XML_ID"] is None
    assert (field["MULTIPLE"], field["MANDATORY"], field["SHOW_FILTER"]) == ("Y", "N", "E")  # Y is stored as E
    assert (field["SHOW_IN_LIST"], field["EDIT_IN_LIST"], field["IS_SEARCHABLE"]) == ("Y", "Y", "N")
    assert field["EDIT_FORM_LABEL"] == {"en": "Note", "de": "Notiz", "ru": "Note"}
    assert field["LIST_COLUMN_LABEL"] == {"en": "Column", "de": "Column", "ru": "Column"}
    assert field["HELP_MESSAGE"] == {"en": "Note", "de": "Note", "ru": "Note"}
    assert field["SETTINGS"] == {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0,
                                 "DEFAULT_VALUE": ""}
    assert "LIST" not in field
    second = api.ok("crm.deal.userfield.get", {"id": first + 1})
    assert second["FIELD_NAME"] == "UF_CRM_SECOND" and second["EDIT_FORM_LABEL"]["de"] == "UF_CRM_SECOND"
    boolean = api.ok("crm.deal.userfield.get", {"id": third})
    assert boolean["FIELD_NAME"] == "UF_CRM_THIRD" and boolean["MULTIPLE"] == "N"  # never multiple
    assert boolean["SORT"] == "100" and boolean["SETTINGS"]["DEFAULT_VALUE"] == 0


def test_add_refusals_and_their_codes(api):
    status, body = api("crm.deal.userfield.add", {"fields": {"LABEL": "x"}})
    assert (status, body["error"]) == (400, "")
    assert body["error_description"] == "The 'USER_TYPE_ID' field is not found.\nThe 'FIELD_NAME' field is not found."
    status, body = api("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "A" * 44, "USER_TYPE_ID": "string"}})
    assert (status, body) == (400, {"error": "ERROR_CORE",
                                    "error_description": "Field name is too long (more than 50 characters)."})
    assert api.ok("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "A" * 43, "USER_TYPE_ID": "string"}}) > 0
    status, body = api("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "bad-name", "USER_TYPE_ID": "string"}})
    assert (status, body["error"]) == (400, "ERROR_CORE")
    assert body["error_description"] == ("Field name contains invalid characters. "
                                         "Allowed characters are: A-Z, 0-9 and _.")
    status, body = api("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "OK", "USER_TYPE_ID": "nonsense"}})
    assert (status, body["error"], body["error_description"]) == (400, "ERROR_CORE", "Incorrect custom type specified.")
    add_field(api, FIELD_NAME="TWICE", USER_TYPE_ID="string")
    status, body = api("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "uf_twice", "USER_TYPE_ID": "integer"}})
    assert (status, body["error"]) == (400, "ERROR_CORE")
    assert body["error_description"] == "The field UF_CRM_TWICE for entity CRM_DEAL already exists."
    assert add_field(api, "lead", FIELD_NAME="TWICE", USER_TYPE_ID="string") > 0  # unique per entity only
    assert api("crm.deal.userfield.add", {"fields": "x"})[1]["error_description"] == \
        "Parameter 'fields' must be array."


def test_get_update_delete_refusals(api):
    lead_field = add_field(api, "lead", FIELD_NAME="L", USER_TYPE_ID="string")
    for method in ("get", "update", "delete"):
        assert api(f"crm.deal.userfield.{method}", {"id": 0}) == (
            400, {"error": "", "error_description": "ID is not defined or invalid."})
        assert api(f"crm.deal.userfield.{method}", {"id": 999, "fields": {}}) == (
            400, {"error": "ERROR_NOT_FOUND", "error_description": "The entity with ID '999' is not found."})
        assert api(f"crm.deal.userfield.{method}", {"id": lead_field, "fields": {}}) == (
            400, {"error": "", "error_description": "Access denied."})
    assert api.ok("crm.lead.userfield.get", {"id": lead_field})["ENTITY_ID"] == "CRM_LEAD"


def test_enumeration_items_and_list_update(api):
    field_id = add_field(api, FIELD_NAME="COLOR", USER_TYPE_ID="enumeration", LABEL="Color", LIST=[
        {"VALUE": "Red", "DEF": "Y", "SORT": 20}, {"VALUE": "Green", "SORT": 10, "XML_ID": "g", "DEF": "Y"},
        {"VALUE": "  "}])
    items = api.ok("crm.deal.userfield.get", {"id": field_id})["LIST"]
    assert [(i["VALUE"], i["SORT"], i["DEF"]) for i in items] == [("Green", "10", "N"), ("Red", "20", "Y")]
    assert set(items[0]) == {"ID", "SORT", "VALUE", "DEF", "XML_ID"} and items[0]["XML_ID"] == "g"
    assert all(isinstance(i["ID"], str) for i in items) and len(items[1]["XML_ID"]) == 32
    green, red = items[0]["ID"], items[1]["ID"]
    assert api.ok("crm.deal.userfield.update", {"id": field_id, "fields": {"LIST": [
        {"ID": green, "DEL": "Y"}, {"ID": red, "VALUE": "Crimson"}, {"VALUE": "Blue", "SORT": 5}]}}) is True
    items = api.ok("crm.deal.userfield.get", {"id": field_id})["LIST"]
    assert [(i["VALUE"], i["SORT"]) for i in items] == [("Blue", "5"), ("Crimson", "20")]
    assert items[1]["ID"] == red and green not in {i["ID"] for i in items}
    assert api.ok("crm.deal.fields")["UF_CRM_COLOR"]["items"] == [
        {"ID": items[0]["ID"], "VALUE": "Blue"}, {"ID": red, "VALUE": "Crimson"}]
    status, body = api("crm.deal.userfield.update", {"id": field_id, "fields": {"LIST": [
        {"VALUE": "Another", "XML_ID": items[1]["XML_ID"]}]}})
    assert (status, body["error"]) == (400, "ERROR_CORE") and "already exists" in body["error_description"]
    described = api.ok("crm.userfield.enumeration.fields")
    assert set(described) == {"ID", "SORT", "VALUE", "DEF", "DEL"} and described["ID"]["isReadOnly"] is True


def test_update_changes_what_may_change_and_keeps_the_rest(api):
    field_id = add_field(api, FIELD_NAME="NOTE", USER_TYPE_ID="string", LABEL="Note",
                         SETTINGS={"DEFAULT_VALUE": "x", "ROWS": 3})
    assert api.ok("crm.deal.userfield.update", {"id": field_id, "fields": {
        "FIELD_NAME": "OTHER", "USER_TYPE_ID": "integer", "MULTIPLE": "Y", "MANDATORY": "Y", "SHOW_FILTER": "N",
        "SORT": 300, "XML_ID": "note", "EDIT_FORM_LABEL": {"de": "Notiz"}, "SETTINGS": {"ROWS": 5}}}) is True
    field = api.ok("crm.deal.userfield.get", {"id": field_id})
    assert (field["FIELD_NAME"], field["USER_TYPE_ID"], field["MULTIPLE"]) == ("UF_CRM_NOTE", "string", "N")
    assert (field["MANDATORY"], field["SHOW_FILTER"], field["SORT"], field["XML_ID"]) == ("Y", "N", "300", "note")
    assert field["EDIT_FORM_LABEL"] == {"en": "", "de": "Notiz", "ru": ""}  # a map overwrites every language
    assert field["LIST_COLUMN_LABEL"]["en"] == "Note"  # not given: kept
    assert field["SETTINGS"]["ROWS"] == 5 and field["SETTINGS"]["DEFAULT_VALUE"] == "x"
    meta = api.ok("crm.deal.fields")["UF_CRM_NOTE"]
    assert meta["isRequired"] is True and meta["formLabel"] == "" and meta["listLabel"] == "Note"


def test_list_has_no_paging_labels_only_with_lang_and_filters(api):
    add_field(api, FIELD_NAME="B", USER_TYPE_ID="integer", SORT=200, LABEL="Bee")
    add_field(api, FIELD_NAME="A", USER_TYPE_ID="string", SORT=200, EDIT_FORM_LABEL={"de": "Ah"}, LABEL="A")
    add_field(api, FIELD_NAME="C", USER_TYPE_ID="string", SORT=50)
    add_field(api, "contact", FIELD_NAME="OTHER", USER_TYPE_ID="string")
    status, body = api("crm.deal.userfield.list")
    assert status == 200 and body["total"] == 3 and "next" not in body
    assert [f["FIELD_NAME"] for f in body["result"]] == ["UF_CRM_C", "UF_CRM_B", "UF_CRM_A"]  # SORT, then ID
    assert "EDIT_FORM_LABEL" not in body["result"][0]
    german = api.ok("crm.deal.userfield.list", {"filter": {"LANG": "de", "USER_TYPE_ID": "string"},
                                                "order": {"FIELD_NAME": "ASC"}})
    assert [(f["FIELD_NAME"], f["EDIT_FORM_LABEL"]) for f in german] == [("UF_CRM_A", "Ah"), ("UF_CRM_C", "UF_CRM_C")]
    assert api.ok("crm.deal.userfield.list", {"filter": {"FIELD_NAME": "uf_crm_b"}})[0]["ID"] == "1"
    assert api("crm.deal.userfield.list", {"filter": "x"})[1]["error_description"] == \
        "Parameter 'filter' must be array."


def test_a_field_becomes_real_on_the_entity(api):
    add_field(api, FIELD_NAME="AMOUNT", USER_TYPE_ID="double", LABEL="Amount", SETTINGS={"PRECISION": 1})
    add_field(api, FIELD_NAME="COUNT", USER_TYPE_ID="integer")
    add_field(api, FIELD_NAME="FLAG", USER_TYPE_ID="boolean")
    add_field(api, FIELD_NAME="DAY", USER_TYPE_ID="date")
    add_field(api, FIELD_NAME="AT", USER_TYPE_ID="datetime")
    add_field(api, FIELD_NAME="PRICE", USER_TYPE_ID="money")
    add_field(api, FIELD_NAME="TAGS", USER_TYPE_ID="string", MULTIPLE="Y")
    add_field(api, FIELD_NAME="PEER", USER_TYPE_ID="crm", SETTINGS={"CONTACT": "Y", "COMPANY": "Y"})
    meta = api.ok("crm.deal.fields")
    assert meta["UF_CRM_AMOUNT"] == {
        "type": "double", "isRequired": False, "isReadOnly": False, "isImmutable": False, "isMultiple": False,
        "isDynamic": True, "title": "UF_CRM_AMOUNT", "listLabel": "Amount", "formLabel": "Amount",
        "filterLabel": "Amount", "settings": {"PRECISION": 1, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0,
                                              "DEFAULT_VALUE": None}}
    assert meta["UF_CRM_TAGS"]["isMultiple"] is True and meta["UF_CRM_PEER"]["settings"] == {
        "CONTACT": "Y", "COMPANY": "Y", "LEAD": None}
    deal_id = api.ok("crm.deal.add", {"fields": {
        "TITLE": "T", "UF_CRM_AMOUNT": "12,345", "UF_CRM_COUNT": "7 pcs", "UF_CRM_FLAG": "Y",
        "UF_CRM_DAY": "2026-12-01", "UF_CRM_AT": "2026-12-01T10:30:00+00:00", "UF_CRM_PRICE": "100.50",
        "UF_CRM_TAGS": ["a", "", "b"], "UF_CRM_PEER": "C_5"}})
    deal = api.ok("crm.deal.get", {"id": deal_id})
    assert deal["UF_CRM_AMOUNT"] == "12.3" and deal["UF_CRM_COUNT"] == "7" and deal["UF_CRM_FLAG"] == "1"
    assert deal["UF_CRM_DAY"] == "2026-12-01T03:00:00+03:00" and deal["UF_CRM_AT"] == "2026-12-01T13:30:00+03:00"
    assert deal["UF_CRM_PRICE"] == "100.5|RUB" and deal["UF_CRM_TAGS"] == ["a", "b"] and deal["UF_CRM_PEER"] == "C_5"
    other = api.ok("crm.deal.add", {"fields": {"TITLE": "U", "UF_CRM_PRICE": "5|USD"}})
    empty = api.ok("crm.deal.get", {"id": other})
    assert empty["UF_CRM_COUNT"] is None and empty["UF_CRM_TAGS"] is False and empty["UF_CRM_FLAG"] == "0"
    assert empty["UF_CRM_PRICE"] == "5|USD"
    rows = api.ok("crm.deal.list", {"filter": {">UF_CRM_COUNT": 5}, "select": ["UF_*"]})
    assert [r["ID"] for r in rows] == [str(deal_id)] and set(rows[0]) >= {"ID", "UF_CRM_TAGS"} \
        and "TITLE" not in rows[0]
    assert [r["ID"] for r in api.ok("crm.deal.list", {"filter": {"UF_CRM_TAGS": "b"}})] == [str(deal_id)]
    assert api.ok("crm.deal.list", {"filter": {"!UF_CRM_TAGS": "b"}, "select": ["UF_CRM_TAGS"]}) == [
        {"ID": str(other), "UF_CRM_TAGS": False}]
    api.ok("crm.deal.update", {"id": other, "fields": {"UF_CRM_TAGS": "c", "UF_CRM_COUNT": ""}})
    assert api.ok("crm.deal.get", {"id": other})["UF_CRM_TAGS"] == ["c"]


def test_enumeration_values_defaults_and_mandatory(api):
    field_id = add_field(api, FIELD_NAME="LEVEL", USER_TYPE_ID="enumeration", LABEL="Level", MANDATORY="Y",
                         LIST=[{"VALUE": "Low"}, {"VALUE": "High", "DEF": "Y"}])
    low, high = (i["ID"] for i in api.ok("crm.deal.userfield.get", {"id": field_id})["LIST"])
    assert api.ok("crm.deal.get", {"id": api.ok("crm.deal.add", {"fields": {}})})["UF_CRM_LEVEL"] == high
    chosen = api.ok("crm.deal.add", {"fields": {"UF_CRM_LEVEL": int(low)}})
    assert api.ok("crm.deal.get", {"id": chosen})["UF_CRM_LEVEL"] == low
    status, body = api("crm.deal.update", {"id": chosen, "fields": {"UF_CRM_LEVEL": ""}})
    assert (status, body) == (400, {"error": "", "error_description": "The required field Level is missing."})
    add_field(api, FIELD_NAME="MUST", USER_TYPE_ID="string", MANDATORY="Y", EDIT_FORM_LABEL="Must have")
    status, body = api("crm.deal.add", {"fields": {"TITLE": "x"}})
    assert (status, body) == (400, {"error": "", "error_description": "The required field Must have is missing."})
    assert api.ok("crm.deal.add", {"fields": {"UF_CRM_MUST": "here"}}) > 0


def test_delete_removes_the_field_from_the_entity_and_its_records(api):
    field_id = add_field(api, "contact", FIELD_NAME="GONE", USER_TYPE_ID="string")
    contact_id = api.ok("crm.contact.add", {"fields": {"NAME": "A", "UF_CRM_GONE": "v"}})
    assert api.ok("crm.contact.userfield.delete", {"id": field_id}) is True
    assert "UF_CRM_GONE" not in api.ok("crm.contact.fields")
    assert "UF_CRM_GONE" not in api.ok("crm.contact.get", {"id": contact_id})
    assert "UF_CRM_GONE" not in api.emu.records["contact"][contact_id]
    assert api("crm.contact.userfield.get", {"id": field_id})[1]["error"] == "ERROR_NOT_FOUND"


def test_reset_forgets_runtime_fields_but_keeps_configured_ones():
    api = make_api(user_fields={"company": ["UF_CRM_SOURCE"]})
    listed = api.ok("crm.company.userfield.list")
    assert [(f["FIELD_NAME"], f["USER_TYPE_ID"]) for f in listed] == [("UF_CRM_SOURCE", "string")]
    add_field(api, "company", FIELD_NAME="TEMP", USER_TYPE_ID="string")
    api.emu.reset()
    assert "UF_CRM_TEMP" not in api.ok("crm.company.fields") and "UF_CRM_SOURCE" in api.ok("crm.company.fields")
    assert [f["FIELD_NAME"] for f in api.ok("crm.company.userfield.list")] == ["UF_CRM_SOURCE"]


def test_user_fields_option_metadata_has_the_real_shape():
    meta = make_api(user_fields={"lead": ["UF_CRM_X"]}).ok("crm.lead.fields")["UF_CRM_X"]
    assert meta["settings"] == {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0,
                                "DEFAULT_VALUE": ""}
    assert (meta["listLabel"], meta["formLabel"], meta["filterLabel"]) == ("UF_CRM_X", "UF_CRM_X", "UF_CRM_X")


def test_events_carry_id_entity_and_name(api):
    sent = []
    api.emu.emit = lambda name, data, context: sent.append((name, dict(data)))
    field_id = add_field(api, "company", FIELD_NAME="EV", USER_TYPE_ID="string")
    api.ok("crm.company.userfield.update", {"id": field_id, "fields": {"SORT": 5}})
    api.ok("crm.company.userfield.delete", {"id": field_id})
    data = {"data[FIELDS][ID]": str(field_id), "data[FIELDS][ENTITY_ID]": "CRM_COMPANY",
            "data[FIELDS][FIELD_NAME]": "UF_CRM_EV"}
    assert sent == [("ONCRMCOMPANYUSERFIELDADD", data), ("ONCRMCOMPANYUSERFIELDUPDATE", data),
                    ("ONCRMCOMPANYUSERFIELDDELETE", data)]


def test_types_and_field_descriptions(api):
    types = api.ok("crm.userfield.types")
    assert types[0] == {"ID": "string", "title": "String"} and {"ID": "crm", "title": "Binding to CRM Entities"} in types
    assert len(types) == 16
    described = api.ok("crm.userfield.fields")
    assert described["FIELD_NAME"] == {"type": "string", "title": "Code", "isImmutable": True}
    assert described["LIST"]["isMultiple"] is True and api.ok("crm.deal.userfield.fields") == described
    assert set(api.ok("crm.userfield.settings.fields", {"type": "double"})) == {"DEFAULT_VALUE", "PRECISION"}
    assert api("crm.userfield.settings.fields")[1]["error_description"] == "Parameter 'type' is not specified or empty."
