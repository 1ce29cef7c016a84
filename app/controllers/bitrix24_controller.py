"""HTTP <-> service: parse and check the request, call the service, shape the answer.

No Bitrix24 wire details here: params are built as plain dicts and handed to ``bx_call``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..entities import ENTITIES
from ..models.status import EventStatus
from ..runtime import runtime
from ..services import client_config, records
from ..services import events as events_service
from ..services import upsert as upsert_service
from ..services.bitrix24_service import Bitrix24Error, bx_call
from ..services.breaker import Suspended
from ..services.errors import LimitExceeded
from ..services.events import EventRejected, receive_event
from ..services.metrics import tenant_label
from ..services.numbers import as_id
from ..services.secrets import mask, mask_url
from ..services.wire import parse_php_form
from . import bulk_controller, relations_controller
from .errors import ApiError, error_response
from .params import (
    created_location,
    entity_or_404,
    fields_and_params,
    list_params,
    read_body,
)

log = logging.getLogger("flask_bitrix24")

# ----------------------------------------------------------------------------------------------
# Configuration


def _config_view(config: client_config.ClientConfig) -> dict[str, Any]:
    return {
        "client_id": config.client_id,
        "source": config.source,
        "portal_domain": config.portal_domain,
        "webhook_base": mask_url(config.webhook_base),
        "outbound_token": mask(config.outbound_token),
        "rate_limit": config.rate_limit,
        "updated_at": config.updated_at.isoformat() if config.updated_at else None,
        **(_app_view(config) if config.source == "app" else {}),
    }


def _app_view(config: client_config.ClientConfig) -> dict[str, Any]:
    inst = client_config.linked_installation(config.client_id)
    return {"member_id": config.member_id, "app": inst.view() if inst is not None else None}


def save_config(body: dict[str, Any], client_id: int):
    """Save (or partly update) the client's Bitrix24 connection; answers the masked view."""
    existed = client_config.stored_config(client_id) is not None
    try:
        config = client_config.save_config(client_id, body)
    except client_config.WebhookNotVerified as exc:
        raise _not_verified(exc) from None
    return {"result": _config_view(config)}, 200 if existed else 201


def _not_verified(exc: client_config.WebhookNotVerified) -> ApiError:
    error = exc.error
    if isinstance(error, Suspended):
        return ApiError(429, "WEBHOOK_CHECKS_SUSPENDED",
                        f"the portal refused this client's webhooks again and again ({error.code}); no new one is "
                        "tried on it for a while: copy the inbound webhook URL again, then save it after "
                        "Retry-After", field="webhook_base", bitrix24_error=error.code, retry_after=error.retry_after)
    if exc.rejected:
        return ApiError(422, "WEBHOOK_REJECTED",
                        f"the portal refused this webhook ({error.code}: {error.description}); nothing was saved: "
                        "copy the inbound webhook URL again (Developer resources, Other, Inbound webhook)",
                        field="webhook_base", bitrix24_error=error.code)
    extra: dict[str, Any] = {"bitrix24_error": error.code}
    if isinstance(error, LimitExceeded):
        extra["retry_after"] = error.retry_after
    return ApiError(429 if isinstance(error, LimitExceeded) else 502, "WEBHOOK_NOT_VERIFIED",
                    f"could not check this webhook with the portal ({error.code}: {error.description}); nothing "
                    'was saved: try again, or send "verify": false to save it unchecked', field="webhook_base",
                    **extra)


def get_config(client_id: int):
    """The client's effective config (database, else environment), secrets masked."""
    return {"result": _config_view(client_config.effective_config(client_id))}


def delete_config(client_id: int):
    """Forget the client's saved config (the environment fallback, if any, applies again)."""
    if not client_config.delete_config(client_id):
        raise ApiError(404, "CONFIG_NOT_FOUND", f"client {client_id} has no saved Bitrix24 config")
    return {"result": True}


def debug_config(query: dict[str, Any], client_id: int):
    """Where the config comes from, the portal host, masked secrets, the CRM row; ?check=1 calls the portal."""
    config = client_config.effective_config(client_id)
    crm_id = client_config.bitrix24_crm_id()
    state = runtime()
    view = _config_view(config)
    view.update(
        {
            "outbound_token_source": (
                "database"
                if config.source == "database" and config.outbound_token
                else "environment"
                if current_app.config.get("BITRIX_OUTBOUND_TOKEN")
                else "none"
            ),
            "crm": {"id": crm_id, "name": state.store.crm.name} if crm_id is not None else None,
            "env_fallback": state.env_fallback,
            "store": type(state.store).__name__,
            "allowed_hosts": list(state.allowed_hosts),
            "environment": {
                "BITRIX_WEBHOOK_BASE": mask_url(current_app.config.get("BITRIX_WEBHOOK_BASE") or None),
                "BITRIX_OUTBOUND_TOKEN": mask(current_app.config.get("BITRIX_OUTBOUND_TOKEN") or None),
            },
        }
    )
    if config.source == "database" and not config.outbound_token:
        view["outbound_token"] = mask(current_app.config.get("BITRIX_OUTBOUND_TOKEN") or None)
    view["suspended"] = _breaker_view(client_id, config)
    if query.get("check") in ("1", "true", "yes"):
        view["check"] = _live_check(client_id)
    return {"result": view}


def _breaker_view(client_id: int, config: client_config.ClientConfig) -> dict[str, Any]:
    try:
        target = client_config.portal_target(client_id)
    except Bitrix24Error:
        return {"state": "closed", "failures": 0}
    key = "app:" + target.member_id if target.member_id else target.base
    return runtime().breaker.view(tenant_label(client_id if target.source in ("database", "app") else None), key)


def _live_check(client_id: int) -> dict[str, Any]:
    try:
        envelope = bx_call("profile", client_id=client_id)
    except Bitrix24Error as exc:
        return {"ok": False, "method": "profile", "error": exc.code, "error_description": exc.description}
    user = envelope.get("result") if isinstance(envelope.get("result"), dict) else {}
    return {
        "ok": True,
        "method": "profile",
        "user": {k: user.get(k) for k in ("ID", "NAME", "LAST_NAME", "ADMIN") if k in user},
    }


# ----------------------------------------------------------------------------------------------
# CRUD + list, for every entity in the entity table


def create_record(body: dict[str, Any], client_id: int, entity: str):
    """Create a record: 201, the new id as result, and its Location. With ``ORIGIN_ID`` in the fields a
    rerun finds the record an earlier create made: 200, its id, ``"existing": true``."""
    ent = entity_or_404(entity)
    fields, params = fields_and_params(ent, body)
    fields = relations_controller.checked_fields(ent.name, fields, client_id)  # a deal's stage, a lead's status
    new_id, existed = upsert_service.create_once(ent, fields, params, client_id=client_id)
    new_id = as_id(new_id)  # crm.*.add answers an int; some proxies turn it into a string
    location = created_location("get_record", "record_id", new_id, client_id=client_id, entity=ent.name)
    if existed:  # an earlier create with this ORIGIN_ID: its record, not a second one
        return {"result": new_id, "existing": True}, 200, location
    return {"result": new_id}, 201, location


def get_record(client_id: int, entity: str, record_id: int):
    """One record, as Bitrix24 has it (without the method family's wrapper)."""
    ent = entity_or_404(entity)
    return {"result": records.get(ent, record_id, client_id=client_id)}


def update_record(body: dict[str, Any], client_id: int, entity: str, record_id: int):
    """Change the given fields of a record (a bare object of fields works too)."""
    ent = entity_or_404(entity)
    fields, params = fields_and_params(ent, body)
    fields = relations_controller.checked_fields(ent.name, fields, client_id, record_id)
    return {"result": records.update(ent, record_id, fields, params, client_id=client_id)}


def delete_record(client_id: int, entity: str, record_id: int):
    """Delete a record."""
    ent = entity_or_404(entity)
    return {"result": records.delete(ent, record_id, client_id=client_id)}


def list_records(query: dict[str, Any], client_id: int, entity: str):
    """One page of records (50, Bitrix24's page size), or with all=1 every matching row, streamed."""
    ent = entity_or_404(entity)
    params = list_params(ent, query)
    if query.get("all"):
        return bulk_controller.stream_all(ent, params, client_id)
    return records.page(ent, params, client_id=client_id)


# ----------------------------------------------------------------------------------------------
# Events from Bitrix24


def _event_payload() -> dict[str, Any]:
    raw = read_body()
    if request.mimetype == "application/json":
        try:
            payload = request.get_json(silent=True)
        except RecursionError:
            payload = None
        if not isinstance(payload, dict):
            raise ApiError(400, "INVALID_BODY", "the event body is not a JSON object")
        return payload
    try:
        payload = parse_php_form(raw)
    except ValueError as exc:
        raise ApiError(400, "INVALID_BODY", f"the event body is not a readable form: {exc}")
    if not payload:
        raise ApiError(400, "INVALID_BODY", "the event body is empty: Bitrix24 posts a form with event, data and auth")
    return payload


def _receive(client_id: int | None, payload: dict[str, Any] | None = None, extra: dict[str, Any] | None = None):
    """Store the event (the request's, or ``payload``) and dispatch it; ``extra`` joins the answer."""
    if payload is None:
        payload = _event_payload()
    try:
        event, duplicate = receive_event(payload, client_id=client_id)
    except EventRejected as exc:
        return error_response(exc.status, exc.code, exc.description)
    response = jsonify({"result": {**(extra or {}), "event_id": event.id, "duplicate": duplicate}})
    if not duplicate and event.status == EventStatus.RECEIVED and not events_service.submit(event.id):
        # Inline mode: run the handlers once the answer has gone back to Bitrix24.
        app = current_app._get_current_object()
        event_id = event.id

        def run_after_response() -> None:
            with app.app_context():
                try:
                    events_service.dispatch_event(event_id)
                except Exception:  # never let a handler problem reach the server loop
                    log.exception("dispatching Bitrix24 event %s failed", event_id)

        response.call_on_close(run_after_response)
    return response


def receive_event_view():
    """Bitrix24's outbound webhook: checked by auth[application_token], stored, then dispatched."""
    return _receive(None)


def receive_client_event_view(client_id: int):
    """Bitrix24's outbound webhook for one client (its outbound_token must match)."""
    return _receive(client_id)


def allowed_methods() -> list[str]:
    """The methods our real routes take at this path (the JSON catch-all does not count)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        try:
            endpoint, _ = adapter.match(method=method)
        except HTTPException:
            continue
        if endpoint != runtime().endpoint("not_found"):
            allowed.append(method)
    return allowed


def fix_allow_header(response):
    """``after_request``: Flask's automatic OPTIONS answer lists every method of every rule that
    matches, the catch-all's too; say only what the path really takes."""
    if request.method == "OPTIONS" and (response.status_code < 300 or "Allow" in response.headers):
        allowed = allowed_methods()
        response.headers["Allow"] = ", ".join([*allowed, *(["HEAD"] if "GET" in allowed else []), "OPTIONS"])
    return response


def not_found(subpath: str = ""):
    allowed = allowed_methods()
    if allowed:
        response = error_response(
            405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here: use {', '.join(allowed)}"
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    raise ApiError(404, "NOT_FOUND", f"no Bitrix24 API endpoint at {request.path}")


def write_many(body: dict[str, Any], client_id: int, entity: str):
    """Create (no id) or update (with id) many records, 50 per batch request; creates are safe to rerun."""
    return bulk_controller.write_many(entity_or_404(entity), client_id, body)


def raw_batch(body: dict[str, Any], client_id: int):
    """Bitrix24's batch: up to 50 CRM commands in one request, $result[...] references included."""
    return bulk_controller.raw_batch(client_id, body)


# ----------------------------------------------------------------------------------------------
# The event log


def list_events(query: dict[str, Any], client_id: int):
    """The client's event log, newest first, filtered by status and event name."""
    start, limit = query["start"], query["limit"]
    rows, total = events_service.list_events(
        client_id, status=query.get("status"), name=query.get("event"), start=start, limit=limit
    )
    body: dict[str, Any] = {"result": [row.to_dict() for row in rows], "total": total}
    if start + len(rows) < total:
        body["next"] = start + len(rows)
    return body


def replay_event(client_id: int, event_id: int):
    row = runtime().session.get(runtime().event_model, event_id)
    if row is None or not events_service.belongs_to(row, client_id):
        raise ApiError(404, "EVENT_NOT_FOUND", f"client {client_id} has no event {event_id}")
    try:
        row = events_service.replay(event_id)
    except events_service.EventBusy as exc:
        raise ApiError(409, "EVENT_BUSY", str(exc))
    return {"result": row.to_dict()}, 202 if row.status == EventStatus.QUEUED else 200


def upsert_record(body: dict[str, Any], client_id: int, entity: str):
    """Find the record by e-mail or phone (crm.duplicate.findbycomm), then update it or create it."""
    ent = entity_or_404(entity)
    if not ent.upsert:
        upsertable = ", ".join(e.name for e in ENTITIES.values() if e.upsert)
        raise ApiError(404, "UNKNOWN_ENTITY", f"upsert works on {upsertable}, not {ent.name}")
    fields, params = fields_and_params(ent, body)
    try:
        outcome = upsert_service.upsert(ent, fields, params, client_id=client_id)
    except ValueError as exc:
        raise ApiError(400, "INVALID_FIELDS", str(exc), field="fields")
    if outcome.action != "created":
        return {"result": outcome.as_dict()}
    location = created_location("get_record", "record_id", outcome.id, client_id=client_id, entity=ent.name)
    return {"result": outcome.as_dict()}, 201, location
