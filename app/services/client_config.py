"""Per-client portal configuration: lookup, the cached call target, verified save, event routing.

A client's webhook base comes from its ``ClientCRMAuth`` row first, then from
``BITRIX_WEBHOOK_BASE``. Whatever its source, a webhook base is validated before we send anything
to it (``webhook_rules``); a client's bucket settings are checked by ``rate_rules``. Both modules'
names are importable from here too.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

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


def linked_installation(client_id: int | None):
    """App mode: the installation linked to the client (any status), else None."""
    rt = runtime()
    if client_id is None or not rt.app_mode:
        return None
    return rt.installations.for_client(client_id)


def effective_config(client_id: int | None) -> ClientConfig:
    """The config a call for ``client_id`` would use: a linked app installation (app mode), else the
    client's own webhook, else (unless ``BITRIX_ENV_FALLBACK`` is off) the environment's
    ``BITRIX_WEBHOOK_BASE``."""
    inst = linked_installation(client_id)
    if inst is not None:
        return ClientConfig(client_id=client_id, webhook_base=None, outbound_token=None, source="app",
                            portal_domain=inst.domain, updated_at=inst.updated_at, member_id=inst.member_id)
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


class Target(NamedTuple):
    """Where a client's calls go: ``base`` (a webhook base, or an installation's REST address),
    the client's own bucket settings (None: the app's defaults), where they come from ("database",
    "environment" or "app") and, in app mode, the installation's ``member_id``."""

    base: str
    rate_limit: dict[str, float] | None
    source: str
    member_id: str | None = None


def portal_target(client_id: int | None) -> Target:
    """The client's validated :class:`Target`, or ``ConfigMissing`` saying what to set (an
    ``AppNotUsable`` for a linked installation that cannot call).

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
    session = state.session
    session = session() if hasattr(session, "registry") else session  # the scoped session's own
    ours = not session.in_transaction()
    try:
        target = _portal_target(client_id)
    except Exception:
        if ours:
            session.rollback()  # the read we began failed (a client with no config, the database gone): ended too
        raise
    if ours and not (session.new or session.dirty or session.deleted):
        # End the read this lookup began (never a transaction of the caller's): a bulk job or a stream
        # runs for minutes, and would hold a database connection "idle in transaction" all along. Ended
        # by a commit of nothing, not a rollback: a rollback expires every object the session holds,
        # while a commit does so only as the host set it (expire_on_commit), as after its own commits.
        session.commit()
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
    state.portals.forget_prepared()  # the old webhook's URL (its secret) is not kept for requests


def _portal_target(client_id: int | None) -> Target:
    from .installations import unusable

    inst = linked_installation(client_id)
    if inst is not None:
        problem = unusable(inst, client_id)
        if problem is not None:
            raise problem
        return Target(inst.client_endpoint or "", None, "app", inst.member_id)
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
        return Target(base, config.rate_limit, config.source)
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
    if "member_id" in data:
        return link_installation(client_id, data)
    unknown = sorted(set(data) - {"webhook_base", "outbound_token", "plan", "rate_limit"})
    if unknown:
        raise InvalidConfig(
            unknown[0],
            f"unknown config field {unknown[0]!r}: use webhook_base, outbound_token, plan or rate_limit "
            "(or member_id alone, to link an app installation)"
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
        if "webhook_base" in data and runtime().app_mode:
            runtime().installations.unlink_client(client_id)  # a webhook saved: the client leaves app mode
    finally:
        forget_target(client_id)
    return stored_config(client_id)  # type: ignore[return-value]


def link_installation(client_id: int, data: dict[str, Any]) -> ClientConfig:
    """App mode: link the app installation of the portal ``data["member_id"]`` to the client. It must
    be installed and usable and not linked to another client; the client's saved webhook (if any) is
    kept but no longer used while the link stands."""
    from .installations import MEMBER_ID

    rt = runtime()
    extra = sorted(set(data) - {"member_id"})
    if extra:
        raise InvalidConfig(extra[0], "member_id links an app installation and is sent alone")
    member = data["member_id"]
    if not isinstance(member, str) or not MEMBER_ID.fullmatch(member):
        raise InvalidConfig("member_id", "member_id must be the portal's member_id, as GET .../app/installations lists")
    if not rt.app_mode:
        raise InvalidConfig("member_id", "app mode is off: set BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET")
    inst = rt.installations.get(member)
    if inst is None:
        raise InvalidConfig("member_id", f"no installation of the app on a portal with member_id {member!r}: "
                                         "install the app there first")
    if inst.client_id is not None and inst.client_id != client_id:
        raise InstallationTaken(
            f"the installation on {inst.domain or member} is linked to client {inst.client_id}: unlink it there "
            f"first (DELETE .../clients/{inst.client_id}/config)")
    from .installations import unusable

    problem = unusable(inst)
    if problem is not None:
        raise InvalidConfig("member_id", f"that installation cannot make calls: {problem.description}")
    try:
        rt.installations.link(member, client_id)
    finally:
        forget_target(client_id)
    return effective_config(client_id)


class InstallationTaken(InvalidConfig):
    """The installation is linked to another client (409)."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__("member_id", message)


def delete_config(client_id: int) -> bool:
    """Forget the client's saved webhook and unlink its app installation (the installation stays)."""
    rt = runtime()
    try:
        unlinked = rt.installations.unlink_client(client_id) if rt.app_mode else False
        return rt.store.delete(client_id) or unlinked
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
    "InstallationTaken",
    "InvalidConfig",
    "Target",
    "WebhookNotVerified",
    "StoreNotReady",
    "configs_for_portal",
    "delete_config",
    "effective_config",
    "link_installation",
    "linked_installation",
    "parse_allowed_hosts",
    "portal_domain",
    "portal_target",
    "save_config",
    "stored_config",
    "validate_outbound_token",
    "validate_rate_limit",
    "validate_webhook_base",
]
