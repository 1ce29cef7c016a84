"""The in-memory CRM: records of the four legacy entities and the ``crm.*`` method bodies."""

from __future__ import annotations

import copy
import re
from datetime import timedelta

from . import catalog as catalog_family
from . import fields as fieldsmod
from . import links as links_family
from . import productrows as productrows_family
from . import userfields as ufmod
from .errors import ApiError, crm_error
from .fields import MULTI_DEFAULT_TYPE, MULTI_FIELDS, Field
from .phpform import array_items, array_values, is_array, php_int, php_string
from .query import build_order, first_page_by_id, resolve_select, sort_records
from .values import Clock, integer, is_empty, money, yes_no

PAGE_SIZE = 50
IMPORT_FIELDS = ("DATE_CREATE", "DATE_MODIFY", "CREATED_BY_ID", "MODIFY_BY_ID")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EMAIL_LABELS = {"WORK": "Work e-mail", "HOME": "Personal e-mail", "MAILING": "Newsletter e-mail",
                 "OTHER": "Other e-mail"}
_LINK_TYPES = {"crm_company", "crm_contact", "crm_lead", "crm_quote"}
# crm.deal.fields/crm.lead.fields describe CONTACT_IDS, but get and list never return it and it cannot be
# filtered on (https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-list.html): links.py keeps the
# links, reading it (and COMPANY_IDS on contacts) from add/update.
WRITE_ONLY = {"CONTACT_IDS"}


_SPELLINGS: dict[str, tuple[str, ...]] = {}


def _spellings(name: str) -> tuple[str, ...]:
    found = _SPELLINGS.get(name)
    if found is None:
        lower = name.lower()
        found = (name, name.upper(), lower, lower.capitalize(), "ar" + lower.capitalize())
        if len(_SPELLINGS) < 1024:
            _SPELLINGS[name] = found
    return found


def resolve_array_param(params: dict, name: str, default=None):
    """CCrmRestHelper::resolveArrayParam: name, NAME, name, Name, arName (first one set wins)."""
    for key in _spellings(name):
        if params.get(key) is not None:
            return params[key]
    return default


def resolve_param(params: dict, name: str, default=""):
    return resolve_array_param(params, name, default)


def resolve_entity_id(params: dict) -> int:
    """``ID`` then ``id``, cast with PHP (int)."""
    for key in ("ID", "id"):
        if params.get(key) is not None:
            return php_int(params[key])
    return 0


class CrmStore:
    def __init__(self, clock: Clock, user_id: int = 1, currency: str = "RUB", user_fields=None,
                 validate_email: bool = True, delete_missing_error: str = "legacy"):
        self.clock = clock
        self.user_id = str(user_id)
        self.currency = currency
        self.validate_email = validate_email
        self.delete_missing_error = delete_missing_error
        self.fields: dict[str, dict[str, Field]] = {}
        self.described: dict[str, dict[str, Field]] = {}
        for entity, defs in fieldsmod.ENTITIES.items():
            merged = dict(defs)
            extra = (user_fields or {}).get(entity) or ()
            for uf in extra:
                merged[uf] = fieldsmod.user_field(uf)
            self.described[entity] = merged
            self.fields[entity] = {name: f for name, f in merged.items() if name not in WRITE_ONLY}
        self.records: dict[str, dict[int, dict]] = {}
        # Set by the emulator: family module -> its per-portal State (links and product rows follow records).
        self.family_state = None
        self.reset()

    def reset(self) -> None:
        # User fields made at runtime (crm.*.userfield.add) are forgotten with the records.
        self._configured = getattr(self, "_configured", None) or [
            {e: dict(d) for e, d in table.items()} for table in self._field_tables()]
        for table, configured in zip(self._field_tables(), self._configured, strict=True):
            table.update({e: dict(d) for e, d in configured.items()})
        self._templates: dict[str, tuple] = {}  # _default_values
        self.records.clear()
        self.records.update({entity: {} for entity in self.fields})
        self._next_id = {entity: 1 for entity in self.fields}
        self._next_multi_id = 1

    # ---- metadata ---------------------------------------------------------------------------------

    def describe_fields(self, entity: str) -> dict:
        return {name: f.describe() for name, f in self.described[entity].items()}

    def _field_tables(self) -> list[dict]:
        """The stored fields and, where it differs, what crm.*.fields describes."""
        described = getattr(self, "described", None)
        return [self.fields] + ([described] if described is not None and described is not self.fields else [])

    def add_user_field(self, entity: str, name: str, field: Field) -> None:
        """A user field made or changed at runtime (userfields.py): described, stored, on every record."""
        for table in self._field_tables():
            table[entity][name] = field
        self._templates.pop(entity, None)
        for record in self.records[entity].values():
            record.setdefault(name, None)

    def remove_user_field(self, entity: str, name: str) -> None:
        """A deleted user field leaves the entity and every record."""
        for table in self._field_tables():
            table[entity].pop(name, None)
        self._templates.pop(entity, None)
        for record in self.records[entity].values():
            record.pop(name, None)

    # ---- value handling ---------------------------------------------------------------------------

    def _internal_value(self, field: Field, value):
        """Convert one incoming value to its stored form; ``...`` means 'leave the field alone'."""
        kind = field.type
        if kind == "string" and type(value) is str and not field.dynamic:
            return value  # the commonest case: what the last line's php_string gives a str
        if kind == "file":
            return ...  # file uploads are not modelled
        if kind == "crm_activity_communication":
            return self._communications(value)
        if field.dynamic:
            return ufmod.internal_value(field, value, self.clock, self.currency)
        if kind in ("date", "datetime"):
            if is_array(value):
                return ...
            if value is None or value == "":
                # An empty string clears a date (the portal's source, modules/crm/classes/general/restservice.php).
                return ""
            converted = (self.clock.date_value if kind == "date" else self.clock.datetime_value)(
                php_string(value))
            return ... if converted is None else converted
        if is_array(value):
            value = "Array" if kind not in fieldsmod.NUMERIC_TYPES else (1 if value else 0)
        if kind == "char":
            return yes_no(value)
        if kind == "double":
            return None if is_empty(value) else money(value)
        if kind in fieldsmod.NUMERIC_TYPES:
            if is_empty(value):
                return None
            number = integer(value)
            return None if number == "0" and kind in _LINK_TYPES else number
        return php_string(value)

    def _multi_ops(self, name: str, value) -> list[tuple[int, str, str]]:
        """tryInternalizeMultiFields: (ID, VALUE_TYPE, VALUE) per usable item; ID 0 means new."""
        ops = []
        for _, item in array_items(value):
            if not isinstance(item, dict):
                continue
            item_id = php_int(item.get("ID", 0))
            text = (php_string(item.get("VALUE")) or "").strip() if not is_array(item.get("VALUE")) else ""
            if item_id <= 0 and text == "":
                continue
            if item_id > 0 and (php_string(item.get("DELETE")) or "").upper() == "Y":
                text = ""
            value_type = (php_string(item.get("VALUE_TYPE")) or "").strip() or MULTI_DEFAULT_TYPE[name]
            ops.append((max(item_id, 0), value_type, text))
        return ops

    def _communications(self, value):
        """COMMUNICATIONS of an activity: stored as given (strings), each with a new ID; a non-array
        value leaves the field alone. Saving replaces the whole list, as CCrmActivity::SaveCommunications."""
        if not is_array(value):
            return ...
        items = []
        for _, item in array_items(value):
            if not isinstance(item, dict):
                continue
            entry = {"ID": str(self._next_multi_id)}
            for key in ("TYPE", "VALUE", "ENTITY_ID", "ENTITY_TYPE_ID"):
                entry[key] = None if is_array(item.get(key)) else php_string(item.get(key))
            self._next_multi_id += 1
            items.append(entry)
        return items

    def _check_email(self, value_type: str, value: str) -> None:
        if self.validate_email and value and not _EMAIL.match(value):
            label = _EMAIL_LABELS.get(value_type, "E-mail")
            raise ApiError("ERROR_CORE", f'The field "{label}" contains an invalid address', 400)

    def _apply_multi(self, record: dict, name: str, ops, creating: bool) -> None:
        items = record.setdefault(name, [])
        for item_id, value_type, text in ops:
            if name == "EMAIL":
                self._check_email(value_type, text)
            existing = None if creating or not item_id else next(
                (i for i in items if i["ID"] == str(item_id)), None)
            if existing is not None:
                if text == "":
                    items.remove(existing)
                else:
                    existing.update(VALUE_TYPE=value_type, VALUE=text)
                continue
            if item_id and not creating:
                continue  # an ID that is not this entity's: nothing to change
            if text == "":
                continue
            if any(i["VALUE_TYPE"] == value_type and i["VALUE"] == text for i in items):
                continue  # identical value is reused, not duplicated
            items.append({"ID": str(self._next_multi_id), "VALUE_TYPE": value_type, "VALUE": text,
                          "TYPE_ID": name})
            self._next_multi_id += 1

    def _internalize(self, entity: str, fields_param, allow_import: bool) -> tuple[dict, dict]:
        scalars, multis = {}, {}
        defs = self.fields[entity]
        for key, value in array_items(fields_param):
            field = defs.get(key)
            if field is None:
                continue  # unknown fields are silently ignored
            if field.read_only and not (allow_import and key in IMPORT_FIELDS):
                continue
            if field.is_multifield:
                multis[key] = self._multi_ops(key, value)
                continue
            converted = self._internal_value(field, value)
            if converted is not ...:
                scalars[key] = converted
        return scalars, multis

    def _refresh_flags(self, entity: str, record: dict) -> None:
        if "HAS_PHONE" in fieldsmod.ENTITIES[entity]:
            record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
            record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
            imol = any(i["VALUE_TYPE"] == "IMOL" for i in record.get("IM") or [])
            record["HAS_IMOL"] = "Y" if imol else "N"
        if entity == "deal":
            stage = (record.get("STAGE_ID") or "").split(":")[-1]
            semantic = "S" if stage == "WON" else "F" if stage in ("LOSE", "APOLOGY") else "P"
            catalog = self._catalog()
            if catalog is not None:
                semantic = catalog.stage_semantic(2, record.get("CATEGORY_ID"), record.get("STAGE_ID")) or semantic
            record["STAGE_SEMANTIC_ID"] = semantic
            record["CLOSED"] = "N" if semantic == "P" else "Y"
        if entity == "activity":
            record["STATUS"] = "2" if record.get("COMPLETED") == "Y" else "1"  # CCrmActivityStatus
        if entity == "lead":
            status = record.get("STATUS_ID") or ""
            record["STATUS_SEMANTIC_ID"] = "S" if status == "CONVERTED" else "F" if status == "JUNK" else "P"
            catalog = self._catalog()
            if catalog is not None:
                record["STATUS_SEMANTIC_ID"] = catalog.stage_semantic(1, None, status) or record["STATUS_SEMANTIC_ID"]

    def _default_values(self, entity: str) -> tuple[dict, tuple[str, ...]]:
        """A new record's value for each field (in the fields' order), and the fields that start as a new
        list: worked out once per entity, again after its fields change (user fields, reset)."""
        defs = self.fields[entity]
        cached = self._templates.get(entity)
        if cached is not None and cached[0] is defs and cached[1] == len(defs):
            return cached[2], cached[3]
        template, collections = {}, []
        for name, field in defs.items():
            if field.is_collection:
                template[name] = None  # a new list for each record (below), here only its place
                collections.append(name)
            elif field.type in ("date", "datetime") and not field.dynamic:
                template[name] = ""
            else:
                template[name] = None
        self._templates[entity] = (defs, len(defs), template, tuple(collections))
        return template, tuple(collections)

    def _defaults(self, entity: str, new_id: int) -> dict:
        now = self.clock.iso()
        template, collections = self._default_values(entity)
        record = dict(template)
        for name in collections:
            record[name] = []
        if entity == "activity":
            record.update(ID=str(new_id), CREATED=now, LAST_UPDATED=now, AUTHOR_ID=self.user_id,
                          EDITOR_ID=self.user_id, RESPONSIBLE_ID=self.user_id, COMPLETED="N", DIRECTION="0",
                          PRIORITY="2", DESCRIPTION_TYPE="1")
            return record
        record.update(ID=str(new_id), DATE_CREATE=now, DATE_MODIFY=now, CREATED_BY_ID=self.user_id,
                      MODIFY_BY_ID=self.user_id, ASSIGNED_BY_ID=self.user_id, OPENED="Y")
        if "LAST_ACTIVITY_TIME" in record:
            record["LAST_ACTIVITY_TIME"] = None
        if entity == "contact":
            record["EXPORT"] = "Y"
        if entity in ("deal", "lead"):
            record.update(OPPORTUNITY="0.00", CURRENCY_ID=self._base_currency(), IS_MANUAL_OPPORTUNITY="N",
                          IS_RETURN_CUSTOMER="N")
        if entity == "lead":
            record["STATUS_ID"] = "NEW"
        if entity == "deal":
            today = self.clock.parse(self.clock.iso()).date()
            record.update(TYPE_ID="SALE", CATEGORY_ID="0", STAGE_ID="NEW", TAX_VALUE="0.00", IS_NEW="Y",
                          IS_RECURRING="N", IS_REPEATED_APPROACH="N", CLOSED="N",
                          BEGINDATE=self.clock.date_output(today),
                          CLOSEDATE=self.clock.date_output(today + timedelta(days=7)))
        if entity == "company":
            record.update(IS_MY_COMPANY="N", CURRENCY_ID=self._base_currency())
        return record

    # ---- pipelines, stages and currencies (catalog.py) ----------------------------------------------

    def _catalog(self):
        """The portal's pipelines, stages and currencies (catalog.State), or None when this store runs
        without an emulator around it (then nothing is checked against them)."""
        if getattr(self, "family_state", None) is None:
            return None
        return self.family_state(catalog_family)

    def _base_currency(self) -> str:
        catalog = self._catalog()
        return catalog.base_currency if catalog is not None else self.currency

    @staticmethod
    def _check_currency(catalog, scalars: dict) -> None:
        """An empty CURRENCY_ID leaves the currency alone (the base currency on add); an unknown code
        is refused as a factory-mode portal refuses it (catalog.State.currency_valid says when)."""
        code = scalars.get("CURRENCY_ID")
        if code is None or code == "":
            scalars.pop("CURRENCY_ID", None)
        elif catalog is not None and not catalog.currency_valid(code):
            raise crm_error('Invalid value for the "Currency" field')

    def _stage_moved(self, catalog, entity: str, entity_id: int, record: dict, kind=None) -> None:
        """A deal's or lead's stage was set: MOVED_BY_ID/MOVED_TIME (deals) and a stage-history record."""
        if entity == "deal":
            record.update(MOVED_BY_ID=self.user_id, MOVED_TIME=self.clock.iso())
        if catalog is None:
            return
        if entity == "deal":
            category = record.get("CATEGORY_ID") or "0"
            record["IS_NEW"] = "Y" if record.get("STAGE_ID") == catalog.first_stage(2, category) else "N"
            catalog.record_stage(2, entity_id, category, record.get("STAGE_ID"), kind)
        else:
            catalog.record_stage(1, entity_id, None, record.get("STATUS_ID"), kind)

    # ---- methods ----------------------------------------------------------------------------------

    def _fields_and_params(self, params: dict):
        fields_param = resolve_array_param(params, "fields", {})
        if not is_array(fields_param):
            raise crm_error("Parameter 'fields' must be array.")
        method_params = resolve_array_param(params, "params", {})
        if not is_array(method_params):
            raise crm_error("Parameter 'params' must be array.")
        return fields_param, method_params

    def add(self, entity: str, params: dict) -> int:
        fields_param, method_params = self._fields_and_params(params)
        import_mode = (php_string(dict(array_items(method_params)).get("IMPORT")) or "").upper() == "Y"
        scalars, multis = self._internalize(entity, fields_param, import_mode)
        ufmod.prepare_write(self.fields[entity], scalars, creating=True)
        if entity == "contact" and is_empty(scalars.get("NAME")) and is_empty(scalars.get("LAST_NAME")):
            raise crm_error('The "First name" field is required.<br />')
        if entity == "company" and is_empty(scalars.get("TITLE")):
            raise crm_error('The "Company name" field is required.<br />')
        if entity == "activity":
            self._check_activity(scalars, creating=True)
        catalog = self._catalog()
        if entity in ("deal", "lead", "company"):
            self._check_currency(catalog, scalars)
        new_id = self._next_id[entity]
        record = self._defaults(entity, new_id)
        if entity == "deal":
            category = php_int(scalars.get("CATEGORY_ID") or 0)
            if category < 0:
                raise crm_error("Category ID must be greater or equal to zero.")
            if catalog is None:
                if category and "STAGE_ID" not in scalars:
                    record["STAGE_ID"] = f"C{category}:NEW"
            else:
                # A pipeline that does not exist becomes the default one, and a stage that is not one of
                # the pipeline's becomes its first stage (of the same semantics): both silently, in the
                # legacy path (CCrmDeal::Add) and in factory mode (the compatibility adapter's
                # prepareFields, Bitrix\Crm\Field\Stage) alike.
                if not catalog.category_exists(2, category):
                    category = 0
                scalars["CATEGORY_ID"] = str(category)
                scalars["STAGE_ID"] = catalog.resolve_stage(2, category, scalars.get("STAGE_ID"))
        if entity == "lead" and catalog is not None:
            scalars["STATUS_ID"] = catalog.resolve_stage(1, None, scalars.get("STATUS_ID"))
        record.update({k: v for k, v in scalars.items() if v is not None or k not in ("OPPORTUNITY",)})
        for name in MULTI_FIELDS:
            if name in multis:
                self._apply_multi(record, name, multis[name], creating=True)
        if entity == "activity" and not record.get("DEADLINE"):
            record["DEADLINE"] = record.get("END_TIME") or ""
        if entity in ("deal", "lead") and not record.get("TITLE"):
            record["TITLE"] = f"{entity.capitalize()} #{new_id}"
        self._refresh_flags(entity, record)
        self._next_id[entity] = new_id + 1
        self.records[entity][new_id] = record
        if entity in ("deal", "lead"):
            self._stage_moved(catalog, entity, new_id, record, kind=1)
        self._links_after_write(entity, new_id, fields_param, creating=True)
        return new_id

    def _links_after_write(self, entity: str, entity_id: int, fields_param, creating: bool) -> None:
        if self.family_state is not None and entity in ("deal", "lead", "contact"):
            self.family_state(links_family).after_write(entity, entity_id, fields_param, creating)

    def _forget_links(self, entity: str, entity_id: int) -> None:
        """A deleted record takes its contact/company links and its product rows with it."""
        if self.family_state is not None:
            self.family_state(links_family).forget(entity, entity_id)
            self.family_state(productrows_family).forget(entity, entity_id)

    @staticmethod
    def _check_activity(scalars: dict, creating: bool) -> None:
        """CCrmActivityRestProxy: owner, type and subject must be set (on update: not emptied)."""
        checks = (("OWNER_TYPE_ID", lambda v: php_int(v) > 0), ("OWNER_ID", lambda v: php_int(v) > 0),
                  ("TYPE_ID", lambda v: php_int(v) in fieldsmod.ACTIVITY_TYPES),
                  ("SUBJECT", lambda v: not is_empty(v) and v.strip() != ""))
        for name, valid in checks:
            if (creating or name in scalars) and (is_empty(scalars.get(name)) or not valid(scalars[name])):
                raise crm_error(f"The field {name} is not defined or invalid.")

    def _require(self, entity: str, params: dict, missing_text: str = "Not found") -> tuple[int, dict]:
        entity_id = resolve_entity_id(params)
        if entity_id <= 0:
            raise crm_error("ID is not defined or invalid.")
        record = self.records[entity].get(entity_id)
        if record is None:
            raise crm_error(missing_text)
        return entity_id, record

    def output(self, entity: str, record: dict, names=None) -> dict:
        """A record as get/list return it; multi-fields only when non-empty."""
        defs = self.fields[entity]
        chosen = names if names is not None else list(defs)
        out = {}
        for name in chosen:
            value = record.get(name)
            if defs[name].is_multifield:
                if value:
                    out[name] = copy.deepcopy(value)
            elif defs[name].dynamic:
                out[name] = ufmod.output_value(defs[name], value)
            else:
                out[name] = copy.deepcopy(value)
        return out

    def get(self, entity: str, params: dict) -> dict:
        _, record = self._require(entity, params)
        return self.output(entity, record)

    def update(self, entity: str, params: dict) -> int:
        entity_id = resolve_entity_id(params)
        fields_param, _ = self._fields_and_params(params)
        if entity_id <= 0:
            raise crm_error("ID is not defined or invalid.")
        missing = {"contact": "Contact is not found", "company": "Company is not found"}
        _, record = self._require(entity, params, missing.get(entity, "Not found"))
        scalars, multis = self._internalize(entity, fields_param, False)
        ufmod.prepare_write(self.fields[entity], scalars, creating=False)
        scalars.pop("CATEGORY_ID", None)  # immutable after creation
        catalog = self._catalog()
        if entity in ("deal", "lead", "company"):
            self._check_currency(catalog, scalars)
        stage_field = {"deal": "STAGE_ID", "lead": "STATUS_ID"}.get(entity)
        previous_stage = record.get(stage_field) if stage_field else None
        if stage_field and stage_field in scalars and catalog is not None:
            # A stage that is not one of the record's pipeline (another pipeline's, or none) is ignored,
            # not refused: CCrmDeal::Update/CCrmLead::Update unset it, the factory's Stage field puts the
            # old one back. Moving a deal to another pipeline is crm.item.update's job
            # (https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html).
            pipeline = (2, record.get("CATEGORY_ID")) if entity == "deal" else (1, None)
            if scalars[stage_field] not in catalog.stage_ids(*pipeline):
                scalars.pop(stage_field)
        if entity == "activity":
            scalars.pop("TYPE_ID", None)  # immutable too
            self._check_activity(scalars, creating=False)
        if entity == "contact" and "NAME" in scalars and "LAST_NAME" in scalars and \
                is_empty(scalars["NAME"]) and is_empty(scalars["LAST_NAME"]):
            raise crm_error('The "First name" field is required.<br />')
        if entity == "company" and "TITLE" in scalars and is_empty(scalars["TITLE"]):
            raise crm_error('The "Company name" field is required.<br />')
        for name, ops in multis.items():
            if name == "EMAIL":
                for _, value_type, text in ops:
                    self._check_email(value_type, text)
        record.update(scalars)
        for name in MULTI_FIELDS:
            if name in multis:
                self._apply_multi(record, name, multis[name], creating=False)
        if entity == "activity":
            record.update(LAST_UPDATED=self.clock.iso(), EDITOR_ID=self.user_id)
        else:
            record.update(DATE_MODIFY=self.clock.iso(), MODIFY_BY_ID=self.user_id)
        self._refresh_flags(entity, record)
        if stage_field and record.get(stage_field) != previous_stage:
            self._stage_moved(catalog, entity, entity_id, record)
        self._links_after_write(entity, entity_id, fields_param, creating=False)
        return entity_id

    def delete(self, entity: str, params: dict) -> int:
        entity_id = resolve_entity_id(params)
        if entity_id <= 0:
            raise crm_error("ID is not defined or invalid.")
        if entity_id not in self.records[entity]:
            if self.delete_missing_error == "docs":
                raise ApiError("ERROR_CORE", "Element not found", 400)
            raise crm_error("Not found")
        del self.records[entity][entity_id]
        self._forget_links(entity, entity_id)
        return entity_id

    def list(self, entity: str, params: dict) -> tuple[list, int | None, int | None]:
        order_param = resolve_array_param(params, "order", {})
        if not is_array(order_param):
            raise crm_error("Parameter 'order' must be array.")
        filter_param = resolve_array_param(params, "filter", {})
        if not is_array(filter_param):
            raise crm_error("Parameter 'filter' must be array.")
        defs = self.fields[entity]
        names = resolve_select(resolve_array_param(params, "select", {}), defs)
        predicate = ufmod.build_record_filter(filter_param, defs, self.clock)
        order = build_order(order_param, defs)
        start = php_int(params.get("start", 0))
        if start < 0 and order in ([], [("ID", False)], [("ID", True)]):
            # start=-1 in ID order (either way): stop at the first page of matches within the ">ID"/"<=ID"
            # bounds, as the real server's nTopCount query on the primary key does (the documented fast
            # scan, https://apidocs.bitrix24.com/settings/performance/huge-data.html).
            page = first_page_by_id(self.records[entity], filter_param, predicate, PAGE_SIZE,
                                    descending=order == [("ID", True)])
            return [self.output(entity, r, names) for r in page], None, None
        if not array_items(filter_param) and order in ([], [("ID", False)]):
            rows = list(self.records[entity].values())  # already in ID order: skip the sort
        else:
            rows = [r for r in self.records[entity].values() if predicate(r)]
            rows = sort_records(rows, order, defs, self.clock)
        if start < 0:
            # start=-1 skips the COUNT: the first page, no total and no next
            # (https://apidocs.bitrix24.com/settings/performance/huge-data.html).
            return [self.output(entity, r, names) for r in rows[:PAGE_SIZE]], None, None
        offset = (start // PAGE_SIZE) * PAGE_SIZE
        page = rows[offset:offset + PAGE_SIZE]
        total = len(rows)
        following = offset + len(page)
        return [self.output(entity, r, names) for r in page], total, following if following < total else None

    # ---- duplicates -------------------------------------------------------------------------------

    def find_by_comm(self, params: dict):
        kind = (php_string(resolve_param(params, "type")) or "").upper()
        if kind not in ("EMAIL", "PHONE"):
            if kind == "":
                raise crm_error("Communication type is not defined.")
            raise crm_error(f"Communication type '{kind}' is not supported in current context.")
        values = resolve_array_param(params, "values", {})
        if not is_array(values) or not array_items(values):
            raise crm_error("Communication values is not defined.")
        entity_type = ""
        for key in ("ENTITY_TYPE", "entity_type", "EntityType", "arEntityType"):
            if params.get(key) is not None:
                entity_type = (php_string(params[key]) or "").upper()
                break
        entity_type = {"1": "LEAD", "2": "DEAL", "3": "CONTACT", "4": "COMPANY"}.get(entity_type, entity_type)
        if entity_type == "DEAL":
            raise crm_error("Deal is not supported in current context.")
        entities = [e for e in ("lead", "contact", "company")
                    if entity_type not in ("LEAD", "CONTACT", "COMPANY") or e == entity_type.lower()]

        def normalize(text: str) -> str:
            return re.sub(r"\D", "", text) if kind == "PHONE" else text.strip().lower()

        found: dict[str, list[int]] = {}
        seen_values: list[str] = []
        for value in array_values(values):
            if not isinstance(value, str) or value == "":
                continue
            wanted = normalize(value)
            if not wanted or wanted in seen_values:
                continue
            seen_values.append(wanted)
            # One criterion finds at most 20 entities, leads first
            # (https://apidocs.bitrix24.com/api-reference/crm/duplicates/crm-duplicate-find-by-comm.html).
            matches = []
            for entity in entities:
                for entity_id, record in sorted(self.records[entity].items()):
                    if any(normalize(i["VALUE"]) == wanted for i in record.get(kind) or []):
                        matches.append((entity, entity_id))
            for entity, entity_id in matches[:20]:
                bucket = found.setdefault(fieldsmod.ENTITY_TYPE_NAMES[entity], [])
                if entity_id not in bucket:
                    bucket.append(entity_id)
            if len(seen_values) >= 20:
                break
        return found or []
