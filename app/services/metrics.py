"""Prometheus metrics (prometheus_client), one registry per app.

Calls, errors, limits met, retries and operating time are counted in the process that makes the
calls. Event counts and lag are read from the event table at scrape time, so they are right
whichever process (web worker or RQ worker) handled the events. Under gunicorn with several
workers set ``PROMETHEUS_MULTIPROC_DIR`` (an empty folder) and every worker's counters are summed
at scrape time (prometheus_client's multiprocess mode).

Labels: ``tenant`` is the client id (``env`` for the global ``BITRIX_WEBHOOK_BASE``), ``method``
the Bitrix24 method, ``code`` Bitrix24's error code.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from ..models.status import WAITING as WAITING  # the not-yet-handled statuses, defined with the others

MAX_CODES = 100  # distinct error-code labels per process; more are counted as "other"
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
log = logging.getLogger("flask_bitrix24")


def tenant_label(client_id: int | None) -> str:
    return "env" if client_id is None else str(client_id)


class NoMetrics:
    """Without prometheus_client (the ``metrics`` extra) nothing is counted; /metrics says so."""

    available = False

    def record_call(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_event(self, *args: Any, **kwargs: Any) -> None:
        pass

    def exposition(self) -> bytes | None:
        return None


def make_metrics(event_source=None) -> Metrics | NoMetrics:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return NoMetrics()
    return Metrics(event_source)


class Metrics:
    available = True

    def __init__(self, event_source=None) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram

        self.content_type = CONTENT_TYPE_LATEST
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder:  # multiprocess mode writes there from the first count on: it must exist
            os.makedirs(folder, exist_ok=True)
        self.registry = CollectorRegistry(auto_describe=True)
        self._codes: set[str] = set()
        r = self.registry
        self.calls = Counter("bitrix24_calls", "Bitrix24 REST calls by outcome (ok / error)",
                             ["tenant", "method", "outcome"], registry=r)
        self.errors = Counter("bitrix24_errors", "Failed Bitrix24 calls by Bitrix24's error code",
                              ["tenant", "code"], registry=r)
        self.limits = Counter("bitrix24_limits_met",
                              "Limit answers met: 503 QUERY_LIMIT_EXCEEDED and 429 OPERATION_TIME_LIMIT",
                              ["tenant", "status"], registry=r)
        self.retries = Counter("bitrix24_retries", "Retries of Bitrix24 calls by the error that caused them",
                               ["tenant", "error"], registry=r)
        self.call_seconds = Histogram("bitrix24_call_seconds", "Time of one bx_call, waits and retries included",
                                      ["tenant"], registry=r,
                                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.operating = Gauge("bitrix24_operating_seconds",
                               "Operating time the portal reports used for a method in its 10-minute window "
                               "(time.operating; the limit is 480 s)", ["tenant", "method"], registry=r,
                               multiprocess_mode="livemostrecent")
        self.operating_waits = Counter("bitrix24_operating_wait_seconds",
                                       "Seconds calls waited for room in a method's operating budget (bulk work "
                                       "paced across the portal's 10-minute windows)", ["tenant", "method"],
                                       registry=r)
        self.breaker_trips = Counter("bitrix24_breaker_trips",
                                     "Times a webhook's calls were suspended after its credentials were refused "
                                     "again and again (BITRIX_AUTH_FAILURES_TO_SUSPEND)", ["tenant"], registry=r)
        self.breaker_refused = Counter("bitrix24_breaker_refused",
                                       "Calls refused without reaching the portal while suspended", ["tenant"],
                                       registry=r)
        self.breaker_open = Gauge("bitrix24_breaker_open", "1 while the tenant's calls are suspended", ["tenant"],
                                  registry=r, multiprocess_mode="max")
        self.oauth_refreshes = Counter("bitrix24_oauth_refreshes",
                                       "App mode: token refreshes asked of the OAuth server, by outcome (ok, "
                                       "invalid_grant, PAYMENT_REQUIRED, error)", ["result"], registry=r)
        # (tenant, method) -> the children a successful call counts in, looked up once: labels() takes a
        # lock and builds its key on every call. The metric keeps the same children itself.
        self._ok_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._operating_children: dict[tuple[str, str], Any] = {}  # the same for the operating gauge
        self.installation_collector: _InstallationCollector | None = None
        self.event_collector = _EventCollector(event_source) if event_source is not None else None
        if self.event_collector is not None:
            r.register(self.event_collector)

    def code_label(self, code: str | None) -> str:
        """Bitrix24's error code as a label; codes come from the portal, so their number is capped."""
        code = code or "UNKNOWN"
        if not _CODE.match(code):
            return "other"
        if code not in self._codes:
            if len(self._codes) >= MAX_CODES:
                return "other"
            self._codes.add(code)
        return code

    def record_call(self, tenant: str, method: str, seconds: float, error_code: str | None = None) -> None:
        """One bx_call's outcome. Never raises: a metrics problem must not fail a call that was made."""
        try:
            if error_code is None:
                children = self._ok_children.get((tenant, method))
                if children is None:
                    children = (self.calls.labels(tenant, method, "ok"), self.call_seconds.labels(tenant))
                    self._ok_children[(tenant, method)] = children
                children[0].inc()
                children[1].observe(seconds)
                return
            self.calls.labels(tenant, method, "error").inc()
            self.errors.labels(tenant, self.code_label(error_code)).inc()
            self.call_seconds.labels(tenant).observe(seconds)
        except Exception:  # e.g. PROMETHEUS_MULTIPROC_DIR removed under us
            log.warning("could not record metrics for %s", method, exc_info=True)

    # Called from the caller's on_event hook.
    def on_event(self, name: str, info: dict[str, Any]) -> None:
        try:
            self._on_event(name, info)
        except Exception:
            log.warning("could not record metrics for %s", name, exc_info=True)

    def _on_event(self, name: str, info: dict[str, Any]) -> None:
        tenant = info.get("tenant", "env")
        if name == "retry":
            self.retries.labels(tenant, self.code_label(info.get("error"))).inc()
        elif name == "rate_limited":
            self.limits.labels(tenant, "503").inc()
        elif name == "operating_limited":
            self.limits.labels(tenant, "429").inc()
        elif name == "breaker_open":
            self.breaker_trips.labels(tenant).inc()
            self.breaker_open.labels(tenant).set(1)
        elif name == "breaker_closed":
            self.breaker_open.labels(tenant).set(0)
        elif name == "breaker_refused":
            self.breaker_refused.labels(tenant).inc()
        elif name == "oauth_refresh":
            self.oauth_refreshes.labels(self.code_label(info.get("result"))).inc()
        elif name == "operating_wait" and isinstance(info.get("seconds"), (int, float)):
            self.operating_waits.labels(tenant, info["method"].lower()).inc(info["seconds"])
        elif name == "operating" and isinstance(info.get("seconds"), (int, float)):  # after every call
            key = (tenant, info["method"].lower())
            child = self._operating_children.get(key)
            if child is None:
                child = self._operating_children[key] = self.operating.labels(*key)
            child.set(info["seconds"])

    def watch_installations(self, source) -> None:
        """App mode: report installations by status, read from the database at scrape time."""
        self.installation_collector = _InstallationCollector(source)
        self.registry.register(self.installation_collector)

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # every worker's counters, from their files
            if self.event_collector is not None:  # read from the database: the same for every worker
                registry.register(self.event_collector)
            if self.installation_collector is not None:
                registry.register(self.installation_collector)
            return generate_latest(registry)
        return generate_latest(self.registry)


class _EventCollector:
    """Event counts by tenant and status, and the age of the oldest event still waiting."""

    def __init__(self, source) -> None:
        self.source = source  # () -> (counts [(client_id, status, n)], oldest [(client_id, received_at)])

    def describe(self):
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            counts, oldest = self.source()
        except Exception:  # the database is down: keep the rest of the scrape
            log.warning("event metrics skipped: the event table could not be read", exc_info=True)
            return
        events = GaugeMetricFamily("bitrix24_events", "Stored Bitrix24 events by status (received, queued, "
                                   "processing, retry, done, failed)", labels=["tenant", "status"])
        for client_id, status, n in counts:
            events.add_metric([tenant_label(client_id), status], n)
        yield events
        lag = GaugeMetricFamily("bitrix24_event_lag_seconds", "Age of the oldest event not yet handled",
                                labels=["tenant"])
        now = dt.datetime.now(dt.UTC)
        for client_id, received_at in oldest:
            if received_at.tzinfo is None:
                received_at = received_at.replace(tzinfo=dt.UTC)
            lag.add_metric([tenant_label(client_id)], max(0.0, (now - received_at).total_seconds()))
        yield lag


class _InstallationCollector:
    """App mode: installations by status (active, needs_attention, uninstalled) and problem."""

    def __init__(self, source) -> None:
        self.source = source  # () -> [(status, problem, n)]

    def describe(self):
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            counts = self.source()
        except Exception:  # the database is down: keep the rest of the scrape
            log.warning("installation metrics skipped: the installations table could not be read", exc_info=True)
            return
        family = GaugeMetricFamily("bitrix24_app_installations", "App mode: installations by status; "
                                   "needs_attention ones (problem: invalid_grant, PAYMENT_REQUIRED) make no calls",
                                   labels=["status", "problem"])
        for status, problem, n in counts:
            family.add_metric([status, problem or ""], n)
        yield family
