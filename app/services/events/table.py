"""The event log table as the other event modules use it: the app's model and session, the clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ...runtime import runtime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # SQLite drops the zone


def _model() -> Any:
    """The app's event log model (ours on the host's ``db``, or the host's own)."""
    return runtime().event_model


def _session() -> Any:
    return runtime().session
