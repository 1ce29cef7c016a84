"""Receiving Bitrix24's outbound events: verify the application token, store durably, dedupe.

Bitrix24 posts each event once and never retries (bitrix24-api.md §8), so an accepted event is
committed to the ``BitrixEvent`` table before we answer. The token is compared in constant time;
an event whose token does not match is refused and nothing of it is stored.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

from flask import current_app
from sqlalchemy.exc import IntegrityError

from ..entities import entity_for_event
from ..extensions import db
from ..models import BitrixEvent
from .client_config import configs_for_domain, stored_config

# Never stored: the shared secret itself and OAuth tokens an app event may carry.
_SECRET_AUTH_KEYS = ("application_token", "access_token", "refresh_token")


class EventRejected(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def _token_matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _find_tenant(payload: dict[str, Any], client_id: int | None, given: str) -> int | None:
    """The client this event belongs to (None: the environment's token). Raises on mismatch."""
    auth = payload.get("auth") if isinstance(payload.get("auth"), dict) else {}
    domain = auth.get("domain") if isinstance(auth.get("domain"), str) else ""
    invalid = EventRejected(401, "INVALID_TOKEN", "invalid application_token")
    if client_id is not None:
        config = stored_config(client_id)
        if config is None or not _token_matches(given, config.outbound_token):
            raise invalid
        return client_id
    candidates = configs_for_domain(domain) if domain else []
    if candidates:
        # Check every candidate (no early exit) so timing does not reveal which one matched.
        matched = [c.client_id for c in candidates if _token_matches(given, c.outbound_token)]
        if matched:
            return matched[0]
        raise invalid
    if _token_matches(given, current_app.config.get("BITRIX_OUTBOUND_TOKEN")):
        return None
    raise invalid


def dedupe_key(payload: dict[str, Any]) -> str:
    auth = payload.get("auth") if isinstance(payload.get("auth"), dict) else {}
    portal = auth.get("member_id") or auth.get("domain") or ""
    material = json.dumps(
        [portal, payload.get("event"), payload.get("data"), payload.get("ts")], sort_keys=True, default=str
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _scrub(payload: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(payload)
    auth = clean.get("auth")
    if isinstance(auth, dict):
        for key in _SECRET_AUTH_KEYS:
            auth.pop(key, None)
    return clean


def receive_event(payload: dict[str, Any], *, client_id: int | None = None) -> tuple[BitrixEvent, bool]:
    """Verify and store one event. Returns ``(event, duplicate)``; raises ``EventRejected``."""
    event_name = payload.get("event")
    if not isinstance(event_name, str) or not event_name.strip():
        raise EventRejected(400, "INVALID_EVENT", "the payload has no 'event' name")
    auth = payload.get("auth")
    given = auth.get("application_token") if isinstance(auth, dict) else None
    if not isinstance(given, str) or not given:
        raise EventRejected(401, "INVALID_TOKEN", "invalid application_token: auth[application_token] is missing")
    tenant = _find_tenant(payload, client_id, given)

    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    fields = data.get("FIELDS") if isinstance(data.get("FIELDS"), dict) else {}
    entity = entity_for_event(event_name)
    key = dedupe_key(payload)
    row = BitrixEvent(
        client_id=tenant,
        portal_domain=(auth.get("domain") or None) if isinstance(auth.get("domain"), str) else None,
        event=event_name.upper()[:128],
        entity_type=entity.type_name if entity else None,
        entity_id=str(fields.get("ID"))[:64] if fields.get("ID") is not None else None,
        payload=_scrub(payload),
        dedupe_key=key,
        status="received",
    )
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = BitrixEvent.query.filter_by(dedupe_key=key).one()
        return existing, True
    return row, False
