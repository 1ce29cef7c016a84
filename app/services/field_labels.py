"""Human labels for CRM fields and for the values of list fields, cached per portal.

Bitrix24 answers codes: ``STAGE_ID: "WON"``, ``SOURCE_ID: "WEB"``, an enumeration user field's item
id ``"45"``. What a person reads is elsewhere:

- a field's own label: ``title`` in ``crm.{entity}.fields``, except for user fields, where ``title``
  is the code and the labels are ``formLabel`` / ``listLabel`` / ``filterLabel``
  (https://apidocs.bitrix24.com/api-reference/crm/companies/crm-company-fields.html,
  https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-fields.html);
- a status field's values (``type: crm_status`` with ``statusType``, or a ``crm_status`` user field
  with ``settings.ENTITY_TYPE``): the directory's items, ``crm.status.entity.items``
  (https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-entity-items.html); a deal's
  ``STAGE_ID`` names ``DEAL_STAGE``, and the stages of the other pipelines (``C1:NEW``) are in the
  directories ``crm.status.entity.types`` lists with ``PARENT_ID: DEAL_STAGE``
  (https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-entity-types.html);
- an enumeration user field's values: its ``items: [{ID, VALUE}]`` in ``crm.{entity}.fields``.

One fill costs two requests (a ``batch`` of ``crm.{entity}.fields`` and ``crm.status.entity.types``,
then a ``batch`` of every directory's items). The result is kept per (portal host, entity) for
``BITRIX_LABELS_CACHE_SECONDS`` in a bounded LRU (``BITRIX_LABELS_CACHE_SIZE`` entries) shared by the
process's threads; changing a user field through our API, or an ``ONCRM*USERFIELD*`` event from the
portal, drops the portal's entries at once. With ``BITRIX_REDIS_URL`` set, the drop is shared: each
portal has a generation counter in Redis, and an entry filled under an older generation is not used.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..entities import Entity
from ..runtime import runtime
from ..store import portal_domain
from .bitrix24_service import Bitrix24Error, bx_batch
from .client_config import portal_target
from .redis_pool import redis_client

log = logging.getLogger("flask_bitrix24")

# ONCRMDEALUSERFIELDADD, ...UPDATE, ...DELETE, ...SETENUMVALUES (and the quote/type ones):
# https://apidocs.bitrix24.com/api-reference/crm/deals/user-defined-fields/events/on-crm-deal-user-field-add.html
USERFIELD_EVENT = re.compile(r"^ONCRM[A-Z]+USERFIELD(ADD|UPDATE|DELETE|SETENUMVALUES)$")
_EMPTY = (None, "", False, [])


@dataclass(frozen=True)
class Value:
    id: str
    label: str
    status_type: str | None = None  # the crm.status directory it comes from, for status fields

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.label}
        if self.status_type is not None:
            out["status_type"] = self.status_type
        return out


@dataclass(frozen=True)
class FieldCatalog:
    """One entity's fields as the portal describes them, with the values of its list fields."""

    fields: dict[str, Any]
    values: dict[str, list[Value]] = field(default_factory=dict)  # field name -> its values, in order

    def label_of(self, name: str) -> str | None:
        return field_label(self.fields.get(name))

    def value_labels(self, name: str) -> dict[str, str]:
        return {v.id: v.label for v in self.values.get(name, ())}

    def described(self) -> dict[str, Any]:
        """``crm.{entity}.fields`` as answered, each field with ``label`` and, for list fields, ``values``."""
        out: dict[str, Any] = {}
        for name, info in self.fields.items():
            if not isinstance(info, dict):
                out[name] = info
                continue
            info = {**info, "label": field_label(info)}
            if name in self.values:
                info["values"] = [v.as_dict() for v in self.values[name]]
            out[name] = info
        return out

    def label_row(self, row: Any) -> Any:
        """A record with ``labels``: ``{FIELD: label}`` for each list field it holds a value of (a
        list of labels for a multiple field; null for a value the portal does not list)."""
        if not isinstance(row, dict):
            return row
        labels: dict[str, Any] = {}
        for name, value in row.items():
            if name not in self.values or value in _EMPTY:
                continue
            known = self.value_labels(name)
            if isinstance(value, list):
                labels[name] = [known.get(_text(v)) for v in value]
            elif isinstance(value, dict):  # a PHP array with keys: its values
                labels[name] = [known.get(_text(v)) for v in value.values()]
            else:
                labels[name] = known.get(_text(value))
        return {**row, "labels": labels}


def _text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def field_label(info: Any) -> str | None:
    """The label a person reads: for a user field (``isDynamic``) its form label, else list or
    filter label (``title`` is its code); for the others ``title``."""
    if not isinstance(info, dict):
        return None
    keys = ("formLabel", "listLabel", "filterLabel", "title") if info.get("isDynamic") else ("title",)
    for key in keys:
        if isinstance(info.get(key), str) and info[key]:
            return info[key]
    return None


def status_type_of(info: dict[str, Any]) -> str | None:
    """The crm.status directory a field's values come from, if it is a status field."""
    if info.get("type") != "crm_status":
        return None
    if isinstance(info.get("statusType"), str) and info["statusType"]:
        return info["statusType"]
    settings = info.get("settings")
    if isinstance(settings, dict) and isinstance(settings.get("ENTITY_TYPE"), str) and settings["ENTITY_TYPE"]:
        return settings["ENTITY_TYPE"]
    return None


# ----------------------------------------------------------------------------------------------
# Reading the portal


def _result(item: Any) -> Any:
    if item.error is not None:
        raise item.error
    return item.result


def load_catalog(ent: Entity, client_id: int | None) -> FieldCatalog:
    """Ask the portal: the entity's fields and directory types, then every directory's items."""
    first = bx_batch({"fields": (ent.method("fields"), None), "types": ("crm.status.entity.types", None)},
                     client_id=client_id)
    fields = _result(first["fields"])
    if isinstance(fields, dict) and isinstance(fields.get("fields"), dict) and len(fields) == 1:
        fields = fields["fields"]  # tasks.task.getFields and crm.item.fields wrap them: {"fields": {...}}
    if not isinstance(fields, dict):
        fields = {}
    types = first["types"].result if first["types"].ok and isinstance(first["types"].result, list) else []
    if not first["types"].ok:
        log.info("crm.status.entity.types failed for client %s: %r", client_id, first["types"].error)
    children: dict[str, list[str]] = {}
    for row in types:
        if isinstance(row, dict) and isinstance(row.get("PARENT_ID"), str) and isinstance(row.get("ID"), str):
            children.setdefault(row["PARENT_ID"], []).append(row["ID"])

    status_fields: dict[str, list[str]] = {}  # field name -> directories, the field's own first
    values: dict[str, list[Value]] = {}
    for name, info in fields.items():
        if not isinstance(info, dict):
            continue
        status_type = status_type_of(info)
        if status_type:
            status_fields[name] = [status_type, *children.get(status_type, [])]
        elif info.get("type") == "enumeration" and isinstance(info.get("items"), list):
            values[name] = [Value(_text(i.get("ID")), _text(i.get("VALUE")))
                            for i in info["items"] if isinstance(i, dict) and i.get("ID") is not None]
    directories = sorted({d for ds in status_fields.values() for d in ds})
    items: dict[str, list[dict[str, Any]]] = {}
    if directories:
        answers = bx_batch({d: ("crm.status.entity.items", {"entityId": d}) for d in directories},
                           client_id=client_id)
        for directory, answer in answers.items():
            if answer.ok and isinstance(answer.result, list):
                items[directory] = [i for i in answer.result if isinstance(i, dict)]
            else:
                log.info("crm.status.entity.items %s failed for client %s: %r", directory, client_id, answer.error)
    for name, dirs in status_fields.items():
        values[name] = [Value(_text(i.get("STATUS_ID")), _text(i.get("NAME")), d)
                        for d in dirs for i in items.get(d, []) if i.get("STATUS_ID") is not None]
    return FieldCatalog(fields, values)


# ----------------------------------------------------------------------------------------------
# The cache


class LabelCache:
    """A bounded LRU of ``FieldCatalog`` by (portal host, entity name), safe across threads.

    Entries live ``ttl`` seconds. ``invalidate(host)`` drops a portal's entries; a fill that started
    before an invalidation is not stored (it may hold what was just changed). With ``redis`` the
    invalidation reaches every process: entries remember the portal's generation in Redis when they
    were filled, and one of an older generation is a miss.
    """

    def __init__(self, ttl: float, size: int, *, redis: Any = None, clock: Callable[[], float] = time.monotonic,
                 prefix: str = "bitrix24:labels:gen:") -> None:
        self.ttl, self.size, self.redis, self.clock, self.prefix = float(ttl), max(int(size), 0), redis, clock, prefix
        self._entries: OrderedDict[tuple[str, str], tuple[float, int, Any, FieldCatalog]] = OrderedDict()
        self._lock = threading.Lock()
        self._local_generation = 0  # bumped by every invalidation in this process
        self.hits = self.misses = 0

    def _shared_generation(self, host: str) -> Any:
        if self.redis is None:
            return None
        try:
            return self.redis.get(self.prefix + host)
        except Exception as exc:  # Redis down: the local cache still works, TTL bounds staleness
            log.warning("labels cache: Redis generation read failed: %r", exc)
            return "unavailable"

    def get(self, host: str, entity: str, loader: Callable[[], FieldCatalog], *, fresh: bool = False) -> FieldCatalog:
        key = (host, entity)
        shared = self._shared_generation(host)
        now = self.clock()
        if not fresh and self.ttl > 0:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry[0] > now and entry[2] == shared and shared != "unavailable":
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[3]
                self.misses += 1
                started = self._local_generation
        else:
            with self._lock:
                self.misses += 1
                started = self._local_generation
        catalog = loader()
        if self.ttl > 0 and self.size > 0 and shared != "unavailable":
            with self._lock:
                if started == self._local_generation:
                    self._entries[key] = (self.clock() + self.ttl, started, shared, catalog)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.size:
                        self._entries.popitem(last=False)
        return catalog

    def invalidate(self, host: str | None = None) -> int:
        """Drop a portal's entries (every entry without ``host``); the count dropped in this process."""
        with self._lock:
            self._local_generation += 1
            keys = [k for k in self._entries if host is None or k[0] == host]
            for key in keys:
                del self._entries[key]
        if self.redis is not None and host is not None:
            try:
                self.redis.incr(self.prefix + host)
            except Exception as exc:
                log.warning("labels cache: Redis generation bump failed for %s: %r", host, exc)
        return len(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_CACHE_LOCK = threading.Lock()


def cache() -> LabelCache:
    """The app's cache, made on first use from its settings."""
    state = runtime()
    existing = getattr(state, "_label_cache", None)
    if existing is not None:
        return existing
    with _CACHE_LOCK:
        existing = getattr(state, "_label_cache", None)
        if existing is None:
            from flask import current_app

            cfg = current_app.config
            redis = None
            url = cfg.get("BITRIX_REDIS_URL")
            if url:
                redis = redis_client(url, socket_timeout=1.0, socket_connect_timeout=1.0, pool_wait=1.0)
            existing = LabelCache(float(cfg.get("BITRIX_LABELS_CACHE_SECONDS", 300.0)),
                                  int(cfg.get("BITRIX_LABELS_CACHE_SIZE", 512)), redis=redis)
            state._label_cache = existing
        return existing


def portal_host(client_id: int | None) -> str:
    """The cache key of a client's portal: its host (``portal.example.com``, with a port if any)."""
    return portal_domain(portal_target(client_id).base)  # an app installation's too: its client_endpoint


def catalog(ent: Entity, client_id: int | None, *, fresh: bool = False) -> FieldCatalog:
    """The entity's ``FieldCatalog`` for this client's portal, from the cache when it is there."""
    return cache().get(portal_host(client_id), ent.name, lambda: load_catalog(ent, client_id), fresh=fresh)


def invalidate_client(client_id: int | None) -> None:
    """A user field of this client's portal changed through our API."""
    try:
        host = portal_host(client_id)
    except Bitrix24Error:
        return
    cache().invalidate(host)


def on_event(event_name: str, domain: str | None) -> bool:
    """An ``ONCRM*USERFIELD*`` event from a portal drops its entries; True when it was one."""
    if not domain or not USERFIELD_EVENT.fullmatch(event_name.upper()):
        return False
    dropped = cache().invalidate(domain.lower())
    log.info("labels cache: %s from %s dropped %d entries", event_name, domain, dropped)
    return True
