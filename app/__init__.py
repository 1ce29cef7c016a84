"""flask_bitrix24: a multi-tenant Bitrix24 CRM integration for Flask apps.

In a host app::

    from flask_bitrix24 import Bitrix24
    bitrix24 = Bitrix24(db=db)          # the host's Flask-SQLAlchemy instance
    bitrix24.init_app(app)              # in the app factory

This is the one public module: everything a host uses is imported from here (``__all__``).
``create_app`` builds the standalone app (``flask --app app run`` in this repository).
Importing it creates nothing, touches no logger outside ``flask_bitrix24`` and reads no setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .extension import Bitrix24
from .hooks import AuthorizeHook, EventHandler
from .logs import install_filters
from .models import ClientConfigMixin, CRMMixin, EventLogMixin, TableNameTaken
from .runtime import Runtime, runtime
from .services.bitrix24_service import (
    BadInput,
    Bitrix24Error,
    ConfigMissing,
    LimitExceeded,
    MethodNotFound,
    NotFound,
    OperatingLimit,
    OutcomeUnknown,
    PortalAuthFailed,
    PortalMoved,
    PortalTimeout,
    RateLimited,
    ServerError,
    TransportError,
    background_work,
    bx_batch,
    bx_call,
    bx_list_all,
    flatten_params,
)
from .services.events import Event
from .services.webhook_rules import InvalidConfig
from .store import ClientConfig, ConfigStore, ConfigValues, CRMRow, EncryptedStore, ModelStore, StoreNotReady

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The standalone app (SQLite by default, our own migrations); see ``standalone.create_app``."""
    from .standalone import create_app as build

    return build(config)


__all__ = [
    "AuthorizeHook",
    "BadInput",
    "Bitrix24",
    "Bitrix24Error",
    "CRMMixin",
    "CRMRow",
    "ClientConfig",
    "ClientConfigMixin",
    "ConfigMissing",
    "ConfigStore",
    "ConfigValues",
    "EncryptedStore",
    "Event",
    "EventHandler",
    "EventLogMixin",
    "InvalidConfig",
    "LimitExceeded",
    "MethodNotFound",
    "ModelStore",
    "NotFound",
    "OperatingLimit",
    "OutcomeUnknown",
    "PortalAuthFailed",
    "PortalMoved",
    "PortalTimeout",
    "RateLimited",
    "Runtime",
    "ServerError",
    "StoreNotReady",
    "TableNameTaken",
    "TransportError",
    "__version__",
    "background_work",
    "bx_batch",
    "bx_call",
    "bx_list_all",
    "create_app",
    "flatten_params",
    "install_filters",
    "runtime",
]
