"""Portal information methods and webhook scopes.

A webhook is created with scopes; a method outside them is refused with ``insufficient_scope``
after the method-existence check and the credentials. Methods of scope ``basic`` (``profile``,
``app.info``, ``scope``, ``methods``, ``method.get``, ``server.time``, ``batch``) need none.

Sources: https://apidocs.bitrix24.com/api-reference/common/system/scope.html,
https://apidocs.bitrix24.com/api-reference/common/system/app-info.html,
https://apidocs.bitrix24.com/api-reference/common/system/method-get.html,
https://apidocs.bitrix24.com/api-reference/common/system/server-time.html,
https://apidocs.bitrix24.com/api-reference/user/user-current.html,
https://apidocs.bitrix24.com/api-reference/common/system/feature-get.html (the plan's features: the
portal's ``features``, offline.py),
https://apidocs.bitrix24.com/error-codes.html (insufficient_scope)
"""

from __future__ import annotations

from .errors import ApiError

# What a webhook created with every box ticked has (the scopes this emulator knows of).
ALL_SCOPES = ("crm", "task", "user", "user_basic", "user_brief", "department", "entity", "catalog")
BASIC = ("profile", "app.info", "scope", "methods", "method.get", "server.time", "feature.get", "batch")
USER_SCOPES = ("user", "user_basic", "user_brief")
SYSTEM_METHODS = frozenset([*BASIC, "user.current"])
METHODS = SYSTEM_METHODS - {"batch", "profile"}  # served here (batch and profile by the emulator)


_SCOPE_NEEDED: dict[str, str] = {}  # scope_of's answers: it reads nothing but constant tables


def scope_of(method: str) -> str:
    """The scope a method needs ("basic": none)."""
    need = _SCOPE_NEEDED.get(method)
    if need is None:
        need = _scope_of(method)
        if len(_SCOPE_NEEDED) < 4096:
            _SCOPE_NEEDED[method] = need
    return need


def _scope_of(method: str) -> str:
    if method in BASIC:
        return "basic"
    from .emulator import SCOPE_OF

    if method in SCOPE_OF:
        return SCOPE_OF[method]
    if method.startswith("user."):
        return "user"
    return method.split(".", 1)[0]  # crm.*, task.*


def parse_scopes(value) -> tuple[str, ...]:
    """``--scopes crm,user`` (or a list): the webhook's scopes; None or "all": every one."""
    if value is None or value == "all":
        return ALL_SCOPES
    names = value.split(",") if isinstance(value, str) else list(value)
    scopes = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}: use {', '.join(ALL_SCOPES)}")
    return scopes


def allowed(method: str, scopes: tuple[str, ...]) -> bool:
    need = scope_of(method)
    if need == "basic":
        return True
    if need == "user":
        return any(s in scopes for s in USER_SCOPES)
    return need in scopes


def insufficient_scope(status: int = 401, auth_type: str = "webhook") -> ApiError:
    # Lower-case code; HTTP 401 per the portal's source (modules/rest/lib/apauth/auth.php) and the table at
    # https://apidocs.bitrix24.com/error-codes.html: the same status as INVALID_CREDENTIALS. "For an
    # application, the error message ends with `provided by the access token`" (the same table).
    token = "access token" if auth_type == "oauth" else "webhook token"
    return ApiError("insufficient_scope", f"The request requires higher privileges than provided by the {token}",
                    status)


def call(method: str, params: dict, emu, context=None) -> object:
    """The result of one of ``SYSTEM_METHODS`` for the emulator ``emu``; ``context["scopes"]`` are the
    caller's (the webhook's or the application's)."""
    context = context or {}
    scopes = context.get("scopes", emu.scopes)
    if method == "app.info":
        if context.get("auth_type") == "oauth":
            return emu.oauth.app_info()  # ID, CODE, VERSION, STATUS, INSTALLED... (app-info page)
        # An inbound webhook's shape.
        return {"SCOPE": list(scopes), "LICENSE": "en_pro100"}
    if method == "scope":
        return list(ALL_SCOPES) if _flag(params.get("full")) else list(scopes)
    if method == "methods":
        from .emulator import METHODS

        if _flag(params.get("full")):
            names = METHODS
        elif params.get("scope"):
            names = [m for m in METHODS if scope_of(m) == str(params["scope"])]
        else:
            names = [m for m in METHODS if allowed(m, scopes)]
        return sorted(m.lower() for m in names)
    if method == "method.get":
        from .emulator import METHODS

        name = str(params.get("name") or "").lower()
        exists = bool(name) and name in METHODS
        return {"isExisting": exists, "isAvailable": exists and allowed(name, scopes)}
    if method == "server.time":
        return emu.clock.iso()
    if method == "feature.get":
        code = next((v for k, v in params.items() if str(k).upper() == "CODE"), None)
        if code in (None, "", [], {}):
            raise ApiError("CODE_EMPTY", "CODE can't be empty", 400)
        # A feature the emulator does not model is one the plan lacks.
        return {"value": "Y" if isinstance(code, str) and emu.features.get(code) else "N"}
    if method == "user.current":
        # The webhook's user as user.get shows it, cut to what user_basic/user_brief allow (users.py).
        from . import users

        return users.current(emu)
    raise AssertionError(method)


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "y", "true")
