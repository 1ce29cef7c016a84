"""Receiving an event: find its tenant, check its token, store it once (a re-delivery is deduped).

Bitrix24 proves an event's origin only with the shared application token, so the token must be
the tenant's own, compared in constant time.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ...entities import entity_for_event, event_record_id
from ...models.status import EventStatus
from ...runtime import runtime
from ..client_config import configs_for_portal, stored_config
from .table import _model, _now, _session

log = logging.getLogger("flask_bitrix24")

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


def _auth(payload: dict[str, Any]) -> dict[str, Any]:
    auth = payload.get("auth")
    return auth if isinstance(auth, dict) else {}


def _text(value: Any, limit: int = 255) -> str:
    # Only plain printable ASCII is used for routing and stored in clear (domains, member ids).
    if isinstance(value, str) and value.isascii() and value.isprintable() and len(value) <= limit:
        return value
    return ""


_MEMBER_ID = re.compile(r"[0-9a-f]{32}")
_EVENT_NAME = re.compile(r"[A-Z0-9_]{1,128}")


def _find_tenant(payload: dict[str, Any], client_id: int | None, given: str) -> tuple[int | None, Any]:
    """The client this event belongs to (None: the environment's token) and its config. Raises on
    mismatch.

    Candidates: the per-client URL's config; else every stored config of the portal named by
    ``auth[member_id]`` (learnt from earlier verified events) *or* ``auth[domain]``; else
    BITRIX_OUTBOUND_TOKEN. The token must be the candidate's own: another tenant's is a mismatch.
    Tokens are compared in constant time, every candidate checked.
    """
    invalid = EventRejected(401, "INVALID_TOKEN", "invalid application_token")
    app = _app_tenant(payload, client_id, given)
    if app is not None:
        return app
    if client_id is not None:
        config = stored_config(client_id)
        if config is None or not _token_matches(given, _expected_token(config)):
            raise invalid
        return client_id, config
    auth = _auth(payload)
    member, domain = _text(auth.get("member_id"), 64), _text(auth.get("domain"))
    # The union, not "member first": a tenant that claimed someone else's member_id cannot hide
    # the real owner's config.
    candidates = {c.client_id: c for c in configs_for_portal(member, domain)}
    if candidates:
        matched = [c for c in candidates.values() if _token_matches(given, _expected_token(c))]
        if matched:
            return matched[0].client_id, matched[0]
        raise invalid
    if _token_matches(given, current_app.config.get("BITRIX_OUTBOUND_TOKEN")):
        return None, None
    raise invalid


def _app_tenant(payload: dict[str, Any], client_id: int | None, given: str) -> tuple[int | None, Any] | None:
    """App mode: the installation named by ``auth[member_id]`` (or linked to the per-client URL's
    client) whose application token this is; its client (None while unlinked) gets the event.

    An installation that has no application token yet (its ONAPPINSTALL never came, or could not be
    verified) takes the event's, but only with proof that the portal sent it: the event's access
    token works on the portal (``app_install.prove_access_token``)."""
    from ..app_install import InstallRejected, prove_access_token
    from ..client_config import ClientConfig
    from ..installations import ACTIVE

    rt = runtime()
    if not rt.app_mode:
        return None
    if client_id is not None:
        linked = rt.installations.for_client(client_id)
        member = linked.member_id if linked is not None else ""
    else:
        member = _text(_auth(payload).get("member_id"), 64)
    inst = rt.installations.get(member, with_secrets=True) if member else None
    if inst is None:
        return None
    kept = inst.secrets.get("application_token")
    if not _token_matches(given, kept):
        access = _auth(payload).get("access_token")
        if kept or inst.status != ACTIVE or not isinstance(access, str):
            return None
        try:
            proven = prove_access_token(rt, inst, access)
        except InstallRejected:  # too many failed proofs from there this minute
            return None
        if not proven or not rt.installations.set_application_token(inst.member_id, given):
            return None
        log.info("bitrix24 app on %s: application token taken from a verified event", inst.member_id)
    config = ClientConfig(client_id=inst.client_id, webhook_base=None, outbound_token=None, source="app",
                          portal_domain=inst.domain, member_id=inst.member_id)
    return inst.client_id, config


def _check_moved(payload: dict[str, Any], config: Any) -> None:
    """A verified app event naming another REST address than ours: the portal may have been renamed.
    The address an event names is not taken (it would decide where our access token goes); the OAuth
    server is asked instead (at most once per installation in a while: ``TokenBroker.renew``)."""
    rt = runtime()
    given = _auth(payload).get("client_endpoint")
    if not rt.app_mode or config is None or config.source != "app" or not isinstance(given, str):
        return
    inst = rt.installations.get(config.member_id)
    from ..webhook_rules import InvalidConfig, validate_client_endpoint

    try:
        named = validate_client_endpoint(given, rt.allowed_hosts)
    except InvalidConfig:
        return  # not a host we would call anyway
    if inst is None or inst.status != "active" or named == inst.client_endpoint:
        return
    try:
        rt.tokens.renew(inst.member_id, rt.tokens.current(inst.member_id), "moved", wait=2.0)
    except Exception as exc:  # noqa: BLE001 - the event is stored; the next call tries again
        log.warning("bitrix24 app on %s: could not check a new address: %s", inst.member_id, type(exc).__name__)


def _expected_token(config: Any) -> str | None:
    """The client's own token, else BITRIX_OUTBOUND_TOKEN: what the debug view says applies."""
    return config.outbound_token or current_app.config.get("BITRIX_OUTBOUND_TOKEN") or None


def dedupe_key(payload: dict[str, Any], tenant: int | None = None) -> str:
    """One key per delivery of one event to one tenant: a re-delivery has the same key; another
    tenant, or another subscription (event_handler_id), never shares it."""
    auth = _auth(payload)
    portal = auth.get("member_id") or auth.get("domain") or ""
    event = payload.get("event")
    name = event.strip().upper() if isinstance(event, str) else event  # as stored: onCrmDealUpdate is one event
    material = json.dumps(
        [tenant, portal, name, payload.get("event_handler_id"), payload.get("data"), payload.get("ts")],
        sort_keys=True, default=str,
    )
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def _scrub(payload: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(payload)
    auth = clean.get("auth")
    if isinstance(auth, dict):
        for key in _SECRET_AUTH_KEYS:
            auth.pop(key, None)
    return clean


def _learn_member_id(config: Any, member_id: str, domain: str) -> None:
    """Remember the portal's member_id (it survives a domain rename), but only a well-formed one
    sent from the very host the operator saved for this client, in an event its token proved."""
    if config is None or config.member_id or not _MEMBER_ID.fullmatch(member_id):
        return
    if not domain or domain.lower() != (config.portal_domain or ""):
        return
    # Its own small transaction, before the event's: a store that cannot keep it (a short column,
    # a host constraint) must never cost us the event.
    try:
        runtime().store.remember_member_id(config.client_id, member_id)  # the store commits it
    except Exception as exc:  # noqa: BLE001 - logged; the event is what matters
        _session().rollback()
        log.warning("could not remember member_id for client %s: %s", config.client_id, type(exc).__name__)


def _valid_text(value: Any) -> bool:
    """No lone surrogates anywhere (JSON bodies can carry them; no database stores them)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_text(k) and _valid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_valid_text(v) for v in value)
    return True


def receive_event(payload: dict[str, Any], *, client_id: int | None = None) -> tuple[Received, bool]:
    """Verify and store one event. Returns ``(event, duplicate)``; raises ``EventRejected``."""
    if not _valid_text(payload):
        raise EventRejected(400, "INVALID_BODY", "the event holds text that is not valid UTF-8")
    event_name = payload.get("event")
    name = event_name.strip().upper() if isinstance(event_name, str) else ""
    if not _EVENT_NAME.fullmatch(name):
        raise EventRejected(400, "INVALID_EVENT", "the payload has no valid 'event' name (like ONCRMDEALUPDATE)")
    given = _auth(payload).get("application_token")
    if not isinstance(given, str) or not given:
        raise EventRejected(401, "INVALID_TOKEN", "invalid application_token: auth[application_token] is missing")
    tenant, config = _find_tenant(payload, client_id, given)

    key = dedupe_key(payload, tenant)
    domain = _text(_auth(payload).get("domain"))
    # The tenant's own portal host, once the token proved the tenant (a per-client URL checks no
    # domain, so what the sender wrote there is not kept as fact); the sender's for the env token.
    row, unhandled = _new_row(payload, name, tenant, key,
                              (config.portal_domain if config is not None and config.portal_domain else domain) or None)
    _learn_member_id(config, _text(_auth(payload).get("member_id"), 64), domain)
    stored = _commit(row)
    if stored is None:
        return _again(key, unhandled)
    _forget_labels(name, (config.portal_domain if config is not None and config.portal_domain else domain) or None)
    _check_moved(payload, config)
    return stored, False


def _new_row(payload: dict[str, Any], name: str, tenant: int | None, key: str, portal_domain: str | None):
    """The event log row for ``payload`` (secrets scrubbed), and whether nothing listens for it: then
    it is logged and finished in one write (replay runs it later if needed)."""
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    entity = entity_for_event(name)
    record_id = event_record_id(entity, data)  # FIELDS.ID; a task event's FIELDS_AFTER.ID or FIELDS_BEFORE.ID
    unhandled = not runtime().handlers_for(name)
    now = _now()  # one clock reading: processed_at never precedes received_at
    row = _model()(
        client_id=tenant, portal_domain=portal_domain, event=name, entity_type=entity.type_name if entity else None,
        entity_id=_text(str(record_id), 64) or None if record_id is not None else None, payload=_scrub(payload),
        dedupe_key=key, status=EventStatus.DONE if unhandled else EventStatus.RECEIVED, received_at=now,
        processed_at=now if unhandled else None,
    )
    return row, unhandled


def _commit(row: Any) -> Received | None:
    """Store the row; None when its dedupe key is taken already (rolled back)."""
    _session().add(row)
    try:
        _session().flush()
        # Read before the commit expires them: once the row is committed, the answer must not need
        # the database again (a failover right then would turn a stored event into a 503).
        stored = Received(row.id, row.status)
        _session().commit()
    except IntegrityError:
        _session().rollback()
        return None
    return stored


def store_pulled_event(payload: dict[str, Any], *, tenant: int | None, portal_domain: str | None,
                       key: str) -> tuple[Received, bool]:
    """Store an event we fetched ourselves (an offline record): no token to check (we asked the
    portal), the caller's dedupe ``key``. A record already stored under it (read again after a
    crash between storing and clearing) is a duplicate and is not run again: (row, True)."""
    name = str(payload.get("event") or "").strip().upper()
    row, _ = _new_row(payload, name, tenant, key, portal_domain)
    stored = _commit(row)
    if stored is None:
        model = _model()
        existing = _session().execute(select(model).where(model.dedupe_key == key)).scalar_one()
        return Received(existing.id, existing.status), True
    _forget_labels(name, portal_domain)
    return stored, False


def _forget_labels(name: str, domain: str | None) -> None:
    """An ``ONCRM*USERFIELD*`` event: the portal's cached field labels are stale (``field_labels``)."""
    from ..field_labels import on_event

    try:
        on_event(name, domain)
    except Exception:  # the event is stored: a cache problem must not turn its receipt into an error
        log.exception("dropping the labels cache for %s failed", name)


@dataclass(frozen=True)
class Received:
    """What the receiver answers with: the stored event's id and status."""

    id: int
    status: str


def _again(key: str, unhandled: bool) -> tuple[Received, bool]:
    """The same delivery once more. While the first is still waiting to be handled, it is the same
    work: acknowledged, not stored twice. Once the first was handled, it is news (the record may
    have changed again within the same second: ``ts`` has whole seconds), so the row runs again; the
    handlers read the record's current state either way."""
    model, session = _model(), _session()
    existing = session.execute(select(model).where(model.dedupe_key == key)).scalar_one()
    seen = Received(existing.id, existing.status)
    if unhandled or seen.status not in (EventStatus.DONE, EventStatus.FAILED):
        return seen, True
    now = _now()
    reopened = session.execute(
        update(model)
        .where(model.id == seen.id, model.status.in_((EventStatus.DONE, EventStatus.FAILED)))
        .values(status=EventStatus.RECEIVED, attempts=0, last_error=None, next_attempt_at=None, processed_at=None,
                received_at=now)
    ).rowcount
    session.commit()
    if reopened == 1:
        return Received(seen.id, EventStatus.RECEIVED), False
    return seen, True  # another delivery reopened it first: the same work
