"""Where accepted events go to be handled: inline (after the answer is sent) or an RQ queue.

Either way the database row is the source of truth (status, attempts, next_attempt_at): a queue
only says "look at event N now", so a lost queue message or a crashed worker delays an event but
never loses it (``flask bitrix24 worker`` sweeps up what is due).
"""

from __future__ import annotations

import logging

from flask import Flask

from .redis_pool import redis_client

log = logging.getLogger("flask_bitrix24")

QUEUE_NAME = "bitrix24-events"
JOBS_QUEUE_NAME = "bitrix24-jobs"  # scheduled work (syncs, reconciliations): workers take events first
JOB_TIMEOUT = 1800  # a sync runs in slices this long at most; the next one resumes at its checkpoint


class InlineQueue:
    """No Redis: handlers run in the web process, right after the answer to Bitrix24 is sent."""

    name = "inline"

    def submit(self, event_id: int) -> bool:
        return False  # the caller runs it after the response

    def ping(self) -> bool:
        return True


class RQQueue:
    """With BITRIX_REDIS_URL: an RQ job per event, run by ``flask bitrix24 worker``."""

    name = "rq"

    def __init__(self, url: str) -> None:
        try:
            from rq import Queue
        except ImportError:
            raise RuntimeError(
                "BITRIX_REDIS_URL is set but Redis support is not installed: pip install 'flask-bitrix24[redis]'"
            ) from None

        self.connection = redis_client(url)
        self.queue = Queue(QUEUE_NAME, connection=self.connection)
        self.jobs = Queue(JOBS_QUEUE_NAME, connection=self.connection)

    def submit(self, event_id: int) -> bool:
        from .events import run_event_job

        try:
            # The function itself, so RQ records its real module path (flask_bitrix24.services...,
            # whatever the host's own package is called).
            self.queue.enqueue(run_event_job, event_id, job_timeout=600, result_ttl=3600, failure_ttl=7 * 86400)
        except Exception as exc:  # Redis down: the event is stored; the worker's sweep will find it
            log.error("could not queue Bitrix24 event %s: %s", event_id, exc)
            return False
        return True

    def submit_job(self, func, *args, job_id: str, abandoned=None) -> bool:
        """A scheduled job (a tenant's sync, a reconciliation) on the jobs queue, under ``job_id``, unless
        one of that id is still waiting or running: a slow job is not piled up by the next tick. A job
        said to be running whose run no longer holds its claim (``abandoned()``: its worker was killed)
        is queued again at once, not after RQ's own timeout."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            try:
                found = Job.fetch(job_id, connection=self.connection).get_status(refresh=False)
                status = str(getattr(found, "value", found))  # an enum in newer RQ, a string in older
                if status in ("queued", "deferred", "scheduled") or (
                        status == "started" and not (abandoned is not None and abandoned())):
                    return True
            except NoSuchJobError:
                pass
            self.jobs.enqueue(func, *args, job_id=job_id, job_timeout=JOB_TIMEOUT, result_ttl=600,
                              failure_ttl=7 * 86400)
        except Exception as exc:  # Redis down: the next tick queues it again
            log.error("could not queue %s: %s", job_id, exc)
            return False
        return True

    def ping(self) -> bool:
        return bool(self.connection.ping())


EventQueue = InlineQueue | RQQueue


def make_event_queue(redis_url: str | None) -> EventQueue:
    return RQQueue(redis_url) if redis_url else InlineQueue()


def app_job_class(app: Flask) -> type:
    """An RQ ``Job`` class whose jobs run inside a fresh app context of ``app`` (as Flask-RQ's
    does): each job gets the app's config, its handlers and a new database session, which the
    context's teardown closes even when the job fails."""
    from rq.job import Job

    class AppContextJob(Job):
        def perform(self):  # noqa: D102 - RQ's
            with app.app_context():
                return super().perform()

    return AppContextJob
