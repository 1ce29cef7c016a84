"""List methods: paging, filter operators, order and select.

Sources: "the list page" below is https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html
(the deal, lead and company list pages say the same); paging in general:
https://apidocs.bitrix24.com/settings/how-to-call-rest-api/list-methods-pecularities.html; start=-1:
https://apidocs.bitrix24.com/settings/performance/huge-data.html. "The portal's source" is the portal's PHP source:
modules/rest/classes/general/rest.php (IRestService paging) and modules/crm/classes/general/restservice.php
(internalizeFilterFields).
"""

import pytest

from .conftest import make_api


@pytest.fixture
def people():
    api = make_api(limits=False)
    rows = [("Ann", "Smith", "10"), ("bob", "Jones", "20"), ("Cid", None, "30"), ("Dora", "Smith", None)]
    for name, last, company in rows:
        fields = {"NAME": name, "COMPANY_ID": company}
        if last:
            fields["LAST_NAME"] = last
        api.ok("crm.contact.add", {"fields": fields})
    api.ok("crm.contact.update", {"id": 1, "fields": {"PHONE": [{"VALUE": "+1 111"}], "EMAIL": [{"VALUE": "a@x.io"}]}})
    return api


def ids(api, payload):
    return [int(r["ID"]) for r in api.ok("crm.contact.list", payload)]


def test_paging():
    """50 per page, next only while rows remain, total always
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/list-methods-pecularities.html)."""
    api = make_api(limits=False)
    for i in range(120):
        api.ok("crm.contact.add", {"fields": {"NAME": f"n{i}"}})
    _, page1 = api("crm.contact.list", {"select": ["ID"]})
    _, page3 = api("crm.contact.list", {"select": ["ID"], "start": 100})
    assert len(page1["result"]) == 50 and page1["next"] == 50 and page1["total"] == 120
    assert len(page3["result"]) == 20 and "next" not in page3 and page3["total"] == 120


def test_start_floored_to_multiple_of_50():
    """start is rounded down to a multiple of 50 (the portal's source, rest.php IRestService::getNavData)."""
    api = make_api(limits=False)
    for i in range(60):
        api.ok("crm.contact.add", {"fields": {"NAME": f"n{i}"}})
    _, body = api("crm.contact.list", {"select": ["ID"], "start": 73})
    assert body["result"][0]["ID"] == "51" and len(body["result"]) == 10


def test_start_minus_one_skips_count():
    """start=-1 returns the first 50 without total or next
    (https://apidocs.bitrix24.com/settings/performance/huge-data.html)."""
    api = make_api(limits=False)
    for i in range(60):
        api.ok("crm.contact.add", {"fields": {"NAME": f"n{i}"}})
    _, body = api("crm.contact.list", {"start": -1, "order": {"ID": "ASC"}, "filter": {">ID": 5}})
    assert len(body["result"]) == 50 and body["result"][0]["ID"] == "6"
    assert "total" not in body and "next" not in body


def test_start_in_query_string(people):
    """paging parameter may arrive in the query string (the portal's source merges query and body,
    modules/rest/classes/general/rest_util.php)."""
    response = people.client.get("/rest/1/demo/crm.contact.list?start=50")
    assert response.json["result"] == [] and response.json["total"] == 4


@pytest.mark.parametrize("flt,expected", [
    ({"NAME": "Ann"}, [1]),
    ({"=NAME": "ann"}, [1]),                # case-insensitive collation
    ({"!NAME": "Ann"}, [2, 3, 4]),
    ({"!=NAME": "Ann"}, [2, 3, 4]),
    ({">COMPANY_ID": 10}, [2, 3]),
    ({">=COMPANY_ID": "20"}, [2, 3]),
    ({"<COMPANY_ID": 30}, [1, 2]),          # numeric, not string, comparison; NULL never matches
    ({"<=ID": 2}, [1, 2]),
    ({"@ID": [1, 3]}, [1, 3]),
    ({"!@ID": [1, 3]}, [2, 4]),
    ({"ID": [2, 4]}, [2, 4]),               # an array with no operator is IN
    ({"%NAME": "o"}, [2, 4]),               # substring anywhere
    ({"%LAST_NAME": "mit"}, [1, 4]),
    ({"=%NAME": "_o%"}, [2, 4]),             # own wildcards: bob, Dora
    ({"%=NAME": "%a"}, [4]),
    ({"LAST_NAME": ""}, [3]),               # empty value matches unset
    ({"!LAST_NAME": ""}, [1, 2, 4]),
    ({"NAME": "Ann", "LAST_NAME": "Smith"}, [1]),
    ({"NOPE": "x"}, [1, 2, 3, 4]),          # unknown keys silently dropped
    ({"name": "Ann"}, [1, 2, 3, 4]),        # keys are UPPER_CASE field names
    ({"PHONE": "+1 111"}, [1]),             # multi-field: exact match on any value
    ({"PHONE": "111"}, []),
    ({"EMAIL": "A@X.IO"}, [1]),
    ({"%COMPANY_ID": "1"}, []),             # LIKE on a crm_company field quietly becomes '='
    ({"%COMPANY_ID": "10"}, [1]),
])
def test_filter_operators(people, flt, expected):
    """filter operator prefixes and multi-fields exact (the list page), unknown keys dropped (the portal's
    source, internalizeFilterFields)."""
    assert ids(people, {"filter": flt}) == expected


def test_filter_dates():
    """date filter values go through strtotime, so ISO-8601 works (the portal's source,
    internalizeFilterFields)."""
    api = make_api(limits=False)
    api.ok("crm.contact.add", {"fields": {"NAME": "old", "BIRTHDATE": "1980-01-01"}})
    api.ok("crm.contact.add", {"fields": {"NAME": "young", "BIRTHDATE": "2001-06-15"}})
    assert ids(api, {"filter": {">BIRTHDATE": "1990-01-01"}}) == [2]
    assert ids(api, {"filter": {"<=BIRTHDATE": "1980-01-01T00:00:00+03:00"}}) == [1]
    assert ids(api, {"filter": {">=DATE_CREATE": "2026-11-27T00:00:00+03:00"}}) == [1, 2]
    assert ids(api, {"filter": {">DATE_CREATE": "2026-11-28"}}) == []


def test_filter_deal_money_numeric():
    """numeric comparison for numeric fields (OPPORTUNITY is a string on output)
    (https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-list.html)."""
    api = make_api(limits=False)
    for amount in ("900", "10000", "5000.5"):
        api.ok("crm.deal.add", {"fields": {"OPPORTUNITY": amount}})
    assert [r["ID"] for r in api.ok("crm.deal.list", {"filter": {">OPPORTUNITY": 1000}})] == ["2", "3"]


def test_order(people):
    """order by any field ASC/DESC (the list page) with ID as the tie-break; NULLs first ascending."""
    assert ids(people, {"order": {"NAME": "DESC"}}) == [4, 3, 2, 1]
    assert ids(people, {"order": {"LAST_NAME": "ASC"}}) == [3, 2, 1, 4]
    assert ids(people, {"order": {"LAST_NAME": "DESC", "ID": "DESC"}}) == [4, 1, 2, 3]
    assert ids(people, {"order": {"COMPANY_ID": "desc"}}) == [3, 2, 1, 4]
    assert ids(people, {"order": {"NAME": "SIDEWAYS"}}) == [1, 2, 3, 4]  # invalid direction ignored


def test_select_default_is_star_plus_uf():
    """without select the result is * + UF_*; multi-fields are not included (the list page)."""
    api = make_api(limits=False, user_fields={"contact": ["UF_CRM_X"]})
    api.ok("crm.contact.add", {"fields": {"NAME": "A", "PHONE": [{"VALUE": "1"}], "UF_CRM_X": "u"}})
    row = api.ok("crm.contact.list")[0]
    assert "NAME" in row and row["UF_CRM_X"] == "u" and "PHONE" not in row
    star = api.ok("crm.contact.list", {"select": ["*"]})[0]
    assert "NAME" in star and "UF_CRM_X" not in star and "PHONE" not in star
    uf = api.ok("crm.contact.list", {"select": ["UF_*"]})[0]
    assert set(uf) == {"ID", "UF_CRM_X"}


def test_select_named_fields_and_multifields(people):
    """named fields (and named multi-fields) appear (the list page); ID is always present."""
    rows = people.ok("crm.contact.list", {"select": ["NAME", "PHONE"], "filter": {"@ID": [1, 2]}})
    assert rows[0] == {"ID": "1", "NAME": "Ann", "PHONE": [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": "+1 111",
                                                            "TYPE_ID": "PHONE"}]}
    assert rows[1] == {"ID": "2", "NAME": "bob"}


def test_form_encoded_list(people):
    """a GET list with PHP keys (filter operators URL-encoded, select[])
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html)."""
    response = people.client.get("/rest/1/demo/crm.contact.list.json?filter[%3E%3DID]=3&select[]=ID&select[]=NAME"
                                 "&order[ID]=DESC")
    assert response.json["result"] == [{"ID": "4", "NAME": "Dora"}, {"ID": "3", "NAME": "Cid"}]
