"""The WSGI application: routing, the order of checks, limits, faults, envelopes and events."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from werkzeug.wrappers import Request, Response

from . import (
    catalog,
    controls,
    costs,
    errors,
    eventsapi,
    links,
    oauth,
    offline,
    productrows,
    system,
    tasks,
    userfields,
    users,
)
from .batch import run_batch
from .crm import CrmStore
from .errors import ApiError
from .events import EventSender, HandlerTable
from .fields import ENTITY_TYPE_NAMES
from .items import ItemStore, item_event
from .limits import AddressBuckets, OperatingBudget
from .phpform import assign_pairs, parse_str
from .phpjson import dumps
from .registry import Outcome, method_table, scope_table
from .values import Clock

ENTITIES = ("contact", "deal", "lead", "company", "activity", "item")
CRM_ACTIONS = ("add", "get", "update", "delete", "list", "fields")
CRM_METHODS = frozenset([f"crm.{e}.{a}" for e in ENTITIES for a in CRM_ACTIONS] + ["crm.duplicate.findbycomm"])
# Method families in modules of their own (registry.py says how one plugs in).
FAMILIES = (system, users, userfields, catalog, links, productrows, tasks, eventsapi)
FAMILY_OF = method_table(FAMILIES)
METHODS = CRM_METHODS | frozenset(FAMILY_OF) | {"profile", "batch"}
SCOPE_OF = scope_table(FAMILIES)
# Activities raise no events here; smart-process items raise ONCRMDYNAMICITEM*
# (https://apidocs.bitrix24.com/api-reference/crm/universal/events/on-crm-dynamic-item-add.html).
EVENT_NAMES = [f"ONCRM{e}{a}" for e in ("LEAD", "DEAL", "CONTACT", "COMPANY", "DYNAMICITEM")
               for a in ("ADD", "UPDATE", "DELETE")]
SERVER_ENDPOINT = "https://oauth.bitrix.info/rest/"


class ConnectionDropped(Exception):
    """Raised instead of dropping when there is no real socket (e.g. werkzeug.test.Client)."""


@dataclass
class Counters:
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_method: Counter = field(default_factory=Counter)
    batch_commands: Counter = field(default_factory=Counter)
    rate_limited: int = 0       # 503 QUERY_LIMIT_EXCEEDED
    operating_limited: int = 0  # 429 OPERATION_TIME_LIMIT (HTTP calls and batch commands)
    operating_seconds: Counter = field(default_factory=Counter)  # every second charged, by method
    failed: int = 0             # injected 500s
    dropped: int = 0            # connections closed with no response
    connections: int = 0        # TCP connections clients opened (distinct peer address and port)
    oauth_refreshes: int = 0    # grant_type=refresh_token requests to /oauth/token/ (oauth.py)
    oauth_refresh_errors: int = 0  # ... of them refused
    events_dropped: int = 0     # event posts lost on purpose (POST /_emulator/events, controls.py)
    portal_changes: int = 0     # records added, updated or deleted by POST /_emulator/changes

    def __getitem__(self, name):
        return getattr(self, name)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "by_status": dict(self.by_status),
                "by_method": dict(self.by_method), "batch_commands": dict(self.batch_commands),
                "rate_limited": self.rate_limited, "operating_limited": self.operating_limited,
                "operating_seconds": {k: round(v, 6) for k, v in self.operating_seconds.items()},
                "failed": self.failed, "dropped": self.dropped, "connections": self.connections,
                "oauth_refreshes": self.oauth_refreshes, "oauth_refresh_errors": self.oauth_refresh_errors,
                "events_dropped": self.events_dropped, "portal_changes": self.portal_changes}


class Emulator:
    """A Bitrix24 cloud portal's webhook REST API in one WSGI callable. See create_emulator()."""

    def __init__(self, *, user_id=1, secret="demo", rate=2.0, burst=50, operating_limit=480.0,
                 operating_window=600.0, cost_per_call=0.0, latency_ms=0, fail_rate=0.0, drop_rate=0.0,
                 drop_phase="random", fail_status=500, fail_phase="before",
                 event_url=None, application_token=None, domain=None, seed=None,
                 clock=time.time, limits=True, utc_offset_minutes=180, currency="RUB", user_fields=None,
                 event_timeout=3.0, member_id=None, auth_error_status=401, method_not_found_status=404, scopes=None,
                 time_scale=0.0,
                 batch_operating="methods", delete_missing_error="legacy", validate_email=True,
                 smart_processes=None, currency_check=True, app=None, access_ttl=3600.0,
                 offline_extended=True, auth_connectors=True, event_drop_rate=0.0, method_costs=None):
        if drop_phase not in ("random", "before", "after"):
            raise ValueError("drop_phase must be 'random', 'before' or 'after'")
        if fail_phase not in ("random", "before", "after") or fail_status not in (500, 503):
            raise ValueError("fail_phase must be 'random', 'before' or 'after'; fail_status 500 or 503")
        # An injected 503 is the rate limiter's answer, which always comes before the method runs;
        # a 500 may come after the write happened (a gateway timeout, a failing commit).
        self.fail_status = int(fail_status)
        self.fail_phase = "before" if self.fail_status == 503 else fail_phase
        if batch_operating not in ("methods", "batch"):
            raise ValueError("batch_operating must be 'methods' or 'batch'")
        self.user_id = int(user_id)
        self.secret = str(secret)
        self.cost_per_call = float(cost_per_call)
        self.latency_ms = float(latency_ms)
        self.fail_rate = float(fail_rate)
        self.drop_rate = float(drop_rate)
        self.drop_phase = drop_phase
        self.limits = bool(limits)
        # False: an unknown CURRENCY_ID is stored as legacy portals did (catalog.State.currency_valid).
        self.currency_check = bool(currency_check)
        self.domain = domain
        self.event_url = event_url
        self.auth_error_status = auth_error_status
        self.scopes = system.parse_scopes(scopes)  # the webhook's scopes (system.py); default: every one
        # Each call is charged the server time a portal would spend (costs.py); time_scale > 0 also
        # makes the answer take that long, scaled (1.0: as a portal would; 0: answer at once).
        self.time_scale = float(time_scale)
        # Methods with a server time of their own, {"crm.contact.update": 0.5} (costs.server_time).
        self.method_costs = {str(k).lower(): float(v) for k, v in (method_costs or {}).items()}
        self.method_not_found_status = method_not_found_status
        self.batch_operating = batch_operating
        self.utc_offset_minutes = utc_offset_minutes
        identity = f"bitrix24-emulator:{self.user_id}:{self.secret}"
        self.member_id = member_id or hashlib.md5(identity.encode()).hexdigest()
        self.application_token = application_token or hashlib.md5((identity + ":token").encode()).hexdigest()
        # Bound event handlers (events.py): event_url is the portal's outbound webhook, bound to every
        # event the portal raises (the CRM ones up front, so their event_handler_ids are 1..15).
        self.handlers = HandlerTable(event_url, EVENT_NAMES)
        self.clock = Clock(clock, utc_offset_minutes)
        self._now = clock
        self._lock = threading.RLock()
        self._owed = threading.local()  # server time a request still has to spend (see _take)
        self._peers: set[tuple] = set()  # (address, port) of every connection seen
        self._seed = seed
        self._random = random.Random(seed)
        self.store = CrmStore(self.clock, user_id=self.user_id, currency=currency, user_fields=user_fields,
                              validate_email=validate_email, delete_missing_error=delete_missing_error)
        self.store.family_state = self.state  # links and product rows follow CRM records (crm.py)
        self.item_store = ItemStore(self.clock, smart_processes, user_id=self.user_id, currency=currency,
                                    user_fields=user_fields, portal=self)  # types 1-4 over self.store
        self.bucket = AddressBuckets(float(rate), float(burst), clock)  # per client address (limits.py)
        self.budget = OperatingBudget(float(operating_limit), float(operating_window), clock)
        self.counters = Counters()
        self.events_sent: list[dict] = []
        self._sender = EventSender(event_timeout, self._record_event)  # its thread starts with the first event
        self._family_states: dict[str, object] = {}
        # The OAuth application (app=(client_id, client_secret)): install, tokens, /oauth/token/ (oauth.py).
        self.oauth = oauth.OAuth(self, app, access_ttl)
        # The portal plan's features (https://apidocs.bitrix24.com/api-reference/common/system/feature-get.html):
        # clear=0 in event.offline.get, and auth_connector in any call with a token (Professional and up).
        self.features = {"rest_offline_extended": bool(offline_extended), "rest_auth_connector": bool(auth_connectors)}
        # Push deliveries lost on purpose (controls.py): this fraction of event posts is never sent.
        self.event_drop_rate = controls.drop_rate(event_drop_rate)
        self._drop_random = random.Random(seed)
        self._changes_random = random.Random(seed)  # /_emulator/changes' picks without a seed of their own

    # ---- state for tests --------------------------------------------------------------------------

    @property
    def records(self) -> dict[str, dict[int, dict]]:
        return self.store.records

    @property
    def items(self) -> dict[int, dict[int, dict]]:
        """Smart-process items by entityTypeId, then id."""
        return self.item_store.records

    def reset(self) -> None:
        """Forget records, counters, limiter state and event history (queued events are dropped)."""
        self._sender.discard_pending()
        with self._lock:
            self.store.reset()
            self.item_store.reset()
            self._family_states.clear()
            self.bucket.reset()
            self.budget.reset()
            self.counters = Counters()
            self.events_sent.clear()
            self._random = random.Random(self._seed)

    @property
    def offline(self) -> offline.State:
        """The portal's offline event queues (offline.py)."""
        return self.state(offline)

    def state(self, family):
        """The per-portal state of a method family (its ``State(portal)``, made on first use)."""
        state = self._family_states.get(family.__name__)
        if state is None:
            state = self._family_states[family.__name__] = family.State(self)
        return state

    def reset_counters(self) -> None:
        """Start the request counters over (records and limits are kept): tests count what came after."""
        with self._lock:
            self.counters = Counters()

    def finish_hit(self, context: dict | None = None) -> None:
        """End a hit, as the portal does after each request: ONOFFLINEEVENT goes to the applications that
        had offline rows queued meanwhile (``context``: the request's ``host`` and ``scheme``). Requests
        end their hits themselves; call this after ``emit()`` outside a request."""
        with self._lock:
            bindings = self.offline.due_notifications(self.handlers.online_of_apps("ONOFFLINEEVENT"))
            for binding in bindings:
                pairs = [("event", "ONOFFLINEEVENT"), ("event_handler_id", str(binding.id)),
                         ("ts", str(int(self._now())))]  # data: empty (on-offline-event.html)
                auth = self._event_auth(binding, context or {}, refresh=True)
                if auth is not None:
                    self._deliver(binding.handler, pairs + auth)

    def wait_events(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event has been posted (or failed); False on timeout."""
        return self._sender.wait(timeout)

    def bind_event(self, event: str, handler: str, *, auth_type: int = 0) -> int:
        """Bind ``handler`` to ``event`` as the portal's outbound webhook (set up by an administrator
        in the portal, not over REST: a webhook may not call event.bind); returns its event_handler_id."""
        with self._lock:
            return self.handlers.bind(event, handler, user_id=auth_type).id

    def unbind_event(self, event: str | None = None, handler: str | None = None) -> int:
        """Remove outbound-webhook bindings matching ``event`` and ``handler`` (None: any); returns how many."""
        with self._lock:
            return self.handlers.unbind(event, handler)

    def event_handlers(self) -> list[dict]:
        """Every binding in event.get's shape, the outbound webhook's and applications' alike."""
        with self._lock:
            return [b.listed() for b in self.handlers.bindings()]

    # ---- WSGI -------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        self._owed.figures = []  # figures a request still has to fill in are its own (_settle_figures)
        request = Request(environ)
        started = self._now()
        path = request.path
        if path == "/_emulator/stats":
            # Not part of Bitrix24: lets benchmarks and demos read the counters of a running emulator.
            with self._lock:
                records = {**{k: len(v) for k, v in self.records.items()},
                           **{f"DYNAMIC_{k}": len(v) for k, v in self.items.items()}}
                stats = {"member_id": self.member_id, "domain": self.domain, **self.counters.as_dict(),
                         "records": records, "events_sent": len(self.events_sent), "app": self.oauth.stats(),
                         "offline_queued": self.offline.size(), "offline_queues": self.offline.stats()}
            return Response(dumps(stats), mimetype="application/json")(environ, start_response)
        answer = controls.answer(self, request)  # /_emulator/changes, /_emulator/events
        if answer is None:
            answer = self.oauth.answer(request)  # /oauth/token/, /_emulator/install..., a renamed portal's 302
        if answer is not None:
            return answer(environ, start_response)
        if not path.startswith("/rest/"):
            return Response("Not found", status=404, mimetype="text/plain")(environ, start_response)
        segments = path[len("/rest/"):].split("/")
        method = segments[-1].lower()
        if method.endswith(".json"):
            method = method[: -len(".json")]
        peer = (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))
        with self._lock:
            if peer not in self._peers:
                self._peers.add(peer)
                self.counters.connections += 1
            self.counters.requests += 1
            self.counters.by_method[method] += 1
            fault = self._draw_fault()
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        if fault == "drop-before":
            return self._drop(environ, start_response)
        params = read_params(request)
        try:
            try:
                with self._lock:
                    try:
                        body = self._handle(method, segments, params, request, started, fault)
                    finally:
                        self.finish_hit({"host": request.host, "scheme": request.scheme})
            finally:
                self._settle_owed()  # the modelled server time, outside the lock: others are served meanwhile
                self._settle_figures()
            status = 200
        except ApiError as err:
            body, status = err.body(), err.status
        if fault == "fail-after" and status == 200:
            with self._lock:
                self.counters.failed += 1
            body, status = errors.internal_error().body(), 500
        if fault == "drop-after":
            return self._drop(environ, start_response)
        with self._lock:
            self.counters.by_status[status] += 1
        return self._respond(body, status, started)(environ, start_response)

    def _draw_fault(self) -> str | None:
        if self.drop_rate and self._random.random() < self.drop_rate:
            phase = self.drop_phase
            if phase == "random":
                phase = self._random.choice(["before", "after"])
            return f"drop-{phase}"
        if self.fail_rate and self._random.random() < self.fail_rate:
            phase = self.fail_phase
            if phase == "random":
                phase = self._random.choice(["before", "after"])
            return f"fail-{phase}"
        return None

    def _drop(self, environ, start_response):
        with self._lock:
            self.counters.dropped += 1
        sock = environ.get("werkzeug.socket")
        if sock is None:
            raise ConnectionDropped("connection dropped by the emulator (drop_rate)")
        try:
            # Close both directions so the client reads EOF instead of a response; the server's
            # own write then fails with a broken pipe, which Werkzeug treats as a dropped client.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        start_response("500 Connection dropped", [("Content-Length", "0"), ("Connection", "close")])
        return [b""]

    def _respond(self, body: dict, status: int, started: float) -> Response:
        response = Response(dumps(body), status=status, content_type="application/json; charset=utf-8")
        elapsed = f"{max(self._now() - started, 0.0):.6f}"
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["X-Bitrix-Rest-Time"] = elapsed
        response.headers["X-Bitrix-Rest-User-Time"] = elapsed
        response.headers["X-Bitrix-Rest-System-Time"] = "0"
        return response

    # ---- the order of checks (the portal's source, modules/rest/classes/general/rest.php) ----------

    def _handle(self, method, segments, params, request, started, fault) -> dict:
        if len(segments) == 2 or method not in METHODS:
            # Unknown method (or the user id left out of the URL): 404 before any auth check.
            raise errors.method_not_found(self.method_not_found_status)
        if len(segments) == 1:
            # /rest/method with an application's access token (oauth.py).
            context = self.oauth.authenticate(method, params, request)
        elif len(segments) != 3 or segments[0] != str(self.user_id) or segments[1] != self.secret:
            raise errors.invalid_credentials(self.auth_error_status)
        else:
            context = {"auth_type": "webhook", "scopes": self.scopes}
        if not system.allowed(method, context["scopes"]):
            raise system.insufficient_scope(self.auth_error_status, context["auth_type"])
        if context.get("auth_connector_given") and not self.features["rest_auth_connector"]:
            # CRestServer::checkAuth: a token's call naming a source key on a plan without them.
            raise offline.wrong_license("auth_connector")
        if self.limits and not self.bucket.try_acquire(request.remote_addr):
            self.counters.rate_limited += 1
            raise errors.query_limit()
        if fault == "fail-before":
            self.counters.failed += 1
            raise errors.query_limit() if self.fail_status == 503 else errors.internal_error()
        limited = self.limits and (method != "batch" or self.batch_operating == "batch")
        if limited and self.budget.blocked(method):
            self.counters.operating_limited += 1
            raise errors.operation_time_limit()
        context = {"host": request.host, "scheme": request.scheme, **context}
        tick = time.perf_counter()
        commands = 0
        modelled = 0.0
        if method == "batch":
            def execute(name, query):
                nonlocal commands, modelled
                commands += 1
                result = self._batch_command(name, query, context)
                modelled += result[4]
                return result[:4]
            outcome = Outcome(run_batch(params, execute))
        else:
            outcome = self._call(method, params, context)
            modelled = costs.server_time(method, params, outcome.total, self.method_costs)
            self._take(modelled)
        processing = max(time.perf_counter() - tick, modelled)
        finish = self._server_now()
        if limited:
            # What a portal charges is the run time it reports (processing): a cost per call set on the
            # emulator is run time too, and shows in processing like the rest.
            charged = self.budget.charge_for(self.cost_per_call * max(commands, 1), processing)
            self._charge(method, charged, finish)
            processing = max(processing, charged)
        body = {"result": outcome.result}
        if outcome.next is not None:
            body["next"] = outcome.next
        if outcome.total is not None:
            body["total"] = outcome.total
        # A portal's processing is its server's time on the method (a batch's is its commands' sum).
        body["time"] = self._time(method, started, processing, finish)
        return body

    def _server_now(self) -> float:
        """The portal's time as its server sees it: ahead of the clock by the modelled time this request
        has spent so far (slept only once the answer is ready, see _take), so that each command of a
        batch finishes, and is charged, when it would on a portal: one after another."""
        return self._now() + getattr(self._owed, "seconds", 0.0)

    def _time(self, method: str, started: float, processing: float, finish: float | None = None) -> dict:
        finish = self._now() if finish is None else finish
        info = {"start": started, "finish": finish, "duration": finish - started, "processing": processing,
                "date_start": self.clock.iso(started), "date_finish": self.clock.iso(finish)}
        if self.limits:
            # A portal records a call when it ends: these figures count what had ended by this one's finish,
            # requests that arrived after this one included. They are filled in once that moment has come
            # (_settle_figures, after the modelled time is slept), not when the emulator worked it out.
            info.update(self.budget.time_keys(method, finish))
            pending = getattr(self._owed, "figures", None)
            if pending is None:
                pending = self._owed.figures = []
            pending.append((info, method, finish))
        return info

    def _batch_command(self, name: str, query: dict, context: dict):
        method = name.lower()
        if method.endswith(".json"):
            method = method[: -len(".json")]
        if method == "batch":
            raise errors.batch_method_not_allowed()
        if method not in METHODS:
            raise errors.method_not_found(self.method_not_found_status)
        # Each command is checked against the scopes, as the outer call is
        # (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html).
        if not system.allowed(method, context.get("scopes", self.scopes)):
            raise system.insufficient_scope(self.auth_error_status, context.get("auth_type", "webhook"))
        self.counters.batch_commands[method] += 1
        if context.get("auth_type") == "oauth":
            query.pop("auth_connector", None)  # a command's own is taken off and ignored: the batch's applies
        per_method = self.limits and self.batch_operating == "methods"
        started = self._server_now()
        if per_method and self.budget.blocked(method, started):
            self.counters.operating_limited += 1
            raise errors.operation_time_limit()
        tick = time.perf_counter()
        outcome = self._call(method, query, context)
        modelled = costs.server_time(method, query, outcome.total, self.method_costs)
        self._take(modelled)
        processing = max(time.perf_counter() - tick, modelled)
        finish = self._server_now()
        if per_method:
            charged = self.budget.charge_for(self.cost_per_call, processing)
            self._charge(method, charged, finish)
            processing = max(processing, charged)
        timing = self._time(method, started, processing, finish)
        return outcome.result, outcome.total, outcome.next, timing, modelled

    def _charge(self, method: str, seconds: float, at: float | None = None) -> None:
        """Charge ``seconds`` to the method's operating budget at ``at`` (the call's end; default now), and
        count them for the stats."""
        self.budget.record(method, seconds, at)
        if seconds > 0:
            self.counters.operating_seconds[method] += seconds

    def _take(self, seconds: float) -> None:
        """Answer as slowly as a portal would, scaled by ``time_scale`` (0: at once). The time is owed, not
        slept here: the request sleeps it once its work is done and the emulator's lock is let go
        (``_settle_owed``), because a portal's server works on several requests at once (its PHP workers);
        only the bucket and the operating budget limit how many, not one request waiting for another."""
        if self.time_scale > 0 and seconds > 0:
            self._owed.seconds = getattr(self._owed, "seconds", 0.0) + seconds * self.time_scale

    def _settle_figures(self) -> None:
        pending = getattr(self._owed, "figures", None)
        self._owed.figures = []
        if pending and self.time_scale > 0:
            with self._lock:
                for info, method, finish in pending:
                    info.update(self.budget.time_keys(method, finish))

    def _settle_owed(self) -> None:
        owed = getattr(self._owed, "seconds", 0.0)
        self._owed.seconds = 0.0
        if owed > 0:
            time.sleep(owed)

    # ---- methods ----------------------------------------------------------------------------------

    def _call(self, method: str, params: dict, context: dict) -> Outcome:
        if method == "profile":
            return Outcome(self._profile())
        family = FAMILY_OF.get(method)
        if family is not None:
            result = family.call(method, params, self, context)
            return result if isinstance(result, Outcome) else Outcome(result)
        if method == "crm.duplicate.findbycomm":
            return Outcome(self.store.find_by_comm(params))
        _, entity, action = method.split(".")
        if entity == "item":
            return self._call_item(action, params, context)
        store = self.store
        if action == "fields":
            return Outcome(store.describe_fields(entity))
        if action == "get":
            return Outcome(store.get(entity, params))
        if action == "list":
            rows, total, following = store.list(entity, params)
            return Outcome(rows, total, following)
        if action == "add":
            new_id = store.add(entity, params)
            self._emit(entity, "ADD", new_id, context)
            return Outcome(new_id)
        if action == "update":
            entity_id = store.update(entity, params)
            self._emit(entity, "UPDATE", entity_id, context)
            return Outcome(True)
        entity_id = store.delete(entity, params)
        self._emit(entity, "DELETE", entity_id, context)
        return Outcome(True)

    def _call_item(self, action: str, params: dict, context: dict) -> Outcome:
        items = self.item_store
        if action == "fields":
            return Outcome(items.describe_fields(params))
        if action == "get":
            return Outcome(items.get(params))
        if action == "list":
            page, total, following = items.list(params)
            return Outcome(page, total, following)
        if action == "delete":
            type_id, item_id = items.delete(params)
            self._emit_item(type_id, "DELETE", item_id, context)
            # An empty PHP array (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-delete.html).
            return Outcome([])
        type_id, item_id, result = items.add(params) if action == "add" else items.update(params)
        self._emit_item(type_id, action.upper(), item_id, context)
        return Outcome(result)

    def _profile(self) -> dict:
        return {"ID": str(self.user_id), "ADMIN": True, "NAME": "Demo", "LAST_NAME": "Administrator",
                "PERSONAL_GENDER": "", "PERSONAL_PHOTO": "", "TIME_ZONE": "",
                "TIME_ZONE_OFFSET": self.utc_offset_minutes * 60}

    # ---- events (https://apidocs.bitrix24.com/api-reference/events/index.html) --------------------

    def _emit(self, entity: str, action: str, entity_id: int, context: dict) -> None:
        if entity in ENTITY_TYPE_NAMES:
            self._post_event(f"ONCRM{ENTITY_TYPE_NAMES[entity]}{action}", [("data[FIELDS][ID]", str(entity_id))],
                             context)

    def _emit_item(self, entity_type_id: int, action: str, item_id: int, context: dict) -> None:
        self._post_event(*item_event(entity_type_id, action, item_id), context)  # items.py names it

    def emit(self, name: str, data: list[tuple[str, str]], context: dict) -> None:
        """Post ``name`` with ``data`` pairs (``("data[FIELDS][ID]", "5")``) to the event handler."""
        self._post_event(name, data, context)

    def _post_event(self, name: str, data: list[tuple[str, str]], context: dict) -> None:
        """Queue ``name`` once for each handler bound to it, each with its own event_handler_id. The
        application's own bindings (event.bind over OAuth) get its auth with a fresh access token, and
        nothing while its installation is not finished (oauth.py). Offline bindings get a row in their
        queue instead (offline.py)."""
        for binding in self.handlers.handlers_for(name):
            pairs = [("event", name), ("event_handler_id", str(binding.id)), *data, ("ts", str(int(self._now())))]
            auth = self._event_auth(binding, context)
            if auth is not None:
                self._deliver(binding.handler, pairs + auth)
        offline_bindings = self.handlers.offline_for(name)
        if offline_bindings:
            self.offline.record(offline_bindings, name, data, context,
                                lambda b: not self.oauth.owns(b) or self.oauth.installed)

    def _event_auth(self, binding, context: dict, refresh: bool = False) -> list[tuple[str, str]] | None:
        """The ``auth[...]`` pairs of an event posted to ``binding``; None: not sent (an application whose
        installation is not finished)."""
        if self.oauth.owns(binding):
            return self.oauth.event_auth(refresh=refresh)
        domain = self.domain or context.get("host") or "localhost"
        scheme = "https" if self.domain else context.get("scheme", "http")
        return [
            ("auth[domain]", domain),
            ("auth[client_endpoint]", f"{scheme}://{domain}/rest/"),
            ("auth[server_endpoint]", SERVER_ENDPOINT),
            ("auth[member_id]", self.member_id),
            ("auth[application_token]", self.application_token),
        ]

    def _deliver(self, url: str, pairs: list[tuple[str, str]]) -> None:
        """Hand one event post to the sender, or lose it on purpose (``event_drop_rate``, controls.py):
        a dropped post is counted and logged in ``events_sent`` with ``dropped: True``, never sent."""
        if self.event_drop_rate and (self.event_drop_rate >= 1 or self._drop_random.random() < self.event_drop_rate):
            self.counters.events_dropped += 1
            self.events_sent.append({"event": dict(pairs).get("event"), "url": url, "payload": dict(pairs),
                                     "status": None, "ok": False, "error": "dropped by the emulator",
                                     "dropped": True})
            return
        self._sender.enqueue(url, pairs)

    def _record_event(self, url, pairs, status, error) -> None:
        payload = dict(pairs)
        entry = {"event": payload["event"], "url": url, "payload": payload, "status": status,
                 "ok": status is not None and 200 <= status < 300, "error": error}
        with self._lock:
            self.events_sent.append(entry)


def read_params(request: Request) -> dict:
    """getRequestData: query and body merged, body wins at the top level (array_replace)."""
    query = parse_str(request.environ.get("QUERY_STRING", ""))
    body: dict = {}
    if request.method not in ("GET", "HEAD"):
        mimetype = request.mimetype
        if mimetype == "application/json":
            try:
                decoded = json.loads(request.get_data() or b"null")
            except ValueError:
                decoded = None  # invalid JSON is silently treated as {}
            if isinstance(decoded, dict):
                body = decoded
            elif isinstance(decoded, list):
                body = {str(i): v for i, v in enumerate(decoded)}
        elif mimetype == "multipart/form-data":
            body = assign_pairs(request.form.items(multi=True))
        else:
            body = parse_str(request.get_data())
    return {**query, **body}


def create_emulator(*, preload: dict[str, int] | None = None, **options) -> Emulator:
    """Build an emulator; the returned object is the WSGI app and exposes its state.

    ``preload={"contact": 100_000}`` fills the store with that many simple records first (no
    events, no limits), for demos and benchmarks of large portals. ``smart_processes={128: "Projects"}``
    (the default) names the smart processes ``crm.item.*`` serves; ``user_fields={128: ["ufCrm128_X"]}``
    gives one of them user fields, as ``user_fields={"contact": ["UF_CRM_X"]}`` does for contacts.
    """
    emu = Emulator(**options)
    for entity, count in (preload or {}).items():
        with emu._lock:
            for i in range(count):
                emu.store.add(entity, {"fields": {"NAME": f"Preloaded {i}", "LAST_NAME": f"#{i}",
                                                  "TITLE": f"Preloaded {entity} {i}"}})
    return emu
