"""Bulk work: ``bx_batch`` (50 commands a request), ``bx_list_all`` (every row, constant memory) and
``bulk_write`` (thousands of creates and updates, each created exactly once).

All three go through ``bx_call``, so they are paced by the portal's bucket and retried by error
class like any call; a batch of reads is repeatable, a batch holding an ``*.add`` is not. They are
background work: they leave a fifth of the bucket to interactive calls and never queue ahead of them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..runtime import runtime
from .bitrix24_service import bx_call
from .caller import is_repeatable
from .errors import BadInput, Bitrix24Error, PortalTimeout, ServerError, TransportError, classify
from .upsert import origin_lock_key
from .wire import encode_form, flatten_params

BATCH_LIMIT = 50  # commands per batch request (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html)
# rows per list page: https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html
PAGE = 50
_REFERENCE = re.compile(r"\$(?:result|next|total|time|error)\[([^\]]+)\]")


@dataclass
class BatchItem:
    """One command's outcome. ``error`` is None on success."""

    key: str
    method: str
    result: Any = None
    error: Bitrix24Error | None = None
    total: int | None = None
    next: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def command_string(method: str, params: Any) -> str:
    """``crm.contact.get?id=5``: each command is parsed by PHP's parse_str on the portal."""
    query = encode_form(flatten_params(params))
    return f"{method}?{query}" if query else method


def _section(value: Any) -> dict[str, Any]:
    # Batch sections are a list when the keys were 0..n-1, an object otherwise, and [] when
    # empty: always hand back a dict keyed by the command key.
    # See https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {}


def _references(params: Any) -> set[str]:
    found: set[str] = set()
    for _, value in flatten_params(params):
        found.update(_REFERENCE.findall(value))
    return found


def bx_batch(
    commands: Mapping[str, tuple[str, Any]] | Iterable[tuple[str, Any]],
    *,
    client_id: int | None = None,
    halt: bool = False,
    max_wait: float | None = None,
) -> dict[str, BatchItem] | list[BatchItem]:
    """Run commands in ``batch`` requests of 50, back to back at the pace the bucket allows.

    ``commands`` is a dict ``{key: (method, params)}`` (an answer keyed the same) or a list of
    ``(method, params)`` (an answer list in the same order). ``$result[key][...]`` references may
    point to earlier commands of the same chunk of 50; a reference across chunks is refused before
    anything is sent. Every command gets a ``BatchItem``: its result, or its error (with
    ``halt=True``, commands after a failure get a ``BATCH_HALTED`` error; when a later request of
    the batch fails as a whole, its commands and the ones after it carry that error while the
    results of the requests that ran are kept). Nothing is dropped.
    """
    keyed = isinstance(commands, Mapping)
    pairs = list(commands.items()) if keyed else [(f"c{i}", cmd) for i, cmd in enumerate(commands)]
    for key, cmd in pairs:
        if not (isinstance(cmd, tuple) and len(cmd) == 2 and isinstance(cmd[0], str)):
            raise ValueError(f"command {key!r} must be a (method, params) pair")
    chunks = [pairs[i : i + BATCH_LIMIT] for i in range(0, len(pairs), BATCH_LIMIT)]
    for chunk in chunks:
        keys = {str(k) for k, _ in chunk}
        for key, (_, params) in chunk:
            outside = _references(params) - keys
            if outside:
                raise ValueError(f"command {key!r} refers to {sorted(outside)} outside its batch of {BATCH_LIMIT}")

        for key, (_, params) in chunk:
            try:  # refuse what cannot be sent before the first chunk runs, not halfway through
                command_string("x", params)
            except (ValueError, TypeError, UnicodeError, RecursionError) as exc:
                raise ValueError(f"command {key!r} cannot be sent: {exc}") from None

    items: list[BatchItem] = []
    halted = False
    failure: Bitrix24Error | None = None
    for chunk in chunks:
        if halted or failure is not None:
            # Earlier chunks ran: their results stand. These did not run, and say why.
            items += [BatchItem(str(k), m, error=failure) if failure else _halted(str(k), m) for k, (m, _) in chunk]
            continue
        try:
            chunk_items = run_chunk(chunk, client_id=client_id, halt=halt, max_wait=max_wait)
        except Bitrix24Error as exc:
            if not items:
                raise  # nothing ran: the caller gets the error itself
            failure = exc
            items += [BatchItem(str(k), m, error=exc) for k, (m, _) in chunk]
            continue
        items += chunk_items
        halted = halt and any(not item.ok for item in chunk_items)
    return {item.key: item for item in items} if keyed else items


def _halted(key: str, method: str) -> BatchItem:
    return BatchItem(key, method, error=Bitrix24Error("not run: an earlier command failed and halt was set",
                                                      code="BATCH_HALTED", method=method))


def run_chunk(
    chunk: list[tuple[Any, tuple[str, Any]]], *, client_id: int | None, halt: bool, max_wait: float | None
) -> list[BatchItem]:
    """One ``batch`` request (at most 50 commands) -> one ``BatchItem`` per command, in order."""
    cmd = {str(key): command_string(method, params) for key, (method, params) in chunk}
    repeatable = all(is_repeatable(method) for _, (method, _) in chunk)
    envelope = bx_call(
        "batch", {"halt": 1 if halt else 0, "cmd": cmd}, client_id=client_id, max_wait=max_wait, repeatable=repeatable,
        background=True,
    )
    body = envelope.get("result") if isinstance(envelope.get("result"), dict) else {}
    results, errors = _section(body.get("result")), _section(body.get("result_error"))
    totals, nexts = _section(body.get("result_total")), _section(body.get("result_next"))
    items = []
    for key, (method, _) in chunk:
        key = str(key)
        item = BatchItem(key, method, total=totals.get(key), next=nexts.get(key))
        if key in errors:
            err = errors[key] if isinstance(errors[key], dict) else {}
            item.error = classify(400, err.get("error"), err.get("error_description"), method=method, body=err)
        elif key in results:
            item.result = results[key]
        else:
            item.error = _halted(key, method).error
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------------------
# Listing every row


def _row_shape(method: str) -> tuple[str | None, str]:
    # crm.item.list nests rows under "items" and names the id "id":
    # https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html
    return ("items", "id") if method.lower().startswith("crm.item.") else (None, "ID")


def _rows(result: Any, container: str | None) -> list[Any]:
    if container and isinstance(result, dict):
        result = result.get(container)
    return result if isinstance(result, list) else []


def bx_list_all(
    method: str, params: Mapping[str, Any] | None = None, *, client_id: int | None = None, mode: str = "auto"
) -> Iterator[Any]:
    """Yield every row a ``*.list`` method matches, each exactly once, holding one batch in memory.

    ``mode="keyset"`` (the default whenever the order allows it: none, or by ID ascending) walks
    by ID: ``start=-1``, ``order ID ASC``, ``filter >ID=last``, 50 chained pages per batch request;
    no COUNT on the portal, and rows added or deleted meanwhile neither shift nor repeat others.
    ``mode="offset"`` (for any other order) reads ``total`` from the first page and packs 50
    offsets into each batch request.
    """
    params = dict(params or {})
    params.pop("start", None)
    container, id_field = _row_shape(method)
    order = params.get("order") or {}
    by_id = not order or (
        isinstance(order, Mapping) and list(order) in ([id_field], [id_field.lower()])
        and str(next(iter(order.values()))).upper() == "ASC"
    )
    if mode == "keyset" or (mode == "auto" and by_id):
        yield from _keyset(method, params, client_id, container, id_field)
    else:
        yield from _offsets(method, params, client_id, container)


def _keyset(method: str, params: dict[str, Any], client_id: int | None, container: str | None, id_field: str):
    """Walk by ID. Each round first asks for the count of rows past the cursor (one ``start=0``
    page) so that the batches that follow hold exactly the pages left, plus one page of slack for
    rows added meanwhile: pages chained past the end would make the portal run useless queries
    (an unresolvable ``$result`` reference becomes an array filter, a full scan each). Methods
    without ``total`` are walked 50 pages a batch until a short page."""
    flt = dict(params.get("filter") or {})
    last = 0
    for key in (f">{id_field}", f">={id_field}"):
        if key in flt:
            raw = flt.pop(key)
            if not (isinstance(raw, int) or (isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,10}", raw))):
                raise BadInput(f"filter[{key}] must be an integer to list every row", code="INVALID_FILTER")
            value = int(raw)
            last = max(last, value if key == f">{id_field}" else value - 1)
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
            yield from rows
            if len(rows) < PAGE:
                return
            last = int(rows[-1][id_field])
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
                after: Any = last if i == 0 else f"$result[p{i - 1}]{nest}[{PAGE - 1}][{id_field}]"
                commands.append((f"p{i}", (method, {**base, "start": -1, "filter": {**flt, f">{id_field}": after}})))
            for item in run_chunk(commands, client_id=client_id, halt=False, max_wait=max_wait):
                if item.error is not None:
                    raise item.error
                rows = _rows(item.result, container)
                yield from rows
                if len(rows) < PAGE:
                    return  # later pages of this batch chained off a short page: ignore them
                last = int(rows[-1][id_field])
        # Every expected page came back full: rows were added meanwhile. Count again from here.


def _offsets(method: str, params: dict[str, Any], client_id: int | None, container: str | None):
    max_wait = runtime().bulk_max_wait
    order = dict(params.get("order") or {})
    id_field = _row_shape(method)[1]
    if id_field not in order and id_field.lower() not in order:
        # Ties in a non-unique order could be paged differently by separate queries: break them by ID.
        order[id_field] = "ASC"
    params = {**params, "order": order}
    first = bx_call(method, {**params, "start": 0}, client_id=client_id, max_wait=max_wait, background=True)
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


# ---------------------------------------------------------------------------------------------------
# Creating and updating many records


ORIGINATOR = "flask-bitrix24"
# Bitrix24 cloud stops one request at 60 s (https://apidocs.bitrix24.com/limits.html), plus a margin
PORTAL_MAX_RUN = 65.0


@dataclass
class WriteOutcome:
    index: int
    action: str  # "created" | "updated"
    id: int | None = None
    error: Bitrix24Error | None = None
    marker: str | None = field(default=None, repr=False)
    generated: bool = field(default=False, repr=False)  # the marker is our UUID, not the caller's ORIGIN_ID
    originator: str | None = field(default=None, repr=False)  # the ORIGINATOR_ID sent with the marker
    existing: bool = False  # the caller's ORIGIN_ID was already on a record: nothing was created

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "action": self.action, "ok": self.error is None, "id": self.id}
        if self.existing:
            out["existing"] = True
        if self.error is not None:
            out.update(error=self.error.code, error_description=self.error.description)
        return out


def bulk_write(prefix: str, items: list[dict[str, Any]], *, client_id: int | None = None, attempts: int = 5):
    """Create (no ``id``) or update (``id``) records of one entity, 50 per batch request.

    Creates are made safe to retry: each carries a marker in ``ORIGIN_ID`` (yours if you set one;
    otherwise a fresh UUID, with ``ORIGINATOR_ID`` = "flask-bitrix24"). When a batch's answer is
    lost (dropped connection, timeout, 5xx) the markers are looked up and only the records that do
    not exist are sent again: every item is created exactly once.

    Your own ``ORIGIN_ID`` (with your ``ORIGINATOR_ID``, when given) also makes a *rerun* of the whole
    call safe, as for a single create: a record that already has it is not made again (its outcome
    says ``existing``). The lookup and the creates run under the same per-origin locks a single
    create takes.
    """
    outcomes = [WriteOutcome(i, "updated" if item.get("id") else "created") for i, item in enumerate(items)]
    given = [(str(f.get("ORIGINATOR_ID") or ""), str(f["ORIGIN_ID"])) for item in items
             if not item.get("id") and (f := item.get("fields") or {}).get("ORIGIN_ID")]
    repeated = sorted({m for m in given if given.count(m) > 1})
    if repeated:
        # The marker finds a record after a lost answer: two items with one marker would be one record.
        source = f" (ORIGINATOR_ID {repeated[0][0]!r})" if repeated[0][0] else ""
        raise ValueError(f"ORIGIN_ID {repeated[0][1]!r}{source} is given to more than one new record")
    pending = []
    for outcome, item in zip(outcomes, items, strict=True):
        fields = dict(item.get("fields") or {})
        if outcome.action == "created":
            if not fields.get("ORIGIN_ID"):
                fields["ORIGIN_ID"] = uuid.uuid4().hex
                fields["ORIGINATOR_ID"] = ORIGINATOR
                outcome.generated = True
            outcome.marker = str(fields["ORIGIN_ID"])
            originator = fields.get("ORIGINATOR_ID")
            outcome.originator = str(originator) if originator not in (None, "") else None
            command = (f"{prefix}.add", {"fields": fields})
        else:
            outcome.id = int(item["id"])
            command = (f"{prefix}.update", {"id": outcome.id, "fields": fields})
        if item.get("params"):
            command[1]["params"] = item["params"]
        pending.append((outcome, command))

    state = runtime()
    max_wait = state.bulk_max_wait
    for start in range(0, len(pending), BATCH_LIMIT):
        chunk = pending[start : start + BATCH_LIMIT]
        given = [o for o, _ in chunk if o.marker and not o.generated]
        keys = [origin_lock_key(client_id, prefix, o.originator, o.marker) for o in given if o.marker]
        try:
            with state.locks.hold(keys):
                if given:  # records an earlier run made with the caller's ORIGIN_IDs
                    found = _find_markers(prefix, given, client_id, max_wait)
                    for outcome in given:
                        if outcome.index in found:
                            outcome.id, outcome.existing = found[outcome.index], True
                    chunk = [(o, cmd) for o, cmd in chunk if not o.existing]
                if chunk:
                    _write_chunk(prefix, chunk, client_id, max_wait, attempts)
        except Bitrix24Error as exc:
            # A limit that outlasted the bound, or the portal refusing us: nothing more will
            # succeed now. Every item not yet done says so; none is left without an answer.
            for outcome, _ in pending[start:]:
                if outcome.error is None and not (outcome.action == "created" and outcome.id is not None):
                    outcome.error = exc
            break
    return outcomes


def _write_chunk(prefix: str, chunk: list, client_id: int | None, max_wait: float, attempts: int) -> None:
    for attempt in range(1, attempts + 1):
        try:
            batch_items = run_chunk(
                [(f"w{o.index}", cmd) for o, cmd in chunk], client_id=client_id, halt=False, max_wait=max_wait
            )
        except (TransportError, ServerError) as exc:
            # The answer was lost; the writes may or may not have happened.
            if attempt == attempts:
                for outcome, _ in chunk:
                    outcome.error = exc
                return
            if isinstance(exc, PortalTimeout) or isinstance(getattr(exc, "cause", None), PortalTimeout):
                # We gave up waiting, the portal may not have: let its own limit on one request
                # pass before looking, or records it is still creating would be sent again.
                state = runtime()
                state.caller.sleep(max(0.0, PORTAL_MAX_RUN - state.portals.timeouts.read))
            found = _find_markers(prefix, [o for o, _ in chunk if o.marker], client_id, max_wait)
            for outcome, _ in chunk:
                if outcome.index in found:
                    outcome.id = found[outcome.index]
            # Creates found are done; updates are safe to repeat.
            chunk = [(o, cmd) for o, cmd in chunk if not (o.action == "created" and o.id is not None)]
            if not chunk:
                return
            continue
        for (outcome, _), result in zip(chunk, batch_items, strict=True):
            if result.error is not None:
                outcome.error = result.error
            elif outcome.action == "created":
                outcome.id = int(result.result)
        return


def _find_markers(prefix: str, outcomes: list[WriteOutcome], client_id: int | None,
                  max_wait: float) -> dict[int, int]:
    """The records that carry these outcomes' markers: {outcome index: record id}. A marker the caller
    sent with an ORIGINATOR_ID matches only a record with that ORIGINATOR_ID too."""
    markers = [o.marker for o in outcomes if o.marker]
    if not markers:
        return {}
    flt: dict[str, Any] = {"@ORIGIN_ID": markers}
    if all(o.generated for o in outcomes):
        flt["ORIGINATOR_ID"] = ORIGINATOR  # our own UUIDs: look only at records we made
    envelope = bx_call(
        f"{prefix}.list",
        {"filter": flt, "select": ["ID", "ORIGIN_ID", "ORIGINATOR_ID"], "order": {"ID": "ASC"}},
        client_id=client_id,
        max_wait=max_wait,
        background=True,
    )
    rows = [row for row in envelope.get("result") or [] if isinstance(row, dict) and row.get("ID") is not None]
    found: dict[int, int] = {}
    for outcome in outcomes:
        for row in rows:  # oldest first
            if str(row.get("ORIGIN_ID")) == outcome.marker and (
                    outcome.originator is None or str(row.get("ORIGINATOR_ID") or "") == outcome.originator):
                found[outcome.index] = int(row["ID"])
                break
    return found
