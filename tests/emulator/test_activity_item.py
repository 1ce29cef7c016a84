"""crm.activity.* (legacy UPPER_CASE API) and crm.item.* for smart processes: results, errors, batch
references, lists, entity type ids, fm and user fields, ONCRMDYNAMICITEM* events.

Sources, named in the tests below by the method or topic they document:
crm.activity.add, crm.activity.get, crm.activity.update, crm.activity.list and crm.activity.fields:
https://apidocs.bitrix24.com/api-reference/crm/timeline/activities/activity-base/crm-activity-add.html,
https://apidocs.bitrix24.com/api-reference/crm/timeline/activities/activity-base/crm-activity-get.html,
https://apidocs.bitrix24.com/api-reference/crm/timeline/activities/activity-base/crm-activity-update.html,
https://apidocs.bitrix24.com/api-reference/crm/timeline/activities/activity-base/crm-activity-list.html,
https://apidocs.bitrix24.com/api-reference/crm/timeline/activities/activity-base/crm-activity-fields.html;
crm.item.add https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-add.html,
crm.item.get https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-get.html,
crm.item.update https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-update.html,
crm.item.delete https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-delete.html,
crm.item.list https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html,
crm.item.fields https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-fields.html,
batch https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html,
the fast scan https://apidocs.bitrix24.com/settings/performance/huge-data.html,
list paging https://apidocs.bitrix24.com/settings/how-to-call-rest-api/list-methods-pecularities.html.
"The portal's source" is the portal's PHP source: modules/crm/classes/general/restservice.php (the legacy
activity proxy) and modules/rest/classes/general/rest.php (paging).
"""

import pytest
import requests

from bitrix24_emulator import create_emulator, start_server
from bitrix24_emulator.__main__ import _smart_processes as parse_smart_processes
from bitrix24_emulator.__main__ import build_parser

from .conftest import make_api
from .test_http import Receiver

SPA = 128


def activity_fields(**extra):
    return {"OWNER_TYPE_ID": 3, "OWNER_ID": 7, "TYPE_ID": 2, "SUBJECT": "Call Ann", **extra}


def add_item(api, type_id=SPA, **fields):
    return api.ok("crm.item.add", {"entityTypeId": type_id, "fields": fields})["item"]


# ---- crm.activity.* -------------------------------------------------------------------------------

def test_activity_crud_round_trip(api, clock):
    """add returns an int id; get returns strings; update and delete return true (the crm.activity.add,
    crm.activity.get and crm.activity.update pages)."""
    new_id = api.ok("crm.activity.add", {"fields": activity_fields(
        DESCRIPTION="Discuss the offer", START_TIME="2026-12-01T10:00:00+03:00",
        END_TIME="2026-12-01T10:30:00+03:00", DIRECTION=2, PRIORITY=3, RESPONSIBLE_ID=5,
        PROVIDER_ID="VOXIMPLANT_CALL", PROVIDER_TYPE_ID="CALL",
        COMMUNICATIONS=[{"VALUE": "+1 555 0100", "ENTITY_ID": 7, "ENTITY_TYPE_ID": 3, "TYPE": "PHONE"}])})
    assert new_id == 1 and isinstance(new_id, int)
    activity = api.ok("crm.activity.get", {"id": new_id})
    assert activity["ID"] == "1" and activity["OWNER_TYPE_ID"] == "3" and activity["OWNER_ID"] == "7"
    assert activity["TYPE_ID"] == "2" and activity["SUBJECT"] == "Call Ann"
    assert activity["DIRECTION"] == "2" and activity["PRIORITY"] == "3" and activity["RESPONSIBLE_ID"] == "5"
    assert (activity["PROVIDER_ID"], activity["PROVIDER_TYPE_ID"]) == ("VOXIMPLANT_CALL", "CALL")
    assert activity["START_TIME"] == "2026-12-01T10:00:00+03:00"
    assert activity["CREATED"] == activity["LAST_UPDATED"] == "2026-11-27T11:00:00+03:00"
    assert activity["COMMUNICATIONS"] == [{"ID": "1", "TYPE": "PHONE", "VALUE": "+1 555 0100", "ENTITY_ID": "7",
                                           "ENTITY_TYPE_ID": "3"}]

    clock.advance(60)
    assert api.ok("crm.activity.update", {"id": new_id, "fields": {"COMPLETED": "Y", "SUBJECT": "Called"}}) is True
    activity = api.ok("crm.activity.get", {"id": new_id})
    assert activity["COMPLETED"] == "Y" and activity["STATUS"] == "2" and activity["SUBJECT"] == "Called"
    assert activity["LAST_UPDATED"] == "2026-11-27T11:01:00+03:00"

    assert api.ok("crm.activity.delete", {"id": new_id}) is True
    status, body = api("crm.activity.get", {"id": new_id})
    assert (status, body) == (400, {"error": "", "error_description": "Not found"})


def test_activity_defaults(api):
    """COMPLETED defaults to N, the caller is responsible, DEADLINE follows END_TIME (the crm.activity.add and
    crm.activity.fields pages), unset scalars are null and unset datetimes are "" (the crm.activity.get page)."""
    new_id = api.ok("crm.activity.add", {"fields": activity_fields(END_TIME="2026-12-02 09:00")})
    activity = api.ok("crm.activity.get", {"id": new_id})
    assert activity["COMPLETED"] == "N" and activity["STATUS"] == "1"
    assert activity["RESPONSIBLE_ID"] == "1" and activity["AUTHOR_ID"] == "1"
    assert activity["DEADLINE"] == activity["END_TIME"] == "2026-12-02T09:00:00+03:00"
    assert activity["START_TIME"] == "" and activity["DESCRIPTION"] is None
    assert activity["COMMUNICATIONS"] == []


@pytest.mark.parametrize("missing", ["OWNER_TYPE_ID", "OWNER_ID", "TYPE_ID", "SUBJECT"])
def test_activity_required_fields(api, missing):
    """a legacy business error, "error": "" with HTTP 400, naming the missing field (the crm.activity.add page;
    the portal's source)."""
    fields = activity_fields()
    del fields[missing]
    status, body = api("crm.activity.add", {"fields": fields})
    assert status == 400 and body["error"] == "" and missing in body["error_description"]
    assert "time" not in body and api.emu.records["activity"] == {}


def test_activity_invalid_values_and_update_rules(api):
    """an unknown TYPE_ID or an emptied SUBJECT fails; TYPE_ID is immutable; unknown id is Not found (the
    crm.activity.add and crm.activity.update pages; the portal's source)."""
    status, body = api("crm.activity.add", {"fields": activity_fields(TYPE_ID=99)})
    assert status == 400 and "TYPE_ID" in body["error_description"]
    new_id = api.ok("crm.activity.add", {"fields": activity_fields()})
    status, body = api("crm.activity.update", {"id": new_id, "fields": {"SUBJECT": ""}})
    assert status == 400 and body["error"] == "" and "SUBJECT" in body["error_description"]
    api.ok("crm.activity.update", {"id": new_id, "fields": {"TYPE_ID": 4, "OWNER_ID": 9}})
    record = api.emu.records["activity"][new_id]
    assert record["TYPE_ID"] == "2" and record["OWNER_ID"] == "9"
    status, body = api("crm.activity.update", {"id": 42, "fields": {"SUBJECT": "x"}})
    assert (status, body["error_description"]) == (400, "Not found")
    status, body = api("crm.activity.delete", {"id": 0})
    assert (status, body["error_description"]) == (400, "ID is not defined or invalid.")


def test_activity_fields(api):
    """crm.activity.fields describes each field like crm.contact.fields does (the crm.activity.fields page)."""
    fields = api.ok("crm.activity.fields")
    assert {"ID", "OWNER_TYPE_ID", "OWNER_ID", "TYPE_ID", "SUBJECT", "COMPLETED", "COMMUNICATIONS",
            "START_TIME", "END_TIME", "DEADLINE", "RESPONSIBLE_ID", "CREATED", "LAST_UPDATED"} <= set(fields)
    assert fields["SUBJECT"]["isRequired"] is True and fields["ID"]["isReadOnly"] is True
    assert fields["COMMUNICATIONS"]["isMultiple"] is True and fields["START_TIME"]["type"] == "datetime"


@pytest.fixture
def activities():
    api = make_api(limits=False)
    for i in range(1, 61):
        api.ok("crm.activity.add", {"fields": activity_fields(
            OWNER_ID=i % 3 + 1, TYPE_ID=1 + i % 4, SUBJECT=f"Task {i:02d}", COMPLETED="Y" if i % 5 == 0 else "N",
            COMMUNICATIONS=[{"VALUE": f"c{i}@example.com", "TYPE": "EMAIL"}])})
    return api


def test_activity_list_paging(activities):
    """50 a page, next while rows remain, total always (list paging); start floored to a multiple of 50 (the
    portal's source)."""
    _, page1 = activities("crm.activity.list", {"select": ["ID"]})
    _, page2 = activities("crm.activity.list", {"select": ["ID"], "start": 73})
    assert len(page1["result"]) == 50 and page1["next"] == 50 and page1["total"] == 60
    assert [r["ID"] for r in page2["result"]][:2] == ["51", "52"] and "next" not in page2


def test_activity_list_filter_order_select(activities):
    """operators on typed fields, order, select; COMMUNICATIONS only when named (the crm.activity.list page)."""
    rows = activities.ok("crm.activity.list", {"filter": {"TYPE_ID": 2, "COMPLETED": "Y"}, "order": {"ID": "DESC"},
                                               "select": ["ID", "SUBJECT", "TYPE_ID"]})
    assert [r["ID"] for r in rows] == ["45", "25", "5"]
    assert set(rows[0]) == {"ID", "SUBJECT", "TYPE_ID"}
    rows = activities.ok("crm.activity.list", {"filter": {"@OWNER_ID": [1, 2], "%SUBJECT": "task 1", ">ID": 10}})
    assert [r["ID"] for r in rows] == ["12", "13", "15", "16", "18", "19"]
    assert "COMMUNICATIONS" not in rows[0] and "SUBJECT" in rows[0]  # default select is * + UF_*
    rows = activities.ok("crm.activity.list", {"filter": {"ID": 3}, "select": ["ID", "COMMUNICATIONS"]})
    assert rows[0]["COMMUNICATIONS"][0]["VALUE"] == "c3@example.com"
    rows = activities.ok("crm.activity.list", {"order": {"OWNER_ID": "ASC", "ID": "DESC"}, "select": ["ID"]})
    assert [r["ID"] for r in rows[:2]] == ["60", "57"]


def test_activity_list_keyset(activities):
    """start=-1 with {ID: ASC} and >ID gives the next 50 without total or next (the fast scan)."""
    _, body = activities("crm.activity.list", {"start": -1, "order": {"ID": "ASC"}, "filter": {">ID": 5},
                                               "select": ["ID"]})
    assert len(body["result"]) == 50 and body["result"][0]["ID"] == "6"
    assert "total" not in body and "next" not in body


# ---- crm.item.* -----------------------------------------------------------------------------------

def test_item_crud_round_trip(api, clock):
    """add/get/update return {"item": {...}} with real ints and floats; delete returns [] (the crm.item.add,
    crm.item.get, crm.item.update and crm.item.delete pages)."""
    item = add_item(api, title="Website", opportunity=999.9, currencyId="USD", companyId="12", contactId=4,
                    assignedById=3)
    assert item["id"] == 1 and item["title"] == "Website" and item["opportunity"] == 999.9
    assert item["companyId"] == 12 and item["contactId"] == 4 and item["assignedById"] == 3
    assert item["stageId"] == "DT128_1:NEW" and item["categoryId"] == 1 and item["entityTypeId"] == SPA
    assert item["createdTime"] == item["updatedTime"] == "2026-11-27T11:00:00+03:00"
    assert api.ok("crm.item.get", {"entityTypeId": SPA, "id": 1}) == {"item": item}

    clock.advance(3600)
    updated = api.ok("crm.item.update", {"entityTypeId": SPA, "id": 1,
                                         "fields": {"title": "Website v2", "opportunity": "1 500,50"}})["item"]
    assert updated["title"] == "Website v2" and updated["opportunity"] == 1500.5
    assert updated["updatedTime"] == "2026-11-27T12:00:00+03:00" and updated["createdTime"] == item["createdTime"]

    response = api.raw("crm.item.delete", {"entityTypeId": SPA, "id": 1})
    assert response.status_code == 200 and response.get_data(as_text=True).startswith('{"result":[],')
    assert api.emu.items[SPA] == {}


def test_item_defaults_and_ignored_fields(api):
    """unknown and read-only fields are ignored; defaults: title "<SPA> #id", opportunity 0.0,
    company and contact 0, the caller assigned, opened Y (the crm.item.add page)."""
    item = add_item(api, id=99, createdTime="2001-01-01T00:00:00+03:00", nope=1, TITLE="upper")
    assert item["id"] == 1 and item["createdTime"].startswith("2026-11-27") and "nope" not in item
    assert item["title"] == "Projects #1" and item["opportunity"] == 0.0 and isinstance(item["opportunity"], float)
    assert (item["companyId"], item["contactId"], item["assignedById"], item["opened"]) == (0, 0, 1, "Y")
    assert item["currencyId"] == "RUB" and item["stageSemanticId"] == "P"
    assert "fm" not in item  # smart processes have no multi-fields (crm-item-add.md lists no fm for them)


def test_item_category_and_stage(api):
    """the stage id is DT{type}_{category}:{code}; moving to another funnel starts at its NEW stage (the
    crm.item.add and crm.item.update pages)."""
    item = add_item(api, categoryId=5)
    assert item["stageId"] == "DT128_5:NEW"
    moved = api.ok("crm.item.update", {"entityTypeId": SPA, "id": item["id"], "fields": {"categoryId": 9}})["item"]
    assert (moved["categoryId"], moved["stageId"]) == (9, "DT128_9:NEW")
    won = api.ok("crm.item.update", {"entityTypeId": SPA, "id": item["id"],
                                     "fields": {"stageId": "DT128_9:SUCCESS"}})["item"]
    assert won["stageSemanticId"] == "S"


@pytest.mark.parametrize("method", ["add", "get", "update", "delete", "list", "fields"])
@pytest.mark.parametrize("type_id", [None, 999, 8, "abc"])
def test_spa_not_found(api, method, type_id):
    """a missing, unknown or unserved (8: requisites) entityTypeId is 400 NOT_FOUND "SPA not found" (the
    crm.item.get page)."""
    payload = {"id": 1, "fields": {"title": "x"}}
    if type_id is not None:
        payload["entityTypeId"] = type_id
    status, body = api(f"crm.item.{method}", payload)
    assert (status, body) == (400, {"error": "NOT_FOUND", "error_description": "SPA not found"})
    assert api.emu.items[SPA] == {}


@pytest.mark.parametrize("method", ["get", "update", "delete"])
def test_item_not_found(api, method):
    """an unknown (or missing) item id is 400 NOT_FOUND "Item not found" (the crm.item.get page)."""
    add_item(api)
    for payload in ({"entityTypeId": SPA, "id": 2}, {"entityTypeId": SPA}):
        status, body = api(f"crm.item.{method}", {**payload, "fields": {"title": "x"}})
        assert (status, body) == (400, {"error": "NOT_FOUND", "error_description": "Item not found"})


def test_item_fields_and_smart_process_options():
    """smart_processes configures the SPAs; user fields are camelCase ufCrm{type}_...;
    crm.item.fields returns {"fields": {...}} with camelCase keys and upperName (the crm.item.fields page)."""
    api = make_api(smart_processes={128: "Projects", 1032: "Tickets"}, user_fields={1032: ["ufCrm1032_Priority"]})
    fields = api.ok("crm.item.fields", {"entityTypeId": 1032})["fields"]
    assert {"id", "title", "stageId", "categoryId", "opportunity", "currencyId", "assignedById", "createdTime",
            "updatedTime", "companyId", "contactId", "ufCrm1032_Priority"} <= set(fields)
    assert fields["assignedById"]["upperName"] == "ASSIGNED_BY_ID" and fields["id"]["isReadOnly"] is True
    assert fields["opportunity"]["type"] == "double" and fields["createdTime"]["type"] == "datetime"
    assert fields["ufCrm1032_Priority"]["isDynamic"] is True
    assert fields["ufCrm1032_Priority"]["upperName"] == "UF_CRM_1032_PRIORITY"
    assert "ufCrm1032_Priority" not in api.ok("crm.item.fields", {"entityTypeId": 128})["fields"]
    ticket = add_item(api, 1032, title="Broken", ufCrm1032_Priority="high")
    assert ticket["ufCrm1032_Priority"] == "high" and ticket["stageId"] == "DT1032_2:NEW"
    assert ticket["id"] == 1 and add_item(api, 128)["id"] == 1  # ids are per smart process
    status, _ = api("crm.item.get", {"entityTypeId": 130, "id": 1})
    assert status == 400


def test_cli_smart_process_option():
    """CLI: --smart-process TYPE_ID=TITLE is repeatable; without it the default {128: Projects} applies."""
    args = build_parser().parse_args(["--smart-process", "128=Projects", "--smart-process", "1032=Tickets"])
    assert parse_smart_processes(args.smart_process) == {128: "Projects", 1032: "Tickets"}
    assert parse_smart_processes([]) is None
    assert create_emulator().item_store.titles == {128: "Projects"}
    with pytest.raises(SystemExit):
        parse_smart_processes(["Projects"])


def test_item_fm_rules(api):
    """fm (contacts, leads and companies; the crm.item.update page and
    https://apidocs.bitrix24.com/tutorials/crm/how-to-edit-crm-objects/how-to-change-email-or-phone.html):
    an array on add; on update nX keys add, a numeric id changes or (empty value) deletes; typeId is required in
    every element; an array on update only adds; a string is ignored. The entries are the contact's legacy
    PHONE/EMAIL/WEB items, same ids."""
    item = api.ok("crm.item.add", {"entityTypeId": 3, "fields": {"name": "Ann", "fm": [
        {"typeId": "PHONE", "value": "+1 111"}, {"typeId": "EMAIL", "valueType": "HOME", "value": "a@x.io"},
        {"value": "no type"}]}})["item"]
    assert item["fm"] == [{"id": 1, "valueType": "WORK", "value": "+1 111", "typeId": "PHONE"},
                          {"id": 2, "valueType": "HOME", "value": "a@x.io", "typeId": "EMAIL"}]

    def update(fm):
        return api.ok("crm.item.update", {"entityTypeId": 3, "id": item["id"], "fields": {"fm": fm}})["item"]["fm"]

    fm = update({"1": {"typeId": "PHONE", "value": "+1 222"}, "2": {"typeId": "EMAIL", "value": ""},
                 "n0": {"typeId": "WEB", "value": "x.io"}, "n1": {"value": "ignored"}})
    assert [(e["id"], e["typeId"], e["value"]) for e in fm] == [(1, "PHONE", "+1 222"), (3, "WEB", "x.io")]
    fm = update([{"typeId": "PHONE", "value": "+1 333"}, {"typeId": "PHONE", "value": ""}])
    assert [e["value"] for e in fm] == ["+1 222", "x.io", "+1 333"]
    assert update("garbage") == fm
    legacy = api.ok("crm.contact.get", {"id": item["id"]})
    assert [p["VALUE"] for p in legacy["PHONE"]] == ["+1 222", "+1 333"] and legacy["WEB"][0]["ID"] == "3"
    rows = api.ok("crm.item.list", {"entityTypeId": 3, "select": ["id", "name", "fm"]})["items"]
    assert rows == [{"id": 1, "name": "Ann"}]  # fm cannot be named in select (crm-item-list.md)
    assert api.ok("crm.item.list", {"entityTypeId": 3, "select": ["*"]})["items"][0]["fm"] == fm


@pytest.fixture
def projects():
    api = make_api(limits=False)
    for i in range(1, 121):
        add_item(api, title=f"Project {i:03d}", opportunity=i * 10.5, assignedById=1 + i % 3,
                 stageId="DT128_1:SUCCESS" if i % 10 == 0 else "DT128_1:NEW")
    return api


def item_ids(api, payload):
    return [row["id"] for row in api.ok("crm.item.list", {"entityTypeId": SPA, **payload})["items"]]


def test_item_list_paging(projects):
    """{"items": [...]} with top-level total and next; 50 a page, start floored to a multiple of 50 (the
    crm.item.list page; list paging)."""
    _, page1 = projects("crm.item.list", {"entityTypeId": SPA})
    assert set(page1["result"]) == {"items"} and len(page1["result"]["items"]) == 50
    assert page1["total"] == 120 and page1["next"] == 50
    assert page1["result"]["items"][0]["opportunity"] == 10.5 and page1["result"]["items"][0]["id"] == 1
    _, page3 = projects("crm.item.list", {"entityTypeId": SPA, "start": 117})
    assert [r["id"] for r in page3["result"]["items"]][:1] == [101] and len(page3["result"]["items"]) == 20
    assert page3["total"] == 120 and "next" not in page3


def test_item_list_filter_order_select(projects):
    """camelCase filter keys with the legacy operators, order and select (the crm.item.list page)."""
    assert item_ids(projects, {"filter": {"stageId": "DT128_1:SUCCESS", ">opportunity": 600}}) == \
        [60, 70, 80, 90, 100, 110, 120]
    assert item_ids(projects, {"filter": {"@id": [3, 5, 500], "assignedById": 3}}) == [5]
    assert item_ids(projects, {"filter": {"%title": "project 11", "!=id": 110}}) == list(range(111, 120))
    assert item_ids(projects, {"filter": {"<=createdTime": "2026-11-27T11:00:00+03:00", "<id": 3}}) == [1, 2]
    assert item_ids(projects, {"order": {"opportunity": "DESC"}})[:3] == [120, 119, 118]
    assert item_ids(projects, {"order": {"assignedById": "ASC", "id": "DESC"}})[:2] == [120, 117]
    rows = projects.ok("crm.item.list", {"entityTypeId": SPA, "select": ["title", "opportunity"],
                                         "filter": {"id": 7}})["items"]
    # An explicit select gives the named fields and id only, no entityTypeId (crm-item-list.md's example and
    # fast_bitrix24's tests/real_responses/crm_item_list.py).
    assert rows == [{"id": 7, "title": "Project 007", "opportunity": 73.5}]
    everything = projects.ok("crm.item.list", {"entityTypeId": SPA, "select": ["*"], "filter": {"id": 7}})["items"]
    assert everything[0] == projects.ok("crm.item.get", {"entityTypeId": SPA, "id": 7})["item"]


def test_item_list_invalid_filter_or_order(projects):
    """An unknown filter or order field is INVALID_ARG_VALUE (not silently dropped as in legacy lists); a known
    field's UPPER_CASE name (``TITLE``) is not unknown: the portal converts keys before it checks them.
    https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html"""
    status, body = projects("crm.item.list", {"entityTypeId": SPA, "filter": {"titleText": "x"}})
    assert status == 400 and body["error"] == "INVALID_ARG_VALUE"
    assert body["error_description"] == "Invalid filter: field 'TITLE_TEXT' is not allowed in filter"
    assert projects("crm.item.list", {"entityTypeId": SPA, "filter": {"TITLE": "x"}})[0] == 200
    status, body = projects("crm.item.list", {"entityTypeId": SPA, "order": {"nope": "ASC"}})
    assert status == 400 and body["error"] == "INVALID_ARG_VALUE" and "'NOPE'" in body["error_description"]


def test_item_list_keyset(projects):
    """the fast scan: {id: ASC}, {">id": last}, start=-1; 50 rows, no total, no next."""
    _, body = projects("crm.item.list", {"entityTypeId": SPA, "start": -1, "order": {"id": "ASC"},
                                         "filter": {">id": 100}, "select": ["id"]})
    assert [r["id"] for r in body["result"]["items"]] == list(range(101, 121))
    assert "total" not in body and "next" not in body
    _, body = projects("crm.item.list", {"entityTypeId": SPA, "start": -1, "filter": {">id": 5}})
    assert len(body["result"]["items"]) == 50 and body["result"]["items"][0]["id"] == 6


def test_item_list_over_form_encoding(projects):
    """PHP-style nested keys work for crm.item.list too (filter[>id], order[id], select[])
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html)."""
    response = projects.client.get("/rest/1/demo/crm.item.list?entityTypeId=128&filter[%3Eid]=118"
                                   "&order[id]=DESC&select[]=id")
    assert [r["id"] for r in response.json["result"]["items"]] == [120, 119]


# ---- batch ----------------------------------------------------------------------------------------

def test_batch_item_keyset_reference(projects):
    """The official PHP SDK's traversal (bitrix24/b24phpsdk, src/Core/Batch.php getTraversableList): start=-1
    pages chained by $result[p0][items][49][id] (batch; the fast scan)."""
    cmd = {"p0": "crm.item.list?entityTypeId=128&start=-1&order[id]=ASC&select[]=id",
           "p1": "crm.item.list?entityTypeId=128&start=-1&order[id]=ASC&select[]=id"
                 "&filter[>id]=$result[p0][items][49][id]",
           "p2": "crm.item.list?entityTypeId=128&start=-1&order[id]=ASC&select[]=id"
                 "&filter[>id]=$result[p1][items][49][id]",
           "g": "crm.item.get?entityTypeId=128&id=$result[p1][items][0][id]"}
    status, body = projects("batch", {"halt": 1, "cmd": cmd})
    out = body["result"]
    assert status == 200 and out["result_error"] == []
    assert [len(out["result"][k]["items"]) for k in ("p0", "p1", "p2")] == [50, 50, 20]
    assert out["result"]["p1"]["items"][0]["id"] == 51 and out["result"]["p2"]["items"][-1]["id"] == 120
    assert out["result"]["g"]["item"]["title"] == "Project 051"
    assert out["result_total"] == [] and out["result_next"] == []


def test_batch_item_add_then_get(api):
    """$result[a][item][id] feeds crm.item.get; paged lists fill result_total and result_next (batch)."""
    cmd = {"a": "crm.item.add?entityTypeId=128&fields[title]=From%20batch&fields[opportunity]=12.5",
           "g": "crm.item.get?entityTypeId=128&id=$result[a][item][id]",
           "l": "crm.item.list?entityTypeId=128",
           "x": "crm.item.get?entityTypeId=999&id=1"}
    out = api.ok("batch", {"cmd": cmd})
    assert out["result"]["a"]["item"]["id"] == 1
    assert out["result"]["g"]["item"]["title"] == "From batch" and out["result"]["g"]["item"]["opportunity"] == 12.5
    assert out["result_total"] == {"l": 1}
    assert out["result_error"] == {"x": {"error": "NOT_FOUND", "error_description": "SPA not found"}}


# ---- events over real HTTP ------------------------------------------------------------------------

@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


def test_item_events(receiver):
    """item add/update/delete POST ONCRMDYNAMICITEM* with data[FIELDS][ID] and [ENTITY_TYPE_ID]
    (https://apidocs.bitrix24.com/api-reference/crm/universal/events/on-crm-dynamic-item-add.html and its update
    and delete pages); activities raise no events here."""
    server = start_server(create_emulator(event_url=receiver.url, limits=False))
    try:
        base = server.base
        requests.post(base + "crm.item.add", json={"entityTypeId": SPA, "fields": {"title": "A"}}, timeout=5)
        requests.post(base + "crm.item.update", json={"entityTypeId": SPA, "id": 1, "fields": {"title": "B"}},
                      timeout=5)
        requests.post(base + "crm.activity.add", json={"fields": activity_fields()}, timeout=5)
        requests.post(base + "crm.item.get", json={"entityTypeId": SPA, "id": 1}, timeout=5)
        requests.post(base + "crm.item.delete", json={"entityTypeId": SPA, "id": 1}, timeout=5)
        requests.post(base + "crm.item.delete", json={"entityTypeId": SPA, "id": 1}, timeout=5)  # 400: no event
        assert server.emulator.wait_events(5)
        stats = requests.get(server.url + "/_emulator/stats", timeout=5).json()
    finally:
        server.stop()
    events = [dict(pairs) for _, pairs in receiver.received]
    assert [e["event"] for e in events] == ["ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE",
                                            "ONCRMDYNAMICITEMDELETE"]
    assert all(e["data[FIELDS][ID]"] == "1" and e["data[FIELDS][ENTITY_TYPE_ID]"] == "128" for e in events)
    assert [k for k, _ in receiver.received[0][1]][:5] == ["event", "event_handler_id", "data[FIELDS][ID]",
                                                          "data[FIELDS][ENTITY_TYPE_ID]", "ts"]
    assert len({e["event_handler_id"] for e in events}) == 3
    assert stats["records"]["activity"] == 1 and stats["records"]["DYNAMIC_128"] == 0
