"""Bitrix24's outbound events: verify, store durably, dedupe, then hand to the registered handlers.

Bitrix24 posts each event once and never retries, sends only IDs, and proves
its origin only with the shared application token. So: find the tenant, compare the token in
constant time (a token of another tenant is a mismatch), commit a ``BitrixEvent`` row before
answering (unique on a dedupe key: a re-delivery is never stored twice, and runs the handlers
again only once the first was handled), and run handlers afterwards: inline after the answer, or
in an RQ worker. A handler that raises is retried with backoff up to BITRIX_EVENT_MAX_ATTEMPTS, then kept as ``failed``.

Bitrix24's delivery rules: https://apidocs.bitrix24.com/api-reference/events/index.html

The parts: ``ingest`` (receive and store), ``dispatch`` (claim, run the handlers, queue),
``sweep`` (what is due), ``rerun`` (replay, retry failed), ``listing`` (the log and its counts).
"""

from __future__ import annotations

from flask import has_app_context

from ...models.status import STATUSES, WAITING, EventStatus
from .dispatch import LEASE_SECONDS, Event, dispatch_event, submit
from .ingest import EventRejected, Received, dedupe_key, receive_event, store_pulled_event
from .listing import belongs_to, event_stats, list_events, sees_environment_events
from .rerun import EventBusy, replay, retry_failed
from .sweep import due_events, run_due


def run_event_job(event_id: int) -> str | None:
    """The RQ job. ``flask bitrix24 worker`` runs each job in a fresh app context of the host's app
    (``event_queue.app_job_class``), so the handlers are the host's and the session is new.

    Defined here, not in ``dispatch``: RQ stores a job by its function's path
    (``flask_bitrix24.services.events.run_event_job``), and jobs queued by an earlier version must
    still find it."""
    if not has_app_context():
        raise RuntimeError("Bitrix24 event jobs need an app context: run them with `flask <group> worker` "
                           "(`flask bitrix24 worker` by default)")
    row = dispatch_event(event_id)
    return row.status if row else None


__all__ = [
    "LEASE_SECONDS",
    "STATUSES",
    "WAITING",
    "Event",
    "EventStatus",
    "EventBusy",
    "EventRejected",
    "Received",
    "belongs_to",
    "dedupe_key",
    "dispatch_event",
    "due_events",
    "event_stats",
    "list_events",
    "receive_event",
    "replay",
    "retry_failed",
    "run_due",
    "run_event_job",
    "sees_environment_events",
    "store_pulled_event",
    "submit",
]
