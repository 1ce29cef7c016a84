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

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .redis_pool import redis_client


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
        self._redis = redis_client(url)
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


# ---- the operating budget ---------------------------------------------------------------------------
#
# Bitrix24 charges each method's run time to a budget per portal, credential and method: 480 s over a
# sliding window of ten one-minute buckets. The check comes before a call and the call that passes
# the limit still completes; the next one is refused with 429 OPERATION_TIME_LIMIT, for everyone using
# that credential and method, until old buckets expire. Each answer tells the running total
# (``time.operating``) and when the oldest bucket drops out (``time.operating_reset_at``); a batch's
# ``result_time`` tells the same for each of its commands. See "Operating time" in
# https://apidocs.bitrix24.com/limits.html
#
# So the budget is a limit to plan for, not an error to wait out. Before a call we *admit* it: its
# expected cost (what the method's calls have cost lately, times the commands it carries) is reserved,
# and it goes only if the last total we were told, plus what calls in flight have reserved, plus its
# own, stays within the limit. Otherwise it waits until the oldest bucket drops out, at
# ``operating_reset_at``. Past that moment our figure is stale: it can only have gone down, by an
# amount nobody tells. One call, alone in flight, then goes to find out, if it fits the limit even
# were nothing gone; its answer brings the new total and the next reset time. A method the portal
# has refused is looked at again a second past ``operating_reset_at`` (whole seconds), then once a
# bucket. Once a whole window has passed since the last answer, nothing of that total remains.
# What we were charged ourselves is kept by the portal's bucket (a ledger: each answer's, and each batch
# command's, finish and charge), so when one of our own buckets drops out we know by how much without
# asking, and wait for exactly the next one. Background work (bulk jobs, syncs, event handlers) stops
# short of the limit by ``BACKGROUND_RESERVE`` of it, which people's own calls of that method can use.
#
# The state of each (portal, method) is a few numbers, kept in the process or, with Redis, in one
# hash per method that every process and machine reads and updates in one atomic script.

BACKGROUND_RESERVE = 0.025  # of the limit (12 s of 480), kept for interactive calls of the same method
# A reservation whose call never reported back (a killed process) lapses this long after the longest the
# call could still take: its wait for a place in the bucket, then the portal's 60 s, plus a margin.
RESERVATION_TTL = 90.0


@dataclass
class MethodBudget:
    operating: float = 0.0  # the last total the portal gave (seconds in its window)
    reset_at: float | None = None  # unix time the oldest bucket drops out, as last given
    seen_at: float = 0.0  # our unix time when that was given
    finish: float | None = None  # the portal's time.finish of that answer (orders answers that cross)
    shift: float = 0.0  # how much later by our clock that answer came than its finish by the portal's
    cost: float | None = None  # seconds one call of the method is expected to cost
    reserved: dict[str, tuple[float, float]] | None = None  # token -> (seconds, lapses at)
    # What our own calls were charged, by the portal's bucket: index -> [first charge (portal time), seconds]
    ledger: dict[int, list[float]] | None = None


class OperatingBudgets:
    """Each method's operating budget per portal, in this process. See the comment above."""

    name = "local"

    def __init__(self, limit: float = 480.0, clock: Callable[[], float] = time.time, bucket: float = 60.0) -> None:
        self.limit = limit
        self.bucket = bucket  # the portal counts operating time in buckets of a minute
        self.window = bucket * 10
        self._clock = clock
        self._budgets: dict[tuple[str, str], MethodBudget] = {}
        self._lock = threading.Lock()

    def _get(self, portal: str, method: str) -> MethodBudget:
        return self._budgets.setdefault((portal, method.lower()), MethodBudget())

    def admit(self, portal: str, method: str, calls: int, token: str, *, background: bool = False,
              holds_for: float = 0.0) -> float:
        """Reserve the expected cost of ``calls`` calls of ``method`` and return 0, or reserve nothing
        and return how long to wait before asking again. The reservation lapses ``holds_for`` plus
        RESERVATION_TTL seconds on, if the call never reports back."""
        with self._lock:
            b = self._get(portal, method)
            now = self._clock()
            reserved = b.reserved = {k: v for k, v in (b.reserved or {}).items() if v[1] > now}
            drops = [(first + self.window, seconds) for first, seconds in (b.ledger or {}).values()]
            decision = plan_admission(
                b.operating, b.reset_at, b.seen_at, b.cost, sum(v[0] for v in reserved.values()), calls, now,
                limit=self.limit, window=self.window, background=background, finish=b.finish, shift=b.shift,
                drops=drops,
            )
            if decision == 0:
                reserved[token] = (calls * (b.cost or 0.0), now + holds_for + RESERVATION_TTL)
            return decision

    def room(self, portal: str, method: str, *, background: bool = False,
             at_least: int = 1) -> tuple[int | None, float]:
        """How many calls of ``method`` fit now, if ``at_least`` do (``plan_room``); reserves nothing."""
        with self._lock:
            b = self._budgets.get((portal, method.lower()))
            if b is None:
                return None, 0.0
            now = self._clock()
            reserved = sum(v[0] for v in (b.reserved or {}).values() if v[1] > now)
            drops = [(first + self.window, seconds) for first, seconds in (b.ledger or {}).values()]
            return plan_room(b.operating, b.reset_at, b.seen_at, b.cost, reserved, now, limit=self.limit,
                             window=self.window, background=background, finish=b.finish, shift=b.shift,
                             drops=drops, at_least=at_least)

    def release(self, portal: str, method: str, token: str) -> None:
        with self._lock:
            b = self._budgets.get((portal, method.lower()))
            if b is not None and b.reserved:
                b.reserved.pop(token, None)

    def record(self, portal: str, method: str, time_info: object, *, cost: float | None = None,
               token: str | None = None, charges: list[tuple[float, float]] = ()) -> None:
        """What an answer said of ``method``'s budget (its ``time``), what one call of it cost (``cost``,
        when the caller could tell), and what each of its calls was charged, when (``charges``: the
        portal's ``finish`` of each, and seconds); ``token``'s reservation is released."""
        with self._lock:
            b = self._get(portal, method)
            if token is not None and b.reserved:
                b.reserved.pop(token, None)
            now = self._clock()
            ledger = b.ledger = {k: v for k, v in (b.ledger or {}).items() if v[0] + 2 * self.window > now}
            for at, seconds in charges:
                if seconds > 0:
                    entry = ledger.setdefault(math.floor(at / self.bucket), [at, 0.0])
                    entry[0], entry[1] = min(entry[0], at), entry[1] + seconds
            apply_answer(b, time_info, cost, now)

    def exhausted(self, portal: str, method: str, reset_at: float | None = None) -> None:
        """The portal refused ``method`` (a 429, or a batch command's OPERATION_TIME_LIMIT)."""
        with self._lock:
            b = self._get(portal, method)
            now = self._clock()
            b.operating, b.seen_at = max(b.operating, self.limit + 0.001), now
            # The refusal is news as of now: drops before it are in the figure it was refused on.
            b.finish = max(b.finish if b.finish is not None else now - b.shift, now - b.shift)
            if reset_at is not None:
                b.reset_at = reset_at

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
                f"{portal} {method}": {"operating": b.operating, "reset_at": b.reset_at, "cost": b.cost}
                for (portal, method), b in self._budgets.items()
            }

    def ping(self) -> bool:
        return True


def describe_limit(limit: float, window: float) -> str:
    """"480 s per 10 minutes": the operating limit in words, for what people read."""
    per = f"{window / 60:g} minutes" if window >= 60 else f"{window:g} s"
    return f"{limit:g} s per {per}"


def _standing(operating: float, seen_at: float, now: float, window: float, finish: float | None, shift: float,
              drops: list[tuple[float, float]] | tuple = ()) -> tuple[float, float | None, float | None]:
    """The method's total now, as far as we know it: the last figure given, less our own charges whose
    buckets dropped out since (``drops``: when each bucket drops out and its seconds, in portal time);
    with the next of our buckets to drop out (on our clock) and the last that did (portal time)."""
    if now >= seen_at + window + 1:
        operating = 0.0  # a whole window since the last answer: all of that total has dropped out
    # Portal time is read on our clock shifted by how late the last answer reached us (its skew and
    # transit), so a bucket is taken as gone only once it surely is.
    next_drop = last_gone = None
    for drops_at, seconds in drops:
        if finish is not None and finish < drops_at <= now - shift:
            operating -= seconds
            last_gone = drops_at if last_gone is None else max(last_gone, drops_at)
        elif drops_at > now - shift and (next_drop is None or drops_at + shift < next_drop):
            next_drop = drops_at + shift
    return max(0.0, operating), next_drop, last_gone


def plan_admission(operating: float, reset_at: float | None, seen_at: float, cost: float | None, reserved: float,
                   calls: int, now: float, *, limit: float, window: float, background: bool,
                   finish: float | None = None, shift: float = 0.0, drops: list[tuple[float, float]] = ()) -> float:
    """0 when ``calls`` calls may go now, else the seconds to wait before asking again (the rule in
    the comment above; the Redis script below is the same rule, line for line). ``drops`` are our own
    charges by bucket: (when the bucket drops out, seconds), in the portal's time; ``finish`` is the
    portal's time of the last answer and ``shift`` how much later by our clock it came."""
    # Our charges whose buckets dropped out since the last answer no longer count.
    operating, next_drop, last_gone = _standing(operating, seen_at, now, window, finish, shift, drops)
    # The reset the portal announced was one of our own buckets, now taken off: the next to wait for
    # is our next one (operating_reset_at is whole seconds, so within a second is the same bucket).
    consumed = reset_at is not None and last_gone is not None and last_gone + 1 >= reset_at
    if reset_at is not None:
        reset_at += shift  # on our clock, as late as it can be
    need = calls * (cost or 0.0)
    # Background work leaves a share to people (who may also use it to find out what dropped out, below).
    cap = limit * (1 - BACKGROUND_RESERVE) if background else limit
    if operating + reserved + need <= cap or (operating == 0 and reserved == 0):
        return 0.0
    bucket = window / 10
    if reset_at is not None and (now < reset_at or (consumed and next_drop is not None)):
        # Wait for the oldest bucket to drop out, or one of ours (once the announced one was ours and is
        # already taken off: our next).
        wake = next_drop if consumed and next_drop is not None else reset_at
        if next_drop is not None and next_drop < wake:
            wake = next_drop
        return max(0.05, wake - now)
    if reset_at is None and now < seen_at + bucket:
        # Never told when the oldest bucket goes: look again in a bucket (or at our next drop).
        wake = seen_at + bucket if next_drop is None else min(seen_at + bucket, next_drop)
        return max(0.05, wake - now)
    if reserved > 0:
        return 0.25  # a call is out learning how much dropped out: look again shortly
    if operating + need <= limit and (reset_at is None or not reset_at <= seen_at < reset_at + 1):
        # That call: it fits even if nothing dropped out yet. Not when the figure came within the second
        # after the reset it announces: operating_reset_at is whole seconds, so that bucket goes later in
        # that second, and the figure is fresh until then (else call after call would go to find out).
        return 0.0
    # Over the limit as last told (the portal refused a call): look once the reset has passed,
    # then once a bucket ("after that, wait bucket by bucket").
    wake = reset_at + 1 if reset_at is not None and reset_at + 1 > seen_at else seen_at + bucket
    return 0.0 if now >= wake else max(0.05, wake - now)


def plan_room(operating: float, reset_at: float | None, seen_at: float, cost: float | None, reserved: float,
              now: float, *, limit: float, window: float, background: bool, finish: float | None = None,
              shift: float = 0.0, drops: list[tuple[float, float]] = (), at_least: int = 1) -> tuple[int | None, float]:
    """How many calls of the method fit the budget now, when ``at_least`` do, else how long until they may:
    (calls, 0.0), (0, seconds), or (None, 0.0) when no cost is known (nothing to plan by). Work that can
    split itself (a bulk write's batch of 50) sends what fits instead of waiting for room for all of it,
    so no part of a window is left unused for want of a whole batch's room."""
    if not cost:
        return None, 0.0
    current, _, _ = _standing(operating, seen_at, now, window, finish, shift, drops)
    cap = limit * (1 - BACKGROUND_RESERVE) if background else limit
    fits = math.floor((cap - current - reserved) / cost + 1e-9)
    if fits >= at_least:
        return fits, 0.0
    wait = plan_admission(operating, reset_at, seen_at, cost, reserved, at_least, now, limit=limit, window=window,
                          background=background, finish=finish, shift=shift, drops=drops)
    return (at_least, 0.0) if wait == 0 else (0, wait)  # they may go (to learn what dropped out), or wait


def apply_answer(b: MethodBudget, time_info: object, cost: float | None, now: float) -> None:
    if isinstance(cost, (int, float)) and cost >= 0:
        # Up at once, down slowly: an underestimate is what could overrun the limit.
        b.cost = float(cost) if b.cost is None or cost > b.cost else 0.8 * b.cost + 0.2 * float(cost)
    if not isinstance(time_info, dict):
        return
    operating, reset_at = time_info.get("operating"), time_info.get("operating_reset_at")
    finish = time_info.get("finish")
    finish = float(finish) if isinstance(finish, (int, float)) else now
    if not isinstance(operating, (int, float)) or (b.finish is not None and finish < b.finish):
        return  # no figure, or an answer older than the one we have (calls answered out of order)
    b.operating, b.finish, b.seen_at, b.shift = float(operating), finish, now, now - finish
    b.reset_at = float(reset_at) if isinstance(reset_at, (int, float)) else None


# KEYS[1] = the method's hash. ARGV[1] = mode ("admit" | "record" | "release" | "exhausted" | "blocked" | "read").
# admit: ARGV = mode, calls, token, limit, window, background (1/0), reserve fraction, reservation ttl.
# room: as admit, calls = the fewest worth sending; returns {calls that fit now (-1: no cost known), microseconds
#   to wait until that many do}.
# record: ARGV = mode, token, operating or "", reset_at or "", finish or "", cost or "", ttl,
#   charges ("at|seconds;..." in portal time), bucket length, how long to keep a charge.
# Times are Redis' own clock (TIME), so machines need not agree. Returns microseconds (admit, blocked).
_BUDGET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key = KEYS[1]
local mode = ARGV[1]
local function num(name, default)
  local v = redis.call('HGET', key, name)
  if v == false then return default end
  return tonumber(v)
end
local function reserved_sum(drop)
  local total = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local name = all[i]
    if string.sub(name, 1, 2) == 'r:' then
      local amount, lapses = string.match(all[i + 1], '([^|]+)|([^|]+)')
      if tonumber(lapses) <= now then
        redis.call('HDEL', key, name)
      elseif name ~= drop then
        total = total + tonumber(amount)
      end
    end
  end
  return total
end
if mode == 'admit' or mode == 'room' then
  local calls = tonumber(ARGV[2])
  local limit = tonumber(ARGV[4])
  local window = tonumber(ARGV[5])
  local operating = num('operating', 0)
  local reset_at = num('reset_at', nil)
  local seen_at = num('seen_at', 0)
  local finish = num('finish', nil)
  local cost = num('cost', 0)
  local reserved = reserved_sum('')
  if now >= seen_at + window + 1 then operating = 0 end
  local shift = num('shift', 0)
  local next_drop = nil
  local last_gone = nil
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'b:' then
      local first, seconds = string.match(all[i + 1], '([^|]+)|([^|]+)')
      local drops_at = tonumber(first) + window
      if finish ~= nil and finish < drops_at and drops_at <= now - shift then
        operating = operating - tonumber(seconds)
        if last_gone == nil or drops_at > last_gone then last_gone = drops_at end
      elseif drops_at > now - shift and (next_drop == nil or drops_at + shift < next_drop) then
        next_drop = drops_at + shift
      end
    end
  end
  operating = math.max(0, operating)
  local consumed = reset_at ~= nil and last_gone ~= nil and last_gone + 1 >= reset_at
  if reset_at ~= nil then reset_at = reset_at + shift end
  local need = calls * cost
  local cap = limit
  if ARGV[6] == '1' then cap = limit * (1 - tonumber(ARGV[7])) end
  if mode == 'room' then
    -- how many calls fit now (plan_room); when none does, the wait for one, below; nothing is reserved
    if cost <= 0 then return {-1, 0} end
    local fits = math.floor((cap - operating - reserved) / cost + 1e-9)
    if fits >= calls then return {fits, 0} end
  end
  local go = (operating + reserved + need <= cap) or (operating == 0 and reserved == 0)
  local bucket = window / 10
  local wait = 0
  if not go then
    if reset_at ~= nil and (now < reset_at or (consumed and next_drop ~= nil)) then
      local wake = reset_at
      if consumed and next_drop ~= nil then wake = next_drop end
      if next_drop ~= nil and next_drop < wake then wake = next_drop end
      wait = math.max(0.05, wake - now)
    elseif reset_at == nil and now < seen_at + bucket then
      local wake = seen_at + bucket
      if next_drop ~= nil and next_drop < wake then wake = next_drop end
      wait = math.max(0.05, wake - now)
    elseif reserved > 0 then
      wait = 0.25
    elseif operating + need > limit or (reset_at ~= nil and seen_at >= reset_at and seen_at < reset_at + 1) then
      local wake = seen_at + bucket
      if reset_at ~= nil and reset_at + 1 > seen_at then wake = reset_at + 1 end
      if now < wake then wait = math.max(0.05, wake - now) end
    end
  end
  if mode == 'room' then
    if wait > 0 then return {0, math.floor(wait * 1000000)} end
    return {calls, 0}
  end
  if wait > 0 then return math.floor(wait * 1000000) end
  redis.call('HSET', key, 'r:' .. ARGV[3], tostring(need) .. '|' .. tostring(now + tonumber(ARGV[8])))
  redis.call('EXPIRE', key, math.ceil(math.max(window * 2 + 120, tonumber(ARGV[8]) + 60)))
  return 0
elseif mode == 'release' then
  redis.call('HDEL', key, 'r:' .. ARGV[2])
  return 0
elseif mode == 'record' then
  if ARGV[2] ~= '' then redis.call('HDEL', key, 'r:' .. ARGV[2]) end
  local bucket = tonumber(ARGV[9])
  local keep = tonumber(ARGV[10])
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'b:' then
      local first = tonumber(string.match(all[i + 1], '([^|]+)|'))
      if first + keep <= now then redis.call('HDEL', key, all[i]) end
    end
  end
  for at, seconds in string.gmatch(ARGV[8], '([^|;]+)|([^|;]+)') do
    local field = 'b:' .. tostring(math.floor(tonumber(at) / bucket))
    local entry = redis.call('HGET', key, field)
    local first, total = tonumber(at), tonumber(seconds)
    if entry ~= false then
      local was_first, was_total = string.match(entry, '([^|]+)|([^|]+)')
      first = math.min(first, tonumber(was_first))
      total = total + tonumber(was_total)
    end
    redis.call('HSET', key, field, tostring(first) .. '|' .. tostring(total))
  end
  local cost = tonumber(ARGV[6])
  if cost ~= nil and cost >= 0 then
    local old = num('cost', nil)
    if old == nil or cost > old then old = cost else old = 0.8 * old + 0.2 * cost end
    redis.call('HSET', key, 'cost', tostring(old))
  end
  local operating = tonumber(ARGV[3])
  local finish = tonumber(ARGV[5]) or now
  if operating ~= nil and finish >= num('finish', 0) then
    redis.call('HSET', key, 'operating', tostring(operating), 'finish', tostring(finish), 'seen_at', tostring(now),
               'shift', tostring(now - finish))
    local reset_at = tonumber(ARGV[4])
    if reset_at ~= nil then
      redis.call('HSET', key, 'reset_at', tostring(reset_at))
    else
      redis.call('HDEL', key, 'reset_at')
    end
  end
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[7])))
  return 0
elseif mode == 'exhausted' then
  local operating = math.max(num('operating', 0), tonumber(ARGV[2]))
  local finish = now - num('shift', 0)
  local was = num('finish', nil)
  if was ~= nil and was > finish then finish = was end
  redis.call('HSET', key, 'operating', tostring(operating), 'seen_at', tostring(now), 'finish', tostring(finish))
  if ARGV[3] ~= '' then redis.call('HSET', key, 'reset_at', ARGV[3]) end
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[4])))
  return 0
elseif mode == 'blocked' then
  local reset_at = num('reset_at', nil)
  if reset_at == nil or reset_at + 1 <= now then return math.floor(tonumber(ARGV[2]) * 1000000) end
  return math.floor(math.max(1, reset_at + 1 - now) * 1000000)
end
return cjson.encode({num('operating', 0), num('reset_at', -1), num('cost', -1), now})
"""


class RedisOperatingBudgets:
    """The same budgets in Redis, one hash per portal and method, shared by every process using ``url``."""

    name = "redis"

    def __init__(self, url: str, limit: float = 480.0, bucket: float = 60.0,
                 prefix: str = "bitrix24:operating:") -> None:
        self.limit = limit
        self.bucket = bucket
        self.window = bucket * 10
        self._redis = redis_client(url)
        self._script = self._redis.register_script(_BUDGET_LUA)
        self._prefix = prefix

    def _run(self, portal: str, method: str, *args: Any) -> Any:
        return self._script(keys=[f"{self._prefix}{portal}:{method.lower()}"], args=[str(a) for a in args])

    def admit(self, portal: str, method: str, calls: int, token: str, *, background: bool = False,
              holds_for: float = 0.0) -> float:
        waited = self._run(portal, method, "admit", calls, token, self.limit, self.window,
                           1 if background else 0, BACKGROUND_RESERVE, holds_for + RESERVATION_TTL)
        return int(waited) / 1_000_000

    def room(self, portal: str, method: str, *, background: bool = False,
             at_least: int = 1) -> tuple[int | None, float]:
        fits, waited = self._run(portal, method, "room", at_least, "", self.limit, self.window,
                                 1 if background else 0, BACKGROUND_RESERVE, RESERVATION_TTL)
        return (None if int(fits) < 0 else int(fits)), int(waited) / 1_000_000

    def release(self, portal: str, method: str, token: str) -> None:
        self._run(portal, method, "release", token)

    def record(self, portal: str, method: str, time_info: object, *, cost: float | None = None,
               token: str | None = None, charges: list[tuple[float, float]] = ()) -> None:
        info = time_info if isinstance(time_info, dict) else {}

        def given(name: str) -> str:
            value = info.get(name)
            return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""

        spent = ";".join(f"{float(at)!r}|{float(seconds)!r}" for at, seconds in charges if seconds > 0)
        self._run(portal, method, "record", token or "", given("operating"), given("operating_reset_at"),
                  given("finish"), repr(float(cost)) if isinstance(cost, (int, float)) else "", self.window * 2 + 120,
                  spent, self.bucket, 2 * self.window)

    def exhausted(self, portal: str, method: str, reset_at: float | None = None) -> None:
        self._run(portal, method, "exhausted", self.limit + 0.001, "" if reset_at is None else reset_at,
                  self.window * 2 + 120)

    def blocked_for(self, portal: str, method: str) -> float:
        return int(self._run(portal, method, "blocked", self.bucket)) / 1_000_000

    def read(self, portal: str, method: str) -> dict[str, float | None]:
        import json

        operating, reset_at, cost, _ = json.loads(self._run(portal, method, "read"))
        return {"operating": operating, "reset_at": None if reset_at < 0 else reset_at,
                "cost": None if cost < 0 else cost}

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        return {}  # shared in Redis; read one method with read()

    def ping(self) -> bool:
        return bool(self._redis.ping())
