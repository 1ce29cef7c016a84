"""Pacing calls to a portal with a leaky bucket shaped like Bitrix24's own (https://apidocs.bitrix24.com/limits.html).

Bitrix24 adds 1 to a per-portal counter for each request, drains it at ``rate`` per second and
refuses with 503 once it would pass ``burst``. We keep the same bucket on our side and *reserve* a
place before each request: the caller sleeps for the returned delay, so requests leave no faster
than the portal drains them. We drain a little slower than the portal (``safety``) so network
jitter never pushes the portal's counter over: our own traffic should never provoke a 503.

pyrate-limiter was considered: its limits are sliding windows (N requests per interval), which
cannot express "a burst of 50, then one every 0.5 s" exactly, so the bucket is written here; the
shared version is one atomic Lua script in Redis, using Redis' clock so machines need not agree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketParams:
    burst: float = 50.0
    rate: float = 2.0  # drained per second
    safety: float = 0.99  # fraction of the portal's drain rate we allow ourselves

    @property
    def pace(self) -> float:
        return self.rate * self.safety

    @property
    def capacity(self) -> float:
        # Leave a place or two free: requests that leave our process a pace apart can still
        # arrive closer together (scheduling, network), and the portal counts arrivals.
        return self.burst - max(1.0, round(self.burst * 0.02))

    @property
    def background_capacity(self) -> float:
        """How full background work (bulk jobs, event handlers) may make the bucket: a fifth of it
        (10 of 50, 50 of 250) stays for interactive calls, which therefore never queue behind it."""
        return max(1.0, self.capacity - max(1.0, round(self.burst * 0.2)))


class LocalBuckets:
    """In-process buckets, one per portal key. Thread-safe."""

    name = "local"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._lock = threading.Lock()

    def ping(self) -> bool:
        return True

    def portals(self) -> int:
        """How many portals this process has paced calls for."""
        return len(self._state)

    def reserve(self, key: str, params: BucketParams, max_wait: float = float("inf")) -> float:
        """Take one place; return how long to wait before sending (0 when there is room). When the
        wait would pass ``max_wait`` nothing is taken and the wait is returned for the caller to refuse."""
        with self._lock:
            now = self._clock()
            level, at = self._state.get(key, (0.0, now))
            level = max(0.0, level - (now - at) * params.pace)
            wait = max(0.0, (level + 1 - params.capacity) / params.pace)
            self._state[key] = (level + 1 if wait <= max_wait else level, now)
            return wait

    def try_background(self, key: str, params: BucketParams) -> float:
        """Background work: take a place only if the bucket is below ``background_capacity`` (0.0
        returned); else take nothing and return how long until it may be (the caller sleeps and
        tries again). Booking no future place is what keeps interactive calls ahead: they book the
        places as they free up, and background work finds the bucket fuller when it looks again."""
        with self._lock:
            now = self._clock()
            level, at = self._state.get(key, (0.0, now))
            level = max(0.0, level - (now - at) * params.pace)
            wait = max(0.0, (level + 1 - params.background_capacity) / params.pace)
            self._state[key] = (level + 1 if wait == 0 else level, now)
            return wait

    def fill(self, key: str, params: BucketParams) -> None:
        """The portal said 503: someone else shares the bucket. Assume it is full."""
        with self._lock:
            now = self._clock()
            level, at = self._state.get(key, (0.0, now))
            level = max(0.0, level - (now - at) * params.pace)
            self._state[key] = (max(level, params.capacity), now)

    def level(self, key: str, params: BucketParams) -> float:
        with self._lock:
            now = self._clock()
            level, at = self._state.get(key, (0.0, now))
            return max(0.0, level - (now - at) * params.pace)


# KEYS[1] = bucket key; ARGV = capacity, pace, mode ("reserve" | "try" | "fill" | "level"), max wait
# (reserve). "try" takes a place only when there is one now (background work, with its own capacity).
# Returns the wait in microseconds (reserve) or the level * 1e6 (level), as an integer.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst = tonumber(ARGV[1])
local pace = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
level = math.max(0, level - (now - at) * pace)
local result = 0
if ARGV[3] == 'reserve' then
  result = math.max(0, (level + 1 - burst) / pace)
  if result <= tonumber(ARGV[4]) then
    level = level + 1
  end
elseif ARGV[3] == 'try' then
  result = math.max(0, (level + 1 - burst) / pace)
  if result == 0 then
    level = level + 1
  else
    -- taken nothing: a wait, however short, must not read as 0 (taken) once rounded to whole us
    result = math.max(result, 0.000001)
  end
elseif ARGV[3] == 'fill' then
  level = math.max(level, burst)
else
  return math.floor(level * 1000000)
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((level + 1) / pace) + 60)
return math.floor(result * 1000000)
"""


class RedisBuckets:
    """The same buckets in Redis, shared by every process and machine using ``url``."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "bitrix24:bucket:") -> None:
        try:
            import redis
        except ImportError:
            raise RuntimeError(
                "BITRIX_REDIS_URL is set but Redis support is not installed: pip install 'flask-bitrix24[redis]'"
            ) from None

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        self._script = self._redis.register_script(_LUA)
        self._prefix = prefix

    def _run(self, key: str, params: BucketParams, mode: str, max_wait: float = 0.0) -> int:
        args = [params.capacity, params.pace, mode, min(max_wait, 1e9)]
        return int(self._script(keys=[self._prefix + key], args=args))

    def reserve(self, key: str, params: BucketParams, max_wait: float = float("inf")) -> float:
        return self._run(key, params, "reserve", max_wait) / 1_000_000

    def try_background(self, key: str, params: BucketParams) -> float:
        args = [params.background_capacity, params.pace, "try", 0]
        return int(self._script(keys=[self._prefix + key], args=args)) / 1_000_000

    def fill(self, key: str, params: BucketParams) -> None:
        self._run(key, params, "fill")

    def level(self, key: str, params: BucketParams) -> float:
        return self._run(key, params, "level") / 1_000_000

    def ping(self) -> bool:
        return bool(self._redis.ping())

    def portals(self) -> int | None:
        return None  # shared in Redis; not counted here


@dataclass
class MethodBudget:
    operating: float = 0.0
    reset_at: float | None = None  # unix time the oldest minute bucket expires
    seen_at: float = 0.0


class OperatingBudgets:
    """What the portal said about each method's operating time (``time.operating``,
    ``time.operating_reset_at``), to slow down near the limit and to know how long a block lasts."""

    def __init__(self, limit: float = 480.0, clock: Callable[[], float] = time.time, bucket: float = 60.0) -> None:
        self.limit = limit
        self.bucket = bucket  # the portal counts operating time in buckets of a minute
        self._clock = clock
        self._budgets: dict[tuple[str, str], MethodBudget] = {}
        self._lock = threading.Lock()

    def record(self, portal: str, method: str, time_info: object) -> None:
        if not isinstance(time_info, dict):
            return
        operating = time_info.get("operating")
        reset_at = time_info.get("operating_reset_at")
        with self._lock:
            budget = self._budgets.setdefault((portal, method.lower()), MethodBudget())
            if isinstance(operating, (int, float)):
                budget.operating = float(operating)
            if isinstance(reset_at, (int, float)):
                budget.reset_at = float(reset_at)
            budget.seen_at = self._clock()

    def delay(self, portal: str, method: str) -> float:
        """Past 80% of the limit, slow down in proportion to the time left (as the JS SDK does)."""
        with self._lock:
            budget = self._budgets.get((portal, method.lower()))
            if budget is None or budget.operating < 0.8 * self.limit or budget.reset_at is None:
                return 0.0
            return min(7.0, max(0.0, (budget.reset_at - self._clock()) * 0.01))

    def blocked_for(self, portal: str, method: str) -> float:
        """After OPERATION_TIME_LIMIT: seconds until the oldest bucket expires, as the portal last
        said; once that moment has passed (or was never given), one bucket. See "How to Respond to
        Limit Errors" in https://apidocs.bitrix24.com/limits.html"""
        with self._lock:
            budget = self._budgets.get((portal, method.lower()))
            now = self._clock()
            # operating_reset_at is whole seconds: wake a second after it, not just before.
            if budget is None or budget.reset_at is None or budget.reset_at + 1 <= now:
                return self.bucket
            return max(1.0, budget.reset_at + 1 - now)

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        with self._lock:
            return {
                f"{portal} {method}": {"operating": b.operating, "reset_at": b.reset_at}
                for (portal, method), b in self._budgets.items()
            }
