"""Contacts of deals, leads and companies, and companies of contacts, over real HTTP against the emulator:
read and replaced in order, one primary; CONTACT_IDS on create reaches the portal."""

from __future__ import annotations

import pytest


def create(stack, entity, fields):
    r = stack.http.post(f"{stack.api}/clients/1/{entity}", json={"fields": fields})
    assert r.status_code == 201, r.text
    return r.json()["result"]


@pytest.fixture
def people(stack):
    return [create(stack, "contacts", {"NAME": name}) for name in ("Ada", "Grace", "Linus")]


@pytest.mark.parametrize("entity", ["deals", "leads"])
def test_put_replaces_the_contacts_in_order_with_one_primary(stack, people, entity):
    ada, grace, linus = people
    owner = create(stack, entity, {"TITLE": "Linked"})
    url = f"{stack.api}/clients/1/{entity}/{owner}/contacts"
    assert stack.http.get(url).json() == {"result": []}
    r = stack.http.put(url, json={"contacts": [{"CONTACT_ID": grace}, {"CONTACT_ID": ada, "IS_PRIMARY": "Y"},
                                               {"CONTACT_ID": linus}]})
    assert r.status_code == 200, r.text
    rows = r.json()["result"]
    assert [row["CONTACT_ID"] for row in rows] == [grace, ada, linus]
    assert [row["IS_PRIMARY"] for row in rows] == ["N", "Y", "N"]
    assert [row["SORT"] for row in rows] == [10, 20, 30]
    assert stack.http.get(url).json()["result"] == rows
    # replaced: Grace is unlinked, the first becomes primary when none is named
    r = stack.http.put(url, json={"contacts": [{"CONTACT_ID": linus}, {"CONTACT_ID": ada}]})
    rows = r.json()["result"]
    assert [(row["CONTACT_ID"], row["IS_PRIMARY"]) for row in rows] == [(linus, "Y"), (ada, "N")]
    assert sum(row["IS_PRIMARY"] == "Y" for row in rows) == 1
    # an explicit empty list unlinks them all
    assert stack.http.put(url, json={"contacts": []}).json() == {"result": []}
    assert stack.http.get(url).json() == {"result": []}


def test_bad_contact_lists_are_refused_before_the_portal(stack, people):
    deal = create(stack, "deals", {"TITLE": "D"})
    url = f"{stack.api}/clients/1/deals/{deal}/contacts"
    stack.http.put(url, json={"contacts": [{"CONTACT_ID": people[0]}]})
    for body, code in (({}, "INVALID_LINKS"), ({"contacts": None}, "INVALID_LINKS"),
                       ({"contacts": [{"CONTACT_ID": people[0], "IS_PRIMARY": "Y"},
                                      {"CONTACT_ID": people[1], "IS_PRIMARY": "Y"}]}, "INVALID_LINKS"),
                       ({"contacts": [{"CONTACT_ID": people[0]}, {"CONTACT_ID": people[0]}]}, "INVALID_LINKS"),
                       ({"contacts": [{"CONTACT_ID": 0}]}, "INVALID_LINKS"),
                       ({"contacts": [{"CONTACT_ID": people[0], "IS_PRIMARY": "yes"}]}, "INVALID_LINKS"),
                       ({"contacts": [{"COMPANY_ID": 1}]}, "INVALID_LINKS")):
        r = stack.http.put(url, json=body)
        assert r.status_code == 400 and r.json()["error"] == code, (body, r.json())
    assert [row["CONTACT_ID"] for row in stack.http.get(url).json()["result"]] == [people[0]]
    assert stack.http.get(f"{stack.api}/clients/1/activities/1/contacts").status_code == 404
    assert stack.http.get(f"{stack.api}/clients/1/deals/999999/contacts").status_code == 404


def test_contact_ids_on_create_link_the_contacts(stack, people):
    ada, grace, _ = people
    deal = create(stack, "deals", {"TITLE": "Linked at birth", "CONTACT_IDS": [grace, ada]})
    rows = stack.http.get(f"{stack.api}/clients/1/deals/{deal}/contacts").json()["result"]
    assert [(row["CONTACT_ID"], row["IS_PRIMARY"]) for row in rows] == [(grace, "Y"), (ada, "N")]
    lead = create(stack, "leads", {"TITLE": "Lead", "CONTACT_IDS": [ada]})
    rows = stack.http.get(f"{stack.api}/clients/1/leads/{lead}/contacts").json()["result"]
    assert [row["CONTACT_ID"] for row in rows] == [ada]


def test_contacts_of_a_company_are_the_contacts_companies_links(stack, people):
    ada, grace, linus = people
    acme = create(stack, "companies", {"TITLE": "Acme"})
    url = f"{stack.api}/clients/1/companies/{acme}/contacts"
    r = stack.http.put(url, json={"contacts": [{"CONTACT_ID": grace}, {"CONTACT_ID": ada, "IS_PRIMARY": "Y"},
                                               {"CONTACT_ID": linus, "IS_PRIMARY": "Y"}]})
    assert r.status_code == 200, r.text
    rows = r.json()["result"]
    assert [(row["CONTACT_ID"], row["SORT"]) for row in rows] == [(grace, 10), (ada, 20), (linus, 30)]
    # IS_PRIMARY: Acme is each one's primary company (their only one here)
    assert all(row["IS_PRIMARY"] == "Y" for row in rows)
    r = stack.http.put(url, json={"contacts": [{"CONTACT_ID": linus}]})
    assert [row["CONTACT_ID"] for row in r.json()["result"]] == [linus]
    assert stack.http.get(f"{stack.api}/clients/1/contacts/{grace}/companies").json() == {"result": []}
    assert stack.http.put(url, json={"contacts": []}).json() == {"result": []}


def test_companies_of_a_contact(stack, people):
    ada = people[0]
    acme, globex = (create(stack, "companies", {"TITLE": t}) for t in ("Acme", "Globex"))
    url = f"{stack.api}/clients/1/contacts/{ada}/companies"
    r = stack.http.put(url, json={"companies": [{"COMPANY_ID": globex}, {"COMPANY_ID": acme, "IS_PRIMARY": "Y"}]})
    assert r.status_code == 200, r.text
    assert [(row["COMPANY_ID"], row["IS_PRIMARY"]) for row in r.json()["result"]] == [(globex, "N"), (acme, "Y")]
    # the same link seen from the company
    contacts = stack.http.get(f"{stack.api}/clients/1/companies/{acme}/contacts").json()["result"]
    assert [row["CONTACT_ID"] for row in contacts] == [ada]
    assert stack.http.get(f"{stack.api}/clients/1/deals/1/companies").status_code == 404
