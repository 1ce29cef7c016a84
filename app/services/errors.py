"""The exception tree for everything that can go wrong talking to Bitrix24.

Every failure reaches callers as a ``Bitrix24Error`` subclass chosen by the *kind* of failure, so
callers (and our HTTP layer) decide by class, never by parsing text. The real Bitrix24 code and
description are kept on the exception. Classification follows Bitrix24's error codes
(https://apidocs.bitrix24.com/error-codes.html), including legacy CRM's habit of answering
``"error": ""`` with HTTP 400 and the reason in text only (for example
https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-get.html, "Error Handling").
"""

from __future__ import annotations

from typing import Any


class Bitrix24Error(Exception):
    """Base class. ``code``/``description`` are Bitrix24's (or ours for local failures);
    ``http_status`` is the status the portal answered with (None when no answer came); ``status``
    is the one our API answers with (``bx_call`` callers in a host view can use it too)."""

    status = 502  # what our API answers with

    default_code = "BITRIX24_ERROR"

    def __init__(
        self,
        description: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        method: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(description)
        self.code = code or self.default_code
        self.description = description
        self.http_status = http_status
        self.method = method
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        where = f" in {self.method}" if self.method else ""
        return f"{self.code}{where}: {self.description}"

    def __repr__(self) -> str:
        # Never includes the URL or params: they may hold the webhook secret.
        return (
            f"{type(self).__name__}(code={self.code!r}, description={self.description!r}, "
            f"http_status={self.http_status!r}, method={self.method!r})"
        )


class ConfigMissing(Bitrix24Error):
    """No usable webhook base for this client (none saved, no BITRIX_WEBHOOK_BASE, or invalid)."""

    status = 400  # what our API answers with

    default_code = "CONFIG_MISSING"


class BadInput(Bitrix24Error):
    """Bitrix24 refused the request because of what was sent (its 4xx about the caller's input)."""

    status = 400  # what our API answers with

    default_code = "BAD_REQUEST"


class NotFound(BadInput):
    """The record does not exist (legacy CRM: ``""`` + "Not found"; crm.item: ``NOT_FOUND``)."""

    status = 404  # what our API answers with

    default_code = "NOT_FOUND"


class MethodNotFound(Bitrix24Error):
    """The portal does not know the method (module missing, or a typo in a raw call)."""

    status = 502  # what our API answers with

    default_code = "ERROR_METHOD_NOT_FOUND"


class PortalAuthFailed(Bitrix24Error):
    """The portal rejected our credentials or their rights (401/403, scope, deleted portal...)."""

    status = 502  # what our API answers with

    default_code = "PORTAL_AUTH_FAILED"


class AppNotUsable(PortalAuthFailed):
    """App mode: the client's installation of our Bitrix24 app cannot make calls, and trying again
    will not help until someone acts (``code`` says what happened, the description what to do):

    - ``APP_REAUTHORIZATION_REQUIRED``: the OAuth server refused the refresh token (``invalid_grant``:
      unused for 180 days, or revoked); reinstall or reopen the app on the portal;
    - ``PAYMENT_REQUIRED``: the app's subscription or trial on the portal ended;
    - ``APP_UNINSTALLED``: the portal removed the app;
    - ``APP_NOT_INSTALLED``: no installation is linked to the client (or it is gone).

    No call reaches the portal or the OAuth server while it stands: no retry storm. Our API answers
    409 (the installation's state, not a passing failure: a client should not retry it).
    """

    status = 409  # what our API answers with
    default_code = "APP_NOT_USABLE"


class LimitExceeded(Bitrix24Error):
    """A Bitrix24 limit refused the call; ``retry_after`` says when trying again makes sense."""

    status = 429  # what our API answers with


class RateLimited(LimitExceeded):
    """503 ``QUERY_LIMIT_EXCEEDED``: the portal's leaky bucket is full."""

    default_code = "QUERY_LIMIT_EXCEEDED"


class OperatingLimit(LimitExceeded):
    """429 ``OPERATION_TIME_LIMIT``: the method used up its operating-time budget."""

    default_code = "OPERATION_TIME_LIMIT"


class ServerError(Bitrix24Error):
    """The portal failed (5xx) or answered something that is not a Bitrix24 envelope."""

    status = 502  # what our API answers with

    default_code = "PORTAL_ERROR"


class PortalMoved(ServerError):
    """The portal answered with a redirect: usually a renamed portal, see
    https://apidocs.bitrix24.com/settings/how-to-call-rest-api/change-domen.html"""

    default_code = "PORTAL_MOVED"


class TransportError(Bitrix24Error):
    """No answer: DNS, connection refused or reset, TLS. ``sent`` says whether the request may
    have reached the portal (decides whether a write may be retried)."""

    status = 502  # what our API answers with

    default_code = "PORTAL_UNREACHABLE"

    def __init__(self, description: str, *, sent: bool = True, **kwargs: Any) -> None:
        super().__init__(description, **kwargs)
        self.sent = sent


class PortalTimeout(TransportError):
    """The portal took longer than our timeout to answer."""

    status = 504  # what our API answers with

    default_code = "PORTAL_TIMEOUT"


class OutcomeUnknown(TransportError, ServerError):
    """A write that is not safe to repeat (an ``*.add``) may have been carried out: the connection
    broke after the request was sent, or the portal answered 5xx after the method may have run. Not
    retried (that is how duplicates are made); the caller should look before trying again. Still a
    ``TransportError`` / ``ServerError`` for code that catches those."""

    status = 502  # what our API answers with

    default_code = "OUTCOME_UNKNOWN"
    cause: Bitrix24Error | None = None  # the failure itself (a timeout, a reset, a 5xx)


_AUTH_CODES = frozenset(
    {
        "NO_AUTH_FOUND",
        "INVALID_CREDENTIALS",
        "EXPIRED_TOKEN",
        "INVALID_TOKEN",
        "INSUFFICIENT_SCOPE",
        "WRONG_AUTH_TYPE",
        "APPLICATION_NOT_FOUND",
        "AUTHORIZATION_ERROR",
        "USER_ACCESS_ERROR",
        "METHOD_CONFIRM_WAITING",
        "METHOD_CONFIRM_DENIED",
        "ACCESS_DENIED",
        "PORTAL_DELETED",
        "PAYMENT_REQUIRED",
        "INVALID_REQUEST",  # "Https required." on a webhook over http
    }
)


def classify(status: int, error: Any, description: Any, *, method: str | None, body: Any = None) -> Bitrix24Error:
    """Turn a Bitrix24 error answer into the matching exception.

    Codes and statuses: https://apidocs.bitrix24.com/error-codes.html (some codes, such as
    ``insufficient_scope`` and ``expired_token``, are lower-case, so compare case-insensitively).
    Legacy CRM answers an empty code with HTTP 400 and the reason only in the description, e.g.
    https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-get.html"""
    code = error if isinstance(error, str) else ""
    text = description if isinstance(description, str) else ""
    upper = code.upper()
    lowered = text.lower()
    kwargs: dict[str, Any] = {"http_status": status, "method": method, "body": body}

    if upper == "QUERY_LIMIT_EXCEEDED" or upper == "OVERLOAD_LIMIT":
        return RateLimited(text or "Too many requests", code=code, **kwargs)
    if upper == "OPERATION_TIME_LIMIT" or status == 429:
        return OperatingLimit(text or "Method is blocked due to operation time limit.", code=code or None, **kwargs)
    if upper == "ERROR_METHOD_NOT_FOUND":
        return MethodNotFound(text or "Method not found!", code=code, **kwargs)
    if upper in _AUTH_CODES or status in (401, 403) or (not code and lowered.startswith("access denied")):
        return PortalAuthFailed(text or "the portal rejected the credentials", code=code or None, **kwargs)
    if upper == "NOT_FOUND" or (not code and "not found" in lowered):
        return NotFound(text or "Not found", code=None, **kwargs)
    if status >= 500:
        return ServerError(text or f"the portal answered HTTP {status}", code=code or None, **kwargs)
    return BadInput(text or "the portal refused the request", code=code or None, **kwargs)
