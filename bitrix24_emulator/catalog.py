"""Pipelines, stages, dictionaries, currencies and stage history of one portal.

Methods: ``crm.status.*`` (stages and the CRM dictionaries), ``crm.category.*`` (pipelines),
``crm.currency.*`` and ``crm.stagehistory.list``. The :class:`State` also gives the rest of the
emulator what a portal's CRM consults when it saves a record: which stages a pipeline has, whether a
pipeline exists, which currencies exist, and where a record's stage moves are recorded
(:meth:`State.record_stage`, called by ``crm.py``; ``items.py`` may call it for smart processes).

Sources (the portal's documentation):
https://apidocs.bitrix24.com/api-reference/crm/status/index.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-list.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-get.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-add.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-update.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-delete.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-entity-items.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-entity-types.html,
https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/category/index.html (and its list, get, add,
update, delete and fields pages), https://apidocs.bitrix24.com/api-reference/crm/currency/index.html
(and its list, get, base-get, base-set, fields, add, update and delete pages),
https://apidocs.bitrix24.com/api-reference/crm/crm-stage-history-list.html.

Where the pages are silent, the portal's own code decides (the ``crm`` module: ``CCrmStatus`` default
dictionaries, ``CCrmStatusRestProxy``); where even that is silent a choice is made and said so below.
Choices:

- Seed names are English; ``ID``s of dictionary entries are numbered from 1 in seed order.
- Smart-process default stages (``NEW``, ``PREPARATION``, ``CLIENT``, ``SUCCESS``, ``FAIL``) follow the
  portal's default stage scenario; their English names are ours.
- ``HONORIFIC`` is seeded with ``HNR_EN_1``..``HNR_EN_4`` (Mr., Mrs., Ms., Dr.).
- Estimate (``QUOTE_STATUS``) and invoice (``SMART_INVOICE_STAGE_{id}``) stage codes and sorts are the
  portal's defaults (``CCrmStatus::GetDefaultQuoteStatuses``/``GetDefaultInvoiceStatuses``), their names ours;
  ``CALL_LIST`` is not modelled; contact (3) and company (4) pipelines have no stages.
- ``crm.stagehistory.list`` values are strings, as a real portal returned them (the recorded answers
  in fast_bitrix24's tests), not ints as the docs' example shows.
- ``crm.currency.list`` reports ``total: 0`` as the docs say it always does; rates of the seeded
  currencies are fixed examples.
"""

from __future__ import annotations

import copy

from .errors import ApiError, crm_error
from .fields import Field
from .phpform import array_items, array_values, is_array, php_int, php_string
from .query import build_filter, build_order, sort_records, split_operator
from .registry import Outcome

PAGE_SIZE = 50
DEAL, LEAD, CONTACT, COMPANY, QUOTE, SMART_INVOICE = 2, 1, 3, 4, 7, 31
TYPE_NAMES = {1: "LEAD", 2: "DEAL", 3: "CONTACT", 4: "COMPANY", 5: "INVOICE", 7: "QUOTE", 8: "REQUISITE",
              14: "ORDER", 31: "SMART_INVOICE", 36: "SMART_DOCUMENT"}

METHODS = frozenset({
    "crm.status.fields", "crm.status.list", "crm.status.get", "crm.status.add", "crm.status.update",
    "crm.status.delete", "crm.status.entity.types", "crm.status.entity.items",
    "crm.category.fields", "crm.category.list", "crm.category.get", "crm.category.add",
    "crm.category.update", "crm.category.delete",
    "crm.currency.fields", "crm.currency.list", "crm.currency.get", "crm.currency.add",
    "crm.currency.update", "crm.currency.delete", "crm.currency.base.get", "crm.currency.base.set",
    "crm.stagehistory.list",
})

# ---- seed data (CCrmStatus::GetDefault*; colours of the docs' crm.status.list example) -------------

# (STATUS_ID, NAME, SORT, SYSTEM, COLOR, SEMANTICS)
DEAL_STAGES = (
    ("NEW", "New", 10, "Y", "#39A8EF", None),
    ("PREPARATION", "Document preparation", 20, "N", "#2FC6F6", None),
    ("PREPAYMENT_INVOICE", "Prepayment invoice", 30, "N", "#55D0E0", None),
    ("EXECUTING", "In progress", 40, "N", "#47E4C2", None),
    ("FINAL_INVOICE", "Final invoice", 50, "N", "#FFA900", None),
    ("WON", "Deal successful", 60, "Y", "#7BD500", "S"),
    ("LOSE", "Deal failed", 70, "Y", "#FF5752", "F"),
    ("APOLOGY", "Failure reason analysis", 80, "N", "#FF5752", "F"),
)
LEAD_STATUSES = (
    ("NEW", "Unassigned", 10, "Y", "#39A8EF", None),
    ("IN_PROCESS", "In progress", 20, "N", "#2FC6F6", None),
    ("PROCESSED", "Processed", 30, "N", "#55D0E0", None),
    ("CONVERTED", "Good lead", 40, "Y", "#7BD500", "S"),
    ("JUNK", "Junk lead", 50, "Y", "#FF5752", "F"),
)
QUOTE_STATUSES = (
    ("DRAFT", "New", 10, "Y", "#39A8EF", None),
    ("SENT", "Sent to client", 20, "N", "#2FC6F6", None),
    ("APPROVED", "Approved", 30, "Y", "#7BD500", "S"),
    ("DECLAINED", "Declined", 40, "Y", "#FF5752", "F"),
    ("APOLOGY", "Analyze failure", 50, "N", "#FF5752", "F"),
)
INVOICE_STAGES = (
    ("N", "New", 100, "Y", "#39A8EF", None),
    ("S", "Sent to client", 110, "N", "#2FC6F6", None),
    ("P", "Paid", 130, "Y", "#7BD500", "S"),
    ("D", "Declined", 140, "Y", "#FF5752", "F"),
)
SMART_STAGES = (
    ("NEW", "New", 10, "Y", "#22B9FF", None),
    ("PREPARATION", "Preparation", 20, "N", "#88B9FF", None),
    ("CLIENT", "Waiting for client", 30, "N", "#10e5fc", None),
    ("SUCCESS", "Success", 40, "Y", "#00ff00", "S"),
    ("FAIL", "Fail", 50, "Y", "#ff0000", "F"),
)
# (STATUS_ID, NAME, SORT, SYSTEM) of the plain dictionaries.
DICTIONARIES = {
    "SOURCE": (("CALL", "Call", 10, "Y"), ("EMAIL", "E-mail", 20, "N"), ("WEB", "Website", 30, "N"),
               ("ADVERTISING", "Advertising", 40, "N"), ("PARTNER", "Existing client", 50, "N"),
               ("RECOMMENDATION", "By recommendation", 60, "N"), ("TRADE_SHOW", "Show/Exhibition", 70, "N"),
               ("WEBFORM", "CRM form", 75, "Y"), ("REPEAT_SALE", "Repeat sales", 76, "Y"),
               ("CALLBACK", "Callback", 77, "Y"), ("RC_GENERATOR", "Sales boost", 78, "Y"),
               ("STORE", "Online store", 79, "Y"), ("OTHER", "Other", 80, "N"), ("BOOKING", "Booking", 81, "Y")),
    "CONTACT_TYPE": (("CLIENT", "Clients", 10, "N"), ("SUPPLIER", "Suppliers", 20, "N"),
                     ("PARTNER", "Partners", 30, "N"), ("OTHER", "Other", 40, "N")),
    "COMPANY_TYPE": (("CUSTOMER", "Client", 10, "N"), ("SUPPLIER", "Supplier", 20, "N"),
                     ("COMPETITOR", "Competitor", 30, "N"), ("PARTNER", "Partner", 40, "N"),
                     ("OTHER", "Other", 50, "N")),
    "EMPLOYEES": (("EMPLOYEES_1", "fewer than 50", 10, "Y"), ("EMPLOYEES_2", "50-250", 20, "N"),
                  ("EMPLOYEES_3", "250-500", 30, "N"), ("EMPLOYEES_4", "over 500", 40, "N")),
    "INDUSTRY": (("IT", "Information Technology", 10, "N"), ("TELECOM", "Telecommunication", 20, "N"),
                 ("MANUFACTURING", "Manufacturing", 30, "N"), ("BANKING", "Banking Services", 40, "N"),
                 ("CONSULTING", "Consulting", 50, "N"), ("FINANCE", "Finance", 60, "N"),
                 ("GOVERNMENT", "Government", 70, "N"), ("DELIVERY", "Delivery", 80, "N"),
                 ("ENTERTAINMENT", "Entertainment", 90, "N"), ("NOTPROFIT", "Not for profit", 100, "N"),
                 ("OTHER", "Other", 110, "Y")),
    "DEAL_TYPE": (("SALE", "Sales", 10, "Y"), ("COMPLEX", "Integrated sale", 20, "N"),
                  ("GOODS", "Merchandise sales", 30, "N"), ("SERVICES", "Service sales", 40, "N"),
                  ("SERVICE", "After-sales service", 50, "N")),
    "HONORIFIC": (("HNR_EN_1", "Mr.", 10, "N"), ("HNR_EN_2", "Mrs.", 20, "N"), ("HNR_EN_3", "Ms.", 30, "N"),
                  ("HNR_EN_4", "Dr.", 40, "N")),
}
DICTIONARY_NAMES = {"SOURCE": "Sources", "CONTACT_TYPE": "Contact type", "COMPANY_TYPE": "Company type",
                    "EMPLOYEES": "Number of employees", "INDUSTRY": "Industry", "DEAL_TYPE": "Deal type",
                    "HONORIFIC": "Salutations"}

# (code, full name, rate in roubles); the base currency's rate is 1 and the others follow from these.
CURRENCIES = (("RUB", "Russian Ruble", 1.0, "# RUB"), ("USD", "US Dollar", 90.0, "$#"),
              ("EUR", "Euro", 98.0, "€#"))

_STATUS_FIELDS = {  # crm.status.fields (the docs' page, in its order)
    "ID": ("integer", False, True, False, "ID"),
    "ENTITY_ID": ("string", True, False, True, "Entity ID"),
    "STATUS_ID": ("string", True, False, True, "Status"),
    "SORT": ("integer", False, False, False, "Sorting"),
    "NAME": ("string", True, False, False, "Name"),
    "NAME_INIT": ("string", False, True, False, "Default Name"),
    "SYSTEM": ("char", False, True, False, "System"),
    "CATEGORY_ID": ("integer", False, False, True, "CATEGORY_ID"),
    "COLOR": ("string", False, False, False, "COLOR"),
    "SEMANTICS": ("char", False, False, True, "SEMANTICS"),
    "EXTRA": ("crm_status_extra", False, False, False, "Additional Fields"),
}
_CATEGORY_FIELDS = {  # crm.category.fields
    "id": ("integer", False, True, "ID", "ID"), "name": ("string", False, False, "NAME", "NAME"),
    "sort": ("integer", False, False, "SORT", "SORT"),
    "entityTypeId": ("integer", True, True, "ENTITY_TYPE_ID", "ENTITY_TYPE_ID"),
    "isDefault": ("boolean", False, True, "IS_DEFAULT", "IS_DEFAULT"),
    "originId": ("string", False, False, "ORIGIN_ID", "ORIGIN_ID"),
    "originatorId": ("string", False, False, "ORIGINATOR_ID", "ORIGINATOR_ID"),
}
_CURRENCY_FIELDS = {  # crm.currency.fields: (type, read-only, multiple, title)
    "CURRENCY": ("string", False, False, "Currency"), "AMOUNT_CNT": ("int", False, False, "Face value"),
    "AMOUNT": ("double", False, False, "Exchange rate"), "BASE": ("char", True, False, "Base currency"),
    "SORT": ("int", False, False, "Sorting"), "DATE_UPDATE": ("datetime", True, False, "Date modified"),
    "LID": ("string", True, False, "Website"),
    "FORMAT_STRING": ("string", True, False, "Currency output format string"),
    "FULL_NAME": ("string", True, False, "Name"), "DEC_POINT": ("string", True, False, "Decimal point for output"),
    "THOUSANDS_SEP": ("string", True, False, "Custom thousands separator for output"),
    "DECIMALS": ("int", True, False, "Number of decimal places"),
    "LANG": ("currency_localization", False, True, "Language binding"),
}
# crm.stagehistory.list: the fields of each record, by kind of owner.
_HISTORY_COMMON = {"ID": Field("integer", "ID"), "TYPE_ID": Field("integer", "Type"),
                   "OWNER_ID": Field("integer", "Owner"), "CREATED_TIME": Field("datetime", "Created")}
_HISTORY_STAGE = {**_HISTORY_COMMON, "CATEGORY_ID": Field("integer", "Pipeline"),
                  "STAGE_SEMANTIC_ID": Field("string", "Semantics"), "STAGE_ID": Field("string", "Stage")}
_HISTORY_STATUS = {**_HISTORY_COMMON, "STATUS_SEMANTIC_ID": Field("string", "Semantics"),
                   "STATUS_ID": Field("string", "Status")}
HISTORY_CREATED, HISTORY_INTERMEDIATE, HISTORY_FINAL, HISTORY_CATEGORY = 1, 2, 3, 5

STAGE_SORT_AFTER_WON = ("Cannot create more stages after the final stage because the final successful stage "
                        "already exists. Try using sort order values less than that of the final stage.")


def _describe(type_, required, read_only, immutable, title, multiple=False) -> dict:
    return {"type": type_, "isRequired": required, "isReadOnly": read_only, "isImmutable": immutable,
            "isMultiple": multiple, "isDynamic": False, "title": title}


def _engine_error(code, description: str) -> ApiError:
    return ApiError(code, description, 400)


def _flag(value) -> str | None:
    text = (php_string(value) or "").strip().upper() if not is_array(value) else ""
    return "Y" if text in ("Y", "1", "TRUE") else "N" if text in ("N", "0", "FALSE") else None


class State:
    """One portal's dictionaries, pipelines, currencies and stage history."""

    def __init__(self, portal):
        self.portal = portal
        self.clock = portal.clock
        self.currency_check = bool(getattr(portal, "currency_check", True))
        self.statuses: dict[int, dict] = {}
        self._next_status_id = 1
        self._by_entity: dict[str, list[dict]] | None = None
        # Pipelines by entityTypeId, then id. Deal pipelines have their own numbering (0 is the default);
        # every other type's pipelines share one portal-wide numbering, which the item store started.
        self.categories: dict[int, dict[int, dict]] = {}
        items = getattr(portal, "item_store", None)
        titles = dict(items.titles) if items is not None else {}
        defaults = {t: c for t, c in (items.default_category if items is not None else {}).items() if c is not None}
        self.smart_titles = titles
        self._next_deal_category = 1
        self._next_item_category = max(defaults.values(), default=0) + 1
        self.history: dict[int, list[dict]] = {}
        self._next_history_id = 1
        self._seed(titles, defaults)
        base = str(getattr(getattr(portal, "store", None), "currency", None) or "RUB")
        self._seed_currencies(base)

    # ---- seeding ----------------------------------------------------------------------------------

    def _seed(self, titles: dict[int, str], defaults: dict[int, int]) -> None:
        self._add_stages("STATUS", LEAD_STATUSES, prefix="", category=None)
        for entity_id, rows in DICTIONARIES.items():
            for status_id, name, sort, system in rows:
                self._insert(entity_id, status_id, name, sort, system, None, None, None, system == "Y")
            if entity_id == "DEAL_TYPE":
                self.categories[DEAL] = {0: {"id": 0, "name": "General", "sort": 100, "isDefault": "Y"}}
                self._add_stages("DEAL_STAGE", DEAL_STAGES, prefix="", category=None)
        for type_id in titles:
            category_id = defaults[type_id]
            self.categories[type_id] = {category_id: {"id": category_id, "name": "General", "sort": 500,
                                                      "isDefault": "Y"}}
            self._add_stages(f"DYNAMIC_{type_id}_STAGE_{category_id}", SMART_STAGES,
                             prefix=f"DT{type_id}_{category_id}:", category=category_id)
        self._add_stages("QUOTE_STATUS", QUOTE_STATUSES, prefix="", category=None)
        for type_id in (SMART_INVOICE, CONTACT, COMPANY):
            category_id = defaults.get(type_id)
            if category_id is None:
                category_id = self._next_item_category
                self._next_item_category += 1
            self.categories[type_id] = {category_id: {"id": category_id, "name": "General", "sort": 500,
                                                      "isDefault": "Y"}}
            if type_id == SMART_INVOICE:
                self._add_stages(f"SMART_INVOICE_STAGE_{category_id}", INVOICE_STAGES,
                                 prefix=f"DT31_{category_id}:", category=category_id)

    def _insert(self, entity_id, status_id, name, sort, system, color, semantics, category, keep_name) -> dict:
        row = {"ID": self._next_status_id, "ENTITY_ID": entity_id, "STATUS_ID": status_id, "NAME": name,
               "NAME_INIT": name if keep_name else "", "SORT": int(sort), "SYSTEM": system,
               "CATEGORY_ID": category, "COLOR": color, "SEMANTICS": semantics}
        self.statuses[row["ID"]] = row
        self._next_status_id += 1
        self._by_entity = None
        return row

    def _add_stages(self, entity_id: str, rows, prefix: str, category) -> None:
        for status_id, name, sort, system, color, semantics in rows:
            self._insert(entity_id, prefix + status_id, name, sort, system, color, semantics, category,
                         system == "Y")

    def _seed_currencies(self, base: str) -> None:
        self.currencies: dict[str, dict] = {}
        rates = {code: rate for code, _, rate, _ in CURRENCIES}
        base_rate = rates.get(base, 1.0)
        known = {code: (name, fmt) for code, name, _, fmt in CURRENCIES}
        order = [base] + [code for code, *_ in CURRENCIES if code != base]
        for i, code in enumerate(order):
            name, fmt = known.get(code, (code, f"# {code}"))
            amount = 1.0 if code == base else rates[code] / base_rate
            self.currencies[code] = self._currency_row(code, name, fmt, amount, 1, (i + 1) * 100)
        self.base_currency = base

    def _currency_row(self, code, name, fmt, amount, amount_cnt, sort) -> dict:
        return {"CURRENCY": code, "AMOUNT_CNT": str(int(amount_cnt)), "AMOUNT": f"{float(amount):.4f}",
                "SORT": str(int(sort)), "BASE": "N", "FULL_NAME": name, "LID": "en", "FORMAT_STRING": fmt,
                "DEC_POINT": ".", "THOUSANDS_SEP": None, "DECIMALS": "2", "DATE_UPDATE": self.clock.iso(),
                "LANG": {"en": {"FORMAT_STRING": fmt, "FULL_NAME": name, "DEC_POINT": ".", "THOUSANDS_SEP": None,
                                "DECIMALS": "2", "THOUSANDS_VARIANT": "C", "HIDE_ZERO": "Y"}}}

    # ---- the API other families use --------------------------------------------------------------

    def stage_entity(self, entity_type_id: int, category_id) -> str | None:
        """The ``ENTITY_ID`` holding the stages of a pipeline (None: the type has no stages here)."""
        entity_type_id = int(entity_type_id)
        if entity_type_id == LEAD:
            return "STATUS"
        if entity_type_id == QUOTE:
            return "QUOTE_STATUS"
        category = int(category_id or 0)
        if entity_type_id == DEAL:
            return "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        if entity_type_id in self.smart_titles:
            return f"DYNAMIC_{entity_type_id}_STAGE_{category}"
        if entity_type_id == SMART_INVOICE:
            return f"SMART_INVOICE_STAGE_{category}"
        return None

    def _rows(self, entity_id: str) -> list[dict]:
        if self._by_entity is None:
            grouped: dict[str, list[dict]] = {}
            for row in self.statuses.values():
                grouped.setdefault(row["ENTITY_ID"], []).append(row)
            for rows in grouped.values():
                rows.sort(key=lambda r: (r["SORT"], r["ID"]))
            self._by_entity = grouped
        return self._by_entity.get(entity_id, [])

    def stage_ids(self, entity_type_id: int, category_id=0) -> list[str]:
        """The stage (lead: status) ids of a pipeline, in kanban order."""
        entity_id = self.stage_entity(entity_type_id, category_id)
        return [r["STATUS_ID"] for r in self._rows(entity_id)] if entity_id else []

    def stage_semantic(self, entity_type_id: int, category_id, stage_id) -> str | None:
        """``P``, ``S`` or ``F`` for a stage of the pipeline; None if it is not one of its stages."""
        entity_id = self.stage_entity(entity_type_id, category_id)
        for row in self._rows(entity_id) if entity_id else ():
            if row["STATUS_ID"] == stage_id:
                return row["SEMANTICS"] or "P"
        return None

    def resolve_stage(self, entity_type_id: int, category_id, stage_id) -> str | None:
        """The stage a new record gets: ``stage_id`` if it is one of the pipeline's, else the first stage
        of the pipeline with the same semantics as ``stage_id`` has elsewhere (in progress if unknown),
        as the portal's factory picks it (``Bitrix\\Crm\\Field\\Stage``); the legacy path also ends at
        the first stage for an unknown one."""
        ids = self.stage_ids(entity_type_id, category_id)
        if not ids:
            return stage_id
        if stage_id in ids:
            return stage_id
        wanted = "P"
        entity_id = self.stage_entity(entity_type_id, category_id)
        family = entity_id.rsplit("_", 1)[0] + "_" if entity_id[-1].isdigit() else entity_id + "_"
        for row in self.statuses.values():  # the type's other pipelines (a lead has only its statuses)
            if stage_id and row["STATUS_ID"] == stage_id and (row["ENTITY_ID"] + "_").startswith(family):
                wanted = row["SEMANTICS"] or "P"
                break
        for row in self._rows(entity_id):
            if (row["SEMANTICS"] or "P") == wanted:
                return row["STATUS_ID"]
        return ids[0]

    def first_stage(self, entity_type_id: int, category_id=0) -> str | None:
        ids = self.stage_ids(entity_type_id, category_id)
        return ids[0] if ids else None

    def category_exists(self, entity_type_id: int, category_id) -> bool:
        return int(category_id) in self.categories.get(int(entity_type_id), {})

    def currency_ids(self) -> list[str]:
        return list(self.currencies)

    def currency_valid(self, code) -> bool:
        """Whether a record may carry ``CURRENCY_ID=code``.

        Newer portals save deals, leads and companies through the CRM factory (the ``*_enable_factory``
        settings default to on), whose ``Bitrix\\Crm\\Field\\CurrencyId`` refuses a code that is not a
        portal currency; the docs of crm.deal.add list that refusal (`Invalid value for the "Currency"
        field`). The older ``CCrmDeal::CheckFields`` path stored any code. ``currency_check=False``
        (an emulator option) gives the older behaviour; the default is a new cloud portal's.
        https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-add.html
        """
        return not self.currency_check or code in self.currencies

    def record_stage(self, entity_type_id: int, owner_id: int, category_id, stage_id: str,
                     kind: int | None = None) -> None:
        """Write one stage-history record (``kind``: 1 created, 2 intermediate, 3 final, 5 pipeline
        changed; None: 2 or 3 from the stage's semantics)."""
        entity_type_id = int(entity_type_id)
        semantic = self.stage_semantic(entity_type_id, category_id, stage_id) or "P"
        if kind is None:
            kind = HISTORY_INTERMEDIATE if semantic == "P" else HISTORY_FINAL
        record = {"ID": str(self._next_history_id), "TYPE_ID": str(kind), "OWNER_ID": str(int(owner_id)),
                  "CREATED_TIME": self.clock.iso()}
        if entity_type_id == LEAD:
            record.update(STATUS_SEMANTIC_ID=semantic, STATUS_ID=stage_id)
        else:
            record.update(CATEGORY_ID=str(int(category_id or 0)), STAGE_SEMANTIC_ID=semantic, STAGE_ID=stage_id)
        self._next_history_id += 1
        self.history.setdefault(entity_type_id, []).append(record)

    # ---- crm.status.* ------------------------------------------------------------------------------

    def _status_output(self, row: dict, extra: bool = True) -> dict:
        out = {"ID": str(row["ID"]), "ENTITY_ID": row["ENTITY_ID"], "STATUS_ID": row["STATUS_ID"],
               "NAME": row["NAME"], "NAME_INIT": row["NAME_INIT"], "SORT": str(row["SORT"]),
               "SYSTEM": row["SYSTEM"],
               "CATEGORY_ID": None if row["CATEGORY_ID"] is None else str(row["CATEGORY_ID"]),
               "COLOR": row["COLOR"], "SEMANTICS": row["SEMANTICS"]}
        entity_id = row["ENTITY_ID"]
        if extra and (entity_id in ("STATUS", "DEAL_STAGE") or entity_id.startswith("DEAL_STAGE_")):
            # CCrmStatusRestProxy::prepareExtra: lead and deal stages only; a failure stage after the
            # first one is an "apology".
            semantics = {"S": "success", "F": "failure"}.get(row["SEMANTICS"] or "", "process")
            if semantics == "failure":
                first = next(r for r in self._rows(entity_id) if r["SEMANTICS"] == "F")
                semantics = "failure" if first is row else "apology"
            out["EXTRA"] = {"SEMANTICS": semantics, "COLOR": row["COLOR"] or ""}
        return out

    def status_list(self, params: dict) -> Outcome:
        """CCrmStatus::GetList: exact matches on ID, ENTITY_ID, STATUS_ID, SORT, SYSTEM, CATEGORY_ID,
        SEMANTICS (keys in any case, empty values skipped), a substring on NAME; SORT ascending unless
        ``order`` says otherwise, and a direction other than ASC sorts descending. Not paged."""
        filter_param = _param(params, "filter")
        order_param = _param(params, "order")
        conditions = []
        for key, value in array_items(filter_param):
            name = key.upper()
            if is_array(value):
                if name in ("ENTITY_ID", "STATUS_ID", "SORT", "SEMANTICS"):
                    raise crm_error(f"Filter by {name} must be a string")
                continue
            text = php_string(value) or ""
            if text == "" or name not in _STATUS_FIELDS:
                continue
            conditions.append((name, text))
        rows = [r for r in self.statuses.values() if all(_status_matches(r, n, v) for n, v in conditions)]
        order = [(k.upper(), (php_string(v) or "").upper() != "ASC") for k, v in array_items(order_param)
                 if not is_array(v) and k.upper() in _STATUS_FIELDS] or [("SORT", False)]
        rows.sort(key=lambda r: r["ID"])
        for name, descending in reversed(order):
            rows.sort(key=lambda r, n=name: _status_sort_key(r, n), reverse=descending)
        return Outcome([self._status_output(r) for r in rows], len(rows))

    def _require_status(self, params: dict, missing: str) -> dict:
        status_id = php_int(params.get("id", params.get("ID", 0))) if not is_array(params.get("id")) else 0
        if status_id <= 0:
            raise crm_error("ID is not defined or invalid.")
        row = self.statuses.get(status_id)
        if row is None:
            raise crm_error(missing)
        return row

    def status_add(self, params: dict) -> int:
        fields = _fields(params)
        entity_id = _text(fields.get("ENTITY_ID"))
        status_id = _text(fields.get("STATUS_ID"))
        if entity_id == "" or status_id == "":
            missing = [f"The field {n} is required." for n, v in (("ENTITY_ID", entity_id), ("STATUS_ID", status_id))
                       if v == ""]
            raise crm_error("\n".join(missing))
        types = {t["ID"]: t for t in self.entity_types()}
        if entity_id not in types:
            raise crm_error("Specified entity type is not supported.")
        name = _text(fields.get("NAME"))
        if name == "":
            raise crm_error("The field Title is required.")
        prefix = types[entity_id].get("PREFIX")
        if prefix and not status_id.startswith(f"{prefix}:"):
            status_id = f"{prefix}:{status_id}"  # DECISION in DEAL_STAGE_1 is stored as C1:DECISION
        if any(r["STATUS_ID"] == status_id for r in self._rows(entity_id)):
            raise ApiError("ERROR_CORE", "The specified status ID already exists.", 400)
        sort = php_int(fields.get("SORT")) if _text(fields.get("SORT")) != "" else 10
        semantics = _text(fields.get("SEMANTICS")).upper() or None
        semantics = semantics if semantics in ("S", "F") else None
        is_deal_stage = entity_id == "DEAL_STAGE" or entity_id.startswith("DEAL_STAGE_")
        if is_deal_stage and semantics is None:
            won = next((r for r in self._rows(entity_id) if r["SEMANTICS"] == "S"), None)
            if won is not None and sort > won["SORT"]:
                raise crm_error(STAGE_SORT_AFTER_WON)
        extra = fields.get("EXTRA") if isinstance(fields.get("EXTRA"), dict) else {}
        color = _text(fields.get("COLOR")) or _text(extra.get("COLOR"))
        category = types[entity_id].get("CATEGORY_ID")
        row = self._insert(entity_id, status_id, name, sort, "N", color, semantics,
                           None if category in (None, 0) else int(category), False)
        return row["ID"]

    def status_update(self, params: dict) -> bool:
        row = self._require_status(params, "Status is not found.")
        fields = _fields(params)
        extra = fields.get("EXTRA") if isinstance(fields.get("EXTRA"), dict) else {}
        if "NAME" in fields and _text(fields["NAME"]) != "":
            row["NAME"] = _text(fields["NAME"])
        if "SORT" in fields and _text(fields["SORT"]) != "":
            row["SORT"] = php_int(fields["SORT"])
        color = fields.get("COLOR", extra.get("COLOR"))
        if color is not None and not is_array(color):
            row["COLOR"] = _text(color)
        self._by_entity = None
        return True

    def status_delete(self, params: dict) -> bool:
        row = self._require_status(params, "Status is not found.")
        method_params = _param(params, "params")
        forced = (php_string(dict(array_items(method_params)).get("FORCED")) or "") == "Y"
        if row["SYSTEM"] == "Y" and not forced:
            raise crm_error('CRM System Status can be deleted only if parameter FORCED is specified and equal to "Y".')
        if self._in_use(row):
            raise crm_error("There are active items in this status.")
        del self.statuses[row["ID"]]
        self._by_entity = None
        return True

    def _in_use(self, row: dict) -> bool:
        """CCrmStatus::existsEntityWithStatus, for the stage dictionaries this emulator serves."""
        entity_id, status_id = row["ENTITY_ID"], row["STATUS_ID"]
        store = getattr(self.portal, "store", None)
        if store is not None and entity_id == "STATUS":
            return any(r.get("STATUS_ID") == status_id for r in store.records.get("lead", {}).values())
        if store is not None and (entity_id == "DEAL_STAGE" or entity_id.startswith("DEAL_STAGE_")):
            category = str(row["CATEGORY_ID"] or 0)
            return any(r.get("STAGE_ID") == status_id and r.get("CATEGORY_ID") == category
                       for r in store.records.get("deal", {}).values())
        items = getattr(self.portal, "item_store", None)
        type_id = int(entity_id.split("_")[1]) if entity_id.startswith("DYNAMIC_") else \
            SMART_INVOICE if entity_id.startswith("SMART_INVOICE_STAGE_") else QUOTE if entity_id == "QUOTE_STATUS" \
            else None
        if items is not None and type_id is not None:
            return any(r.get("stageId") == status_id for r in items.records.get(type_id, {}).values())
        return False

    def entity_types(self) -> list[dict]:
        """crm.status.entity.types, in the order the docs' example lists them."""
        out: list[dict] = [{"ID": "STATUS", "NAME": "Lead stages",
                            "SEMANTIC_INFO": {"START_FIELD": "NEW", "FINAL_SUCCESS_FIELD": "CONVERTED",
                                              "FINAL_UNSUCCESS_FIELD": "JUNK", "FINAL_SORT": 0},
                            "ENTITY_TYPE_ID": LEAD}]
        for entity_id in ("SOURCE", "CONTACT_TYPE", "COMPANY_TYPE", "EMPLOYEES", "INDUSTRY", "DEAL_TYPE"):
            out.append({"ID": entity_id, "NAME": DICTIONARY_NAMES[entity_id]})
        deal_categories = self.categories[DEAL]
        for category_id in sorted(c for c in deal_categories if c):
            prefix = f"C{category_id}"
            name = deal_categories[category_id]["name"]
            out.append({"ID": f"DEAL_STAGE_{category_id}", "NAME": f"{name} deal stages", "PARENT_ID": "DEAL_STAGE",
                        "SEMANTIC_INFO": {"START_FIELD": f"{prefix}:NEW", "FINAL_SUCCESS_FIELD": f"{prefix}:WON",
                                          "FINAL_UNSUCCESS_FIELD": f"{prefix}:LOSE", "FINAL_SORT": 0},
                        "PREFIX": prefix, "FIELD_ATTRIBUTE_SCOPE": f"category_{category_id}",
                        "ENTITY_TYPE_ID": DEAL, "CATEGORY_ID": str(category_id)})
        out.append({"ID": "DEAL_STAGE", "NAME": f"{deal_categories[0]['name']} deal stages",
                    "SEMANTIC_INFO": {"START_FIELD": "NEW", "FINAL_SUCCESS_FIELD": "WON",
                                      "FINAL_UNSUCCESS_FIELD": "LOSE", "FINAL_SORT": 0},
                    "FIELD_ATTRIBUTE_SCOPE": "", "ENTITY_TYPE_ID": DEAL, "CATEGORY_ID": 0})
        out.append({"ID": "QUOTE_STATUS", "NAME": "Quote stages",
                    "SEMANTIC_INFO": {"START_FIELD": "DRAFT", "FINAL_SUCCESS_FIELD": "APPROVED",
                                      "FINAL_UNSUCCESS_FIELD": "DECLAINED", "FINAL_SORT": 0},
                    "ENTITY_TYPE_ID": QUOTE})
        out.append({"ID": "HONORIFIC", "NAME": DICTIONARY_NAMES["HONORIFIC"]})
        for category_id in sorted(self.categories[SMART_INVOICE]):
            out.append({"ID": f"SMART_INVOICE_STAGE_{category_id}", "NAME": "Invoice stages", "SEMANTIC_INFO": [],
                        "PREFIX": f"DT31_{category_id}", "FIELD_ATTRIBUTE_SCOPE": f"category_{category_id}",
                        "ENTITY_TYPE_ID": SMART_INVOICE, "IS_ENABLED": True, "CATEGORY_ID": category_id})
        for type_id, title in self.smart_titles.items():
            for category in sorted(self.categories.get(type_id, {}).values(), key=lambda c: c["id"]):
                category_id = category["id"]
                out.append({"ID": f"DYNAMIC_{type_id}_STAGE_{category_id}", "NAME": f"{title} ({category['name']})",
                            "SEMANTIC_INFO": [], "PREFIX": f"DT{type_id}_{category_id}",
                            "FIELD_ATTRIBUTE_SCOPE": f"category_{category_id}", "ENTITY_TYPE_ID": type_id,
                            "IS_ENABLED": True, "CATEGORY_ID": category_id, "CATEGORY_NAME": category["name"],
                            "CATEGORY_SORT": category["sort"], "IS_DEFAULT_CATEGORY": category["isDefault"] == "Y"})
        return out

    def entity_items(self, params: dict) -> list[dict]:
        raw = params.get("entityId", params.get("ENTITY_ID", params.get("entityID", "")))
        if raw is None or raw == "":
            raise crm_error("The parameter entityId is not defined or invalid.")
        if is_array(raw):
            raise crm_error("The parameter entityId must be a string.")
        return [{"NAME": r["NAME"], "SORT": r["SORT"], "STATUS_ID": r["STATUS_ID"]}
                for r in self._rows((php_string(raw) or "").upper())]

    # ---- crm.category.* ----------------------------------------------------------------------------

    def _category_type(self, params: dict) -> int:
        raw = params.get("entityTypeId", params.get("ENTITY_TYPE_ID"))
        type_id = 0 if raw is None or is_array(raw) else php_int(raw)
        if type_id in self.categories:
            return type_id
        if type_id in TYPE_NAMES:
            raise _engine_error("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type {TYPE_NAMES[type_id]} is not supported")
        raise _engine_error("NOT_FOUND", "Smart process not found")

    def _category_output(self, type_id: int, category: dict) -> dict:
        out = {"id": category["id"], "name": category["name"], "sort": category["sort"], "entityTypeId": type_id,
               "isDefault": category["isDefault"]}
        if type_id == DEAL and category["id"] != 0:
            out.update(originId=category.get("originId", ""), originatorId=category.get("originatorId", ""))
        return out

    def _require_category(self, type_id: int, params: dict) -> dict:
        raw = params.get("id", params.get("ID"))
        category = self.categories[type_id].get(-1 if raw is None or is_array(raw) else php_int(raw))
        if category is None:
            raise _engine_error("NOT_FOUND", "Element not found")
        return category

    def category_list(self, params: dict) -> Outcome:
        type_id = self._category_type(params)
        rows = sorted(self.categories[type_id].values(), key=lambda c: (c["sort"], c["id"]))
        return Outcome({"categories": [self._category_output(type_id, c) for c in rows]}, len(rows))

    def category_get(self, params: dict) -> dict:
        type_id = self._category_type(params)
        return {"category": self._category_output(type_id, self._require_category(type_id, params))}

    def _category_values(self, fields) -> dict:
        values = {}
        for key, value in array_items(fields):
            if key == "name" and not is_array(value):
                values["name"] = (php_string(value) or "").strip()
            elif key == "sort" and not is_array(value):
                values["sort"] = max(php_int(value), 0)  # a negative sort becomes 0
            elif key == "isDefault":
                values["isDefault"] = _flag(value)
            elif key in ("originId", "originatorId") and not is_array(value):
                values[key] = php_string(value) or ""
        return values

    def category_add(self, params: dict) -> dict:
        type_id = self._category_type(params)
        values = self._category_values(params.get("fields"))
        if not values.get("name"):
            raise _engine_error(0, "Field 'NAME' is required")
        wants_default = values.get("isDefault") == "Y"
        if wants_default and type_id in (CONTACT, COMPANY):
            raise _engine_error(0, "Default client category does not support updating default state")
        if type_id == DEAL:
            category_id = self._next_deal_category
            self._next_deal_category += 1
        else:
            category_id = self._next_item_category
            self._next_item_category += 1
        category = {"id": category_id, "name": values["name"], "sort": values.get("sort", 500), "isDefault": "N"}
        if type_id == DEAL:
            category.update(originId=values.get("originId", ""), originatorId=values.get("originatorId", ""))
        elif wants_default:
            self._make_default(type_id, category)
        self.categories[type_id][category_id] = category
        # A new pipeline comes with the portal's default stages.
        if type_id == DEAL:
            self._add_stages(f"DEAL_STAGE_{category_id}", DEAL_STAGES, prefix=f"C{category_id}:", category=category_id)
        elif type_id in self.smart_titles:
            self._add_stages(f"DYNAMIC_{type_id}_STAGE_{category_id}", SMART_STAGES,
                             prefix=f"DT{type_id}_{category_id}:", category=category_id)
        elif type_id == SMART_INVOICE:
            self._add_stages(f"SMART_INVOICE_STAGE_{category_id}", INVOICE_STAGES,
                             prefix=f"DT31_{category_id}:", category=category_id)
        return {"category": self._category_output(type_id, category)}

    def _make_default(self, type_id: int, category: dict) -> None:
        for other in self.categories[type_id].values():
            other["isDefault"] = "N"
        category["isDefault"] = "Y"

    def category_update(self, params: dict) -> dict:
        type_id = self._category_type(params)
        category = self._require_category(type_id, params)
        values = self._category_values(params.get("fields"))
        if "name" in values and values["name"]:
            category["name"] = values["name"]
        if "sort" in values:
            category["sort"] = values["sort"]
        if type_id == DEAL:
            for key in ("originId", "originatorId"):
                if key in values and category["id"] != 0:
                    category[key] = values[key]
        elif values.get("isDefault") == "Y" and type_id not in (CONTACT, COMPANY):
            self._make_default(type_id, category)  # the old default stops being one; "N" never demotes
        return {"category": self._category_output(type_id, category)}

    def category_delete(self, params: dict) -> None:
        type_id = self._category_type(params)
        category = self._require_category(type_id, params)
        category_id = category["id"]
        if type_id == DEAL:
            if category_id == 0:
                raise _engine_error(0, "Default deal category cannot be deleted")
            store = getattr(self.portal, "store", None)
            deals = store.records.get("deal", {}).values() if store is not None else ()
            if any(r.get("CATEGORY_ID") == str(category_id) for r in deals):
                raise _engine_error(0, f"Deals related to the funnel {category['name']} found")
        else:
            if category["isDefault"] == "Y":
                raise _engine_error("BX_ERROR", "This funnel is the default funnel")
            items = getattr(self.portal, "item_store", None)
            records = items.records.get(type_id, {}).values() if items is not None else ()
            if any(r.get("categoryId") == category_id for r in records):
                raise _engine_error("BX_ERROR", "Elements related to the funnel found")
        del self.categories[type_id][category_id]
        entity_id = self.stage_entity(type_id, category_id)
        if entity_id:
            for row in list(self._rows(entity_id)):
                del self.statuses[row["ID"]]
            self._by_entity = None
        return None

    # ---- crm.currency.* ----------------------------------------------------------------------------

    def _currency_output(self, row: dict, with_lang: bool) -> dict:
        out = {k: v for k, v in row.items() if k != "LANG"}
        out["BASE"] = "Y" if row["CURRENCY"] == self.base_currency else "N"
        if with_lang:
            out["LANG"] = copy.deepcopy(row["LANG"])
        return out

    def _require_currency(self, params: dict) -> dict:
        raw = params.get("id", params.get("ID"))
        code = "" if raw is None or is_array(raw) else (php_string(raw) or "").upper()
        row = self.currencies.get(code)
        if row is None:
            raise crm_error("Not found")
        return row

    def currency_list(self, params: dict) -> Outcome:
        rows = sorted(self.currencies.values(), key=lambda r: r["CURRENCY"])
        rows.sort(key=lambda r: int(r["SORT"]))
        order = [(k.upper(), (php_string(v) or "").lower() == "desc") for k, v in array_items(_param(params, "order"))
                 if not is_array(v) and k.upper() in _CURRENCY_FIELDS and k.upper() != "LANG"]
        for name, descending in reversed(order):
            numeric = name in ("SORT", "AMOUNT", "AMOUNT_CNT", "DECIMALS")
            rows.sort(key=lambda r, n=name, num=numeric: float(r[n]) if num else (r[n] or ""), reverse=descending)
        # The docs: "total ... currently always has a value of 0".
        return Outcome([self._currency_output(r, False) for r in rows], 0)

    def currency_add(self, params: dict) -> str:
        fields = _fields(params)
        for name in ("CURRENCY", "AMOUNT_CNT", "AMOUNT"):
            if name not in fields:
                raise ApiError("ERROR_CORE", f'Undefined array key "{name}"', 400)
        code = _text(fields["CURRENCY"]).upper()
        if len(code) != 3 or code in self.currencies:
            raise ApiError("ERROR_CORE", f"Currency {code!r} cannot be added", 400)
        lang = fields.get("LANG") if isinstance(fields.get("LANG"), dict) else {}
        en = lang.get("en") if isinstance(lang.get("en"), dict) else {}
        name = _text(en.get("FULL_NAME")) or code
        fmt = _text(en.get("FORMAT_STRING")) or f"# {code}"
        sort = php_int(fields["SORT"]) if _text(fields.get("SORT")) != "" else 100
        self.currencies[code] = self._currency_row(code, name, fmt, _number(fields["AMOUNT"]),
                                                   php_int(fields["AMOUNT_CNT"]) or 1, sort)
        if _flag(fields.get("BASE")) == "Y":
            self.base_currency = code
        return code

    def currency_update(self, params: dict) -> bool:
        row = self._require_currency(params)
        fields = _fields(params)
        if _text(fields.get("AMOUNT")) != "":
            row["AMOUNT"] = f"{_number(fields['AMOUNT']):.4f}"
        if _text(fields.get("AMOUNT_CNT")) != "":
            row["AMOUNT_CNT"] = str(php_int(fields["AMOUNT_CNT"]))
        if _text(fields.get("SORT")) != "":
            row["SORT"] = str(php_int(fields["SORT"]))
        if _flag(fields.get("BASE")) == "Y":
            self.base_currency = row["CURRENCY"]
        row["DATE_UPDATE"] = self.clock.iso()
        return True

    def currency_delete(self, params: dict) -> bool:
        row = self._require_currency(params)
        if row["CURRENCY"] == self.base_currency:
            raise crm_error("Cannot delete base currency.")
        del self.currencies[row["CURRENCY"]]
        return True

    def currency_base_set(self, params: dict) -> bool:
        raw = params.get("id", params.get("ID"))
        code = "" if raw is None or is_array(raw) else (php_string(raw) or "").upper()
        if code not in self.currencies:
            return False  # "false: the operation could not be completed, but there is no error"
        self.base_currency = code
        return True

    # ---- crm.stagehistory.list ---------------------------------------------------------------------

    def stagehistory_list(self, params: dict) -> Outcome:
        raw = params.get("entityTypeId")
        type_id = 0 if raw is None or is_array(raw) else php_int(raw)
        if type_id not in (LEAD, DEAL, 5, SMART_INVOICE) and type_id not in self.smart_titles:
            name = TYPE_NAMES.get(type_id, str(type_id))
            raise _engine_error("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type {name} is not supported")
        defs = _HISTORY_STATUS if type_id in (LEAD, 5) else _HISTORY_STAGE
        filter_param = params.get("filter") if is_array(params.get("filter")) else {}
        order_param = params.get("order") if is_array(params.get("order")) else {}
        for key, _ in array_items(filter_param):
            _, name = split_operator(key)
            if name not in defs:
                raise _engine_error("INVALID_ARG_VALUE", f"Invalid filter: field '{name}' is not allowed in filter")
        for name, direction in array_items(order_param):
            if name not in defs:
                raise _engine_error("INVALID_ARG_VALUE", f"Invalid order: field '{name}' is not allowed in order")
            text = "" if is_array(direction) else (php_string(direction) or "")
            if text.upper() not in ("ASC", "DESC"):
                raise _engine_error("INVALID_ARG_VALUE", "Invalid order: allowed sort directions are ASC, DESC. "
                                                         f"But got '{text}' for field '{name}'")
        predicate = build_filter(filter_param, defs, self.clock)
        rows = [r for r in self.history.get(type_id, []) if predicate(r)]
        rows = sort_records(rows, build_order(order_param, defs), defs, self.clock)
        wanted = [v for v in array_values(params.get("select")) if isinstance(v, str)] \
            if is_array(params.get("select")) else []
        names = [n for n in defs if not wanted or "*" in wanted or n in wanted]
        start = php_int(params.get("start", 0))

        def page_of(page):
            return {"items": [{n: r[n] for n in names} for r in page]}

        if start < 0:
            return Outcome(page_of(rows[:PAGE_SIZE]))
        offset = (start // PAGE_SIZE) * PAGE_SIZE
        page = rows[offset:offset + PAGE_SIZE]
        following = offset + len(page)
        return Outcome(page_of(page), len(rows), following if following < len(rows) else None)


# ---- helpers ---------------------------------------------------------------------------------------

def _param(params: dict, name: str):
    for key in (name, name.upper(), name.capitalize()):
        if is_array(params.get(key)):
            return params[key]
    return {}


def _fields(params: dict) -> dict:
    raw = params.get("fields", params.get("FIELDS"))
    if raw is None:
        raw = {}
    if not is_array(raw):
        raise crm_error("Parameter 'fields' must be array.")
    return dict(array_items(raw))


def _text(value) -> str:
    return "" if value is None or is_array(value) else (php_string(value) or "").strip()


def _number(value) -> float:
    try:
        return float(_text(value).replace(",", ".") or 0)
    except ValueError:
        return 0.0


def _status_matches(row: dict, name: str, wanted: str) -> bool:
    value = row.get(name)
    if name == "NAME":
        return wanted.casefold() in (value or "").casefold()
    if name == "SYSTEM":
        return value == ("Y" if wanted == "Y" else "N")
    if name == "CATEGORY_ID":
        return (value or 0) == php_int(wanted)
    if name in ("ID", "SORT"):
        return str(value) == wanted.strip()
    return (value or "").casefold() == wanted.casefold()


def _status_sort_key(row: dict, name: str):
    value = row.get(name)
    if name in ("ID", "SORT", "CATEGORY_ID"):
        return int(value or 0)
    return str(value or "").casefold()


def call(method: str, params: dict, portal, context=None):
    from . import catalog

    state: State = portal.state(catalog)
    if method == "crm.status.fields":
        return {name: _describe(*spec) for name, spec in _STATUS_FIELDS.items()}
    if method == "crm.status.list":
        return state.status_list(params)
    if method == "crm.status.get":
        return state._status_output(state._require_status(params, "CRM Status is not found."))
    if method == "crm.status.add":
        return state.status_add(params)
    if method == "crm.status.update":
        return state.status_update(params)
    if method == "crm.status.delete":
        return state.status_delete(params)
    if method == "crm.status.entity.types":
        return state.entity_types()
    if method == "crm.status.entity.items":
        return state.entity_items(params)
    if method == "crm.category.fields":
        state._category_type(params)
        return {"fields": {name: {**_describe(t, req, ro, False, title), "upperName": upper}
                           for name, (t, req, ro, title, upper) in _CATEGORY_FIELDS.items()}}
    if method.startswith("crm.category."):
        return getattr(state, "category_" + method.rsplit(".", 1)[1])(params)
    if method == "crm.currency.fields":
        return {name: _describe(t, False, ro, False, title, multiple)
                for name, (t, ro, multiple, title) in _CURRENCY_FIELDS.items()}
    if method == "crm.currency.list":
        return state.currency_list(params)
    if method == "crm.currency.get":
        return state._currency_output(state._require_currency(params), True)
    if method == "crm.currency.base.get":
        return state.base_currency
    if method == "crm.currency.base.set":
        return state.currency_base_set(params)
    if method.startswith("crm.currency."):
        return getattr(state, "currency_" + method.rsplit(".", 1)[1])(params)
    if method == "crm.stagehistory.list":
        return state.stagehistory_list(params)
    raise AssertionError(method)
