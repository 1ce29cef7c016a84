"""The ``Bitrix24`` Flask extension.

``Bitrix24(app)`` or ``bitrix24.init_app(app)`` registers the blueprint at ``/api/bitrix`` (with
its JSON error handlers), the ``flask bitrix24`` commands and the config defaults, and keeps the
per-app state (cipher, portal sessions, host hooks) in ``app.extensions["bitrix24"]``. One
extension object can serve several apps in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask

log = logging.getLogger("app.bitrix24")

AuthorizeHook = Callable[[int | None], bool]


class Bitrix24State:
    """What one app needs at run time; built once in ``init_app``."""

    def __init__(self, app: Flask, extension: Bitrix24) -> None:
        from .services.caller import PortalCaller, RetryPolicy
        from .services.client_config import parse_allowed_hosts
        from .services.events import event_stats
        from .services.limiter import BucketParams, LocalBuckets, OperatingBudgets, RedisBuckets
        from .services.metrics import Metrics
        from .services.portal import PortalPool, Timeouts
        from .services.secrets import load_cipher

        cfg = app.config
        self.extension = extension
        self.allowed_hosts = parse_allowed_hosts(cfg["BITRIX_ALLOWED_HOSTS"])
        self.cipher = load_cipher(cfg["BITRIX_SECRET_KEY"], app.instance_path)
        self.portals = PortalPool(Timeouts(float(cfg["BITRIX_TIMEOUT_CONNECT"]), float(cfg["BITRIX_TIMEOUT_READ"])))
        self.api_keys = tuple(k.strip() for k in str(cfg["BITRIX_API_KEY"] or "").split(",") if k.strip())
        self.auth_disabled = bool(cfg["BITRIX_AUTH_DISABLED"])
        self.metrics_keys = tuple(k.strip() for k in str(cfg["BITRIX_METRICS_TOKEN"] or "").split(",") if k.strip())
        self.default_bucket = BucketParams(
            float(cfg["BITRIX_RATE_BURST"]), float(cfg["BITRIX_RATE_DRAIN"]), float(cfg["BITRIX_RATE_SAFETY"])
        )
        redis_url = cfg["BITRIX_REDIS_URL"]
        self.buckets = RedisBuckets(redis_url) if redis_url else LocalBuckets()
        self.budgets = OperatingBudgets(
            float(cfg["BITRIX_OPERATING_LIMIT"]), bucket=float(cfg["BITRIX_OPERATING_BUCKET"])
        )
        self.metrics = Metrics(event_source=event_stats)
        self.caller = PortalCaller(
            self.portals,
            self.buckets,
            self.budgets,
            RetryPolicy(attempts=int(cfg["BITRIX_RETRY_ATTEMPTS"]), max_wait=float(cfg["BITRIX_MAX_WAIT"])),
            on_event=self.metrics.on_event,
        )
        self.bulk_max_wait = float(cfg["BITRIX_BULK_MAX_WAIT"])
        # client_id -> (expires, (webhook base, rate limit)): see client_config.portal_target
        self.target_cache: dict[Any, tuple[float, Any]] = {}
        self.target_generation = 0  # bumped by every config change
        from .services.event_queue import make_event_queue

        self.event_queue = make_event_queue(redis_url)
        if self.auth_disabled:
            log.warning("BITRIX_AUTH_DISABLED is set: the Bitrix24 API accepts requests from anyone (demo only)")

    def bucket_for(self, rate_limit: dict[str, float] | None):
        """The client's own bucket (Enterprise: 250 / 5 per second) or the app's default."""
        if not rate_limit:
            return self.default_bucket
        from .services.limiter import BucketParams

        return BucketParams(float(rate_limit["burst"]), float(rate_limit["drain"]), self.default_bucket.safety)

    @property
    def authorize(self) -> AuthorizeHook | None:
        return self.extension.authorize_hook


EventHandler = Callable[[Any], None]


class Bitrix24:
    def __init__(self, app: Flask | None = None, *, authorize: AuthorizeHook | None = None) -> None:
        self.authorize_hook = authorize
        self._handlers: dict[str, list[EventHandler]] = {}
        if app is not None:
            self.init_app(app)

    def on(self, event_name: str) -> Callable[[EventHandler], EventHandler]:
        """Decorator: ``@bitrix24.on("ONCRMDEALUPDATE")`` (or ``"*"`` for every event) registers a
        handler that receives an ``app.services.events.Event``. A handler that raises is retried with
        backoff (BITRIX_EVENT_MAX_ATTEMPTS), then the event is kept as failed with its error."""
        name = event_name.strip().upper()
        if not name:
            raise ValueError("an event name, or '*' for every event")

        def register(handler: EventHandler) -> EventHandler:
            self._handlers.setdefault(name, []).append(handler)
            return handler

        return register

    def handlers_for(self, event_name: str) -> list[EventHandler]:
        return [*self._handlers.get(event_name.upper(), []), *self._handlers.get("*", [])]

    def init_app(self, app: Flask, *, url_prefix: str = "/api/bitrix") -> None:
        if "bitrix24" in app.extensions:
            raise RuntimeError("the Bitrix24 extension is already registered on this app")
        from .cli import bitrix24_cli
        from .config import bitrix24_settings
        from .controllers.openapi import init_api
        from .extensions import db
        from .logs import install_on_our_loggers
        from .routes.bitrix24_routes import bp

        for key, value in bitrix24_settings().items():
            app.config.setdefault(key, value)
        if "sqlalchemy" not in app.extensions:
            db.init_app(app)
        app.extensions["bitrix24"] = Bitrix24State(app, self)
        install_on_our_loggers()  # request id, tenant and redaction on our log lines
        init_api(app, bp, url_prefix)  # registers the blueprint, its OpenAPI document and Swagger UI
        app.cli.add_command(bitrix24_cli)

    def authorize(self, hook: AuthorizeHook) -> AuthorizeHook:
        """Decorator: ``hook(client_id) -> bool`` decides who may use the API (it may read
        ``flask.request``); it replaces the ``BITRIX_API_KEY`` check."""
        self.authorize_hook = hook
        return hook


def state(app: Flask) -> Any:
    return app.extensions["bitrix24"]
