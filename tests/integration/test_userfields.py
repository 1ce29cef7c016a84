"""User fields and labels over real HTTP: our app and the emulator, no mocks.

Each user-field type is created, listed, used in a record and deleted; a duplicate is a 409; bad
input is a 400 before the portal hears of it; fields, lists and records carry labels, from a cache
that a change through our API or a user-field event from the portal drops.
"""

from __future__ import annotations

import pytest
import requests

from tests.integration.test_e2e import wait_for

# type -> (extra fields of the definition, a value to store, what the portal answers for it)
TYPES = {
    "string": ({}, "hello", "hello"),
    "integer": ({}, 42, "42"),
    "double": ({"SETTINGS": {"PRECISION": 2}}, 3.14159, "3.14"),
    "boolean": ({}, True, "1"),
    # the portal answers dates in its own time zone (the emulator's is +03:00)
    "date": ({}, "2024-05-06", "2024-05-06T03:00:00+03:00"),
    "datetime": ({}, "2024-05-06T10:20:30+00:00", "2024-05-06T13:20:30+03:00"),
    "money": ({}, "100|USD", "100|USD"),
    "url": ({}, "https://example.com/a", "https://example.com/a"),
    "crm": ({"SETTINGS": {"CONTACT": "Y"}}, "C_1", "C_1"),
    "crm_status": ({"SETTINGS": {"ENTITY_TYPE": "SOURCE"}}, "WEB", "WEB"),
    "employee": ({}, 1, "1"),
}


def _status_name(stack, directory, status_id):
    """What the portal itself calls a directory's item (crm.status.entity.items)."""
    items = requests.post(stack.emulator_server.base + "crm.status.entity.items", json={"entityId": directory},
                          timeout=5).json()["result"]
    return next(i["NAME"] for i in items if i["STATUS_ID"] == status_id)


def _uf(stack, entity="deals", path=""):
    return f"{stack.api}/clients/1/{entity}/userfields{path}"


def _loc(stack, answer):
    return stack.app_server.url + answer.headers["Location"]


def _create(stack, fields, entity="deals"):
    r = stack.http.post(_uf(stack, entity), json={"fields": fields})
    assert r.status_code == 201, r.text
    return r


@pytest.mark.parametrize("type_id", list(TYPES))
def test_each_type_is_created_listed_used_and_deleted(stack, type_id):
    extra, value, stored = TYPES[type_id]
    http = stack.http
    name = f"T_{type_id.upper()}"
    r = _create(stack, {"FIELD_NAME": name, "USER_TYPE_ID": type_id, "EDIT_FORM_LABEL": {"en": f"My {type_id}"},
                        **extra})
    uf_id = r.json()["result"]
    assert isinstance(uf_id, int)
    assert r.headers["Location"].endswith(f"/api/bitrix/clients/1/deals/userfields/{uf_id}")

    got = http.get(_loc(stack, r)).json()["result"]
    assert got["FIELD_NAME"] == f"UF_CRM_{name}" and got["USER_TYPE_ID"] == type_id and got["ID"] == str(uf_id)
    assert got["EDIT_FORM_LABEL"]["en"] == f"My {type_id}"

    listed = http.get(_uf(stack), params={"lang": "en"}).json()
    row = next(f for f in listed["result"] if f["ID"] == str(uf_id))
    assert row["EDIT_FORM_LABEL"] == f"My {type_id}" and listed["total"] == len(listed["result"])
    assert [f["ID"] for f in http.get(_uf(stack), params={"name": name}).json()["result"]] == [str(uf_id)]

    fields = http.get(f"{stack.api}/clients/1/deals/fields").json()["result"]
    assert fields[f"UF_CRM_{name}"]["label"] == f"My {type_id}"

    deal = http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "uses a UF", f"UF_CRM_{name}": value})
    assert deal.status_code == 201, deal.text
    record = http.get(f"{stack.api}/clients/1/deals/{deal.json()['result']}").json()["result"]
    assert record[f"UF_CRM_{name}"] == stored

    assert http.delete(_loc(stack, r)).json() == {"result": True}
    gone = http.get(_loc(stack, r))
    assert gone.status_code == 404 and gone.json()["error"] == "USERFIELD_NOT_FOUND"
    assert f"UF_CRM_{name}" not in http.get(f"{stack.api}/clients/1/deals/fields").json()["result"]


def test_enumeration_multiple_and_mandatory(stack):
    http = stack.http
    r = _create(stack, {"FIELD_NAME": "COLOURS", "USER_TYPE_ID": "enumeration", "MULTIPLE": True, "LABEL": "Colours",
                        "LIST": [{"VALUE": "Red", "SORT": 10}, {"VALUE": "Green", "SORT": 20}]}, entity="contacts")
    got = http.get(_loc(stack, r)).json()["result"]
    assert got["MULTIPLE"] == "Y" and [i["VALUE"] for i in got["LIST"]] == ["Red", "Green"]
    red, green = (i["ID"] for i in got["LIST"])
    contact = _contact(stack, {"NAME": "Ada", "UF_CRM_COLOURS": [red, green]})
    record = http.get(f"{stack.api}/clients/1/contacts/{contact}", params={"labels": 1}).json()["result"]
    assert record["UF_CRM_COLOURS"] == [red, green]
    assert record["labels"]["UF_CRM_COLOURS"] == ["Red", "Green"]

    mandatory = _create(stack, {"FIELD_NAME": "MUST", "USER_TYPE_ID": "string", "MANDATORY": "Y", "LABEL": "Must"},
                        entity="contacts")
    refused = http.post(f"{stack.api}/clients/1/contacts", json={"NAME": "Bob"})
    assert refused.status_code == 400 and "Must" in refused.json()["error_description"]
    assert http.get(_loc(stack, mandatory)).json()["result"]["MANDATORY"] == "Y"


def _contact(stack, fields):
    r = stack.http.post(f"{stack.api}/clients/1/contacts", json=fields)
    assert r.status_code == 201, r.text
    return r.json()["result"]


def test_file_field_is_created_and_deleted(stack):
    r = _create(stack, {"FIELD_NAME": "CONTRACT", "USER_TYPE_ID": "file", "MULTIPLE": "Y"}, entity="companies")
    assert stack.http.get(_loc(stack, r)).json()["result"]["USER_TYPE_ID"] == "file"
    assert stack.http.delete(_loc(stack, r)).json() == {"result": True}


def test_a_duplicate_is_409_naming_the_existing_field_and_nothing_is_created(stack):
    first = _create(stack, {"FIELD_NAME": "NPS", "USER_TYPE_ID": "integer"}).json()["result"]
    stack.emulator.reset_counters()
    for spelling in ("NPS", "uf_nps", "UF_CRM_NPS"):
        r = stack.http.post(_uf(stack), json={"fields": {"FIELD_NAME": spelling, "USER_TYPE_ID": "integer"}})
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["error"] == "USERFIELD_EXISTS" and body["id"] == first and body["field_name"] == "UF_CRM_NPS"
        assert str(first) in body["error_description"]
    assert stack.emulator.counters.by_method.get("crm.deal.userfield.add", 0) == 0
    names = [f["FIELD_NAME"] for f in stack.http.get(_uf(stack)).json()["result"]]
    assert names.count("UF_CRM_NPS") == 1
    # Another entity may have the same name.
    assert stack.http.post(_uf(stack, "leads"), json={"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "integer"}}
                           ).status_code == 201


@pytest.mark.parametrize("fields,code,field", [
    ({"USER_TYPE_ID": "string"}, "INVALID_FIELD_NAME", "fields.FIELD_NAME"),
    ({"FIELD_NAME": "bad-name", "USER_TYPE_ID": "string"}, "INVALID_FIELD_NAME", "fields.FIELD_NAME"),
    ({"FIELD_NAME": "Ä", "USER_TYPE_ID": "string"}, "INVALID_FIELD_NAME", "fields.FIELD_NAME"),
    ({"FIELD_NAME": "X" * 44, "USER_TYPE_ID": "string"}, "INVALID_FIELD_NAME", "fields.FIELD_NAME"),
    ({"FIELD_NAME": "NPS"}, "INVALID_USER_TYPE", "fields.USER_TYPE_ID"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "colour"}, "INVALID_USER_TYPE", "fields.USER_TYPE_ID"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "enumeration"}, "INVALID_LIST", "fields.LIST"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "enumeration", "LIST": [{"SORT": 1}]}, "INVALID_LIST",
     "fields.LIST[0].VALUE"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "boolean", "MULTIPLE": True}, "INVALID_FLAG", "fields.MULTIPLE"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "MULTIPLE": "yes"}, "INVALID_FLAG", "fields.MULTIPLE"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "MULTIPLY": "Y"}, "INVALID_FIELDS", "fields.MULTIPLY"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "LABEL": 5}, "INVALID_LABEL", "fields.LABEL"),
])
def test_bad_definitions_are_400_before_the_portal_is_called(stack, fields, code, field):
    r = stack.http.post(_uf(stack), json={"fields": fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code and r.json()["field"] == field
    assert stack.emulator.counters.by_method.get("crm.deal.userfield.add", 0) == 0
    assert stack.emulator.counters.by_method.get("crm.deal.userfield.list", 0) == 0


def test_the_longest_name_the_docs_allow_is_accepted(stack):
    r = _create(stack, {"FIELD_NAME": "X" * 43, "USER_TYPE_ID": "string"})
    assert stack.http.get(_loc(stack, r)).json()["result"]["FIELD_NAME"] == "UF_CRM_" + "X" * 43


def test_update_changes_labels_and_items_and_refuses_immutable_keys(stack):
    http = stack.http
    r = _create(stack, {"FIELD_NAME": "TIER", "USER_TYPE_ID": "enumeration", "LABEL": "Tier",
                        "LIST": [{"VALUE": "Gold"}]})
    url = _loc(stack, r)
    for key, value in (("USER_TYPE_ID", "string"), ("FIELD_NAME", "OTHER"), ("MULTIPLE", "Y")):
        refused = http.patch(url, json={"fields": {key: value}})
        assert refused.status_code == 400 and refused.json()["error"] == "USERFIELD_IMMUTABLE"
    assert http.patch(url, json={"fields": {"EDIT_FORM_LABEL": "Customer tier", "LIST": [{"VALUE": "Silver"}]}}
                      ).json() == {"result": True}
    got = http.get(url).json()["result"]
    assert got["EDIT_FORM_LABEL"]["en"] == "Customer tier" and [i["VALUE"] for i in got["LIST"]] == ["Gold", "Silver"]
    missing = http.patch(_uf(stack, path="/99999"), json={"fields": {"SORT": 5}})
    assert missing.status_code == 404 and missing.json()["error"] == "USERFIELD_NOT_FOUND"


def test_another_entitys_field_is_not_found_here(stack):
    r = _create(stack, {"FIELD_NAME": "ONLY_DEALS", "USER_TYPE_ID": "string"})
    uf_id = r.json()["result"]
    for method in ("get", "delete"):
        answer = getattr(stack.http, method)(_uf(stack, "contacts", f"/{uf_id}"))
        assert answer.status_code == 404 and answer.json()["error"] == "USERFIELD_NOT_FOUND", answer.text
    assert stack.http.get(_loc(stack, r)).status_code == 200


def test_userfield_types(stack):
    result = stack.http.get(f"{stack.api}/clients/1/userfield-types").json()["result"]
    assert {"ID": "enumeration", "title": "List"} in result and {t["ID"] for t in result} >= set(TYPES)


def test_routes_are_not_swallowed_by_the_record_rules(stack):
    http, api = stack.http, stack.api
    assert http.get(f"{api}/clients/1/deals/userfields").status_code == 200
    r = http.patch(f"{api}/clients/1/deals/userfields", json={"fields": {"X": 1}})
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) >= {"GET", "POST"}
    r = http.post(f"{api}/clients/1/userfield-types", json={})
    assert r.status_code == 405 and r.json()["error"] == "METHOD_NOT_ALLOWED"
    bad = http.get(f"{api}/clients/1/deals/userfields/abc")
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_ID" and bad.json()["field"] == "uf_id"
    r = http.get(f"{api}/clients/1/activities/userfields")
    assert r.status_code == 404 and r.json()["error"] == "UNKNOWN_ENTITY"
    r = http.get(f"{api}/clients/1/widgets/userfields")
    assert r.status_code == 404 and r.json()["error"] == "UNKNOWN_ENTITY"


# ----------------------------------------------------------------------------------------------
# Labels


def test_fields_carry_labels_and_the_values_of_status_and_enumeration_fields(stack):
    _create(stack, {"FIELD_NAME": "TIER", "USER_TYPE_ID": "enumeration", "EDIT_FORM_LABEL": "Customer tier",
                    "LIST": [{"VALUE": "Gold"}, {"VALUE": "Silver"}]})
    fields = stack.http.get(f"{stack.api}/clients/1/deals/fields").json()["result"]
    assert fields["TITLE"]["label"] == fields["TITLE"]["title"] and "values" not in fields["TITLE"]
    stage = fields["STAGE_ID"]
    assert stage["label"] == stage["title"] and stage["statusType"] == "DEAL_STAGE"
    stages = {v["id"]: v for v in stage["values"]}
    assert stages["WON"]["label"] == _status_name(stack, "DEAL_STAGE", "WON") == "Deal successful" and stages["WON"]["status_type"] == "DEAL_STAGE"
    assert {"id": "SALE", "label": _status_name(stack, "DEAL_TYPE", "SALE"), "status_type": "DEAL_TYPE"} \
        in fields["TYPE_ID"]["values"]
    tier = fields["UF_CRM_TIER"]
    assert tier["title"] == "UF_CRM_TIER" and tier["label"] == "Customer tier"
    assert [v["label"] for v in tier["values"]] == ["Gold", "Silver"]
    assert [v["id"] for v in tier["values"]] == [i["ID"] for i in tier["items"]]


def test_list_and_get_take_labels(stack):
    http, api = stack.http, stack.api
    r = _create(stack, {"FIELD_NAME": "TIER", "USER_TYPE_ID": "enumeration", "LIST": [{"VALUE": "Gold"}]})
    gold = http.get(_loc(stack, r)).json()["result"]["LIST"][0]["ID"]
    deal = http.post(f"{api}/clients/1/deals", json={"TITLE": "D", "STAGE_ID": "WON", "TYPE_ID": "SALE",
                                                     "UF_CRM_TIER": gold}).json()["result"]
    plain = http.get(f"{api}/clients/1/deals/{deal}").json()["result"]
    assert "labels" not in plain
    record = http.get(f"{api}/clients/1/deals/{deal}", params={"labels": 1}).json()["result"]
    won, sale = _status_name(stack, "DEAL_STAGE", "WON"), _status_name(stack, "DEAL_TYPE", "SALE")
    assert record["STAGE_ID"] == "WON" and record["labels"]["STAGE_ID"] == won
    assert record["labels"]["UF_CRM_TIER"] == "Gold" and record["labels"]["TYPE_ID"] == sale
    page = http.get(f"{api}/clients/1/deals", params={"labels": "1", "filter[ID]": deal,
                                                      "select[]": ["ID", "STAGE_ID", "UF_CRM_TIER"]}).json()
    assert page["result"] == [{"ID": str(deal), "STAGE_ID": "WON", "UF_CRM_TIER": gold,
                               "labels": {"STAGE_ID": won, "UF_CRM_TIER": "Gold"}}]
    streamed = http.get(f"{api}/clients/1/deals", params={"labels": 1, "all": 1, "select[]": ["ID", "STAGE_ID"]})
    assert streamed.status_code == 200
    assert {"ID": str(deal), "STAGE_ID": "WON", "labels": {"STAGE_ID": won}} in streamed.json()["result"]
    bad = http.get(f"{api}/clients/1/deals", params={"labels": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_LABELS"


def test_stages_of_other_pipelines_have_labels(stack):
    portal = requests.post(stack.emulator_server.base + "crm.category.add",
                           json={"entityTypeId": 2, "fields": {"name": "Partners"}}, timeout=5).json()
    category = portal["result"]["category"]["id"]
    deal = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "P", "CATEGORY_ID": category,
                                                                  "STAGE_ID": f"C{category}:WON"}).json()["result"]
    record = stack.http.get(f"{stack.api}/clients/1/deals/{deal}", params={"labels": 1}).json()["result"]
    won = _status_name(stack, f"DEAL_STAGE_{category}", f"C{category}:WON")
    assert record["STAGE_ID"] == f"C{category}:WON" and record["labels"]["STAGE_ID"] == won
    values = stack.http.get(f"{stack.api}/clients/1/deals/fields").json()["result"]["STAGE_ID"]["values"]
    assert {"id": f"C{category}:WON", "label": won, "status_type": f"DEAL_STAGE_{category}"} in values


def test_labels_are_cached_per_portal(stack):
    http, api = stack.http, stack.api
    http.get(f"{api}/clients/1/deals/fields")
    stack.emulator.reset_counters()
    deal = http.post(f"{api}/clients/1/deals", json={"TITLE": "D"}).json()["result"]
    for _ in range(3):
        assert http.get(f"{api}/clients/1/deals/fields").status_code == 200
        assert http.get(f"{api}/clients/1/deals/{deal}", params={"labels": 1}).status_code == 200
    by_method = stack.emulator.counters.by_method
    assert by_method.get("crm.deal.fields", 0) == 0 and by_method.get("batch", 0) == 0
    # A second client on the same portal shares the entry; fresh=1 reads the portal again.
    stack.configure(client_id=2)
    assert http.get(f"{api}/clients/2/deals/fields").status_code == 200
    assert stack.emulator.counters.by_method.get("batch", 0) == 0
    assert http.get(f"{api}/clients/2/deals/fields", params={"fresh": 1}).status_code == 200
    assert stack.emulator.counters.by_method.get("batch", 0) == 2


def test_a_change_through_our_api_drops_the_cache(stack):
    http, api = stack.http, stack.api
    r = _create(stack, {"FIELD_NAME": "TIER", "USER_TYPE_ID": "enumeration", "LABEL": "Tier",
                        "LIST": [{"VALUE": "Gold"}]})
    assert http.get(f"{api}/clients/1/deals/fields").json()["result"]["UF_CRM_TIER"]["label"] == "Tier"
    http.patch(_loc(stack, r), json={"fields": {"EDIT_FORM_LABEL": "Customer tier",
                                                       "LIST": [{"VALUE": "Platinum"}]}})
    tier = http.get(f"{api}/clients/1/deals/fields").json()["result"]["UF_CRM_TIER"]
    assert tier["label"] == "Customer tier" and [v["label"] for v in tier["values"]] == ["Gold", "Platinum"]
    http.delete(_loc(stack, r))
    assert "UF_CRM_TIER" not in http.get(f"{api}/clients/1/deals/fields").json()["result"]


def test_a_userfield_event_from_the_portal_drops_the_cache(stack):
    """A field changed on the portal itself (its UI, another app): ONCRMDEALUSERFIELDUPDATE arrives."""
    http, api = stack.http, stack.api
    uf_id = _create(stack, {"FIELD_NAME": "TIER", "USER_TYPE_ID": "string", "LABEL": "Tier"}).json()["result"]
    assert stack.emulator.wait_events(30)
    assert http.get(f"{api}/clients/1/deals/fields").json()["result"]["UF_CRM_TIER"]["label"] == "Tier"
    sent = len(stack.emulator.events_sent)
    answer = requests.post(stack.emulator_server.base + "crm.deal.userfield.update",
                           json={"id": uf_id, "fields": {"EDIT_FORM_LABEL": "Renamed on the portal"}}, timeout=5)
    assert answer.json() == {"result": True, "time": answer.json()["time"]}
    assert wait_for(lambda: len(stack.emulator.events_sent) > sent)
    assert stack.emulator.events_sent[-1]["status"] == 200
    label = http.get(f"{api}/clients/1/deals/fields").json()["result"]["UF_CRM_TIER"]["label"]
    assert label == "Renamed on the portal"


def test_the_document_lists_user_fields_for_the_entities_that_have_them(stack):
    doc = stack.http.get(f"{stack.api}/openapi.json").json()
    paths = {p for p in doc["paths"] if "userfield" in p}
    entities = ("contacts", "deals", "leads", "companies")
    assert paths == {f"/api/bitrix/clients/{{client_id}}/{e}/userfields{tail}" for e in entities
                     for tail in ("", "/{uf_id}")} | {"/api/bitrix/clients/{client_id}/userfield-types"}
    one = doc["paths"]["/api/bitrix/clients/{client_id}/deals/userfields"]
    assert one["post"]["operationId"] == "createDealUserfield" and one["get"]["operationId"] == "listDealUserfields"
    assert "409" in one["post"]["responses"]
    record = doc["paths"]["/api/bitrix/clients/{client_id}/deals/{record_id}"]["get"]
    assert [p["name"] for p in record["parameters"] if p["in"] == "query"] == ["labels"]
