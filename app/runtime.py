"""The one per-app runtime object and its accessor.

``init_app`` builds a :class:`Runtime` from the app's config and keeps it in
``app.extensions["bitrix24"]``; everything that needs per-app state (portal sessions, limiter,
store, database, hooks, names) gets it with :func:`runtime`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from .hooks import Hooks
from .store import ConfigStore

if TYPE_CHECKING:
    from .services.limiter import BucketParams

EXTENSION_KEY = "bitrix24"
log = logging.getLogger("flask_bitrix24")


def _keys(value: Any) -> tuple[str, ...]:
    return tuple(k.strip() for k in str(value or "").split(",") if k.strip())


class Runtime:
    """What one app needs at run time; built once by ``Bitrix24.init_app``."""

    def __init__(
        self,
        app: Flask,
        *,
        db: Any,
        store: ConfigStore,
        event_model: type,
        hooks: Hooks,
        blueprint_name: str,
        url_prefix: str,
        own_migrations: bool,
        cli_group: str = "bitrix24",
        installation_model: type | None = None,
        sync_state_model: type | None = None,
        mirror_models: dict[str, type] | None = None,
    ) -> None:
        # Imported here: services import this module for ``runtime()``.
        from .services.breaker import AuthBreaker
        from .services.caller import PortalCaller, RetryPolicy
        from .services.event_queue import make_event_queue
        from .services.events import event_stats
        from .services.limiter import BucketParams, LocalBuckets, OperatingBudgets, RedisBuckets, RedisOperatingBudgets
        from .services.locks import make_locks
        from .services.metrics import make_metrics
        from .services.portal import PortalPool, Timeouts
        from .services.webhook_rules import parse_allowed_hosts

        cfg = app.config
        self.db, self.store, self.event_model, self.hooks = db, store, event_model, hooks
        self.blueprint_name, self.url_prefix, self.own_migrations = blueprint_name, url_prefix, own_migrations
        self.cli_group = cli_group
        # Without BITRIX_SECRET_KEY a key is made into the instance folder, which is only right where
        # one machine keeps it: the standalone app, or a host in debug or testing. Elsewhere each
        # machine would encrypt with a key of its own.
        self._may_generate_key = own_migrations or app.debug or app.testing
        self._secret_key, self._instance_path = cfg["BITRIX_SECRET_KEY"], app.instance_path
        self.env_fallback = bool(cfg["BITRIX_ENV_FALLBACK"])
        self.allowed_hosts = parse_allowed_hosts(cfg["BITRIX_ALLOWED_HOSTS"])
        self.portals = PortalPool(Timeouts(
            float(cfg["BITRIX_TIMEOUT_CONNECT"]), float(cfg["BITRIX_TIMEOUT_READ"]),
            total=float(cfg["BITRIX_TIMEOUT_TOTAL"]), max_answer_bytes=int(cfg["BITRIX_MAX_ANSWER_BYTES"]),
        ))
        self.api_keys = _keys(cfg["BITRIX_API_KEY"])
        self.auth_disabled = bool(cfg["BITRIX_AUTH_DISABLED"])
        self.metrics_keys = _keys(cfg["BITRIX_METRICS_TOKEN"])
        self.default_bucket = BucketParams(
            float(cfg["BITRIX_RATE_BURST"]), float(cfg["BITRIX_RATE_DRAIN"]), float(cfg["BITRIX_RATE_SAFETY"])
        )
        redis_url = cfg["BITRIX_REDIS_URL"]
        self.buckets = RedisBuckets(redis_url) if redis_url else LocalBuckets()
        operating = {"limit": float(cfg["BITRIX_OPERATING_LIMIT"]), "bucket": float(cfg["BITRIX_OPERATING_BUCKET"])}
        self.budgets = RedisOperatingBudgets(redis_url, **operating) if redis_url else OperatingBudgets(**operating)
        self.metrics = make_metrics(event_source=event_stats)
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.caller = PortalCaller(
            self.portals,
            self.buckets,
            self.budgets,
            RetryPolicy(attempts=int(cfg["BITRIX_RETRY_ATTEMPTS"]), max_wait=float(cfg["BITRIX_MAX_WAIT"])),
            on_event=self._on_call_event,
        )
        self.bulk_max_wait = float(cfg["BITRIX_BULK_MAX_WAIT"])
        self.verify_config = bool(cfg["BITRIX_VERIFY_CONFIG"])
        self.breaker = AuthBreaker(
            int(cfg["BITRIX_AUTH_FAILURES_TO_SUSPEND"]), float(cfg["BITRIX_AUTH_SUSPEND_SECONDS"]),
            clock=lambda: self.caller.clock(), on_change=self.metrics.on_event,
        )
        # client_id -> (expires, (webhook base, rate limit)): see client_config.portal_target
        self.target_cache: dict[Any, tuple[float, Any]] = {}
        self.target_generation = 0  # bumped by every config change
        self.event_queue = make_event_queue(redis_url)
        self.locks = make_locks(redis_url)
        self.sync_state_model = sync_state_model
        self.mirror_models = dict(mirror_models or {})  # entity -> model, for BITRIX_SYNC_ENTITIES only
        self.mirror_fields: dict[tuple[int, str], tuple[float, list[str]]] = {}  # (client, entity) -> (until, select)
        self._init_app_mode(app, cfg, installation_model)
        if str(self._secret_key or "").strip():
            self.cipher  # noqa: B018 - a bad BITRIX_SECRET_KEY fails at start, not at the first save
        if self.auth_disabled:
            log.warning("BITRIX_AUTH_DISABLED is set: the Bitrix24 API accepts requests from anyone (demo only)")

    def _init_app_mode(self, app: Flask, cfg: Any, installation_model: type | None) -> None:
        """App mode (BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET): installations, the OAuth
        server's client and the token broker."""
        from .services.app_install import VerificationPace
        from .services.installations import InstallationStore
        from .services.oauth import OAuthClient, TokenBroker

        self.installation_model = installation_model
        self.installations = InstallationStore(installation_model, self.db, lambda: self.cipher) \
            if installation_model is not None else None
        client_id = str(cfg.get("BITRIX_APP_CLIENT_ID") or "").strip()
        secret = str(cfg.get("BITRIX_APP_CLIENT_SECRET") or "").strip()
        self.app_client_id = client_id or None
        self.app_mode = bool(client_id and secret and self.installations is not None)
        self.install_pace = VerificationPace()  # install requests checked with the OAuth server
        self.event_pace = VerificationPace()  # events whose access token is checked with app.info
        self.oauth = self.tokens = None
        if self.app_mode:
            self.oauth = OAuthClient(str(cfg.get("BITRIX_OAUTH_SERVER") or "https://oauth.bitrix.info/"), client_id,
                                     secret, allowed_hosts=self.allowed_hosts, on_event=self.metrics.on_event)
            self.tokens = TokenBroker(lambda: self.installations, self.oauth)
            if hasattr(self.metrics, "watch_installations"):
                self.metrics.watch_installations(self._installation_counts)
        elif client_id or secret:
            log.warning("app mode needs both BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET: it stays off")

    def _installation_counts(self) -> list[tuple[str, str | None, int]]:
        return self.installations.counts()  # at scrape time, in the /metrics request

    def feature_tables(self) -> list[Any]:
        """The tables of the features this app turned on: installations (app mode), sync state
        (reconciliation, the mirror), the mirror's (or every one of them: the standalone app)."""
        tables = [self.installation_model.__table__] if self.installation_model is not None else []
        tables += [self.sync_state_model.__table__] if self.sync_state_model is not None else []
        return tables + [model.__table__ for model in self.mirror_models.values()]

    def _on_call_event(self, name: str, info: dict[str, Any]) -> None:
        self.metrics.on_event(name, info)
        for listener in list(self._listeners):
            try:
                listener(name, info)
            except Exception:  # noqa: BLE001 - a listener's failure never fails the call
                log.warning("a call-event listener failed on %s", name, exc_info=True)

    @contextmanager
    def listening(self, listener: Callable[[str, dict[str, Any]], None]) -> Iterator[None]:
        """Also hand the caller's events (``operating_wait``, ``retry``, ``rate_limited``...) to
        ``listener`` while inside: the CLI shows a wait for the operating budget this way."""
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)

    @cached_property
    def cipher(self):
        """The MultiFernet for secrets at rest. Built on first use: an app whose store keeps no
        encrypted secrets never needs BITRIX_SECRET_KEY, and no key file is written for it."""
        from .services.secrets import SecretKeyError, load_cipher

        if not str(self._secret_key or "").strip() and not self._may_generate_key:
            raise SecretKeyError(
                "BITRIX_SECRET_KEY is not set: the encrypted config store needs it (the same key on every "
                f"machine); generate one with `flask {self.cli_group} generate-key`"
            )
        return load_cipher(self._secret_key, self._instance_path, cli_group=self.cli_group)

    @property
    def session(self) -> Any:
        """The app's database session (the host's, when it gave its ``db``)."""
        return self.db.session

    def handlers_for(self, event_name: str) -> list[Any]:
        """Everyone who handles an event: the host's handlers, then ours (``builtin_handlers_for``)."""
        return [*self.hooks.handlers_for(event_name), *self.builtin_handlers_for(event_name)]

    def builtin_handlers_for(self, event_name: str) -> list[Any]:
        """Our own: the mirror's, for the entities this app mirrors. The dispatcher runs them after the
        host's handlers and apart from them: their failure never reruns or fails the host's."""
        from .services.mirror import builtin_handlers

        return builtin_handlers(self.mirror_models, event_name)

    def event_names(self) -> list[str]:
        """The events someone here handles (the host's, and the mirror's): app mode binds these."""
        from .services.mirror import builtin_event_names

        return sorted({*self.hooks.event_names(), *builtin_event_names(self.mirror_models)})

    def command(self, name: str) -> str:
        """``setup`` -> ``flask bitrix24 setup`` (or the host's CLI group name)."""
        return f"flask {self.cli_group} {name}"

    def endpoint(self, name: str) -> str:
        """``get_record`` -> ``<blueprint name>.get_record`` (for ``url_for``)."""
        return f"{self.blueprint_name}.{name}"

    def bucket_for(self, rate_limit: dict[str, float] | None) -> BucketParams:
        """The client's own bucket (Enterprise: 250 / 5 per second) or the app's default."""
        if not rate_limit:
            return self.default_bucket
        from .services.limiter import BucketParams

        return BucketParams(float(rate_limit["burst"]), float(rate_limit["drain"]), self.default_bucket.safety)


def runtime(app: Flask | None = None) -> Runtime:
    """The current (or given) app's runtime; a clear error when the extension is not set up."""
    target = app if app is not None else current_app
    try:
        return target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "flask_bitrix24 is not set up on this app: call Bitrix24(app) or bitrix24.init_app(app)"
        ) from None
