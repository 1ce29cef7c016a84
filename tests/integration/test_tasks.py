"""Tasks over real HTTP: our app and the emulator's tasks.task.* (tasks.py), no mocks.

What a caller sees is the other entities' shape: ``{"result": ...}`` without the ``task`` / ``tasks``
wrappers, 201 with the new id and a Location on create, ``total`` / ``next`` on lists, ``all=1`` streaming
and bulk writes; ONTASK* events reach a handler with the task's id and ``event.fetch()`` loads it.
"""

from __future__ import annotations

import time

import pytest
from flask_bitrix24.extensions import bitrix24

from tests.integration.test_e2e import wait_for


def _create(stack, title, **fields):
    r = stack.http.post(f"{stack.api}/clients/1/tasks", json={"fields": {"TITLE": title, "RESPONSIBLE_ID": 1, **fields}})
    assert r.status_code == 201, r.text
    return r


def test_task_crud_and_complete(stack):
    api, http = stack.api, stack.http
    r = _create(stack, "Call Ada", PRIORITY=2, DESCRIPTION="about the contract")
    task_id = r.json()["result"]
    assert isinstance(task_id, int) and r.json() == {"result": task_id}
    assert r.headers["Location"].endswith(f"/api/bitrix/clients/1/tasks/{task_id}")

    task = http.get(stack.app_server.url + r.headers["Location"]).json()["result"]
    assert (task["id"], task["title"], task["responsibleId"], task["priority"], task["status"]) == (
        str(task_id), "Call Ada", "1", "2", "2")  # the portal's camelCase keys and string values, unwrapped
    assert task["description"] == "about the contract"

    changed = http.patch(f"{api}/clients/1/tasks/{task_id}", json={"TITLE": "Call Ada again", "PRIORITY": 1})
    assert changed.status_code == 200
    assert (changed.json()["result"]["title"], changed.json()["result"]["priority"]) == ("Call Ada again", "1")

    done = http.post(f"{api}/clients/1/tasks/{task_id}/complete")
    assert done.status_code == 200 and done.json()["result"]["status"] == "5"
    assert http.get(f"{api}/clients/1/tasks/{task_id}").json()["result"]["status"] == "5"
    again = http.post(f"{api}/clients/1/tasks/{task_id}/complete")  # completed already: the portal refuses
    assert again.status_code == 400
    assert again.json()["error"] == "0" and "not allowed" in again.json()["error_description"]

    assert http.delete(f"{api}/clients/1/tasks/{task_id}").json() == {"result": True}
    gone = http.get(f"{api}/clients/1/tasks/{task_id}")  # tasks.task.get answers [] for it
    assert gone.status_code == 404 and gone.json()["error"] == "NOT_FOUND"


def test_task_refusals(stack):
    api, http = stack.api, stack.http
    untitled = http.post(f"{api}/clients/1/tasks", json={"RESPONSIBLE_ID": 1})
    assert untitled.status_code == 400 and untitled.json()["error"] == "ERROR_CORE"
    assert "title" in untitled.json()["error_description"].lower()
    camel = http.post(f"{api}/clients/1/tasks", json={"title": "x", "responsibleId": 1})  # input names are UPPER
    assert camel.status_code == 400 and camel.json()["error"] == "INVALID_FIELD_NAME"
    assert http.post(f"{api}/clients/1/tasks/abc/complete").json()["error"] == "INVALID_ID"
    wrong_method = http.get(f"{api}/clients/1/tasks/5/complete")  # the static segment is ours, not an entity rule's
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert http.patch(f"{api}/clients/1/tasks/999999", json={"TITLE": "x"}).status_code == 400  # not allowed


def test_task_list_paging_filters_select_order_and_all(stack):
    api, http = stack.api, stack.http
    items = [{"fields": {"TITLE": f"T{i:02d}", "RESPONSIBLE_ID": 1 if i % 2 else 2, "PRIORITY": 2 if i < 5 else 1}}
             for i in range(60)]
    written = http.post(f"{api}/clients/1/tasks/batch", json={"items": items})
    assert written.status_code == 200, written.text
    body = written.json()
    assert (body["created"], body["failed"], body["updated"]) == (60, 0, 0)
    ids = [o["id"] for o in body["result"]]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 60

    first = http.get(f"{api}/clients/1/tasks", params={"order[ID]": "ASC", "select": ["ID", "TITLE"]}).json()
    assert (len(first["result"]), first["total"], first["next"]) == (50, 60, 50)
    assert [row["id"] for row in first["result"]] == [str(i) for i in ids[:50]]
    assert first["result"][0]["title"] == "T00"
    last = http.get(f"{api}/clients/1/tasks", params={"order[ID]": "ASC", "start": 50}).json()
    assert [row["id"] for row in last["result"]] == [str(i) for i in ids[50:]] and "next" not in last

    urgent = http.get(f"{api}/clients/1/tasks?filter[>=PRIORITY]=2&filter[RESPONSIBLE_ID]=2&ORDER_BY=-ID").json()
    assert [row["title"] for row in urgent["result"]] == ["T04", "T02", "T00"] and urgent["total"] == 3

    every = http.get(f"{api}/clients/1/tasks", params={"all": 1, "select": ["ID"]}).json()
    assert every["total"] == 60 and sorted(int(row["id"]) for row in every["result"]) == sorted(ids)
    mine = http.get(f"{api}/clients/1/tasks", params={"all": 1, "filter[RESPONSIBLE_ID]": 2}).json()
    assert mine["total"] == 30 and {row["responsibleId"] for row in mine["result"]} == {"2"}

    updated = http.post(f"{api}/clients/1/tasks/batch", json={"items": [{"id": ids[0], "fields": {"TITLE": "First"}}]})
    assert updated.json()["updated"] == 1
    assert http.get(f"{api}/clients/1/tasks/{ids[0]}").json()["result"]["title"] == "First"


def test_task_fields_are_unwrapped(stack):
    fields = stack.http.get(f"{stack.api}/clients/1/tasks/fields").json()["result"]
    assert "TITLE" in fields and "RESPONSIBLE_ID" in fields and "fields" not in fields


@pytest.fixture
def handlers():
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}
    yield bitrix24
    bitrix24.hooks._handlers.clear()
    bitrix24.hooks._handlers.update(saved)


def test_task_events_reach_their_handlers_and_fetch_loads_the_task(stack, handlers):
    seen = []

    @handlers.on("ONTASKADD")
    def on_add(event):
        seen.append((event.name, event.client_id, event.entity_type, event.entity_id, event.fetch()["title"]))

    @handlers.on("ONTASKDELETE")
    def on_delete(event):
        seen.append((event.name, event.client_id, event.entity_type, event.entity_id, None))

    def handled(count):
        assert stack.emulator.wait_events(30)
        deadline = time.monotonic() + 30  # the handlers run after the answer: seconds on a loaded machine
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    task_id = _create(stack, "Event me").json()["result"]
    handled(1)  # (the handler reads the task: deleted before that, the fetch would be NOT_FOUND and retried)
    assert stack.http.delete(f"{stack.api}/clients/1/tasks/{task_id}").status_code == 200
    handled(2)
    assert seen == [("ONTASKADD", 1, "TASK", str(task_id), "Event me"), ("ONTASKDELETE", 1, "TASK", str(task_id), None)]

    def logged():
        log = stack.http.get(f"{stack.api}/clients/1/events", params={"event": "ONTASKADD"}).json()["result"]
        return [(e["entity_type"], e["entity_id"], e["status"]) for e in log]

    # (the outcome is committed just after the handler returns, in the thread that ran it)
    assert wait_for(lambda: logged() == [("TASK", str(task_id), "done")]), logged()
