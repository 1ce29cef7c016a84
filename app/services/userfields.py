"""CRM user fields: ``crm.{contact,deal,lead,company}.userfield.*`` and ``crm.userfield.types``.

What the portal allows, checked here before anything is sent, so a caller gets a 400 that says
what to fix instead of the portal's ``ERROR_CORE`` (or, for a boolean marked multiple, a field that
is silently single):
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-add.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-update.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-list.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-get.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-delete.html
(the same pages exist for contacts, leads and companies),
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-types.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-enumeration-fields.html.

- ``FIELD_NAME``: ``X``, ``UF_X`` and ``UF_CRM_X`` all become ``UF_CRM_X`` (upper-cased); at most 50
  characters in all, ``A-Z``, ``0-9`` and ``_`` only.
- ``USER_TYPE_ID``: the documented types, or one the portal lists in ``crm.userfield.types`` (an app
  may register its own).
- ``enumeration`` needs ``LIST`` (items with a ``VALUE``); ``boolean`` cannot be ``MULTIPLE``.
- ``FIELD_NAME``, ``USER_TYPE_ID``, ``MULTIPLE`` and ``ENTITY_ID`` cannot change after creation (the
  portal ignores them on update: we refuse them instead).
- Creating a name that exists is refused with ``UserFieldExists`` (the list is read first; the
  portal's own ``ERROR_CORE`` "... already exists" refusal, when two creates race, maps to it too):
  an ``add`` is never repeated to "make sure".
"""

from __future__ import annotations

import re
from typing import Any

from ..entities import ENTITIES, Entity
from .bitrix24_service import BadInput, Bitrix24Error, PortalAuthFailed, bx_call
from .field_labels import invalidate_client
from .numbers import is_digits

# The entities that have crm.{entity}.userfield.* methods.
USERFIELD_ENTITIES = ("contacts", "deals", "leads", "companies")
MAX_NAME = 50
PREFIX = "UF_CRM_"
KNOWN_TYPES = ("string", "integer", "double", "boolean", "datetime", "date", "money", "url", "address",
               "enumeration", "file", "employee", "crm_status", "iblock_section", "iblock_element", "crm")
LABELS = ("LABEL", "EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE", "HELP_MESSAGE")
FLAGS = ("MULTIPLE", "MANDATORY", "SHOW_FILTER", "SHOW_IN_LIST", "EDIT_IN_LIST", "IS_SEARCHABLE")
IMMUTABLE = ("FIELD_NAME", "USER_TYPE_ID", "MULTIPLE", "ENTITY_ID", "ID")
ADD_KEYS = frozenset(("FIELD_NAME", "USER_TYPE_ID", "XML_ID", "SORT", "SETTINGS", "LIST", *LABELS, *FLAGS))
UPDATE_KEYS = ADD_KEYS - set(IMMUTABLE)
LIST_ITEM_KEYS = frozenset(("ID", "VALUE", "SORT", "DEF", "XML_ID", "DEL"))
_NAME_CHARS = re.compile(r"[A-Z0-9_]+")


class UserFieldInvalid(ValueError):
    """What the caller sent cannot be a user field: ``code``, the text, and the offending ``field``."""

    def __init__(self, code: str, description: str, field: str) -> None:
        super().__init__(description)
        self.code, self.description, self.field = code, description, field


class UserFieldExists(Exception):
    def __init__(self, name: str, field_id: Any, entity: Entity) -> None:
        super().__init__(f"{entity.label} user field {name} already exists (id {field_id})")
        self.name, self.id, self.entity = name, field_id, entity


class UserFieldNotFound(Exception):
    def __init__(self, field_id: int, entity: Entity) -> None:
        super().__init__(f"the {entity.label}s have no user field {field_id}")
        self.id, self.entity = field_id, entity


def userfield_entity(name: str) -> Entity | None:
    return ENTITIES.get(name) if name in USERFIELD_ENTITIES else None


def normalize_name(raw: str) -> str:
    """``nps``, ``UF_NPS`` and ``UF_CRM_NPS`` -> ``UF_CRM_NPS``, as the portal stores it."""
    name = "".join(c.upper() if "a" <= c <= "z" else c for c in raw.strip())
    if name.startswith(PREFIX):
        return name
    return PREFIX + (name[3:] if name.startswith("UF_") else name)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and is_digits(value.strip()):
        return int(value)
    return None


def _check_label(key: str, value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, dict) and all(isinstance(k, str) and re.fullmatch(r"[a-z]{2}", k) and isinstance(v, str)
                                       for k, v in value.items()):
        return
    raise UserFieldInvalid("INVALID_LABEL", f'{key} must be a string or an object of texts by language, like '
                           f'{{"en": "NPS", "de": "NPS"}}', f"fields.{key}")


# SHOW_FILTER also takes the filter's kind: I (exact), E (mask) or S (substring); Y is stored as E
# (https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-fields.html).
_FILTER_KINDS = ("I", "E", "S")


def _check_flag(key: str, value: Any) -> None:
    if value in (True, False, "Y", "N") or (key == "SHOW_FILTER" and value in _FILTER_KINDS):
        return
    kinds = ', or "I", "E", "S" (the filter\'s kind)' if key == "SHOW_FILTER" else ""
    raise UserFieldInvalid("INVALID_FLAG", f'{key} must be true, false, "Y" or "N"{kinds}', f"fields.{key}")


def _check_list(value: Any, *, creating: bool) -> None:
    if not isinstance(value, list):
        raise UserFieldInvalid("INVALID_LIST", 'LIST must be an array of items like {"VALUE": "Red", "SORT": 10}',
                               "fields.LIST")
    for index, item in enumerate(value):
        where = f"fields.LIST[{index}]"
        if not isinstance(item, dict):
            raise UserFieldInvalid("INVALID_LIST", f'{where} must be an object like {{"VALUE": "Red"}}', where)
        unknown = sorted(set(item) - LIST_ITEM_KEYS)
        if unknown:
            raise UserFieldInvalid("INVALID_LIST", f"{where} has unknown keys {unknown}: use "
                                   f"{', '.join(sorted(LIST_ITEM_KEYS))}", where)
        if creating and ("ID" in item or "DEL" in item):
            raise UserFieldInvalid("INVALID_LIST", f"{where}: ID and DEL edit the items of an existing field; a new "
                                   "field's items have none", where)
        has_id = _as_int(item.get("ID")) is not None
        if "ID" in item and not has_id:
            raise UserFieldInvalid("INVALID_LIST", f"{where}.ID must be an item id", f"{where}.ID")
        if not has_id and not (isinstance(item.get("VALUE"), str) and item["VALUE"].strip()):
            raise UserFieldInvalid("INVALID_LIST", f"{where} needs a VALUE (the text shown)", f"{where}.VALUE")
        if "VALUE" in item and not isinstance(item["VALUE"], str):
            raise UserFieldInvalid("INVALID_LIST", f"{where}.VALUE must be a string", f"{where}.VALUE")
        if "SORT" in item and _as_int(item["SORT"]) is None:
            raise UserFieldInvalid("INVALID_LIST", f"{where}.SORT must be a whole number", f"{where}.SORT")
        for key in ("DEF", "DEL"):
            if key in item:
                _check_flag(f"LIST[{index}].{key}", item[key])


def _check_common(fields: dict[str, Any], allowed: frozenset[str], *, creating: bool) -> None:
    unknown = sorted(k for k in fields if k not in allowed)
    if unknown:
        if not creating and any(k in IMMUTABLE for k in unknown):
            fixed = [k for k in unknown if k in IMMUTABLE]
            raise UserFieldInvalid("USERFIELD_IMMUTABLE",
                                   f"{', '.join(fixed)} cannot change once the field exists (the portal ignores "
                                   "them): delete the field and create it again", f"fields.{fixed[0]}")
        raise UserFieldInvalid("INVALID_FIELDS", f"unknown user-field keys {unknown}: use {', '.join(sorted(allowed))}",
                               f"fields.{unknown[0]}")
    for key in LABELS:
        if key in fields:
            _check_label(key, fields[key])
    for key in FLAGS:
        if key in fields:
            _check_flag(key, fields[key])
    if "SORT" in fields and _as_int(fields["SORT"]) is None:
        raise UserFieldInvalid("INVALID_FIELDS", "SORT must be a whole number", "fields.SORT")
    if "SETTINGS" in fields and not isinstance(fields["SETTINGS"], dict):
        raise UserFieldInvalid("INVALID_SETTINGS", 'SETTINGS must be an object, like {"DEFAULT_VALUE": 0}',
                               "fields.SETTINGS")
    if "XML_ID" in fields and not isinstance(fields["XML_ID"], (str, type(None))):
        raise UserFieldInvalid("INVALID_FIELDS", "XML_ID must be a string", "fields.XML_ID")
    if "LIST" in fields:
        _check_list(fields["LIST"], creating=creating)


def check_new_field(fields: dict[str, Any], portal_types: Any = None) -> dict[str, Any]:
    """The ``fields`` of a new user field, checked; answers them with ``FIELD_NAME`` normalised.
    ``portal_types`` (a callable) lists the portal's own types, asked only for a type we do not know."""
    _check_common(fields, ADD_KEYS, creating=True)
    raw_name, type_id = fields.get("FIELD_NAME"), fields.get("USER_TYPE_ID")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise UserFieldInvalid("INVALID_FIELD_NAME", 'FIELD_NAME is required: the code, like "NPS" (stored as '
                               "UF_CRM_NPS)", "fields.FIELD_NAME")
    name = normalize_name(raw_name)
    if not _NAME_CHARS.fullmatch(name):
        raise UserFieldInvalid("INVALID_FIELD_NAME", f"FIELD_NAME {raw_name!r} may hold only A-Z, 0-9 and _",
                               "fields.FIELD_NAME")
    if len(name) > MAX_NAME:
        raise UserFieldInvalid("INVALID_FIELD_NAME", f"FIELD_NAME {name} is {len(name)} characters long: at most "
                               f"{MAX_NAME} with the {PREFIX} prefix ({MAX_NAME - len(PREFIX)} for the code)",
                               "fields.FIELD_NAME")
    if name == PREFIX:
        raise UserFieldInvalid("INVALID_FIELD_NAME", "FIELD_NAME needs a code after UF_CRM_", "fields.FIELD_NAME")
    if not isinstance(type_id, str) or not type_id:
        raise UserFieldInvalid("INVALID_USER_TYPE", f"USER_TYPE_ID is required: one of {', '.join(KNOWN_TYPES)}",
                               "fields.USER_TYPE_ID")
    if type_id not in KNOWN_TYPES and (portal_types is None or type_id not in portal_types()):
        raise UserFieldInvalid("INVALID_USER_TYPE", f"USER_TYPE_ID {type_id!r} is not a type of this portal: use one "
                               f"of {', '.join(KNOWN_TYPES)} (or an app's type from GET .../userfield-types)",
                               "fields.USER_TYPE_ID")
    if type_id == "enumeration" and not fields.get("LIST"):
        raise UserFieldInvalid("INVALID_LIST", 'an enumeration needs LIST, its items: [{"VALUE": "Red"}, ...]',
                               "fields.LIST")
    if type_id != "enumeration" and "LIST" in fields:
        raise UserFieldInvalid("INVALID_LIST", "LIST is for enumeration fields only", "fields.LIST")
    if type_id == "boolean" and fields.get("MULTIPLE") in (True, "Y"):
        raise UserFieldInvalid("INVALID_FLAG", "a boolean field cannot be MULTIPLE", "fields.MULTIPLE")
    return {**fields, "FIELD_NAME": name}


def check_changes(fields: dict[str, Any]) -> dict[str, Any]:
    """The ``fields`` of an update, checked."""
    _check_common(fields, frozenset(UPDATE_KEYS), creating=False)
    return fields


# ----------------------------------------------------------------------------------------------
# Calls


def _method(ent: Entity, action: str) -> str:
    return f"{ent.prefix}.userfield.{action}"


def portal_type_ids(client_id: int | None) -> set[str]:
    result = bx_call("crm.userfield.types", client_id=client_id).get("result")
    # a row without a string ID (a list, an object: an odd portal) names no type we could send
    rows = result if isinstance(result, list) else []
    return {t["ID"] for t in rows if isinstance(t, dict) and isinstance(t.get("ID"), str)}


def list_fields(ent: Entity, client_id: int | None, *, lang: str | None = None,
                name: str | None = None) -> dict[str, Any]:
    """Every user field of the entity (the method does not page), labels as strings in ``lang``."""
    filters: dict[str, Any] = {}
    if lang:
        filters["LANG"] = lang
    if name:
        filters["FIELD_NAME"] = name
    envelope = bx_call(_method(ent, "list"), {"filter": filters} if filters else None, client_id=client_id)
    rows = envelope.get("result")
    rows = rows if isinstance(rows, list) else []
    return {"result": rows, "total": envelope.get("total", len(rows))}


def find_by_name(ent: Entity, name: str, client_id: int | None) -> dict[str, Any] | None:
    for row in list_fields(ent, client_id, name=name)["result"]:
        if isinstance(row, dict) and str(row.get("FIELD_NAME", "")).upper() == name:
            return row
    return None


def _exists(ent: Entity, field_id: int, client_id: int | None) -> bool:
    envelope = bx_call(_method(ent, "list"), {"filter": {"ID": field_id}}, client_id=client_id)
    rows = envelope.get("result")
    return isinstance(rows, list) and any(isinstance(r, dict) and str(r.get("ID")) == str(field_id) for r in rows)


def _by_id(ent: Entity, action: str, params: dict[str, Any], field_id: int, client_id: int | None) -> Any:
    """A call on one field: an unknown id (``ERROR_NOT_FOUND``) or another entity's field (the
    portal's ``""`` "Access denied.", which also means missing rights: told apart by listing this
    entity's fields) is ``UserFieldNotFound``."""
    try:
        return bx_call(_method(ent, action), params, client_id=client_id)["result"]
    except BadInput as exc:
        if (exc.code or "").upper() == "ERROR_NOT_FOUND":
            raise UserFieldNotFound(field_id, ent) from None
        raise
    except PortalAuthFailed as exc:
        if exc.http_status == 400 and (exc.description or "").lower().startswith("access denied") \
                and not _exists(ent, field_id, client_id):
            raise UserFieldNotFound(field_id, ent) from None
        raise


def get_field(ent: Entity, field_id: int, client_id: int | None) -> Any:
    return _by_id(ent, "get", {"id": field_id}, field_id, client_id)


def create_field(ent: Entity, fields: dict[str, Any], client_id: int | None) -> int:
    """Check, look for the name, then add: the new field's id, or ``UserFieldExists``."""
    fields = check_new_field(fields, lambda: portal_type_ids(client_id))
    name = fields["FIELD_NAME"]
    existing = find_by_name(ent, name, client_id)
    if existing is not None:
        raise UserFieldExists(name, _as_int(existing.get("ID")) or existing.get("ID"), ent)
    try:
        result = bx_call(_method(ent, "add"), {"fields": fields}, client_id=client_id)["result"]
    except BadInput as exc:
        if (exc.code or "").upper() == "ERROR_CORE" and "already exists" in (exc.description or "").lower() \
                and "XML_ID" not in (exc.description or ""):
            found = find_by_name(ent, name, client_id)
            raise UserFieldExists(name, _as_int(found.get("ID")) if found else None, ent) from None
        raise
    finally:
        invalidate_client(client_id)
    return _as_int(result) if _as_int(result) is not None else result


def update_field(ent: Entity, field_id: int, fields: dict[str, Any], client_id: int | None) -> Any:
    fields = check_changes(fields)
    try:
        return _by_id(ent, "update", {"id": field_id, "fields": fields}, field_id, client_id)
    finally:
        invalidate_client(client_id)


def delete_field(ent: Entity, field_id: int, client_id: int | None) -> Any:
    try:
        return _by_id(ent, "delete", {"id": field_id}, field_id, client_id)
    finally:
        invalidate_client(client_id)


def field_types(client_id: int | None) -> Any:
    return bx_call("crm.userfield.types", client_id=client_id)["result"]


__all__ = ["Bitrix24Error", "UserFieldExists", "UserFieldInvalid", "UserFieldNotFound", "create_field",
           "delete_field", "field_types", "get_field", "list_fields", "update_field", "userfield_entity"]
