"""Portal information methods and webhook scopes.

Sources: https://apidocs.bitrix24.com/api-reference/common/system/scope.html, .../app-info.html,
.../method-get.html, .../server-time.html, https://apidocs.bitrix24.com/api-reference/user/user-current.html;
the portal's source, modules/rest/classes/general/rest_provider.php (appInfo, scopeList, methodsList,
getMethod) and modules/rest/lib/apauth/auth.php (insufficient_scope); the official Python SDK's
tests/integration/scopes/app/test_app.py (app.info of a webhook).
"""

from __future__ import annotations

import pytest

from bitrix24_emulator import create_emulator

from .conftest import Api, make_api


def test_server_time_is_php_date_c_in_portal_time(api):
    assert api.ok("server.time") == "2026-11-27T11:00:00+03:00"


def test_app_info_of_a_webhook_names_its_scopes_and_licence():
    api = make_api(scopes="crm,user")
    assert api.ok("app.info") == {"SCOPE": ["crm", "user"], "LICENSE": "en_pro100"}


def test_scope_lists_the_webhooks_scopes_and_full_every_scope():
    api = make_api(scopes="crm")
    assert api.ok("scope") == ["crm"]
    assert "task" in api.ok("scope", {"full": 1}) and "crm" in api.ok("scope", {"full": 1})


def test_methods_and_method_get_follow_the_scopes():
    api = make_api(scopes="crm")
    names = api.ok("methods")
    assert "crm.deal.add" in names and "profile" in names and "user.current" not in names
    assert all(n == n.lower() for n in names)
    assert api.ok("methods", {"scope": "user"}) == ["user.current", "user.fields", "user.get", "user.search"]
    assert "user.current" in api.ok("methods", {"full": 1})
    assert api.ok("method.get", {"name": "crm.deal.add"}) == {"isExisting": True, "isAvailable": True}
    assert api.ok("method.get", {"name": "user.current"}) == {"isExisting": True, "isAvailable": False}
    assert api.ok("method.get", {"name": "crm.nothing.here"}) == {"isExisting": False, "isAvailable": False}
    assert api.ok("method.get", {"name": ""}) == {"isExisting": False, "isAvailable": False}


def test_user_current_is_the_webhooks_user_and_brief_has_no_contact_details(api):
    user = api.ok("user.current")
    assert user["ID"] == "1" and user["ACTIVE"] is True and user["EMAIL"] and user["UF_DEPARTMENT"] == [1]
    assert "EMAIL" not in make_api(scopes="crm,user_brief").ok("user.current")


def test_a_method_outside_the_scopes_is_insufficient_scope():
    api = make_api(scopes="user")
    status, body = api("crm.deal.list")
    assert status == 401 and body == {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the webhook token"}
    assert make_api(scopes="user", auth_error_status=403)("crm.deal.list")[0] == 403
    # A method that does not exist is 404 first, scope or not (the order of checks in the portal's source,
    # modules/rest/classes/general/rest.php); basic methods need no scope.
    assert api("crm.nothing.here")[0] == 404
    assert api("profile")[0] == 200


def test_each_batch_command_is_checked_against_the_scopes():
    api = make_api(scopes="user")
    result = api.ok("batch", {"cmd": {"me": "user.current", "deals": "crm.deal.list"}})
    assert result["result"]["me"]["ID"] == "1"
    assert result["result_error"]["deals"]["error"] == "insufficient_scope"


def test_a_refused_scope_takes_no_place_in_the_bucket():
    api = Api(create_emulator(scopes="user", burst=1, rate=0.0001))
    assert [api("crm.deal.list")[0] for _ in range(3)] == [401, 401, 401]
    assert api("profile")[0] == 200  # the one place is still there


def test_unknown_scopes_are_refused_at_start():
    with pytest.raises(ValueError, match="unknown scope"):
        create_emulator(scopes="crm,nonsense")
