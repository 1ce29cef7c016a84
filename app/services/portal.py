"""One portal's HTTP client: a pooled session, timeouts, no redirects, answers turned into results.

A ``PortalClient`` is shared by every call to one portal origin (scheme://host:port) in one app, so
keep-alive connections are reused. It never logs or raises with the webhook URL: the URL holds the
secret. What to retry and how fast to go are decided above it (see ``bitrix24_service``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .._version import __version__
from .errors import PortalMoved, PortalTimeout, ServerError, TransportError, classify
from .secrets import mask_url
from .wire import form_body

USER_AGENT = f"flask-bitrix24/{__version__} (+python-requests)"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.05
    read: float = 30.0  # Bitrix24 cloud stops a single request at 60 s; most answer in well under 1 s


class PortalClient:
    def __init__(self, origin: str, *, timeouts: Timeouts, pool_size: int = 10) -> None:
        self.origin = origin
        self.timeouts = timeouts
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # Ignore proxies and netrc from the environment: the webhook URL carries a secret.
        self.session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def call(self, base: str, method: str, params: Any = None) -> dict[str, Any]:
        """POST ``method`` with form-encoded ``params`` (or a ready ``EncodedForm``); return the
        decoded envelope or raise."""
        body = form_body(params)
        url = base + method + ".json"
        try:
            response = self.session.post(
                url,
                data=body.encode("utf-8"),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                timeout=(self.timeouts.connect, self.timeouts.read),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            raise PortalTimeout(
                f"could not connect to {self.origin} within {self.timeouts.connect} s", sent=False, method=method
            ) from None
        except requests.exceptions.Timeout:
            raise PortalTimeout(
                f"{self.origin} did not answer within {self.timeouts.read} s", sent=True, method=method
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise TransportError(
                f"could not reach {self.origin}: {_reason(exc)}", sent=_maybe_sent(exc), method=method
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"request to {self.origin} failed: {type(exc).__name__}", method=method) from None
        return self._envelope(response, method)

    def _envelope(self, response: requests.Response, method: str) -> dict[str, Any]:
        status = response.status_code
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("Location", ""))
            where = target.hostname or "an unknown address"
            raise PortalMoved(
                f"the portal answered {status} and points to {where}; if the portal was renamed, "
                "save the new webhook base for this client",
                http_status=status,
                method=method,
            )
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            raise ServerError(
                f"the portal answered HTTP {status} with something that is not a Bitrix24 JSON envelope",
                http_status=status,
                method=method,
            )
        if "error" in data or status >= 400:
            retry_after = _retry_after(response)
            error = classify(status, data.get("error"), data.get("error_description"), method=method, body=data)
            error.retry_after = retry_after
            raise error
        if "result" not in data:
            raise ServerError("the portal's answer has no 'result'", http_status=status, method=method)
        return data

    def close(self) -> None:
        self.session.close()


def _retry_after(response: requests.Response) -> float | None:
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None
    return None


def _reason(exc: Exception) -> str:
    # The exception text from urllib3 contains the full URL (and so the secret): keep only its class.
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
        "Connection aborted",
        "RemoteDisconnected",
        "certificate verify failed",
        "No route to host",
        "timed out",
    ):
        if marker in text:
            return marker
    return type(exc).__name__


def _maybe_sent(exc: Exception) -> bool:
    # Refused connections and DNS failures happen before a byte of the request leaves; anything
    # else (reset, remote closed) may come after the portal read it.
    text = str(exc)
    return not any(
        m in text
        for m in (
            "Connection refused",
            "Name or service not known",
            "No route to host",
            "Failed to resolve",
            "NewConnectionError",
            "nodename nor servname",
        )
    )


class PortalPool:
    """The app's ``PortalClient`` per origin, created on first use. Thread-safe."""

    def __init__(self, timeouts: Timeouts, pool_size: int = 10) -> None:
        self.timeouts = timeouts
        self.pool_size = pool_size
        self._clients: dict[str, PortalClient] = {}
        self._lock = threading.Lock()

    def for_base(self, base: str) -> PortalClient:
        parts = urlsplit(base)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            client = self._clients.get(origin)
            if client is None:
                client = self._clients[origin] = PortalClient(origin, timeouts=self.timeouts, pool_size=self.pool_size)
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


__all__ = ["PortalClient", "PortalPool", "Timeouts", "mask_url"]
