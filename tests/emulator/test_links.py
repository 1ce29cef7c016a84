"""Deal and lead contacts, contact <-> company links, CONTACT_IDS and the deprecated CONTACT_ID/COMPANY_ID.

Sources: https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-add.html,
.../crm-deal-contact-delete.html, .../crm-deal-contact-fields.html, .../crm-deal-contact-items-get.html,
.../crm-deal-contact-items-set.html, .../crm-deal-contact-items-delete.html,
https://apidocs.bitrix24.com/api-reference/crm/leads/management-communication/crm-lead-contact-items-get.html,
https://apidocs.bitrix24.com/api-reference/crm/contacts/company/crm-contact-company-items-get.html,
https://apidocs.bitrix24.com/api-reference/crm/companies/contacts/crm-company-contact-items-get.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html (CONTACT_IDS replaced),
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-list.html (CONTACT_IDS not returned nor filterable),
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-fields.html (the CONTACT_IDS description).
"""

from __future__ import annotations

import pytest

from bitrix24_emulator import links


def row(contact_id, sort, primary, key="CONTACT_ID"):
    return {key: contact_id, "SORT": sort, "ROLE_ID": 0, "IS_PRIMARY": primary}


@pytest.mark.parametrize("entity", ["deal", "lead"])
def test_items_set_defaults_sort_and_makes_the_first_primary(api, entity):
    owner = api.ok(f"crm.{entity}.add", {"fields": {"TITLE": "t"}})
    assert api.ok(f"crm.{entity}.contact.items.set", {"id": owner, "items": [{"CONTACT_ID": 55},
                                                                              {"CONTACT_ID": "54"}]}) is True
    assert api.ok(f"crm.{entity}.contact.items.get", {"id": owner}) == [row(55, 10, "Y"), row(54, 20, "N")]
    # The first "Y" wins; a given SORT is kept; the rows come back in SORT order with int values.
    api.ok(f"crm.{entity}.contact.items.set", {"id": owner, "items": [
        {"CONTACT_ID": 1, "SORT": 300}, {"CONTACT_ID": 2, "IS_PRIMARY": "Y", "SORT": 100},
        {"CONTACT_ID": 3, "IS_PRIMARY": "Y"}]})
    assert api.ok(f"crm.{entity}.contact.items.get", {"id": owner}) == [
        row(3, 30, "N"), row(2, 100, "Y"), row(1, 300, "N")]
    assert api.ok(f"crm.{entity}.get", {"id": owner})["CONTACT_ID"] == "2"


def test_add_and_delete_follow_the_primary_rules(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    assert api.ok("crm.deal.contact.add", {"id": deal, "fields": {"CONTACT_ID": 7}}) is True
    assert api.ok("crm.deal.contact.add", {"id": deal, "fields": {"CONTACT_ID": 8, "SORT": 5}}) is True
    # Already linked: false, and nothing changes (neither SORT nor IS_PRIMARY).
    assert api.ok("crm.deal.contact.add", {"id": deal, "fields": {"CONTACT_ID": 7, "SORT": 1, "IS_PRIMARY": "N"}}) \
        is False
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == [row(8, 5, "N"), row(7, 10, "Y")]
    assert api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] == "7"
    # Removing the primary promotes the first remaining one; removing what is not linked is false.
    assert api.ok("crm.deal.contact.delete", {"id": deal, "fields": {"CONTACT_ID": 7}}) is True
    assert api.ok("crm.deal.contact.delete", {"id": deal, "fields": {"CONTACT_ID": 7}}) is False
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == [row(8, 5, "Y")]
    assert api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] == "8"
    assert api.ok("crm.deal.contact.items.delete", {"id": deal}) is True
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == []
    assert api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] is None


def test_refusals_have_an_empty_code_and_http_400(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    cases = [
        ("crm.deal.contact.add", {"fields": {"CONTACT_ID": 1}}, "The parameter 'ownerEntityID' is invalid or not defined."),
        ("crm.deal.contact.items.get", {"id": 0}, "The parameter ownerEntityID is invalid or not defined."),
        ("crm.deal.contact.items.get", {"id": 404}, "Not found."),
        ("crm.lead.contact.add", {"id": 404, "fields": {"CONTACT_ID": 1}}, "Not found."),
        ("crm.deal.contact.add", {"id": deal, "fields": "x"}, "The parameter 'fields' must be array."),
        ("crm.deal.contact.add", {"id": deal, "fields": {"CONTACT_ID": 0}}, "The parameter 'fields' is not valid."),
        ("crm.deal.contact.delete", {"id": deal, "fields": "x"}, "The parameter 'item' must be array."),
        ("crm.deal.contact.items.set", {"id": deal}, "The parameter items must be array."),
    ]
    for method, payload, text in cases:
        assert api(method, payload) == (400, {"error": "", "error_description": text}), method


def test_fields_describes_the_link(api):
    fields = api.ok("crm.deal.contact.fields")
    assert list(fields) == ["SORT", "IS_PRIMARY", "CONTACT_ID"]
    assert fields["CONTACT_ID"]["isRequired"] is True and fields["IS_PRIMARY"]["type"] == "char"
    assert "COMPANY_ID" in api.ok("crm.contact.company.fields")


@pytest.mark.parametrize("entity", ["deal", "lead"])
def test_contact_ids_on_add_and_update_replace_the_set_and_are_never_returned(api, entity):
    owner = api.ok(f"crm.{entity}.add", {"fields": {"CONTACT_IDS": [84, 83]}})
    assert api.ok(f"crm.{entity}.contact.items.get", {"id": owner}) == [row(84, 10, "Y"), row(83, 20, "N")]
    record = api.ok(f"crm.{entity}.get", {"id": owner})
    assert record["CONTACT_ID"] == "84" and "CONTACT_IDS" not in record
    api.ok(f"crm.{entity}.update", {"id": owner, "fields": {"CONTACT_IDS": [90]}})
    assert api.ok(f"crm.{entity}.contact.items.get", {"id": owner}) == [row(90, 10, "Y")]
    listed = api.ok(f"crm.{entity}.list", {"select": ["*", "CONTACT_IDS"]})
    assert "CONTACT_IDS" not in listed[0] and listed[0]["CONTACT_ID"] == "90"
    # Not filterable: the key is dropped like any unknown one, so every row comes back.
    api.ok(f"crm.{entity}.add", {"fields": {}})
    assert len(api.ok(f"crm.{entity}.list", {"filter": {"CONTACT_IDS": 90}})) == 2
    assert api.ok(f"crm.{entity}.fields")["CONTACT_IDS"]["isMultiple"] is True


def test_deprecated_contact_id_is_the_primary_contact(api):
    deal = api.ok("crm.deal.add", {"fields": {"CONTACT_ID": 7}})
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == [row(7, 10, "Y")]
    api.ok("crm.deal.update", {"id": deal, "fields": {"CONTACT_ID": 9}})
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == [row(7, 10, "N"), row(9, 20, "Y")]
    api.ok("crm.deal.update", {"id": deal, "fields": {"CONTACT_ID": ""}})
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == [row(7, 10, "Y")]
    assert api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] == "7"


def test_deleting_records_removes_their_links(api):
    contact = api.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    other = api.ok("crm.contact.add", {"fields": {"NAME": "B"}})
    deal = api.ok("crm.deal.add", {"fields": {"CONTACT_IDS": [contact, other]}})
    company = api.ok("crm.company.add", {"fields": {"TITLE": "Co"}})
    api.ok("crm.contact.company.add", {"id": contact, "fields": {"COMPANY_ID": company}})
    api.ok("crm.contact.delete", {"id": contact})
    assert api.ok("crm.deal.contact.items.get", {"id": deal}) == [row(other, 20, "Y")]
    assert api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] == str(other)
    assert api.ok("crm.company.contact.items.get", {"id": company}) == []
    api.ok("crm.deal.delete", {"id": deal})
    assert api.emu.state(links).bindings == {}


def test_contact_and_company_are_two_views_of_one_link_set(api):
    contact = api.ok("crm.contact.add", {"fields": {"NAME": "A", "COMPANY_IDS": [12, 13]}})
    assert api.ok("crm.contact.get", {"id": contact})["COMPANY_ID"] == "12"
    assert api.ok("crm.contact.company.items.get", {"id": contact}) == [
        row(12, 10, "Y", "COMPANY_ID"), row(13, 20, "N", "COMPANY_ID")]
    company = api.ok("crm.company.add", {"fields": {"TITLE": "Co"}})
    second = api.ok("crm.contact.add", {"fields": {"NAME": "B"}})
    # Linked from the company side, it shows on the contact side, with the contact's own primary rule.
    assert api.ok("crm.company.contact.add", {"id": company, "fields": {"CONTACT_ID": contact}}) is True
    assert api.ok("crm.company.contact.add", {"id": company, "fields": {"CONTACT_ID": second}}) is True
    assert api.ok("crm.company.contact.add", {"id": company, "fields": {"CONTACT_ID": second}}) is False
    assert api.ok("crm.company.contact.items.get", {"id": company}) == [row(second, 10, "Y"), row(contact, 30, "N")]
    assert [r["COMPANY_ID"] for r in api.ok("crm.contact.company.items.get", {"id": contact})] == [12, 13, company]
    assert api.ok("crm.contact.get", {"id": second})["COMPANY_ID"] == str(company)
    # items.set on the company replaces its contacts; items.delete unlinks them all.
    api.ok("crm.company.contact.items.set", {"id": company, "items": [{"CONTACT_ID": contact, "IS_PRIMARY": "Y"}]})
    assert api.ok("crm.company.contact.items.get", {"id": company}) == [row(contact, 10, "Y")]
    assert api.ok("crm.contact.company.items.get", {"id": second}) == []
    assert api.ok("crm.contact.get", {"id": second})["COMPANY_ID"] is None
    assert api.ok("crm.contact.get", {"id": contact})["COMPANY_ID"] == str(company)
    api.ok("crm.company.contact.items.delete", {"id": company})
    assert api.ok("crm.contact.get", {"id": contact})["COMPANY_ID"] == "12"


def test_the_state_api_for_other_families(api):
    deal = api.ok("crm.deal.add", {"fields": {}})
    state = api.emu.state(links)
    state.set_contact_ids(2, deal, [3, "4", 3])
    assert state.contact_ids("deal", deal) == [3, 4]
    assert api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] == "3"
    state.set_contact_ids("deal", deal, [])
    assert state.contact_ids(2, deal) == [] and api.ok("crm.deal.get", {"id": deal})["CONTACT_ID"] is None
