"""Filter, order and select for legacy ``crm.*.list``
(https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html and the same page of the
other entities)."""

from __future__ import annotations

import bisect
import re

from .fields import EXACT_ONLY_TYPES, NUMERIC_TYPES, Field
from .phpform import array_items, array_values, is_array, php_float, php_int, php_string
from .values import Clock, is_empty

# Longest prefixes first so "!@" is not read as "!" + "@FIELD".
_OPERATORS = ("!@", "!=", "!%", ">=", "<=", "=%", "%=", "@", ">", "<", "%", "=", "!")


def split_operator(key: str) -> tuple[str, str]:
    for op in _OPERATORS:
        if key.startswith(op):
            return op, key[len(op):]
    return "", key


def _like_regex(pattern: str) -> re.Pattern:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


class Comparer:
    """Typed comparisons for one field: numbers numerically, dates by time, text case-insensitively
    (the cloud database collation is case-insensitive)."""

    def __init__(self, field: Field, clock: Clock):
        self.field = field
        self.clock = clock

    def key(self, value):
        kind = self.field.type
        if kind in NUMERIC_TYPES:
            return None if is_empty(value) else php_float(value)
        if kind == "date":
            return None if is_empty(value) else self.clock.day(value)
        if kind == "datetime":
            return None if is_empty(value) else self.clock.timestamp(value)
        text = php_string(value)
        return None if text is None or text == "" else text.casefold()

    def sort_key(self, value):
        key = self.key(value)
        if key is None:
            return (0, 0 if self.field.type in NUMERIC_TYPES else "")
        if self.field.type in ("date", "datetime"):
            return (1, key.toordinal() if self.field.type == "date" else key)
        return (1, key)


def _matches(op: str, comparer: Comparer, stored, wanted) -> bool:
    """One condition against one stored scalar value."""
    kind = comparer.field.type
    if op in ("%", "=%", "%=", "!%") and kind in EXACT_ONLY_TYPES:
        op = "!" if op == "!%" else "="
    if op in ("", "=", "@"):
        if is_array(wanted) or op == "@":
            candidates = array_values(wanted) if is_array(wanted) else str(wanted).split(",")
            return any(_matches("=", comparer, stored, c) for c in candidates)
        if is_empty(wanted):
            key = comparer.key(stored)
            return key is None or (kind in NUMERIC_TYPES and key == 0)
        return comparer.key(stored) is not None and comparer.key(stored) == comparer.key(wanted)
    if op in ("!", "!=", "!@"):
        return not _matches("@" if op == "!@" else "=", comparer, stored, wanted)
    if op in ("%", "!%"):
        text = (php_string(stored) or "").casefold()
        candidates = array_values(wanted) if is_array(wanted) else [wanted]
        found = any((php_string(c) or "").casefold() in text for c in candidates)
        return found if op == "%" else not found
    if op in ("=%", "%="):
        text = php_string(stored) or ""
        candidates = array_values(wanted) if is_array(wanted) else [wanted]
        return any(_like_regex(php_string(c) or "").fullmatch(text) for c in candidates)
    # Ordering comparisons; NULL never compares (SQL semantics).
    left = comparer.key(stored)
    candidates = array_values(wanted) if is_array(wanted) else [wanted]
    for candidate in candidates:
        right = comparer.key(candidate)
        if left is None or right is None:
            continue
        if type(left) is not type(right):
            continue
        if (op == ">" and left > right) or (op == ">=" and left >= right) or \
                (op == "<" and left < right) or (op == "<=" and left <= right):
            return True
    return False


def build_filter(filter_param, fields: dict[str, Field], clock: Clock, nested: bool = False):
    """Turn the ``filter`` array into a predicate; unknown keys are dropped silently (the portal's source).

    Legacy ``crm.*.list`` (``nested=False``): a key whose name is not a field is unset before the
    query runs (CCrmRestProxyBase::internalizeFilterFields in the crm module's restservice.php), so a
    ``LOGIC`` key and numbered sub-arrays (``{"0": {"LOGIC": "OR", ...}}``) are dropped and the
    group filters nothing, as the legacy list page says ("no logic/OR": use crm.item.list,
    https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-list.html).

    ``crm.item.list`` (``nested=True``): a numbered key holding an array is a sub-filter, and a
    ``logic`` key (any case) with ``OR`` joins the conditions of its level with OR instead of AND,
    to any depth (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html).
    """
    conditions = []
    any_of = False
    for key, wanted in array_items(filter_param):
        if nested and key.lower() == "logic":
            any_of = not is_array(wanted) and (php_string(wanted) or "").upper() == "OR"
            continue
        if nested and key.isdigit() and is_array(wanted):
            conditions.append(build_filter(wanted, fields, clock, nested=True))
            continue
        op, name = split_operator(key)
        field = fields.get(name)
        if field is None or (field.is_collection and not field.is_multifield):
            continue
        conditions.append(_condition(op, name, field, wanted, clock))

    def predicate(record: dict) -> bool:
        if any_of:
            return not conditions or any(check(record) for check in conditions)
        return all(check(record) for check in conditions)

    return predicate


def _condition(op: str, name: str, field: Field, wanted, clock: Clock):
    """One ``{op}{name}: wanted`` condition as a predicate on a record."""
    negate = op in ("!", "!=", "!@")
    if field.is_multifield:
        # Multi-fields match exactly, on any of the entity's values.
        comparer = Comparer(Field("string", name), clock)
        inner = "@" if op in ("@", "!@") else "="

        def multi(record: dict) -> bool:
            values = [item["VALUE"] for item in record.get(name) or []]
            return any(_matches(inner, comparer, v, wanted) for v in values) != negate

        return multi
    comparer = Comparer(field, clock)
    if field.multiple:
        # A multiple value (observers, contactIds) matches when one of its elements does;
        # a negated condition holds when none does.
        positive = {"!": "=", "!=": "=", "!@": "@"}.get(op, op)

        def several(record: dict) -> bool:
            values = record.get(name) or []
            return any(_matches(positive, comparer, v, wanted) for v in values) != negate

        return several
    return lambda record: _matches(op, comparer, record.get(name), wanted)


def build_order(order_param, fields: dict[str, Field]) -> list[tuple[str, bool]]:
    """(field, descending) pairs; unknown fields and directions other than ASC/DESC are ignored."""
    order = []
    for name, direction in array_items(order_param):
        field = fields.get(name)
        text = (php_string(direction) or "").upper() if not is_array(direction) else ""
        if field is None or field.is_collection or text not in ("ASC", "DESC"):
            continue
        order.append((name, text == "DESC"))
    return order


def sort_records(records: list[dict], order, fields: dict[str, Field], clock: Clock,
                 id_name: str = "ID") -> list[dict]:
    # ID ascending is the tie-break (and the order when none is given); stable sorts applied
    # from the last key to the first give a multi-key sort.
    rows = sorted(records, key=lambda r: int(r[id_name]))
    for name, descending in reversed(order):
        comparer = Comparer(fields[name], clock)
        rows.sort(key=lambda r, c=comparer, n=name: c.sort_key(r.get(n)), reverse=descending)
    return rows


def resolve_select(select_param, fields: dict[str, Field]) -> list[str]:
    """``*`` = standard fields without multi-fields and UF; ``UF_*`` = user fields; none = both."""
    names = [v for v in array_values(select_param) if isinstance(v, str)] if is_array(select_param) else []
    if not names:
        names = ["*", "UF_*"]
    wanted = {"ID"}
    for name in names:
        if name == "*":
            wanted.update(n for n, f in fields.items() if not f.is_collection and not f.dynamic)
        elif name == "UF_*":
            wanted.update(n for n, f in fields.items() if f.dynamic)
        elif name in fields:
            wanted.add(name)
    return [n for n in fields if n in wanted]


def first_page_by_id(records: dict[int, dict], filter_param, predicate, page_size: int,
                     id_name: str = "ID", descending: bool = False) -> list[dict]:
    """start=-1 in ID order: the first page of matches within the filter's ID bounds (``>ID``/``>=ID``
    below, ``<ID``/``<=ID`` above), found without counting or sorting everything, as the real server's
    top-N query on the primary key does, either way up (the documented fast scan,
    https://apidocs.bitrix24.com/settings/performance/huge-data.html). Only the records inside the bounds
    are looked at, as an index range scan would."""
    ids = list(records)  # insertion order is ID order: ids only grow
    begin, end = 0, len(ids)
    for key, value in array_items(filter_param):
        if is_array(value):
            continue
        if key in (f">{id_name}", f">={id_name}"):
            bound = php_int(value) + (0 if key.startswith(">=") else 1)
            begin = max(begin, bisect.bisect_left(ids, bound))
        elif key in (f"<{id_name}", f"<={id_name}"):
            bound = php_int(value) + (1 if key.startswith("<=") else 0)
            end = min(end, bisect.bisect_left(ids, bound))
    window = ids[begin:end] if begin < end else []
    page = []
    for record_id in (reversed(window) if descending else window):
        if predicate(records[record_id]):
            page.append(records[record_id])
            if len(page) == page_size:
                break
    return page
