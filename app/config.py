"""Settings from the environment.

Every setting the integration reads, its environment variable and its default live here (the
README's table is written from this list). ``python-dotenv`` loads a ``.env`` file for the
``flask`` CLI; the app itself reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})


def env_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in TRUE_WORDS


# key: (default, converter). Each key is read from the environment variable of the same name.
BITRIX24_SETTINGS: dict[str, tuple[Any, Any]] = {
    "BITRIX_WEBHOOK_BASE": ("", str),  # global fallback webhook base
    "BITRIX_OUTBOUND_TOKEN": ("", str),  # global fallback application token for events
    # 1: a client without a saved config uses BITRIX_WEBHOOK_BASE (one portal); 0: CONFIG_MISSING
    "BITRIX_ENV_FALLBACK": (True, env_bool),
    "BITRIX_SECRET_KEY": ("", str),  # Fernet key(s), comma-separated, newest first
    "BITRIX_API_KEY": ("", str),  # bearer key(s) for our API, comma-separated for rotation
    "BITRIX_AUTH_DISABLED": (False, env_bool),  # demo only: no API authentication
    "BITRIX_METRICS_TOKEN": ("", str),  # bearer key(s) for /metrics (BITRIX_API_KEY works too)
    "BITRIX_ALLOWED_HOSTS": ("", str),  # portal host allowlist; empty = Bitrix24 cloud zones
    "BITRIX_REDIS_URL": ("", str),  # shared limiter and event queue (the `redis` extra)
    "BITRIX_TIMEOUT_CONNECT": (3.05, float),
    "BITRIX_TIMEOUT_READ": (30.0, float),  # per socket read
    "BITRIX_TIMEOUT_TOTAL": (65.0, float),  # per call, first byte to last (a portal dripping its answer)
    "BITRIX_MAX_ANSWER_BYTES": (50 * 1024 * 1024, int),  # largest portal answer, decompressed (502 past it)
    "BITRIX_MAX_BODY_BYTES": (1_048_576, int),  # largest request body our endpoints read
    "BITRIX_RATE_BURST": (50, int),  # the portal's bucket size (Enterprise: 250)
    "BITRIX_RATE_DRAIN": (2.0, float),  # the portal's drain per second (Enterprise: 5)
    "BITRIX_RATE_SAFETY": (0.99, float),  # we pace at this fraction of the drain rate
    "BITRIX_OPERATING_LIMIT": (480.0, float),  # seconds of operating time per method per 10 minutes
    "BITRIX_OPERATING_BUCKET": (60.0, float),  # the portal's operating-time bucket (10 make the window)
    "BITRIX_MAX_WAIT": (30.0, float),  # longest a single API call waits for limits and retries
    "BITRIX_BULK_MAX_WAIT": (900.0, float),  # the same bound for bulk work (batch, list-all)
    # Listing every row (list-all, export, the mirror): this many batches of ID ranges at once; 1: one
    # keyset chain, as before
    "BITRIX_LIST_CHAINS": (4, int),
    # Bulk updates (.../<entity>/batch, import): this many batch requests in flight at once; 1: one after another
    # (creates always go in order, so that new IDs follow the items)
    "BITRIX_BULK_PARALLEL": (4, int),
    "BITRIX_RETRY_ATTEMPTS": (6, int),
    "BITRIX_BATCH_MAX_ITEMS": (5000, int),  # items per POST .../<entity>/batch
    "BITRIX_EVENT_MAX_BYTES": (65_536, int),  # largest event body the receiver reads
    "BITRIX_EVENT_MAX_ATTEMPTS": (5, int),  # handler runs per event before it is kept as failed
    "BITRIX_EVENT_RETRY_BASE": (30.0, float),  # seconds before the first retry; doubles each time
    "BITRIX_CONFIG_CACHE_SECONDS": (5.0, float),  # how long a process reuses a client's looked-up config
    # field labels and list values (GET .../fields, labels=1) kept per portal and entity: seconds, entries
    "BITRIX_LABELS_CACHE_SECONDS": (300.0, float),
    "BITRIX_LABELS_CACHE_SIZE": (512, int),
    # A saved webhook is tried (one `profile` call) before it is stored; 0: store unchecked (offline setup)
    "BITRIX_VERIFY_CONFIG": (True, env_bool),
    # After this many refusals of a webhook's credentials in a row its calls are suspended...
    "BITRIX_AUTH_FAILURES_TO_SUSPEND": (5, int),
    "BITRIX_AUTH_SUSPEND_SECONDS": (300.0, float),  # ...for this long, then one call tries again
    # App mode (an OAuth app installed on many portals): both set to turn it on; the token server
    "BITRIX_APP_CLIENT_ID": ("", str),
    "BITRIX_APP_CLIENT_SECRET": ("", str),
    "BITRIX_OAUTH_SERVER": ("https://oauth.bitrix.info/", str),
    # The app's code as app.info names it (a Marketplace app's differs from its client id); default: the client id
    "BITRIX_APP_CODE": ("", str),
    # Events the app binds on each portal at install (event.bind): "auto" = those our handlers are
    # registered for; a comma-separated list; empty: none. Bound to BITRIX_APP_EVENT_URL, by default our
    # /webhook on the host the install request came to
    "BITRIX_APP_EVENTS": ("auto", str),
    "BITRIX_APP_EVENT_URL": ("", str),
    # "offline": the events are queued by the portal (event.bind event_type=offline) and drained by us on
    # ONOFFLINEEVENT and on the worker's schedule, so none is lost while we are down; "online": posted to us
    "BITRIX_APP_EVENT_DELIVERY": ("offline", str),
    # The auth_connector our calls carry and our offline queue is bound with, so our own writes never come
    # back as events (where the portal's plan has the feature; else none is used); empty: none
    "BITRIX_APP_CONNECTOR": ("flask_bitrix24", str),
    "BITRIX_OFFLINE_BATCH": (200, int),  # offline records fetched per event.offline.get
    "BITRIX_OFFLINE_MIN_TIMEOUT": (1, int),  # ONOFFLINEEVENT's minTimeout: seconds between two notifications
    "BITRIX_OFFLINE_DRAIN_SECONDS": (300.0, float),  # the worker drains every installation's queue this often
    # Reconciliation: entities whose changes are listed by modification time and compared with the events
    # received (contacts,deals,leads,companies); empty: off. The worker runs it every BITRIX_RECONCILE_SECONDS
    "BITRIX_RECONCILE_ENTITIES": ("", str),
    "BITRIX_RECONCILE_SECONDS": (900.0, float),
    "BITRIX_RECONCILE_OVERLAP": (300.0, float),  # each run looks this far behind its cursor (late writes, clocks)
    "BITRIX_RECONCILE_LOOKBACK": (3600.0, float),  # a tenant's first run looks back this far
    # The mirror (incremental sync into this database): entities that get a table (contacts,deals,leads,companies);
    # each tenant turns it on with `flask bitrix24 sync <entity> --client N`. The worker runs every tenant's
    # mirrors every BITRIX_SYNC_SECONDS and compares their IDs with the portal's every BITRIX_SYNC_ID_CHECK_SECONDS
    "BITRIX_SYNC_ENTITIES": ("", str),
    "BITRIX_SYNC_SECONDS": (900.0, float),
    "BITRIX_SYNC_ID_CHECK_SECONDS": (86400.0, float),
    "BITRIX_LOG_FORMAT": ("text", str),  # standalone app: "text" or "json" (one object per line)
    # where the Swagger UI page at /api/bitrix/docs loads its scripts from; empty: the installed
    # flask-swagger-ui package's copy, served at /api/bitrix/docs/assets/ (no internet needed)
    "BITRIX_OPENAPI_SWAGGER_UI_URL": ("", str),
}


def bitrix24_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The integration's settings: the environment's value where set, else the default."""
    environ = os.environ if environ is None else environ
    settings = {}
    for key, (default, convert) in BITRIX24_SETTINGS.items():
        raw = environ.get(key)
        settings[key] = convert(raw) if raw not in (None, "") else default
    return settings


def app_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings of the standalone app: the integration's plus the database URL."""
    environ = os.environ if environ is None else environ
    settings = bitrix24_settings(environ)
    database_url = environ.get("DATABASE_URL", "")
    if database_url.startswith("postgres://"):  # Heroku-style URL; SQLAlchemy wants postgresql://
        database_url = "postgresql://" + database_url[len("postgres://") :]
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    settings["SQLALCHEMY_DATABASE_URI"] = database_url or None  # None: SQLite in the instance folder
    return settings
