"""``crm.item.*`` for the system types 1 lead, 2 deal, 3 contact and 4 company, over the legacy records.

A portal keeps one record per deal whichever API wrote it: a deal added with ``crm.item.add`` is the deal
``crm.deal.get`` returns, and back. So this adapter stores nothing of its own: it reads and writes the
UPPER_CASE records of :class:`~bitrix24_emulator.crm.CrmStore` and shows them the ``crm.item`` way, with
camelCase names and real value types (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-get.html
shows a lead, https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-add.html a deal):
ids and user ids are ints (an unset ``companyId``/``contactId`` is ``0``), amounts floats, Y/N fields stay
``"Y"``/``"N"`` (type ``boolean`` in crm.item.fields), an unset date is ``null`` (legacy: ``""``).

Names: ``ASSIGNED_BY_ID`` -> ``assignedById``; ``DATE_CREATE``/``DATE_MODIFY``/``CREATED_BY_ID``/
``MODIFY_BY_ID`` -> ``createdTime``/``updatedTime``/``createdBy``/``updatedBy``; a lead's ``STATUS_ID`` and
``STATUS_SEMANTIC_ID`` are its ``stageId``/``stageSemanticId``; a company's ``COMPANY_TYPE`` is ``typeId``
(https://apidocs.bitrix24.com/api-reference/crm/universal/object-fields.html). ``ADDRESS`` is disabled in
crm.item and left out. User fields: ``UF_CRM_X`` -> ``ufCrm_X``. The multi-fields PHONE/EMAIL/WEB/IM/LINK of
leads, contacts and companies are ``fm`` entries ``{id, valueType, value, typeId}`` over the same legacy items
(same ids): an array adds; on update ``nX`` keys add, a numeric key changes that entry, an empty value deletes
it; an element without a valid ``typeId`` is ignored
(https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-update.html).

Fields crm.item has and the legacy record has not are kept on the same record under their upper names, unseen
by the legacy methods: ``observers`` (all four types) and ``movedBy``/``movedTime`` (deals and leads, set on
add and on a stage change). ``contactIds`` of deals and leads is the deal's/lead's contact links (links.py,
the links crm.deal.contact.items.get shows); a contact's ``companyIds`` its companies.

Choices where the docs are silent: a contact may be added with no name and a company with no title
(crm-item-add.md marks neither required; a company gets ``Company #id`` from the title template); the legacy
rules stay otherwise (an invalid e-mail is ``ERROR_CORE``), except that ``categoryId`` moves a deal to another
pipeline, which crm.deal.update cannot do (see ``_move_deal``).
"""

from __future__ import annotations

import copy

from . import fields as fieldsmod
from .errors import ApiError
from .fields import MULTI_FIELDS, Field
from .phpform import array_items, array_values, is_array, is_sequential, php_float, php_int, php_string

SYSTEM_TYPES = {1: "lead", 2: "deal", 3: "contact", 4: "company"}
TITLES = {"lead": "Lead", "deal": "Deal", "contact": "Contact", "company": "Company"}
EVENT_NAMES = {"lead": "LEAD", "deal": "DEAL", "contact": "CONTACT", "company": "COMPANY"}

_COMMON_RENAMES = {"DATE_CREATE": "createdTime", "DATE_MODIFY": "updatedTime", "CREATED_BY_ID": "createdBy",
                   "MODIFY_BY_ID": "updatedBy", "MOVED_BY_ID": "movedBy"}
_RENAMES = {"lead": {"STATUS_ID": "stageId", "STATUS_SEMANTIC_ID": "stageSemanticId"},
            "company": {"COMPANY_TYPE": "typeId"}}
_LEFT_OUT = {"ADDRESS"}  # "Field is disabled" in crm.item
_ZERO_WHEN_UNSET = {"companyId", "contactId"}
# Item-only fields, stored on the legacy record under these keys.
_EXTRAS = {
    "observers": ("OBSERVERS", Field("user", "Observers", multiple=True)),
    "movedBy": ("MOVED_BY", Field("user", "Moved by", read_only=True)),
    "movedTime": ("MOVED_TIME", Field("datetime", "Moved at", read_only=True)),
}
_EXTRAS_OF = {"lead": ("movedBy", "movedTime", "observers"), "deal": ("movedBy", "movedTime", "observers"),
              "contact": ("observers",), "company": ("observers",)}
_STAGE_KEY = {"lead": "STATUS_ID", "deal": "STAGE_ID"}
_LINKED = {"deal": "contactIds", "lead": "contactIds", "contact": "companyIds"}


def camel_name(upper: str) -> str:
    """``ASSIGNED_BY_ID`` -> ``assignedById``; ``UF_CRM_BUDGET`` -> ``ufCrm_BUDGET``."""
    if upper.startswith("UF_CRM_"):
        return "ufCrm_" + upper[len("UF_CRM_"):]
    head, *rest = upper.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def item_field(field: Field) -> Field:
    """The crm.item description of a legacy field: Y/N ``char`` fields are ``boolean`` there."""
    if field.type == "char":
        return Field("boolean", field.title, required=field.required, read_only=field.read_only,
                     immutable=field.immutable)
    return field


def multiple_error(value) -> ApiError:
    kind = {bool: "boolean", int: "integer", float: "double", str: "string"}.get(type(value), "NULL")
    return ApiError("100", f"Expected iterable value for multiple field, but got {kind} instead", 400)


def id_list(value) -> list[int]:
    """A multiple id field as sent: an array (a scalar is refused); positive ids, first occurrence kept."""
    if not is_array(value):
        raise multiple_error(value)
    out: list[int] = []
    for element in array_values(value):
        number = 0 if is_array(element) else php_int(element)
        if number > 0 and number not in out:
            out.append(number)
    return out


class SystemItems:
    """crm.item.* of one portal's leads, deals, contacts and companies (records in ``portal.store``)."""

    def __init__(self, portal):
        self.portal = portal
        self._maps: dict[tuple, dict[str, tuple[str, Field]]] = {}

    @property
    def store(self):
        return self.portal.store

    def _links(self):
        """The deal/lead contact links of links.py, when that family is there."""
        from . import links
        return self.portal.state(links) if hasattr(links, "State") else None

    # ---- names ------------------------------------------------------------------------------------

    def mapping(self, entity: str) -> dict[str, tuple[str, Field]]:
        """{camelName: (record key, crm.item Field)} in the order crm.item.get shows them."""
        # Keyed by the legacy field set: a user field added later (crm.deal.userfield.add) shows up at once.
        cache_key = (entity, tuple((k, id(f)) for k, f in self.store.fields[entity].items()),
                     self._links() is not None)
        found = self._maps.get(cache_key)
        if found is not None:
            return found
        renames = {**_COMMON_RENAMES, **_RENAMES.get(entity, {})}
        out: dict[str, tuple[str, Field]] = {}
        for upper, field in self.store.fields[entity].items():
            if upper in _LEFT_OUT or field.is_multifield:
                continue
            out[renames.get(upper) or camel_name(upper)] = (upper, item_field(field))
        for name in _EXTRAS_OF[entity]:
            out.setdefault(name, _EXTRAS[name])  # unless the legacy record has it already
        if entity in _LINKED and self._links() is not None:
            kind = "crm_company" if entity == "contact" else "crm_contact"
            out[_LINKED[entity]] = (_LINKED[entity], Field(kind, _LINKED[entity].upper(), multiple=True))
        self._maps = {cache_key: out} if len(self._maps) > 16 else {**self._maps, cache_key: out}
        return out

    def has_fm(self, entity: str) -> bool:
        return any(f.is_multifield for f in self.store.fields[entity].values())

    def query_fields(self, entity: str) -> dict[str, Field]:
        """Record key -> Field, for query.py's filter and order (legacy fields plus the item-only ones)."""
        return {key: field for key, field in self.mapping(entity).values()}

    # ---- values -----------------------------------------------------------------------------------

    def output(self, entity: str, record: dict, names: list[str] | None = None, with_fm: bool = True) -> dict:
        mapping = self.mapping(entity)
        out = {}
        for name in (list(mapping) if names is None else names):
            key, field = mapping[name]
            out[name] = self._value(entity, record, name, key, field)
        if with_fm and self.has_fm(entity):
            out["fm"] = self.fm_of(record)
        return out

    def _value(self, entity: str, record: dict, name: str, key: str, field: Field):
        if name in _LINKED.values():
            state = self._links()
            record_id = int(record["ID"])
            return state.company_ids(record_id) if entity == "contact" else state.contact_ids(entity, record_id)
        value = record.get(key)
        if field.multiple:
            return list(value or [])
        if field.dynamic:
            return copy.deepcopy(value)
        if field.type in fieldsmod.ITEM_INT_TYPES:
            if value is None or value == "":
                return 0 if name in _ZERO_WHEN_UNSET else None
            return php_int(value)
        if field.type == "double":
            return None if value is None or value == "" else php_float(value)
        if field.type in ("date", "datetime"):
            return value or None
        return value

    @staticmethod
    def fm_of(record: dict) -> list[dict]:
        entries = [item for name in MULTI_FIELDS for item in record.get(name) or []]
        entries.sort(key=lambda item: int(item["ID"]))
        return [{"id": int(i["ID"]), "valueType": i["VALUE_TYPE"], "value": i["VALUE"], "typeId": i["TYPE_ID"]}
                for i in entries]

    def _legacy_fields(self, entity: str, fields_param, creating: bool) -> tuple[dict, dict]:
        """The item's ``fields`` as legacy ``fields`` (UPPER names) plus the item-only values to set."""
        mapping = self.mapping(entity)
        legacy: dict = {}
        extras: dict = {}
        for key, value in array_items(fields_param):
            if key == "fm" and self.has_fm(entity):
                self._fm_to_legacy(value, creating, legacy)
                continue
            found = mapping.get(key)
            if found is None or found[1].read_only:
                continue  # unknown and read-only fields are ignored (crm-item-add.md)
            record_key, field = found
            if key in _LINKED.values() or key in _EXTRAS:
                extras[key] = id_list(value)
            else:
                legacy[record_key] = value
        return legacy, extras

    @staticmethod
    def _fm_to_legacy(fm, creating: bool, legacy: dict) -> None:
        if not is_array(fm):
            return  # a string fm is ignored
        pairs = array_items(fm)
        only_adds = creating or is_sequential(key for key, _ in pairs)
        for key, element in pairs:
            if not isinstance(element, dict):
                continue
            type_name = (php_string(element.get("typeId")) or "").upper() if not is_array(element.get("typeId")) \
                else ""
            if type_name not in MULTI_FIELDS:
                continue
            item = {"VALUE": element.get("value", ""), "VALUE_TYPE": element.get("valueType", "")}
            if not only_adds and not key.startswith("n"):
                if not key.isdigit():
                    continue
                item["ID"] = key
            legacy.setdefault(type_name, []).append(item)

    # ---- writes -----------------------------------------------------------------------------------

    def require(self, entity: str, params: dict) -> dict:
        raw = params.get("id", params.get("ID"))
        record = self.store.records[entity].get(0 if raw is None or is_array(raw) else php_int(raw))
        if record is None:
            raise ApiError("NOT_FOUND", "Item not found", 400)
        return record

    def add(self, entity: str, fields_param) -> int:
        legacy, extras = self._legacy_fields(entity, fields_param, creating=True)
        unnamed = entity == "contact" and all(
            legacy.get(k) in (None, "", False) for k in ("NAME", "LAST_NAME"))
        untitled = entity == "company" and legacy.get("TITLE") in (None, "", False)
        if unnamed:
            legacy["NAME"] = "-"  # passes the legacy name check; cleared below
        if untitled:
            legacy["TITLE"] = "-"
        new_id = self.store.add(entity, {"fields": legacy})
        record = self.store.records[entity][new_id]
        if unnamed:
            record["NAME"] = None
        if untitled:
            record["TITLE"] = f"{TITLES[entity]} #{new_id}"
        record["OBSERVERS"] = []
        if self._moves_here(entity):
            record.update(MOVED_BY=record["CREATED_BY_ID"], MOVED_TIME=record["DATE_CREATE"])
        self._apply_extras(entity, new_id, record, extras)
        return new_id

    def update(self, entity: str, record: dict, fields_param) -> int:
        legacy, extras = self._legacy_fields(entity, fields_param, creating=False)
        entity_id = int(record["ID"])
        stage_key = _STAGE_KEY.get(entity)
        before = record.get(stage_key) if stage_key else None
        if entity == "deal" and "CATEGORY_ID" in legacy:
            self._move_deal(record, legacy)
        self.store.update(entity, {"id": entity_id, "fields": legacy})
        if stage_key and self._moves_here(entity) and record.get(stage_key) != before:
            record.update(MOVED_BY=record["MODIFY_BY_ID"], MOVED_TIME=record["DATE_MODIFY"])
        self._apply_extras(entity, entity_id, record, extras)
        return entity_id

    def _move_deal(self, record: dict, legacy: dict) -> None:
        """``categoryId`` on crm.item.update moves a deal to another pipeline, as crm.deal.update cannot
        (https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html, the STAGE_ID entry): the
        deal gets ``stageId`` if it is one of the new pipeline's stages, else the pipeline's first stage of the
        same semantics (as on add). An unknown pipeline leaves the deal where it is, silently, as an unknown
        pipeline on add does. (The stage history records the stage move; its "pipeline changed" type 5 is not
        modelled.)"""
        raw = legacy.pop("CATEGORY_ID")
        catalog = self.store._catalog()
        category = php_int(raw) if not is_array(raw) else -1
        current = php_int(record.get("CATEGORY_ID") or 0)
        if catalog is None or category < 0 or category == current or not catalog.category_exists(2, category):
            return
        record["CATEGORY_ID"] = str(category)
        stage = catalog.resolve_stage(2, category, php_string(legacy.get("STAGE_ID")) or record.get("STAGE_ID"))
        legacy["STAGE_ID"] = stage  # the update below moves the stage (its history record, MOVED_*)

    def _moves_here(self, entity: str) -> bool:
        """movedBy/movedTime are kept here unless the legacy record keeps them itself (MOVED_BY_ID)."""
        return entity in _STAGE_KEY and self.mapping(entity)["movedBy"][0] == "MOVED_BY"

    def _apply_extras(self, entity: str, entity_id: int, record: dict, extras: dict) -> None:
        if "observers" in extras:
            record["OBSERVERS"] = extras["observers"]
        linked = _LINKED.get(entity)
        if linked in extras and self._links() is not None:
            state = self._links()
            if entity == "contact":
                # links.py sets a contact's companies through COMPANY_IDS, as crm.contact.update does.
                state.after_write("contact", entity_id, {"COMPANY_IDS": extras[linked]}, creating=False)
            else:
                state.set_contact_ids(entity, entity_id, extras[linked])

    def delete(self, entity: str, record: dict) -> int:
        entity_id = int(record["ID"])
        self.store.delete(entity, {"id": entity_id})
        state = self._links()
        if state is not None and hasattr(state, "forget"):
            state.forget(entity, entity_id)
        return entity_id
