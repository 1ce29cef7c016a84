"""Per-client portal configuration: lookup, the cached call target, verified save, event routing.

A client's webhook base comes from its ``ClientCRMAuth`` row first, then from
``BITRIX_WEBHOOK_BASE``. Whatever its source, a webhook base is validated before we send anything
to it (``webhook_rules``); a client's bucket settings are checked by ``rate_rules``. Both modules'
names are importable from here too.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app

from ..runtime import runtime
from ..store import ClientConfig, ConfigValues, StoreNotReady, portal_domain
from .errors import Bitrix24Error, ConfigMissing, PortalAuthFailed
from .rate_rules import PLANS, validate_rate_limit
from .webhook_rules import (
    DEFAULT_ALLOWED_HOSTS,
    InvalidConfig,
    parse_allowed_hosts,
    validate_outbound_token,
    validate_webhook_base,
)


def stored_config(client_id: int) -> ClientConfig | None:
    """The client's saved config, from the app's store."""
    return runtime().store.get(client_id)


def environment_config() -> ClientConfig:
    cfg = current_app.config
    base = cfg.get("BITRIX_WEBHOOK_BASE") or None
    return ClientConfig(
        client_id=None,
        webhook_base=base,
        outbound_token=cfg.get("BITRIX_OUTBOUND_TOKEN") or None,
        source="environment" if base else "none",
        portal_domain=portal_domain(base) if base else None,
    )


def effective_config(client_id: int | None) -> ClientConfig:
    """The config a call for ``client_id`` would use: the client's own, else (unless
    ``BITRIX_ENV_FALLBACK`` is off) the environment's ``BITRIX_WEBHOOK_BASE``."""
    if client_id is not None:
        stored = stored_config(client_id)
        if stored is not None:
            return stored
        if not runtime().env_fallback:  # multi-tenant: a client without a config has none
            return ClientConfig(client_id=client_id, webhook_base=None, outbound_token=None, source="none")
    env = environment_config()
    env.client_id = client_id
    return env


MAX_CACHED_TARGETS = 10_000  # client ids kept by portal_target before it starts over


def portal_target(client_id: int | None) -> tuple[str, dict[str, float] | None, str]:
    """The validated webhook base, the client's own bucket settings (None: the app's defaults) and
    where they come from ("database" or "environment"); or ``ConfigMissing`` saying what to set.

    Every call needs this, so it is kept for ``BITRIX_CONFIG_CACHE_SECONDS`` (default 5; 0: never):
    a save or delete in this process takes effect at once, in other processes within that time.
    """
    state = runtime()
    key = (client_id, current_app.config.get("BITRIX_WEBHOOK_BASE"))
    hit = state.target_cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    generation = state.target_generation
    target = _portal_target(client_id)
    ttl = float(current_app.config.get("BITRIX_CONFIG_CACHE_SECONDS", 5.0))
    # Not kept if a config changed while we looked (what we read may be the old one).
    if ttl > 0 and generation == state.target_generation:
        if len(state.target_cache) >= MAX_CACHED_TARGETS:  # many client ids on the global fallback
            state.target_cache.clear()
        state.target_cache[key] = (now + ttl, target)
    return target


def forget_target(client_id: int) -> None:
    """Drop what ``portal_target`` keeps for a client (its config changed)."""
    from .metrics import tenant_label

    state = runtime()
    state.target_generation += 1
    for key in [k for k in list(state.target_cache) if k[0] == client_id]:
        state.target_cache.pop(key, None)
    state.breaker.reset(tenant_label(client_id))  # new credentials get a fresh start


def _portal_target(client_id: int | None) -> tuple[str, dict[str, float] | None, str]:
    config = effective_config(client_id)
    if not config.webhook_base:
        rt = runtime()
        who = f"client {client_id}" if client_id is not None else "calls without a client"
        where = f"POST {rt.url_prefix}/clients/{client_id if client_id is not None else '<id>'}/config"
        fallback = " or set BITRIX_WEBHOOK_BASE" if rt.env_fallback or client_id is None else \
            " (BITRIX_ENV_FALLBACK is off: the global BITRIX_WEBHOOK_BASE is not used for clients)"
        raise ConfigMissing(f"No Bitrix24 webhook base configured for {who}: save one with {where}{fallback}")
    try:
        base = validate_webhook_base(config.webhook_base, runtime().allowed_hosts)
        return base, config.rate_limit, config.source
    except InvalidConfig as exc:
        where = "BITRIX_WEBHOOK_BASE" if config.source == "environment" else f"the saved config of client {client_id}"
        raise ConfigMissing(f"{where} is not usable: {exc}") from None


class WebhookNotVerified(Exception):
    """A new webhook_base could not be shown to work: ``rejected`` when the portal refused its
    credentials, else the portal could not be asked (``error`` says why). Nothing was saved."""

    def __init__(self, error: Bitrix24Error, *, rejected: bool) -> None:
        super().__init__(error.description)
        self.error, self.rejected = error, rejected


def verify_webhook(client_id: int, base: str, rate_limit: dict[str, float] | None) -> None:
    """One ``profile`` call (scope ``basic``, which every webhook has:
    https://apidocs.bitrix24.com/api-reference/common/users/profile.html) on a webhook before it is
    saved, paced by the portal's bucket like any call. A webhook the portal refuses is never stored,
    so it never takes places in the bucket of a portal other tenants share."""
    from .bitrix24_service import check_webhook

    try:
        check_webhook(base, rate_limit, client_id=client_id)
    except PortalAuthFailed as exc:
        raise WebhookNotVerified(exc, rejected=True) from None
    except Bitrix24Error as exc:
        raise WebhookNotVerified(exc, rejected=False) from None


def save_config(client_id: int, data: dict[str, Any], *, verify: bool | None = None) -> ClientConfig:
    """Validate and store ``webhook_base`` / ``outbound_token`` for a client (partial updates merge;
    ``outbound_token: null`` clears the token). A new ``webhook_base`` is tried first
    (``verify_webhook``) unless ``verify`` (default BITRIX_VERIFY_CONFIG; ``data["verify"]`` too) is
    false."""
    data = dict(data)
    if "verify" in data:
        given = data.pop("verify")
        if not isinstance(given, bool):
            raise InvalidConfig("verify", "verify must be true or false")
        verify = given if verify is None else verify
    if verify is None:
        verify = runtime().verify_config
    unknown = sorted(set(data) - {"webhook_base", "outbound_token", "plan", "rate_limit"})
    if unknown:
        raise InvalidConfig(
            unknown[0], f"unknown config field {unknown[0]!r}: use webhook_base, outbound_token, plan or rate_limit"
        )
    current = stored_config(client_id)
    merged = {
        "webhook_base": current.webhook_base if current else None,
        "outbound_token": current.outbound_token if current else None,
        "rate_limit": current.rate_limit if current else None,
    }
    if "plan" in data or "rate_limit" in data:
        merged["rate_limit"] = validate_rate_limit(data.get("plan"), data.get("rate_limit"))
    if "webhook_base" in data:
        merged["webhook_base"] = validate_webhook_base(data["webhook_base"], runtime().allowed_hosts)
    if "outbound_token" in data:
        merged["outbound_token"] = validate_outbound_token(data["outbound_token"])
    if not merged["webhook_base"]:
        raise InvalidConfig("webhook_base", "webhook_base is required for a client that has no saved config")
    if verify and merged["webhook_base"] != (current.webhook_base if current else None):
        verify_webhook(client_id, merged["webhook_base"], merged["rate_limit"])

    try:
        runtime().store.save(client_id, ConfigValues(**merged))
    finally:
        forget_target(client_id)
    return stored_config(client_id)  # type: ignore[return-value]


def delete_config(client_id: int) -> bool:
    try:
        return runtime().store.delete(client_id)
    finally:
        forget_target(client_id)


def configs_for_portal(member_id: str, domain: str) -> list[ClientConfig]:
    """Every stored config of the portal named by ``member_id`` or ``domain``, for routing an
    incoming event; member_id is learnt from verified events (where the store keeps it)."""
    return runtime().store.find_for_portal(member_id, domain)


def bitrix24_crm_id() -> int | None:
    """The id of the Bitrix24 row in the CRMs table, when the store uses one (debug view)."""
    crm = getattr(runtime().store, "crm", None)
    return None if crm is None else crm.id(runtime().session)


__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "PLANS",
    "ClientConfig",
    "InvalidConfig",
    "WebhookNotVerified",
    "StoreNotReady",
    "configs_for_portal",
    "delete_config",
    "effective_config",
    "parse_allowed_hosts",
    "portal_domain",
    "portal_target",
    "save_config",
    "stored_config",
    "validate_outbound_token",
    "validate_rate_limit",
    "validate_webhook_base",
]
