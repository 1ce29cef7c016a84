"""User fields and labels through app.test_client() with the portal mocked by ``responses``: the exact
methods and decoded bodies the portal receives, how its answers map to ours, and the labels cache."""

from __future__ import annotations

import threading

import pytest
from flask_bitrix24.services.field_labels import FieldCatalog, LabelCache

from tests.conftest import PORTAL_HOST, portal_url, sent_params
from tests.test_webhook import event_form

UF = "/api/bitrix/clients/1/deals/userfields"

# crm.deal.fields as a portal answers it (trimmed): a status field, a plain one, an enumeration UF and a
# crm_status UF (https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-fields.html)
DEAL_FIELDS = {
    "TITLE": {"type": "string", "isRequired": False, "isDynamic": False, "title": "Name"},
    "STAGE_ID": {"type": "crm_status", "isDynamic": False, "statusType": "DEAL_STAGE", "title": "Stage"},
    "UF_CRM_TIER": {"type": "enumeration", "isDynamic": True, "isMultiple": False, "title": "UF_CRM_TIER",
                    "listLabel": "Tier (list)", "formLabel": "Customer tier", "filterLabel": "Tier",
                    "items": [{"ID": "45", "VALUE": "Gold"}, {"ID": "46", "VALUE": "Silver"}]},
    "UF_CRM_TAGS": {"type": "enumeration", "isDynamic": True, "isMultiple": True, "title": "UF_CRM_TAGS",
                    "listLabel": "", "formLabel": "", "filterLabel": "",
                    "items": [{"ID": "50", "VALUE": "A"}, {"ID": "51", "VALUE": "B"}]},
    "UF_CRM_SRC": {"type": "crm_status", "isDynamic": True, "title": "UF_CRM_SRC", "listLabel": "Where from",
                   "formLabel": "Where from", "filterLabel": "Where from", "settings": {"ENTITY_TYPE": "SOURCE"}},
}
TYPES = [{"ID": "STATUS", "NAME": "Lead stages"}, {"ID": "SOURCE", "NAME": "Sources"},
         {"ID": "DEAL_STAGE_1", "NAME": "Partners deal stages", "PARENT_ID": "DEAL_STAGE", "PREFIX": "C1"},
         {"ID": "DEAL_STAGE", "NAME": "Deal stages"}]
ITEMS = {
    "DEAL_STAGE": [{"NAME": "New", "SORT": 10, "STATUS_ID": "NEW"}, {"NAME": "Deal won", "SORT": 60, "STATUS_ID": "WON"}],
    "DEAL_STAGE_1": [{"NAME": "Partner won", "SORT": 60, "STATUS_ID": "C1:WON"}],
    "SOURCE": [{"NAME": "Website", "SORT": 10, "STATUS_ID": "WEB"}],
}


def batch_answer(results: dict) -> dict:
    return {"result": {"result": results, "result_error": [], "result_total": [], "result_next": [],
                       "result_time": []}, "time": {}}


def mock_labels(portal, fields=None):
    portal.post(portal_url("batch"), json=batch_answer({"fields": fields or DEAL_FIELDS, "types": TYPES}))
    portal.post(portal_url("batch"), json=batch_answer(ITEMS))


def batches(portal) -> list[dict]:
    return [sent_params(c)["cmd"] for c in portal.calls if c.request.url == portal_url("batch")]


# ----------------------------------------------------------------------------------------------
# Creating


def test_create_lists_first_then_adds_the_normalised_definition(configured, portal):
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [], "total": 0})
    portal.post(portal_url("crm.deal.userfield.add"), json={"result": 6997})
    body = {"fields": {"FIELD_NAME": "nps", "USER_TYPE_ID": "enumeration", "MULTIPLE": False, "MANDATORY": "Y",
                       "EDIT_FORM_LABEL": {"en": "NPS", "de": "NPS-Wert"}, "LABEL": "NPS", "SORT": 10,
                       "LIST": [{"VALUE": "Low", "SORT": 10, "DEF": True}, {"VALUE": "High", "XML_ID": "H"}]}}
    r = configured.post(UF, json=body)
    assert r.status_code == 201 and r.get_json() == {"result": 6997}
    assert r.headers["Location"].endswith("/api/bitrix/clients/1/deals/userfields/6997")
    assert [c.request.url for c in portal.calls] == [portal_url("crm.deal.userfield.list"),
                                                     portal_url("crm.deal.userfield.add")]
    assert sent_params(portal.calls[0]) == {"filter": {"FIELD_NAME": "UF_CRM_NPS"}}
    assert sent_params(portal.calls[1]) == {"fields": {
        "FIELD_NAME": "UF_CRM_NPS", "USER_TYPE_ID": "enumeration", "MULTIPLE": "N", "MANDATORY": "Y",
        "EDIT_FORM_LABEL": {"en": "NPS", "de": "NPS-Wert"}, "LABEL": "NPS", "SORT": "10",
        "LIST": [{"VALUE": "Low", "SORT": "10", "DEF": "Y"}, {"VALUE": "High", "XML_ID": "H"}]}}


@pytest.mark.parametrize("entity,prefix", [("contacts", "crm.contact"), ("leads", "crm.lead"),
                                           ("companies", "crm.company")])
def test_each_entity_uses_its_own_methods(configured, portal, entity, prefix):
    portal.post(portal_url(f"{prefix}.userfield.list"), json={"result": [], "total": 0})
    portal.post(portal_url(f"{prefix}.userfield.add"), json={"result": "12"})
    r = configured.post(f"/api/bitrix/clients/1/{entity}/userfields",
                        json={"fields": {"FIELD_NAME": "UF_CRM_X", "USER_TYPE_ID": "string"}})
    assert r.status_code == 201 and r.get_json() == {"result": 12}
    assert sent_params(portal.calls[1]) == {"fields": {"FIELD_NAME": "UF_CRM_X", "USER_TYPE_ID": "string"}}


def test_a_name_that_exists_is_409_and_add_is_never_sent(configured, portal):
    portal.post(portal_url("crm.deal.userfield.list"),
                json={"result": [{"ID": "77", "FIELD_NAME": "UF_CRM_NPS", "USER_TYPE_ID": "integer"}], "total": 1})
    r = configured.post(UF, json={"fields": {"FIELD_NAME": "UF_NPS", "USER_TYPE_ID": "integer"}})
    assert r.status_code == 409
    body = r.get_json()
    assert body["error"] == "USERFIELD_EXISTS" and body["id"] == 77 and body["field_name"] == "UF_CRM_NPS"
    assert body["field"] == "fields.FIELD_NAME" and "77" in body["error_description"]
    assert [c.request.url for c in portal.calls] == [portal_url("crm.deal.userfield.list")]


def test_the_portals_own_duplicate_refusal_is_409_too(configured, portal):
    """Two creates raced: the list was empty, then the portal refuses the add with ERROR_CORE."""
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [], "total": 0})
    portal.post(portal_url("crm.deal.userfield.add"), status=400, json={
        "error": "ERROR_CORE", "error_description": "The field UF_CRM_NPS for entity CRM_DEAL already exists."})
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [{"ID": "78", "FIELD_NAME": "UF_CRM_NPS"}]})
    r = configured.post(UF, json={"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "integer"}})
    assert r.status_code == 409 and r.get_json()["id"] == 78
    assert sum(c.request.url == portal_url("crm.deal.userfield.add") for c in portal.calls) == 1


def test_other_core_errors_pass_through(configured, portal):
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [], "total": 0})
    portal.post(portal_url("crm.deal.userfield.add"), status=400, json={
        "error": "ERROR_CORE", "error_description": "List item with value XML_ID=H already exists."})
    r = configured.post(UF, json={"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "enumeration",
                                             "LIST": [{"VALUE": "a", "XML_ID": "H"}, {"VALUE": "b", "XML_ID": "H"}]}})
    assert r.status_code == 400
    assert r.get_json()["error"] == "ERROR_CORE" and "XML_ID=H" in r.get_json()["error_description"]


def test_an_apps_own_type_is_looked_up_on_the_portal(configured, portal):
    portal.post(portal_url("crm.userfield.types"), json={"result": [{"ID": "string", "title": "String"},
                                                                     {"ID": "rest_1_rating", "title": "Rating"}]})
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [], "total": 0})
    portal.post(portal_url("crm.deal.userfield.add"), json={"result": 5})
    assert configured.post(UF, json={"fields": {"FIELD_NAME": "R", "USER_TYPE_ID": "rest_1_rating"}}).status_code == 201
    r = configured.post(UF, json={"fields": {"FIELD_NAME": "R", "USER_TYPE_ID": "rest_1_nope"}})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_USER_TYPE"
    assert "GET .../userfield-types" in r.get_json()["error_description"]


@pytest.mark.parametrize("body,code", [
    ({"fields": {}}, "INVALID_FIELDS"),
    ({"fields": "NPS"}, "INVALID_FIELDS"),
    ({"FIELD_NAME": "NPS", "USER_TYPE_ID": "string"}, "INVALID_BODY"),  # not wrapped in "fields"
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "SETTINGS": "x"}}, "INVALID_SETTINGS"),
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "SORT": "first"}}, "INVALID_FIELDS"),
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "SORT": "²"}}, "INVALID_FIELDS"),  # not int()-able
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "SORT": "٣"}}, "INVALID_FIELDS"),  # not read as 3
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "enumeration", "LIST": [{"VALUE": "a", "SORT": "①"}]}},
     "INVALID_LIST"),
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "LIST": [{"VALUE": "a"}]}}, "INVALID_LIST"),
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "enumeration", "LIST": [{"ID": 4, "VALUE": "a"}]}},
     "INVALID_LIST"),
    ({"fields": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "string", "LABEL": {"english": "x"}}}, "INVALID_LABEL"),
    ({"fields": {"FIELD_NAME": "UF_CRM_", "USER_TYPE_ID": "string"}}, "INVALID_FIELD_NAME"),
    ({"fields": {"FIELD_NAME": "NPS\n", "USER_TYPE_ID": "string"}}, None),  # stripped, like the portal does
])
def test_bad_bodies_are_400_without_calling_the_portal(configured, portal, body, code):
    if code is None:
        portal.post(portal_url("crm.deal.userfield.list"), json={"result": []})
        portal.post(portal_url("crm.deal.userfield.add"), json={"result": 1})
        assert configured.post(UF, json=body).status_code == 201
        assert sent_params(portal.calls[1])["fields"]["FIELD_NAME"] == "UF_CRM_NPS"
        return
    r = configured.post(UF, json=body)
    assert r.status_code == 400 and r.get_json()["error"] == code, r.get_json()
    assert len(portal.calls) == 0


# ----------------------------------------------------------------------------------------------
# One field


def test_get_update_delete_send_the_id(configured, portal):
    portal.post(portal_url("crm.deal.userfield.get"), json={"result": {"ID": "5", "FIELD_NAME": "UF_CRM_X"}})
    portal.post(portal_url("crm.deal.userfield.update"), json={"result": True})
    portal.post(portal_url("crm.deal.userfield.delete"), json={"result": True})
    assert configured.get(f"{UF}/5").get_json() == {"result": {"ID": "5", "FIELD_NAME": "UF_CRM_X"}}
    r = configured.patch(f"{UF}/5", json={"fields": {"EDIT_FORM_LABEL": {"en": "X"}, "MANDATORY": False,
                                                     "LIST": [{"ID": "7", "DEL": "Y"}, {"VALUE": "New"}],
                                                     "SETTINGS": {"DEFAULT_VALUE": 1}}})
    assert r.status_code == 200 and r.get_json() == {"result": True}
    assert configured.delete(f"{UF}/5").get_json() == {"result": True}
    assert sent_params(portal.calls[0]) == {"id": "5"}
    assert sent_params(portal.calls[1]) == {"id": "5", "fields": {
        "EDIT_FORM_LABEL": {"en": "X"}, "MANDATORY": "N", "LIST": [{"ID": "7", "DEL": "Y"}, {"VALUE": "New"}],
        "SETTINGS": {"DEFAULT_VALUE": "1"}}}
    assert sent_params(portal.calls[2]) == {"id": "5"}


def test_an_unknown_id_is_404(configured, portal):
    portal.post(portal_url("crm.deal.userfield.get"), status=400,
                json={"error": "ERROR_NOT_FOUND", "error_description": "The entity with ID '5' is not found."})
    r = configured.get(f"{UF}/5")
    assert r.status_code == 404 and r.get_json()["error"] == "USERFIELD_NOT_FOUND"


def test_access_denied_is_404_only_when_the_field_is_not_this_entitys(configured, portal):
    """The portal says "Access denied." both for another entity's field and for missing rights."""
    denied = {"error": "", "error_description": "Access denied."}
    portal.post(portal_url("crm.deal.userfield.delete"), status=400, json=denied)
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [], "total": 0})
    r = configured.delete(f"{UF}/5")
    assert r.status_code == 404 and r.get_json()["error"] == "USERFIELD_NOT_FOUND"
    assert sent_params(portal.calls[1]) == {"filter": {"ID": "5"}}
    portal.replace("POST", portal_url("crm.deal.userfield.list"), json={"result": [{"ID": "5"}], "total": 1})
    r = configured.delete(f"{UF}/5")
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_AUTH_FAILED"


def test_show_filter_takes_the_filters_kind_and_other_flags_do_not(configured, portal):
    portal.post(portal_url("crm.deal.userfield.update"), json={"result": True})
    assert configured.patch(f"{UF}/5", json={"fields": {"SHOW_FILTER": "S"}}).status_code == 200
    assert sent_params(portal.calls[0]) == {"id": "5", "fields": {"SHOW_FILTER": "S"}}
    r = configured.patch(f"{UF}/5", json={"fields": {"MANDATORY": "S"}})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_FLAG" and len(portal.calls) == 1


@pytest.mark.parametrize("fields", [{"SORT": "²"}, {"LIST": [{"ID": "²", "VALUE": "a"}]},
                                    {"LIST": [{"ID": "4", "VALUE": "a", "SORT": "①"}]}])
def test_an_update_with_a_digit_int_cannot_read_is_a_400(configured, portal, fields):
    r = configured.patch(f"{UF}/5", json={"fields": fields})
    assert r.status_code == 400 and r.get_json()["error"] in ("INVALID_FIELDS", "INVALID_LIST"), r.get_json()
    assert len(portal.calls) == 0


def test_custom_types_the_portal_lists_with_an_odd_id_are_skipped_not_a_500(configured, portal):
    portal.post(portal_url("crm.userfield.types"), json={"result": [{"ID": ["x"]}, {"ID": {"a": 1}}, "junk"]})
    r = configured.post(UF, json={"fields": {"FIELD_NAME": "R", "USER_TYPE_ID": "rest_1_rating"}})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_USER_TYPE", r.get_json()


def test_immutable_keys_are_refused_on_update(configured, portal):
    r = configured.patch(f"{UF}/5", json={"fields": {"USER_TYPE_ID": "string", "SORT": 1}})
    assert r.status_code == 400 and r.get_json()["error"] == "USERFIELD_IMMUTABLE"
    assert r.get_json()["field"] == "fields.USER_TYPE_ID" and len(portal.calls) == 0


def test_list_passes_lang_and_name(configured, portal):
    portal.post(portal_url("crm.deal.userfield.list"), json={"result": [{"ID": "5"}], "total": 1})
    r = configured.get(f"{UF}?lang=de&name=nps")
    assert r.get_json() == {"result": [{"ID": "5"}], "total": 1}
    assert sent_params(portal.calls[0]) == {"filter": {"LANG": "de", "FIELD_NAME": "UF_CRM_NPS"}}
    assert configured.get(f"{UF}?lang=german").get_json()["error"] == "INVALID_LANG"


def test_userfield_types_and_unsupported_entities(configured, portal):
    portal.post(portal_url("crm.userfield.types"), json={"result": [{"ID": "string", "title": "String"}]})
    assert configured.get("/api/bitrix/clients/1/userfield-types").get_json() == {
        "result": [{"ID": "string", "title": "String"}]}
    r = configured.get("/api/bitrix/clients/1/tasks/userfields")
    assert r.status_code == 404 and r.get_json()["error"] == "UNKNOWN_ENTITY"


# ----------------------------------------------------------------------------------------------
# Labels


def test_fields_gain_labels_and_values(configured, portal):
    mock_labels(portal)
    result = configured.get("/api/bitrix/clients/1/deals/fields").get_json()["result"]
    assert batches(portal) == [
        {"fields": "crm.deal.fields", "types": "crm.status.entity.types"},
        {"DEAL_STAGE": "crm.status.entity.items?entityId=DEAL_STAGE",
         "DEAL_STAGE_1": "crm.status.entity.items?entityId=DEAL_STAGE_1",
         "SOURCE": "crm.status.entity.items?entityId=SOURCE"},
    ]
    assert result["TITLE"] == {**DEAL_FIELDS["TITLE"], "label": "Name"}
    assert result["STAGE_ID"]["label"] == "Stage" and result["STAGE_ID"]["values"] == [
        {"id": "NEW", "label": "New", "status_type": "DEAL_STAGE"},
        {"id": "WON", "label": "Deal won", "status_type": "DEAL_STAGE"},
        {"id": "C1:WON", "label": "Partner won", "status_type": "DEAL_STAGE_1"}]
    assert result["UF_CRM_TIER"]["label"] == "Customer tier"
    assert result["UF_CRM_TIER"]["values"] == [{"id": "45", "label": "Gold"}, {"id": "46", "label": "Silver"}]
    assert result["UF_CRM_TAGS"]["label"] == "UF_CRM_TAGS"  # no labels given: the code
    assert result["UF_CRM_SRC"]["values"] == [{"id": "WEB", "label": "Website", "status_type": "SOURCE"}]


def test_get_and_list_with_labels(configured, portal):
    mock_labels(portal)
    record = {"ID": "9", "TITLE": "T", "STAGE_ID": "C1:WON", "UF_CRM_TIER": 45, "UF_CRM_TAGS": ["50", "99"],
              "UF_CRM_SRC": None}
    portal.post(portal_url("crm.deal.get"), json={"result": record})
    portal.post(portal_url("crm.deal.list"), json={"result": [record, {"ID": "10", "STAGE_ID": "LOST"}], "total": 2})
    got = configured.get("/api/bitrix/clients/1/deals/9?labels=1").get_json()["result"]
    assert got == {**record, "labels": {"STAGE_ID": "Partner won", "UF_CRM_TIER": "Gold", "UF_CRM_TAGS": ["A", None]}}
    page = configured.get("/api/bitrix/clients/1/deals?labels=true&select=ID").get_json()
    assert page["total"] == 2 and page["result"][1] == {"ID": "10", "STAGE_ID": "LOST", "labels": {"STAGE_ID": None}}
    assert sent_params([c for c in portal.calls if c.request.url == portal_url("crm.deal.list")][0]) == {
        "select": ["ID"]}  # labels=1 is ours, never sent
    assert len(batches(portal)) == 2  # one fill for both
    plain = configured.get("/api/bitrix/clients/1/deals/9?labels=0").get_json()["result"]
    assert plain == record


def test_the_cache_is_dropped_by_changes_and_by_userfield_events(configured, portal):
    for _ in range(3):
        mock_labels(portal)
    assert configured.get("/api/bitrix/clients/1/deals/fields").status_code == 200
    assert configured.get("/api/bitrix/clients/1/deals/fields").status_code == 200
    assert len(batches(portal)) == 2
    portal.post(portal_url("crm.deal.userfield.update"), json={"result": True})
    configured.patch(f"{UF}/5", json={"fields": {"LABEL": "x"}})
    configured.get("/api/bitrix/clients/1/deals/fields")
    assert len(batches(portal)) == 4
    # An event about something else keeps the cache; a user-field event from this portal drops it.
    assert configured.post("/api/bitrix/webhook", data=event_form(domain=PORTAL_HOST)).status_code == 200
    configured.get("/api/bitrix/clients/1/deals/fields")
    assert len(batches(portal)) == 4
    form = event_form(event="ONCRMDEALUSERFIELDUPDATE", domain=PORTAL_HOST, entity_id="5")
    assert configured.post("/api/bitrix/webhook", data=form).status_code == 200
    configured.get("/api/bitrix/clients/1/deals/fields")
    assert len(batches(portal)) == 6


def test_a_failed_fields_call_is_the_portals_error_and_nothing_is_cached(configured, portal):
    portal.post(portal_url("batch"), json={"result": {"result": {"types": TYPES}, "result_error": {
        "fields": {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}}}})
    r = configured.get("/api/bitrix/clients/1/deals/fields")
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_AUTH_FAILED"
    mock_labels(portal)
    assert configured.get("/api/bitrix/clients/1/deals/fields").status_code == 200


# ----------------------------------------------------------------------------------------------
# The cache itself


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _catalog(tag):
    return FieldCatalog({"TITLE": {"title": tag}})


def test_cache_ttl_and_lru_bound():
    clock = Clock()
    cache = LabelCache(ttl=10, size=2, clock=clock)
    loads = []

    def loader(tag):
        return lambda: loads.append(tag) or _catalog(tag)

    assert cache.get("a.bitrix24.com", "deals", loader("a1")).fields["TITLE"]["title"] == "a1"
    assert cache.get("a.bitrix24.com", "deals", loader("a2")).fields["TITLE"]["title"] == "a1"  # cached
    cache.get("b.bitrix24.com", "deals", loader("b1"))
    cache.get("a.bitrix24.com", "deals", loader("-"))  # a is now the most recent
    cache.get("c.bitrix24.com", "deals", loader("c1"))  # evicts b
    assert len(cache) == 2
    cache.get("b.bitrix24.com", "deals", loader("b2"))
    assert loads == ["a1", "b1", "c1", "b2"]
    clock.now = 11
    assert cache.get("b.bitrix24.com", "deals", loader("b3")).fields["TITLE"]["title"] == "b3"  # expired
    assert cache.invalidate("b.bitrix24.com") == 1 and len(cache) == 1  # c is left


def test_a_fill_that_started_before_an_invalidation_is_not_kept():
    cache = LabelCache(ttl=60, size=10)

    def racing_loader():
        cache.invalidate("a.bitrix24.com")  # a user field changed while the portal was being read
        return _catalog("old")

    assert cache.get("a.bitrix24.com", "deals", racing_loader).fields["TITLE"]["title"] == "old"
    assert cache.get("a.bitrix24.com", "deals", lambda: _catalog("new")).fields["TITLE"]["title"] == "new"


def test_the_cache_is_safe_across_threads():
    cache = LabelCache(ttl=60, size=8)
    errors = []

    def work(n):
        try:
            for i in range(300):
                host = f"p{(n + i) % 12}.bitrix24.com"
                got = cache.get(host, "deals", lambda h=host: _catalog(h))
                assert got.fields["TITLE"]["title"] == host
                if i % 17 == 0:
                    cache.invalidate(host)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) <= 8


class FakeRedis:
    def __init__(self):
        self.data = {}

    def get(self, key):
        return self.data.get(key)

    def incr(self, key):
        self.data[key] = str(int(self.data.get(key) or 0) + 1).encode()
        return int(self.data[key])


def test_with_redis_an_invalidation_in_one_process_reaches_the_others():
    shared = FakeRedis()
    one, two = LabelCache(ttl=60, size=10, redis=shared), LabelCache(ttl=60, size=10, redis=shared)
    two.get("a.bitrix24.com", "deals", lambda: _catalog("before"))
    assert two.get("a.bitrix24.com", "deals", lambda: _catalog("x")).fields["TITLE"]["title"] == "before"
    one.invalidate("a.bitrix24.com")  # another process changed a field
    assert shared.data == {"bitrix24:labels:gen:a.bitrix24.com": b"1"}
    assert two.get("a.bitrix24.com", "deals", lambda: _catalog("after")).fields["TITLE"]["title"] == "after"
    assert two.get("a.bitrix24.com", "deals", lambda: _catalog("x")).fields["TITLE"]["title"] == "after"


def test_while_redis_does_not_answer_nothing_is_cached_and_everything_works():
    class Down:
        def get(self, key):
            raise ConnectionError("redis down")

        def incr(self, key):
            raise ConnectionError("redis down")

    cache = LabelCache(ttl=60, size=10, redis=Down())
    assert cache.get("a.bitrix24.com", "deals", lambda: _catalog("1")).fields["TITLE"]["title"] == "1"
    assert cache.get("a.bitrix24.com", "deals", lambda: _catalog("2")).fields["TITLE"]["title"] == "2"
    cache.invalidate("a.bitrix24.com")
