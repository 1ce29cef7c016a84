"""The two cloud limits: a leaky bucket on requests per portal and client address, and a per-method
operating-time budget per portal (https://apidocs.bitrix24.com/limits.html)."""

from __future__ import annotations

import math


class LeakyBucket:
    """Each accepted request adds 1; the level drains at ``rate`` per second; a request that would
    lift the level above ``burst`` is refused and adds nothing."""

    def __init__(self, rate: float, burst: float, clock):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.level = 0.0
        self._last = None

    def _drain(self, now: float) -> None:
        if self._last is not None:
            self.level = max(0.0, self.level - (now - self._last) * self.rate)
        self._last = now

    def try_acquire(self) -> bool:
        self._drain(self.clock())
        if self.level + 1 > self.burst + 1e-9:
            return False
        self.level += 1
        return True


class AddressBuckets:
    """One :class:`LeakyBucket` per client address, all with the same ``rate`` and ``burst``.

    The docs track request intensity "separately for each Bitrix24 account" and say Bitrix24
    "only considers the IP address from which the REST request is made": several applications on one
    server calling the same portal share its limit (https://apidocs.bitrix24.com/limits.html). So a
    portal keeps a bucket per address (the WSGI ``REMOTE_ADDR``; the port is not part of it): two
    processes on one host share one, two hosts have one each. ``X-Forwarded-For`` is not read, the
    emulator being reached directly. Buckets that have drained empty are dropped once there are many.
    """

    PRUNE_AT = 1024

    def __init__(self, rate: float, burst: float, clock):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self._buckets: dict[object, LeakyBucket] = {}

    def bucket(self, address=None) -> LeakyBucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.PRUNE_AT:
                self._prune()
            bucket = self._buckets[address] = LeakyBucket(self.rate, self.burst, self.clock)
        return bucket

    def try_acquire(self, address=None) -> bool:
        return self.bucket(address).try_acquire()

    def level(self, address=None) -> float:
        """The address's counter as of now (0 for an address not seen)."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        bucket._drain(self.clock())
        return bucket.level

    def addresses(self) -> list:
        return list(self._buckets)

    def _prune(self) -> None:
        now = self.clock()
        for address, bucket in list(self._buckets.items()):
            bucket._drain(now)
            if bucket.level <= 0:
                del self._buckets[address]


class OperatingBudget:
    """Seconds of method run time per method over a sliding window of ten buckets.

    A call is refused when the method's total is already over the limit; the call that pushes it
    over still completes (the portal's source, modules/rest/lib/engine/access/loadlimiter.php, checks before
    the call and records after it).
    """

    BUCKETS = 10
    MINIMAL_FIX_TIME = 0.1  # real run times below this are not recorded

    def __init__(self, limit: float, window: float, clock):
        self.limit = limit
        self.window = window
        self.bucket_len = window / self.BUCKETS
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        # method -> {bucket index: [first record time, seconds, last record time, [(time, seconds), ...]]}
        self._usage: dict[str, dict[int, list]] = {}

    def _live(self, method: str) -> dict[int, list]:
        # A bucket (a minute's calls) drops out a window after its first recorded call, which is the
        # moment operating_reset_at announces (https://apidocs.bitrix24.com/limits.html), not at the
        # boundary of a later minute; _as_of leaves out what had dropped out by the moment asked about.
        # Buckets are kept here a window longer, by the real clock: figures are worked out as of a moment
        # already past (a call's finish, filled in once its modelled time is slept: Emulator._settle_figures),
        # and a bucket still live at that moment counts in them though it may have dropped out since.
        buckets = self._usage.get(method, {})
        for index in [i for i, entry in buckets.items() if entry[0] + 2 * self.window <= self.clock()]:
            del buckets[index]
        return buckets

    def _as_of(self, method: str, at: float | None) -> list[tuple[float, float]]:
        """(first record time, seconds) of each bucket as it stood at ``at`` (default now): a call's
        figures count what was recorded by its own moment. A portal records a call when it ends, so a
        request still running elsewhere is not in them yet, even where this emulator worked it out first
        (it answers after the modelled time, see Emulator._take) and stamped it with its future end."""
        at = self.clock() if at is None else at
        if not self._usage.get(method):
            return []  # nothing recorded: _live would find no bucket to drop (nor read the clock)
        out = []
        for first, total, last, charges in self._live(method).values():
            if first + self.window <= at or first > at:
                continue
            if last <= at:
                out.append((first, total))
            else:
                out.append((first, sum(seconds for when, seconds in charges if when <= at)))
        return out

    def used(self, method: str, at: float | None = None) -> float:
        return sum(seconds for _, seconds in self._as_of(method, at))

    def blocked(self, method: str, at: float | None = None) -> bool:
        # Strictly over: the call that reaches the limit exactly is not yet "over" it.
        return self.used(method, at) > self.limit

    def record(self, method: str, seconds: float, at: float | None = None) -> None:
        """Charge ``seconds`` as of ``at`` (when the call ended; default now): its minute's bucket."""
        if seconds <= 0:
            return
        now = self.clock() if at is None else at
        buckets = self._live(method)
        self._usage[method] = buckets
        entry = buckets.setdefault(math.floor(now / self.bucket_len), [now, 0.0, now, []])
        entry[0], entry[1], entry[2] = min(entry[0], now), entry[1] + seconds, max(entry[2], now)
        entry[3].append((now, seconds))

    def charge_for(self, cost_per_call: float, processing: float) -> float:
        """A call's charge: its run time (what it really took, plus the cost per call set on the emulator,
        which is run time too), or nothing under MINIMAL_FIX_TIME, as a portal records it."""
        total = cost_per_call + (processing if processing >= self.MINIMAL_FIX_TIME else 0.0)
        return total if total >= self.MINIMAL_FIX_TIME else 0.0

    def time_keys(self, method: str, at: float | None = None) -> dict:
        """``operating_reset_at`` (only once something is recorded) and ``operating``, as of ``at``."""
        buckets = self._as_of(method, at)
        keys = {}
        if buckets:
            keys["operating_reset_at"] = int(min(first for first, _ in buckets) + self.window)
        keys["operating"] = sum(seconds for _, seconds in buckets)
        return keys
