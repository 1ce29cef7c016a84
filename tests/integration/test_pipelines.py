"""Deal pipelines and stages, lead statuses and sources, stage checks on deal/lead writes and moving a deal to
another pipeline: our API against the emulator over real HTTP."""

from __future__ import annotations

import pytest


def portal(stack, method, params):
    """Call the emulator directly (what an admin does in the portal: not through our API)."""
    r = stack.http.post(stack.emulator_server.base + method, json=params)
    assert r.status_code == 200, r.text
    return r.json()["result"]


@pytest.fixture
def wholesale(stack):
    """A second deal pipeline, made on the portal: its id."""
    category = portal(stack, "crm.category.add", {"entityTypeId": 2, "fields": {"name": "Wholesale", "sort": 200}})
    stack.emulator.reset_counters()
    return category["category"]["id"]


def test_pipelines_list_every_pipeline_with_its_stages_in_order(stack, wholesale):
    r = stack.http.get(f"{stack.api}/clients/1/deals/pipelines")
    assert r.status_code == 200, r.text
    pipelines = r.json()["result"]
    assert [(p["id"], p["name"], p["is_default"]) for p in pipelines] == [(0, "General", True),
                                                                          (wholesale, "Wholesale", False)]
    general, other = pipelines
    assert general["entity_id"] == "DEAL_STAGE" and general["stage_prefix"] == ""
    assert [s["id"] for s in general["stages"]] == ["NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING",
                                                    "FINAL_INVOICE", "WON", "LOSE", "APOLOGY"]
    assert general["stages"][0] == {"id": "NEW", "name": "New", "sort": 10, "color": "#39A8EF",
                                    "semantics": "process"}
    assert [s["semantics"] for s in general["stages"]][-3:] == ["won", "lost", "lost"]
    assert other["entity_id"] == f"DEAL_STAGE_{wholesale}" and other["stage_prefix"] == f"C{wholesale}:"
    assert other["stages"] and all(s["id"].startswith(f"C{wholesale}:") for s in other["stages"])
    assert {"won", "lost", "process"} == {s["semantics"] for s in other["stages"]}
    sorts = [s["sort"] for s in other["stages"]]
    assert sorts == sorted(sorts)
    # one category list, then the stages of both pipelines in one batch request
    counters = stack.emulator.counters
    assert counters.by_method["crm.category.list"] == 1 and counters.by_method["batch"] == 1
    assert counters.batch_commands["crm.status.list"] == 2 and counters.requests == 2


def test_pipelines_path_is_not_taken_for_a_record_id(stack):
    # /deals/pipelines must not reach the record rule (/deals/<id>), which would answer 400 INVALID_ID
    r = stack.http.get(f"{stack.api}/clients/1/deals/pipelines")
    assert r.status_code == 200 and isinstance(r.json()["result"], list)
    r = stack.http.patch(f"{stack.api}/clients/1/deals/pipelines", json={"TITLE": "x"})
    assert r.status_code == 405 and r.json()["error"] == "METHOD_NOT_ALLOWED"


def test_lead_statuses_and_sources(stack):
    statuses = stack.http.get(f"{stack.api}/clients/1/leads/statuses").json()["result"]
    by_id = {s["id"]: s for s in statuses}
    assert statuses[0]["id"] == "NEW" and by_id["NEW"]["semantics"] == "process"
    assert by_id["CONVERTED"]["semantics"] == "won" and by_id["JUNK"]["semantics"] == "lost"
    assert [s["sort"] for s in statuses] == sorted(s["sort"] for s in statuses)
    sources = stack.http.get(f"{stack.api}/clients/1/leads/sources").json()["result"]
    assert sources[:3] == [{"id": "CALL", "name": "Call", "sort": 10}, {"id": "EMAIL", "name": "E-mail", "sort": 20},
                           {"id": "WEB", "name": "Website", "sort": 30}]
    assert all(set(s) == {"id", "name", "sort"} for s in sources)


def test_create_in_another_pipeline_writes_the_full_stage_id(stack, wholesale):
    r = stack.http.post(f"{stack.api}/clients/1/deals",
                        json={"TITLE": "Bulk order", "CATEGORY_ID": wholesale, "STAGE_ID": "PREPARATION"})
    assert r.status_code == 201, r.text
    deal = stack.http.get(f"{stack.api}/clients/1/deals/{r.json()['result']}").json()["result"]
    assert deal["CATEGORY_ID"] == str(wholesale) and deal["STAGE_ID"] == f"C{wholesale}:PREPARATION"
    # a prefixed stage alone puts the deal in its pipeline
    r = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "B", "STAGE_ID": f"C{wholesale}:NEW"})
    deal = stack.http.get(f"{stack.api}/clients/1/deals/{r.json()['result']}").json()["result"]
    assert deal["CATEGORY_ID"] == str(wholesale) and deal["STAGE_ID"] == f"C{wholesale}:NEW"


def test_unknown_stage_or_pipeline_is_a_400_naming_the_valid_stages(stack, wholesale):
    before = len(stack.emulator.records["deal"])
    r = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "x", "STAGE_ID": "NEGOTIATION"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "INVALID_STAGE" and body["field"] == "fields.STAGE_ID"
    assert "NEW, PREPARATION" in body["error_description"] and body["valid_stages"][0] == "NEW"
    r = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "x", "CATEGORY_ID": 99})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_CATEGORY"
    r = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "x", "CATEGORY_ID": "three"})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_CATEGORY"
    r = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "x", "CATEGORY_ID": 0,
                                                               "STAGE_ID": f"C{wholesale}:NEW"})
    assert r.status_code == 400 and r.json()["error"] == "STAGE_IN_OTHER_PIPELINE"
    assert len(stack.emulator.records["deal"]) == before  # nothing was created


def test_update_checks_the_stage_against_the_deals_own_pipeline(stack, wholesale):
    deal_id = stack.http.post(f"{stack.api}/clients/1/deals",
                              json={"TITLE": "W", "CATEGORY_ID": wholesale}).json()["result"]
    # a bare code is a stage of the deal's pipeline
    r = stack.http.patch(f"{stack.api}/clients/1/deals/{deal_id}", json={"STAGE_ID": "WON"})
    assert r.status_code == 200 and r.json() == {"result": True}
    assert stack.emulator.records["deal"][deal_id]["STAGE_ID"] == f"C{wholesale}:WON"
    # the portal would silently ignore these: we refuse them
    r = stack.http.patch(f"{stack.api}/clients/1/deals/{deal_id}", json={"STAGE_ID": "C77:NEW"})
    assert r.status_code == 400 and r.json()["error"] == "STAGE_IN_OTHER_PIPELINE"
    assert f"/api/bitrix/clients/1/deals/{deal_id}/pipeline" in r.json()["error_description"]
    r = stack.http.patch(f"{stack.api}/clients/1/deals/{deal_id}", json={"CATEGORY_ID": 0})
    assert r.status_code == 400 and r.json()["error"] == "PIPELINE_CHANGE_REFUSED"
    r = stack.http.patch(f"{stack.api}/clients/1/deals/{deal_id}", json={"STAGE_ID": "NOPE"})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_STAGE"
    assert f"C{wholesale}:NEW" in r.json()["valid_stages"]
    assert stack.emulator.records["deal"][deal_id]["STAGE_ID"] == f"C{wholesale}:WON"
    # a missing deal is the portal's 404
    r = stack.http.patch(f"{stack.api}/clients/1/deals/999999", json={"STAGE_ID": "WON"})
    assert r.status_code == 404


def test_move_a_deal_to_another_pipeline(stack, wholesale):
    deal_id = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": "M"}).json()["result"]
    r = stack.http.put(f"{stack.api}/clients/1/deals/{deal_id}/pipeline",
                       json={"CATEGORY_ID": wholesale, "STAGE_ID": "EXECUTING"})
    assert r.status_code == 200, r.text
    assert r.json() == {"result": {"ID": deal_id, "CATEGORY_ID": wholesale, "STAGE_ID": f"C{wholesale}:EXECUTING"}}
    deal = stack.http.get(f"{stack.api}/clients/1/deals/{deal_id}").json()["result"]
    assert deal["CATEGORY_ID"] == str(wholesale) and deal["STAGE_ID"] == f"C{wholesale}:EXECUTING"
    # back to the default pipeline, first stage by default
    r = stack.http.put(f"{stack.api}/clients/1/deals/{deal_id}/pipeline", json={"CATEGORY_ID": 0})
    assert r.json()["result"] == {"ID": deal_id, "CATEGORY_ID": 0, "STAGE_ID": "NEW"}
    r = stack.http.put(f"{stack.api}/clients/1/deals/{deal_id}/pipeline", json={"CATEGORY_ID": 5000})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_CATEGORY"
    r = stack.http.put(f"{stack.api}/clients/1/deals/{deal_id}/pipeline", json={"CATEGORY_ID": wholesale,
                                                                                "STAGE_ID": "BOGUS"})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_STAGE"
    r = stack.http.put(f"{stack.api}/clients/1/deals/{deal_id}/pipeline", json={"STAGE_ID": "NEW"})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_CATEGORY"
    assert stack.emulator.records["deal"][deal_id]["STAGE_ID"] == "NEW"


def test_lead_status_is_checked(stack):
    r = stack.http.post(f"{stack.api}/clients/1/leads", json={"TITLE": "L", "STATUS_ID": "IN_PROCESS"})
    assert r.status_code == 201
    lead_id = r.json()["result"]
    assert stack.emulator.records["lead"][lead_id]["STATUS_ID"] == "IN_PROCESS"
    r = stack.http.patch(f"{stack.api}/clients/1/leads/{lead_id}", json={"STATUS_ID": "WON"})
    assert r.status_code == 400 and r.json()["error"] == "INVALID_STAGE" and r.json()["field"] == "fields.STATUS_ID"
    assert "IN_PROCESS" in r.json()["error_description"]
    assert stack.emulator.records["lead"][lead_id]["STATUS_ID"] == "IN_PROCESS"
