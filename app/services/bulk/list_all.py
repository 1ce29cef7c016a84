"""``bx_list_all``: every row a ``*.list`` method matches, walked by ID (keyset) or by offsets, 50
pages to a batch request."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ...entities import entity_for_method
from ...runtime import runtime
from ..bitrix24_service import bx_call
from ..errors import BadInput
from . import ranges
from .batch import BATCH_LIMIT, run_chunk

# rows per list page: https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html
PAGE = 50


def _row_shape(method: str) -> tuple[str | None, str, str]:
    """(the key rows are nested under, the id's name in filter and order, the id's key in a row), from
    the entity table: crm.item.list nests rows under "items" and names the id "id"
    (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html); tasks.task.list under
    "tasks", filtered and ordered by "ID" but answering "id"
    (https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-list.html); legacy crm.*.list neither."""
    entity = entity_for_method(method)
    if entity is None:
        return None, "ID", "ID"
    return entity.list_wrapper, entity.id_field, entity.row_id


def _rows(result: Any, container: str | None) -> list[Any]:
    if container and isinstance(result, dict):
        result = result.get(container)
    return result if isinstance(result, list) else []


def bx_list_all(
    method: str, params: Mapping[str, Any] | None = None, *, client_id: int | None = None, mode: str = "auto",
    on_total: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Yield every row a ``*.list`` method matches, each exactly once, holding one batch in memory.

    ``mode="keyset"`` (the default whenever the order allows it: none, or by ID ascending) walks
    by ID: ``start=-1``, ``order ID ASC``, ``filter >ID=last``, 50 chained pages per batch request;
    no COUNT on the portal, and rows added or deleted meanwhile neither shift nor repeat others.
    ``mode="offset"`` (for any other order) reads ``total`` from the first page and packs 50
    offsets into each batch request.

    ``on_total(n)``, when given, is called once with the ``total`` of the first (counted) page: how
    many rows match, for a progress bar, without a COUNT of its own on the portal.
    """
    params = dict(params or {})
    params.pop("start", None)
    container, id_field, row_id = _row_shape(method)
    order = params.get("order") or {}
    by_id = not order or (
        isinstance(order, Mapping) and list(order) in ([id_field], [id_field.lower()])
        and str(next(iter(order.values()))).upper() == "ASC"
    )
    if mode == "keyset" or (mode == "auto" and by_id):
        chains = ranges.chains_setting()
        if chains > 1 and _ranges_apply(params, id_field):
            yield from _ranged(method, params, client_id, container, id_field, row_id, on_total, chains)
            return
        yield from _keyset(method, params, client_id, container, id_field, row_id, on_total)
    else:
        yield from _offsets(method, params, client_id, container, on_total)


_ID_KEY = re.compile(r"^(?:[<>]=?|[=!@%]|!=|!@|=%|%=)?(?P<field>.+)$")


def _ranges_apply(params: Mapping[str, Any], id_field: str) -> bool:
    """The ranged walk cuts the ID space itself: only where the caller's filter leaves ID free (a
    lower bound, ``>ID`` / ``>=ID``, is taken as the starting point)."""
    flt = params.get("filter") or {}
    if not isinstance(flt, Mapping):
        return False
    for key in flt:
        if key in (f">{id_field}", f">={id_field}"):
            continue
        match = _ID_KEY.match(str(key))
        if match and match["field"].upper() == id_field.upper():
            return False
    return True


def _start_after(params: Mapping[str, Any], id_field: str) -> tuple[dict[str, Any], int]:
    """The caller's filter without its lower ID bound, and that bound as the last ID already seen."""
    flt = dict(params.get("filter") or {})
    last = 0
    for key in (f">{id_field}", f">={id_field}"):
        if key in flt:
            raw = flt.pop(key)
            if not (isinstance(raw, int) or (isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,10}", raw))):
                raise BadInput(f"filter[{key}] must be an integer to list every row", code="INVALID_FILTER")
            value = int(raw)
            last = max(last, value if key == f">{id_field}" else value - 1)
    return flt, last


def _ranged(method: str, params: dict[str, Any], client_id: int | None, container: str | None, id_field: str,
            row_id: str, on_total: Callable[[int], None] | None, chains: int) -> Iterator[Any]:
    """Several ID ranges at once (bulk/ranges.py); ``on_total`` gets an estimate (no COUNT is made)."""
    flt, last = _start_after(params, id_field)
    base = {k: v for k, v in params.items() if k not in ("filter", "order", "start")}
    shape = ranges.Shape(method, base, flt, container, id_field, row_id, client_id, runtime().bulk_max_wait)
    yield from ranges.walk(shape, chains, last, on_total=on_total)


def _keyset(method: str, params: dict[str, Any], client_id: int | None, container: str | None, id_field: str,
            row_id: str, on_total: Callable[[int], None] | None = None):
    """Walk by ID. Each round first asks for the count of rows past the cursor (one ``start=0``
    page) so that the batches that follow hold exactly the pages left, plus one page of slack for
    rows added meanwhile: pages chained past the end would make the portal run useless queries
    (an unresolvable ``$result`` reference becomes an array filter, a full scan each). Methods
    without ``total`` are walked 50 pages a batch until a short page."""
    flt, last = _start_after(params, id_field)
    base = {**params, "order": {id_field: "ASC"}}
    max_wait = runtime().bulk_max_wait
    counted = True
    while True:
        pages_left = BATCH_LIMIT
        if counted:
            # (IDs start at 1: without a cursor yet, leave ">ID" out so the portal counts plainly.)
            cursor = {f">{id_field}": last} if last > 0 else {}
            count_params = {**base, "start": 0}
            if flt or cursor:  # an empty filter would still be sent (as filter[]=), and crm.item refuses it
                count_params["filter"] = {**flt, **cursor}
            first = bx_call(method, count_params, client_id=client_id, max_wait=max_wait, background=True)
            rows = _rows(first.get("result"), container)
            if on_total is not None:
                on_total(first["total"] if isinstance(first.get("total"), int) else len(rows))
                on_total = None  # later rounds count what is left past the cursor
            yield from rows
            if len(rows) < PAGE:
                return
            last = int(rows[-1][row_id])
            total = first.get("total")
            if isinstance(total, int):
                pages_left = -(-(total - len(rows)) // PAGE)
            else:
                counted = False
        while pages_left > 0:
            size = min(BATCH_LIMIT, pages_left + 1)  # + 1: rows added since the count
            pages_left -= size
            commands: list[tuple[str, tuple[str, Any]]] = []
            nest = f"[{container}]" if container else ""
            for i in range(size):
                # Page i starts after the last row of page i-1; the portal resolves the reference.
                after: Any = last if i == 0 else f"$result[p{i - 1}]{nest}[{PAGE - 1}][{row_id}]"
                commands.append((f"p{i}", (method, {**base, "start": -1, "filter": {**flt, f">{id_field}": after}})))
            for item in run_chunk(commands, client_id=client_id, halt=False, max_wait=max_wait):
                if item.error is not None:
                    raise item.error
                rows = _rows(item.result, container)
                yield from rows
                if len(rows) < PAGE:
                    return  # later pages of this batch chained off a short page: ignore them
                last = int(rows[-1][row_id])
        # Every expected page came back full: rows were added meanwhile. Count again from here.


def _offsets(method: str, params: dict[str, Any], client_id: int | None, container: str | None,
             on_total: Callable[[int], None] | None = None):
    max_wait = runtime().bulk_max_wait
    order = dict(params.get("order") or {})
    id_field = _row_shape(method)[1]
    if id_field not in order and id_field.lower() not in order:
        # Ties in a non-unique order could be paged differently by separate queries: break them by ID.
        order[id_field] = "ASC"
    params = {**params, "order": order}
    first = bx_call(method, {**params, "start": 0}, client_id=client_id, max_wait=max_wait, background=True)
    if on_total is not None:
        count = first.get("total")
        on_total(count if isinstance(count, int) else len(_rows(first.get("result"), container)))
    yield from _rows(first.get("result"), container)
    total, start = first.get("total"), first.get("next")
    while start is not None:
        if total is None:  # no count: follow "next" one page at a time
            page = bx_call(method, {**params, "start": start}, client_id=client_id, max_wait=max_wait, background=True)
            yield from _rows(page.get("result"), container)
            start = page.get("next")
            continue
        offsets = list(range(int(start), int(total), PAGE))
        for i in range(0, len(offsets), BATCH_LIMIT):
            chunk = [(f"o{offset}", (method, {**params, "start": offset})) for offset in offsets[i : i + BATCH_LIMIT]]
            for item in run_chunk(chunk, client_id=client_id, halt=False, max_wait=max_wait):
                if item.error is not None:
                    raise item.error
                yield from _rows(item.result, container)
        return
