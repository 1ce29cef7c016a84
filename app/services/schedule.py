"""The worker's timers: offline drains, reconciliation and the mirrors, each every so many seconds.

With RQ (``BITRIX_REDIS_URL``) reconciliation and mirror runs go to the queue as one job per tenant and
entity, under a fixed job id (a job still waiting or running is not queued twice), so every RQ worker
takes a share of many tenants and a slow tenant holds up nobody else; each job's own claim keeps two
runs of one tenant's entity apart. Without RQ they run here, one after another. Each tenant's calls go
through its portal's bucket and operating budget like any other, as background work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..runtime import runtime


class Schedule:
    def __init__(self, app: Flask, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.clock = app, clock
        self.ran: dict[str, float] = {}

    def due(self, name: str, setting: str, default: float) -> bool:
        last = self.ran.get(name)
        if last is not None and self.clock() - last < float(self.app.config.get(setting, default)):
            return False
        self.ran[name] = self.clock()
        return True

    def run_due(self) -> dict[str, Any]:
        """What is due now, run or queued; returns what it did (for the worker's log and the tests)."""
        from . import mirror, offline, reconcile

        rt = runtime(self.app)
        queue = rt.event_queue if rt.event_queue.name == "rq" else None
        done: dict[str, Any] = {}
        if rt.app_mode and self.due("drain", "BITRIX_OFFLINE_DRAIN_SECONDS", 300.0):
            done["drained"] = len(offline.drain_all())  # claims per installation; cheap when empty
        if rt.sync_state_model is not None and reconcile.entities() \
                and self.due("reconcile", "BITRIX_RECONCILE_SECONDS", 900.0):
            if queue is None:
                done["reconciled"] = len(reconcile.reconcile_all())
            else:
                done["reconcile_jobs"] = sum(
                    queue.submit_job(reconcile.run_job, cid, name, job_id=f"bitrix24-reconcile-{cid}-{name}")
                    for cid in reconcile.tenants() for name in reconcile.entities())
        if rt.mirror_models and self.due("sync", "BITRIX_SYNC_SECONDS", 900.0):
            if queue is None:
                done["synced"] = len(mirror.sync_all())
            else:
                done["sync_jobs"] = sum(
                    queue.submit_job(mirror.run_job, cid, name, job_id=f"bitrix24-sync-{cid}-{name}",
                                     abandoned=lambda cid=cid, name=name: mirror.claim_expired(cid, name))
                    for cid, name in mirror.pairs())
        return done


__all__ = ["Schedule"]
