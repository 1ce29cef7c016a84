"""Listing by ID ranges walked side by side: the keyset walk without its one long chain.

A keyset walk (``order ID ASC``, ``start=-1``, ``filter >ID=<last>``,
https://apidocs.bitrix24.com/settings/performance/huge-data.html) is one chain: each page needs the
last ID of the one before, so a large listing waits on the portal's server time batch after batch
while its request bucket sits idle. Here the ID space is cut up instead, with two cheap pages and no
COUNT (a ``start >= 0`` page counts the whole matching set: 49.9 s on 2.4 M leads, by the same docs
page):

1. the first page by ID ascending and the first by ID descending (``start=-1``): the lowest and highest
   matching IDs, 100 rows already in hand, and from how tightly their IDs sit, the rows per ID;
2. the span between them cut into pages of IDs, each page a keyset query bounded on both sides
   (``>ID``, ``<=ID``, ``start=-1``): 50 IDs wide while at least 9 IDs in 10 match (such a page cannot
   hold more than its 50 rows), else wide enough for about 45 rows; no page depends on another, so no
   ``$result`` reference is ever chained off a short page (the portal would resolve it to nothing and
   scan), and a page that comes back full before its bound simply goes on in a later batch;
3. 50 such pages to a batch, up to ``chains`` batches at once;
4. rows handed to the caller in ID order, batch after batch (at most ``chains + 1`` batches held), then a
   last keyset page past the highest ID for rows added meanwhile; if it is full, the rows up to the
   highest ID there is then (one more descending page), and no further: the listing ends even while
   rows keep coming.

Each request still goes through the portal's bucket and operating budget as background work, so more
chains make a listing as fast as the bucket allows, not faster, and leave interactive calls their share.
The number walked at once follows what the portal says (``Pace``): halved when a batch needed retries,
grown back after clean ones.
The rows-per-ID estimate is refined with every batch walked.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import current_app

from ..bitrix24_service import bx_call
from ..caller import TROUBLE
from .batch import BATCH_LIMIT, run_chunk

PAGE = 50  # rows per list page


@dataclass
class Shape:
    method: str
    base: dict[str, Any]  # the caller's params, order by ID ascending
    flt: dict[str, Any]  # the caller's filter, without the cursor
    container: str | None
    id_field: str
    row_id: str
    client_id: int | None
    max_wait: float


def _rows(result: Any, container: str | None) -> list[Any]:
    if container and isinstance(result, dict):
        result = result.get(container)
    return result if isinstance(result, list) else []


def _page(shape: Shape, flt: dict[str, Any], descending: bool = False) -> list[Any]:
    params = {**shape.base, "start": -1, "order": {shape.id_field: "DESC" if descending else "ASC"}}
    if flt:  # an empty filter would still be sent (as filter[]=), and crm.item refuses it
        params["filter"] = flt
    answer = bx_call(shape.method, params, client_id=shape.client_id, max_wait=shape.max_wait, background=True)
    return _rows(answer.get("result"), shape.container)


def page_width(density: float) -> int:
    """IDs per page: 50 while at least 9 IDs in 10 match (then no page can overflow), else about 45 rows."""
    return PAGE if density >= 0.9 else max(PAGE, int(45 / max(density, 1e-6)))


def _walk_range(shape: Shape, low: int, high: int, width: int, tail_after: int | None = None
                ) -> tuple[list[Any], list[Any] | None]:
    """Every row with low < ID <= high, as pages ``width`` IDs wide, 50 pages to a batch; a page that
    comes back full before its bound goes on from its last ID in the next batch. With ``tail_after``,
    one more page rides along: the first past that ID, unbounded (rows added meanwhile); its rows come
    back apart."""
    spans = []
    a = low
    while a < high:
        spans.append((a, min(high, a + width)))
        a = spans[-1][1]
    found: list[list[Any]] = [[] for _ in spans]
    todo: list[tuple[int, int, int | None]] = [(i, lo, hi) for i, (lo, hi) in enumerate(spans)]
    if tail_after is not None:
        todo.append((-1, tail_after, None))
    tail: list[Any] | None = None
    upper = f"<={shape.id_field}"
    while todo:
        later = []
        for start in range(0, len(todo), BATCH_LIMIT):
            chunk = todo[start:start + BATCH_LIMIT]
            commands = [(f"p{k}", (shape.method, {**shape.base, "start": -1, "filter": {
                **shape.flt, f">{shape.id_field}": lo, **({upper: hi} if hi is not None else {})}}))
                for k, (_, lo, hi) in enumerate(chunk)]
            for (i, _, hi), item in zip(chunk, run_chunk(commands, client_id=shape.client_id, halt=False,
                                                         max_wait=shape.max_wait), strict=True):
                if item.error is not None:
                    raise item.error
                page = _rows(item.result, shape.container)
                if i < 0:
                    tail = page
                    continue
                found[i].extend(page)
                if len(page) >= PAGE and int(page[-1][shape.row_id]) < hi:
                    later.append((i, int(page[-1][shape.row_id]), hi))
        todo = later
    return [row for rows in found for row in rows], tail


def _probes(shape: Shape, flt: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The first page by ID ascending and the first by ID descending, in one batch request."""
    params = {**shape.base, "start": -1, **({"filter": flt} if flt else {})}
    commands = [("asc", (shape.method, {**params, "order": {shape.id_field: "ASC"}})),
                ("desc", (shape.method, {**params, "order": {shape.id_field: "DESC"}}))]
    asc, desc = run_chunk(commands, client_id=shape.client_id, halt=False, max_wait=shape.max_wait)
    for item in (asc, desc):
        if item.error is not None:
            raise item.error
    return _rows(asc.result, shape.container), _rows(desc.result, shape.container)


def walk(shape: Shape, chains: int, last: int = 0,
         on_total: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Every row past ``last`` in ID order (see the module's docstring). ``on_total`` gets an estimate
    of how many there are, from the rows per ID (no COUNT is made)."""
    id_field, row_id = shape.id_field, shape.row_id
    lower = {f">{id_field}": last} if last > 0 else {}
    first, top = _probes(shape, {**shape.flt, **lower})
    if len(first) < PAGE:  # one page holds them all
        if on_total is not None:
            on_total(len(first))
        yield from first
        return
    first_ids = [int(r[row_id]) for r in first]
    top_ids = [int(r[row_id]) for r in top]
    low, floor_top, highest = first_ids[-1], min(top_ids), max(top_ids)
    if floor_top <= low:  # the two pages meet: everything is in hand
        if on_total is not None:
            on_total(len(set(first_ids) | set(top_ids)))
        yield from first
        yield from sorted((r for r in top if int(r[row_id]) > low), key=lambda r: int(r[row_id]))
        tail = _page(shape, {**shape.flt, f">{id_field}": highest})
    else:
        # Rows per ID, from how tightly the two pages' IDs sit (1.0 when no ID was ever skipped).
        span = (low - first_ids[0] + 1) + (highest - floor_top + 1)
        density = min(1.0, (len(first) + len(top)) / span)
        if on_total is not None:
            on_total(len(first) + len(top) + round(density * max(0, floor_top - 1 - low)))
        yield from first
        holder: dict[str, list[Any]] = {}
        yield from _middle(shape, chains, low, floor_top - 1, density, tail_after=highest, holder=holder)
        yield from sorted(top, key=lambda r: int(r[row_id]))
        tail = holder.get("tail")
        if tail is None:
            tail = _page(shape, {**shape.flt, f">{id_field}": highest})
    # Rows added since the descending page: past its highest ID, up to the highest ID there is once the
    # first of their pages comes back full (one more descending page finds it). Rows added after that are
    # the next listing's: a walk that chased every new row would never end while a portal gains rows
    # faster than one page a request (a lead import running beside it).
    ceiling: int | None = None
    while True:
        yield from tail
        if len(tail) < PAGE:
            return
        last_id = int(tail[-1][row_id])
        if ceiling is None:
            ceiling = max((int(r[row_id]) for r in _page(shape, shape.flt, descending=True)), default=last_id)
        if last_id >= ceiling:
            return
        tail = _page(shape, {**shape.flt, f">{id_field}": last_id, f"<={id_field}": ceiling})


def _middle(shape: Shape, chains: int, low: int, high: int, density: float, *, tail_after: int,
            holder: dict[str, list[Any]]) -> Iterator[Any]:
    """low < ID <= high, cut into batches of 50 pages, ``chains`` of them walked at once; the last one
    also brings the first page past ``tail_after`` (into ``holder["tail"]``)."""
    if high <= low:
        return
    app = current_app._get_current_object()
    state = {"rows": 0, "ids": 0, "density": density}

    def task(a: int, b: int, width: int, tail: int | None) -> tuple[list[Any], list[Any] | None, list[str]]:
        trouble: list[str] = []
        TROUBLE.set(trouble)  # the retries this range's calls needed
        with app.app_context():  # a context (and database session) of its own, in this thread
            rows, found_tail = _walk_range(shape, a, b, width, tail)
        return rows, found_tail, trouble

    pending: list[tuple[Future, int, int]] = []
    cursor = low
    pace = Pace(chains)
    pool = ThreadPoolExecutor(max_workers=max(1, chains), thread_name_prefix="bitrix24-list")
    try:
        while cursor < high or pending:
            while cursor < high and len(pending) < pace.chains + 1:
                width = page_width(state["density"])
                b = min(high, cursor + width * BATCH_LIMIT)
                # Each task runs in a copy of this context: the caller's background flag, log fields.
                future = pool.submit(contextvars.copy_context().run, task, cursor, b, width,
                                     tail_after if b >= high else None)
                pending.append((future, cursor, b))
                cursor = b
            future, a, b = pending.pop(0)
            rows, tail, trouble = future.result()
            pace.after(trouble)
            if tail is not None:
                holder["tail"] = tail
            state["rows"] += len(rows)
            state["ids"] += b - a
            state["density"] = max(1e-6, state["rows"] / state["ids"]) if state["ids"] else state["density"]
            yield from rows
    finally:
        for future, _, _ in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class Pace:
    """How many ranges to walk at once: ``most`` (BITRIX_LIST_CHAINS) while the portal answers cleanly;
    halved (down to one) when a batch needed retries (the portal said 503, failed, or dropped us: it or
    its bucket is shared and busy), then one more after every few clean batches. Batches already sent
    are not recalled: the next ones wait."""

    def __init__(self, most: int) -> None:
        self.most = self.chains = max(1, most)
        self.clean = 0

    def after(self, trouble: list[str]) -> None:
        if trouble:
            self.chains, self.clean = max(1, self.chains // 2), 0
            return
        self.clean += 1
        if self.chains < self.most and self.clean >= 2 * self.chains:
            self.chains, self.clean = self.chains + 1, 0


def chains_setting() -> int:
    return max(1, int(current_app.config.get("BITRIX_LIST_CHAINS", 4)))


__all__ = ["Shape", "chains_setting", "page_width", "walk"]
