"""A client's own request bucket: a plan preset (``PLANS``) or its own burst and drain, checked."""

from __future__ import annotations

from typing import Any

from .webhook_rules import InvalidConfig

# Bitrix24's request buckets per plan (https://apidocs.bitrix24.com/limits.html).
PLANS = {"standard": {"burst": 50, "drain": 2.0}, "enterprise": {"burst": 250, "drain": 5.0}}


def validate_rate_limit(plan: Any, rate_limit: Any) -> dict[str, float] | None:
    if plan is not None and rate_limit is not None:
        raise InvalidConfig("plan", "give plan (a preset) or rate_limit (your own numbers), not both")
    if plan is not None:
        if not isinstance(plan, str) or plan not in PLANS:
            raise InvalidConfig("plan", f"plan must be one of {', '.join(PLANS)}")
        return dict(PLANS[plan])
    if rate_limit is None:
        return None
    if not isinstance(rate_limit, dict) or set(rate_limit) != {"burst", "drain"}:
        raise InvalidConfig("rate_limit", 'rate_limit must be {"burst": 50, "drain": 2} (Enterprise: 250 and 5)')
    burst, drain = rate_limit["burst"], rate_limit["drain"]
    if isinstance(burst, float) and burst.is_integer():  # JSON has one number type: 250 may arrive as 250.0
        burst = int(burst)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10_000:
        raise InvalidConfig("rate_limit.burst", "rate_limit.burst must be an integer from 1 to 10000")
    if isinstance(drain, bool) or not isinstance(drain, (int, float)) or not 0.05 <= drain <= 1000:
        raise InvalidConfig("rate_limit.drain", "rate_limit.drain must be a number of requests per second (0.05-1000)")
    return {"burst": burst, "drain": float(drain)}
