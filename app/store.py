"""Where each client's portal config lives: the config store interface and its two implementations.

- :class:`EncryptedStore` (the default): our own table, secrets encrypted with ``BITRIX_SECRET_KEY``.
- :class:`ModelStore`: the host's existing model (say its ``ClientCRMAuth``), whatever its column
  names, in the host's session: the host keeps one copy of each client's secrets, in its own table.

Both speak :class:`ConfigStore`; a host with other needs (a vault, another service) writes its own
class with the same methods. A store is bound once to the app's ``db`` (``bind``); it runs its
queries in that ``db``'s session unless it was given one.

The Bitrix24 row of a ``CRMs`` table (``crm_id`` on each config row) is described by :class:`CRMRow`:
found by name at run time, added by ``flask bitrix24 setup`` only when the host says with which
values (``defaults``), since a host's ``CRMs`` table may have columns we know nothing of.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

BITRIX24_CRM_NAME = "Bitrix24"


@dataclass
class ClientConfig:
    """One client's portal connection as the services use it (secrets in clear, in memory only)."""

    client_id: int | None
    webhook_base: str | None
    outbound_token: str | None
    source: str  # "database" | "environment" | "none"
    portal_domain: str | None = None
    updated_at: dt.datetime | None = None
    rate_limit: dict[str, float] | None = None
    member_id: str | None = None


@dataclass
class ConfigValues:
    """What a save writes: validated by ``services.client_config`` before any store sees it."""

    webhook_base: str
    outbound_token: str | None = None
    rate_limit: dict[str, float] | None = None


class StoreNotReady(RuntimeError):
    """The store's tables or its CRMs row are not there, or its table refused a write: the API
    answers 503 ``SETUP_REQUIRED`` with what to do (``flask bitrix24 setup`` reports it too)."""

    status = 503
    code = "SETUP_REQUIRED"


def required_attributes(model: type, given: set[str]) -> list[str]:
    """The model's attributes whose columns need a value on insert that neither the table (a default,
    a server default, an autoincrement key) nor ``given`` supplies."""
    missing = []
    for attr in sa_inspect(model).column_attrs:
        column = attr.columns[0]
        if column.nullable or column.primary_key or column.default is not None or column.server_default is not None:
            continue
        if attr.key not in given:
            missing.append(attr.key)
    return missing


def portal_domain(base: str) -> str:
    """The host[:port] Bitrix24 sends as ``auth[domain]`` in events (the emulator includes the port);
    never the scheme's own port (``:443``), which a portal's ``auth[domain]`` does not name."""
    parts = urlsplit(base)
    netloc = parts.netloc.lower().rpartition("@")[2]
    default = {"https": ":443", "http": ":80"}.get(parts.scheme.lower())
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def _stored_domains(domain: str) -> list[str]:
    """The forms a portal's domain may be stored in: as given, and with ``:443`` (rows saved before
    the scheme's own port was dropped, or written by a host)."""
    domain = domain.lower()
    return [domain] if domain.endswith("]") or ":" in domain.rpartition("]")[2] else [domain, domain + ":443"]


@runtime_checkable
class ConfigStore(Protocol):
    """Get, save and delete a client's config; find a portal's configs to route its events."""

    def bind(self, db: Any) -> None:
        """Called by ``init_app`` with the app's Flask-SQLAlchemy instance."""

    def get(self, client_id: int) -> ClientConfig | None: ...

    def save(self, client_id: int, values: ConfigValues) -> None: ...

    def delete(self, client_id: int) -> bool: ...

    def find_for_portal(self, member_id: str, domain: str) -> list[ClientConfig]: ...

    def remember_member_id(self, client_id: int, member_id: str) -> None:
        """Keep the portal's member_id (learnt from a verified event); a store may ignore it."""

    def tables(self) -> list[Any]:
        """The SQLAlchemy tables the store needs (setup checks that they exist)."""

    def ensure_crm(self) -> tuple[bool, int | None, str | None]:
        """Setup: (added, crm id, problem) for the CRMs row, when the store uses one."""


@dataclass
class CRMRow:
    """The Bitrix24 row of a CRMs table.

    ``model`` is the CRMs model, ``name`` the row's name in ``name_attr``. ``defaults`` gives the
    values of the table's other required columns; with ``defaults=None`` the row is never added by
    us (the host adds it) and setup only reports whether it is there.
    """

    model: type
    name: str = BITRIX24_CRM_NAME
    name_attr: str = "name"
    id_attr: str = "id"
    defaults: Mapping[str, Any] | None = None

    def find(self, session: Any) -> Any | None:
        # The first by id: a host's name column need not be unique.
        stmt = select(self.model).where(getattr(self.model, self.name_attr) == self.name)
        return session.execute(stmt.order_by(getattr(self.model, self.id_attr))).scalars().first()

    def id(self, session: Any) -> int | None:
        row = self.find(session)
        return None if row is None else getattr(row, self.id_attr)

    def missing_values(self) -> list[str]:
        """Required columns (by attribute name) that neither the table nor ``defaults`` gives a value for."""
        return required_attributes(self.model, {self.name_attr, *(self.defaults or {})})

    def ensure(self, session: Any) -> tuple[bool, int | None, str | None]:
        """(added, id, problem): add the row when it is missing and ``defaults`` says how."""
        row = self.find(session)
        if row is not None:
            return False, getattr(row, self.id_attr), None
        table = self.model.__table__.name
        if self.defaults is None:
            return False, None, (
                f"the {table} table has no {self.name!r} row: add it yourself, or pass "
                f"CRMRow(..., defaults={{...}}) with the values of its other columns so setup can add it"
            )
        missing = self.missing_values()
        if missing:
            return False, None, (
                f"the {table} table has no {self.name!r} row, and adding one needs a value for "
                f"{', '.join(missing)}: pass CRMRow(..., defaults={{{', '.join(repr(m) + ': ...' for m in missing)}}})"
            )
        session.add(self.model(**{self.name_attr: self.name, **dict(self.defaults)}))
        try:
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            crm_id = self.id(session)  # added meanwhile by another process?
            if crm_id is not None:
                return False, crm_id, None
            return False, None, f"the {table} table refused the {self.name!r} row: {exc.orig}"
        return True, self.id(session), None

    def require_id(self, session: Any) -> int:
        """The row's id for a write; when it is missing, add it if ``defaults`` allows."""
        crm_id = self.id(session)
        if crm_id is not None:
            return crm_id
        if self.defaults is not None and not self.missing_values():
            _, crm_id, _ = self.ensure(session)
            if crm_id is not None:
                return crm_id
        from .runtime import runtime

        how = f"run `{runtime().command('setup')}`" if self.defaults is not None else \
            "add it (or give CRMRow(..., defaults={...}) so that setup can)"
        raise StoreNotReady(f"the {self.model.__table__.name} table has no {self.name!r} row: {how}")


class _SQLStore:
    """What both stores share: a model (rows of the Bitrix24 CRM only, when ``crm`` is given) in a
    session, the app's unless one was given."""

    model: Any = None
    crm: CRMRow | None = None
    # The model's attribute names (a ModelStore maps the host's own; None: the table has no such column).
    client_id: str = "client_id"
    crm_id: str = "crm_id"
    member_id: str | None = "member_id"
    _db: Any = None
    _session: Any = None

    def _select(self):
        """The model's rows, only those of the Bitrix24 CRM when ``crm`` is given."""
        stmt = select(self.model)
        if self.crm is not None:
            crm = self.crm.model
            stmt = stmt.join(crm, getattr(self.model, self.crm_id) == getattr(crm, self.crm.id_attr)).where(
                getattr(crm, self.crm.name_attr) == self.crm.name
            )
        return stmt

    def _row(self, client_id: int) -> Any | None:
        # The oldest row, should a host's table hold several for one client and CRM.
        pk = sa_inspect(self.model).primary_key
        stmt = self._select().where(getattr(self.model, self.client_id) == client_id).order_by(*pk)
        return self.session.execute(stmt).scalars().first()

    def bind(self, db: Any) -> None:
        self._db = db

    @property
    def session(self) -> Any:
        if self._session is not None:
            return self._session
        if self._db is None:
            raise RuntimeError("this config store is not bound to a database: give it to Bitrix24(store=...)")
        return self._db.session

    def _commit(self, doing: str, *, conflict_ok: bool = False) -> bool:
        """Commit, or roll back and say what the table refused (never the values: they hold secrets).
        A database that is not reachable stays that error (the API answers 503 DATABASE_UNAVAILABLE).
        With ``conflict_ok`` a unique-key conflict is rolled back and reported as False."""
        try:
            self.session.commit()
            return True
        except IntegrityError as exc:
            self.session.rollback()
            if conflict_ok:
                return False
            raise self._refused(doing, exc) from None
        except (OperationalError, InterfaceError):
            self.session.rollback()
            raise
        except DBAPIError as exc:
            self.session.rollback()
            raise self._refused(doing, exc) from None

    def _refused(self, doing: str, exc: DBAPIError) -> StoreNotReady:
        kind = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
        return StoreNotReady(
            f"the {self.model.__table__.name} table refused {doing} ({kind}): check its columns and constraints"
        )

    def _stage(self, client_id: int, values: ConfigValues) -> None:
        raise NotImplementedError

    def save(self, client_id: int, values: ConfigValues) -> None:
        """Write the client's config. Two first saves for one client at once: the loser's insert hits
        the unique row the winner made, and is done again as an update of it."""
        self._stage(client_id, values)
        if not self._commit("the config", conflict_ok=True):
            self._stage(client_id, values)
            self._commit("the config")

    def delete(self, client_id: int) -> bool:
        row = self._row(client_id)
        if row is None:
            return False
        self.session.delete(row)
        self._commit("the delete")
        return True

    def remember_member_id(self, client_id: int, member_id: str) -> None:
        """Set the member_id on this client's Bitrix24 row (no other CRM's) when it has none."""
        if self.member_id is None:
            return
        row = self._row(client_id)
        if row is not None and getattr(row, self.member_id) is None:
            setattr(row, self.member_id, member_id)
            self._commit("the member_id")

    def tables(self) -> list[Any]:
        return [self.model.__table__] + ([self.crm.model.__table__] if self.crm is not None else [])

    def client_ids(self) -> list[int]:
        """Every client with a saved config (the worker's reconciliation walks them)."""
        column = getattr(self.model, self.client_id)
        stmt = self._select().with_only_columns(column).distinct().order_by(column)
        return [int(c) for c in self.session.execute(stmt).scalars() if c is not None]

    def ensure_crm(self) -> tuple[bool, int | None, str | None]:
        if self.crm is None:
            return False, None, None
        return self.crm.ensure(self.session)


class EncryptedStore(_SQLStore):
    """Our own table (``ClientConfigMixin``), secrets encrypted with the app's ``BITRIX_SECRET_KEY``.

    ``model`` defaults to ``bitrix24_client_configs`` declared on the app's ``db``; ``crm`` ties each
    row to the Bitrix24 row of a CRMs table through the model's ``crm_id`` column (the standalone
    app's seed layout).
    """

    def __init__(self, model: type | None = None, *, crm: CRMRow | None = None, session: Any = None,
                 table: str | None = None) -> None:
        self.model, self.crm, self._session, self._table = model, crm, session, table

    def bind(self, db: Any) -> None:
        super().bind(db)
        if self.model is None:
            from .models import DEFAULT_CONFIG_TABLE, config_model

            self.model = config_model(db, self._table or DEFAULT_CONFIG_TABLE)

    def _cipher(self):
        from .runtime import runtime

        return runtime().cipher

    def _config(self, row: Any) -> ClientConfig:
        from .services.secrets import decrypt_json

        data = decrypt_json(self._cipher(), row.credentials)
        return ClientConfig(
            client_id=row.client_id,
            webhook_base=data.get("webhook_base"),
            outbound_token=data.get("outbound_token"),
            source="database",
            portal_domain=row.portal_domain,
            updated_at=row.updated_at,
            rate_limit=data.get("rate_limit"),
            member_id=row.member_id,
        )

    def get(self, client_id: int) -> ClientConfig | None:
        row = self._row(client_id)
        return None if row is None else self._config(row)

    def _stage(self, client_id: int, values: ConfigValues) -> None:
        from .services.secrets import encrypt_json

        data = {"webhook_base": values.webhook_base, "outbound_token": values.outbound_token,
                "rate_limit": values.rate_limit}
        ciphertext = encrypt_json(self._cipher(), data)
        row = self._row(client_id)
        if row is None:
            extra = {"crm_id": self.crm.require_id(self.session)} if self.crm is not None else {}
            row = self.model(client_id=client_id, credentials=ciphertext, **extra)
            self.session.add(row)
        else:
            row.credentials = ciphertext
        domain = portal_domain(values.webhook_base)
        if row.portal_domain != domain:
            row.member_id = None  # learnt for the old portal
        row.portal_domain = domain

    def find_for_portal(self, member_id: str, domain: str) -> list[ClientConfig]:
        conditions = []
        if member_id:
            conditions.append(self.model.member_id == member_id)
        if domain:
            conditions.append(self.model.portal_domain.in_(_stored_domains(domain)))
        if not conditions:
            return []
        rows = self.session.execute(self._select().where(or_(*conditions))).scalars()
        return [self._config(row) for row in rows]


class ModelStore(_SQLStore):
    """A host's own model, mapped by attribute names; secrets as the host keeps them.

    ``ModelStore(ClientCRMAuth, webhook_base="webhook_url", outbound_token="app_token",
    crm=CRMRow(CRMs))`` reads and writes the host's ``ClientCRMAuth`` rows of the Bitrix24 CRM.
    Attributes given as ``None`` are columns the host's table does not have: ``portal_domain``
    (events are then routed by the domain of each row's webhook URL), ``member_id`` (not kept),
    ``rate_limit`` (the app's default bucket applies), ``updated_at``. ``defaults`` are values for
    the host's other required columns when a client's first config adds a row; a required column
    neither mapped nor in ``defaults`` is refused here, not at the first save. ``delete`` removes the
    client's Bitrix24 row (the host's other columns on it go with it).
    """

    def __init__(
        self,
        model: type,
        *,
        client_id: str = "client_id",
        webhook_base: str = "webhook_base",
        outbound_token: str | None = "outbound_token",
        crm: CRMRow | None = None,
        crm_id: str = "crm_id",
        portal_domain: str | None = None,
        member_id: str | None = None,
        rate_limit: str | None = None,
        updated_at: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> None:
        self.model, self.crm, self.crm_id, self._session = model, crm, crm_id, session
        self.client_id, self.webhook_base, self.outbound_token = client_id, webhook_base, outbound_token
        self.portal_domain, self.member_id, self.rate_limit, self.updated_at = (
            portal_domain, member_id, rate_limit, updated_at)
        self.defaults = dict(defaults or {})
        names = [client_id, webhook_base, outbound_token, portal_domain, member_id, rate_limit, updated_at]
        names += [crm_id] if crm is not None else []
        columns = set(sa_inspect(model).attrs.keys())
        unknown = [name for name in names if name is not None and name not in columns]
        if unknown:
            raise ValueError(f"{model.__name__} has no attribute {', '.join(map(repr, unknown))}")
        # Checked now, not at a client's first save: a required column we would leave empty.
        required = required_attributes(model, {name for name in names if name is not None} | set(self.defaults))
        if required:
            raise ValueError(
                f"{model.__name__}.{', '.join(required)} must have a value when a client's first config adds a row: "
                f"pass ModelStore(..., defaults={{{', '.join(repr(r) + ': ...' for r in required)}}})"
            )

    def _attr(self, name: str) -> Any:
        return getattr(self.model, name)

    def _get(self, row: Any, name: str | None) -> Any:
        return None if name is None else getattr(row, name)

    def _config(self, row: Any) -> ClientConfig:
        base = self._get(row, self.webhook_base) or None
        rate = self._get(row, self.rate_limit)
        return ClientConfig(
            client_id=int(self._get(row, self.client_id)),
            webhook_base=base,
            outbound_token=self._get(row, self.outbound_token) or None,
            source="database",
            portal_domain=self._get(row, self.portal_domain) or (portal_domain(base) if base else None),
            updated_at=self._get(row, self.updated_at),
            rate_limit=rate if isinstance(rate, dict) else None,
            member_id=self._get(row, self.member_id),
        )

    def get(self, client_id: int) -> ClientConfig | None:
        row = self._row(client_id)
        if row is None or not self._get(row, self.webhook_base):
            return None
        return self._config(row)

    def _stage(self, client_id: int, values: ConfigValues) -> None:
        row = self._row(client_id)
        if row is None:
            extra = {self.crm_id: self.crm.require_id(self.session)} if self.crm is not None else {}
            row = self.model(**{self.client_id: client_id, **dict(self.defaults), **extra})
            self.session.add(row)
        setattr(row, self.webhook_base, values.webhook_base)
        if self.outbound_token is not None:
            setattr(row, self.outbound_token, values.outbound_token)
        if self.rate_limit is not None:
            setattr(row, self.rate_limit, values.rate_limit)
        if self.portal_domain is not None:
            domain = portal_domain(values.webhook_base)
            if getattr(row, self.portal_domain) != domain and self.member_id is not None:
                setattr(row, self.member_id, None)
            setattr(row, self.portal_domain, domain)

    def find_for_portal(self, member_id: str, domain: str) -> list[ClientConfig]:
        domain = (domain or "").lower()
        if self.portal_domain is not None:
            conditions = []
            if member_id and self.member_id is not None:
                conditions.append(self._attr(self.member_id) == member_id)
            if domain:
                conditions.append(self._attr(self.portal_domain).in_(_stored_domains(domain)))
            if not conditions:
                return []
            rows = self.session.execute(self._select().where(or_(*conditions))).scalars()
            return [self._config(row) for row in rows if self._get(row, self.webhook_base)]
        # No domain column: compare with each Bitrix24 row's webhook host (one CRM's rows).
        found = []
        for row in self.session.execute(self._select()).scalars():
            if not self._get(row, self.webhook_base):
                continue
            config = self._config(row)
            if (domain and config.portal_domain == domain) or (
                member_id and self.member_id is not None and config.member_id == member_id
            ):
                found.append(config)
        return found


__all__ = [
    "BITRIX24_CRM_NAME",
    "CRMRow",
    "ClientConfig",
    "ConfigStore",
    "ConfigValues",
    "EncryptedStore",
    "ModelStore",
    "StoreNotReady",
    "portal_domain",
    "required_attributes",
]
