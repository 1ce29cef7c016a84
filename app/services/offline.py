"""Offline events: the portal keeps what changed while we were away, and we fetch it.

Bitrix24 posts each online event once and never again, so a change made while our app is down,
deploying or cut off is lost. An app can bind events **offline** instead
(https://apidocs.bitrix24.com/api-reference/events/offline-events.html): the portal queues a
latest-state record per object, we fetch them (``event.offline.get``), and we tell it which to forget
(``event.offline.clear``) once they are ours. ``ONOFFLINEEVENT``
(https://apidocs.bitrix24.com/api-reference/events/on-offline-event.html) says there is something to
fetch; the worker also drains on a schedule, so a lost notification costs only a delay.

A drain never loses a record and never runs one twice:

1. the batch is reserved (``clear=0``, https://apidocs.bitrix24.com/api-reference/events/event-offline-get.html),
   and its ``process_id`` is written to the installation before anything else;
2. each record is stored in the event log under a key made of the portal, ``MESSAGE_ID`` and
   ``TIMESTAMP_X`` (a later change of the same object is a new record);
3. the stored records are cleared by ``process_id``
   (https://apidocs.bitrix24.com/api-reference/events/event-offline-clear.html); records we cannot
   store are marked with ``event.offline.error`` and kept by the portal;
4. the ``process_id`` is forgotten, and the stored events go to the handlers like pushed ones.

A crash after step 1 leaves the ``process_id`` behind: the next drain reads that batch again first.
Records it had stored are found under their key (and not run again), the others are stored now.

``ONOFFLINEEVENT`` is not sent for every change: after one, the portal stays silent for its
``minTimeout`` and drops (never delays) what it would have sent meanwhile. A record queued after a
drain's last look and before that pause ends would be announced by nobody and wait for the worker's
schedule; so a drain looks again once the pause is over (``_settle``), and whatever is queued after that
is announced again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from ..models.status import EventStatus
from ..runtime import runtime
from .bitrix24_service import call_installation
from .errors import Bitrix24Error

log = logging.getLogger("flask_bitrix24")

MAX_BATCHES = 1000  # a drain stops after this many batches (the next one goes on)
CLAIM_SECONDS = 300.0  # a drain that died frees its installation after this long
SETTLE_ROUNDS = 10  # looks at the queue after a drain, at most, while it keeps filling (see _settle)
SETTLE_MAX_WAIT = 30.0  # a longer notification pause is left to the worker's schedule: no thread waits that long

# (app, member_id): when the thread of this process that settles the installation looks at its queue again
_settling: dict[tuple[int, str], float] = {}
_settling_lock = threading.Lock()


@dataclass
class DrainReport:
    member_id: str
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    busy: bool = False  # another process was draining it
    event_ids: list[int] = field(default_factory=list, repr=False)

    def view(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "batches": self.batches, "stored": self.stored,
                "duplicates": self.duplicates, "failed": self.failed, "busy": self.busy}


def offline_key(member_id: str, record: dict[str, Any]) -> str:
    """One key per record version: the portal, the object's MESSAGE_ID and the record's time."""
    material = f"offline|{member_id}|{record.get('MESSAGE_ID')}|{record.get('TIMESTAMP_X')}|{record.get('ID')}"
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def _epoch(stamp: Any) -> str:
    try:
        return str(int(dt.datetime.fromisoformat(str(stamp)).timestamp()))
    except (TypeError, ValueError):
        return ""


def as_event(inst: Any, record: dict[str, Any]) -> dict[str, Any] | None:
    """An offline record in the shape of a pushed event (``event``, ``data``, ``ts``, ``auth``), plus
    ``offline`` (its ID, MESSAGE_ID and time), or None when it is not one we can read."""
    name = record.get("EVENT_NAME")
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        return None
    data = record.get("EVENT_DATA")
    return {
        "event": name.strip().upper(),
        "data": data if isinstance(data, dict) else {},
        "ts": _epoch(record.get("TIMESTAMP_X")),
        "auth": {"member_id": inst.member_id, "domain": inst.domain or ""},
        "offline": {"id": record.get("ID"), "message_id": record.get("MESSAGE_ID"),
                    "timestamp": record.get("TIMESTAMP_X"), "additional": record.get("EVENT_ADDITIONAL")},
    }


def drain(member_id: str, *, batch: int | None = None, dispatch: bool = True, settle: bool = True,
          notified: bool = False) -> DrainReport:
    """Fetch, store and clear the installation's offline records until its queue is empty; with ``settle``,
    look again once the portal's ONOFFLINEEVENT pause is over (``_settle``) when this drain took records or
    answers an ONOFFLINEEVENT (``notified``: the pause has just begun)."""
    size = _batch_size(batch)
    report = DrainReport(member_id)
    took, report.busy = _drain_once(member_id, size, report, dispatch)
    if settle and (took or notified):
        _settle({member_id: report}, size, dispatch)
    _log(report)
    return report


def _batch_size(batch: int | None) -> int:
    return int(batch or current_app.config.get("BITRIX_OFFLINE_BATCH", 200))


def _log(report: DrainReport) -> None:
    if report.batches:
        log.info("bitrix24 offline drain of %s: %s", report.member_id, report.view())


def _drain_once(member_id: str, size: int, report: DrainReport, dispatch: bool) -> tuple[bool, bool]:
    """One drain under the installation's claim, counted in ``report``: (it took records, another
    holder had the claim)."""
    rt = runtime()
    store = rt.installations
    me = uuid.uuid4().hex
    # One drain per installation at a time, whatever the process: the batch pointer has one owner.
    if not store.claim_drain(member_id, me, CLAIM_SECONDS):
        return False, True
    batches = report.batches
    try:
        _drain(rt, store, member_id, size, report, dispatch, me)
    finally:
        store.release_drain(member_id, me)
    return report.batches > batches, False


def quiet_seconds() -> float:
    """How long the portal may stay silent after an ONOFFLINEEVENT while records keep coming: its
    ``minTimeout`` (BITRIX_OFFLINE_MIN_TIMEOUT, what bind_events binds) plus a second, as the portal times
    the pause with a cache entry kept in whole seconds, and two notifications of one ``ts`` second are
    one delivery to us (``minTimeout=0``, one per hit)."""
    return max(0, int(current_app.config.get("BITRIX_OFFLINE_MIN_TIMEOUT", 1))) + 1.0


def _settle(reports: dict[str, DrainReport], size: int, dispatch: bool) -> None:
    """Look at the queues of ``reports`` again (counted in them) once the portal's notification pause is
    over. The portal posts ONOFFLINEEVENT at most once per ``minTimeout`` and drops the notifications in
    between ("Time is not up.", EventOfflineTable::checkSendTime in its rest module), so a record queued
    after a drain's last look and before the pause ends is announced by nobody, whether the notification
    that began the pause reached us or not (it may have come while we were down). A queue that still
    fills, or that another drain holds, is looked at again, up to SETTLE_ROUNDS times; a record queued
    after the last look is announced. A failed look is logged: the next notification or the schedule
    looks again."""
    quiet = quiet_seconds()
    if quiet > SETTLE_MAX_WAIT:
        return
    pending = list(reports)
    for _ in range(SETTLE_ROUNDS):
        pending = _wait_quiet(pending, quiet)
        again = []
        for member_id in pending:
            try:
                took, busy = _drain_once(member_id, size, reports[member_id], dispatch)
            except Exception as exc:  # what the drain itself took is stored; nothing is lost here
                log.warning("bitrix24 offline drain of %s, looking again after the notification pause, "
                            "failed: %s", member_id, exc)
                continue
            if took or busy:
                again.append(member_id)
        pending = again
        if not pending:
            return
    log.info("bitrix24 offline queues of %s still fill after %d looks: left to the next notification",
             ", ".join(pending), SETTLE_ROUNDS)


def _wait_quiet(members: list[str], quiet: float) -> list[str]:
    """Wait ``quiet`` seconds for the installations of ``members`` and return them; one that another
    thread of this process waits for already is left to it (its look is pushed back to our time) and not
    returned. The look comes after the latest time asked for, so a notification's drain that found a
    thread waiting can return at once."""
    rt = runtime()
    app = id(current_app._get_current_object())
    clock = rt.caller.clock
    due = clock() + quiet
    mine: list[tuple[int, str]] = []
    with _settling_lock:
        for member_id in members:
            key = (app, member_id)
            if key in _settling:
                _settling[key] = max(_settling[key], due)
            else:
                _settling[key] = due
                mine.append(key)
    try:
        while mine:
            with _settling_lock:
                left = max(_settling[key] for key in mine) - clock()
                if left <= 0:  # given up under the lock: a later notification waits on its own
                    for key in mine:
                        del _settling[key]
                    ready, mine = [key[1] for key in mine], []
                    return ready
            rt.caller.sleep(min(left, quiet))
        return []
    finally:
        with _settling_lock:
            for key in mine:  # interrupted (the worker stopping): nobody waits for these any more
                _settling.pop(key, None)


def _drain(rt: Any, store: Any, member_id: str, size: int, report: DrainReport, dispatch: bool, me: str) -> None:
    from . import events as events_service

    for _ in range(MAX_BATCHES):
        store.claim_drain(member_id, me, CLAIM_SECONDS)  # still ours: renewed each batch
        inst = store.get(member_id)
        if inst is None or inst.status != "active":
            break
        params: dict[str, Any] = {"clear": 0, "limit": size}
        if inst.connector:
            params["auth_connector"] = inst.connector
        pending = inst.offline_process_id
        if pending:
            params["process_id"] = pending  # a batch a crash left behind: read it again first
        answer = call_installation(member_id, "event.offline.get", params).get("result") or {}
        process_id = pending or answer.get("process_id")
        records = [r for r in answer.get("events") or [] if isinstance(r, dict)]
        if not records:
            if pending:
                call_installation(member_id, "event.offline.clear", {"process_id": pending})
                store.set_values(member_id, offline_process_id=None)
                continue
            break
        if not process_id:
            raise Bitrix24Error("event.offline.get reserved records without a process_id", method="event.offline.get")
        if not pending:
            store.set_values(member_id, offline_process_id=process_id)  # before anything is stored
        report.batches += 1
        stored, failed, new_ids = [], [], []
        for record in records:
            payload = as_event(inst, record)
            if payload is None:
                failed.append(record.get("MESSAGE_ID"))
                continue
            # A database error stops the drain here: the batch stays reserved under the pointer, and
            # the next drain reads it again (nothing is marked as failed for the database's sake).
            received, duplicate = events_service.store_pulled_event(
                payload, tenant=inst.client_id, portal_domain=inst.domain, key=offline_key(member_id, record))
            stored.append(record.get("ID"))
            if duplicate:
                report.duplicates += 1  # stored before a crash: never stored twice
                if received.status in (EventStatus.RECEIVED, EventStatus.QUEUED):
                    new_ids.append(received.id)  # its handlers never ran; the claim keeps them to one run
            else:
                report.stored += 1
                new_ids.append(received.id)
        failed = [m for m in failed if isinstance(m, str) and m]
        if failed:
            call_installation(member_id, "event.offline.error", {"process_id": process_id, "message_id": failed})
            report.failed += len(failed)
        call_installation(member_id, "event.offline.clear", {"process_id": process_id})
        store.set_values(member_id, offline_process_id=None)
        report.event_ids += new_ids
        if dispatch:
            _hand_on(new_ids)
        if len(records) < size and not pending:
            break


def _hand_on(event_ids: list[int]) -> None:
    """The stored events to their handlers: the queue's worker, or here and now."""
    from . import events as events_service

    for event_id in event_ids:
        if not events_service.submit(event_id):
            events_service.dispatch_event(event_id)


def drain_all() -> list[DrainReport]:
    """Every active installation whose events come offline (the worker's schedule)."""
    rt = runtime()
    if not rt.app_mode or str(current_app.config.get("BITRIX_APP_EVENT_DELIVERY", "offline")).lower() != "offline":
        return []
    size = _batch_size(None)
    reports = []
    for inst in rt.installations.all():
        if inst.status != "active":
            continue
        report = DrainReport(inst.member_id)
        try:
            _, report.busy = _drain_once(inst.member_id, size, report, True)
        except Bitrix24Error as exc:
            log.warning("bitrix24 offline drain of %s failed: %s", inst.member_id, exc)
            continue
        reports.append(report)
    took = {report.member_id: report for report in reports if report.batches}
    if took:
        _settle(took, size, True)  # one wait for all of them
    for report in reports:
        _log(report)
    return reports


def on_offline_event(event: Any) -> None:
    """The built-in handler of ONOFFLINEEVENT: drain the installation that sent it."""
    member = (event.payload.get("auth") or {}).get("member_id")
    if isinstance(member, str) and member:
        drain(member, notified=True)


__all__ = ["DrainReport", "as_event", "drain", "drain_all", "offline_key", "on_offline_event"]
