"""Product rows of deals, leads and smart-process items: read, replace, merge, and many deals' rows at once.

Bitrix24's side:

- deals and leads: ``crm.deal.productrows.get``/``set`` and ``crm.lead.productrows.get``/``set``, UPPER_CASE
  rows (https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-get.html,
  https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-productrows-set.html,
  https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-productrows-get.html,
  https://apidocs.bitrix24.com/api-reference/crm/leads/crm-lead-productrows-set.html);
- smart-process items: ``crm.item.productrow.list`` (``filter`` with ``=ownerType`` ``T{hex id}`` and
  ``=ownerId``, pages of 50) and ``crm.item.productrow.set``, camelCase rows
  (https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-list.html,
  https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-set.html).

Both ``set`` methods **replace every row of the owner**: rows not passed are deleted ("existing rows that are
not passed to the method will be removed", crm-deal-productrows-set). So ``replace`` says how many rows it
replaced, and ``merge`` of a deal's or lead's rows reads them, changes the ones asked for, checks nobody
changed them meanwhile (a second read compared with the first) and sets the whole list, each kept row with
its ID and its input fields (the legacy ``set`` keeps the ID of a row it is given). An item's rows are merged
with ``crm.item.productrow.update``/``delete``/``add``
(https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-update.html), which
touch only the rows named: its ``set`` gives every row a new id.

Two merges of one record at once would both read the same rows and the later ``set`` would drop what the earlier
added: ``replace`` and ``merge`` run under a lock per (client, owner type, owner id) (``runtime().locks``, shared by
every process with Redis), the same for a deal's rows reached as a deal or as item type 2. The compare guard stays
for writers outside this app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..entities import ENTITIES, Entity, smart_process
from ..runtime import runtime
from .bitrix24_service import bx_batch, bx_call
from .errors import Bitrix24Error

# The input fields of a row (what set takes), by spelling; everything else a read shows (OWNER_*, the
# derived prices, PRICE_ACCOUNT, ...) is the portal's to compute.
LEGACY_INPUT = ("ID", "PRODUCT_ID", "PRODUCT_NAME", "PRICE", "QUANTITY", "DISCOUNT_TYPE_ID", "DISCOUNT_RATE",
                "DISCOUNT_SUM", "TAX_RATE", "TAX_INCLUDED", "MEASURE_CODE", "MEASURE_NAME", "SORT")
ITEM_INPUT = ("id", "productId", "productName", "price", "quantity", "discountTypeId", "discountRate",
              "discountSum", "taxRate", "taxIncluded", "measureCode", "measureName", "sort", "xmlId")
PAGE = 50
# Where the input fields above are listed (deals' and leads': Owner.input_docs).
ITEM_INPUT_DOCS = "https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-add.html"
# crm.item.productrow's ownerType of the types that have product rows besides smart processes (entityTypeId ->
# short code: lead L, deal D, quote Q, invoice SI); a smart process (entityTypeId >= 128) is T{hex}
# (https://apidocs.bitrix24.com/api-reference/crm/universal/product-rows/crm-item-productrow-add.html,
# https://apidocs.bitrix24.com/api-reference/crm/data-types.html#object_type).
OWNER_TYPES = {1: "L", 2: "D", 7: "Q", 31: "SI"}
FIRST_SMART_PROCESS = 128


class RowsChanged(Exception):
    """The rows changed between our read and our write: nothing was written."""


class NoProductRows(ValueError):
    """An entityTypeId that has no product rows through crm.item.productrow."""


class RowNotFound(ValueError):
    def __init__(self, ids: list[Any], existing: list[Any]) -> None:
        super().__init__(f"no product row {', '.join(map(str, ids))} on this record (its rows: "
                         f"{', '.join(map(str, existing)) or 'none'})")
        self.ids = ids


@dataclass(frozen=True)
class Owner:
    """The record whose rows these are."""

    entity: Entity  # for the field-name spelling (UPPER_CASE or camelCase)
    owner_id: int
    legacy_prefix: str | None = None  # "crm.deal" for crm.deal.productrows.*; None: crm.item.productrow.*
    owner_type: str | None = None  # crm.item.productrow's ownerType: D, L, Q, SI or T{hex}

    @property
    def id_key(self) -> str:
        return "ID" if self.legacy_prefix else "id"

    @property
    def input_fields(self) -> tuple[str, ...]:
        return LEGACY_INPUT if self.legacy_prefix else ITEM_INPUT

    @property
    def input_docs(self) -> str:
        """The page that lists the input fields."""
        if not self.legacy_prefix:
            return ITEM_INPUT_DOCS
        name = self.legacy_prefix.removeprefix("crm.")  # deal, lead
        return f"https://apidocs.bitrix24.com/api-reference/crm/{name}s/crm-{name}-productrows-set.html"

    def lock_key(self, client_id: int) -> str:
        """The lock a write of these rows runs under: one per (client, owner type, owner id)."""
        return f"productrows:{client_id}:{self.owner_type}:{self.owner_id}"

    def get_command(self) -> tuple[str, dict[str, Any]]:
        assert self.legacy_prefix
        return f"{self.legacy_prefix}.productrows.get", {"id": self.owner_id}

    def set_command(self, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        if self.legacy_prefix:
            return f"{self.legacy_prefix}.productrows.set", {"id": self.owner_id, "rows": rows}
        return "crm.item.productrow.set", {"ownerType": self.owner_type, "ownerId": self.owner_id,
                                           "productRows": rows}


def legacy_owner(entity_name: str, owner_id: int) -> Owner:
    entity = ENTITIES[entity_name]
    return Owner(entity, owner_id, legacy_prefix=entity.prefix, owner_type=OWNER_TYPES[entity.type_id])


def item_owner(type_id: int, owner_id: int) -> Owner:
    """The owner of ``/items/<type_id>/<id>/products``: a lead's, deal's, quote's or invoice's rows by their short
    code, a smart process's by "T" and its entityTypeId in lower-case hex ("Tb3" for 179); NoProductRows for
    any other type."""
    if type_id in OWNER_TYPES:
        return Owner(smart_process(type_id), owner_id, owner_type=OWNER_TYPES[type_id])
    if type_id < FIRST_SMART_PROCESS:
        raise NoProductRows(f"entity type {type_id} has no product rows: they belong to leads (1), deals (2), "
                            f"quotes (7), invoices (31) and smart processes ({FIRST_SMART_PROCESS} and up)")
    return Owner(smart_process(type_id), owner_id, owner_type=f"T{type_id:x}")


def _list(value: Any) -> list[dict[str, Any]]:
    rows = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else []
    return [r for r in rows if isinstance(r, dict)]


def _item_rows(result: Any) -> list[dict[str, Any]]:
    return _list(result.get("productRows")) if isinstance(result, dict) else _list(result)


def get_rows(owner: Owner, *, client_id: int) -> list[dict[str, Any]]:
    """Every row of the owner, as the portal shows them."""
    if owner.legacy_prefix:
        method, params = owner.get_command()
        return _list(bx_call(method, params, client_id=client_id).get("result"))
    rows: list[dict[str, Any]] = []
    start = 0
    while True:
        params = {"filter": {"=ownerType": owner.owner_type, "=ownerId": owner.owner_id}, "order": {"id": "ASC"},
                  "start": start}
        envelope = bx_call("crm.item.productrow.list", params, client_id=client_id)
        rows += _item_rows(envelope.get("result"))
        following = envelope.get("next")
        if not isinstance(following, int) or following <= start:
            return rows
        start = following


def _set(owner: Owner, rows: list[dict[str, Any]], *, client_id: int) -> list[dict[str, Any]]:
    method, params = owner.set_command(rows)
    result = bx_call(method, params, client_id=client_id).get("result")
    if owner.legacy_prefix:  # set answers true: read the rows as they now are
        return get_rows(owner, client_id=client_id)
    return _item_rows(result)


def replace(owner: Owner, rows: list[dict[str, Any]], *, client_id: int) -> tuple[list[dict[str, Any]], int]:
    """Set the owner's rows to exactly ``rows``: ``(the rows now, how many rows there were before)``."""
    with runtime().locks.hold([owner.lock_key(client_id)]):  # not in the middle of a merge's read and set
        before = get_rows(owner, client_id=client_id)
        return _set(owner, rows, client_id=client_id), len(before)


def _row_id(row: dict[str, Any], key: str) -> str:
    return str(row.get(key))


def merge(owner: Owner, *, add: list[dict[str, Any]], update: list[dict[str, Any]], remove: list[Any],
          client_id: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Add, change (by id) and remove (by id) rows, keeping every other row as it is."""
    # Two merges at once would read the same rows and the later set would drop the earlier one's rows: one at a
    # time per record (with replace).
    with runtime().locks.hold([owner.lock_key(client_id)]):
        return _merge(owner, add=add, update=update, remove=remove, client_id=client_id)


def _merge(owner: Owner, *, add: list[dict[str, Any]], update: list[dict[str, Any]], remove: list[Any],
           client_id: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    key = owner.id_key
    before = get_rows(owner, client_id=client_id)
    existing = [_row_id(r, key) for r in before]
    wanted = list(dict.fromkeys([str(u[key]) for u in update] + [str(i) for i in remove]))
    missing = [i for i in wanted if i not in existing]
    if missing:
        raise RowNotFound(missing, existing)
    changes = {str(u[key]): u for u in update}
    removed = {str(i) for i in remove}
    counts = {"added": len(add), "updated": len(changes), "removed": len(removed)}
    if not owner.legacy_prefix:
        return _item_ops(owner, add, changes, removed, client_id=client_id), counts
    rows = []
    for row in before:
        row_id = _row_id(row, key)
        if row_id in removed:
            continue
        kept = {name: row[name] for name in owner.input_fields if name in row and row[name] is not None}
        kept.update(changes.get(row_id, {}))
        kept[key] = row.get(key)
        rows.append(kept)
    rows += [dict(r) for r in add]
    if get_rows(owner, client_id=client_id) != before:
        raise RowsChanged("the product rows of this record changed while they were being merged; nothing was "
                          "written: read them again and retry")
    return _set(owner, rows, client_id=client_id), counts


def _item_ops(owner: Owner, add: list[dict[str, Any]], changes: dict[str, dict[str, Any]], removed: set[str], *,
              client_id: int) -> list[dict[str, Any]]:
    """A smart-process item's rows changed one by one (``crm.item.productrow.update``, ``.delete``, ``.add``
    in one ``batch`` request, stopping at the first failure): the other rows are never rewritten, so they
    keep their ids and a concurrent change to them is not undone."""
    commands: list[tuple[str, Any]] = []
    for row_id, change in changes.items():
        fields = {k: v for k, v in change.items() if k != "id"}
        commands.append(("crm.item.productrow.update", {"id": int(row_id), "fields": fields}))
    commands += [("crm.item.productrow.delete", {"id": int(row_id)}) for row_id in removed]
    commands += [("crm.item.productrow.add", {"fields": {"ownerType": owner.owner_type, "ownerId": owner.owner_id,
                                                        **row}}) for row in add]
    for item in bx_batch(commands, client_id=client_id, halt=True):
        if item.error is not None:
            raise item.error
    return get_rows(owner, client_id=client_id)


def rows_of_many(entity_name: str, ids: Iterable[int], *, client_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rows of many deals (or leads), ``crm.*.productrows.get`` 50 to a ``batch`` request:
    ``({id: rows}, {id: {"error", "error_description"}})``."""
    commands = {str(i): legacy_owner(entity_name, i).get_command() for i in ids}
    answers = bx_batch(commands, client_id=client_id)
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for key, item in answers.items():
        if item.error is None:
            results[key] = _list(item.result)
        else:
            errors[key] = _error_view(item.error)
    return results, errors


def _error_view(error: Bitrix24Error) -> dict[str, Any]:
    return {"error": error.code, "error_description": error.description}
