"""Calling a portal within its limits: pacing, the operating budget, and retries by error class.

Every call goes: admit it within the operating budget of each method it runs (``limiter``: its
expected cost must fit, else it waits for the oldest bucket to drop out, so our own traffic never
earns a 429) -> reserve a place in the portal's bucket -> send -> record what the answer, and each
command of a batch, said of the budget -> on failure decide by the *class* of error whether trying
again is safe (docs/DESIGN.md, "Limits, retries, speed"):

- 503 QUERY_LIMIT_EXCEEDED and connection failures before anything was sent: always retried;
- timeouts, dropped connections and 5xx: retried only for methods that are safe to repeat
  (reads; updates and deletes, whose repeat changes nothing); an ``*.add`` that may have reached
  the portal is never repeated blindly (that is how duplicates are made);
- 429 OPERATION_TIME_LIMIT (someone else spent the budget, or a cost was underestimated): waited
  out until the portal's ``operating_reset_at`` when that fits in the caller's bound, else raised
  with ``retry_after``.

Backoff is jittered and exponential (``RetryPolicy.backoff``: "full jitter", a random wait between 0
and ``base * 2**(n-1)`` capped at ``backoff_max``), the total wait is bounded, and the error that
finally surfaces is the last real Bitrix24 error. The loop is ours, in plain code, so that its
decisions do not depend on a retry library's version (tenacity 8 and 9 call wait and stop in
opposite orders, and under 9 the planned waits were never taken).
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import (
    Bitrix24Error,
    LimitExceeded,
    NotFound,
    OperatingLimit,
    OutcomeUnknown,
    PortalMoved,
    RateLimited,
    ServerError,
    TransportError,
)
from .limiter import BucketParams, OperatingBudgets, describe_limit
from .portal import PortalPool
from .wire import batch_methods, batch_section

log = logging.getLogger("flask_bitrix24")

# Work that adapts its pace to the portal (the ranged listing) sets a list here: every retry a call in
# this context needed (503, 5xx, a dropped connection) is noted in it.
TROUBLE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("bitrix24_trouble", default=None)

# The last segment of a method name. "types" and "items" are the directory reads crm.userfield.types,
# crm.status.entity.types and crm.status.entity.items (crm.deal.contact.items.set ends in "set": a write).
_READ_ACTIONS = ("get", "list", "fields", "getlist", "getfields", "search", "find", "findbycomm", "types", "items")
_READ_METHODS = frozenset({"profile", "methods", "scope", "app.info", "user.current", "server.time"})
_IDEMPOTENT_ACTIONS = ("update", "delete", "set")


def is_read(method: str) -> bool:
    name = method.lower()
    action = name.rsplit(".", 1)[-1]
    return name in _READ_METHODS or action in _READ_ACTIONS or action.startswith(("get", "list"))


def is_repeatable(method: str) -> bool:
    """Safe to send twice: reads, and writes whose repeat leaves the same state."""
    return is_read(method) or method.lower().rsplit(".", 1)[-1] in _IDEMPOTENT_ACTIONS


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_wait: float = 30.0  # bound on all waiting (pacing, backoff, operating blocks) for one call

    def window(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt``: "full jitter", uniform over the window, so that
        many callers failing together do not come back together."""
        return random.uniform(0.0, self.window(attempt))


def _maybe_done(exc: BaseException) -> bool:
    """Whether a failed attempt may have reached the portal and done its work."""
    if isinstance(exc, OutcomeUnknown):
        return False  # already said
    if isinstance(exc, TransportError):
        return exc.sent
    return isinstance(exc, ServerError) and not isinstance(exc, PortalMoved)


def _outcome_unknown(exc: Bitrix24Error, method: str) -> OutcomeUnknown:
    what = "may have been created" if method.lower().endswith(".add") else "may have been carried out"
    unknown = OutcomeUnknown(
        f"{method} {what}: {exc.description}. It was not repeated (a repeat could make a duplicate): "
        "look it up (for example by ORIGIN_ID) before trying again",
        http_status=exc.http_status, method=method, sent=True,
    )
    unknown.cause = exc  # what happened (a timeout, a reset, a 5xx), for callers that look further
    return unknown


class PortalCaller:
    def __init__(
        self,
        pool: PortalPool,
        buckets: Any,
        budgets: OperatingBudgets,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.pool = pool
        self.buckets = buckets
        self.budgets = budgets
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self.on_event = on_event or (lambda name, info: None)
        # (portal, method) -> until when (our clock) room() answers "no cost known" without asking the budgets;
        # and when (our clock) an answer here last gave the method a cost
        self._uncosted: dict[tuple[str, str], float] = {}
        self._costed: dict[tuple[str, str], float] = {}

    def call(
        self,
        base: str,
        method: str,
        params: Any = None,
        *,
        bucket: BucketParams,
        repeatable: bool | None = None,
        max_wait: float | None = None,
        tenant: str = "env",
        background: bool = False,
    ) -> dict[str, Any]:
        """Call ``method`` on the portal at ``base``; ``tenant`` labels what ``on_event`` reports.
        ``background`` work (bulk jobs, event handlers) yields the portal's bucket to interactive calls."""
        portal = urlsplit(base).netloc
        repeatable = is_repeatable(method) if repeatable is None else repeatable
        bound = self.policy.max_wait if max_wait is None else max_wait
        started = self.clock()
        attempts = 0

        def waited() -> float:
            return self.clock() - started

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, RateLimited):
                return not getattr(exc, "local", False)
            if isinstance(exc, OperatingLimit):
                return waited() + (exc.retry_after or 0) <= bound
            if isinstance(exc, TransportError):
                return not exc.sent or repeatable
            if isinstance(exc, ServerError) and not isinstance(exc, PortalMoved):
                return repeatable
            return False

        def next_wait(exc: BaseException, attempt_number: int) -> float:
            if isinstance(exc, OperatingLimit):
                return exc.retry_after or 1.0
            return self.policy.backoff(attempt_number)

        ambiguous = False  # an earlier attempt may have reached the portal

        commands = batch_methods(params) if method.lower() == "batch" else {}
        needs = methods_run(method, commands)

        def attempt() -> dict[str, Any]:
            nonlocal attempts, ambiguous
            attempts += 1
            token = uuid.uuid4().hex
            self._admit(portal, method, needs, token, bound - waited(), background, tenant)
            try:
                self._take_place(portal, method, bucket, bound - waited(), background)
                envelope = self.pool.for_base(base).call(base, method, params)
            except BaseException as exc:
                for name in needs:
                    self.budgets.release(portal, name, token)
                if isinstance(exc, RateLimited) and not getattr(exc, "local", False):
                    self.buckets.fill(portal, bucket)
                    self.on_event("rate_limited", {"tenant": tenant, "method": method})
                elif isinstance(exc, OperatingLimit):
                    self.budgets.exhausted(portal, method)
                    exc.retry_after = self.budgets.blocked_for(portal, method)
                    self.on_event("operating_limited", {"tenant": tenant, "method": method})
                elif isinstance(exc, NotFound):
                    # A delete repeated after an attempt that may have reached the portal: that one did it.
                    if ambiguous and method.lower().endswith(".delete"):
                        return {"result": True}
                elif isinstance(exc, (TransportError, ServerError)):
                    ambiguous = ambiguous or not isinstance(exc, TransportError) or exc.sent
                raise
            self._record(portal, method, commands, envelope, needs, token, tenant)
            return envelope

        number = 0
        while True:
            number += 1
            try:
                return attempt()
            except Exception as exc:
                # Stop when the error is not safe to retry, attempts are spent, or the wait about to
                # be taken would pass the caller's bound; the last real error surfaces.
                if not should_retry(exc) or number >= self.policy.attempts:
                    if not repeatable and _maybe_done(exc):
                        raise _outcome_unknown(exc, method) from exc
                    raise
                delay = next_wait(exc, number)
                if waited() + delay > bound:
                    raise
                code = getattr(exc, "code", type(exc).__name__)
                self.on_event("retry", {"tenant": tenant, "method": method, "error": code})
                trouble = TROUBLE.get()
                if trouble is not None:
                    trouble.append(code)
                log.info("bitrix24 %s: retrying in %.2f s after %r (attempt %d)", method, delay, exc, number)
                self.sleep(delay)

    def room(self, base: str, method: str, *, background: bool = True, max_wait: float = 0.0,
             tenant: str = "env", at_least: int = 1) -> int | None:
        """How many calls of ``method`` fit its operating budget on the portal at ``base`` now; when fewer
        than ``at_least`` do, waits (up to ``max_wait``) until they do. None: no cost known, nothing to plan
        by (kept for NO_COST_RECHECK seconds); 0: not within ``max_wait``. Reserves nothing: work that can
        split itself (a bulk write's batches) sends what fits, and the call's own admission still decides."""
        portal = urlsplit(base).netloc
        key = (portal, method.lower())
        if self._uncosted.get(key, 0.0) > self.clock():
            return None
        waited = 0.0
        while True:
            asked = self.clock()
            fits, wait = self.budgets.room(portal, key[1], background=background, at_least=at_least)
            if fits is None:
                # A method that costs nothing known (most do: under 0.1 s a call is not charged) is asked about
                # again after NO_COST_RECHECK, or at once when an answer here gives it a cost (_record): a
                # batch of cheap creates does not make a round trip for a hint every time. Not kept when an
                # answer gave it a cost while we asked (another thread's). A cost learnt in another process
                # is seen within NO_COST_RECHECK; the calls' own admission never waits for that.
                if self._costed.get(key, float("-inf")) < asked:
                    if len(self._uncosted) >= MAX_UNCOSTED:
                        self._uncosted.clear()
                    self._uncosted[key] = self.clock() + NO_COST_RECHECK
                return None
            if fits > 0:
                return fits
            if waited + wait > max_wait:
                return 0
            self.on_event("operating_wait", {"tenant": tenant, "method": method.lower(), "seconds": wait,
                                             **self._budget_terms()})
            self.sleep(wait)
            waited += wait

    def _admit(self, portal: str, method: str, needs: dict[str, int], token: str, budget_left: float,
               background: bool, tenant: str) -> None:
        """Wait until every method the call runs has room in its operating budget for it, then hold
        that room (``token``) until the answer is recorded. Raises OperatingLimit, without asking
        the portal, when that wait would pass the caller's bound."""
        waited = 0.0
        while True:
            taken: list[str] = []
            wait = 0.0
            for name, calls in needs.items():
                wait = self.budgets.admit(portal, name, calls, token, background=background,
                                          holds_for=max(0.0, budget_left - waited))
                if wait > 0:
                    break
                taken.append(name)
            if wait == 0:
                return
            for name in taken:
                self.budgets.release(portal, name, token)
            if waited + wait > budget_left:
                raise OperatingLimit(
                    f"{name} has used its operating time on this portal "
                    f"({describe_limit(self.budgets.limit, self.budgets.window)}): it has room again in {wait:.0f} s",
                    method=method, retry_after=max(1.0, wait),
                )
            self.on_event("operating_wait", {"tenant": tenant, "method": name, "seconds": wait, **self._budget_terms()})
            self.sleep(wait)
            waited += wait

    def _budget_terms(self) -> dict[str, float]:
        """The operating limit and its window (BITRIX_OPERATING_LIMIT, ten BITRIX_OPERATING_BUCKET), for
        whoever tells a person why calls wait."""
        return {"limit": float(self.budgets.limit), "window": float(self.budgets.window)}

    def _record(self, portal: str, method: str, commands: dict[str, str], envelope: dict[str, Any],
                needs: dict[str, int], token: str, tenant: str) -> None:
        """What the answer said of each method's budget; for a batch, each command's ``result_time``
        (the batch's own ``time`` is not a budget: batch itself is never blocked)."""
        if method.lower() != "batch":
            timing = envelope.get("time")
            cost = _counted(timing)
            self.budgets.record(portal, method, timing, cost=cost, token=token, charges=_charges([timing], cost))
            if cost:
                self._cost_learnt((portal, method.lower()))  # once the budgets have it
            if isinstance(timing, dict) and isinstance(timing.get("operating"), (int, float)):
                self.on_event("operating", {"tenant": tenant, "method": method, "seconds": timing["operating"]})
            return
        body = envelope.get("result") if isinstance(envelope.get("result"), dict) else {}
        times, errors = batch_section(body.get("result_time")), batch_section(body.get("result_error"))
        by_method: dict[str, list[dict[str, Any]]] = {}
        refused: set[str] = set()
        for key, name in commands.items():
            if isinstance(times.get(key), dict):
                by_method.setdefault(name, []).append(times[key])
            error = errors.get(key)
            if isinstance(error, dict) and error.get("error") == "OPERATION_TIME_LIMIT":
                refused.add(name)
        for name in needs:
            timings = sorted(by_method.get(name, []), key=_finish)
            last = timings[-1] if timings else None
            cost = _batch_cost(timings)
            self.budgets.record(portal, name, last, cost=cost, token=token, charges=_charges(timings, cost))
            if cost:
                self._cost_learnt((portal, name))  # once the budgets have it
            if last is not None and isinstance(last.get("operating"), (int, float)):
                self.on_event("operating", {"tenant": tenant, "method": name, "seconds": last["operating"]})
        for name in refused:  # after the figures of the commands that ran: the refusal is the later news
            self.budgets.exhausted(portal, name)
            self.on_event("operating_limited", {"tenant": tenant, "method": name})

    def _cost_learnt(self, key: tuple[str, str]) -> None:
        """An answer gave the method a cost: room() asks the budgets again from now on."""
        if len(self._costed) >= MAX_UNCOSTED:
            self._costed.clear()
        self._costed[key] = self.clock()
        self._uncosted.pop(key, None)

    def _take_place(self, portal: str, method: str, bucket: BucketParams, allowed: float, background: bool) -> None:
        """A place in the portal's request bucket (interactive calls book ahead; background work takes
        only free places below its share)."""
        allowed = max(allowed, 0.0)
        if background:
            self._take_background_place(portal, method, bucket, allowed)
            return
        wait = self.buckets.reserve(portal, bucket, allowed)
        if wait > allowed:
            # Our own bucket says the portal would refuse: don't send, and don't queue beyond the bound.
            exc = RateLimited(
                f"the portal's request budget is spent for the next {wait:.1f} s", method=method, retry_after=wait
            )
            exc.local = True
            raise exc
        if wait > 0:
            self.sleep(wait)

    def _take_background_place(self, portal: str, method: str, bucket: BucketParams, allowed: float) -> None:
        """Wait, without booking ahead, until the bucket has room below its background share."""
        while True:
            wait = self.buckets.try_background(portal, bucket)
            if wait == 0:
                return
            if wait > allowed:
                exc = RateLimited(f"the portal's request budget is spent for the next {wait:.1f} s",
                                  method=method, retry_after=wait)
                exc.local = True
                raise exc
            # Wake a little after the place frees up (a place, not a tie with an interactive call).
            wait = min(allowed, wait + 0.01)
            self.sleep(wait)
            allowed -= wait


NO_COST_RECHECK = 1.0  # seconds; see PortalCaller.room
MAX_UNCOSTED = 10_000  # (portal, method) pairs PortalCaller.room keeps before it starts over


def methods_run(method: str, commands: dict[str, str]) -> dict[str, int]:
    """The methods a call runs, with how many times: a batch runs its ``commands`` (key -> method, from
    ``wire.batch_methods``); batch itself is never blocked, so it is not counted."""
    if method.lower() != "batch":
        return {method.lower(): 1}
    counts: dict[str, int] = {}
    for name in commands.values():
        counts[name] = counts.get(name, 0) + 1
    return counts


def _counted(timing: Any) -> float | None:
    """One call's charge, from its own ``processing``: a portal records run times of 0.1 s and more
    (https://apidocs.bitrix24.com/limits.html)."""
    if not isinstance(timing, dict) or not isinstance(timing.get("processing"), (int, float)):
        return None
    processing = float(timing["processing"])
    return processing if processing >= 0.1 else 0.0


def _finish(timing: dict[str, Any]) -> float:
    finish = timing.get("finish")
    return float(finish) if isinstance(finish, (int, float)) else 0.0


def _charges(timings: list[Any], cost: float | None) -> list[tuple[float, float]]:
    """What each call was charged and when (the portal's ``finish``): its own ``processing`` (nothing under
    0.1 s), or where the answer has none, the cost learnt for the method. The budget keeps them by the
    portal's bucket, to know what drops out when."""
    out = []
    for timing in timings:
        if not isinstance(timing, dict) or not isinstance(timing.get("finish"), (int, float)):
            continue
        charged = _counted(timing)  # what the portal charged it: its processing, from 0.1 s up
        charged = cost if charged is None else charged
        if charged:
            out.append((float(timing["finish"]), float(charged)))
    return out


def _batch_cost(timings: list[dict[str, Any]]) -> float | None:
    """What one command cost, from a batch's commands of one method in the order they ran: their own
    ``processing`` (what the portal charged each, nothing under 0.1 s), averaged. Only where the answer
    has none, the steps between the commands' ``operating`` (each is the method's total after it; a step
    down means a bucket dropped out and is not a charge). The steps also count whatever else ran the
    method meanwhile (our other batches in flight, another app), so they are the last resort: four
    batches side by side made each command look four times its cost. None when there is nothing to go on."""
    own = [c for c in (_counted(t) for t in timings) if c is not None]
    if own:
        return sum(own) / len(own)
    steps = []
    for before, after in zip(timings, timings[1:], strict=False):
        a, b = before.get("operating"), after.get("operating")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b >= a:
            steps.append(float(b) - float(a))
    return sum(steps) / len(steps) if steps else None


__all__ = ["PortalCaller", "RetryPolicy", "is_read", "is_repeatable", "Bitrix24Error", "LimitExceeded"]
