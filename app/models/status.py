"""The statuses of an event log row, defined once for the models, the services, the API and the CLI.

Stored as the plain strings (a ``StrEnum`` compares and binds as its value), so the column and the
rows already written do not change.
"""

from __future__ import annotations

import enum


class EventStatus(enum.StrEnum):
    """received -> (queued ->) processing -> done | retry (-> processing ...) | failed"""

    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


# Every status as the plain string stored (the API's and the CLI's choices, in this order).
STATUSES: tuple[str, ...] = tuple(status.value for status in EventStatus)
# Not handled yet: what the event lag metric looks at.
WAITING = (EventStatus.RECEIVED, EventStatus.QUEUED, EventStatus.RETRY, EventStatus.PROCESSING)
