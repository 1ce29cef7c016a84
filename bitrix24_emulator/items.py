"""Smart-process items: the ``crm.item.*`` methods (camelCase names, real ints and floats, §2/§6/§7).

Unlike the legacy ``crm.contact.*`` family these are Engine controllers: results are wrapped
(``{"item": ...}``, ``{"items": [...]}``), errors carry codes (``NOT_FOUND``, ``INVALID_ARG_VALUE``),
and a filter or order on an unknown field is an error instead of being dropped (§3).
"""

from __future__ import annotations

import copy

from .errors import ApiError
from .fields import MULTI_DEFAULT_TYPE, MULTI_FIELDS, Field, describe_item_field, smart_process_fields
from .phpform import array_items, array_values, is_array, is_sequential, php_float, php_int, php_string
from .query import build_filter, build_order, first_page_by_id, sort_records, split_operator
from .values import Clock, is_empty, yes_no

PAGE_SIZE = 50
DEFAULT_SMART_PROCESSES = {128: "Projects"}
_INT_TYPES = {"integer", "user", "crm_company", "crm_contact", "crm_category"}


def spa_not_found() -> ApiError:
    return ApiError("NOT_FOUND", "SPA not found", 400)


def item_not_found() -> ApiError:
    return ApiError("NOT_FOUND", "Item not found", 400)


def invalid_arg(description: str) -> ApiError:
    return ApiError("INVALID_ARG_VALUE", description, 400)


def _stage_semantic(stage_id: str | None) -> str:
    code = (stage_id or "").rsplit(":", 1)[-1]
    return "S" if code == "SUCCESS" else "F" if code == "FAIL" else "P"


class ItemStore:
    """Records of the configured smart processes, keyed by entityTypeId, then by item id."""

    def __init__(self, clock: Clock, smart_processes: dict | None = None, user_id: int = 1,
                 currency: str = "RUB", user_fields=None):
        processes = DEFAULT_SMART_PROCESSES if smart_processes is None else smart_processes
        self.clock = clock
        self.user_id = int(user_id)
        self.currency = currency
        self.titles = {int(type_id): str(title) for type_id, title in processes.items()}
        # Each smart process starts with one funnel; category ids are portal-wide, so number them.
        self.default_category = {type_id: i + 1 for i, type_id in enumerate(self.titles)}
        user_fields = user_fields or {}
        self.fields: dict[int, dict[str, Field]] = {
            type_id: smart_process_fields(type_id, user_fields.get(type_id) or user_fields.get(str(type_id)) or ())
            for type_id in self.titles}
        self.records: dict[int, dict[int, dict]] = {}
        self.reset()

    def reset(self) -> None:
        self.records.clear()
        self.records.update({type_id: {} for type_id in self.titles})
        self._next_id = {type_id: 1 for type_id in self.titles}
        self._next_fm_id = 1

    # ---- parameters -------------------------------------------------------------------------------

    def entity_type(self, params: dict) -> int:
        """entityTypeId is cast with (int); a missing or unknown type has no factory: NOT_FOUND (§3)."""
        raw = params.get("entityTypeId")
        type_id = 0 if raw is None or is_array(raw) else php_int(raw)
        if type_id not in self.titles:
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
        if kind == "datetime":
            if is_empty(value):
                return None
            converted = self.clock.datetime_value(php_string(value))
            return ... if converted is None else converted
        return php_string(value)

    def _internalize(self, type_id: int, fields_param) -> dict:
        values = {}
        defs = self.fields[type_id]
        for key, value in array_items(fields_param):
            field = defs.get(key)
            if field is None or field.read_only:
                continue  # unknown and read-only fields are silently ignored (§7)
            converted = self._internal_value(field, value)
            if converted is not ...:
                values[key] = converted
        return values

    def _fm_entry(self, element) -> dict | None:
        """One ``fm`` element as stored, or None when it must be ignored (no valid typeId, §7)."""
        if not isinstance(element, dict):
            return None
        type_name = (php_string(element.get("typeId")) or "").upper()
        if type_name not in MULTI_FIELDS:
            return None
        value = "" if is_array(element.get("value")) else (php_string(element.get("value")) or "").strip()
        value_type = "" if is_array(element.get("valueType")) else (php_string(element.get("valueType")) or "")
        return {"typeId": type_name, "valueType": value_type.strip() or MULTI_DEFAULT_TYPE[type_name],
                "value": value}

    def _fm_add(self, items: list[dict], entry: dict) -> None:
        if entry["value"] == "":
            return
        if any((i["typeId"], i["valueType"], i["value"]) == (entry["typeId"], entry["valueType"], entry["value"])
               for i in items):
            return  # an identical value is reused, not duplicated
        items.append({"id": self._next_fm_id, **entry})
        self._next_fm_id += 1

    def _apply_fm(self, record: dict, fm, creating: bool) -> None:
        """§7 ``fm``: an array adds; on update an object's ``nX`` keys add and numeric keys change the
        entry with that id (an empty value deletes it). A string ``fm`` is silently ignored."""
        if not is_array(fm):
            return
        items = record["fm"]
        pairs = array_items(fm)
        only_adds = creating or is_sequential(key for key, _ in pairs)
        for key, element in pairs:
            entry = self._fm_entry(element)
            if entry is None:
                continue
            if only_adds or key.startswith("n"):
                self._fm_add(items, entry)
                continue
            existing = next((i for i in items if str(i["id"]) == key), None)
            if existing is None:
                continue  # an id that is not this item's: nothing to change
            if entry["value"] == "":
                items.remove(existing)
            else:
                existing.update(entry)

    # ---- output -----------------------------------------------------------------------------------

    def _output(self, type_id: int, record: dict, names: list[str] | None = None, with_fm: bool = True) -> dict:
        chosen = list(self.fields[type_id]) if names is None else names
        out = {name: copy.deepcopy(record.get(name)) for name in chosen}
        if with_fm:
            out["fm"] = copy.deepcopy(record["fm"])
        out["entityTypeId"] = type_id
        return out

    def _select(self, type_id: int, select_param) -> tuple[list[str], bool]:
        """``*`` (the default) is every field plus ``fm`` (§6); otherwise the named ones and ``id``."""
        names = [v for v in array_values(select_param) if isinstance(v, str)] if is_array(select_param) else []
        defs = self.fields[type_id]
        if not names or "*" in names:
            return list(defs), True
        wanted = {"id", *names}
        return [n for n in defs if n in wanted], "fm" in names

    # ---- methods ----------------------------------------------------------------------------------

    def describe_fields(self, params: dict) -> dict:
        type_id = self.entity_type(params)
        return {"fields": {name: describe_item_field(name, f) for name, f in self.fields[type_id].items()}}

    def get(self, params: dict) -> dict:
        type_id = self.entity_type(params)
        return {"item": self._output(type_id, self._require(type_id, params))}

    def add(self, params: dict) -> tuple[int, int, dict]:
        type_id = self.entity_type(params)
        fields_param = params.get("fields")
        values = self._internalize(type_id, fields_param)
        new_id = self._next_id[type_id]
        now = self.clock.iso()
        record = {name: None for name in self.fields[type_id]}
        record.update(id=new_id, title=f"{self.titles[type_id]} #{new_id}", createdBy=self.user_id,
                      updatedBy=self.user_id, createdTime=now, updatedTime=now, assignedById=self.user_id,
                      opened="Y", categoryId=self.default_category[type_id], opportunity=0.0,
                      currencyId=self.currency, companyId=0, contactId=0, fm=[])
        if is_empty(values.get("title")):
            values.pop("title", None)
        record.update(values)
        if not record.get("stageId"):
            record["stageId"] = f"DT{type_id}_{record['categoryId']}:NEW"
        record["stageSemanticId"] = _stage_semantic(record["stageId"])
        if isinstance(fields_param, dict):
            self._apply_fm(record, fields_param.get("fm"), creating=True)
        self._next_id[type_id] = new_id + 1
        self.records[type_id][new_id] = record
        return type_id, new_id, {"item": self._output(type_id, record)}

    def update(self, params: dict) -> tuple[int, int, dict]:
        type_id = self.entity_type(params)
        record = self._require(type_id, params)
        fields_param = params.get("fields")
        values = self._internalize(type_id, fields_param)
        if "categoryId" in values and values["categoryId"] != record["categoryId"] and "stageId" not in values:
            values["stageId"] = f"DT{type_id}_{values['categoryId']}:NEW"  # first stage of the new funnel
        record.update(values)
        record["stageSemanticId"] = _stage_semantic(record["stageId"])
        if isinstance(fields_param, dict):
            self._apply_fm(record, fields_param.get("fm"), creating=False)
        record.update(updatedTime=self.clock.iso(), updatedBy=self.user_id)
        return type_id, record["id"], {"item": self._output(type_id, record)}

    def delete(self, params: dict) -> tuple[int, int]:
        type_id = self.entity_type(params)
        record = self._require(type_id, params)
        del self.records[type_id][record["id"]]
        return type_id, record["id"]

    def _check_filter(self, defs: dict[str, Field], filter_param) -> None:
        for key, value in array_items(filter_param):
            _, name = split_operator(key)
            if name.lower() == "logic" or (name.isdigit() and is_array(value)):
                # Real portals accept nested {logic: OR} groups; this emulator does not model them
                # and says so rather than returning rows a real filter would not.
                raise invalid_arg("Invalid filter: nested filters and 'logic' are not supported by the emulator")
            if name not in defs:
                raise invalid_arg(f"Invalid filter: field '{name}' is not allowed in filter")

    def list(self, params: dict) -> tuple[dict, int | None, int | None]:
        type_id = self.entity_type(params)
        defs = self.fields[type_id]
        filter_param = params.get("filter") if is_array(params.get("filter")) else {}
        order_param = params.get("order") if is_array(params.get("order")) else {}
        self._check_filter(defs, filter_param)
        for name, _ in array_items(order_param):
            if name not in defs or defs[name].is_collection:
                raise invalid_arg(f"Invalid order: field '{name}' is not allowed in order")
        names, with_fm = self._select(type_id, params.get("select"))
        predicate = build_filter(filter_param, defs, self.clock)
        order = build_order(order_param, defs)
        records = self.records[type_id]
        start = php_int(params.get("start", 0))

        def page_of(rows):
            return {"items": [self._output(type_id, r, names, with_fm) for r in rows]}

        if start < 0 and order in ([], [("id", False)]):
            # The documented fast scan (§6): {id: ASC}, {">id": last}, start=-1; no total or next.
            return page_of(first_page_by_id(records, filter_param, predicate, PAGE_SIZE, "id")), None, None
        rows = sort_records([r for r in records.values() if predicate(r)], order, defs, self.clock, "id")
        if start < 0:
            return page_of(rows[:PAGE_SIZE]), None, None
        offset = (start // PAGE_SIZE) * PAGE_SIZE
        page = rows[offset:offset + PAGE_SIZE]
        total = len(rows)
        following = offset + len(page)
        return page_of(page), total, following if following < total else None
