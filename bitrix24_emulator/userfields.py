"""CRM user fields: ``crm.{lead,deal,contact,company}.userfield.*`` and ``crm.userfield.*``.

A field created here becomes real on its entity: ``crm.{entity}.fields`` describes it and
``add``/``update``/``get``/``list`` store and return its values, typed per ``USER_TYPE_ID``.

Sources:
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-add.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-get.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-list.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-update.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/crm-deal-userfield-delete.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/events/on-crm-deal-user-field-add.html
(and the same pages for leads, contacts and companies),
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-types.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-enumeration-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/user-defined-fields/crm-userfield-settings-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/companies/crm-company-fields.html (how crm.*.fields shows a UF),
https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-list.html (null / false values of empty UFs),
and the portal's source (modules/rest/lib/userfieldproxy.php, main's CUserTypeEntity and CUserFieldEnum).

Facts followed: ``X``, ``UF_X`` and ``UF_CRM_X`` all become ``UF_CRM_X`` (upper-cased); at most 50
characters and ``A-Z0-9_`` only (``ERROR_CORE``); missing ``USER_TYPE_ID``/``FIELD_NAME`` are ``""``
errors joined by a newline; an unknown type is ``ERROR_CORE`` "Incorrect custom type specified.";
labels are maps over every portal language (a string label fills every language, a missing one takes
``LABEL``, else the field name); ``SHOW_FILTER`` Y is stored as E (I for ``employee``); ``boolean``
is never multiple; ``SORT`` defaults to 100; ``get``/``list`` answer string values; ``list`` has no
paging (``total`` = the count), leaves the labels out unless ``filter[LANG]`` turns them into strings
of that language; ``update`` ignores ``FIELD_NAME``/``USER_TYPE_ID``/``MULTIPLE``, merges ``SETTINGS``
key by key and edits ``LIST`` items (with ``ID``: change, ``DEL: Y`` or an empty ``VALUE``: delete;
without: add; items left out stay); unknown ids are ``ERROR_NOT_FOUND``, another entity's field is
``""`` "Access denied."; a new enumeration item without ``XML_ID`` gets an md5 one and a repeated
``XML_ID`` is ``ERROR_CORE``.

Choices where the sources are silent or disagree (say so when relying on them):

- the portal's languages are ``LANGUAGES`` (en, de, ru) and its own language ``PORTAL_LANGUAGE`` (en);
- creating a ``FIELD_NAME`` that exists is ``ERROR_CORE`` "The field UF_CRM_X for entity CRM_DEAL
  already exists." (main's USER_TYPE_ADD_ALREADY_ERROR). The server appends ``<br>`` to these
  CUserTypeEntity messages; the docs show them without, and so does this emulator;
- a new enumeration item without ``SORT`` gets 500 (the table default; the docs say 0);
- ``crm.{entity}.userfield.fields`` is not in the docs: it answers as ``crm.userfield.fields``;
- ONCRM*USERFIELDSETENUMVALUES is not raised;
- values: ``integer``/``employee``/enumeration ids are strings of ints, ``double`` a PHP float string
  rounded to PRECISION, ``boolean`` "1"/"0" (the docs' lead list shows true/false for one field; the
  source passes the database's "1"/"0" through), ``money`` "100|USD" (the portal currency is appended
  when none is given), ``date``/``datetime`` as the legacy date fields, an enumeration value must be
  one of the field's item ids (others are dropped), a multiple field takes an array and answers one,
  or ``false`` when empty; an unset single field is ``null``. ``file`` values are not modelled (left
  alone, as for the entities' own file fields);
- on add, a left-out field takes its DEFAULT_VALUE (a boolean always "0"/"1") or its DEF=Y items;
  a MANDATORY field still missing or emptied is refused with ``""`` "The required field <label> is
  missing." (main's USER_TYPE_FIELD_VALUE_IS_MISSING, the label in the portal language).
"""

from __future__ import annotations

import copy
import hashlib
import re
import sys

from .errors import ApiError, crm_error
from .fields import STRING_SETTINGS, Field, user_field
from .phpform import array_items, array_values, is_array, php_float, php_int, php_string
from .query import build_filter, split_operator

LANGUAGES = ("en", "de", "ru")
PORTAL_LANGUAGE = "en"
ENTITY_IDS = {"lead": "CRM_LEAD", "deal": "CRM_DEAL", "contact": "CRM_CONTACT", "company": "CRM_COMPANY"}
ACTIONS = ("add", "get", "list", "update", "delete", "fields")
METHODS = frozenset([f"crm.{e}.userfield.{a}" for e in ENTITY_IDS for a in ACTIONS] + [
    "crm.userfield.types", "crm.userfield.fields", "crm.userfield.enumeration.fields",
    "crm.userfield.settings.fields"])
MAX_NAME = 50
LABELS = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE", "HELP_MESSAGE")
# crm.userfield.types, in the order a portal lists them.
TYPES = (("string", "String"), ("integer", "Integer"), ("double", "Number"), ("boolean", "Yes/No"),
         ("enumeration", "List"), ("datetime", "Date/Time"), ("date", "Date"), ("money", "Money"),
         ("url", "Link"), ("address", "Google Maps Address"), ("file", "File"), ("employee", "Binding to User"),
         ("crm_status", "Binding to CRM Directories"),
         ("iblock_section", "Binding to Information Block Sections"),
         ("iblock_element", "Binding to Information Block Elements"), ("crm", "Binding to CRM Entities"))
TYPE_IDS = {t for t, _ in TYPES}
_NAME_CHARS = re.compile(r"^[0-9A-Z_]+$")


def _desc(type_, title, **flags) -> dict:
    return {"type": type_, "title": title, **flags}


FIELDS_DESCRIPTION = {
    "ID": _desc("int", "ID", isReadOnly=True),
    "ENTITY_ID": _desc("string", "Object", isImmutable=True),
    "FIELD_NAME": _desc("string", "Code", isImmutable=True),
    "USER_TYPE_ID": _desc("string", "Data Type", isImmutable=True),
    "XML_ID": _desc("string", "External ID (XML ID)"),
    "SORT": _desc("int", "Sorting"),
    "MULTIPLE": _desc("char", "Multiple"),
    "MANDATORY": _desc("char", "Mandatory"),
    "SHOW_FILTER": _desc("char", "Show in list filter"),
    "SHOW_IN_LIST": _desc("char", "Show in list"),
    "EDIT_IN_LIST": _desc("char", "Allow user editing"),
    "IS_SEARCHABLE": _desc("char", "Field values are searchable"),
    "EDIT_FORM_LABEL": _desc("string", "Label in edit form"),
    "LIST_COLUMN_LABEL": _desc("string", "Header in list"),
    "LIST_FILTER_LABEL": _desc("string", "Filter label in list"),
    "ERROR_MESSAGE": _desc("string", "Error message"),
    "HELP_MESSAGE": _desc("string", "Help"),
    "LIST": _desc("uf_enum_element", "List elements", isMultiple=True),
    "SETTINGS": _desc("object", "Additional settings (dependent on type)"),
}
ENUM_FIELDS_DESCRIPTION = {
    "ID": _desc("int", "ID", isReadOnly=True),
    "SORT": _desc("int", "Sorting"),
    "VALUE": _desc("string", "Value"),
    "DEF": _desc("string", "Default Value"),
    "DEL": _desc("string", "Element Deletion Flag"),
}
SETTINGS_DESCRIPTION = {
    "string": {"DEFAULT_VALUE": _desc("string", "Default value"), "ROWS": _desc("int", "Number of rows")},
    "integer": {"DEFAULT_VALUE": _desc("int", "Default value")},
    "double": {"DEFAULT_VALUE": _desc("double", "Default value"), "PRECISION": _desc("int", "Precision")},
    "boolean": {"DEFAULT_VALUE": _desc("int", "Default value"), "DISPLAY": _desc("string", "Appearance")},
    "datetime": {"DEFAULT_VALUE": _desc("datetime", "Default value")},
    "enumeration": {"DISPLAY": _desc("string", "Appearance"), "LIST_HEIGHT": _desc("int", "List height")},
    "iblock_section": {"DEFAULT_VALUE": _desc("int", "Default value"), "IBLOCK_ID": _desc("int", "Information block"),
                       "IBLOCK_TYPE_ID": _desc("string", "Information block type"),
                       "DISPLAY": _desc("string", "Appearance"), "LIST_HEIGHT": _desc("int", "List height"),
                       "ACTIVE_FILTER": _desc("char", "Active items only")},
    "crm_status": {"ENTITY_TYPE": _desc("string", "Directory type")},
    "crm": {"LEAD": _desc("char", "Lead"), "CONTACT": _desc("char", "Contact"), "COMPANY": _desc("char", "Company"),
            "DEAL": _desc("char", "Deal")},
}
SETTINGS_DESCRIPTION["iblock_element"] = SETTINGS_DESCRIPTION["iblock_section"]


# ---- errors -------------------------------------------------------------------------------------

def core_error(text: str) -> ApiError:
    return ApiError("ERROR_CORE", text, 400)


def not_found(field_id: int) -> ApiError:
    return ApiError("ERROR_NOT_FOUND", f"The entity with ID '{field_id}' is not found.", 400)


def _param(params: dict, name: str):
    """CCrmRestHelper-style lookup: name, NAME, Name."""
    for key in (name, name.upper(), name.capitalize()):
        if params.get(key) is not None:
            return params[key]
    return None


def _text(value) -> str:
    return "" if is_array(value) else (php_string(value) or "")


def _upper_ascii(text: str) -> str:
    """PHP 8 ``strtoupper``: ASCII letters only."""
    return "".join(c.upper() if "a" <= c <= "z" else c for c in text)


def normalize_name(raw: str) -> str:
    name = _upper_ascii(raw)
    if name.startswith("UF_CRM_"):
        return name
    return "UF_CRM_" + (name[3:] if name.startswith("UF_") else name)


def _php_number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


# ---- settings -----------------------------------------------------------------------------------

def _yes(value) -> bool:
    return _upper_ascii(_text(value)) == "Y"


def _date_default(given) -> dict:
    default = given if is_array(given) else {"VALUE": given if given is not None else "", "TYPE": "NONE"}
    default = dict(array_items(default))
    kind = _text(default.get("TYPE"))
    return {"TYPE": _upper_ascii(kind) if kind else "NONE", "VALUE": _text(default.get("VALUE"))}


def initial_settings(type_id: str, given) -> object:
    """SETTINGS as stored by add: the proxy's effective settings over the type handler's defaults."""
    given = dict(array_items(given)) if is_array(given) else {}
    if type_id == "string":
        rows = php_int(given.get("ROWS"))
        return {**STRING_SETTINGS, "ROWS": rows if rows > 0 else 1, "DEFAULT_VALUE": _text(given.get("DEFAULT_VALUE"))}
    if type_id == "integer":
        default = given.get("DEFAULT_VALUE")
        return {"SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0,
                "DEFAULT_VALUE": None if _text(default) == "" else php_int(default)}
    if type_id == "double":
        precision = php_int(given["PRECISION"]) if "PRECISION" in given else 2
        default = given.get("DEFAULT_VALUE")
        return {"PRECISION": precision if precision >= 0 else 2, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0,
                "DEFAULT_VALUE": None if _text(default) == "" else php_float(default)}
    if type_id == "boolean":
        display = _text(given.get("DISPLAY"))
        return {"DEFAULT_VALUE": 1 if php_float(given.get("DEFAULT_VALUE")) > 0 else 0,
                "DISPLAY": _upper_ascii(display) if display else "CHECKBOX", "LABEL": ["", ""], "LABEL_CHECKBOX": ""}
    if type_id == "date":
        return {"DEFAULT_VALUE": _date_default(given.get("DEFAULT_VALUE"))}
    if type_id == "datetime":
        return {"DEFAULT_VALUE": _date_default(given.get("DEFAULT_VALUE")), "USE_SECOND": "Y", "USE_TIMEZONE": "N"}
    if type_id == "enumeration":
        display, height = _text(given.get("DISPLAY")), php_int(given.get("LIST_HEIGHT"))
        return {"DISPLAY": _upper_ascii(display) if display else "LIST", "LIST_HEIGHT": height if height > 0 else 1,
                "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"}
    if type_id == "money":
        return {"DEFAULT_VALUE": _text(given.get("DEFAULT_VALUE"))}
    if type_id == "url":
        return {"POPUP": "Y", "SIZE": 20, "MIN_LENGTH": 0, "MAX_LENGTH": 0,
                "DEFAULT_VALUE": _text(given.get("DEFAULT_VALUE")), "ROWS": 1}
    if type_id == "file":
        return {"SIZE": 20, "LIST_WIDTH": 0, "LIST_HEIGHT": 0, "MAX_SHOW_SIZE": 0, "MAX_ALLOWED_SIZE": 0,
                "EXTENSIONS": [], "TARGET_BLANK": "Y"}
    if type_id == "address":
        return {"SHOW_MAP": "Y"}
    if type_id in ("iblock_section", "iblock_element"):
        display, height = _text(given.get("DISPLAY")), php_int(given.get("LIST_HEIGHT"))
        return {"IBLOCK_TYPE_ID": _text(given.get("IBLOCK_TYPE_ID")), "IBLOCK_ID": php_int(given.get("IBLOCK_ID")),
                "DEFAULT_VALUE": _text(given.get("DEFAULT_VALUE")),
                "DISPLAY": _upper_ascii(display) if display else "LIST", "LIST_HEIGHT": height if height > 0 else 1,
                "ACTIVE_FILTER": "Y" if _yes(given.get("ACTIVE_FILTER")) else "N"}
    if type_id == "crm_status":
        return {"ENTITY_TYPE": _text(given.get("ENTITY_TYPE"))}
    if type_id == "crm":
        chosen = [k for k in ("LEAD", "CONTACT", "COMPANY", "DEAL") if _yes(given.get(k))] or ["LEAD"]
        # A portal keeps the bindings that are on, and LEAD (null when off), as its answers show.
        return {**{k: "Y" for k in chosen}, "LEAD": "Y" if "LEAD" in chosen else None}
    return []  # employee and others: an empty PHP array


def updated_settings(type_id: str, stored, given) -> object:
    """update: only the given keys change, with the proxy's normalisation."""
    settings = copy.deepcopy(stored) if isinstance(stored, dict) else {}
    given = dict(array_items(given)) if is_array(given) else {}
    simple = {"string": ("DEFAULT_VALUE",), "integer": ("DEFAULT_VALUE",), "double": ("DEFAULT_VALUE",),
              "crm_status": ("ENTITY_TYPE",), "money": ("DEFAULT_VALUE",), "url": ("DEFAULT_VALUE",)}
    for key in simple.get(type_id, ()):
        if key in given:
            settings[key] = given[key]
    if type_id == "string" and "ROWS" in given:
        settings["ROWS"] = php_int(given["ROWS"]) if php_int(given["ROWS"]) > 0 else 1
    if type_id == "double" and "PRECISION" in given:
        settings["PRECISION"] = php_int(given["PRECISION"]) if php_int(given["PRECISION"]) >= 0 else 2
    if type_id == "boolean":
        if "DEFAULT_VALUE" in given:
            settings["DEFAULT_VALUE"] = 1 if php_float(given["DEFAULT_VALUE"]) > 0 else 0
        if "DISPLAY" in given:
            settings["DISPLAY"] = _upper_ascii(_text(given["DISPLAY"])) or "CHECKBOX"
    if type_id in ("date", "datetime") and "DEFAULT_VALUE" in given:
        settings["DEFAULT_VALUE"] = _date_default(given["DEFAULT_VALUE"])
    if type_id in ("enumeration", "iblock_section", "iblock_element"):
        if "DISPLAY" in given:
            settings["DISPLAY"] = _upper_ascii(_text(given["DISPLAY"])) or "LIST"
        if "LIST_HEIGHT" in given:
            settings["LIST_HEIGHT"] = php_int(given["LIST_HEIGHT"]) if php_int(given["LIST_HEIGHT"]) > 0 else 1
    if type_id in ("iblock_section", "iblock_element"):
        for key in ("IBLOCK_TYPE_ID", "DEFAULT_VALUE"):
            if key in given:
                settings[key] = given[key]
        if "IBLOCK_ID" in given:
            settings["IBLOCK_ID"] = max(php_int(given["IBLOCK_ID"]), 0)
        if "ACTIVE_FILTER" in given:
            settings["ACTIVE_FILTER"] = "Y" if _yes(given["ACTIVE_FILTER"]) else "N"
    if type_id == "crm":
        for key in ("LEAD", "CONTACT", "COMPANY", "DEAL"):
            if key in given:
                settings[key] = "Y" if _yes(given[key]) else "N"
    return settings if settings or type_id not in ("employee",) else []


# ---- values on records (used by crm.py) ---------------------------------------------------------

def _one_value(field: Field, value, clock, currency: str):
    """One incoming value in its stored form, or None for 'no value'."""
    if is_array(value):
        return None
    text = (php_string(value) or "").strip() if not isinstance(value, bool) else ("1" if value else "")
    kind = field.type
    if kind == "boolean":
        if isinstance(value, bool):
            return "1" if value else "0"
        return "1" if _upper_ascii(text) in ("Y", "TRUE") or php_float(text) > 0 else "0"
    if text == "":
        return None
    if kind in ("integer", "employee", "iblock_section", "iblock_element"):
        return str(php_int(text))
    if kind == "double":
        precision = (field.settings or {}).get("PRECISION", 2) if isinstance(field.settings, dict) else 2
        return _php_number(round(php_float(text.replace(",", ".")), int(precision)))
    if kind == "enumeration":
        ids = {item_id for item_id, _ in field.items or ()}
        return str(php_int(text)) if str(php_int(text)) in ids else None
    if kind == "money":
        amount, _, code = text.partition("|")
        return f"{_php_number(php_float(amount.replace(' ', '').replace(',', '.')))}|{code.strip() or currency}"
    if kind == "date":
        return clock.date_value(text)
    if kind == "datetime":
        return clock.datetime_value(text)
    return text


def internal_value(field: Field, value, clock, currency: str):
    """A user field's incoming value as stored: a string, None, or a list for a multiple field."""
    if field.multiple:
        values = array_values(value) if is_array(value) else [value]
        converted = [_one_value(field, v, clock, currency) for v in values]
        return [v for v in converted if v is not None]
    if is_array(value):
        values = array_values(value)
        value = values[0] if values else None
    return _one_value(field, value, clock, currency)


def output_value(field: Field, stored):
    """What get/list answer: an empty multiple field is ``false``, an unset single one ``null``."""
    if field.multiple:
        return copy.deepcopy(stored) if stored else False
    return stored


def _empty(field: Field, value) -> bool:
    return value in (None, "", []) if not field.multiple else not value


def prepare_write(defs: dict[str, Field], scalars: dict, creating: bool) -> None:
    """Defaults of left-out user fields on add, then the MANDATORY check (add: every required field;
    update: those being written)."""
    for name, field in defs.items():
        if not field.dynamic:
            continue
        if creating and name not in scalars and field.default is not None:
            scalars[name] = copy.deepcopy(field.default)
        if field.required and (creating or name in scalars) and _empty(field, scalars.get(name)):
            label = field.form_label or name
            raise crm_error(f"The required field {label} is missing.")


def build_record_filter(filter_param, defs: dict[str, Field], clock):
    """crm.*.list filter: conditions on multiple user fields match any of the stored values."""
    multi, rest = [], {}
    for key, wanted in array_items(filter_param):
        op, name = split_operator(key)
        field = defs.get(name)
        if field is not None and field.dynamic and field.multiple:
            multi.append((op, name, field, wanted))
        else:
            rest[key] = wanted
    base = build_filter(rest, defs, clock)
    if not multi:
        return base

    def predicate(record: dict) -> bool:
        for op, name, field, wanted in multi:
            single = Field(field.type, name, settings=field.settings)
            values = record.get(name) or []
            negate = op in ("!", "!=", "!@")
            positive = {"!": "=", "!=": "=", "!@": "@"}.get(op, op)
            hit = any(build_filter({positive + name: wanted}, {name: single}, clock)({name: v}) for v in values)
            if hit == negate:
                return False
        return base(record)

    return predicate


# ---- the per-portal definitions -----------------------------------------------------------------

class State:
    """User field definitions of one portal, keyed by id (ids count up from 1 across entities).

    The ``user_fields=`` option's fields (already in ``portal.store.fields``) are listed as ``string``
    fields; fields made here are added to and removed from ``portal.store`` as they come and go
    (``portal.reset()`` forgets both: CrmStore.reset restores its configured fields).
    """

    def __init__(self, portal):
        self.portal = portal
        self.defs: dict[int, dict] = {}
        self._next_id = 1
        self._next_item_id = 1
        for entity, entity_id in ENTITY_IDS.items():
            for name, field in portal.store.fields.get(entity, {}).items():
                if field.dynamic:
                    labels = {label: {lang: name for lang in LANGUAGES} for label in LABELS}
                    self._store(self._base(entity_id, name, field.type, field.multiple, field.settings, labels))

    def _base(self, entity_id, name, type_id, multiple, settings, labels) -> dict:
        return {"ID": str(self._next_id), "ENTITY_ID": entity_id, "FIELD_NAME": name, "USER_TYPE_ID": type_id,
                "XML_ID": None, "SORT": "100", "MULTIPLE": "Y" if multiple else "N", "MANDATORY": "N",
                "SHOW_FILTER": "N", "SHOW_IN_LIST": "Y", "EDIT_IN_LIST": "Y", "IS_SEARCHABLE": "N",
                "SETTINGS": copy.deepcopy(settings) if settings is not None else [], **labels}

    def _store(self, definition: dict) -> None:
        self.defs[int(definition["ID"])] = definition
        self._next_id = max(self._next_id, int(definition["ID"]) + 1)

    def field_of(self, definition: dict) -> Field:
        """The definition as the entity's Field (labels in the portal language)."""
        type_id = definition["USER_TYPE_ID"]
        items = None
        default = None
        multiple = definition["MULTIPLE"] == "Y"
        settings = definition["SETTINGS"]
        if type_id == "enumeration":
            items = tuple((i["ID"], i["VALUE"]) for i in definition.get("LIST", []))
            chosen = [i["ID"] for i in definition.get("LIST", []) if i["DEF"] == "Y"]
            default = (chosen or None) if multiple else (chosen[0] if chosen else None)
        elif type_id == "boolean":
            default = "1" if isinstance(settings, dict) and settings.get("DEFAULT_VALUE") else "0"
        elif type_id in ("string", "integer", "double", "url", "money") and isinstance(settings, dict):
            value = settings.get("DEFAULT_VALUE")
            if value not in (None, ""):
                converted = _one_value(Field(type_id, "", settings=settings), value, self.portal.clock, "")
                default = [converted] if multiple and converted is not None else converted
        lang = PORTAL_LANGUAGE
        return user_field(definition["FIELD_NAME"], type_id, required=definition["MANDATORY"] == "Y",
                          multiple=multiple, list_label=definition["LIST_COLUMN_LABEL"].get(lang),
                          form_label=definition["EDIT_FORM_LABEL"].get(lang),
                          filter_label=definition["LIST_FILTER_LABEL"].get(lang),
                          settings=copy.deepcopy(settings), items=items, default=default)

    def new_id(self) -> int:
        new_id = self._next_id
        self._next_id += 1
        return new_id

    def new_item_id(self) -> str:
        item_id = self._next_item_id
        self._next_item_id += 1
        return str(item_id)


# ---- labels and list items ----------------------------------------------------------------------

def labels_of(value, default: str) -> dict:
    """A label as stored: a string for every language, or a map whose missing languages take ``default``."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) != "":
        return {lang: str(value) for lang in LANGUAGES}
    given = dict(array_items(value)) if is_array(value) else {}
    return {lang: (given[lang] if isinstance(given.get(lang), str) and given[lang] != "" else default)
            for lang in LANGUAGES}


def apply_list(state: State, definition: dict, items_param, creating: bool) -> None:
    """LIST on add (every item new) or update (with ID: change, or delete with ``DEL: Y`` or an empty
    VALUE; without: add; items left out stay). For a single-value field only the first ``DEF: Y`` of
    the request counts and the request's other items become ``N``."""
    current = definition.setdefault("LIST", [])
    multiple = definition["MULTIPLE"] == "Y"
    planned = []  # [existing item or None, VALUE, SORT or None, DEF flag or None, XML_ID or None, delete]
    for _, raw in array_items(items_param):
        item = dict(array_items(raw)) if is_array(raw) else {}
        value = _text(item.get("VALUE")).strip(" \t\n\r")
        item_id = 0 if creating or not _text(item.get("ID")).strip().isdigit() else int(_text(item["ID"]).strip())
        existing = next((i for i in current if i["ID"] == str(item_id)), None) if item_id > 0 else None
        if (item_id > 0 and existing is None) or (existing is None and value == ""):
            continue  # another field's item, or an item without VALUE: ignored
        delete = existing is not None and (_upper_ascii(_text(item.get("DEL"))) == "Y" or value == "")
        sort = php_int(item["SORT"]) if _text(item.get("SORT")).strip().lstrip("-").isdigit() else 0
        flag = None if "DEF" not in item else ("Y" if _upper_ascii(_text(item["DEF"])) == "Y" else "N")
        planned.append([existing, value, sort if sort > 0 else None, flag, _text(item.get("XML_ID")) or None, delete])
    if not multiple:
        chosen = next((p for p in planned if p[3] == "Y" and not p[5]), None)
        for p in planned:
            p[3] = None if chosen is None else ("Y" if p is chosen else "N")
    taken = {i["XML_ID"] for i in current}
    for p in planned:
        existing, value, _, _, xml_id, delete = p
        if delete:
            continue
        if existing is None:
            p[4] = xml_id = xml_id or hashlib.md5(f"{definition['ID']}:{value}".encode()).hexdigest()
        if existing is None or (xml_id and xml_id != existing["XML_ID"]):
            if xml_id in taken:
                raise core_error(f"List item with value XML_ID={xml_id} already exists.")
            taken.add(xml_id)
    for existing, value, sort, flag, xml_id, delete in planned:
        if delete:
            current.remove(existing)
        elif existing is None:
            current.append({"ID": state.new_item_id(), "SORT": str(sort if sort is not None else 500),
                            "VALUE": value, "DEF": flag or "N", "XML_ID": xml_id})
        else:
            existing["VALUE"] = value
            if sort is not None:
                existing["SORT"] = str(sort)
            if flag is not None:
                existing["DEF"] = flag
            if xml_id:
                existing["XML_ID"] = xml_id
    current.sort(key=lambda i: (int(i["SORT"]), int(i["ID"])))


# ---- methods ------------------------------------------------------------------------------------

def _fields_param(params: dict) -> dict:
    fields = _param(params, "fields")
    if fields is None:
        fields = {}
    if not is_array(fields):
        raise crm_error("Parameter 'fields' must be array.")
    return {k: v for k, v in array_items(fields) if k in FIELDS_DESCRIPTION or k == "LABEL"}


def _require_id(params: dict) -> int:
    field_id = php_int(_param(params, "id")) if not is_array(_param(params, "id")) else 0
    if field_id <= 0:
        raise crm_error("ID is not defined or invalid.")
    return field_id


def _definition(state: State, entity: str, field_id: int) -> dict:
    definition = state.defs.get(field_id)
    if definition is None:
        raise not_found(field_id)
    if definition["ENTITY_ID"] != ENTITY_IDS[entity]:
        raise crm_error("Access denied.")
    return definition


def _emit(portal, context, entity: str, action: str, definition: dict) -> None:
    data = [("data[FIELDS][ID]", definition["ID"]), ("data[FIELDS][ENTITY_ID]", definition["ENTITY_ID"]),
            ("data[FIELDS][FIELD_NAME]", definition["FIELD_NAME"])]
    portal.emit(f"ONCRM{entity.upper()}USERFIELD{action}", data, context)


def add(state: State, entity: str, params: dict) -> int:
    fields = _fields_param(params)
    default_label = _text(fields.get("LABEL")).strip()
    type_id = _text(fields.get("USER_TYPE_ID")).strip()
    raw_name = _text(fields.get("FIELD_NAME")).strip()
    missing = []
    if type_id == "":
        missing.append("The 'USER_TYPE_ID' field is not found.")
    if raw_name == "":
        missing.append("The 'FIELD_NAME' field is not found.")
    if missing:
        raise crm_error("\n".join(missing))
    name = normalize_name(raw_name)
    problems = []
    if len(name) > MAX_NAME:
        problems.append(f"Field name is too long (more than {MAX_NAME} characters).")
    if not _NAME_CHARS.match(name):
        problems.append("Field name contains invalid characters. Allowed characters are: A-Z, 0-9 and _.")
    if type_id not in TYPE_IDS:
        problems.append("Incorrect custom type specified.")
    if problems:
        raise core_error("<br>".join(problems))
    entity_id = ENTITY_IDS[entity]
    if any(d["ENTITY_ID"] == entity_id and d["FIELD_NAME"] == name for d in state.defs.values()):
        raise core_error(f"The field {name} for entity {entity_id} already exists.")
    default = default_label or name
    labels = {label: labels_of(fields.get(label), default) for label in LABELS}
    multiple = _yes(fields.get("MULTIPLE")) and type_id != "boolean"
    definition = state._base(entity_id, name, type_id, multiple, initial_settings(type_id, fields.get("SETTINGS")),
                             labels)
    definition["ID"] = str(state.new_id())
    sort = php_int(fields.get("SORT")) if not is_array(fields.get("SORT")) else 0
    definition.update(
        XML_ID=_text(fields.get("XML_ID")) or None, SORT=str(sort if sort > 0 else 100),
        MANDATORY="Y" if _yes(fields.get("MANDATORY")) else "N",
        SHOW_FILTER=("I" if type_id == "employee" else "E") if _yes(fields.get("SHOW_FILTER")) else "N",
        SHOW_IN_LIST="N" if _text(fields.get("SHOW_IN_LIST")) == "N" else "Y",
        EDIT_IN_LIST="N" if _text(fields.get("EDIT_IN_LIST")) == "N" else "Y",
        IS_SEARCHABLE="Y" if _text(fields.get("IS_SEARCHABLE")) == "Y" else "N")
    if type_id == "enumeration":
        apply_list(state, definition, fields.get("LIST"), creating=True)
    state._store(definition)
    state.portal.store.add_user_field(entity, name, state.field_of(definition))
    return int(definition["ID"])


def update(state: State, entity: str, params: dict) -> bool:
    field_id = _require_id(params)
    fields = _fields_param(params)
    definition = _definition(state, entity, field_id)
    type_id = definition["USER_TYPE_ID"]
    changed = copy.deepcopy(definition)
    for label in LABELS:
        if fields.get(label) is not None:
            changed[label] = labels_of(fields[label], "")
    if "SHOW_FILTER" in fields:
        shown = _yes(fields["SHOW_FILTER"])
        changed["SHOW_FILTER"] = ("I" if type_id == "employee" else "E") if shown else "N"
    if "MANDATORY" in fields:
        changed["MANDATORY"] = "Y" if _text(fields["MANDATORY"]) == "Y" else "N"
    if "SHOW_IN_LIST" in fields:
        changed["SHOW_IN_LIST"] = "N" if _text(fields["SHOW_IN_LIST"]) == "N" else "Y"
    if "EDIT_IN_LIST" in fields:
        changed["EDIT_IN_LIST"] = "N" if _text(fields["EDIT_IN_LIST"]) == "N" else "Y"
    if "IS_SEARCHABLE" in fields:
        changed["IS_SEARCHABLE"] = "Y" if _text(fields["IS_SEARCHABLE"]) == "Y" else "N"
    if "SORT" in fields:
        changed["SORT"] = str(php_int(fields["SORT"]))
    if "XML_ID" in fields:
        changed["XML_ID"] = _text(fields["XML_ID"]) or None
    if "SETTINGS" in fields:
        changed["SETTINGS"] = updated_settings(type_id, definition["SETTINGS"], fields["SETTINGS"])
    if type_id == "enumeration" and fields.get("LIST") is not None:
        apply_list(state, changed, fields["LIST"] if is_array(fields["LIST"]) else [], creating=False)
    definition.clear()
    definition.update(changed)
    state.portal.store.add_user_field(entity, definition["FIELD_NAME"], state.field_of(definition))
    return True


def delete(state: State, entity: str, params: dict) -> bool:
    field_id = _require_id(params)
    definition = _definition(state, entity, field_id)
    del state.defs[field_id]
    state.portal.store.remove_user_field(entity, definition["FIELD_NAME"])
    return True


def _listed(definition: dict, lang: str | None, maps: bool = False) -> dict:
    """A definition as get (labels as maps), or list (no labels; with LANG: strings) answers it."""
    out = {k: copy.deepcopy(v) for k, v in definition.items() if k not in LABELS and k != "LIST"}
    for label in LABELS:
        if maps:
            out[label] = copy.deepcopy(definition[label])
        elif lang is not None:
            out[label] = definition[label].get(lang)
    if definition["USER_TYPE_ID"] == "enumeration":
        out["LIST"] = copy.deepcopy(definition.get("LIST", []))
    return out


def get(state: State, entity: str, params: dict) -> dict:
    return _listed(_definition(state, entity, _require_id(params)), None, maps=True)


_FILTERABLE = ("ID", "FIELD_NAME", "USER_TYPE_ID", "XML_ID", "SORT", "MULTIPLE", "MANDATORY", "SHOW_FILTER",
               "SHOW_IN_LIST", "EDIT_IN_LIST", "IS_SEARCHABLE")
_ORDERABLE = ("ID", "FIELD_NAME", "USER_TYPE_ID", "XML_ID", "SORT")


def list_(state: State, entity: str, params: dict):
    from .registry import Outcome

    order = _param(params, "order")
    if order is not None and not is_array(order):
        raise crm_error("Parameter 'order' must be array.")
    filters = _param(params, "filter")
    if filters is not None and not is_array(filters):
        raise crm_error("Parameter 'filter' must be array.")
    lang = None
    conditions = []
    for key, wanted in array_items(filters or {}):
        key = _upper_ascii(key)
        if key == "LANG":
            lang = _text(wanted) or None
            continue
        if key not in _FILTERABLE:
            continue
        values = [_text(v) for v in array_values(wanted)] if is_array(wanted) else [_text(wanted)]
        values = [v for v in values if v != ""]
        if values:
            conditions.append((key, {v.casefold() for v in values}))
    rows = [d for d in state.defs.values() if d["ENTITY_ID"] == ENTITY_IDS[entity]
            and all((_text(d[k]) or "").casefold() in allowed for k, allowed in conditions)]
    keys = [(k, _upper_ascii(_text(v)) != "ASC") for k, v in
            ((_upper_ascii(k), v) for k, v in array_items(order or {})) if k in _ORDERABLE]
    if not keys:
        keys = [("SORT", False), ("ID", False)]
    rows.sort(key=lambda d: int(d["ID"]))
    for key, descending in reversed(keys):
        numeric = key in ("ID", "SORT")
        rows.sort(key=lambda d, k=key, n=numeric: int(d[k]) if n else (d[k] or "").casefold(), reverse=descending)
    result = [_listed(d, lang) for d in rows]
    return Outcome(result, total=len(result))


def call(method: str, params: dict, portal, context=None):
    if method == "crm.userfield.types":
        return [{"ID": type_id, "title": title} for type_id, title in TYPES]
    if method == "crm.userfield.fields" or method.endswith(".userfield.fields"):
        return copy.deepcopy(FIELDS_DESCRIPTION)
    if method == "crm.userfield.enumeration.fields":
        return copy.deepcopy(ENUM_FIELDS_DESCRIPTION)
    if method == "crm.userfield.settings.fields":
        type_id = _text(_param(params, "type"))
        if type_id == "":
            raise crm_error("Parameter 'type' is not specified or empty.")
        return copy.deepcopy(SETTINGS_DESCRIPTION.get(type_id, []))
    _, entity, _, action = method.split(".")
    state = portal.state(sys.modules[__name__])
    if action == "add":
        new_id = add(state, entity, params)
        _emit(portal, context, entity, "ADD", state.defs[new_id])
        return new_id
    if action == "get":
        return get(state, entity, params)
    if action == "list":
        return list_(state, entity, params)
    if action == "update":
        result = update(state, entity, params)
        _emit(portal, context, entity, "UPDATE", state.defs[_require_id(params)])
        return result
    field_id = _require_id(params)
    definition = _definition(state, entity, field_id)
    delete(state, entity, params)
    _emit(portal, context, entity, "DELETE", definition)
    return True

