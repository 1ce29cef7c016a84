"""What a webhook base and an outbound token must look like before we send anything to them:
https, a host on the allowlist, the ``/rest/<user_id>/<secret>/`` shape (DESIGN.md, Security)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from .numbers import is_digits

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
    """A config value was refused (here, by ``rate_rules`` or by ``client_config.save_config``);
    ``field`` names it, the message says what to fix."""

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
    return is_digits(last) or bool(re.fullmatch(r"0x[0-9a-f]*", last))


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _portal_url(value: Any, allowed_hosts: tuple[str, ...], field: str, example: str) -> tuple[Any, str, str]:
    """The checks every portal address passes (https, an allowed host, no user info, query or
    fragment): returns (the split URL, its scheme, its normalised netloc)."""
    if not isinstance(value, str):
        raise InvalidConfig(field, f"{field} must be a string like {example}")
    text = value.strip()
    if not text or len(text) > 2048:
        raise InvalidConfig(field, f"{field} must be a non-empty URL of at most 2048 characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in text):
        raise InvalidConfig(field, f"{field} must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(text)
        parts.hostname  # noqa: B018  (raises on a malformed [IPv6] host)
    except ValueError:
        raise InvalidConfig(field, f"{field} is not a well-formed URL") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidConfig(field, f"{field} must use https, not {parts.scheme or 'no scheme'!r}")
    if "@" in parts.netloc:
        raise InvalidConfig(field, f"{field} must not contain a user name or password before the host")
    raw_host = parts.hostname or ""
    if not raw_host.isascii():
        raise InvalidConfig(field, f"the {field} host must be plain ASCII (write international names in xn-- form)")
    host = raw_host.lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        raise InvalidConfig(field, f"the {field} port is not a number between 0 and 65535") from None
    listed_exactly = host in allowed_hosts
    if _looks_like_ip(host):
        if not (listed_exactly and _is_loopback(host)):
            raise InvalidConfig(field, f"{field} must name the portal by host name, not an IP address ({host})")
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
            field, f"{field} must use https (plain http is only for loopback hosts listed in BITRIX_ALLOWED_HOSTS)"
        )
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise InvalidConfig(field, f"{field} must not have a query string or fragment")
    if port == {"https": 443, "http": 80}.get(parts.scheme):
        port = None  # the scheme's own port, said aloud: the portal's auth[domain] will not name it
    name = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    netloc = name if port is None else f"{name}:{port}"
    return parts, parts.scheme, netloc


def validate_webhook_base(value: Any, allowed_hosts: tuple[str, ...]) -> str:
    """Return the normalised webhook base (ending in "/") or raise ``InvalidConfig``."""
    field = "webhook_base"
    parts, scheme, netloc = _portal_url(value, allowed_hosts, field,
                                        "https://<portal>.bitrix24.com/rest/1/<secret>/")
    if not _REST_PATH.match(parts.path):
        raise InvalidConfig(
            field, "webhook_base path must be /rest/<user_id>/<secret>/ (copy it from the portal's inbound webhook)"
        )
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{scheme}://{netloc}{path}"


def validate_client_endpoint(value: Any, allowed_hosts: tuple[str, ...]) -> str:
    """An app installation's REST address, ``https://HOST/rest/`` (``client_endpoint`` in token
    answers and events: https://apidocs.bitrix24.com/settings/oauth/index.html), on an allowed host."""
    field = "client_endpoint"
    parts, scheme, netloc = _portal_url(value, allowed_hosts, field, "https://<portal>.bitrix24.com/rest/")
    if parts.path.rstrip("/") != "/rest":
        raise InvalidConfig(field, "client_endpoint must be the portal's /rest/ address")
    return f"{scheme}://{netloc}/rest/"


def validate_outbound_token(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise InvalidConfig(
            "outbound_token", "outbound_token must be the portal's application token: 1-256 printable characters"
        )
    return value
