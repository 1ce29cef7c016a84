"""``bulk_write``: many creates and updates of one entity, 50 to a batch request, each create made
exactly once (a marker in ``ORIGIN_ID`` finds what a lost answer made)."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from ...entities import Entity, entity_for_method
from ...runtime import runtime
from ..bitrix24_service import operating_room
from ..errors import Bitrix24Error, PortalTimeout, ServerError, TransportError
from ..locks import LockTimeout
from ..records import created_id
from ..upsert import find_by_origin, origin_lock_key
from ..wire import ENCODE_ERRORS, encode_command
from .batch import BATCH_LIMIT, run_chunk

ORIGINATOR = "flask-bitrix24"
# Bitrix24 cloud stops one request at 60 s (https://apidocs.bitrix24.com/limits.html), plus a margin
PORTAL_MAX_RUN = 65.0


class BulkDeadline(Bitrix24Error):
    """The bulk request used its time (BITRIX_BULK_MAX_WAIT) before these items were sent."""

    status = 504
    default_code = "BULK_DEADLINE"


class UnsendableItem(ValueError):
    """An item the form encoding cannot carry (``wire.flatten_params`` says why); nothing was sent."""

    def __init__(self, index: int, reason: Exception) -> None:
        super().__init__(f"items[{index}] cannot be sent to Bitrix24: {reason}")
        self.index, self.reason = index, reason


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
    done: bool = field(default=False, repr=False)  # the portal answered this item's command with success

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

    An entity without ORIGIN_ID (tasks: ``origin_ids`` in the entity table) gets no marker: its
    creates are sent once, and a create whose answer was lost is reported as such, never sent again.
    The id parameter and the wrapped answers of each method family come from the entity table.
    Every item is encoded before anything is sent: one the form encoding cannot carry raises
    ``UnsendableItem`` (a ValueError naming the item), and nothing of the call goes out.
    """
    entity = entity_for_method(f"{prefix}.add") or Entity(prefix, prefix, "", 0, prefix)
    outcomes = [WriteOutcome(i, "updated" if item.get("id") else "created") for i, item in enumerate(items)]
    given = [(str(f.get("ORIGINATOR_ID") or ""), str(f["ORIGIN_ID"])) for item in items
             if entity.origin_ids and not item.get("id") and (f := item.get("fields") or {}).get("ORIGIN_ID")]
    repeated = sorted({m for m in given if given.count(m) > 1})
    if repeated:
        # The marker finds a record after a lost answer: two items with one marker would be one record.
        source = f" (ORIGINATOR_ID {repeated[0][0]!r})" if repeated[0][0] else ""
        raise ValueError(f"ORIGIN_ID {repeated[0][1]!r}{source} is given to more than one new record")
    pending = []
    # Our markers: 128 random bits each, as a UUID4 has, drawn in one read of the system's source for the
    # whole call, at the first item that needs one (uuid4() per item read it 5,000 times for 5,000 items,
    # each read letting go of the GIL); a call of updates or of the caller's own ORIGIN_IDs reads nothing.
    markers = ""
    for outcome, item in zip(outcomes, items, strict=True):
        fields = dict(item.get("fields") or {})
        if outcome.action == "created" and not entity.origin_ids:
            command = (entity.method("add"), {"fields": fields})
        elif outcome.action == "created":
            if not fields.get("ORIGIN_ID"):
                markers = markers or os.urandom(16 * len(items)).hex()
                fields["ORIGIN_ID"] = markers[32 * outcome.index : 32 * outcome.index + 32]
                fields["ORIGINATOR_ID"] = ORIGINATOR
                outcome.generated = True
            outcome.marker = str(fields["ORIGIN_ID"])
            originator = fields.get("ORIGINATOR_ID")
            outcome.originator = str(originator) if originator not in (None, "") else None
            command = (f"{prefix}.add", {"fields": fields})
        else:
            outcome.id = int(item["id"])
            command = (entity.method("update"), {entity.id_param: outcome.id, "fields": fields})
        if item.get("params"):
            command[1]["params"] = item["params"]
        try:  # encoded here, once: refused before anything is sent, and retries send the same text
            pending.append((outcome, (command[0], encode_command(*command))))
        except ENCODE_ERRORS as exc:
            raise UnsendableItem(outcome.index, exc) from None

    state = runtime()
    # BITRIX_BULK_MAX_WAIT bounds the whole request, not each call, so a proxy in front of us
    # (deploy/nginx.conf) can wait it out: past it, what was not sent is answered as not sent.
    deadline = state.caller.clock() + state.bulk_max_wait

    def time_left() -> float:
        max_wait = deadline - state.caller.clock()
        if max_wait <= 0:
            raise BulkDeadline(f"not sent: this request ran for BITRIX_BULK_MAX_WAIT ({state.bulk_max_wait:.0f} "
                               "s); send these items again (those with your own ORIGIN_ID are found, not made "
                               "twice)")
        return max_wait

    def send(chunk: list) -> None:
        """One batch of 50 (its markers looked up first, under their locks); raises what stops the job."""
        given = [o for o, _ in chunk if o.marker and not o.generated]
        keys = [origin_lock_key(client_id, prefix, o.originator, o.marker) for o in given if o.marker]
        max_wait = time_left()
        with state.locks.hold(keys):
            if given:  # records an earlier run made with the caller's ORIGIN_IDs
                found = _find_markers(prefix, given, client_id, max_wait)
                for outcome in given:
                    if outcome.index in found:
                        outcome.id, outcome.existing = found[outcome.index], True
                chunk = [(o, cmd) for o, cmd in chunk if not o.existing]
            while chunk:
                # What the methods' operating budgets have room for now goes now, the rest after: the last
                # room in a window smaller than a whole batch is used, not left idle until a bucket drops.
                part = _fitting(chunk, client_id, time_left)
                _write_chunk(entity, chunk[:part], client_id, time_left(), attempts)
                chunk = chunk[part:]

    chunks = [pending[i : i + BATCH_LIMIT] for i in range(0, len(pending), BATCH_LIMIT)]
    # Updates go several batches at a time; a call with creates sends its batches in order, so that new
    # records' IDs follow the items (an import read back by ID comes out in the file's order).
    creates = any(outcome.action == "created" for outcome, _ in pending)
    failure = _run_chunks(send, chunks, 1 if creates else parallel_setting())
    if failure is not None:
        # A limit that outlasted the bound, the portal refusing us, the deadline, or another request
        # still writing the same ORIGIN_IDs: nothing more will succeed now. Every item not yet done
        # says so; none is left without an answer (and what was made is reported).
        for outcome, _ in pending:
            if outcome.error is None and not outcome.done and not outcome.existing and not (
                    outcome.action == "created" and outcome.id is not None) and outcome.index in failure[1]:
                outcome.error = failure[0]
    return outcomes


def parallel_setting() -> int:
    """BITRIX_BULK_PARALLEL: batch requests of updates in flight at once."""
    return max(1, int(current_app.config.get("BITRIX_BULK_PARALLEL", 4)))


def _stop_error(exc: Exception) -> Bitrix24Error:
    if isinstance(exc, LockTimeout):
        return Bitrix24Error(f"not sent: {exc} (another request is creating these ORIGIN_IDs); send these items "
                             "again", code="BUSY")
    return exc  # type: ignore[return-value]


def _run_chunks(send: Any, chunks: list[list], parallel: int) -> tuple[Bitrix24Error, set[int]] | None:
    """Send the chunks in order, up to ``parallel`` batch requests in flight (each in a thread with an
    app context of its own: a method's server time is the portal's, and its operating budget and bucket
    are shared by all of them through the caller). At the first error that stops the job nothing more
    is started; returns that error and the indexes of the items it leaves undone (its own chunk's, and
    every chunk's not started), else None. Chunks already in flight finish."""
    undone: set[int] = set()
    if parallel <= 1 or len(chunks) <= 1:
        for number, chunk in enumerate(chunks):
            try:
                send(chunk)
            except (Bitrix24Error, LockTimeout) as exc:
                undone.update(o.index for later in chunks[number:] for o, _ in later)
                return _stop_error(exc), undone
        return None
    app = current_app._get_current_object()

    def task(chunk: list) -> None:
        with app.app_context():
            send(chunk)

    failure: Bitrix24Error | None = None
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="bitrix24-bulk") as pool:
        running: dict[Future, list] = {}
        for number, chunk in enumerate(chunks):
            while len(running) >= parallel and failure is None:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    failure = failure or _failed(future, running.pop(future), undone)
            if failure is not None:
                undone.update(o.index for later in chunks[number:] for o, _ in later)
                break
            running[pool.submit(contextvars.copy_context().run, task, chunk)] = chunk
        for future in list(running):
            failure = _failed(future, running.pop(future), undone) or failure
    return (failure, undone) if failure is not None else None


def _failed(future: Future, chunk: list, undone: set[int]) -> Bitrix24Error | None:
    try:
        future.result()
    except (Bitrix24Error, LockTimeout) as exc:
        undone.update(o.index for o, _ in chunk)
        return _stop_error(exc)
    return None


# The fewest commands of a method worth a batch request of their own when the budget has room for fewer
# than the batch holds: smaller remnants wait for the next bucket to drop out (a request is a place in
# the portal's bucket too, and four batches in flight would otherwise split each other into crumbs).
MIN_PART = 10


def _fitting(chunk: list, client_id: int | None, time_left: Callable[[], float]) -> int:
    """How many of the chunk's first commands to send now: as many as each method's operating budget has
    room for (waiting, within the request's ``time_left()``, until at least MIN_PART of them, or all, fit),
    else all of them (no cost known, or no room within the bound: the call's own admission then waits, or
    says when to try again). The time left is read again for each method: a wait for one is not given
    again to the next."""
    counts: dict[str, int] = {}
    for _, (method, _) in chunk:
        counts[method.lower()] = counts.get(method.lower(), 0) + 1
    rooms: dict[str, int | None] = {}
    for name, count in counts.items():
        rooms[name] = operating_room(name, client_id=client_id, max_wait=time_left(), at_least=min(count, MIN_PART))
        if rooms[name] == 0:
            return len(chunk)
    used: dict[str, int] = {}
    for count, (_, (method, _)) in enumerate(chunk):
        name = method.lower()
        room = rooms[name]
        if room is not None and used.get(name, 0) >= room:
            return max(1, count)
        used[name] = used.get(name, 0) + 1
    return len(chunk)


def _write_chunk(entity: Entity, chunk: list, client_id: int | None, max_wait: float, attempts: int) -> None:
    prefix = entity.prefix
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
                elif outcome.action == "created" and not outcome.marker:
                    outcome.error = exc  # no marker to look for: it may exist, so it is never sent twice
            # Creates found are done; updates are safe to repeat.
            chunk = [(o, cmd) for o, cmd in chunk
                     if o.error is None and not (o.action == "created" and o.id is not None)]
            if not chunk:
                return
            continue
        refused = []
        for (outcome, command), result in zip(chunk, batch_items, strict=True):
            if result.error is not None and result.error.code == "OPERATION_TIME_LIMIT" and attempt < attempts:
                # Refused before it ran (the portal checks the budget first): safe to send again, once
                # the caller has waited for room in the method's budget (it marked the method spent).
                refused.append((outcome, command))
            elif result.error is not None:
                outcome.error = result.error
            else:
                outcome.done = True
                if outcome.action == "created":
                    new_id = created_id(entity, result.result)
                    outcome.id = new_id if isinstance(new_id, int) else None
        if not refused:
            return
        chunk = refused


def _find_markers(prefix: str, outcomes: list[WriteOutcome], client_id: int | None,
                  max_wait: float) -> dict[int, int]:
    """The records that carry these outcomes' markers: {outcome index: record id}. A marker the caller
    sent with an ORIGINATOR_ID matches only a record with that ORIGINATOR_ID too; our own UUIDs only
    records we made (``upsert.find_by_origin`` reads every matching row and compares exactly)."""
    wanted = [(o.marker, o.originator) for o in outcomes if o.marker]
    if not wanted:
        return {}
    found = find_by_origin(prefix, wanted, client_id=client_id, max_wait=max_wait, background=True)
    return {o.index: found[(o.marker, o.originator)] for o in outcomes
            if o.marker and (o.marker, o.originator) in found}
