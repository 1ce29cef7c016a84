"""App mode's installations: one row per portal our Bitrix24 app is installed on.

A row is keyed by the portal's ``member_id`` (which survives a domain change,
https://apidocs.bitrix24.com/settings/oauth/index.html) and holds the portal's REST address
(``client_endpoint``), the token pair and the application token, encrypted together with the app's
``BITRIX_SECRET_KEY`` (MultiFernet), the scopes, a status and the host's client linked to it.

The token pair is replaced in one statement that also raises ``token_version``: a reader sees the
old pair or the new one, never half of each. :meth:`InstallationStore.renew` is the one place a
refresh happens, and it runs under a lock on the row held across processes and machines by the
database itself (an ``UPDATE`` of the row first: PostgreSQL locks the row until the transaction
ends; SQLite takes its write lock), on a connection of its own, never in the host's session.
Inside the lock the stored pair is read again: when another process has already replaced the pair
the caller used, that pair is the answer and the OAuth server is not asked again.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from ..models.mixins import iso, utcnow
from ..store import portal_domain
from .errors import AppNotUsable

ACTIVE, UNINSTALLED, NEEDS_ATTENTION = "active", "uninstalled", "needs_attention"
MEMBER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Grant:
    """A token answer of the OAuth server (https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html),
    or the tokens an install request or ``ONAPPINSTALL`` carried, checked."""

    access_token: str
    refresh_token: str
    member_id: str
    client_endpoint: str
    expires_in: float | None = None
    scope: str | None = None
    status: str | None = None


class RefreshRefused(Exception):
    """The OAuth server refused the refresh for good (``invalid_grant``, ``PAYMENT_REQUIRED``):
    :meth:`InstallationStore.renew` marks the installation in the same transaction, so no other
    process tries the same refresh token again."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem, self.detail = problem, detail


@dataclass(frozen=True)
class Tokens:
    """What a call needs: the access token, where to send it, and which stored pair it came from."""

    member_id: str
    access_token: str
    client_endpoint: str
    version: int


@dataclass
class Installation:
    """An installation as the API shows it: no secret, only whether the application token is known."""

    member_id: str
    client_id: int | None
    domain: str | None
    client_endpoint: str | None
    status: str
    problem: str | None
    problem_detail: str | None
    scope: str | None
    token_version: int
    installed_at: dt.datetime | None
    refreshed_at: dt.datetime | None
    access_expires_at: dt.datetime | None
    updated_at: dt.datetime | None
    has_application_token: bool = False
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)

    def view(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "client_id": self.client_id,
            "domain": self.domain,
            "client_endpoint": self.client_endpoint,
            "status": self.status,
            "problem": self.problem,
            "problem_detail": self.problem_detail,
            "scope": self.scope,
            "events_verified": self.has_application_token,
            "installed_at": iso(self.installed_at),
            "refreshed_at": iso(self.refreshed_at),
            "access_expires_at": iso(self.access_expires_at),
        }


def _problem_error(inst: Installation) -> AppNotUsable:
    where = inst.domain or inst.member_id
    if inst.status == UNINSTALLED:
        return AppNotUsable(
            f"the Bitrix24 app was uninstalled from {where}: install it there again (the client stays linked)",
            code="APP_UNINSTALLED",
        )
    if inst.problem == "PAYMENT_REQUIRED":
        return AppNotUsable(
            f"the Bitrix24 app's subscription or trial on {where} has ended (PAYMENT_REQUIRED): once it is paid, "
            "the portal's ONAPPPAYMENT event, a reinstall or POST .../app/installations/<member_id>/resume makes it "
            "usable again",
            code="PAYMENT_REQUIRED",
        )
    return AppNotUsable(
        f"the OAuth server refused the app's refresh token for {where} ({inst.problem or 'invalid_grant'}: "
        "unused for 180 days, or revoked): reinstall or reopen the app on the portal to give it new tokens",
        code="APP_REAUTHORIZATION_REQUIRED",
    )


def unusable(inst: Installation | None, client_id: int | None = None) -> AppNotUsable | None:
    """The error a call for this installation gets, or None when it may call."""
    if inst is None:
        who = f"client {client_id}" if client_id is not None else "this client"
        return AppNotUsable(f"no Bitrix24 app installation is linked to {who}", code="APP_NOT_INSTALLED")
    if inst.status == ACTIVE:
        return None
    return _problem_error(inst)


class InstallationStore:
    """The installations table (``model``), in the app's database; ``cipher`` is a callable giving
    the app's MultiFernet (built on first use)."""

    def __init__(self, model: type, db: Any, cipher: Callable[[], Any]) -> None:
        self.model, self.db, self._cipher = model, db, cipher
        self.table = model.__table__

    # -- reading -----------------------------------------------------------------------------------

    def _installation(self, row: Any, *, with_secrets: bool = False) -> Installation:
        secrets = self._decrypt(row.credentials)
        return Installation(
            member_id=row.member_id, client_id=row.client_id, domain=row.domain, client_endpoint=row.client_endpoint,
            status=row.status, problem=row.problem, problem_detail=row.problem_detail, scope=row.scope,
            token_version=row.token_version, installed_at=row.installed_at, refreshed_at=row.refreshed_at,
            access_expires_at=row.access_expires_at, updated_at=row.updated_at,
            has_application_token=bool(secrets.get("application_token")),
            secrets=secrets if with_secrets else {},
        )

    def _decrypt(self, ciphertext: str | None) -> dict[str, Any]:
        from .secrets import decrypt_json

        return decrypt_json(self._cipher(), ciphertext) if ciphertext else {}

    def _encrypt(self, secrets: dict[str, Any]) -> str:
        from .secrets import encrypt_json

        return encrypt_json(self._cipher(), secrets)

    def _read(self, where: Any, *, with_secrets: bool = False) -> Installation | None:
        # A connection of its own and Core rows: always what is committed now, never an object the
        # host's session cached earlier in its transaction.
        with self.db.engine.connect() as conn:
            row = conn.execute(select(self.table).where(where)).first()
        return None if row is None else self._installation(row, with_secrets=with_secrets)

    def get(self, member_id: str, *, with_secrets: bool = False) -> Installation | None:
        return self._read(self.table.c.member_id == member_id, with_secrets=with_secrets)

    def for_client(self, client_id: int) -> Installation | None:
        return self._read(self.table.c.client_id == client_id)

    def counts(self) -> list[tuple[str, str | None, int]]:
        """(status, problem, how many): for the metrics."""
        from sqlalchemy import func

        t = self.table
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(t.c.status, t.c.problem, func.count()).group_by(t.c.status, t.c.problem)).all()
        return [(status, problem, int(n)) for status, problem, n in rows]

    def all(self) -> list[Installation]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.id)).all()
        return [self._installation(row) for row in rows]

    def tokens(self, member_id: str) -> Tokens:
        """The stored pair's access token for a call; ``AppNotUsable`` when the installation cannot call."""
        inst = self.get(member_id, with_secrets=True)
        problem = unusable(inst)
        if problem is not None:
            raise problem
        assert inst is not None
        return Tokens(member_id, inst.secrets["access_token"], inst.client_endpoint or "", inst.token_version)

    # -- writing -----------------------------------------------------------------------------------

    def install(self, grant: Grant, *, domain: str | None, application_token: str | None) -> tuple[Installation, bool]:
        """Store a verified installation (a new one, or a reinstall of a known portal: new tokens, the
        link to the client kept, any problem cleared). Returns (installation, created)."""
        now = utcnow()
        secrets = {"access_token": grant.access_token, "refresh_token": grant.refresh_token}
        with self.db.engine.begin() as conn:
            row = conn.execute(select(self.table).where(self.table.c.member_id == grant.member_id)
                               .with_for_update()).first()
            if application_token is None and row is not None and row.status == ACTIVE:
                # The install page does not carry it: keep the one ONAPPINSTALL gave earlier.
                application_token = self._decrypt(row.credentials).get("application_token")
            if application_token:
                secrets["application_token"] = application_token
            values = dict(
                domain=domain, client_endpoint=grant.client_endpoint, credentials=self._encrypt(secrets),
                scope=grant.scope, status=ACTIVE, problem=None, problem_detail=None,
                access_expires_at=_expiry(now, grant.expires_in), refreshed_at=now, updated_at=now,
            )
            if row is None:
                conn.execute(self.table.insert().values(member_id=grant.member_id, client_id=None, token_version=1,
                                                        installed_at=now, **values))
                created = True
            else:
                conn.execute(update(self.table).where(self.table.c.id == row.id)
                             .values(token_version=self.table.c.token_version + 1, installed_at=now, **values))
                created = False
        inst = self.get(grant.member_id)
        assert inst is not None
        return inst, created

    def set_application_token(self, member_id: str, token: str) -> None:
        with self.db.engine.begin() as conn:
            row = conn.execute(select(self.table).where(self.table.c.member_id == member_id)
                               .with_for_update()).first()
            if row is None:
                return
            secrets = self._decrypt(row.credentials)
            secrets["application_token"] = token
            conn.execute(update(self.table).where(self.table.c.id == row.id)
                         .values(credentials=self._encrypt(secrets), updated_at=utcnow()))

    def follow(self, member_id: str, *, client_endpoint: str | None = None, domain: str | None = None) -> None:
        """Keep the portal's current address (from a token answer or a verified event)."""
        values: dict[str, Any] = {}
        if client_endpoint:
            values["client_endpoint"] = client_endpoint
        if domain:
            values["domain"] = domain
        if values:
            with self.db.engine.begin() as conn:
                conn.execute(update(self.table).where(self.table.c.member_id == member_id)
                             .values(updated_at=utcnow(), **values))

    def link(self, member_id: str, client_id: int) -> None:
        """Link the installation to the client (and no other installation to it), in one transaction."""
        with self.db.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.client_id == client_id,
                                                  self.table.c.member_id != member_id).values(client_id=None))
            conn.execute(update(self.table).where(self.table.c.member_id == member_id)
                         .values(client_id=client_id, updated_at=utcnow()))

    def unlink_client(self, client_id: int) -> bool:
        with self.db.engine.begin() as conn:
            done = conn.execute(update(self.table).where(self.table.c.client_id == client_id)
                                .values(client_id=None, updated_at=utcnow())).rowcount
        return bool(done)

    def uninstall(self, member_id: str) -> None:
        """The portal removed the app: no token is kept (the link to the client stays, to explain)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.member_id == member_id).values(
                credentials=None, status=UNINSTALLED, problem=None, problem_detail=None, access_expires_at=None,
                token_version=self.table.c.token_version + 1, updated_at=utcnow()))

    def mark(self, member_id: str, problem: str, detail: str) -> None:
        """The installation needs someone: calls stop until a reinstall (or, for a payment, resume)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.member_id == member_id,
                                                  self.table.c.status == ACTIVE)
                         .values(status=NEEDS_ATTENTION, problem=problem[:64], problem_detail=detail[:2000],
                                 updated_at=utcnow()))

    def resume(self, member_id: str) -> bool:
        """Make an installation stopped by ``PAYMENT_REQUIRED`` usable again (its tokens were kept)."""
        with self.db.engine.begin() as conn:
            done = conn.execute(update(self.table).where(
                self.table.c.member_id == member_id, self.table.c.status == NEEDS_ATTENTION,
                self.table.c.problem == "PAYMENT_REQUIRED",
            ).values(status=ACTIVE, problem=None, problem_detail=None, updated_at=utcnow())).rowcount
        return bool(done)

    def renew(self, member_id: str, used_access_token: str, refresh: Callable[[str], Grant]) -> tuple[Tokens, bool]:
        """The pair after ``used_access_token`` was refused: the stored one when another process
        already replaced it, else a new one from ``refresh(refresh_token)``, stored before the lock
        is let go. Returns (tokens, whether this call refreshed). ``refresh`` raises to refuse;
        nothing is changed then (the caller marks the installation when the refusal is final)."""
        table = self.table
        with self.db.engine.begin() as conn:
            # The lock: a write to the row first (PostgreSQL: a row lock until commit; SQLite: the write lock).
            conn.execute(update(table).where(table.c.member_id == member_id)
                         .values(token_version=table.c.token_version))
            row = conn.execute(select(table).where(table.c.member_id == member_id)).first()
            inst = None if row is None else self._installation(row, with_secrets=True)
            problem = unusable(inst)
            if problem is not None:
                raise problem
            assert inst is not None
            stored = inst.secrets
            if stored.get("access_token") != used_access_token:
                return Tokens(member_id, stored["access_token"], inst.client_endpoint or "", inst.token_version), False
            try:
                grant = refresh(stored["refresh_token"])
            except RefreshRefused as exc:
                # Marked in this transaction: the next holder of the lock finds it and asks nobody.
                conn.execute(update(table).where(table.c.id == row.id).values(
                    status=NEEDS_ATTENTION, problem=exc.problem[:64], problem_detail=exc.detail[:2000],
                    updated_at=utcnow()))
                inst.status, inst.problem = NEEDS_ATTENTION, exc.problem
                refused = _problem_error(inst)
            else:
                refused = None
                now = utcnow()
                secrets = {**stored, "access_token": grant.access_token, "refresh_token": grant.refresh_token}
                version = inst.token_version + 1
                moved = {"domain": portal_domain(grant.client_endpoint)} \
                    if grant.client_endpoint and grant.client_endpoint != inst.client_endpoint else {}
                conn.execute(update(table).where(table.c.id == row.id).values(
                    credentials=self._encrypt(secrets), client_endpoint=grant.client_endpoint or inst.client_endpoint,
                    **moved,
                    scope=grant.scope or inst.scope, access_expires_at=_expiry(now, grant.expires_in),
                    token_version=version, refreshed_at=now, updated_at=now))
        if refused is not None:
            raise refused
        return Tokens(member_id, grant.access_token, grant.client_endpoint or inst.client_endpoint or "", version), True


def _expiry(now: dt.datetime, seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else now + dt.timedelta(seconds=float(seconds))


__all__ = ["ACTIVE", "Grant", "Installation", "InstallationStore", "NEEDS_ATTENTION", "RefreshRefused", "Tokens",
           "UNINSTALLED", "unusable"]
