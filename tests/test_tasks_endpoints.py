"""Tasks through app.test_client() with the portal mocked by ``responses``: the exact tasks.task.* method and
decoded body the portal receives, and how its wrapped answers become ours.

Bitrix24's side: https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-add.html (and -get, -update,
-delete, -list, status/tasks-task-complete), https://apidocs.bitrix24.com/api-reference/tasks/events-tasks/on-task-add.html
"""

from __future__ import annotations

import pytest
from flask_bitrix24.extensions import bitrix24
from flask_bitrix24.services.wire import parse_php_form

from tests.conftest import portal_url, reset, sent_pairs, sent_params
from tests.test_webhook import event_form

TASK = {"id": "17", "title": "Call Ada", "responsibleId": "1", "status": "2", "group": [], "auditorsData": []}


def test_create_sends_tasks_task_add_with_fields_and_answers_the_id(configured, portal):
    portal.post(portal_url("tasks.task.add"), json={"result": {"task": TASK}, "time": {}})
    r = configured.post("/api/bitrix/clients/1/tasks",
                        json={"fields": {"TITLE": "Call Ada", "RESPONSIBLE_ID": 1, "AUDITORS": [2, 3]}})
    assert r.status_code == 201 and r.get_json() == {"result": 17}
    assert r.headers["Location"].endswith("/api/bitrix/clients/1/tasks/17")
    (call,) = portal.calls
    assert call.request.url == portal_url("tasks.task.add")
    assert sorted(sent_pairs(call)) == sorted([("fields[TITLE]", "Call Ada"), ("fields[RESPONSIBLE_ID]", "1"),
                                               ("fields[AUDITORS][]", "2"), ("fields[AUDITORS][]", "3")])


@pytest.mark.parametrize("task", [None, [], {"id": None}, {"id": "abc"}, {"id": "1/../../../x?y=1"}, {"id": "²"},
                                  {"id": 0}, {"id": True}])
def test_a_create_answered_without_a_usable_id_is_passed_on_without_a_location(configured, portal, task):
    # the task was most likely made: the answer is passed on (no 500, no 502 inviting a duplicate), and only a
    # positive integer id becomes a Location
    portal.post(portal_url("tasks.task.add"), json={"result": {"task": task}})
    r = configured.post("/api/bitrix/clients/1/tasks", json={"TITLE": "x", "RESPONSIBLE_ID": 1})
    assert r.status_code == 201 and "Location" not in r.headers, (r.status_code, r.get_json())
    expected = task.get("id") if isinstance(task, dict) else task
    assert r.get_json() == {"result": expected}


def test_create_with_an_origin_id_does_not_look_for_it_in_tasks(configured, portal):
    # Tasks have no ORIGIN_ID: no tasks.task.list lookup before the add, the field goes as given.
    portal.post(portal_url("tasks.task.add"), json={"result": {"task": {**TASK, "id": "18"}}})
    r = configured.post("/api/bitrix/clients/1/tasks", json={"TITLE": "x", "RESPONSIBLE_ID": 1, "ORIGIN_ID": "a1"})
    assert r.status_code == 201 and r.get_json() == {"result": 18}
    assert [c.request.url for c in portal.calls] == [portal_url("tasks.task.add")]


def test_get_sends_task_id_and_unwraps_the_task(configured, portal):
    portal.post(portal_url("tasks.task.get"), json={"result": {"task": TASK}})
    r = configured.get("/api/bitrix/clients/1/tasks/17")
    assert r.status_code == 200 and r.get_json() == {"result": TASK}
    assert sent_pairs(portal.calls[0]) == [("taskId", "17")]


def test_get_of_a_missing_task_is_404(configured, portal):
    portal.post(portal_url("tasks.task.get"), json={"result": []})  # what the portal answers for it
    r = configured.get("/api/bitrix/clients/1/tasks/404")
    assert r.status_code == 404
    assert r.get_json()["error"] == "NOT_FOUND" and "task 404" in r.get_json()["error_description"]


def test_update_sends_task_id_and_fields_and_answers_the_task(configured, portal):
    changed = {**TASK, "title": "Call Ada again"}
    portal.post(portal_url("tasks.task.update"), json={"result": {"task": changed}})
    r = configured.patch("/api/bitrix/clients/1/tasks/17", json={"TITLE": "Call Ada again", "DEADLINE": None})
    assert r.status_code == 200 and r.get_json() == {"result": changed}
    assert sent_pairs(portal.calls[0]) == [("taskId", "17"), ("fields[DEADLINE]", ""),
                                           ("fields[TITLE]", "Call Ada again")]


def test_delete_sends_task_id_and_answers_true(configured, portal):
    portal.post(portal_url("tasks.task.delete"), json={"result": {"task": True}})
    r = configured.delete("/api/bitrix/clients/1/tasks/17")
    assert r.status_code == 200 and r.get_json() == {"result": True}
    assert sent_pairs(portal.calls[0]) == [("taskId", "17")]


def test_complete_sends_tasks_task_complete(configured, portal):
    portal.post(portal_url("tasks.task.complete"), json={"result": {"task": {**TASK, "status": "5"}}})
    r = configured.post("/api/bitrix/clients/1/tasks/17/complete")
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "5"
    assert portal.calls[0].request.url == portal_url("tasks.task.complete")
    assert sent_pairs(portal.calls[0]) == [("taskId", "17")]


def test_a_refused_complete_passes_the_portals_code_on(configured, portal):
    portal.post(portal_url("tasks.task.complete"), status=400,
                json={"error": "0", "error_description": "Action on the task is not allowed"})
    r = configured.post("/api/bitrix/clients/1/tasks/17/complete")
    assert r.status_code == 400
    assert r.get_json()["error"] == "0" and r.get_json()["error_description"] == "Action on the task is not allowed"


def test_list_sends_upper_filter_select_order_start_and_unwraps_tasks(configured, portal):
    rows = [{"id": "3", "title": "A", "group": [], "subStatus": "-1"}]
    portal.post(portal_url("tasks.task.list"), json={"result": {"tasks": rows}, "total": 120, "next": 100})
    r = configured.get("/api/bitrix/clients/1/tasks?filter[!REAL_STATUS]=5&filter[>=DEADLINE]=2025-01-01"
                       "&filter[RESPONSIBLE_ID]=1&select=ID&select=TITLE&order[DEADLINE]=asc&start=50")
    assert r.status_code == 200 and r.get_json() == {"result": rows, "total": 120, "next": 100}
    assert portal.calls[0].request.url == portal_url("tasks.task.list")
    assert sent_params(portal.calls[0]) == {
        "start": "50",
        "filter": {"!REAL_STATUS": "5", ">=DEADLINE": "2025-01-01", "RESPONSIBLE_ID": "1"},
        "select": ["ID", "TITLE"],
        "order": {"DEADLINE": "ASC"},
    }


def test_list_refuses_camel_case_names(configured, portal):
    r = configured.get("/api/bitrix/clients/1/tasks?filter[responsibleId]=1")
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_FILTER"
    assert not portal.calls


def _batch_answer(results, total=None):
    body = {"result": results, "result_error": [], "result_total": [], "result_next": [], "result_time": []}
    if total is not None:
        body["result_total"] = total
    return {"result": body}


def test_all_walks_tasks_by_id_with_the_tasks_wrapper_in_its_references(configured, portal):
    page = [{"id": str(i), "title": f"T{i}"} for i in range(1, 51)]
    portal.post(portal_url("tasks.task.list"), json={"result": {"tasks": page}, "total": 60, "next": 50})
    rest = [{"id": str(i), "title": f"T{i}"} for i in range(51, 61)]
    portal.post(portal_url("batch"), json=_batch_answer({"p0": {"tasks": rest}, "p1": {"tasks": []}}))
    r = configured.get("/api/bitrix/clients/1/tasks?all=1&filter[RESPONSIBLE_ID]=1")
    assert r.status_code == 200
    body = r.get_json()
    assert body["total"] == 60 and [row["id"] for row in body["result"]] == [str(i) for i in range(1, 61)]
    assert sent_params(portal.calls[0]) == {"order": {"ID": "ASC"}, "start": "0", "filter": {"RESPONSIBLE_ID": "1"}}
    cmd = sent_params(portal.calls[1])["cmd"]
    assert cmd["p0"] == "tasks.task.list?filter%5BRESPONSIBLE_ID%5D=1&filter%5B%3EID%5D=50&order%5BID%5D=ASC&start=-1"
    assert "filter%5B%3EID%5D=%24result%5Bp0%5D%5Btasks%5D%5B49%5D%5Bid%5D" in cmd["p1"]  # $result[p0][tasks][49][id]


def test_batch_writes_send_tasks_methods_with_task_id_and_read_the_wrapped_ids(configured, portal):
    portal.post(portal_url("batch"), json=_batch_answer({"w0": {"task": {"id": "31"}}, "w1": {"task": TASK}}))
    r = configured.post("/api/bitrix/clients/1/tasks/batch", json={"items": [
        {"fields": {"TITLE": "New", "RESPONSIBLE_ID": 1}}, {"id": 17, "fields": {"TITLE": "Renamed"}}]})
    assert r.status_code == 200
    assert r.get_json() == {"result": [{"index": 0, "action": "created", "ok": True, "id": 31},
                                       {"index": 1, "action": "updated", "ok": True, "id": 17}],
                            "created": 1, "existing": 0, "updated": 1, "failed": 0}
    (call,) = portal.calls  # no ORIGIN_ID lookup: tasks have none
    cmd = {key: (text.split("?")[0], parse_php_form(text.split("?")[1])) for key, text in sent_params(call)["cmd"].items()}
    assert cmd == {"w0": ("tasks.task.add", {"fields": {"TITLE": "New", "RESPONSIBLE_ID": "1"}}),  # no ORIGIN_ID marker
                   "w1": ("tasks.task.update", {"taskId": "17", "fields": {"TITLE": "Renamed"}})}


def test_a_task_create_whose_answer_was_lost_is_never_sent_again(configured, portal):
    portal.post(portal_url("batch"), body=reset())
    portal.post(portal_url("batch"), json=_batch_answer({"w1": {"task": TASK}}))
    r = configured.post("/api/bitrix/clients/1/tasks/batch", json={"items": [
        {"fields": {"TITLE": "New", "RESPONSIBLE_ID": 1}}, {"id": 17, "fields": {"TITLE": "Renamed"}}]})
    body = r.get_json()
    assert r.status_code == 200 and (body["created"], body["updated"], body["failed"]) == (0, 1, 1)
    assert body["result"][0]["ok"] is False and body["result"][0]["id"] is None
    assert len(portal.calls) == 2
    assert list(sent_params(portal.calls[1])["cmd"]) == ["w1"]  # only the update went again


def test_raw_batch_accepts_tasks_methods(configured, portal):
    portal.post(portal_url("batch"), json=_batch_answer({"t": {"task": TASK}}))
    r = configured.post("/api/bitrix/clients/1/batch", json={"cmd": {"t": "tasks.task.get?taskId=17"}})
    assert r.status_code == 200 and r.get_json()["result"]["result"] == {"t": {"task": TASK}}
    refused = configured.post("/api/bitrix/clients/1/batch", json={"cmd": {"t": "tasks.task.approve?taskId=17"}})
    assert refused.status_code == 400 and refused.get_json()["error"] == "METHOD_NOT_ALLOWED_IN_BATCH"
    assert "tasks.task.{add,get,update,delete,list,getFields}" in refused.get_json()["error_description"]


@pytest.fixture
def handlers():
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}
    yield bitrix24
    bitrix24.hooks._handlers.clear()
    bitrix24.hooks._handlers.update(saved)


@pytest.mark.parametrize("event,data", [
    ("ONTASKADD", {"data[FIELDS_BEFORE]": "undefined", "data[FIELDS_AFTER][ID]": "17"}),
    ("ONTASKUPDATE", {"data[FIELDS_BEFORE][ID]": "17", "data[FIELDS_AFTER][ID]": "17"}),
    ("ONTASKDELETE", {"data[FIELDS_BEFORE][ID]": "17", "data[FIELDS_AFTER]": "undefined"}),
])
def test_task_events_name_the_task_and_fetch_reads_it(configured, portal, handlers, event, data):
    seen = []
    handlers.on(event)(lambda e: seen.append((e.name, e.client_id, e.entity_type, e.entity_id, e.fetch()["title"])))
    portal.post(portal_url("tasks.task.get"), json={"result": {"task": TASK}})
    form = {k: v for k, v in event_form(event=event).items() if not k.startswith("data[")}
    r = configured.post("/api/bitrix/webhook", data={**form, **data, "data[IS_ACCESSIBLE_BEFORE]": "N"})
    assert r.status_code == 200
    r.close()  # inline handlers run once the answer is sent
    assert seen == [(event, 1, "TASK", "17", "Call Ada")]
    assert sent_pairs(portal.calls[0]) == [("taskId", "17")]


def test_other_task_events_are_not_about_a_task_record(configured, portal, handlers):
    seen = []
    handlers.on("ONTASKCOMMENTADD")(lambda e: seen.append((e.entity_type, e.entity_id)))
    form = {k: v for k, v in event_form(event="ONTASKCOMMENTADD").items() if not k.startswith("data[")}
    r = configured.post("/api/bitrix/webhook", data={**form, "data[FIELDS_AFTER][ID]": "5"})
    r.close()
    assert seen == [(None, None)]


def test_entity_row_drives_the_wire_names():
    from flask_bitrix24.entities import ENTITIES, TASKS, entity_for_event, entity_for_method

    assert ENTITIES["tasks"] is TASKS and entity_for_method("tasks.task.list") is TASKS
    assert (TASKS.method("fields"), TASKS.method("complete"), TASKS.id_param) == (
        "tasks.task.getFields", "tasks.task.complete", "taskId")
    assert TASKS.events == ("ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE")
    assert entity_for_event("ontaskupdate") is TASKS and entity_for_event("ONCRMDEALADD").name == "deals"
