"""Our own database reads end their transactions: a bulk job or a stream that runs for minutes must not
hold a connection "idle in transaction" (on PostgreSQL that keeps a snapshot open and blocks the host's
migrations), while a transaction the caller began is left alone."""

from __future__ import annotations

from flask_bitrix24 import runtime
from flask_bitrix24.services.bitrix24_service import bx_call
from sqlalchemy import text

from tests.conftest import PORTAL_BASE, portal_url


def _session(app):
    return runtime(app).session()


def test_a_call_for_a_saved_client_leaves_no_transaction_open(make_app, portal):
    app = make_app()
    assert app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE}).status_code == 201
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    with app.app_context():
        runtime(app).target_cache.clear()
        assert bx_call("crm.contact.list", client_id=1)["result"] == []
        assert not _session(app).in_transaction()


def test_the_callers_own_transaction_is_left_as_it_was(make_app, portal):
    app = make_app()
    assert app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE}).status_code == 201
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    with app.app_context():
        runtime(app).target_cache.clear()
        session = _session(app)
        session.execute(text("SELECT 1"))  # the host's work, not yet committed
        bx_call("crm.contact.list", client_id=1)
        assert session.in_transaction()


def test_ending_our_read_leaves_a_hosts_loaded_objects_as_its_own_commits_would(make_app, portal):
    """A host whose session keeps objects loaded across commits (expire_on_commit=False) finds them still
    loaded after our lookup: the read is ended the way the host's own commits end theirs."""
    from flask_bitrix24.models.standalone import ClientCRMAuth
    from sqlalchemy import inspect

    app = make_app()
    assert app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE}).status_code == 201
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    with app.app_context():
        runtime(app).target_cache.clear()
        session = _session(app)
        session.expire_on_commit = False
        row = session.query(ClientCRMAuth).filter_by(client_id=1).one()
        session.commit()
        bx_call("crm.contact.list", client_id=1)
        assert not session.in_transaction()
        assert not inspect(row).expired_attributes  # a rollback would have expired it: a reload, or a
        # DetachedInstanceError once the host's session is gone


def test_a_client_with_no_config_leaves_no_transaction_open_either(make_app):
    from flask_bitrix24.services.errors import ConfigMissing

    app = make_app(BITRIX_ENV_FALLBACK=False)
    with app.app_context():
        runtime(app).target_cache.clear()
        try:
            bx_call("crm.contact.list", client_id=7)
        except ConfigMissing:
            pass
        else:
            raise AssertionError("a client with no config must be told so")
        assert not _session(app).in_transaction()
