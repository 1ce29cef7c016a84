"""The bulk endpoints over real HTTP: all=1 streaming, <entity>/batch, raw batch."""

from __future__ import annotations

import json

from tests.integration.test_bulk import seed


def test_list_all_streams_every_matching_row(stack):
    seed(stack.emulator, "deal", 3000)
    r = stack.http.get(f"{stack.api}/clients/1/deals", params={"all": 1, "select": ["ID", "TITLE"], "filter[>=OPPORTUNITY]": 1000},
                       stream=True)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert "Content-Length" not in r.headers  # streamed, not built in memory
    body = json.loads(b"".join(r.iter_content(65536)))
    assert body["total"] == 2000 and len(body["result"]) == 2000
    assert [int(row["ID"]) for row in body["result"]] == list(range(1001, 3001))
    assert "error" not in body


def test_list_all_errors_before_streaming_keep_their_status(stack):
    r = stack.http.get(f"{stack.api}/clients/77/contacts", params={"all": 1})  # no config for client 77
    assert r.status_code == 400 and r.json()["error"] == "CONFIG_MISSING"
    r = stack.http.get(f"{stack.api}/clients/1/contacts", params={"all": 1, "start": 50})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_START"
    r = stack.http.get(f"{stack.api}/clients/1/contacts", params={"all": "yes"})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_ALL"


def test_list_all_of_nothing(stack):
    r = stack.http.get(f"{stack.api}/clients/1/leads", params={"all": 1})
    assert r.json() == {"result": [], "total": 0}


def test_entity_batch_creates_and_updates_with_a_result_per_item(stack):
    seed(stack.emulator, "contact", 2)
    items = [{"fields": {"NAME": f"C{i}", "EMAIL": [{"VALUE": f"c{i}@example.com"}]}} for i in range(120)]
    items += [{"id": 1, "fields": {"NAME": "Renamed"}}, {"id": 99999, "fields": {"NAME": "Missing"}},
              {"fields": {"COMMENTS": "no name"}}]
    r = stack.http.post(f"{stack.api}/clients/1/contacts/batch", json={"items": items})
    assert r.status_code == 200
    body = r.json()
    assert (body["created"], body["updated"], body["failed"]) == (120, 1, 2)
    results = body["result"]
    assert [x["index"] for x in results] == list(range(123))
    assert results[120] == {"index": 120, "action": "updated", "ok": True, "id": 1}
    assert results[121]["ok"] is False and results[121]["error"] == "NOT_FOUND"
    assert results[122]["ok"] is False and "required" in results[122]["error_description"]
    records = stack.emulator.records["contact"]
    assert [records[x["id"]]["NAME"] for x in results[:120]] == [f"C{i}" for i in range(120)]
    assert records[1]["NAME"] == "Renamed"
    assert stack.emulator.counters.by_method["batch"] == 3  # 123 commands in 3 requests


def test_entity_batch_refuses_bad_items_before_sending(stack):
    for body, field in [({"items": []}, "items"), ({"items": [{"NAME": "bare"}]}, "items[0].NAME"),
                        ({"items": [{"fields": {"NAME": "a"}}, {"fields": {"name": "b"}}]}, "items[1].fields.name"),
                        ({"items": [{"id": -3, "fields": {"NAME": "a"}}]}, "items[0].id"),
                        ({"items": [{"fields": {"NAME": "a"}, "x": 1}]}, "items[0].x"),
                        ({"rows": []}, "rows")]:
        r = stack.http.post(f"{stack.api}/clients/1/contacts/batch", json=body)
        assert r.status_code == 400 and r.json()["field"] == field, (body, r.json())
    # What the form encoding cannot carry (a lone surrogate, a key PHP would read as nesting), after 60 good
    # items: nothing of the request is sent.
    good = [{"fields": {"NAME": f"C{i}"}} for i in range(60)]
    for bad, why in [({"fields": {"NAME": "ok \udfff then"}}, "surrogate"),
                     ({"fields": {"NAME": "a", "UF_CRM_MAP": {"a[b]": 1}}}, "'[' or ']'"),
                     ({"fields": {"NAME": "a"}, "params": {"REGISTER_SONET_EVENT": {"x y]": 1}}}, "'[' or ']'")]:
        r = stack.http.post(f"{stack.api}/clients/1/contacts/batch", json={"items": good + [bad]})
        assert r.status_code == 400 and r.json()["error"] == "INVALID_PARAMS", r.json()
        assert r.json()["field"] == "items[60]" and why in r.json()["error_description"], r.json()
    assert stack.emulator.counters.requests == 0


def test_entity_batch_size_is_bounded(make_stack):
    s = make_stack(app_config={"BITRIX_BATCH_MAX_ITEMS": 10})
    s.configure()
    r = s.http.post(f"{s.api}/clients/1/leads/batch", json={"items": [{"fields": {"TITLE": "x"}}] * 11})
    assert r.status_code == 400 and r.json()["error"] == "TOO_MANY_ITEMS"


def test_raw_batch_runs_crm_commands_with_references(stack):
    r = stack.http.post(f"{stack.api}/clients/1/batch", json={"cmd": {
        "c": {"method": "crm.contact.add", "params": {"fields": {"NAME": "Raw"}}},
        "g": "crm.contact.get?id=$result[c]",
        "l": {"method": "crm.contact.list", "params": {"select": ["ID"]}},
        "x": "crm.deal.get?id=424242"}})
    assert r.status_code == 200
    out = r.json()["result"]
    assert out["result"]["g"]["NAME"] == "Raw" and out["result"]["g"]["ID"] == str(out["result"]["c"])
    assert out["result_total"] == {"l": 1}
    assert out["result_error"]["x"]["error"] == "NOT_FOUND"


def test_raw_batch_only_allows_the_crm_methods_we_expose(stack):
    for cmd in ({"a": "user.get"}, {"a": {"method": "batch", "params": {}}}, {"a": "crm.contact.delete?id=1", "b": 5},
                {"a": {"method": "crm.contact.add", "params": []}}):
        r = stack.http.post(f"{stack.api}/clients/1/batch", json={"cmd": cmd})
        assert r.status_code == 400 and r.json()["field"].startswith("cmd["), r.json()
    r = stack.http.post(f"{stack.api}/clients/1/batch", json={"cmd": {"a": "crm.contact.list"}, "halt": "no"})
    assert r.status_code == 400 and r.json()["field"] == "halt"
    assert stack.emulator.counters.requests == 0


def test_entity_batch_refuses_one_origin_id_for_two_new_records(stack):
    items = [{"fields": {"NAME": "A", "ORIGIN_ID": "crm-42"}}, {"fields": {"NAME": "B", "ORIGIN_ID": "crm-42"}}]
    r = stack.http.post(f"{stack.api}/clients/1/contacts/batch", json={"items": items})
    assert r.status_code == 400 and "crm-42" in r.json()["error_description"]
    assert stack.emulator.counters.requests == 0


def test_raw_batch_refuses_an_unsendable_key_before_running_anything(stack):
    cmd = {f"k{i}": {"method": "crm.contact.add", "params": {"fields": {"NAME": f"N{i}"}}} for i in range(50)}
    cmd["z[1]"] = "crm.contact.get?id=1"
    r = stack.http.post(f"{stack.api}/clients/1/batch", json={"cmd": cmd})
    assert r.status_code == 400
    assert stack.emulator.records["contact"] == {}


def test_raw_batch_accepts_halt_as_0_or_1(stack):
    r = stack.http.post(f"{stack.api}/clients/1/batch", json={"cmd": ["crm.contact.get?id=5", "crm.contact.list"], "halt": 1})
    body = r.json()["result"]
    assert r.status_code == 200 and list(body["result_error"]) == ["0", "1"]
    assert body["result_error"]["1"]["error"] == "BATCH_HALTED"
