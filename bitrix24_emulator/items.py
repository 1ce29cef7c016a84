"""``crm.item.*``: smart processes, smart invoices (31), estimates (7) and, through system_items.py, the
system types 1 lead, 2 deal, 3 contact and 4 company (camelCase names, real ints and floats).

Unlike the legacy ``crm.contact.*`` family these are Engine controllers: results are wrapped
(``{"item": ...}``, ``{"items": [...]}``), errors carry codes (``NOT_FOUND``, ``INVALID_ARG_VALUE``),
and a filter or order on an unknown field is an error instead of being dropped (crm.item.list below).

Facts (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-add.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/object-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/invoice.html):

- ``filter`` nests without limit: a numbered key holding an array is a group, ``logic: "OR"`` joins its level
  with OR.
- ``fm`` is no field: ``select: ["fm"]`` does not bring it, only ``*`` (or no select) does; smart processes,
  invoices and estimates have no multi-fields at all (no ``fm`` in their field lists: an ``fm`` sent to them is
  an unknown field, ignored, and their items carry no ``fm`` key).
- With an explicit ``select`` the rows hold the named fields (and ``id``) only, no ``entityTypeId``: the
  list page's example and a real portal's answer (leshchenko1979/fast_bitrix24,
  tests/real_responses/crm_item_list.py) both show rows without it; get/add/update and ``*`` rows end with it.
- A multiple field (``observers``, ``contactIds``) given a scalar is refused with code ``100``
  ("Expected iterable value for multiple field, ...", crm-item-add.md's error table).
- A new item's ``movedBy``/``movedTime`` are its creator and creation time and ``xmlId`` is ``""``
  (the real crm.item.add answer in fast_bitrix24's tests/real_responses/crm_item_add.py); ``begindate`` is
  the creation day and ``closedate`` seven days later, ``isManualOpportunity`` ``N`` (crm-item-add.md).
- Invoice stages are ``DT31_{category}:{code}`` (crm-item-add.md: ``'DT31_13:N' = 'New'``); invoices raise
  ONCRMDYNAMICITEM* with ENTITY_TYPE_ID 31 (invoice.html); estimates raise ONCRMQUOTE{ADD,UPDATE,DELETE}
  with the id only (https://apidocs.bitrix24.com/api-reference/crm/quote/events/on-crm-quote-add.html);
  the system types raise their legacy events (ONCRMDEALADD ...); crm.item.* refuses the old invoices (5)
  with ENTITY_TYPE_NOT_SUPPORTED.

Choices where the sources are silent: invoice stage codes N (new), S (sent), P (paid: success), D (declined:
failure); estimate stages DRAFT (first), APPROVED (success), DECLAINED (failure); a new item's ``sourceId`` is
``CALL`` (the first source of a new portal), ``webformId``/``previousStageId`` null, ``mycompanyId`` and
``companyId``/``contactId`` 0, ``lastActivityBy``/``lastActivityTime`` the creator and the creation time; a
stage change sets ``previousStageId``, ``movedBy`` and ``movedTime``. ``contactId`` (deprecated) follows the
first of ``contactIds`` and a ``contactId`` sent alone becomes ``contactIds: [id]``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import timedelta

from .errors import ApiError
from .fields import QUOTE, SMART_INVOICE, Field, describe_item_field, smart_process_fields, upper_name
from .phpform import array_items, array_values, is_array, php_float, php_int, php_string
from .query import build_filter, build_order, first_page_by_id, sort_records, split_operator
from .system_items import EVENT_NAMES as SYSTEM_EVENT_NAMES
from .system_items import SYSTEM_TYPES, SystemItems, id_list
from .values import Clock, is_empty, yes_no

PAGE_SIZE = 50
DEFAULT_SMART_PROCESSES = {128: "Projects"}
QUOTE_TYPE = 7
INVOICE_TYPE = 31
OLD_INVOICE_TYPE = 5
_INT_TYPES = {"integer", "user", "crm_company", "crm_contact", "crm_category", "crm_lead", "crm_deal",
              "crm_entity"}


def spa_not_found() -> ApiError:
    return ApiError("NOT_FOUND", "SPA not found", 400)


def item_not_found() -> ApiError:
    return ApiError("NOT_FOUND", "Item not found", 400)


def portal_upper(name: str) -> str:
    """A crm.item filter or order name as the portal's refusal names it: the key after its converter made it
    UPPER_CASE (the checks run on converted keys). A known field's camelCase name is its upper name
    (``stageId`` -> ``STAGE_ID``); anything else goes through main's camel2snake, which puts ``_`` before every
    capital that follows a character (``nope`` -> ``NOPE``, ``TITLE`` -> ``T_IT_LE``, as ``ID`` became ``I_D``
    in https://github.com/leshchenko1979/fast_bitrix24/issues/196). User fields keep their UF_CRM_ form."""
    if name[:2].lower() == "uf":
        return upper_name(name)
    return re.sub(r"(.)([A-Z])", r"\1_\2", name).upper()


def invalid_arg(description: str) -> ApiError:
    return ApiError("INVALID_ARG_VALUE", description, 400)


@dataclass
class ItemType:
    """One item type kept here: its title (for ``{title} #{id}``), fields and stage rules."""

    title: str
    fields: dict[str, Field]
    category: int | None  # the default pipeline; None: no pipelines (estimates)
    prefix: str = ""  # stage ids are f"{prefix}{category}:{code}"; "" for estimates
    first: str = "NEW"
    success: set = dc_field(default_factory=set)
    failure: set = dc_field(default_factory=set)

    def stage(self, category: int | None, code: str | None = None) -> str:
        code = code or self.first
        return code if category is None or not self.prefix else f"{self.prefix}{category}:{code}"

    def semantic(self, stage_id: str | None) -> str:
        code = (stage_id or "").rsplit(":", 1)[-1]
        return "S" if code in self.success else "F" if code in self.failure else "P"


def item_event(type_id: int, action: str, item_id: int) -> tuple[str, list[tuple[str, str]]]:
    """The event an item write raises and its ``data`` pairs: ONCRMDEALADD ... for the system types,
    ONCRMQUOTE* for estimates, ONCRMDYNAMICITEM* (with ENTITY_TYPE_ID) for smart processes and invoices."""
    data = [("data[FIELDS][ID]", str(item_id))]
    if type_id in SYSTEM_TYPES:
        return f"ONCRM{SYSTEM_EVENT_NAMES[SYSTEM_TYPES[type_id]]}{action}", data
    if type_id == QUOTE_TYPE:
        return f"ONCRMQUOTE{action}", data
    return f"ONCRMDYNAMICITEM{action}", data + [("data[FIELDS][ENTITY_TYPE_ID]", str(type_id))]


class ItemStore:
    """Records of the smart processes, invoices and estimates, keyed by entityTypeId, then by item id;
    the system types are served over ``portal.store`` when a portal is given."""

    def __init__(self, clock: Clock, smart_processes: dict | None = None, user_id: int = 1,
                 currency: str = "RUB", user_fields=None, portal=None):
        processes = DEFAULT_SMART_PROCESSES if smart_processes is None else smart_processes
        self.clock = clock
        self.user_id = int(user_id)
        self.currency = currency
        self.system = SystemItems(portal) if portal is not None else None
        user_fields = user_fields or {}

        def ufs(type_id):
            return user_fields.get(type_id) or user_fields.get(str(type_id)) or ()

        # Each smart process starts with one funnel; category ids are portal-wide, so number them.
        self.types: dict[int, ItemType] = {}
        for i, (type_id, title) in enumerate(processes.items()):
            type_id = int(type_id)
            self.types[type_id] = ItemType(str(title), smart_process_fields(type_id, ufs(type_id), i + 1), i + 1,
                                           f"DT{type_id}_", "NEW", {"SUCCESS"}, {"FAIL"})
        invoice_category = len(self.types) + 1
        self.types[INVOICE_TYPE] = ItemType(
            "Invoice", smart_process_fields(INVOICE_TYPE, ufs(INVOICE_TYPE), base=SMART_INVOICE,
                                            stage_status=f"SMART_INVOICE_STAGE_{invoice_category}"),
            invoice_category, "DT31_", "N", {"P"}, {"D"})
        self.types[QUOTE_TYPE] = ItemType(
            "Estimate", smart_process_fields(QUOTE_TYPE, ufs(QUOTE_TYPE), base=QUOTE, stage_status="QUOTE_STATUS"),
            None, "", "DRAFT", {"APPROVED"}, {"DECLAINED"})
        self.titles = {t: k.title for t, k in self.types.items() if t not in (INVOICE_TYPE, QUOTE_TYPE)}
        self.fields: dict[int, dict[str, Field]] = {t: k.fields for t, k in self.types.items()}
        self.default_category = {t: k.category for t, k in self.types.items()}
        self.records: dict[int, dict[int, dict]] = {}
        self.reset()

    def reset(self) -> None:
        self.records.clear()
        self.records.update({type_id: {} for type_id in self.types})
        self._next_id = {type_id: 1 for type_id in self.types}

    # ---- parameters -------------------------------------------------------------------------------

    def entity_type(self, params: dict) -> int:
        """entityTypeId is cast with (int); a missing or unknown type has no factory: NOT_FOUND
        (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-get.html)."""
        raw = params.get("entityTypeId")
        type_id = 0 if raw is None or is_array(raw) else php_int(raw)
        if type_id == OLD_INVOICE_TYPE:
            raise ApiError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type INVOICE is not supported", 400)
        if type_id not in self.types and not (self.system and type_id in SYSTEM_TYPES):
            raise spa_not_found()
        return type_id

    def _require(self, type_id: int, params: dict) -> dict:
        raw = params.get("id", params.get("ID"))
        record = self.records[type_id].get(0 if raw is None or is_array(raw) else php_int(raw))
        if record is None:
            raise item_not_found()
        return record

    # ---- values -----------------------------------------------------------------------------------

    def _internal_value(self, field: Field, value):
        """One incoming value in its stored (JSON-typed) form; ``...`` leaves the field alone."""
        if field.dynamic:
            return copy.deepcopy(value) if is_array(value) else php_string(value)
        if field.multiple:
            return id_list(value)
        if is_array(value):
            return ...
        kind = field.type
        if kind in _INT_TYPES:
            if is_empty(value):
                return ... if kind in ("user", "crm_category") else 0
            return php_int(value)
        if kind == "double":
            text = value.replace(" ", "").replace(",", ".") if isinstance(value, str) else value
            return php_float(text)
        if kind == "boolean":
            return yes_no(value)
        if kind in ("date", "datetime"):
            if is_empty(value):
                return None
            converted = (self.clock.date_value if kind == "date" else self.clock.datetime_value)(php_string(value))
            return ... if converted is None else converted
        return php_string(value)

    def _internalize(self, type_id: int, fields_param) -> dict:
        values = {}
        defs = self.fields[type_id]
        for key, value in array_items(fields_param):
            field = defs.get(key)
            if field is None or field.read_only:
                continue  # unknown (fm included) and read-only fields are silently ignored (crm.item.add below)
            converted = self._internal_value(field, value)
            if converted is not ...:
                values[key] = converted
        if "contactIds" in defs:
            if "contactIds" in values:
                values["contactId"] = values["contactIds"][0] if values["contactIds"] else 0
            elif values.get("contactId"):
                values["contactIds"] = [values["contactId"]]
        return values

    # ---- output -----------------------------------------------------------------------------------

    def _output(self, type_id: int, record: dict, names: list[str] | None = None) -> dict:
        chosen = list(self.fields[type_id]) if names is None else names
        out = {name: copy.deepcopy(record.get(name)) for name in chosen}
        if names is None:
            out["entityTypeId"] = type_id
        return out

    def _select(self, type_id: int, select_param) -> tuple[list[str] | None, bool]:
        """(names or None for all, with fm): ``*`` (the default) is every field plus ``fm``; otherwise the
        named fields and ``id``; ``fm`` cannot be named."""
        names = [v for v in array_values(select_param) if isinstance(v, str)] if is_array(select_param) else []
        defs = self._defs(type_id)
        if not names or "*" in names:
            return None, True
        wanted = {"id", *names}
        return [n for n in defs if n in wanted], False

    def _defs(self, type_id: int) -> dict[str, Field]:
        if type_id in SYSTEM_TYPES:
            return {name: f for name, (_, f) in self.system.mapping(SYSTEM_TYPES[type_id]).items()}
        return self.fields[type_id]

    # ---- methods ----------------------------------------------------------------------------------

    def describe_fields(self, params: dict) -> dict:
        type_id = self.entity_type(params)
        described = {name: describe_item_field(name, f) for name, f in self._defs(type_id).items()}
        if type_id in SYSTEM_TYPES and self.system.has_fm(SYSTEM_TYPES[type_id]):
            described["fm"] = {**Field("crm_multifield", "Multifields", multiple=True).describe(),
                               "upperName": "FM"}
        return {"fields": described}

    def get(self, params: dict) -> dict:
        type_id = self.entity_type(params)
        if type_id in SYSTEM_TYPES:
            entity = SYSTEM_TYPES[type_id]
            record = self.system.require(entity, params)
            return {"item": {**self.system.output(entity, record), "entityTypeId": type_id}}
        return {"item": self._output(type_id, self._require(type_id, params))}

    def add(self, params: dict) -> tuple[int, int, dict]:
        type_id = self.entity_type(params)
        fields_param = params.get("fields")
        if type_id in SYSTEM_TYPES:
            entity = SYSTEM_TYPES[type_id]
            new_id = self.system.add(entity, fields_param)
            record = self.system.store.records[entity][new_id]
            return type_id, new_id, {"item": {**self.system.output(entity, record), "entityTypeId": type_id}}
        kind = self.types[type_id]
        values = self._internalize(type_id, fields_param)
        new_id = self._next_id[type_id]
        now = self.clock.iso()
        today = self.clock.parse(now).date()
        defs = self.fields[type_id]
        record = {name: ([] if f.multiple else None) for name, f in defs.items()}
        defaults = dict(
            id=new_id, title=f"{kind.title} #{new_id}", xmlId="", createdBy=self.user_id, updatedBy=self.user_id,
            createdTime=now, updatedTime=now, assignedById=self.user_id, opened="Y", categoryId=kind.category,
            begindate=self.clock.date_output(today), closedate=self.clock.date_output(today + timedelta(days=7)),
            movedBy=self.user_id, movedTime=now, sourceId="CALL", isManualOpportunity="N", opportunity=0.0,
            taxValue=0.0, currencyId=self.currency, companyId=0, contactId=0, mycompanyId=0,
            lastActivityBy=self.user_id, lastActivityTime=now, storageTypeId=1, closed="N")
        record.update({k: v for k, v in defaults.items() if k in defs})
        if is_empty(values.get("title")):
            values.pop("title", None)
        record.update(values)
        if not record.get("stageId"):
            record["stageId"] = kind.stage(record.get("categoryId"))
        self._refresh(kind, record)
        self._next_id[type_id] = new_id + 1
        self.records[type_id][new_id] = record
        return type_id, new_id, {"item": self._output(type_id, record)}

    @staticmethod
    def _refresh(kind: ItemType, record: dict) -> None:
        record["stageSemanticId"] = kind.semantic(record["stageId"])
        if "closed" in record:
            record["closed"] = "N" if record["stageSemanticId"] == "P" else "Y"

    def update(self, params: dict) -> tuple[int, int, dict]:
        type_id = self.entity_type(params)
        fields_param = params.get("fields")
        if type_id in SYSTEM_TYPES:
            entity = SYSTEM_TYPES[type_id]
            record = self.system.require(entity, params)
            item_id = self.system.update(entity, record, fields_param)
            return type_id, item_id, {"item": {**self.system.output(entity, record), "entityTypeId": type_id}}
        kind = self.types[type_id]
        record = self._require(type_id, params)
        values = self._internalize(type_id, fields_param)
        if kind.category is not None and "categoryId" in values and values["categoryId"] != record["categoryId"] \
                and "stageId" not in values:
            values["stageId"] = kind.stage(values["categoryId"])  # first stage of the new funnel
        before = record["stageId"]
        record.update(values)
        now = self.clock.iso()
        if record["stageId"] != before:
            for name, value in (("previousStageId", before), ("movedBy", self.user_id), ("movedTime", now)):
                if name in record:
                    record[name] = value
        self._refresh(kind, record)
        record.update(updatedTime=now, updatedBy=self.user_id)
        return type_id, record["id"], {"item": self._output(type_id, record)}

    def delete(self, params: dict) -> tuple[int, int]:
        type_id = self.entity_type(params)
        if type_id in SYSTEM_TYPES:
            entity = SYSTEM_TYPES[type_id]
            return type_id, self.system.delete(entity, self.system.require(entity, params))
        record = self._require(type_id, params)
        del self.records[type_id][record["id"]]
        return type_id, record["id"]

    # ---- list -------------------------------------------------------------------------------------

    def _check_filter(self, defs: dict[str, Field], filter_param) -> None:
        for key, value in array_items(filter_param):
            if key.lower() == "logic":
                continue
            if key.isdigit() and is_array(value):
                self._check_filter(defs, value)  # a nested group (crm-item-list.md)
                continue
            _, name = split_operator(key)
            if name not in defs:
                raise invalid_arg(f"Invalid filter: field '{portal_upper(name)}' is not allowed in filter")

    @staticmethod
    def _rename_filter(filter_param, keys: dict[str, str]) -> dict:
        """The filter with camelCase names replaced by record keys (for the system types), groups included."""
        out = {}
        for key, value in array_items(filter_param):
            if key.lower() == "logic" or (key.isdigit() and not is_array(value)):
                out[key] = value
            elif key.isdigit():
                out[key] = ItemStore._rename_filter(value, keys)
            else:
                op, name = split_operator(key)
                out[op + keys[name]] = value
        return out

    @staticmethod
    def _upper_to_camel(defs: dict[str, Field], param) -> dict:
        """``param`` (a filter, groups included, or an order) with UPPER_CASE names of standard fields
        (``ID``, ``STAGE_ID``) turned into their camelCase names. The portal converts every incoming key
        with its ORM converter, which first registers the UPPER names of the factory's fields
        (getFieldsInfo) and passes a name it knows as UPPER_CASE through unchanged, so ``{"ID": "ASC"}``
        sorts as ``{"id": "ASC"}`` does (fast_bitrix24's get_all sends it on every list). Source: the
        portal's crm module, lib/controller/item.php (listAction, getFactory's preprocessUpperFieldNames)
        and lib/service/converter/ormobject.php (convertFieldNameFromCamelCaseToUpperCase). User fields
        are left alone (their UPPER names are not among getFieldsInfo's): our choice where that is silent."""
        known = {upper_name(name): name for name, f in defs.items() if not f.dynamic}
        out = {}
        for key, value in array_items(param):
            if key.isdigit() and is_array(value):
                out[key] = ItemStore._upper_to_camel(defs, value)
                continue
            op, name = split_operator(key)
            out[op + known[name] if name not in defs and name in known else key] = value
        return out

    def list(self, params: dict) -> tuple[dict, int | None, int | None]:
        type_id = self.entity_type(params)
        defs = self._defs(type_id)
        filter_param = params.get("filter") if is_array(params.get("filter")) else {}
        order_param = params.get("order") if is_array(params.get("order")) else {}
        filter_param = self._upper_to_camel(defs, filter_param)
        order_param = self._upper_to_camel(defs, order_param)
        self._check_filter(defs, filter_param)
        for name, direction in array_items(order_param):
            if name not in defs or defs[name].is_collection or defs[name].multiple:
                raise invalid_arg(f"Invalid order: field '{portal_upper(name)}' is not allowed in order")
            text = "" if is_array(direction) else (php_string(direction) or "").upper()
            if text not in ("ASC", "DESC"):
                raise invalid_arg(f"Invalid order: allowed sort directions are ASC, DESC. But got '{text}' "
                                  f"for field '{portal_upper(name)}'")
        names, with_fm = self._select(type_id, params.get("select"))
        if type_id in SYSTEM_TYPES:
            entity = SYSTEM_TYPES[type_id]
            mapping = self.system.mapping(entity)
            keys = {name: key for name, (key, _) in mapping.items()}
            filter_param = self._rename_filter(filter_param, keys)
            order_param = {keys[name]: direction for name, direction in array_items(order_param)}
            query_defs = self.system.query_fields(entity)
            records = self.system.store.records[entity]
            id_name = "ID"

            def render(record):
                row = self.system.output(entity, record, names, with_fm)
                return row if names is not None else {**row, "entityTypeId": type_id}
        else:
            query_defs = defs
            records = self.records[type_id]
            id_name = "id"

            def render(record):
                return self._output(type_id, record, names)
        predicate = build_filter(filter_param, query_defs, self.clock, nested=True)
        order = build_order(order_param, query_defs)
        start = php_int(params.get("start", 0))

        def page_of(rows):
            return {"items": [render(r) for r in rows]}

        if start < 0 and order in ([], [(id_name, False)], [(id_name, True)]):
            # The documented fast scan: {id: ASC}, {">id": last}, start=-1; no total or next
            # (https://apidocs.bitrix24.com/settings/performance/huge-data.html). A top level joined by OR gives no
            # lower bound to start from.
            top_or = any(k.lower() == "logic" and not is_array(v) and (php_string(v) or "").upper() == "OR"
                         for k, v in array_items(filter_param))
            bound = {} if top_or else filter_param
            return page_of(first_page_by_id(records, bound, predicate, PAGE_SIZE, id_name,
                                            descending=order == [(id_name, True)])), None, None
        rows = sort_records([r for r in records.values() if predicate(r)], order, query_defs, self.clock, id_name)
        if start < 0:
            return page_of(rows[:PAGE_SIZE]), None, None
        offset = (start // PAGE_SIZE) * PAGE_SIZE
        page = rows[offset:offset + PAGE_SIZE]
        total = len(rows)
        following = offset + len(page)
        return page_of(page), total, following if following < total else None
