"""The mirror over real HTTP: a tenant's contacts copied into our database, then kept equal to the
portal through changes whose events were lost (the incremental walk and the ID comparison find them),
through pushed events, and through a copy that dies halfway (it resumes at its checkpoint)."""

from __future__ import annotations

import time

import pytest
import requests
from flask_bitrix24.runtime import runtime
from flask_bitrix24.services import mirror
from flask_bitrix24.services.bulk import bx_list_all
from sqlalchemy import func, select

pytestmark = pytest.mark.slow

CONFIG = {"BITRIX_SYNC_ENTITIES": "contacts", "BITRIX_RECONCILE_OVERLAP": 0.5}


def sync(app, *args: str):
    result = app.test_cli_runner().invoke(args=["bitrix24", "sync", "contacts", "--client", "1", *args])
    assert result.exit_code == 0, result.output
    return result.output


def portal_rows(app) -> dict[int, dict]:
    """What the portal lists now, with the mirror's own select, through the same client."""
    with app.app_context():
        fields = mirror.select_fields(mirror.ENTITIES["contacts"], 1)
        return {int(row["ID"]): row for row in bx_list_all("crm.contact.list", {"select": fields}, client_id=1)}


def mirror_rows(app, deleted: bool = False) -> dict[int, dict]:
    with app.app_context():
        model = runtime().mirror_models["contacts"]
        rows = runtime().session.execute(select(model.bitrix_id, model.data).where(
            model.client_id == 1, model.deleted.is_(deleted))).all()
        return {int(i): data for i, data in rows}


def assert_mirror_matches(app) -> int:
    portal, ours = portal_rows(app), mirror_rows(app)
    assert set(ours) == set(portal), (sorted(set(portal) - set(ours))[:10], sorted(set(ours) - set(portal))[:10])
    different = [i for i in portal if portal[i] != ours[i]]
    assert not different, (different[:5], portal[different[0]], ours[different[0]])
    return len(portal)


def test_copy_then_lost_changes_then_events_keep_the_mirror_equal_to_the_portal(make_stack):
    stack = make_stack(CONFIG, preload={"contact": 1200})
    stack.configure()
    emulator = stack.emulator_server.url
    time.sleep(1.1)  # the preloaded contacts are older than the copy's start (timestamps have seconds)

    out = sync(stack.app)
    assert "1,200 copied, 0 changed" in out, out
    assert assert_mirror_matches(stack.app) == 1200
    status = stack.http.get(f"{stack.api}/clients/1/sync").json()["mirror"][0]
    assert status["enabled"] and status["phase"] == "incremental" and status["rows"] == 1200
    assert status["checkpoint"] == "1200" and status["errors"] == 0 and status["lag_seconds"] < 60

    # Changes in the portal whose events never arrive: 40 updates, 15 deletions, 6 additions.
    assert requests.post(f"{emulator}/_emulator/events", json={"drop": True}, timeout=10).status_code == 200
    time.sleep(1.1)
    changes = requests.post(f"{emulator}/_emulator/changes", json={
        "entity": "contact", "add": 6, "update": list(range(100, 1100, 25)), "delete": list(range(7, 1200, 80)),
    }, timeout=10).json()
    assert len(changes["updated"]) == 40 and len(changes["deleted"]) == 15
    stack.emulator.wait_events()
    out = sync(stack.app, "--check-ids")
    assert "0 copied, 46 changed, 15 deleted, 0 found missing" in out, out
    assert assert_mirror_matches(stack.app) == 1200 + 6 - 15
    assert set(mirror_rows(stack.app, deleted=True)) == set(changes["deleted"])

    # A second run finds nothing new (the overlap reads the same rows again: they are not newer).
    assert "0 copied, 0 changed, 0 deleted" in sync(stack.app, "--check-ids")

    # Events arrive again: an update and a deletion reach the mirror without any run.
    requests.post(f"{emulator}/_emulator/events", json={"drop": False}, timeout=10)
    time.sleep(1.1)
    requests.post(f"{emulator}/_emulator/changes", json={"entity": "contact", "update": [500], "delete": [501]},
                  timeout=10)
    assert stack.emulator.wait_events(30)
    # Each event's handlers run after its answer, in the server thread that took it, so the update's and
    # the deletion's can finish in either order: wait for both to show in the mirror.
    updated = portal_rows(stack.app)[500]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            501 in mirror_rows(stack.app, deleted=True) and mirror_rows(stack.app).get(500) == updated):
        time.sleep(0.1)
    assert assert_mirror_matches(stack.app) == 1200 + 6 - 15 - 1
    status = stack.http.get(f"{stack.api}/clients/1/sync").json()["mirror"][0]
    assert status["rows"] == 1190 and status["deleted_rows"] == 16


def test_a_copy_that_dies_resumes_at_its_checkpoint(make_stack):
    stack = make_stack(CONFIG, preload={"contact": 1700})
    stack.configure()

    class Killed(BaseException):
        pass

    def die_after_two_chunks(step: str, count: int) -> None:
        if step == "copied" and count >= 1000:
            raise Killed

    with stack.app.app_context(), pytest.raises(Killed):
        mirror.sync(1, "contacts", progress=die_after_two_chunks)
    status = stack.http.get(f"{stack.api}/clients/1/sync").json()["mirror"][0]
    assert status["phase"] == "copy" and status["checkpoint"] == "1000" and status["rows"] == 1000
    assert not status["running"]  # the claim went with the run

    stats_before = requests.get(f"{stack.emulator_server.url}/_emulator/stats", timeout=10).json()
    out = sync(stack.app)
    assert "700 copied" in out, out  # the rest only
    assert assert_mirror_matches(stack.app) == 1700
    with stack.app.app_context():
        model = runtime().mirror_models["contacts"]
        assert runtime().session.execute(select(func.count()).select_from(model)).scalar() == 1700
    stats = requests.get(f"{stack.emulator_server.url}/_emulator/stats", timeout=10).json()
    assert stats["requests"] - stats_before["requests"] < 10, (stats, stats_before)  # 700 rows: not the whole list again


def test_sync_refuses_what_it_cannot_do(make_stack):
    stack = make_stack(CONFIG)
    stack.configure()
    runner = stack.app.test_cli_runner()
    result = runner.invoke(args=["bitrix24", "sync", "deals", "--client", "1"])
    assert result.exit_code == 2 and "BITRIX_SYNC_ENTITIES" in result.output
    result = runner.invoke(args=["bitrix24", "sync", "contacts"])
    assert result.exit_code == 2 and "--client" in result.output


def test_the_worker_queues_one_job_per_tenant_and_entity_and_runs_them(make_stack, redis_url):
    """``worker --burst`` with RQ: the timer queues each tenant's sync as its own job (twice asked,
    queued once), the RQ worker runs them, and both tenants' mirrors match the portal."""
    from flask_bitrix24.services.schedule import Schedule

    stack = make_stack({**CONFIG, "BITRIX_REDIS_URL": redis_url}, preload={"contact": 300})
    stack.configure(client_id=1)
    stack.configure(client_id=2, token="e2e-application-token-2")
    with stack.app.app_context():
        for cid in (1, 2):
            mirror.enable(cid, "contacts")
        queue = runtime().event_queue
        first, again = Schedule(stack.app).run_due(), Schedule(stack.app).run_due()
        assert first == {"sync_jobs": 2} and again == {"sync_jobs": 2}  # the second asks, finds them waiting
        assert queue.jobs.count == 2 and queue.queue.count == 0  # scheduled work waits behind events
    result = stack.app.test_cli_runner().invoke(args=["bitrix24", "worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert assert_mirror_matches(stack.app) == 300
    with stack.app.app_context():
        views = {cid: mirror.status(cid)[0] for cid in (1, 2)}
    assert all(v["rows"] == 300 and v["phase"] == "incremental" and v["errors"] == 0 for v in views.values()), views


def test_turned_off_then_on_it_catches_up_and_a_mass_deletion_asks_first(make_stack):
    """Off, the mirror's cursor stays where it stopped even while reconciliation moves on; on again, the
    next run finds what changed meanwhile. An ID comparison that would delete most rows (the webhook's user
    lost sight of them, more often than the portal lost them) asks for --accept-deletions first."""
    stack = make_stack({**CONFIG, "BITRIX_RECONCILE_ENTITIES": "contacts", "BITRIX_RECONCILE_LOOKBACK": 0},
                       preload={"contact": 300})
    stack.configure()
    emulator = stack.emulator_server.url
    time.sleep(2.1)  # older than the copy's start and its overlap (the portal's times have seconds)
    assert "300 copied" in sync(stack.app)
    assert "mirror off" in sync(stack.app, "--off")
    requests.post(f"{emulator}/_emulator/events", json={"drop": True}, timeout=10)
    time.sleep(1.1)
    requests.post(f"{emulator}/_emulator/changes", json={"entity": "contact", "update": [10, 20, 30]}, timeout=10)
    result = stack.app.test_cli_runner().invoke(args=["bitrix24", "reconcile", "--client-id", "1"])
    assert result.exit_code == 0 and "3 not announced" in result.output, result.output
    assert "0 copied, 3 changed" in sync(stack.app, "--no-check-ids")  # on again: caught up
    assert assert_mirror_matches(stack.app) == 300

    requests.post(f"{emulator}/_emulator/changes", json={"entity": "contact", "delete": list(range(1, 201))},
                  timeout=10)
    result = stack.app.test_cli_runner().invoke(args=["bitrix24", "sync", "contacts", "--client", "1", "--check-ids"])
    assert result.exit_code == 0 and "0 deleted" in result.output and "--accept-deletions" in result.output
    assert len(mirror_rows(stack.app)) == 300
    status = stack.http.get(f"{stack.api}/clients/1/sync").json()["mirror"][0]
    assert "--accept-deletions" in status["last_error"]
    assert "200 deleted" in sync(stack.app, "--check-ids", "--accept-deletions")
    assert assert_mirror_matches(stack.app) == 100
