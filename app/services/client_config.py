"""Per-client portal configuration: validation, encrypted storage, lookup.

A client's webhook base comes from its ``ClientCRMAuth`` row first, then from
``BITRIX_WEBHOOK_BASE``. Whatever its source, a webhook base is validated before we send anything
to it: https, a host on the allowlist, the ``/rest/<user_id>/<secret>/`` shape (DESIGN.md, Security).
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from ..runtime import runtime
from ..store import ClientConfig, ConfigValues, StoreNotReady, portal_domain
from .errors import Bitrix24Error, ConfigMissing, PortalAuthFailed

# Bitrix24's cloud zones (portal.bitrix24.<zone>); BITRIX_ALLOWED_HOSTS replaces the list.
DEFAULT_ALLOWED_HOSTS = tuple(
    f"*.bitrix24.{zone}"
    for zone in (
        "com",
        "ru",
        "de",
        "eu",
        "es",
        "fr",
        "it",
        "pl",
        "uk",
        "by",
        "kz",
        "ua",
        "in",
        "jp",
        "cn",
        "id",
        "vn",
        "co",
        "com.br",
        "com.tr",
        "com.mx",
        "site",
    )
)
LOOPBACK_NAMES = frozenset({"localhost"})
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_REST_PATH = re.compile(r"^/rest/(?P<user_id>[1-9][0-9]{0,9})/(?P<secret>[A-Za-z0-9_-]{1,128})/?$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable ASCII, no spaces


class InvalidConfig(ValueError):
    """A config value was refused; ``field`` names it, the message says what to fix."""

    status = 400
    code = "INVALID_CONFIG"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_allowed_hosts(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return DEFAULT_ALLOWED_HOSTS
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip().lower().rstrip(".") for item in items if item and item.strip())


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _looks_like_ip(host: str) -> bool:
    # Dotted, decimal (2130706433), hex (0x7f000001), octal (0177.0.0.1), short (127.1) and IPv6
    # forms all end in a label no real DNS name can end in.
    if ":" in host:
        return True
    last = host.rsplit(".", 1)[-1]
    return last.isdigit() or bool(re.fullmatch(r"0x[0-9a-f]*", last))


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def validate_webhook_base(value: Any, allowed_hosts: tuple[str, ...]) -> str:
    """Return the normalised webhook base (ending in "/") or raise ``InvalidConfig``."""
    field = "webhook_base"
    if not isinstance(value, str):
        raise InvalidConfig(field, "webhook_base must be a string like https://<portal>.bitrix24.com/rest/1/<secret>/")
    text = value.strip()
    if not text or len(text) > 2048:
        raise InvalidConfig(field, "webhook_base must be a non-empty URL of at most 2048 characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in text):
        raise InvalidConfig(field, "webhook_base must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(text)
        parts.hostname  # noqa: B018  (raises on a malformed [IPv6] host)
    except ValueError:
        raise InvalidConfig(field, "webhook_base is not a well-formed URL") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidConfig(field, f"webhook_base must use https, not {parts.scheme or 'no scheme'!r}")
    if "@" in parts.netloc:
        raise InvalidConfig(field, "webhook_base must not contain a user name or password before the host")
    raw_host = parts.hostname or ""
    if not raw_host.isascii():
        raise InvalidConfig(field, "the webhook_base host must be plain ASCII (write international names in xn-- form)")
    host = raw_host.lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        raise InvalidConfig(field, "the webhook_base port is not a number between 0 and 65535") from None
    listed_exactly = host in allowed_hosts
    if _looks_like_ip(host):
        if not (listed_exactly and _is_loopback(host)):
            raise InvalidConfig(field, f"webhook_base must name the portal by host name, not an IP address ({host})")
    elif not _HOSTNAME.match(host):
        raise InvalidConfig(field, f"{host!r} is not a valid host name")
    if not _host_allowed(host, allowed_hosts):
        raise InvalidConfig(
            field,
            f"host {host!r} is not in BITRIX_ALLOWED_HOSTS (default: Bitrix24 cloud zones like *.bitrix24.com); "
            "ask your operator to add it",
        )
    if port not in (None, 443) and not listed_exactly and f"{host}:{port}" not in allowed_hosts:
        raise InvalidConfig(
            field, f"port {port} is not allowed for {host}: cloud portals answer on 443; list {host}:{port} in "
            "BITRIX_ALLOWED_HOSTS for a portal that really uses it"
        )
    if parts.scheme == "http" and not (listed_exactly and _is_loopback(host)):
        raise InvalidConfig(
            field, "webhook_base must use https (plain http is only for loopback hosts listed in BITRIX_ALLOWED_HOSTS)"
        )
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise InvalidConfig(field, "webhook_base must not have a query string or fragment")
    if not _REST_PATH.match(parts.path):
        raise InvalidConfig(
            field, "webhook_base path must be /rest/<user_id>/<secret>/ (copy it from the portal's inbound webhook)"
        )
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if port == {"https": 443, "http": 80}.get(parts.scheme):
        port = None  # the scheme's own port, said aloud: the portal's auth[domain] will not name it
    netloc = host if port is None else f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{path}"


def validate_outbound_token(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise InvalidConfig(
            "outbound_token", "outbound_token must be the portal's application token: 1-256 printable characters"
        )
    return value


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
    "ClientConfig",
    "InvalidConfig",
    "WebhookNotVerified",
    "StoreNotReady",
    "configs_for_portal",
    "delete_config",
    "effective_config",
    "portal_domain",
    "portal_target",
    "save_config",
    "stored_config",
    "validate_webhook_base",
]
