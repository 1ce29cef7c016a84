"""Portal users: user.get, user.search, user.fields and user.current reading the same records.

Sources: https://apidocs.bitrix24.com/api-reference/user/user-get.html,
https://apidocs.bitrix24.com/api-reference/user/user-fields.html,
https://apidocs.bitrix24.com/api-reference/user/user-current.html,
https://apidocs.bitrix24.com/api-reference/user/user-scope.html (fields under user_basic / user_brief).
The demo staff (the webhook's user plus four others) is the emulator's choice, see bitrix24_emulator/users.py.
"""

from __future__ import annotations

import json

from .conftest import make_api


def test_user_get_lists_the_staff_in_id_order_with_total_and_real_types(api):
    status, body = api("user.get")
    assert status == 200 and body["total"] == 5 and "next" not in body
    users = body["result"]
    assert [u["ID"] for u in users] == ["1", "2", "3", "4", "5"]
    admin = users[0]
    assert admin["NAME"] == "Demo" and admin["ACTIVE"] is True and admin["UF_DEPARTMENT"] == [1]
    assert admin["USER_TYPE"] == "employee" and admin["IS_ONLINE"] == "Y" and admin["TIMESTAMP_X"] == []
    assert admin["DATE_REGISTER"] == "2024-01-01T03:00:00+03:00" and isinstance(admin["EMAIL"], str)
    assert [u["ACTIVE"] for u in users].count(False) == 1
    # The docs show TIMESTAMP_X as {} (a serialised date object); this emulator's PHP-style JSON writes
    # that empty array as [].


def test_user_get_filters_prefixes_active_name_search_and_user_type(api):
    def ids(payload):
        return [u["ID"] for u in api.ok("user.get", payload)]

    assert ids({"FILTER": {"ACTIVE": True}}) == ["1", "2", "3", "5"]
    assert ids({"FILTER": {"USER_TYPE": "extranet"}}) == ["5"]
    assert ids({"FILTER": {"NAME_SEARCH": "ann"}}) == ["2"]
    assert ids({"FILTER": {"NAME_SEARCH": "sales man"}}) == ["2", "4"]
    assert ids({"FILTER": {">ID": 3}}) == ["4", "5"]
    assert ids({"FILTER": {"@ID": [1, 3]}}) == ["1", "3"]
    assert ids({"FILTER": {"!ID": 1, "UF_DEPARTMENT": 2}}) == ["3", "4"]
    assert ids({"FILTER": {"%EMAIL": "PARTNER"}}) == ["5"]
    assert ids({"FILTER": {"=%LAST_NAME": "K%"}}) == ["3"]
    assert ids({"filter": {"NAME": "boris"}}) == ["3"]
    assert ids({"FILTER": {"NO_SUCH_FIELD": "x"}}) == ["1", "2", "3", "4", "5"]


def test_user_get_sort_select_and_paging(api):
    assert [u["NAME"] for u in api.ok("user.get", {"sort": "NAME", "order": "DESC"})] == \
        ["Eva", "Demo", "Carl", "Boris", "Anna"]
    assert [u["ID"] for u in api.ok("user.get", {"order": "DESC"})] == ["5", "4", "3", "2", "1"]
    rows = api.ok("user.get", {"select": ["NAME", "NO_SUCH"], "FILTER": {"ID": 2}})
    assert rows == [{"NAME": "Anna"}]
    uf_only = api.ok("user.get", {"select": ["UF_*"], "FILTER": {"ID": 1}})[0]
    assert uf_only and all(k.startswith("UF_") for k in uf_only)
    status, body = api("user.get", {"start": 50})
    assert body["result"] == [] and body["total"] == 5
    status, body = api("user.get", {"start": -1})
    assert len(body["result"]) == 5 and "total" not in body


def test_limited_scopes_hide_fields_and_user_current_is_the_same_record():
    full = make_api()
    me = full.ok("user.current")
    assert me == full.ok("user.get", {"FILTER": {"ID": 1}})[0]
    brief = make_api(scopes="crm,user_brief")
    row = brief.ok("user.get", {"FILTER": {"ID": 2}})[0]
    assert "EMAIL" not in row and "USER_TYPE" not in row and row["NAME"] == "Anna" and row["UF_DEPARTMENT"] == [1]
    assert "EMAIL" not in brief.ok("user.current")
    basic = make_api(scopes="user_basic")
    assert basic.ok("user.get", {"FILTER": {"ID": 2}})[0]["EMAIL"] == "anna@example.com"
    assert make_api(scopes="crm")("user.get")[1]["error"] == "insufficient_scope"


def test_staff_ids_skip_the_webhooks_own_id():
    api = make_api(user_id=3)

    def call(method, payload=None):
        response = api.client.post(f"/rest/3/demo/{method}", json=payload or {})
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data(as_text=True))["result"]

    assert [u["ID"] for u in call("user.get")] == ["1", "2", "3", "4", "5"]
    assert call("user.current")["NAME"] == "Demo" and call("user.current")["ID"] == "3"
    assert call("user.get", {"FILTER": {"ID": 1}})[0]["NAME"] == "Anna"


def test_user_fields_and_search(api):
    labels = api.ok("user.fields")
    assert labels["ID"] == "ID" and labels["UF_DEPARTMENT"] == "Departments" and labels["EMAIL"] == "E-Mail"
    assert all(isinstance(v, str) for v in labels.values())
    assert [u["ID"] for u in api.ok("user.search", {"FIND": "kuz"})] == ["3"]
