"""Companies from the entity table, field metadata, and upsert by e-mail or phone (issue 6 part)."""

from __future__ import annotations

from collections import Counter


def test_companies_crud(stack):
    api, http = stack.api, stack.http
    r = http.post(f"{api}/clients/1/companies", json={"fields": {"TITLE": "Acme", "EMAIL": [{"VALUE": "hi@acme.example"}]}})
    assert r.status_code == 201
    cid = r.json()["result"]
    assert http.get(f"{api}/clients/1/companies/{cid}").json()["result"]["TITLE"] == "Acme"
    assert http.patch(f"{api}/clients/1/companies/{cid}", json={"TITLE": "Acme Ltd"}).json() == {"result": True}
    assert [row["TITLE"] for row in http.get(f"{api}/clients/1/companies", params={"select": ["ID", "TITLE"]}).json()["result"]] == ["Acme Ltd"]
    assert http.delete(f"{api}/clients/1/companies/{cid}").json() == {"result": True}
    assert http.get(f"{api}/clients/1/companies/{cid}").status_code == 404


def test_field_metadata(stack):
    body = stack.http.get(f"{stack.api}/clients/1/deals/fields").json()["result"]
    assert body["TITLE"]["type"] == "string" and body["PHONE" if "PHONE" in body else "ID"]
    assert "STAGE_ID" in body and body["ID"]["isReadOnly"] is True
    assert stack.http.get(f"{stack.api}/clients/1/widgets/fields").status_code == 404


def test_upsert_twice_leaves_one_record_updated(stack):
    url = f"{stack.api}/clients/1/contacts/upsert"
    first = stack.http.put(url, json={"fields": {"NAME": "Ada", "EMAIL": [{"VALUE": "ada@example.com", "VALUE_TYPE": "WORK"}]}})
    assert first.status_code == 201
    body = first.json()["result"]
    assert body["action"] == "created" and body["matched_by"] is None
    new_id = body["id"]
    assert first.headers["Location"].endswith(f"/contacts/{new_id}")

    again = stack.http.put(url, json={"fields": {"NAME": "Augusta Ada", "LAST_NAME": "King",
                                                 "EMAIL": [{"VALUE": "ADA@example.com", "VALUE_TYPE": "WORK"}]}})
    assert again.status_code == 200
    assert again.json()["result"] == {"id": new_id, "action": "updated", "matched_by": "EMAIL", "duplicates": []}
    records = stack.emulator.records["contact"]
    assert list(records) == [new_id]
    record = stack.http.get(f"{stack.api}/clients/1/contacts/{new_id}").json()["result"]
    assert (record["NAME"], record["LAST_NAME"]) == ("Augusta Ada", "King")
    assert [e["VALUE"] for e in record["EMAIL"]] == ["ada@example.com"]  # not added a second time


def test_upsert_by_phone_and_for_leads_and_companies(stack):
    stack.http.put(f"{stack.api}/clients/1/leads/upsert", json={"fields": {"TITLE": "L", "PHONE": [{"VALUE": "+1 (555) 010-0000"}]}})
    r = stack.http.put(f"{stack.api}/clients/1/leads/upsert", json={"fields": {"TITLE": "L2", "PHONE": [{"VALUE": "+15550100000"}]}})
    assert r.json()["result"]["action"] == "updated" and r.json()["result"]["matched_by"] == "PHONE"
    assert Counter(x["TITLE"] for x in stack.emulator.records["lead"].values()) == {"L2": 1}
    r = stack.http.put(f"{stack.api}/clients/1/companies/upsert", json={"TITLE": "Co", "EMAIL": "co@example.com"})
    assert r.status_code == 201


def test_upsert_refusals(stack):
    r = stack.http.put(f"{stack.api}/clients/1/contacts/upsert", json={"fields": {"NAME": "No comms"}})
    assert r.status_code == 400 and "EMAIL or PHONE" in r.json()["error_description"]
    r = stack.http.put(f"{stack.api}/clients/1/deals/upsert", json={"fields": {"TITLE": "x", "EMAIL": "a@b.c"}})
    assert r.status_code == 404
    assert stack.emulator.counters.requests == 0


def test_activities_crud(stack):
    api, http = stack.api, stack.http
    contact = http.post(f"{api}/clients/1/contacts", json={"NAME": "Ada"}).json()["result"]
    r = http.post(f"{api}/clients/1/activities", json={"fields": {
        "OWNER_TYPE_ID": 3, "OWNER_ID": contact, "TYPE_ID": 2, "SUBJECT": "Call Ada", "COMPLETED": "N"}})
    assert r.status_code == 201, r.text
    aid = r.json()["result"]
    assert http.get(f"{api}/clients/1/activities/{aid}").json()["result"]["SUBJECT"] == "Call Ada"
    assert http.patch(f"{api}/clients/1/activities/{aid}", json={"COMPLETED": "Y"}).json() == {"result": True}
    listed = http.get(f"{api}/clients/1/activities", params={"filter[OWNER_ID]": contact, "select": ["ID", "COMPLETED"]}).json()
    assert listed["result"] == [{"ID": str(aid), "COMPLETED": "Y"}]
    missing = http.post(f"{api}/clients/1/activities", json={"fields": {"SUBJECT": "no owner"}})
    assert missing.status_code == 400
    assert http.delete(f"{api}/clients/1/activities/{aid}").json() == {"result": True}


def test_smart_process_items_crud_list_and_fields(stack):
    api, http = stack.api, stack.http
    r = http.post(f"{api}/clients/1/items/128", json={"fields": {"title": "Project X", "opportunity": 1500.5}})
    assert r.status_code == 201, r.text
    item_id = r.json()["result"]
    assert isinstance(item_id, int) and r.headers["Location"].endswith(f"/clients/1/items/128/{item_id}")
    item = http.get(f"{api}/clients/1/items/128/{item_id}").json()["result"]
    assert item["title"] == "Project X" and item["opportunity"] == 1500.5 and item["id"] == item_id
    updated = http.patch(f"{api}/clients/1/items/128/{item_id}", json={"title": "Project Y"}).json()["result"]
    assert updated["title"] == "Project Y"
    for i in range(60):
        http.post(f"{api}/clients/1/items/128", json={"title": f"P{i}"})
    page = http.get(f"{api}/clients/1/items/128", params={"select": ["id", "title"], "order[id]": "ASC"}).json()
    assert page["total"] == 61 and len(page["result"]) == 50 and page["next"] == 50
    every = http.get(f"{api}/clients/1/items/128", params={"all": 1, "select": ["id", "title"]}).json()
    assert every["total"] == 61 and [x["id"] for x in every["result"]] == sorted(x["id"] for x in every["result"])
    assert "title" in http.get(f"{api}/clients/1/items/128/fields").json()["result"]
    assert http.delete(f"{api}/clients/1/items/128/{item_id}").json() == {"result": True}
    gone = http.get(f"{api}/clients/1/items/128/{item_id}")
    assert gone.status_code == 404 and gone.json()["error"] == "NOT_FOUND"
    assert http.get(f"{api}/clients/1/items/999").status_code == 404  # no such smart process
    bad = http.post(f"{api}/clients/1/items/128", json={"fields": {"TITLE": "upper case is legacy"}})
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_FIELD_NAME"


def test_upsert_with_emails_given_as_plain_strings_still_finds_the_record(stack):
    url = f"{stack.api}/clients/1/contacts/upsert"
    assert stack.http.put(url, json={"NAME": "A", "EMAIL": "a@x.example"}).status_code == 201
    again = stack.http.put(url, json={"NAME": "A2", "EMAIL": ["a@x.example"]})
    assert again.status_code == 200 and again.json()["result"]["action"] == "updated"
    (record,) = stack.emulator.records["contact"].values()
    assert record["NAME"] == "A2"


def test_concurrent_upserts_of_one_new_email_create_one_contact(stack):
    import threading

    import requests

    url = f"{stack.api}/clients/1/contacts/upsert"
    start, answers = threading.Barrier(10), []

    def upsert(i):
        with requests.Session() as http:
            start.wait()
            r = http.put(url, json={"fields": {"NAME": f"Ada {i}", "EMAIL": [{"VALUE": "race@example.com"}]}},
                         timeout=60)
            answers.append((r.status_code, r.json()["result"]["action"]))

    threads = [threading.Thread(target=upsert, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == [(200, "updated")] * 9 + [(201, "created")]
    assert len(stack.emulator.records["contact"]) == 1


def test_a_create_rerun_with_the_same_origin_id_finds_the_first_record(stack):
    url = f"{stack.api}/clients/1/deals"
    body = {"fields": {"TITLE": "Order 1001", "ORIGINATOR_ID": "shop", "ORIGIN_ID": "1001"}}
    first = stack.http.post(url, json=body)
    assert first.status_code == 201
    again = stack.http.post(url, json=body)  # the caller lost the first answer and sends it again
    assert again.status_code == 200 and again.json() == {"result": first.json()["result"], "existing": True}
    assert again.headers["Location"] == first.headers["Location"]
    other = stack.http.post(url, json={"fields": {**body["fields"], "ORIGINATOR_ID": "crm2"}})
    assert other.status_code == 201  # another source's 1001 is another record
    plain = [stack.http.post(url, json={"fields": {"TITLE": "no origin"}}).status_code for _ in range(2)]
    assert plain == [201, 201]
    assert len(stack.emulator.records["deal"]) == 4


def test_a_bulk_create_rerun_with_the_callers_origin_ids_makes_nothing_twice(stack):
    url = f"{stack.api}/clients/1/deals/batch"
    items = [{"fields": {"TITLE": f"Order {n}", "ORIGINATOR_ID": "shop", "ORIGIN_ID": str(n)}} for n in range(60)]
    first = stack.http.post(url, json={"items": items[:30]})  # a run that got through half the orders
    assert first.status_code == 200 and first.json()["created"] == 30
    made = {x["index"]: x["id"] for x in first.json()["result"]}
    # The single create of order 5 and a bulk rerun of all 60 meet the same records.
    single = stack.http.post(f"{stack.api}/clients/1/deals", json=items[5])
    assert single.status_code == 200 and single.json()["result"] == made[5]
    rerun = stack.http.post(url, json={"items": items + [{"fields": {"TITLE": "Order 5", "ORIGINATOR_ID": "crm2",
                                                                     "ORIGIN_ID": "5"}}]})
    body = rerun.json()
    assert rerun.status_code == 200 and (body["created"], body["existing"], body["failed"]) == (31, 30, 0), body
    assert all(x["existing"] is True and x["id"] == made[x["index"]] for x in body["result"][:30])
    assert not any(x.get("existing") for x in body["result"][30:])  # another source's "5" is a record of its own
    deals = stack.emulator.records["deal"].values()
    assert len(deals) == 61
    assert sorted(int(d["ORIGIN_ID"]) for d in deals if d.get("ORIGINATOR_ID") == "shop") == list(range(60))


def test_origin_ids_other_sources_share_never_hide_or_stand_in_for_ours(stack):
    """Every source numbers its records 1, 2, ...: a rerun must look past other sources' rows (more
    than a page of them) and match exactly (the portal's filter ignores case)."""
    url = f"{stack.api}/clients/1/deals/batch"
    for source in ("shopA", "shopB"):
        items = [{"fields": {"TITLE": f"{source} {n}", "ORIGINATOR_ID": source, "ORIGIN_ID": str(n)}}
                 for n in range(1, 51)]
        assert stack.http.post(url, json={"items": items}).json()["created"] == 50
    rerun = stack.http.post(url, json={"items": items}).json()  # shopB again
    assert (rerun["created"], rerun["existing"]) == (0, 50), rerun
    # Without an ORIGINATOR_ID a rerun still finds the oldest record of that ORIGIN_ID, past a full page.
    single = stack.http.post(f"{stack.api}/clients/1/deals", json={"fields": {"TITLE": "any", "ORIGIN_ID": "50"}})
    assert single.status_code == 200 and single.json()["existing"] is True
    # Another case is another ORIGIN_ID, for single and bulk creates alike.
    first = stack.http.post(f"{stack.api}/clients/1/deals", json={"fields": {"TITLE": "a", "ORIGIN_ID": "aB3x"}})
    other = stack.http.post(f"{stack.api}/clients/1/deals", json={"fields": {"TITLE": "b", "ORIGIN_ID": "Ab3X"}})
    assert first.status_code == other.status_code == 201 and first.json()["result"] != other.json()["result"]
    assert len(stack.emulator.records["deal"]) == 102
