"""Product rows of deals, leads and smart-process items: the legacy ``crm.deal.productrows.{get,set}`` and
``crm.lead.productrows.{get,set}`` (UPPER_CASE, mixed value types) and ``crm.item.productrow.*`` (camelCase, real
numbers). Both families read and write the same rows.

Sources:
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-get.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-set.html,
https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-productrows-get.html,
https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-productrows-set.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-add.html (and the
``-update``, ``-get``, ``-delete``, ``-list``, ``-set`` and ``-fields`` pages next to it),
https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-get.html (IS_MANUAL_OPPORTUNITY: "manual mode for
calculating the amount"); the portal's own controller ``Bitrix\\Crm\\Controller\\v2\\ProductRow`` and its
``ErrorCode`` texts ("Owner was not found", "Argument '=ownerType' is required", "Entity type X is not
supported"); a real crm.item.productrow.list answer recorded in leshchenko1979/fast_bitrix24
(tests/real_responses/crm_item_productrow_list.py: key order, ``"ownerType": "Tb3"``, ``"taxRate": null``).

Prices: ``price`` is the final unit price (discount and tax applied). The others are derived from it the way the
add page's example shows (80000 with a 20% discount and 20% tax included gives priceExclusive 66666.67,
priceNetto 83333.34, priceBrutto 100000.01, discountSum 16666.67): priceExclusive = price / (1 + tax), rounded to
cents; priceNetto = priceExclusive / (1 - rate) for a percent discount, or priceExclusive + discountSum for an
absolute one; priceBrutto = priceNetto * (1 + tax); discountSum = priceNetto - priceExclusive.

Choices where the docs are silent: the emulator has no product catalog, so a row's name is what was sent, else
``[{row id}]`` as the legacy page says for a row with neither name nor product; measure code 0 and name "";
``type`` 1; no inventory (``storeId``, reserves). A row change recomputes the owner's amount when it is not
manual: ``OPPORTUNITY`` (and a deal's ``TAX_VALUE``) for deals and leads whose ``IS_MANUAL_OPPORTUNITY`` is "N",
``opportunity`` for smart-process items; the amount is the sum of price x quantity. Rows come back in ``sort``
then ``id`` order. An owner type other than D, L or T{hex} is ``ENTITY_TYPE_NOT_SUPPORTED``.

Out-of-range amounts are refused, not clamped: the portal keeps prices, discount sums and the owner's amount in
DECIMAL(18,2) columns, so every amount (price, quantity, discount, the derived prices, a row's and the owner's
total) must be finite and below 10^16 (``values.MAX_AMOUNT``); otherwise the call answers the legacy error shape
(HTTP 400, ``"error": ""``) naming the limit, and nothing is written. Both families answer it the same way (the
docs show no error for it). A tax rate of -100% or less (no price before tax) is refused the same way.
"""

from __future__ import annotations

import sys
from decimal import ROUND_HALF_UP, Decimal

from .errors import ApiError, crm_error
from .fields import Field, describe_item_field
from .phpform import array_items, array_values, is_array, php_float, php_int, php_string
from .query import build_filter, build_order, sort_records, split_operator
from .values import MAX_AMOUNT, money, out_of_range, yes_no

PAGE_SIZE = 50
LEGACY = {"crm.deal.productrows.get": "deal", "crm.deal.productrows.set": "deal",
          "crm.lead.productrows.get": "lead", "crm.lead.productrows.set": "lead"}
ITEM_ACTIONS = ("add", "update", "get", "delete", "list", "set", "fields")
METHODS = frozenset([*LEGACY, *(f"crm.item.productrow.{a}" for a in ITEM_ACTIONS)])
OWNER_CODES = {"deal": "D", "lead": "L"}
TYPE_NAMES = {"C": "CONTACT", "CO": "COMPANY", "Q": "QUOTE", "SI": "SMART_INVOICE", "I": "INVOICE"}

# crm.item.productrow.fields, in the portal's order: (name, type, required, read-only, immutable, title).
FIELDS = [
    ("id", "integer", False, True, False, "ID"),
    ("ownerId", "integer", True, False, True, "Owner ID"),
    ("ownerType", "string", True, False, True, "Owner Type"),
    ("productId", "integer", True, False, False, "Product"),
    ("productName", "string", False, False, False, "Product Name"),
    ("price", "double", False, False, False, "Price"),
    ("priceAccount", "double", False, True, False, "Price in report currency"),
    ("priceExclusive", "double", False, True, False, "Discounted price excluding tax"),
    ("priceNetto", "double", False, True, False, "PRICE_NETTO"),
    ("priceBrutto", "double", False, True, False, "PRICE_BRUTTO"),
    ("quantity", "double", False, False, False, "Quantity"),
    ("discountTypeId", "integer", False, False, False, "Discount Type"),
    ("discountRate", "double", False, False, False, "Discount Amount"),
    ("discountSum", "double", False, False, False, "Discount Total"),
    ("taxRate", "double", False, False, False, "Tax"),
    ("taxIncluded", "char", False, False, False, "Tax included in price"),
    ("customized", "char", False, False, False, "Modified"),
    ("measureCode", "integer", False, False, False, "Unit of Measure Code"),
    ("measureName", "string", False, False, False, "Unit of Measure"),
    ("sort", "integer", False, False, False, "Sorting"),
    ("xmlId", "string", False, False, False, "External ID"),
    ("type", "integer", False, True, False, "TYPE"),
]
DEFS = {name: Field(kind, title, required=req, read_only=ro, immutable=imm) for name, kind, req, ro, imm, title
        in FIELDS}
WRITABLE = {"productId", "productName", "price", "quantity", "discountTypeId", "discountRate", "discountSum",
            "taxRate", "taxIncluded", "customized", "measureCode", "measureName", "sort", "xmlId"}
CENT = Decimal("0.01")


def _upper(name: str) -> str:
    out = "".join("_" + ch if ch.isupper() else ch for ch in name).upper()
    return out


UPPER = {name: _upper(name) for name in DEFS}  # productId -> PRODUCT_ID


def _cents(value: Decimal) -> Decimal:
    return _in_range(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _in_range(value: Decimal) -> Decimal:
    if not value.is_finite() or abs(value) >= MAX_AMOUNT:
        raise out_of_range(value)
    return value


def _dec(value) -> Decimal:
    return Decimal(repr(php_float(value))) if not isinstance(value, Decimal) else value


def _num(value: Decimal | float | int | None):
    """A JSON number the way the portal prints it: 80000, not 80000.0."""
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def not_found() -> ApiError:
    return ApiError("NOT_FOUND", "Item not found", 400)


def owner_not_found() -> ApiError:
    return ApiError("OWNER_NOT_FOUND", "Owner was not found", 400)


def required(name: str) -> ApiError:
    return ApiError("REQUIRED_ARG_MISSING", f"Argument '{name}' is required", 400)


def missing_parameter(name: str) -> ApiError:
    return ApiError("100", f"Could not find value for parameter {{{name}}}", 400)


class State:
    """Every product row of the portal by id; a row is kept in its camelCase form with Decimal prices."""

    def __init__(self, portal):
        self.portal = portal
        self.rows: dict[int, dict] = {}
        self.next_id = 1

    # ---- owners -----------------------------------------------------------------------------------------

    def owner_record(self, owner_type: str, owner_id: int) -> dict | None:
        """The owner's record, or None; ENTITY_TYPE_NOT_SUPPORTED for a type without product rows."""
        code = (owner_type or "").strip()
        if code.upper() in ("D", "L"):
            entity = "deal" if code.upper() == "D" else "lead"
            return self.portal.store.records[entity].get(owner_id)
        if code[:1].upper() == "T" and len(code) > 1:
            try:
                type_id = int(code[1:], 16)
            except ValueError:
                type_id = 0
            if type_id in self.portal.item_store.records:
                return self.portal.item_store.records[type_id].get(owner_id)
        name = TYPE_NAMES.get(code.upper(), code.upper())
        raise ApiError("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type {name} is not supported", 400)

    @staticmethod
    def owner_code(owner_type: str) -> str:
        code = owner_type.strip()
        return code.upper() if code.upper() in ("D", "L") else "T" + format(int(code[1:], 16), "x")

    def require_owner(self, owner_type, owner_id) -> tuple[str, int]:
        owner_type = php_string(owner_type) if not is_array(owner_type) else ""
        owner_id = php_int(owner_id) if not is_array(owner_id) else 0
        if self.owner_record(owner_type or "", owner_id) is None:
            raise owner_not_found()
        return self.owner_code(owner_type), owner_id

    def of_owner(self, owner_type: str, owner_id: int) -> list[dict]:
        rows = [r for r in self.rows.values() if r["ownerType"] == owner_type and r["ownerId"] == owner_id]
        return sorted(rows, key=lambda r: (r["sort"], r["id"]))

    def forget(self, entity: str, entity_id: int) -> None:
        """A deleted deal or lead takes its rows with it (crm.py calls this)."""
        code = OWNER_CODES.get(entity)
        if code:
            for row in self.of_owner(code, entity_id):
                del self.rows[row["id"]]

    # ---- rows -------------------------------------------------------------------------------------------

    def build(self, values: dict, owner_type: str, owner_id: int, row_id: int | None = None,
              given_rate: bool = True, given_sum: bool = True) -> dict:
        """A row from camelCase input values (defaults filled in, derived prices computed)."""
        row_id = row_id or self.next_id
        discount_type = php_int(values.get("discountTypeId", 2)) or 2
        if "discountTypeId" in values:
            self._check_discount(discount_type, values, given_rate, given_sum)
        tax_rate = values.get("taxRate")
        tax = None if tax_rate is None or tax_rate == "" or is_array(tax_rate) else _in_range(_dec(tax_rate))
        price = _in_range(_dec(values.get("price", 0)))
        tax_factor = 1 + (Decimal(0) if tax is None else tax) / 100
        if tax_factor <= 0:
            raise crm_error(f"The tax rate {tax} is out of range: it must be greater than -100 (percent)")
        exclusive = _cents(price / tax_factor)
        if discount_type == 1:
            discount_sum = _cents(_dec(values.get("discountSum", 0)))
            netto = exclusive + discount_sum
            rate = _cents(discount_sum / netto * 100) if netto else Decimal(0)
        else:
            rate = _in_range(_dec(values.get("discountRate", 0)))
            if rate >= 100:
                discount_sum = _cents(_dec(values.get("discountSum", 0)))
                netto = exclusive + discount_sum
            else:
                netto = _cents(exclusive / (1 - rate / 100))
                discount_sum = netto - exclusive
        brutto = _cents(netto * tax_factor)
        quantity = _in_range(_dec(values.get("quantity", 1)))
        _cents(price * quantity)  # the row's total, too
        name = values.get("productName")
        name = php_string(name) if name not in (None, "") and not is_array(name) else f"[{row_id}]"
        return {
            "id": row_id, "ownerId": owner_id, "ownerType": owner_type,
            "productId": php_int(values.get("productId", 0)), "productName": name,
            "price": price, "priceAccount": price, "priceExclusive": exclusive, "priceNetto": netto,
            "priceBrutto": brutto, "quantity": quantity, "discountTypeId": discount_type,
            "discountRate": rate, "discountSum": discount_sum, "taxRate": tax,
            "taxIncluded": yes_no(values.get("taxIncluded", "N")), "customized": "Y",
            "measureCode": php_int(values.get("measureCode", 0)),
            "measureName": php_string(values.get("measureName", "")) or "",
            "sort": php_int(values.get("sort", 0)), "xmlId": php_string(values.get("xmlId", "")) or "", "type": 1,
        }

    @staticmethod
    def _check_discount(discount_type: int, values: dict, given_rate: bool, given_sum: bool) -> None:
        """The legacy discount checks (crm-deal-productrows-set page), ERROR_CORE with a trailing <br>."""
        def fail(text: str) -> ApiError:
            return ApiError("ERROR_CORE", text + "<br>", 400)

        if discount_type == 2 and (not given_rate or values.get("discountRate") is None):
            raise fail("Discount Rate (DISCOUNT_RATE) is required if Percentage Discount Type (DISCOUNT_TYPE_ID) "
                       "is defined")
        if discount_type == 2 and _dec(values["discountRate"]) >= 100 and \
                (not given_sum or values.get("discountSum") is None):
            raise fail("Discount Sum (DISCOUNT_SUM) is required if Percentage Discount Type (DISCOUNT_TYPE_ID) "
                       "is defined and Discount Rate (DISCOUNT_RATE) is 100%")
        if discount_type == 1 and (not given_sum or values.get("discountSum") is None):
            raise fail("Discount Sum (DISCOUNT_SUM) is required if Monetary Discount Type (DISCOUNT_TYPE_ID) "
                       "is defined")

    def check_total(self, owner_type: str, owner_id: int, rows: list[dict], *, replacing: bool) -> None:
        """Refuse rows that would put the owner's amount out of range, before any of them is written."""
        kept = [] if replacing else [r for r in self.of_owner(owner_type, owner_id)
                                     if r["id"] not in {n["id"] for n in rows}]
        _cents(sum((r["price"] * r["quantity"] for r in [*kept, *rows]), Decimal(0)))

    def save(self, row: dict) -> dict:
        self.rows[row["id"]] = row
        self.next_id = max(self.next_id, row["id"] + 1)
        return row

    def replace(self, owner_type: str, owner_id: int, rows: list[dict]) -> list[dict]:
        self.check_total(owner_type, owner_id, rows, replacing=True)
        for old in self.of_owner(owner_type, owner_id):
            del self.rows[old["id"]]
        for row in rows:
            self.save(row)
        self.recompute(owner_type, owner_id)
        return self.of_owner(owner_type, owner_id)

    def recompute(self, owner_type: str, owner_id: int) -> None:
        """The owner's amount follows its rows unless it is set by hand (IS_MANUAL_OPPORTUNITY Y)."""
        record = self.owner_record(owner_type, owner_id)
        if record is None:
            return
        rows = self.of_owner(owner_type, owner_id)
        total = _cents(sum((r["price"] * r["quantity"] for r in rows), Decimal(0)))
        if owner_type in ("D", "L"):
            if record.get("IS_MANUAL_OPPORTUNITY") == "Y":
                return
            record["OPPORTUNITY"] = money(str(total))
            if "TAX_VALUE" in record:
                tax = sum(((r["price"] - r["priceExclusive"]) * r["quantity"] for r in rows), Decimal(0))
                record["TAX_VALUE"] = money(str(_cents(tax)))
        elif not record.get("isManualOpportunity") == "Y":
            record["opportunity"] = float(total)

    # ---- output -----------------------------------------------------------------------------------------

    @staticmethod
    def camel(row: dict) -> dict:
        return {name: _num(row[name]) if isinstance(row[name], Decimal) else row[name] for name in DEFS}

    @staticmethod
    def legacy(row: dict) -> dict:
        """crm.deal.productrows.get: string ids, int codes, float prices, PRICE_ACCOUNT a 2-decimal string."""
        return {
            "ID": str(row["id"]), "OWNER_ID": str(row["ownerId"]), "OWNER_TYPE": row["ownerType"],
            "PRODUCT_ID": row["productId"], "PRODUCT_NAME": row["productName"],
            "ORIGINAL_PRODUCT_NAME": row["productName"], "PRODUCT_DESCRIPTION": None,
            "PRICE": _num(row["price"]), "PRICE_EXCLUSIVE": _num(row["priceExclusive"]),
            "PRICE_NETTO": _num(row["priceNetto"]), "PRICE_BRUTTO": _num(row["priceBrutto"]),
            "PRICE_ACCOUNT": f"{_cents(row['priceAccount'])}", "QUANTITY": _num(row["quantity"]),
            "DISCOUNT_TYPE_ID": row["discountTypeId"], "DISCOUNT_RATE": _num(row["discountRate"]),
            "DISCOUNT_SUM": _num(row["discountSum"]), "TAX_RATE": _num(row["taxRate"]),
            "TAX_INCLUDED": row["taxIncluded"], "CUSTOMIZED": row["customized"], "MEASURE_CODE": row["measureCode"],
            "MEASURE_NAME": row["measureName"], "SORT": row["sort"], "XML_ID": row["xmlId"], "TYPE": row["type"],
            "STORE_ID": None,
        }


def _camel_values(source: dict, upper: bool) -> dict:
    """Input values keyed by camelCase name (from UPPER_CASE ones for the legacy methods)."""
    names = {UPPER[n] if upper else n: n for n in DEFS}
    return {names[key]: value for key, value in array_items(source) if key in names}


def call(method: str, params: dict, portal, context) -> object:
    state: State = portal.state(sys.modules[__name__])
    if method in LEGACY:
        return _legacy(state, LEGACY[method], method.endswith(".set"), params)
    action = method.rsplit(".", 1)[1]
    if action == "fields":
        return {"fields": {name: {k: v for k, v in describe_item_field(name, f).items() if k != "upperName"}
                           for name, f in DEFS.items()}}
    if action in ("get", "update", "delete"):
        raw = params.get("id")
        if raw is None:
            raise missing_parameter("id")
        row = state.rows.get(0 if is_array(raw) else php_int(raw))
        if row is None:
            raise not_found()
        if action == "get":
            return {"productRow": State.camel(row)}
        if action == "delete":
            del state.rows[row["id"]]
            state.recompute(row["ownerType"], row["ownerId"])
            return None
        fields = params.get("fields")
        if not is_array(fields) or not array_items(fields):
            raise missing_parameter("fields")
        for key, _ in array_items(fields):
            if key not in WRITABLE:
                raise ApiError("INVALID_ARG_VALUE", f"The field '{key}' is not available for update", 400)
        values = {**{k: row[k] for k in WRITABLE}, **_camel_values(fields, upper=False)}
        values["price"] = values.get("price", row["price"])
        rebuilt = state.build(values, row["ownerType"], row["ownerId"], row["id"])
        state.check_total(row["ownerType"], row["ownerId"], [rebuilt], replacing=False)
        state.save(rebuilt)
        state.recompute(row["ownerType"], row["ownerId"])
        return {"productRow": State.camel(rebuilt)}
    if action == "add":
        fields = params.get("fields")
        if not is_array(fields):
            raise missing_parameter("fields")
        fields = dict(array_items(fields))
        owner_type, owner_id = state.require_owner(fields.get("ownerType"), fields.get("ownerId"))
        values = _camel_values(fields, upper=False)
        row = state.build(values, owner_type, owner_id)
        state.check_total(owner_type, owner_id, [row], replacing=False)
        state.save(row)
        state.recompute(owner_type, owner_id)
        return {"productRow": State.camel(row)}
    if action == "set":
        for name in ("ownerType", "ownerId", "productRows"):
            if params.get(name) is None:
                raise missing_parameter(name)
        owner_type, owner_id = state.require_owner(params.get("ownerType"), params.get("ownerId"))
        rows = params.get("productRows")
        built = []
        for value in array_values(rows) if is_array(rows) else []:
            if isinstance(value, dict):
                built.append(state.build(_camel_values(value, upper=False), owner_type, owner_id))
                state.next_id += 1
        return {"productRows": [State.camel(r) for r in state.replace(owner_type, owner_id, built)]}
    return _list(state, params)


def _list(state: State, params: dict):
    from .registry import Outcome

    filter_param = params.get("filter") if is_array(params.get("filter")) else {}
    given = dict(array_items(filter_param))
    owner_type = given.get("=ownerType")
    if owner_type in (None, "") or is_array(owner_type):
        raise required("=ownerType")
    owner_id = given.get("=ownerId")
    if owner_id is None or is_array(owner_id) or php_int(owner_id) <= 0:
        raise required("=ownerId")
    for key, _ in array_items(filter_param):
        if split_operator(key)[1] not in DEFS:
            raise ApiError("INVALID_ARG_VALUE", f"Invalid filter: field '{split_operator(key)[1]}' is not allowed "
                           "in filter", 400)
    order_param = params.get("order") if is_array(params.get("order")) else {}
    for key, _ in array_items(order_param):
        if key not in DEFS:
            raise ApiError("INVALID_ARG_VALUE", f"Invalid order: field '{key}' is not allowed in order", 400)
    code = php_string(owner_type) or ""
    code = code.upper() if code.upper() in ("D", "L") else "T" + code[1:].lower()
    rows = [State.camel(r) for r in state.of_owner(code, php_int(owner_id))]
    rest = [(k, v) for k, v in array_items(filter_param) if k not in ("=ownerType", "=ownerId")]
    predicate = build_filter(dict(rest), DEFS, state.portal.clock)
    order = [(name, d) for name, d in build_order({k: (php_string(v) or "").upper()
                                                   for k, v in array_items(order_param)}, DEFS)]
    rows = [r for r in rows if predicate(r)]
    if order:
        rows = sort_records(rows, order, DEFS, state.portal.clock, "id")
    start = max(php_int(params.get("start", 0)), 0)
    offset = (start // PAGE_SIZE) * PAGE_SIZE
    page = rows[offset:offset + PAGE_SIZE]
    following = offset + len(page)
    return Outcome({"productRows": page}, len(rows), following if following < len(rows) else None)


def _legacy(state: State, entity: str, setting: bool, params: dict) -> object:
    raw = params.get("id", params.get("ID"))
    owner_id = 0 if raw is None or is_array(raw) else php_int(raw)
    if owner_id <= 0:
        raise crm_error("The parameter id is invalid or not defined.")
    if owner_id not in state.portal.store.records[entity]:
        raise crm_error("Not found")
    code = OWNER_CODES[entity]
    if not setting:
        return [State.legacy(r) for r in state.of_owner(code, owner_id)]
    rows = params.get("rows", params.get("ROWS"))
    existing = {r["id"] for r in state.of_owner(code, owner_id)}
    built = []
    for value in array_values(rows) if is_array(rows) else []:
        if not isinstance(value, dict):
            continue
        keys = {k for k, _ in array_items(value)}
        row_id = php_int(value.get("ID", 0))
        row_id = row_id if row_id in existing else state.next_id
        built.append(state.build(_camel_values(value, upper=True), code, owner_id, row_id,
                                 given_rate="DISCOUNT_RATE" in keys, given_sum="DISCOUNT_SUM" in keys))
        state.next_id = max(state.next_id, row_id + 1)
    state.replace(code, owner_id, built)
    return True
