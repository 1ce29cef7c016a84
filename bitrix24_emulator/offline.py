"""The offline event queue of one portal: what ``event.bind`` with ``event_type=offline`` collects and
``event.offline.get/clear/error/list`` hand out (https://apidocs.bitrix24.com/api-reference/events/offline-events.html).

**Queues.** Each (application, ``auth_connector``) pair that bound an event offline has its own queue
("a separate queue tied to a specific data exchange channel"). An event the portal raises is queued for
every offline binding of its name, unless the call that caused it came from the same application with
the same ``auth_connector`` as the queue's (both empty included): an application's own changes never
come back to it on the same channel (the "How to Avoid Cycles" section of the page above). Changes
made over a webhook or by a person in the portal are always queued. Nothing is queued for an
application whose installation is not finished, as no event reaches it before
(https://apidocs.bitrix24.com/settings/app-installation/installation-finish.html).

**Rows.** A row is ``ID``, ``TIMESTAMP_X`` (seconds), ``EVENT_NAME``, ``EVENT_DATA`` (the event's
``data``, e.g. ``{"FIELDS": {"ID": "5"}}``), ``EVENT_ADDITIONAL`` (``{"user_id": "1"}``: the user
behind the change), ``MESSAGE_ID`` = md5(EVENT_NAME + "|" + JSON of EVENT_DATA), ``PROCESS_ID``
(``""``: not reserved) and ``ERROR``. Rows are upserted on (MESSAGE_ID, application, connector,
PROCESS_ID): a change to an object whose unreserved row exists refreshes its TIMESTAMP_X and data and
keeps its ID, so an unreserved queue holds one row per event name and object ("If the same deal is
modified 1000 times, only one record with the timestamp of the last change will remain"); a change to
an object whose row is reserved by a batch makes a new unreserved row
(https://apidocs.bitrix24.com/api-reference/events/event-offline-get.html, MESSAGE_ID).

**Batches.** ``event.offline.get`` without ``process_id`` reserves up to ``limit`` unreserved rows
(filter, order) for a new 32-character process and returns them; ``clear=1`` (the default) then deletes
the whole batch and answers ``process_id: null``; ``clear=0`` keeps it reserved (hidden from other
callers, so parallel calls get disjoint rows) and answers its ``process_id``. With ``process_id`` the
method reserves nothing: it reads that batch again (and with ``clear=1`` deletes all of it, rows past
``limit`` too). ``event.offline.clear`` deletes a batch, or the rows of it named by ``message_id`` or
``id``. ``event.offline.error`` moves the rows of a batch named by ``message_id`` back out of it marked
``ERROR=1`` (dropping the same objects' rows outside the batch), where only ``error=1`` reads them.
Reserved rows are forgotten once their TIMESTAMP_X is ``PROCESS_ID_LIFETIME`` old ("The reserved batch is
stored for up to 30 days and is then automatically deleted").

**ONOFFLINEEVENT.** At the end of each request (a "hit") in which rows were queued for an application,
each of its ONOFFLINEEVENT bindings is notified unless it was notified less than ``minTimeout`` seconds
(default 1) ago; ``minTimeout=0`` allows one notification per hit
(https://apidocs.bitrix24.com/api-reference/events/on-offline-event.html). The emulator posts them
(emulator.py); this module decides which.

The semantics of filter, order, reservation and error marking follow the portal's source
(modules/rest/lib/api/event.php, modules/rest/lib/eventoffline.php, modules/rest/lib/event/provideroffline.php).
Every method works under the portal's lock (taken here too, so direct calls are safe).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import re
import secrets
import string
import sys
from collections import OrderedDict
from dataclasses import dataclass

from .errors import ApiError
from .phpform import array_items, assign_pairs, is_array, php_int, php_string, split_name
from .phpjson import dumps
from .registry import Outcome

PROCESS_ID_LIFETIME = 2_952_000  # seconds, the portal's EventOfflineTable::PROCESS_ID_LIFETIME
LIST_PAGE = 50  # event.offline.list's fixed page, and event.offline.get's default limit
GET_FIELDS = ("ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID")
LIST_FIELDS = (*GET_FIELDS, "PROCESS_ID", "ERROR")
OPERATIONS = ("", "=", ">", "<", ">=", "<=", "@", "%")
DEFAULT_MIN_TIMEOUT = 1
_OPERATION = re.compile(r"^([^a-zA-Z]*)(.*)$", re.DOTALL)
_PROCESS_CHARS = string.ascii_lowercase + string.digits


def wrong_license(feature: str) -> ApiError:
    """A feature the portal's plan lacks (https://apidocs.bitrix24.com/api-reference/events/event-offline-get.html)."""
    return ApiError("WRONG_LICENSE", f"This feature is not enabled for the current license: {feature}", 403)


def _argument(message: str, name: str) -> ApiError:
    return ApiError("ERROR_ARGUMENT", message, 400, argument=name)


def _wrong_request(message: str) -> ApiError:
    return ApiError("ERROR_ARGUMENT", message, 400)


class Row:
    """One queued event. ``pairs`` keeps the event's ``data`` as the form pairs it was raised with
    (compact: a queue of 100,000 objects stays small); EVENT_DATA is built from them when read."""

    __slots__ = ("id", "ts", "seq", "name", "pairs", "user", "message_id", "process_id", "error")

    def __init__(self, row_id, ts, seq, name, pairs, user, message_id):
        self.id = row_id
        self.ts = ts
        self.seq = seq  # the portal-wide order of writes: rows of one TIMESTAMP_X second come in it
        self.name = name
        self.pairs = pairs
        self.user = user
        self.message_id = message_id
        self.process_id = ""
        self.error = 0

    def data(self):
        return event_data(self.pairs)

    def shown(self, clock, listing: bool) -> dict:
        row = {"ID": str(self.id), "TIMESTAMP_X": clock.iso(self.ts), "EVENT_NAME": self.name,
               "EVENT_DATA": self.data(), "EVENT_ADDITIONAL": {"user_id": self.user},
               "MESSAGE_ID": self.message_id}
        if listing:
            row["PROCESS_ID"] = self.process_id
            row["ERROR"] = str(self.error)
        return row


_PATHS: dict[str, list | None] = {}  # "data[FIELDS][ID]": ["FIELDS", "ID"] (None: not a plain path)


def event_data(pairs) -> dict:
    """An event's ``data`` from its ``data[...]`` form pairs, as PHP would rebuild the array."""
    data: dict = {}
    for name, value in pairs:
        path = _PATHS.get(name, False)
        if path is False:
            parts = split_name(name)
            path = _PATHS[name] = parts[1:] if parts and parts[0] == "data" and None not in parts else None
        if not path:
            return assign_pairs(pairs).get("data", {})  # a shape the shortcut does not know
        target = data
        for key in path[:-1]:
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            target = child
        target[path[-1]] = value
    return data


def message_id(name: str, data) -> str:
    """md5(EVENT_NAME + "|" + JSON(EVENT_DATA)), as the portal keys a row."""
    return hashlib.md5(f"{name}|{dumps(data)}".encode()).hexdigest()


@dataclass(eq=False)
class Queue:
    """The rows of one (application, connector) queue, by process (``""``: unreserved), then MESSAGE_ID."""

    app_id: object
    connector: str

    def __post_init__(self):
        # The unreserved rows in an OrderedDict: batches are taken from its front, and a plain dict
        # would walk every slot freed before the rows still there.
        self.by_process: dict[str, dict[str, Row]] = {"": OrderedDict()}
        # The unreserved rows are kept in the order they were last written; while the clock never went
        # back, that is TIMESTAMP_X order for the unmarked ones, and a default get takes its first rows
        # without sorting the queue.
        self.in_order = True
        self._last_written = (0, 0)

    def write(self, row: Row) -> None:
        """Put a new or refreshed unreserved row last."""
        rows = self.by_process[""]
        if rows.get(row.message_id) is row:
            rows.move_to_end(row.message_id)
        else:
            rows[row.message_id] = row
        if not row.error:
            key = (row.ts, row.seq)
            if key < self._last_written:
                self.in_order = False
            self._last_written = key

    def process(self, process_id: str) -> dict[str, Row]:
        return self.by_process.get(process_id, {})

    def rows(self):
        for rows in self.by_process.values():
            yield from rows.values()

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.by_process.values())

    def counts(self) -> dict:
        reserved = sum(len(rows) for pid, rows in self.by_process.items() if pid)
        errors = sum(1 for r in self.by_process[""].values() if r.error)
        return {"rows": len(self), "reserved": reserved, "errors": errors}

    def put(self, row: Row, process_id: str) -> None:
        """File ``row`` under ``process_id``; a row already there for its MESSAGE_ID takes its data
        (the upsert key's collision, see mark_error)."""
        rows = self.by_process.setdefault(process_id, {})
        existing = rows.get(row.message_id)
        if existing is not None and existing is not row:
            existing.ts, existing.pairs, existing.user = row.ts, row.pairs, row.user
            return
        row.process_id = process_id
        rows[row.message_id] = row

    def remove(self, row: Row) -> None:
        rows = self.by_process.get(row.process_id)
        if rows is not None and rows.get(row.message_id) is row:
            del rows[row.message_id]
            if not rows and row.process_id:
                del self.by_process[row.process_id]

    def drop_process(self, process_id: str, keep=None) -> None:
        """Delete a batch (``keep(row)`` True: spared)."""
        rows = self.by_process.get(process_id)
        if not rows:
            return
        for row in list(rows.values()):
            if keep is None or not keep(row):
                self.remove(row)


class State:
    """The offline queues of one portal (``portal.offline``)."""

    def __init__(self, portal):
        self.portal = portal
        self.queues: dict[tuple, Queue] = {}
        self._next_id = 1
        self._seq = 0
        self._touched: set = set()  # applications that had a row queued in the current hit
        self._sent_at: dict[int, float] = {}  # ONOFFLINEEVENT binding id: when it was last notified
        self._users: dict[int, str] = {}  # user id strings, shared by every row

    # ---- filling the queue ----------------------------------------------------------------------

    def record(self, bindings, name: str, pairs: list[tuple[str, str]], context: dict, deliverable) -> int:
        """Queue event ``name`` (``pairs``: its ``data[...]`` form pairs) for each offline binding in
        ``bindings`` that ``deliverable(binding)`` allows and the skip rule does not; returns how many."""
        caller_app = context.get("app_id") if context.get("auth_type") == "oauth" else None
        caller_connector = str(context.get("auth_connector") or "")
        user_id = php_int(context.get("user_id", self.portal.user_id))
        user = self._users.setdefault(user_id, str(user_id))
        name = name.upper()
        data_pairs = tuple(p for p in pairs if p[0].startswith("data["))
        mid = None
        queued = 0
        with self.portal._lock:
            now = int(self.portal._now())
            for binding in bindings:
                if caller_app is not None and caller_app == binding.app_id and caller_connector == binding.connector_id:
                    continue  # the application's own change on this channel (provideroffline.php)
                if not deliverable(binding):
                    continue
                if mid is None:
                    mid = message_id(name, event_data(data_pairs))
                queue = self._queue(binding.app_id, binding.connector_id)
                self._seq += 1
                row = queue.by_process[""].get(mid)
                if row is not None:
                    row.ts, row.seq, row.pairs, row.user = now, self._seq, data_pairs, user
                else:
                    row = Row(self._next_id, now, self._seq, name, data_pairs, user, mid)
                    self._next_id += 1
                queue.write(row)
                self._touched.add(binding.app_id)
                queued += 1
        return queued

    def _queue(self, app_id, connector: str) -> Queue:
        key = (app_id, connector)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = Queue(app_id, connector)
        return queue

    def forget_app(self, app_id) -> None:
        """An uninstalled application's queues go with it."""
        with self.portal._lock:
            for key in [k for k in self.queues if k[0] == app_id]:
                del self.queues[key]
            self._touched.discard(app_id)

    # ---- ONOFFLINEEVENT ---------------------------------------------------------------------------

    def due_notifications(self, bindings) -> list:
        """At the end of a hit: the ONOFFLINEEVENT bindings (of ``bindings``) to notify now. A binding is
        due when its application had rows queued in this hit and it was last notified ``minTimeout`` or
        more seconds ago; with ``minTimeout=0`` only the first such binding of the hit is (the portal's
        once-per-hit flag). Forgets the hit's applications."""
        with self.portal._lock:
            touched, self._touched = self._touched, set()
            if not touched:
                return []
            now = self.portal._now()
            due, once = [], False
            for binding in bindings:
                if binding.app_id not in touched:
                    continue  # "Wrong application."
                timeout = php_int(binding.options.get("minTimeout", DEFAULT_MIN_TIMEOUT))
                if timeout > 0:
                    last = self._sent_at.get(binding.id)
                    if last is not None and now < last + timeout:
                        continue  # "Time is not up."
                    self._sent_at[binding.id] = now
                elif once:
                    continue
                else:
                    once = True
                due.append(binding)
            return due

    # ---- reading ------------------------------------------------------------------------------------

    def size(self) -> int:
        with self.portal._lock:
            return sum(len(q) for q in self.queues.values())

    def stats(self) -> list[dict]:
        """Each queue's size: rows now, of them reserved by a batch and marked as errors."""
        with self.portal._lock:
            return [{"app_id": q.app_id, "connector_id": q.connector, **q.counts()} for q in self.queues.values()]

    def _expire(self, queue: Queue) -> None:
        """Reserved rows older than PROCESS_ID_LIFETIME are gone (the portal's cleanProcessAgent)."""
        horizon = self.portal._now() - PROCESS_ID_LIFETIME
        for process_id in [p for p in queue.by_process if p]:
            queue.drop_process(process_id, keep=lambda r: r.ts >= horizon)

    # ---- the methods ------------------------------------------------------------------------------

    def get(self, app_id, connector: str, params: dict, extended: bool) -> dict:
        """``event.offline.get`` (https://apidocs.bitrix24.com/api-reference/events/event-offline-get.html)."""
        query = _lower_keys(params)
        clear = 1 if query.get("clear") is None else php_int(query["clear"])
        process_id = _process_id(query.get("process_id"))
        if not clear and not extended:
            raise wrong_license("extended offline events handling")
        filter_param = query["filter"] if query.get("filter") is not None else {}
        order_param = query["order"] if query.get("order") is not None else {"TIMESTAMP_X": "ASC"}
        limit = php_int(query["limit"]) if query.get("limit") is not None else LIST_PAGE
        limit = min(limit, sys.maxsize)  # a LIMIT past any table's size is the whole table
        errors = int(query.get("error") is not None and php_int(query["error"]) == 1)
        if limit <= 0:
            raise _argument("Value must be positive integer", "LIMIT")
        match = _filter(filter_param, GET_FIELDS, self.portal.clock)
        order = _order(order_param, GET_FIELDS)
        return_process = not clear
        with self.portal._lock:
            queue = self.queues.get((app_id, connector))
            if queue is None:
                queue = Queue(app_id, connector)  # nothing was ever queued here: an empty one, not kept
            self._expire(queue)
            if process_id is None:
                match.refuse_arrays()  # the reservation's query takes scalars only
                unreserved = queue.process("").values()
                if queue.in_order and not errors and not match.conditions and order == [("TIMESTAMP_X", False)]:
                    chosen = list(itertools.islice((r for r in unreserved if not r.error), limit))
                else:
                    chosen = _sorted([r for r in unreserved if r.error == errors and match(r)], order, limit)
                process_id = "".join(secrets.choice(_PROCESS_CHARS) for _ in range(32))
                for row in chosen:
                    del queue.by_process[""][row.message_id]
                    queue.put(row, process_id)
            else:
                return_process = True
            batch = [r for r in queue.process(process_id).values() if r.error == errors and match(r)]
            rows = _sorted(batch, order, limit)
            events = [r.shown(self.portal.clock, listing=False) for r in rows]
            if clear and rows:
                queue.drop_process(process_id)
        return {"process_id": process_id if return_process else None, "events": events}

    def clear(self, app_id, connector: str, params: dict) -> bool:
        """``event.offline.clear`` (https://apidocs.bitrix24.com/api-reference/events/event-offline-clear.html)."""
        query = _lower_keys(params)
        process_id = _process_id(query.get("process_id"))
        if process_id is None:
            raise _argument("Argument 'PROCESS_ID' is null or empty", "PROCESS_ID")
        keep = None
        if query.get("message_id") is not None:
            # The portal looks at message_id first: given both, id is the one ignored.
            if not is_array(query["message_id"]):
                raise _argument("Value must be array of MESSAGE_ID values", "message_id")
            wanted = set()
            for value in _values(query["message_id"]):
                text = (php_string(value) or "").strip()
                if len(text) != 32:
                    raise _argument("Value must be array of MESSAGE_ID values", "messsage_id")  # sic, the portal's
                wanted.add(text.lower())
            if wanted:
                keep = lambda row: row.message_id not in wanted  # noqa: E731
        elif query.get("id") is not None:
            if not is_array(query["id"]):
                raise _argument("Value must be array of integers", "id")
            ids = set()
            for value in _values(query["id"]):
                number = php_int(value)
                if number <= 0:
                    raise _argument("Value must be array of integers", "id")
                ids.add(number)
            if ids:
                keep = lambda row: row.id not in ids  # noqa: E731
        # An empty id or message_id array names no rows, so the whole batch goes (as on the portal).
        with self.portal._lock:
            queue = self.queues.get((app_id, connector))
            if queue is not None:
                queue.drop_process(process_id, keep)
        return True

    def error(self, app_id, connector: str, params: dict) -> bool:
        """``event.offline.error`` (https://apidocs.bitrix24.com/api-reference/events/event-offline-error.html)."""
        query = _lower_keys(params)
        process_id = _process_id(query.get("process_id"))
        if process_id is None:
            raise _argument("Argument 'PROCESS_ID' is null or empty", "PROCESS_ID")
        if not is_array(query.get("message_id")):
            raise _argument("Value must be array of MESSAGE_ID values", "message_id")
        wanted = {(php_string(v) or "").strip().lower() for v in _values(query["message_id"]) if not is_array(v)}
        if not wanted:
            return True
        with self.portal._lock:
            queue = self.queues.get((app_id, connector))
            if queue is None:
                return True
            marked = [r for r in queue.rows() if r.message_id in wanted and not r.error]
            for row in marked:
                # Every unmarked row of these objects leaves its place; those outside the batch are gone
                # (the portal deletes them)...
                queue.remove(row)
            for row in marked:
                if row.process_id == process_id:
                    # ...and the batch's come back unreserved, marked (an error row already there for the
                    # object takes their data: the upsert key has no ERROR in it).
                    row.error = 1
                    queue.put(row, "")
        return True

    def list(self, app_id, connector: str, params: dict) -> Outcome:
        """``event.offline.list`` (https://apidocs.bitrix24.com/api-reference/events/event-offline-list.html):
        every row of the queue, reserved and marked ones too, 50 a page."""
        query = _lower_keys(params)
        filter_param = query["filter"] if query.get("filter") is not None else {}
        order_param = query["order"] if query.get("order") is not None else {"ID": "ASC"}
        match = _filter(filter_param, LIST_FIELDS, self.portal.clock)
        order = _order(order_param, LIST_FIELDS)
        start = php_int(query.get("start"))
        offset = min(max(start, 0), sys.maxsize - LIST_PAGE)
        with self.portal._lock:
            queue = self.queues.get((app_id, connector))
            if queue is not None:
                self._expire(queue)
            rows = [r for r in queue.rows() if match(r)] if queue is not None else []
            page = _sorted(rows, order, offset + LIST_PAGE)[offset:]
            shown = [r.shown(self.portal.clock, listing=True) for r in page]
        total = len(rows)
        following = offset + len(page) if offset + len(page) < total else None
        return Outcome(shown, total, following)


# ---- parameters ---------------------------------------------------------------------------------------

def _lower_keys(params: dict) -> dict:
    return {str(k).lower(): v for k, v in params.items()}


def _values(value) -> list:
    return [v for _, v in array_items(value)]


def _process_id(value) -> str | None:
    """``trim(process_id)``; None when not given. An empty string is a process id too (the portal checks
    for null only): it names the unreserved rows."""
    if value is None:
        return None
    if is_array(value):
        raise _argument("Value must be a string", "PROCESS_ID")
    return (php_string(value) or "").strip()


_VALUE = {  # a column's value as a filter compares it (strings case-insensitively, as MySQL does)
    "ID": lambda r: r.id,
    "TIMESTAMP_X": lambda r: r.ts,
    "EVENT_NAME": lambda r: r.name.lower(),
    "MESSAGE_ID": lambda r: r.message_id,
    "PROCESS_ID": lambda r: r.process_id.lower(),
    "ERROR": lambda r: r.error,
}
# ...and as an order sorts it: rows of one TIMESTAMP_X second in the order they were written.
_KEY = {**_VALUE, "TIMESTAMP_X": lambda r: (r.ts, r.seq)}


class _Filter:
    """The conditions of a ``filter`` (all must hold)."""

    def __init__(self, conditions):
        self.conditions = conditions  # (key as given, field, op, values, is_array)

    def refuse_arrays(self) -> None:
        for key, _, _, _, array in self.conditions:
            if array:
                raise _argument(f"The value of an argument '{key}' has an invalid type", key)

    def __call__(self, row: Row) -> bool:
        for _, field, op, values, _ in self.conditions:
            if not _holds(_VALUE[field](row), op, values, field):
                return False
        return True


def _holds(stored, op: str, values: list, field: str) -> bool:
    if not values:
        return False  # null matches no row (every column has a value)
    if op in ("", "=", "@"):
        return stored in values
    if op == "%":
        text = str(stored).lower()
        return any(str(v) in text for v in values)
    wanted = values[0]
    if op == ">":
        return stored > wanted
    if op == ">=":
        return stored >= wanted
    if op == "<":
        return stored < wanted
    return stored <= wanted


def _filter(filter_param, fields: tuple[str, ...], clock) -> _Filter:
    """The portal's sanitizeFilter: keys upper-cased, the operation before the field name, only these
    operations and fields; then each value read as its column's type."""
    if not is_array(filter_param):
        raise _wrong_request("The filter is not an array.")
    conditions = []
    for raw_key, value in array_items(filter_param):
        key = raw_key.upper()
        op, field = _OPERATION.match(key).groups()
        if op not in OPERATIONS:
            raise _wrong_request(f"Filter operation not allowed: {op}"[:300])
        if field not in fields:
            raise _wrong_request(f"Filter field not allowed: {field}"[:300])
        array = is_array(value)
        if array and op in (">", ">=", "<", "<="):
            raise _argument(f"The value of an argument '{key}' has an invalid type", key)
        raw = _values(value) if array else [value]
        values = [v for v in (_column_value(field, v, clock) for v in raw) if v is not None]
        conditions.append((key, field, op, values, array))
    return _Filter(conditions)


def _column_value(field: str, value, clock):
    if value is None or is_array(value):
        return None
    if field in ("ID", "ERROR"):
        return php_int(value)
    if field == "TIMESTAMP_X":
        moment = clock.parse(php_string(value))
        if moment is None:
            raise _argument(f"Incorrect date/time: {php_string(value)}"[:300], "TIMESTAMP_X")
        return int(moment.timestamp())
    return php_string(value).lower()  # string columns compare case-insensitively, as MySQL's do


def _order(order_param, fields: tuple[str, ...]) -> list[tuple[str, bool]]:
    """The portal's sanitizeOrder: ``{FIELD: ASC|DESC}`` or a list of field names (ascending)."""
    if not is_array(order_param):
        raise _wrong_request("The order is not an array.")
    order = []
    for raw_key, value in array_items(order_param):
        key = raw_key.upper()
        if re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", key):  # PHP is_numeric: a list
            name = php_string(value) if not is_array(value) else None
            if name not in fields:
                raise _wrong_request(f"Order field not allowed: {name}"[:300])
            order.append((name, False))
            continue
        if key not in fields:
            raise _wrong_request(f"Order field not allowed: {key}"[:300])
        direction = value.upper() if isinstance(value, str) else None
        if direction not in ("ASC", "DESC"):
            raise _wrong_request("Order direction should be one of {ASC|DESC}")
        order.append((key, direction == "DESC"))
    return order


def _sorted(rows: list[Row], order: list[tuple[str, bool]], limit: int) -> list[Row]:
    """The first ``limit`` rows in ``order``; ties (and no order at all) go by ID, except that rows of one
    TIMESTAMP_X second keep the order they were written in."""
    if not order or order == [("ID", False)]:
        return heapq.nsmallest(limit, rows, key=_KEY["ID"])
    if len(order) == 1 and not order[0][1]:
        key = _KEY[order[0][0]]
        return heapq.nsmallest(limit, rows, key=lambda r: (key(r), r.id))
    rows = sorted(rows, key=_KEY["ID"])
    for field, descending in reversed(order):
        rows.sort(key=_KEY[field], reverse=descending)
    return rows[:limit]
