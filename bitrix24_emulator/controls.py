"""The emulator's own endpoints for tests and benchmarks of synchronisation, not part of Bitrix24.

``POST /_emulator/changes`` makes changes in the portal as a person in its UI would: no REST call, so no
request bucket, operating budget, token or ``auth_connector``, and the portal's user (1) behind them.
Each change raises every event a REST change would (the online ones to their handlers, a row in every
offline queue bound to it, ONOFFLINEEVENT at the end) and stamps ``DATE_MODIFY`` with the portal's
clock. JSON::

    {"entity": "contact" | "deal" | "lead" | "company",
     "add": N, "update": N or [ids], "delete": N or [ids],
     "seed": int, "fields": {...}}

``add`` makes N records (generated names, then ``fields`` over them); ``update`` changes N records
picked at random from the existing ones (or the ids given, in order, repeats allowed) with ``fields`` or
a generated change; ``delete`` deletes N records picked at random (or the ids given). Adds come first,
then updates, then deletes. Picks are seeded: by ``seed`` if given, otherwise by the portal's own
generator (seeded by its ``seed``). The answer is ``{"added": [ids], "updated": [ids], "deleted": [ids]}``.

``POST /_emulator/events`` with ``{"drop": true}`` (every post), ``{"drop": false}`` or ``{"drop_rate":
0.5}`` (that fraction, seeded) loses push deliveries: event posts are counted (``events_dropped``) and
logged in ``events_sent`` with ``dropped: true`` but never sent, while offline queues still fill, for
testing reconciliation. ``GET`` (and every answer) shows ``drop_rate``, ``events_dropped``,
``events_sent``, ``offline_queued`` (rows now) and ``offline_queues`` (per queue).

Bad input is a 4xx JSON ``{"error", "error_description"}``, never a 5xx.
"""

from __future__ import annotations

import random

from werkzeug.wrappers import Request, Response

from .errors import ApiError
from .oauth import AdminError, _bool, _json_object, _only
from .phpjson import dumps

CHANGES_PATH, EVENTS_PATH = "/_emulator/changes", "/_emulator/events"
PATHS = (CHANGES_PATH, EVENTS_PATH)
ENTITIES = ("contact", "deal", "lead", "company")
MAX_CHANGES = 1_000_000  # per request and kind
FIRST_NAMES = ("Anna", "Boris", "Clara", "Dmitry", "Elena", "Fyodor", "Galina", "Igor", "Kira", "Leonid")


def drop_rate(value) -> float:
    """A fraction of event posts to lose, 0..1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError("event_drop_rate must be a number from 0 to 1")
    return float(value)


def answer(portal, request: Request) -> Response | None:
    """The response to one of these endpoints, or None for another path."""
    if request.path not in PATHS:
        return None
    try:
        if request.path == EVENTS_PATH:
            body = _events(portal, request)
        else:
            body = _changes(portal, request)
        status = 200
    except ApiError as err:
        body, status = err.body(), err.status
    return Response(dumps(body), status=status, mimetype="application/json")


# ---- /_emulator/events ---------------------------------------------------------------------------------

def _events(portal, request: Request) -> dict:
    if request.method not in ("GET", "HEAD", "POST"):
        raise AdminError("METHOD_NOT_ALLOWED", f"{EVENTS_PATH} takes GET, or POST with a JSON object", 405)
    if request.method == "POST":
        payload = _json_object(request)
        _only(payload, ("drop", "drop_rate"))
        if "drop" in payload and "drop_rate" in payload:
            raise AdminError("INVALID_FIELD", "give drop or drop_rate, not both", 400)
        if "drop" in payload:
            rate = 1.0 if _bool(payload["drop"], "drop") else 0.0
        elif "drop_rate" in payload:
            value = payload["drop_rate"]
            try:
                rate = drop_rate(value)
            except ValueError:
                raise AdminError("INVALID_FIELD", "drop_rate must be a number from 0 to 1", 400) from None
        else:
            rate = None
        if rate is not None:
            with portal._lock:
                portal.event_drop_rate = rate
    with portal._lock:
        return {"drop_rate": portal.event_drop_rate, "events_dropped": portal.counters.events_dropped,
                "events_sent": len(portal.events_sent), "offline_queued": portal.offline.size(),
                "offline_queues": portal.offline.stats()}


# ---- /_emulator/changes --------------------------------------------------------------------------------

def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CHANGES:
        raise AdminError("INVALID_FIELD", f"{name} must be a whole number from 0 to {MAX_CHANGES} or a list of "
                                          "record ids", 400)
    return value


def _picks(value, name: str) -> int | list[int]:
    """``N`` (random picks) or a list of record ids."""
    if isinstance(value, list):
        if len(value) > MAX_CHANGES or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63 for v in value):
            raise AdminError("INVALID_FIELD", f"{name} must be a whole number or a list of record ids "
                                              f"(positive integers, at most {MAX_CHANGES})", 400)
        return value
    return _count(value, name)


def _generated(entity: str, rng: random.Random, adding: bool) -> dict:
    """Fields a person might type: a new record's, or one change to an existing record."""
    mark = rng.randrange(1_000_000)
    if entity == "contact":
        return {"NAME": rng.choice(FIRST_NAMES), "LAST_NAME": f"{'Added' if adding else 'Changed'} {mark}"}
    title = {"company": "Company", "deal": "Deal", "lead": "Lead"}[entity]
    return {"TITLE": f"{title} {'added' if adding else 'changed'} in the portal {mark}"}


def _changes(portal, request: Request) -> dict:
    if request.method != "POST":
        raise AdminError("METHOD_NOT_ALLOWED", f"{CHANGES_PATH} takes POST with a JSON object", 405)
    payload = _json_object(request)
    _only(payload, ("entity", "add", "update", "delete", "seed", "fields"))
    entity = payload.get("entity")
    if entity not in ENTITIES:
        raise AdminError("INVALID_ENTITY", f"entity must be one of {', '.join(ENTITIES)}", 400)
    adding = _count(payload.get("add", 0), "add")
    updating = _picks(payload.get("update", 0), "update")
    deleting = _picks(payload.get("delete", 0), "delete")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise AdminError("INVALID_FIELD", "seed must be a whole number", 400)
    fields = payload.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise AdminError("INVALID_FIELD", "fields must be a JSON object of the entity's fields", 400)
    context = {"auth_type": "portal", "user_id": portal.user_id, "host": request.host, "scheme": request.scheme}
    added, updated, deleted = [], [], []
    with portal._lock:
        records = portal.store.records[entity]
        for name, wanted in (("update", updating), ("delete", deleting)):
            if isinstance(wanted, list):
                missing = list(dict.fromkeys(i for i in wanted if i not in records))
                if missing:
                    shown = ", ".join(str(i) for i in missing[:10])
                    raise AdminError("NOT_FOUND", f"{name}: no {entity} with id {shown} (ids must exist before "
                                                  "the request: nothing was changed)", 404)
        if isinstance(deleting, list) and len(set(deleting)) != len(deleting):
            raise AdminError("INVALID_FIELD", "delete lists an id twice", 400)
        available = len(records) + adding
        for name, wanted in (("update", updating), ("delete", deleting)):
            if isinstance(wanted, int) and wanted > available:
                raise AdminError("NOT_ENOUGH_RECORDS", f"{name}: {wanted} picks asked, the portal has "
                                                       f"{available} {entity} record(s)", 409)
        rng = random.Random(seed) if seed is not None else portal._changes_random
        store = portal.store
        try:
            for _ in range(adding):
                new_id = store.add(entity, {"fields": {**_generated(entity, rng, True), **(fields or {})}})
                added.append(new_id)
                portal._emit(entity, "ADD", new_id, context)
            ids = updating if isinstance(updating, list) else rng.sample(list(records), updating)
            for record_id in ids:
                store.update(entity, {"id": record_id, "fields": fields if fields else _generated(entity, rng, False)})
                updated.append(record_id)
                portal._emit(entity, "UPDATE", record_id, context)
            ids = deleting if isinstance(deleting, list) else rng.sample(list(records), deleting)
            for record_id in ids:
                store.delete(entity, {"id": record_id})
                deleted.append(record_id)
                portal._emit(entity, "DELETE", record_id, context)
        except ApiError as err:
            # A field the portal refuses (the store's own error): what was done stays done.
            detail = _printable(err.description)
            raise AdminError("CHANGE_REFUSED", f"the portal refused a change: {detail}", 400, added=added,
                             updated=updated, deleted=deleted) from None
        finally:
            portal.counters.portal_changes += len(added) + len(updated) + len(deleted)
            portal.finish_hit(context)
    return {"added": added, "updated": updated, "deleted": deleted}


def _printable(text) -> str:
    text = str(text)
    return text if len(text) <= 300 else text[:297] + "..."
