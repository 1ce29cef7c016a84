"""Upsert: find a record by e-mail or phone (``crm.duplicate.findbycomm``), update it or create it,
so a sync job can be run again without making duplicates."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..entities import Entity
from ..runtime import runtime
from . import records
from .bitrix24_service import bx_call
from .errors import BadInput
from .numbers import is_digits

# values per call: https://apidocs.bitrix24.com/api-reference/crm/duplicates/crm-duplicate-find-by-comm.html
FINDBYCOMM_LIMIT = 20


@dataclass
class UpsertOutcome:
    id: int
    action: str  # "created" | "updated"
    matched_by: str | None = None
    duplicates: list[int] = field(default_factory=list)  # other records with the same e-mail/phone

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "matched_by": self.matched_by, "duplicates": self.duplicates}


def _values(items: Any) -> list[str]:
    """VALUEs of a multi-field given as a list of {"VALUE": ...}, a list of strings, or a string."""
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        value = item.get("VALUE") if isinstance(item, dict) else item
        if isinstance(value, str) and value.strip():
            out.append(value.strip())
    return out


def _normal(kind: str, value: str) -> str:
    return re.sub(r"\D", "", value) if kind == "PHONE" else value.casefold()


def comm_values(fields: dict[str, Any]) -> dict[str, list[str]]:
    return {kind: _values(fields.get(kind)) for kind in ("EMAIL", "PHONE") if _values(fields.get(kind))}


def _find(entity: Entity, kind: str, values: list[str], client_id: int | None) -> list[int]:
    found: set[int] = set()
    for i in range(0, len(values), FINDBYCOMM_LIMIT):
        result = bx_call(
            "crm.duplicate.findbycomm",
            {"type": kind, "values": values[i : i + FINDBYCOMM_LIMIT], "entity_type": entity.type_name},
            client_id=client_id,
        )["result"]
        if isinstance(result, dict):  # [] when nothing matches
            found.update(int(x) for x in result.get(entity.type_name, []) or [])
    return sorted(found)


def _without_known(fields: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    # Update *adds* multi-field values: leave out the e-mails and phones the record already has.
    # See "Working with Multiple Fields" in
    # https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-update.html
    out = dict(fields)
    for kind in ("EMAIL", "PHONE"):
        if kind not in out:
            continue
        known = {_normal(kind, v) for v in _values(record.get(kind))}
        items = out[kind] if isinstance(out[kind], list) else [out[kind]]
        fresh = [i for i in items if not any(_normal(kind, v) in known for v in _values([i]))]
        if fresh:
            out[kind] = fresh
        else:
            del out[kind]
    return out


def _as_multifield(items: Any) -> Any:
    # Bitrix24 keeps only {"VALUE": ...} items in a multi-field: "a@x.com" or ["a@x.com"] would be
    # dropped, the record stored without the e-mail, and the next upsert would not find it.
    # Item shape: https://apidocs.bitrix24.com/api-reference/crm/data-types.html#crm_multifield
    if isinstance(items, str):
        items = [items]
    if isinstance(items, list):
        return [{"VALUE": i, "VALUE_TYPE": "WORK"} if isinstance(i, str) else i for i in items]
    return items


def upsert(entity: Entity, fields: dict[str, Any], params: dict[str, Any], *, client_id: int | None) -> UpsertOutcome:
    """Match by e-mail first, then phone; update the oldest match, or create. Raises ValueError when
    ``fields`` holds neither an EMAIL nor a PHONE."""
    fields = {k: _as_multifield(v) if k in ("EMAIL", "PHONE") else v for k, v in fields.items()}
    comms = comm_values(fields)
    if not comms:
        raise ValueError("upsert finds records by EMAIL or PHONE: give at least one in fields")
    # Two upserts of one new e-mail at once would both find nothing and both create: the lookup and
    # the create run under a lock per (tenant, entity, value), across processes with Redis.
    keys = [f"upsert:{client_id}:{entity.prefix}:{kind}:{value}" for kind, values in comms.items() for value in values]
    with runtime().locks.hold(keys):
        return _upsert(entity, fields, params, comms, client_id)


def _upsert(entity: Entity, fields: dict[str, Any], params: dict[str, Any], comms: dict[str, list[str]],
            client_id: int | None) -> UpsertOutcome:
    for kind in ("EMAIL", "PHONE"):
        if kind not in comms:
            continue
        ids = _find(entity, kind, comms[kind], client_id)
        if ids:
            target = ids[0]
            current = bx_call(entity.method("get"), {"id": target}, client_id=client_id)["result"]
            changes = _without_known(fields, current if isinstance(current, dict) else {})
            if changes:
                payload: dict[str, Any] = {"id": target, "fields": changes}
                if params:
                    payload["params"] = params
                bx_call(entity.method("update"), payload, client_id=client_id)
            return UpsertOutcome(target, "updated", kind, ids[1:])
    payload = {"fields": fields, **({"params": params} if params else {})}
    new_id = bx_call(entity.method("add"), payload, client_id=client_id)["result"]
    return UpsertOutcome(int(new_id), "created")


def origin_lock_key(client_id: int | None, prefix: str, originator: str | None, origin: str) -> str:
    """The lock a create with this ORIGIN_ID runs under: the same for a single create and a bulk one."""
    return f"origin:{client_id}:{prefix}:{originator or ''}:{origin}"


# Rows per list page (https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html)
ORIGIN_PAGE = 50
# How many pages one lookup may read: ORIGIN_IDs many sources share ("1", "2", ...) can match many rows.
ORIGIN_MAX_PAGES = 200


def find_by_origin(prefix: str, wanted: list[tuple[str, str | None]], *, client_id: int | None,
                   max_wait: float | None = None, background: bool | None = None) -> dict[tuple[str, str | None], int]:
    """The oldest record for each (ORIGIN_ID, ORIGINATOR_ID or None for any source): {pair: id}.

    The portal's filter on ORIGIN_ID ignores case and other sources' records share the same
    numbers, so every matching row is read (ID order, walking by ``>ID`` and ``start=-1``, as for
    huge lists) and compared exactly here; a full page is "look further", never "not found"."""
    found: dict[tuple[str, str | None], int] = {}
    by_source: dict[str | None, set[str]] = {}
    for origin, originator in wanted:
        by_source.setdefault(originator, set()).add(origin)
    for originator, origins in by_source.items():
        flt: dict[str, Any] = {"@ORIGIN_ID": sorted(origins)}
        if originator is not None:
            flt["ORIGINATOR_ID"] = originator
        last = 0
        for _ in range(ORIGIN_MAX_PAGES):
            params = {"filter": {**flt, ">ID": last}, "select": ["ID", "ORIGIN_ID", "ORIGINATOR_ID"],
                      "order": {"ID": "ASC"}, "start": -1}
            rows = bx_call(f"{prefix}.list", params, client_id=client_id, max_wait=max_wait,
                           background=background)["result"]
            rows = [r for r in rows or [] if isinstance(r, dict) and is_digits(str(r.get("ID", "")))]
            for row in rows:
                origin, source = str(row.get("ORIGIN_ID") or ""), str(row.get("ORIGINATOR_ID") or "")
                if origin in origins and (originator is None or source == originator):
                    found.setdefault((origin, originator), int(row["ID"]))
            if len(rows) < ORIGIN_PAGE or all((o, originator) in found for o in origins):
                break
            last = max(int(r["ID"]) for r in rows)
        else:
            raise BadInput(f"more than {ORIGIN_MAX_PAGES * ORIGIN_PAGE} records share these ORIGIN_IDs: "
                           "give an ORIGINATOR_ID that tells your source apart", code="ORIGIN_AMBIGUOUS")
    return found


def create_once(entity: Entity, fields: dict[str, Any], params: dict[str, Any], *,
                client_id: int | None) -> tuple[Any, bool]:
    """Create a record, unless one with the same ``ORIGIN_ID`` (and ``ORIGINATOR_ID``) exists:
    ``(id, existed)``. A caller that reruns a create whose answer it lost (502 OUTCOME_UNKNOWN, a
    timeout of its own) finds the record instead of making a second. Without ``ORIGIN_ID``: a plain
    create. The lookup and the create run under a lock per (tenant, entity, origin)."""
    origin = fields.get("ORIGIN_ID")
    if (entity.camel or not entity.origin_ids or isinstance(origin, bool) or not isinstance(origin, (str, int))
            or str(origin) == ""):
        return records.add(entity, fields, params, client_id=client_id), False
    originator = fields.get("ORIGINATOR_ID")
    where: dict[str, Any] = {"ORIGIN_ID": str(origin)}
    if isinstance(originator, (str, int)) and not isinstance(originator, bool) and str(originator) != "":
        where["ORIGINATOR_ID"] = str(originator)
    key = origin_lock_key(client_id, entity.prefix, where.get("ORIGINATOR_ID"), where["ORIGIN_ID"])
    pair = (where["ORIGIN_ID"], where.get("ORIGINATOR_ID"))
    with runtime().locks.hold([key]):
        found = find_by_origin(entity.prefix, [pair], client_id=client_id)
        if pair in found:
            return found[pair], True
        return records.add(entity, fields, params, client_id=client_id), False
