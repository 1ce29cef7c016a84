"""Stop using credentials the portal keeps refusing: a circuit breaker per (tenant, webhook).

A webhook that was deleted, or a secret mistyped in a saved config, fails every call with
``INVALID_CREDENTIALS`` (or another code that says the credentials themselves are bad; see
https://apidocs.bitrix24.com/error-codes.html). Each such call still takes a place in the portal's
request bucket, which other tenants on the same portal share with it. After ``threshold`` refusals in
a row the breaker opens: calls fail at once, without reaching the portal, until ``cooldown`` seconds
have passed; then one call is let through (half open), and its outcome closes the breaker or opens
it for another cooldown. Saving or deleting the client's config closes it at once.

Per process: with several gunicorn workers each learns on its own (``threshold`` calls each).
Codes about one method, not the credentials (``insufficient_scope``: the webhook lacks a scope;
``ACCESS_DENIED``: the plan or the user's rights), never trip it: other methods still work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import Bitrix24Error, PortalAuthFailed

# The credentials, not the method, are refused.
TRIPPING_CODES = frozenset({
    "NO_AUTH_FOUND", "INVALID_CREDENTIALS", "INVALID_TOKEN", "WRONG_AUTH_TYPE", "APPLICATION_NOT_FOUND",
    "AUTHORIZATION_ERROR", "PORTAL_DELETED", "INVALID_REQUEST",
})


def trips(exc: Bitrix24Error) -> bool:
    return isinstance(exc, PortalAuthFailed) and (exc.code or "").upper() in TRIPPING_CODES


class Suspended(PortalAuthFailed):
    """The breaker is open: the call was not sent."""


@dataclass
class _State:
    failures: int = 0
    code: str | None = None
    description: str | None = None
    opened_at: float | None = None
    probing: bool = False
    probe_started: float = 0.0


class AuthBreaker:
    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.threshold, self.cooldown, self.clock = max(1, threshold), max(0.0, cooldown), clock
        self.on_change = on_change or (lambda name, info: None)  # metrics: breaker_open / breaker_closed
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], _State] = {}

    def before_call(self, tenant: str, base: str) -> None:
        """Raise ``Suspended`` while the breaker for (tenant, base) is open; let one probe through
        once the cooldown is over."""
        with self._lock:
            state = self._states.get((tenant, base))
            if state is None or state.opened_at is None:
                return
            now = self.clock()
            waited = now - state.opened_at
            # One probe at a time; a probe that never reported back (its thread died) is replaced
            # after another cooldown.
            if waited >= self.cooldown and (not state.probing or now - state.probe_started >= self.cooldown):
                state.probing, state.probe_started = True, now  # the others wait for its outcome
                return
            left = max(1, round(self.cooldown - waited)) if waited < self.cooldown else None
        when = f"one call will try again in about {left} s" if left else "a call is trying them now"
        self.on_change("breaker_refused", {"tenant": tenant})
        raise Suspended(
            f"the portal refused these credentials {state.failures} times in a row ({state.code}: "
            f"{state.description}); calls are suspended without reaching the portal: save the client's "
            f"config again with a working webhook, or {when}",
            code=state.code, retry_after=left or 1,
        )

    def record(self, tenant: str, base: str, exc: Bitrix24Error | None) -> None:
        """The outcome of a call that was sent: ``None`` for success."""
        key = (tenant, base)
        with self._lock:
            if exc is None or not trips(exc):
                was_open = any(k[0] == tenant and s.opened_at is not None for k, s in self._states.items())
                if exc is None:
                    # The tenant's calls work with this base: what other bases of its taught us (a
                    # config since replaced, maybe saved through another process) is moot.
                    for stale in [k for k in self._states if k[0] == tenant and k[1] != base]:
                        del self._states[stale]
                state = self._states.get(key)
                if state is not None and (exc is None or state.probing):
                    # Success, or a probe that met something else (a limit, a timeout): not the
                    # credentials' fault, so they are given the benefit of the doubt.
                    del self._states[key]
                if was_open and not any(k[0] == tenant and s.opened_at is not None for k, s in self._states.items()):
                    self.on_change("breaker_closed", {"tenant": tenant})
                return
            state = self._states.setdefault(key, _State())
            state.failures += 1
            state.code, state.description = exc.code, (exc.description or "")[:200]
            if state.failures < self.threshold or not (state.opened_at is None or state.probing):
                return
            first = state.opened_at is None
            state.opened_at, state.probing = self.clock(), False
        if first:
            self.on_change("breaker_open", {"tenant": tenant})

    def reset(self, tenant: str) -> None:
        """The tenant's config changed: whatever was learnt about its old credentials is moot."""
        with self._lock:
            was_open = any(k[0] == tenant and s.opened_at is not None for k, s in self._states.items())
            for key in [k for k in self._states if k[0] == tenant]:
                del self._states[key]
        if was_open:
            self.on_change("breaker_closed", {"tenant": tenant})

    def view(self, tenant: str, base: str | None) -> dict[str, Any]:
        """For the debug view: closed, or open/half-open with the refusals that opened it."""
        with self._lock:
            state = self._states.get((tenant, base or ""))
            if state is None:
                return {"state": "closed", "failures": 0}
            if state.opened_at is None:
                return {"state": "closed", "failures": state.failures, "last_error": state.code}
            left = max(0.0, self.cooldown - (self.clock() - state.opened_at))
            return {"state": "half-open" if left == 0 else "open", "failures": state.failures,
                    "last_error": state.code, "retry_in_seconds": round(left, 1)}
