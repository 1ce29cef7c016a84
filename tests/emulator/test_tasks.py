"""tasks.task.* on the classic /rest/ path, and the ONTASKADD/ONTASKUPDATE/ONTASKDELETE payloads.

Sources: https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-add.html (shape, ERROR_CORE title error),
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-update.html (auditorsData as an object, error codes),
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-get.html ("result": [] for a missing task, UF select),
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-list.html (REAL_STATUS vs STATUS, order, paging),
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-delete.html, .../tasks-task-get-fields.html,
https://apidocs.bitrix24.com/api-reference/tasks/status/tasks-task-complete.html (and -start, -pause, -defer,
-renew), .../tasks-task-approve.html, .../tasks-task-disapprove.html,
https://apidocs.bitrix24.com/api-reference/tasks/events-tasks/on-task-add.html (and -update, -delete); a real list
page in leshchenko1979/fast_bitrix24 tests/real_responses/get_all_tasks.py.
"""

from __future__ import annotations

import pytest

from bitrix24_emulator import tasks

from .conftest import make_api


@pytest.fixture
def events(emu):
    sent = []
    emu.emit = lambda name, data, context: sent.append((name, data))
    return sent


def add(api, **fields):
    fields.setdefault("TITLE", "Task")
    fields.setdefault("RESPONSIBLE_ID", 1)
    return api.ok("tasks.task.add", {"fields": fields})["task"]


def test_add_returns_the_task_with_camel_case_keys_and_string_values(api):
    task = add(api, TITLE="task for test", AUDITORS=[1, 7], DEADLINE="2026-12-01T18:00:00+03:00", GROUP_ID=5)
    assert (task["id"], task["title"], task["responsibleId"], task["createdBy"]) == ("1", "task for test", "1", "1")
    assert (task["status"], task["priority"], task["groupId"], task["parentId"]) == ("2", "1", "5", None)
    assert task["deadline"] == "2026-12-01T18:00:00+03:00" and task["createdDate"] == "2026-11-27T11:00:00+03:00"
    assert task["auditors"] == ["1", "7"] and task["accomplices"] == []
    assert task["auditorsData"]["7"] == {"id": "7", "name": "User 7", "link": "/company/personal/user/7/",
                                         "icon": "/bitrix/images/tasks/default_avatar.png", "workPosition": ""}
    assert task["accomplicesData"] == [] and task["checklist"] == []
    assert task["group"]["id"] == "5" and add(api)["group"] == []
    assert task["newCommentsCount"] == 0 and task["action"]["start"] is True and task["action"]["renew"] is False
    assert "ufCrmTask" not in task


def test_add_refusals(api):
    assert api("tasks.task.add", {"fields": {"RESPONSIBLE_ID": 1}}) == (
        400, {"error": "ERROR_CORE", "error_description": "Task title is not specified<br>"})
    status, body = api("tasks.task.add", {"fields": {"TITLE": "x"}})
    assert status == 400 and body["error"] == "ERROR_CORE" and "Responsible" in body["error_description"]
    assert api("tasks.task.add", {}) == (400, {"error": "100", "error_description":
                                               "Could not find value for parameter {fields} (internal error)"})
    assert api("tasks.task.add", {"fields": {"TITLE": "x", "RESPONSIBLE_ID": 1, "PARENT_ID": 99}})[1][
        "error_description"] == 'The task specified in the "Parent Task" field was not found<br>'
    assert api("tasks.task.add", {"fields": {"TITLE": "x", "RESPONSIBLE_ID": 1, "STATUS": 9}})[1][
        "error_description"] == "Invalid status<br>"
    assert api.emu.state(tasks).tasks == {}


def test_get_update_delete_and_their_wrappers(api, events):
    task_id = int(add(api)["id"])
    assert api.ok("tasks.task.get", {"taskId": task_id})["task"]["title"] == "Task"
    assert api.ok("tasks.task.get", {"taskId": 404}) == []
    assert api("tasks.task.get", {}) == (400, {"error": "100", "error_description":
                                               "CTaskItem All parameters in the constructor must have real class "
                                               "type (internal error)"})
    assert api("tasks.task.get", {"taskId": "abc"}) == (400, {"error": "0", "error_description": "wrong task id"})
    updated = api.ok("tasks.task.update", {"taskId": task_id, "fields": {"TITLE": "New", "ACCOMPLICES": [3]}})
    assert updated["task"]["title"] == "New" and updated["task"]["accomplicesData"]["3"]["id"] == "3"
    assert api("tasks.task.update", {"taskId": task_id, "fields": {}})[1]["error"] == "100"
    assert api("tasks.task.update", {"taskId": 404, "fields": {"TITLE": "x"}}) == (
        400, {"error": "0", "error_description": "Action on the task is not allowed (internal error)"})
    assert api("tasks.task.update", {"taskId": task_id, "fields": {"PARENT_ID": task_id}})[1][
        "error_description"] == "Cannot bind the node to itself<br>"
    assert api.ok("tasks.task.delete", {"taskId": task_id}) == {"task": True}
    assert api("tasks.task.delete", {"taskId": task_id}) == (
        400, {"error": "1048582", "error_description": "No access to delete the task"})
    assert [name for name, _ in events] == ["ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE"]


def test_event_payloads_are_the_event_pages(api, events):
    task_id = add(api)["id"]
    api.ok("tasks.task.update", {"taskId": task_id, "fields": {"PRIORITY": 2}})
    api.ok("tasks.task.delete", {"taskId": task_id})
    assert events == [
        ("ONTASKADD", [("data[FIELDS_BEFORE]", "undefined"), ("data[FIELDS_AFTER][ID]", "1"),
                       ("data[IS_ACCESSIBLE_BEFORE]", "N"), ("data[IS_ACCESSIBLE_AFTER]", "undefined")]),
        ("ONTASKUPDATE", [("data[FIELDS_BEFORE][ID]", "1"), ("data[FIELDS_AFTER][ID]", "1"),
                          ("data[IS_ACCESSIBLE_BEFORE]", "undefined"), ("data[IS_ACCESSIBLE_AFTER]", "undefined")]),
        ("ONTASKDELETE", [("data[FIELDS_BEFORE][ID]", "1"), ("data[FIELDS_AFTER]", "undefined"),
                          ("data[IS_ACCESSIBLE_BEFORE]", "undefined"), ("data[IS_ACCESSIBLE_AFTER]", "N")]),
    ]


def test_status_methods_move_the_task_and_refuse_other_moves(api, clock, events):
    task_id = add(api)["id"]
    started = api.ok("tasks.task.start", {"taskId": task_id})["task"]
    assert started["status"] == "3" and started["dateStart"] == "2026-11-27T11:00:00+03:00"
    assert started["action"]["pause"] is True and started["action"]["start"] is False
    assert api("tasks.task.start", {"taskId": task_id}) == (
        400, {"error": "0", "error_description": "Action on the task is not allowed"})
    assert api.ok("tasks.task.pause", {"taskId": task_id})["task"]["status"] == "2"
    assert api.ok("tasks.task.defer", {"taskId": task_id})["task"]["status"] == "6"
    clock.advance(60)
    done = api.ok("tasks.task.complete", {"taskId": task_id})["task"]
    assert (done["status"], done["closedBy"], done["closedDate"]) == ("5", "1", "2026-11-27T11:01:00+03:00")
    assert api("tasks.task.pause", {"taskId": task_id}) == (
        400, {"error": "1048582", "error_description": "Action on the task is not allowed"})
    assert api("tasks.task.approve", {"taskId": task_id})[1]["error"] == "1048582"
    renewed = api.ok("tasks.task.renew", {"taskId": task_id})["task"]
    assert (renewed["status"], renewed["closedBy"], renewed["closedDate"]) == ("2", "0", None)
    assert api("tasks.task.complete", {"taskId": 404})[1] == {"error": "0", "error_description":
                                                               "Action on the task is not allowed"}
    assert len([e for e in events if e[0] == "ONTASKUPDATE"]) == 5


def test_task_control_sends_a_completed_task_for_approval(api):
    task_id = add(api, TASK_CONTROL="Y", CREATED_BY=8)["id"]
    assert api.ok("tasks.task.complete", {"taskId": task_id})["task"]["status"] == "4"
    assert api.ok("tasks.task.disapprove", {"taskId": task_id})["task"]["status"] == "2"
    api.ok("tasks.task.complete", {"taskId": task_id})
    approved = api.ok("tasks.task.approve", {"taskId": task_id})["task"]
    assert approved["status"] == "5" and approved["closedBy"] == "1"


def test_list_rows_pages_and_the_real_page_shape():
    api = make_api(limits=False)  # 55 adds would outrun the request bucket
    for i in range(55):
        add(api, TITLE=f"T{i}", DEADLINE="2026-11-27T09:00:00+03:00" if i % 2 else "2026-12-27T09:00:00+03:00")
    status, body = api("tasks.task.list", {"select": ["ID", "STATUS", "STATUS_COMPLETE"], "filter": {"status": -1}})
    assert status == 200 and body["total"] == 27 and "next" not in body
    assert body["result"]["tasks"][0] == {"id": "54", "status": "2", "group": [], "subStatus": "-1"}
    status, body = api("tasks.task.list", {"select": ["ID"]})
    assert (body["total"], body["next"], len(body["result"]["tasks"])) == (55, 50, 50)
    assert [t["id"] for t in body["result"]["tasks"][:2]] == ["55", "54"]  # default order: ID desc
    second = api("tasks.task.list", {"select": ["ID"], "start": 50})[1]
    assert [t["id"] for t in second["result"]["tasks"]] == ["5", "4", "3", "2", "1"] and "next" not in second


def test_list_filter_order_and_crm_bindings(api):
    add(api, TITLE="alpha", PRIORITY=2, UF_CRM_TASK=["D_10", "C_7"], RESPONSIBLE_ID=547)
    second = add(api, TITLE="beta", PRIORITY=0)["id"]
    api.ok("tasks.task.complete", {"taskId": second})
    add(api, TITLE="gamma", PRIORITY=1)

    def ids(payload):
        return [t["id"] for t in api.ok("tasks.task.list", {"select": ["ID"], **payload})["tasks"]]

    assert ids({"filter": {"!REAL_STATUS": 5}}) == ["3", "1"]
    assert ids({"filter": {"REAL_STATUS": 5}}) == ["2"]
    assert ids({"filter": {"UF_CRM_TASK": "D_10"}}) == ["1"]
    assert ids({"filter": {"RESPONSIBLE_ID": 547}}) == ["1"]
    assert ids({"filter": {">=PRIORITY": 1}}) == ["3", "1"]
    assert ids({"filter": {"%TITLE": "amm"}}) == ["3"]
    assert ids({"order": {"TITLE": "asc"}}) == ["1", "2", "3"]
    assert ids({"order": {"PRIORITY": "desc"}}) == ["1", "3", "2"]
    assert api("tasks.task.list", {"order": {"NOPE": "asc"}}) == (
        400, {"error": "0", "error_description": "Invalid sorting key (internal error)"})
    row = api.ok("tasks.task.list", {"select": ["ID", "UF_CRM_TASK", "RESPONSIBLE_ID"], "filter": {"ID": 1}})["tasks"][0]
    assert row["ufCrmTask"] == ["D_10", "C_7"] and row["responsibleId"] == "547"
    assert row["responsible"]["id"] == "547" and row["subStatus"] == "2"


def test_get_fields_and_the_task_scope():
    api = make_api(scopes="crm")
    assert api("tasks.task.list")[1]["error"] == "insufficient_scope"
    fields = make_api().ok("tasks.task.getFields")["fields"]
    assert fields["TITLE"] == {"title": "Title", "type": "string", "required": True}
    assert fields["STATUS"]["values"]["5"] == "Completed" and fields["UF_CRM_TASK"]["type"] == "crm"
