"""Many portals in one process: one WSGI app routing each request to its portal.

Each portal is a whole :class:`~bitrix24_emulator.emulator.Emulator`: its own domain, ``member_id``,
webhook user and secret, application token, records, request buckets (per client address) and
operating budget, and its own event handlers (events carry its domain, member_id and token). A
request reaches a portal

- by its ``Host`` header, as on the cloud, where every portal has its own domain
  (``portal-7.bitrix24.test``; the port, if any, is ignored), or, when the Host is no portal's,
- by the webhook secret in the path, so ``http://127.0.0.1:PORT/rest/1/demo7/`` reaches portal 7
  without any DNS set-up.

Secrets (and given application tokens or member ids) are numbered from a stem: portal 1 keeps the
stem itself (``demo``, so the single portal's usual base ``/rest/1/demo/`` still works), portal N adds
N (``demo2`` ... ``demo100``); a value with ``{n}`` in it is formatted instead. Domains must have
``{n}`` (default ``portal-{n}.bitrix24.test``).

An OAuth application (``app=``) exists on every portal and is installed on each on its own. Its calls
reach a portal by their token: ``/oauth/token/`` reaches the portal that issued the refresh token
whatever the Host, and ``/rest/<method>?auth=...`` the portal that issued the access token when the
Host is no portal's. ``/_emulator/install``, ``/_emulator/uninstall``, ``/_emulator/oauth``,
``/_emulator/changes`` and ``/_emulator/events`` need a portal's Host or ``?portal=N``. A portal renamed
with ``/_emulator/oauth`` answers at its new address, and at its old one with a redirect.

A request that reaches no portal is answered by a stray portal nobody has the secret of: 404 for an
unknown method, otherwise 401 ``INVALID_CREDENTIALS``, as a portal answers a secret it does not know
(an unknown token: ``invalid_token``, ``invalid_grant``).

``/_emulator/stats`` (not part of Bitrix24) shows one portal's counters when the Host is a portal's
or with ``?portal=N``; otherwise the total over all portals, with each portal's own under
``by_portal``.
"""

from __future__ import annotations

import io
import pickle
import time
import uuid
from collections import Counter
from urllib.parse import parse_qs

from werkzeug.wrappers import Request, Response

from . import controls, oauth
from .emulator import Emulator, create_emulator, read_params
from .phpjson import dumps

DEFAULT_DOMAIN = "portal-{n}.bitrix24.test"


def numbered(stem: str, n: int) -> str:
    """``demo`` for portal 1, ``demo2`` for portal 2...; ``x-{n}`` is formatted for every portal."""
    if "{n}" in stem:
        return stem.replace("{n}", str(n))
    return stem if n == 1 else f"{stem}{n}"


def host_name(environ) -> str:
    """The Host header without its port, lower-cased (IPv6 keeps its brackets)."""
    return oauth.host_name(environ.get("HTTP_HOST") or "")


class Portals:
    """A WSGI app serving ``portals`` (a list of :class:`Emulator`), routed by Host, then by secret."""

    def __init__(self, portals: list[Emulator]):
        if not portals:
            raise ValueError("at least one portal")
        self.portals = list(portals)
        self._by_domain: dict[str, Emulator] = {}  # a domain (with its port if it has one): its portal
        self._by_secret: dict[str, Emulator] = {}
        for portal in self.portals:
            if portal.domain:
                if portal.domain.lower() in self._by_domain:
                    raise ValueError(f"two portals have the domain {portal.domain}")
                self._by_domain[portal.domain.lower()] = portal
            if portal.secret in self._by_secret:
                raise ValueError(f"two portals have the webhook secret {portal.secret}")
            self._by_secret[portal.secret] = portal
            portal.oauth.on_rename = self._renamed
            portal.oauth.known_hosts = self._by_domain.keys
        first = self.portals[0].oauth
        # The stray knows the application too, to refuse its unknown tokens as a portal would.
        self.stray = Emulator(secret=uuid.uuid4().hex, limits=False, app=first.credentials,
                              access_ttl=first.access_ttl)

    def __len__(self) -> int:
        return len(self.portals)

    def portal(self, n: int) -> Emulator:
        """Portal ``n``, counting from 1."""
        if not 1 <= n <= len(self.portals):
            raise IndexError(f"portal {n}: there are portals 1..{len(self.portals)}")
        return self.portals[n - 1]

    def _renamed(self, portal: Emulator, new: str) -> None:
        """A portal is renamed (oauth.py): it answers at ``new`` from now on, and at its old domain too,
        with a redirect. Refused when another portal has that domain."""
        other = self._by_domain.get(new.lower())
        if other is not None and other is not portal:
            raise ValueError(f"portal {self.portals.index(other) + 1} has the domain {new}")
        self._by_domain[new.lower()] = portal

    def route(self, environ) -> Emulator | None:
        path = environ.get("PATH_INFO", "")
        if path in oauth.TOKEN_PATHS:
            # The authorization server is one for every portal: the refresh token says whose it is.
            return self._token_owner(environ, "refresh")
        host = (environ.get("HTTP_HOST") or "").strip().lower()
        portal = self._by_domain.get(host) or self._by_domain.get(host_name(environ))
        if portal is not None:
            return portal
        if path.startswith("/rest/"):
            segments = path[len("/rest/"):].split("/")
            if len(segments) >= 2:
                return self._by_secret.get(segments[1])
            return self._token_owner(environ, "access")
        if path == "/_emulator/stats" or path in oauth.ADMIN_PATHS or path in controls.PATHS:
            number = parse_qs(environ.get("QUERY_STRING", "")).get("portal", [""])[0]
            if number.isdigit() and 1 <= int(number) <= len(self.portals):
                return self.portals[int(number) - 1]
        return None

    def _token_owner(self, environ, kind: str) -> Emulator | None:
        """The portal that issued the request's access token (``kind="access"``) or refresh token."""
        request = Request(environ)
        data = request.get_data()
        # Put the body back for the portal that answers.
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        params = read_params(request)
        if kind == "access":
            token = oauth._token(params, request)
        else:
            token = params.get("refresh_token")
        if not isinstance(token, str):
            return None
        for portal in self.portals:
            if token in (portal.oauth.access if kind == "access" else portal.oauth.refresh):
                return portal
        return None

    def __call__(self, environ, start_response):
        portal = self.route(environ)
        if portal is not None:
            return portal(environ, start_response)
        if environ.get("PATH_INFO") == "/_emulator/stats":
            return Response(dumps(self.stats()), mimetype="application/json")(environ, start_response)
        if environ.get("PATH_INFO") in oauth.ADMIN_PATHS or environ.get("PATH_INFO") in controls.PATHS:
            body = {"error": "PORTAL_REQUIRED",
                    "error_description": "Name the portal: its domain as the Host, or ?portal=N"}
            return Response(dumps(body), status=400, mimetype="application/json")(environ, start_response)
        return self.stray(environ, start_response)

    # ---- state for tests, demos and benchmarks ------------------------------------------------------

    def stats(self) -> dict:
        """The counters summed over every portal, with each portal's own under ``by_portal``."""
        total: dict = {"portals": len(self.portals), "requests": 0, "by_status": Counter(), "by_method": Counter(),
                       "batch_commands": Counter(), "rate_limited": 0, "operating_limited": 0,
                       "operating_seconds": Counter(), "failed": 0, "dropped": 0, "connections": 0,
                       "oauth_refreshes": 0, "oauth_refresh_errors": 0, "events_dropped": 0, "portal_changes": 0,
                       "records": Counter(), "events_sent": 0, "apps_installed": 0, "offline_queued": 0}
        by_portal = []
        for n, portal in enumerate(self.portals, 1):
            with portal._lock:
                counters = portal.counters.as_dict()
                records = {**{k: len(v) for k, v in portal.records.items()},
                           **{f"DYNAMIC_{k}": len(v) for k, v in portal.items.items()}}
                sent = len(portal.events_sent)
                app = portal.oauth.stats()
                queues = portal.offline.stats()
            for key, value in counters.items():
                if isinstance(value, dict):
                    total[key].update(value)
                else:
                    total[key] += value
            total["records"].update(records)
            total["events_sent"] += sent
            total["apps_installed"] += app["installed"]
            queued = sum(q["rows"] for q in queues)
            total["offline_queued"] += queued
            by_portal.append({"portal": n, "domain": portal.domain, "member_id": portal.member_id,
                              "secret": portal.secret, **counters, "records": records, "events_sent": sent,
                              "app": app, "offline_queued": queued, "offline_queues": queues})
        for key in ("by_status", "by_method", "batch_commands", "records", "operating_seconds"):
            total[key] = dict(total[key])
        total["stray_requests"] = self.stray.counters.requests
        # Refreshes with a token no portal issued reached the stray: attempts all the same.
        total["oauth_refreshes"] += self.stray.counters.oauth_refreshes
        total["oauth_refresh_errors"] += self.stray.counters.oauth_refresh_errors
        total["by_portal"] = by_portal
        return total

    def reset(self) -> None:
        for portal in self.portals:
            portal.reset()
        self.stray.reset()

    def reset_counters(self) -> None:
        for portal in self.portals:
            portal.reset_counters()

    def wait_events(self, timeout: float = 5.0) -> bool:
        """Wait until every portal's queued events have been posted (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        return all(p.wait_events(max(0.0, deadline - time.monotonic())) for p in self.portals)


def create_portals(count: int = 100, *, domain: str = DEFAULT_DOMAIN, secret: str = "demo",
                   application_token: str | None = None, member_id: str | None = None, seed: int | None = None,
                   **options) -> Portals:
    """``count`` portals in one WSGI app (see the module docstring for how they are told apart).

    Every other option is :func:`create_emulator`'s and applies to each portal alike (``preload``
    fills each one; ``event_url`` is every portal's outbound webhook, their events told apart by
    ``auth[domain]``, ``auth[member_id]`` and ``auth[application_token]``). ``seed`` is portal 1's and
    portal N's is ``seed + N - 1``. ``start_server(portals)`` serves them all on one port.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    if count > 1 and "{n}" not in domain:
        raise ValueError("with several portals the domain must contain {n}, e.g. portal-{n}.bitrix24.test")
    preload = options.pop("preload", None)
    portals: list[Emulator] = []
    preloaded = None
    for n in range(1, count + 1):
        portal = create_emulator(
            domain=domain.replace("{n}", str(n)), secret=numbered(secret, n),
            application_token=numbered(application_token, n) if application_token else None,
            member_id=numbered(member_id, n) if member_id else None,
            seed=None if seed is None else seed + n - 1, preload=preload if n == 1 else None, **options)
        if preload and n == 1:
            preloaded = _store_data(portal.store)
        elif preloaded is not None:
            _load_store_data(portal.store, preloaded)
        portals.append(portal)
    return Portals(portals)


def _store_data(store) -> bytes:
    """The preloaded records of a CRM store (and its id counters), pickled once to give each portal its
    own copy: unpickling is some thirty times faster than adding the records one by one."""
    return pickle.dumps({name: value for name, value in vars(store).items()
                         if name == "records" or name.startswith("_next")}, protocol=pickle.HIGHEST_PROTOCOL)


def _load_store_data(store, data: bytes) -> None:
    for name, value in pickle.loads(data).items():
        setattr(store, name, value)
