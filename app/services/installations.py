"""App mode's installations: one row per portal our Bitrix24 app is installed on.

A row is keyed by the portal's ``member_id`` (which survives a domain change,
https://apidocs.bitrix24.com/settings/oauth/index.html) and holds the portal's REST address
(``client_endpoint``), the token pair and the application token, encrypted together with the app's
``BITRIX_SECRET_KEY`` (MultiFernet), the scopes, a status and the host's client linked to it.

The token pair is replaced in one statement that also raises ``token_version``: a reader sees the
old pair or the new one, never half of each. :meth:`InstallationStore.renew` is the one place a
refresh happens. A refresh is leased: in a short transaction holding the row's lock (an ``UPDATE``
of the row first: PostgreSQL locks the row until the transaction ends, SQLite takes its write lock)
the caller reads the stored pair again and, when it is still the refused one and nobody holds the
lease, writes its name and a deadline into the row. The OAuth request then runs outside any
transaction (no database lock is held while the network is slow), and the new pair is stored where
the lease still names us, with retries. Others wait for the lease to go and take the stored pair.
A holder that dies frees the lease at its deadline. All of this runs on connections of its own,
never in the host's session.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..models.mixins import iso, utcnow
from ..store import portal_domain
from .errors import AppNotUsable
from .locks import LockTimeout

log = logging.getLogger("flask_bitrix24")

ACTIVE, UNINSTALLED, NEEDS_ATTENTION, INSTALLING = "active", "uninstalled", "needs_attention", "installing"
MEMBER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
LEASE_SECONDS = 30.0  # longer than the OAuth request's own timeouts (3.05 s to connect, 15 s to answer)
LEASE_POLL = 0.05
SAVE_RETRIES = (0.1, 0.3, 1.0)  # waits between tries to store a new pair


class RefreshRefused(Exception):
    """The OAuth server refused the refresh for good (``invalid_grant``, ``PAYMENT_REQUIRED``):
    :meth:`InstallationStore.renew` marks the installation before the lease goes, so no other
    process tries the same refresh token again."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem, self.detail = problem, detail


@dataclass(frozen=True)
class Grant:
    """A token answer of the OAuth server (https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html),
    checked."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    member_id: str
    client_endpoint: str
    expires_in: float | None = None
    scope: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class Tokens:
    """What a call needs: the access token, where to send it, and which stored pair it came from."""

    member_id: str
    access_token: str = field(repr=False)
    client_endpoint: str = ""
    version: int = 0
    fresh: bool = field(default=False, compare=False)  # just refreshed for the caller that asked
    connector: str = ""  # the auth_connector our calls carry (https://apidocs.bitrix24.com/api-reference/events/offline-events.html)


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
    connector: str = ""
    offline_process_id: str | None = None
    installs: int = 0
    address_checked_at: dt.datetime | None = None

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

    def tokens(self) -> Tokens:
        return Tokens(self.member_id, self.secrets.get("access_token") or "", self.client_endpoint or "",
                      self.token_version, connector=self.connector)


def _problem_error(inst: Installation) -> AppNotUsable:
    where = inst.domain or inst.member_id
    if inst.status == UNINSTALLED:
        return AppNotUsable(
            f"the Bitrix24 app was uninstalled from {where}: install it there again (the client stays linked)",
            code="APP_UNINSTALLED",
        )
    if inst.status == INSTALLING:
        return AppNotUsable(f"the Bitrix24 app's installation on {where} is being stored: try again in a moment",
                            code="APP_NOT_INSTALLED")
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


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite keeps no zone; we only ever store UTC
        return value.replace(tzinfo=dt.UTC)
    return value


def _expiry(now: dt.datetime, seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else now + dt.timedelta(seconds=float(seconds))


class InstallationStore:
    """The installations table (``model``), in the app's database; ``cipher`` is a callable giving
    the app's MultiFernet (built on first use)."""

    def __init__(self, model: type, db: Any, cipher: Callable[[], Any], *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.model, self.db, self._cipher, self.sleep = model, db, cipher, sleep
        self.table = model.__table__
        # member_id -> (token_version it replaces, token pair, values): refreshed pairs not stored yet
        self.unsaved: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}

    # -- reading -----------------------------------------------------------------------------------

    def _installation(self, row: Any, *, with_secrets: bool = False) -> Installation:
        secrets = self._decrypt(row.credentials)
        return Installation(
            member_id=row.member_id, client_id=row.client_id, domain=row.domain, client_endpoint=row.client_endpoint,
            status=row.status, problem=row.problem, problem_detail=row.problem_detail, scope=row.scope,
            token_version=row.token_version, installed_at=_aware(row.installed_at),
            refreshed_at=_aware(row.refreshed_at), access_expires_at=_aware(row.access_expires_at),
            updated_at=_aware(row.updated_at), has_application_token=bool(secrets.get("application_token")),
            secrets=secrets if with_secrets else {}, connector=row.connector or "",
            offline_process_id=row.offline_process_id, installs=row.installs or 0,
            address_checked_at=_aware(row.address_checked_at),
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
        if not isinstance(member_id, str) or not MEMBER_ID.fullmatch(member_id):
            return None  # never a query with text no member_id has (NUL, say)
        return self._read(self.table.c.member_id == member_id, with_secrets=with_secrets)

    def for_client(self, client_id: int) -> Installation | None:
        return self._read(self.table.c.client_id == client_id)

    def all(self) -> list[Installation]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.id)).all()
        return [self._installation(row) for row in rows]

    def counts(self) -> list[tuple[str, str | None, int]]:
        """(status, problem, how many): for the metrics."""
        from sqlalchemy import func

        t = self.table
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(t.c.status, t.c.problem, func.count()).group_by(t.c.status, t.c.problem)).all()
        return [(status, problem, int(n)) for status, problem, n in rows]

    def tokens(self, member_id: str) -> Tokens:
        """The stored pair's access token for a call; ``AppNotUsable`` when the installation cannot call."""
        inst = self.get(member_id, with_secrets=True)
        problem = unusable(inst)
        if problem is not None:
            raise problem
        assert inst is not None
        return inst.tokens()

    # -- writing -----------------------------------------------------------------------------------

    def _lock(self, conn: Any, member_id: str) -> Any:
        """Take the row's lock for this transaction (a write to it) and read it."""
        conn.execute(update(self.table).where(self.table.c.member_id == member_id)
                     .values(token_version=self.table.c.token_version))
        return conn.execute(select(self.table).where(self.table.c.member_id == member_id)).first()

    def install(self, grant: Grant, *, domain: str | None, application_token: str | None) -> tuple[Installation, bool]:
        """Store a verified installation (a new one, or a reinstall of a known portal: new tokens, the
        link to the client kept, any problem cleared). Returns (installation, created)."""
        now = utcnow()
        created = False
        try:  # the row first, so that two first installs at once meet at its lock
            with self.db.engine.begin() as conn:
                conn.execute(self.table.insert().values(
                    member_id=grant.member_id, client_id=None, status=INSTALLING, token_version=0, installed_at=now,
                    updated_at=now))
            created = True
        except IntegrityError:
            pass  # known already (or being added by another request): updated below, under its lock
        with self.db.engine.begin() as conn:
            row = self._lock(conn, grant.member_id)
            kept = self._decrypt(row.credentials).get("application_token") if row.status == ACTIVE else None
            secrets = {"access_token": grant.access_token, "refresh_token": grant.refresh_token}
            if application_token or kept:
                # The install page brings none: the one ONAPPINSTALL gave is kept.
                secrets["application_token"] = application_token or kept
            conn.execute(update(self.table).where(self.table.c.id == row.id).values(
                domain=domain, client_endpoint=grant.client_endpoint, credentials=self._encrypt(secrets),
                scope=grant.scope, status=ACTIVE, problem=None, problem_detail=None, lease_holder=None,
                lease_until=None, access_expires_at=_expiry(now, grant.expires_in), refreshed_at=now, updated_at=now,
                installed_at=now, token_version=self.table.c.token_version + 1, installs=self.table.c.installs + 1))
        inst = self.get(grant.member_id)
        assert inst is not None
        return inst, created

    def set_application_token(self, member_id: str, token: str, *, replace: str | None = None) -> bool:
        """Keep the application token a verified event gave. Only where none is kept yet, or where it
        is still ``replace`` (what the caller checked against): never over one set meanwhile."""
        with self.db.engine.begin() as conn:
            row = self._lock(conn, member_id)
            if row is None or row.status != ACTIVE:
                return False
            secrets = self._decrypt(row.credentials)
            if secrets.get("application_token") not in (None, "", replace):
                return False
            secrets["application_token"] = token
            conn.execute(update(self.table).where(self.table.c.id == row.id)
                         .values(credentials=self._encrypt(secrets), updated_at=utcnow()))
        return True

    def set_values(self, member_id: str, **values: Any) -> None:
        """Plain columns (``connector``, ``offline_process_id``), in a transaction of their own."""
        with self.db.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.member_id == member_id)
                         .values(updated_at=utcnow(), **values))

    def claim_drain(self, member_id: str, holder: str, seconds: float) -> bool:
        """Take the installation's offline drain for ``seconds`` unless another holder has it."""
        now = utcnow()
        t = self.table
        with self.db.engine.begin() as conn:
            done = conn.execute(update(t).where(
                t.c.member_id == member_id,
                t.c.offline_claim.is_(None) | (t.c.offline_claimed_until < now) | (t.c.offline_claim == holder),
            ).values(offline_claim=holder, offline_claimed_until=now + dt.timedelta(seconds=seconds))).rowcount
        return bool(done)

    def release_drain(self, member_id: str, holder: str) -> None:
        t = self.table
        with self.db.engine.begin() as conn:
            conn.execute(update(t).where(t.c.member_id == member_id, t.c.offline_claim == holder)
                         .values(offline_claim=None, offline_claimed_until=None))

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

    def uninstall(self, member_id: str, *, installs: int | None = None) -> bool:
        """The portal removed the app: no token is kept (the link to the client stays, to explain).
        With ``installs``, only if no reinstall came since the caller checked (a refresh may have)."""
        where = [self.table.c.member_id == member_id]
        if installs is not None:
            where.append(self.table.c.installs == installs)
        with self.db.engine.begin() as conn:
            done = conn.execute(update(self.table).where(*where).values(
                credentials=None, status=UNINSTALLED, problem=None, problem_detail=None, access_expires_at=None,
                lease_holder=None, lease_until=None, token_version=self.table.c.token_version + 1,
                updated_at=utcnow())).rowcount
        return bool(done)

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

    # -- the refresh ----------------------------------------------------------------------------------

    def _try_lease(self, member_id: str, used: str, me: str, *, may_refresh: bool, force: bool) -> Any:
        """Tokens to use now, or (installation, refresh token) with the lease taken, or None: someone
        else holds it. Looked at without a lock first (waiters only read), locked to take it."""
        for locked in (False, True):
            with self.db.engine.begin() as conn:
                row = self._lock(conn, member_id) if locked else \
                    conn.execute(select(self.table).where(self.table.c.member_id == member_id)).first()
                inst = None if row is None else self._installation(row, with_secrets=True)
                problem = unusable(inst)
                if problem is not None:
                    raise problem
                assert inst is not None and row is not None
                now = utcnow()
                stored = inst.tokens()
                expired = inst.access_expires_at is not None and inst.access_expires_at <= now
                if stored.access_token != used and (force or not expired):
                    return stored
                lease = _aware(row.lease_until)
                if lease is not None and lease > now:
                    return None
                if not (may_refresh or force):
                    return stored  # nothing newer, and nobody is getting one
                if locked:
                    conn.execute(update(self.table).where(self.table.c.id == row.id).values(
                        lease_holder=me, lease_until=now + dt.timedelta(seconds=LEASE_SECONDS)))
                    return inst, inst.secrets.get("refresh_token") or ""
        return None

    def renew(self, member_id: str, used_access_token: str, refresh: Callable[[str], Grant], *,
              may_refresh: bool = True, force: bool = False, wait: float = 20.0) -> tuple[Tokens, bool]:
        """The pair to use after ``used_access_token`` was refused. Returns (tokens, refreshed).

        - The stored pair, when another process replaced the refused one and it has not expired.
        - Else, with ``may_refresh``, a new pair from ``refresh(refresh_token)`` (one process at a
          time: the lease), stored before it is handed out.
        - ``force`` (a portal that redirects: renamed?) refreshes even a current pair, to learn the
          portal's address from the OAuth server (the caller keeps that rare), unless another process
          has just replaced the pair.
        ``refresh`` raises ``RefreshRefused`` to refuse for good: the installation is marked first."""
        me = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while True:
            outcome = self._try_lease(member_id, used_access_token, me, may_refresh=may_refresh, force=force)
            if isinstance(outcome, Tokens):
                return outcome, False
            if outcome is not None:
                inst, refresh_token = outcome
                break
            # Another process is refreshing: its pair will be in the row when its lease goes.
            if time.monotonic() >= deadline:
                raise LockTimeout(f"the app's token refresh for {member_id} took longer than {wait:.0f} s")
            self.sleep(LEASE_POLL)
        try:
            grant = refresh(refresh_token)  # outside any transaction: no lock held while the network is slow
        except RefreshRefused as exc:
            self._finish(member_id, me, status=NEEDS_ATTENTION, problem=exc.problem[:64],
                         problem_detail=exc.detail[:2000])
            inst.status, inst.problem = NEEDS_ATTENTION, exc.problem
            raise _problem_error(inst) from None
        except BaseException:
            try:
                self._finish(member_id, me)  # nothing changed: the next caller may try
            except SQLAlchemyError:
                pass  # the lease runs out by itself
            raise
        now = utcnow()
        pair = {"access_token": grant.access_token, "refresh_token": grant.refresh_token}
        endpoint = grant.client_endpoint or inst.client_endpoint or ""
        values: dict[str, Any] = dict(
            client_endpoint=endpoint, scope=grant.scope or inst.scope, access_expires_at=_expiry(now, grant.expires_in),
            token_version=inst.token_version + 1, refreshed_at=now, status=ACTIVE, problem=None, problem_detail=None)
        if endpoint != inst.client_endpoint:
            values["domain"] = portal_domain(endpoint)
        self.unsaved[member_id] = (inst.token_version, pair, values)
        try:
            self.flush_unsaved(member_id, quiet=False)
        except Exception:  # noqa: BLE001 - kept: see below
            # The pair is good and the refresh token it replaced is spent: keep it here, use it, and
            # store it as soon as the database takes it (flush_unsaved, before each call's token lookup).
            log.error("bitrix24 app %s: a refreshed token pair could not be stored yet; this process keeps it "
                      "and stores it on its next call", member_id, exc_info=True)
        return Tokens(member_id, grant.access_token, endpoint, inst.token_version + 1, fresh=True,
                      connector=inst.connector), True

    def flush_unsaved(self, member_id: str, *, quiet: bool = True) -> None:
        """Store a refreshed pair ``renew`` holds (retried a few times: losing it would cost a
        reinstall) and free the lease. It is stored where the row still holds the pair it replaced
        (``token_version`` unchanged), whoever holds the lease by now and even if a process that
        tried the spent refresh token meanwhile marked the installation (that mark is lifted); never
        over a reinstall or an uninstall, which change the version."""
        pending = self.unsaved.get(member_id)
        if pending is None:
            return
        version, pair, values = pending
        waits = () if quiet else SAVE_RETRIES
        done = 0
        for attempt in range(len(waits) + 1):
            try:
                with self.db.engine.begin() as conn:
                    # The secrets as they are now (an application token may have come meanwhile), with the pair.
                    row = self._lock(conn, member_id)
                    if row is not None and row.token_version == version and row.status != UNINSTALLED:
                        credentials = self._encrypt({**self._decrypt(row.credentials), **pair})
                        done = conn.execute(update(self.table).where(
                            self.table.c.id == row.id, self.table.c.token_version == version).values(
                            credentials=credentials, lease_holder=None, lease_until=None, updated_at=utcnow(),
                            **values)).rowcount
                break
            except Exception:
                if attempt == len(waits):
                    if quiet:
                        return
                    raise
                self.sleep(waits[attempt])
        self.unsaved.pop(member_id, None)
        if not done:
            log.error("bitrix24 app %s: a reinstall or an uninstall came before the refreshed pair was stored; "
                      "the pair is dropped", member_id)

    def address_check_due(self, member_id: str, seconds: float) -> bool:
        """Claim a "has the portal moved?" refresh for this installation: at most one per ``seconds``,
        whichever process asks."""
        now = utcnow()
        t = self.table
        with self.db.engine.begin() as conn:
            done = conn.execute(update(t).where(
                t.c.member_id == member_id,
                t.c.address_checked_at.is_(None) | (t.c.address_checked_at < now - dt.timedelta(seconds=seconds)),
            ).values(address_checked_at=now)).rowcount
        return bool(done)

    def _finish(self, member_id: str, holder: str, **values: Any) -> None:
        """Free the lease (where it is still ours), with ``values`` written at the same time."""
        with self.db.engine.begin() as conn:
            conn.execute(update(self.table).where(
                self.table.c.member_id == member_id, self.table.c.lease_holder == holder).values(
                **values, lease_holder=None, lease_until=None, updated_at=utcnow()))


__all__ = ["ACTIVE", "Grant", "INSTALLING", "Installation", "InstallationStore", "NEEDS_ATTENTION", "RefreshRefused",
           "Tokens", "UNINSTALLED", "unusable"]
