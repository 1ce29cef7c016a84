"""``flask bitrix24 ...`` commands."""

from __future__ import annotations

import click
from cryptography.fernet import Fernet
from flask.cli import AppGroup, with_appcontext

from .cli_transfer import export_command, import_command
from .models.status import STATUSES

bitrix24_cli = AppGroup("bitrix24", help="Bitrix24 integration: setup and maintenance.")


@bitrix24_cli.command("setup")
@with_appcontext
def setup_command() -> None:
    """Check (in a host app) or create (standalone) the integration's tables, and add the Bitrix24
    CRM row where the store says how (idempotent). Exits 1 with what to do when something is missing."""
    from .services.setup import SetupIncomplete, run_setup

    try:
        report = run_setup()
    except SetupIncomplete as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise SystemExit(1)


@bitrix24_cli.command("generate-key")
def generate_key_command() -> None:
    """Print a new key for BITRIX_SECRET_KEY (put it first in the list to rotate)."""
    click.echo(Fernet.generate_key().decode("ascii"))


events_cli = AppGroup("events", help="The Bitrix24 event log: list, replay, retry failed.")
bitrix24_cli.add_command(events_cli)
bitrix24_cli.add_command(export_command)
bitrix24_cli.add_command(import_command)


@events_cli.command("list")
@click.option("--client-id", type=int, default=None, help="only this client's events")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--event", "name", default=None, help="e.g. ONCRMDEALUPDATE")
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
@with_appcontext
def events_list_command(client_id: int | None, status: str | None, name: str | None, limit: int) -> None:
    """Newest events first: id, status, attempts, event, entity, client, last error."""
    from .services.events import list_events

    rows, total = list_events(client_id, status=status, name=name, limit=limit)
    for row in rows:
        error = f"  {row.last_error}" if row.last_error else ""
        entity = f"{row.entity_type or '-'}:{row.entity_id or '-'}"
        client = row.client_id if row.client_id is not None else "-"
        click.echo(f"{row.id}\t{row.status}\t{row.attempts}\t{row.event}\t{entity}\tclient {client}{error}")
    click.echo(f"{len(rows)} of {total} events")


@events_cli.command("replay")
@click.argument("event_id", type=int)
@with_appcontext
def events_replay_command(event_id: int) -> None:
    """Run an event's handlers again (queued to the worker when Redis is configured)."""
    from .services import events
    from .services.events import replay

    try:
        row = replay(event_id)
    except LookupError:
        raise click.ClickException(f"no event {event_id}") from None
    except events.EventBusy as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"event {row.id}: {row.status}" + (f" ({row.last_error})" if row.last_error else ""))


@events_cli.command("retry-failed")
@click.option("--client-id", type=int, default=None)
@with_appcontext
def events_retry_failed_command(client_id: int | None) -> None:
    """Replay every event kept as failed."""
    from .services.events import retry_failed

    click.echo(f"replayed {retry_failed(client_id)} failed events")


def _stop_listening(worker) -> None:
    """End an RQ worker's pubsub listener (its channel for RQ's stop and kill commands) in about a
    second at most, whatever the Redis client.

    RQ's own ``unsubscribe`` unsubscribes, then calls the listener thread's ``stop()``. The
    unsubscribe's reply can wake the thread before ``stop()`` clears its flag; the thread then waits
    again, up to RQ's 60 s read timeout (or on redis-py's "subscribed" event, which nothing sets
    any more). From redis-py 8, ``stop()`` joins the thread with no timeout, so a SIGTERM took up to
    a minute to end the process: past the grace most supervisors give before SIGKILL. Here the flag
    is cleared first (``stop(timeout=0)`` where redis-py joins, ``stop()`` where it does not), then
    the unsubscribe wakes a thread that is reading, and a thread still waiting is left to die with
    the process (it is a daemon). Redis being gone is not an error here: the connection is closed.
    """
    thread, pubsub = getattr(worker, "pubsub_thread", None), getattr(worker, "pubsub", None)
    if thread is None or pubsub is None:
        return
    worker.pubsub_thread = None
    worker.log.info("Worker %s: unsubscribing from channel %s", worker.name, worker.pubsub_channel_name)
    try:
        thread.stop(timeout=0)
    except TypeError:  # redis-py before 8: stop() only clears the flag
        thread.stop()
    try:
        pubsub.unsubscribe()
    except Exception:  # noqa: BLE001 - Redis gone: closing below is all that is left to do
        pass
    thread.join(timeout=1)
    try:
        pubsub.close()
    except Exception:  # noqa: BLE001
        pass


def _run_rq_worker(queue, job_class: type, burst: bool) -> None:
    """RQ's worker, started again whenever it quits on an error instead of a stop request.

    RQ rides out a Redis outage met while it waits for a job, but one met anywhere else in its loop
    (the suspension check, a heartbeat, maintenance) ends ``work()`` ("found an unhandled exception,
    quitting"), and its teardown then fails on the same outage. The events are safe in the table, but
    nothing would run them until someone restarted the process: so we start it again, with backoff,
    until a signal asks it to stop.
    """
    import time

    from rq import SimpleWorker

    try:
        from rq.exceptions import StopRequested
    except ImportError:  # rq < 2
        from rq.worker import StopRequested

    class Worker(SimpleWorker):
        # No fork per job: a forked child would share the parent's database connections. Run
        # several workers for parallelism.
        stop_asked = False

        def request_stop(self, signum, frame):  # SIGTERM / SIGINT: a warm shutdown
            self.stop_asked = True
            super().request_stop(signum, frame)

        def unsubscribe(self):
            _stop_listening(self)

    delay = 1.0
    while True:
        worker = None
        started = time.monotonic()
        try:
            # Each job in a fresh app context of this app: the host's handlers, a new session. (Making
            # the worker already talks to Redis.)
            # Events first, then scheduled work (syncs): RQ takes from the first queue that has a job.
            worker = Worker([queue.queue, queue.jobs], connection=queue.connection, job_class=job_class)
            worker.work(burst=burst)
            failure: Exception | None = None
        except StopRequested:
            return
        except Exception as exc:  # noqa: BLE001 - typically Redis, gone during the loop or its teardown
            failure = exc
            if worker is not None:
                _stop_listening(worker)  # its teardown may have failed before it did: no listener left behind
        stop_asked = worker is not None and worker.stop_asked
        if stop_asked or (burst and failure is None):
            return
        if burst:  # draining once: say why it could not, and let the caller run it again
            raise click.ClickException(f"the RQ worker stopped: {failure}")
        if time.monotonic() - started > 60:
            delay = 1.0  # it ran a good while: this is a new outage, not the same one
        click.echo(f"the RQ worker stopped ({failure or 'it quit on an error'}); starting it again in "
                   f"{delay:.0f} s", err=True)
        try:
            time.sleep(delay)  # RQ's signal handlers still point at the last worker
        except StopRequested:
            return
        if worker is not None and worker.stop_asked:
            return
        delay = min(30.0, delay * 2)


@bitrix24_cli.command("offline-drain")
@click.option("--member-id", default=None, help="one installation (its portal's member_id); default: all")
@click.option("--client-id", type=int, default=None, help="the installation linked to this client")
@with_appcontext
def offline_drain_command(member_id: str | None, client_id: int | None) -> None:
    """Fetch the portal's offline events of app installations into the event log, and run the handlers.
    The worker does this on its own every BITRIX_OFFLINE_DRAIN_SECONDS."""
    from .runtime import runtime
    from .services import offline

    rt = runtime()
    if not rt.app_mode:
        raise click.ClickException("app mode is off: set BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET")
    if client_id is not None:
        inst = rt.installations.for_client(client_id)
        if inst is None:
            raise click.ClickException(f"no installation is linked to client {client_id}")
        member_id = inst.member_id
    reports = [offline.drain(member_id)] if member_id else offline.drain_all()
    for report in reports:
        view = report.view()
        click.echo(f"{view['member_id']}: {view['stored']} stored, {view['duplicates']} already stored, "
                   f"{view['failed']} refused, {view['batches']} batches"
                   + (" (busy elsewhere)" if view["busy"] else ""))


@bitrix24_cli.command("reconcile")
@click.option("--client-id", type=int, default=None, help="one client; default: every configured client")
@click.option("--entity", default=None, help="one entity (contacts, deals, leads, companies); default: "
              "BITRIX_RECONCILE_ENTITIES")
@with_appcontext
def reconcile_command(client_id: int | None, entity: str | None) -> None:
    """List what changed since the last run and hand the changes no event announced to the handlers
    (synthetic events). The worker does this every BITRIX_RECONCILE_SECONDS."""
    from .runtime import runtime
    from .services import reconcile
    from .services.errors import Bitrix24Error

    if runtime().sync_state_model is None:
        raise click.ClickException("reconciliation is off: set BITRIX_RECONCILE_ENTITIES (e.g. contacts,deals)")
    clients = [client_id] if client_id is not None else reconcile.tenants()
    names = [entity] if entity else reconcile.entities()
    for cid in clients:
        for name in names:
            try:
                report = reconcile.reconcile(cid, name)
            except (Bitrix24Error, ValueError) as exc:
                raise click.ClickException(f"client {cid} {name}: {exc}") from None
            click.echo(f"client {cid} {name}: {report.listed} changed, {report.unannounced} not announced")


@bitrix24_cli.command("sync")
@click.argument("entity")
@click.option("--client", "--client-id", "client_id", type=click.IntRange(1, 2**31 - 1), default=None,
              help="the tenant whose mirror to fill and update (turns it on)")
@click.option("--all", "every", is_flag=True, help="every tenant whose mirror of ENTITY is on")
@click.option("--check-ids/--no-check-ids", default=None,
              help="compare every ID with the portal's now (finds deletions nobody announced); default: "
                   "when BITRIX_SYNC_ID_CHECK_SECONDS have passed")
@click.option("--accept-deletions", is_flag=True,
              help="let an ID comparison mark more than half of the rows deleted (else it asks for this)")
@click.option("--off", is_flag=True, help="turn this tenant's mirror of ENTITY off (its rows stay)")
@click.option("--status", "show", is_flag=True, help="print the tenant's mirrors' state, run nothing")
@with_appcontext
def sync_command(entity: str, client_id: int | None, every: bool, check_ids: bool | None, accept_deletions: bool,
                 off: bool, show: bool) -> None:
    """Copy a tenant's ENTITY (contacts, deals, leads, companies) into this database and keep it up to date:
    the first run copies everything (resumable), later runs store what changed since the last one. The
    worker repeats it every BITRIX_SYNC_SECONDS; events keep it current in between."""
    import json

    from .services import mirror
    from .services.errors import Bitrix24Error

    entity = entity.strip().lower()
    if (client_id is None) == (not every):
        raise click.UsageError("name one tenant with --client N, or --all")
    clients = [c for c, name in mirror.pairs() if name == entity] if every else [client_id]
    try:
        if show:
            for cid in clients:
                rows = [row for row in mirror.status(cid) if row["entity"] == entity]
                click.echo(json.dumps({"client_id": cid, "mirror": rows}, default=str))
            return
        if off:
            for cid in clients:
                mirror.enable(cid, entity, on=False)
                click.echo(f"client {cid} {entity}: mirror off (its rows stay)")
            return
        failed = []
        for cid in clients:
            def progress(step: str, count: int, cid: int = cid) -> None:
                click.echo(f"client {cid} {entity}: {step} {count:,}", err=True)

            try:
                report = mirror.sync(cid, entity, check_ids=check_ids, accept_deletions=accept_deletions,
                                     progress=progress)
            except Bitrix24Error as exc:  # this tenant's portal or config; the others go on
                failed.append(cid)
                click.echo(f"client {cid} {entity}: {exc} (the next run resumes where this one stopped)", err=True)
                continue
            if report.busy:
                click.echo(f"client {cid} {entity}: another run is syncing it (a killed one holds it for at most "
                           f"{mirror.CLAIM_SECONDS // 60} minutes); nothing done")
                continue
            click.echo(f"client {cid} {entity}: {report.copied:,} copied, {report.changed:,} changed, "
                       f"{report.deleted:,} deleted, {report.restored:,} found missing; cursor {report.cursor}")
            for note in report.notes:
                click.echo(f"client {cid} {entity}: {note}", err=True)
    except mirror.MirrorUnavailable as exc:
        raise click.UsageError(str(exc)) from None
    if failed:
        raise click.ClickException(f"{entity}: client(s) {', '.join(map(str, failed))} failed (see above)")


@bitrix24_cli.command("worker")
@click.option("--burst", is_flag=True, help="handle what is there and what the timers say is due, then exit")
@click.option("--interval", type=float, default=5.0, help="seconds between sweeps for due retries")
@with_appcontext
def worker_command(burst: bool, interval: float) -> None:
    """Handle events: the RQ worker with BITRIX_REDIS_URL, else a loop over the database.

    Either way it also sweeps the event log for retries that are due and for events nobody ran.
    """
    import threading

    from flask import current_app

    from .runtime import runtime
    from .services import events
    from .services.event_queue import app_job_class
    from .services.schedule import Schedule

    app = current_app._get_current_object()
    queue = runtime(app).event_queue
    stop = threading.Event()

    schedule = Schedule(app)  # offline drains, reconciliation, the mirrors (services/schedule.py)

    def forever(work, what: str) -> None:
        """``work()`` every ``interval`` seconds, each time in a fresh app context and session (as RQ jobs
        are), until the worker stops; a failure is said and the loop goes on: the database, Redis or the
        portal may come back."""
        while not stop.wait(interval):
            with app.app_context():
                try:
                    work()
                except Exception as exc:
                    runtime(app).session.rollback()
                    click.echo(f"{what} failed: {exc}", err=True)

    def sweep() -> None:
        events.run_due()
        schedule.run_due()

    # Everything due now (in bursts of 1,000; re-queued events stay "queued", so one pass each), and
    # the timers' work (a cron job running `worker --burst` gets drains, reconciliation and syncs too).
    # A database that is away now must not stop the worker: the sweeps find these events later.
    try:
        events.run_due(limit=100_000 if burst else 1000, stale_after=0 if burst else 60)
        if burst:
            schedule.run_due()
    except Exception as exc:
        runtime(app).session.rollback()
        click.echo(f"sweep failed: {exc}", err=True)
    finally:
        # The worker runs for days in this context: hand the connection back, or its read transaction
        # would stay open ("idle in transaction" on PostgreSQL, holding a snapshot and table locks).
        runtime(app).session.remove()
    if queue.name == "rq":
        # No fork per job: a forked child would share the parent's database connections. Run
        # several workers for parallelism.
        if not burst:
            threading.Thread(target=forever, args=(sweep, "sweep"), daemon=True).start()
        click.echo(f"Bitrix24 event worker (RQ) on {queue.queue.name}")
        try:
            _run_rq_worker(queue, app_job_class(app), burst)
        finally:
            stop.set()
        return
    click.echo("Bitrix24 event worker (no Redis: handling due events from the database)")
    if burst:
        return
    # The timers' work (a first copy may take minutes) in a thread of its own, beside the event loop.
    threading.Thread(target=forever, args=(schedule.run_due, "scheduled work"), daemon=True).start()
    try:
        forever(events.run_due, "sweep")
    finally:
        stop.set()
