"""Start an RQ worker for round jobs (``rsir worker``).

The worker's parent process only talks to Redis: it never imports torch, so CUDA is
never initialized before RQ forks a work horse for each job. A reaper thread beside it
recovers jobs whose worker died (see ``app.worker.dispatch``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker

from app.core.config import Settings, get_settings
from app.core.store import RoundStore
from app.worker.dispatch import on_work_horse_killed, reap_stalled

__all__ = ["Reaper", "RoundsWorker", "run_worker"]

logger = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Recovers stalled round jobs every ``settings.reaper_interval_s`` seconds."""

    def __init__(self, settings: Settings, worker_name: str) -> None:
        super().__init__(name="rsir-reaper", daemon=True)
        self.settings = settings
        self.worker_name = worker_name
        # Clients of its own: the thread must not share connections with RQ's main loop.
        self.store = RoundStore(Redis.from_url(settings.redis_url, decode_responses=True))
        self.queue = Queue(settings.queue_name, connection=Redis.from_url(settings.redis_url))
        self._stopped = threading.Event()

    def reap_once(self) -> list[str]:
        """Recover every stalled job now; return their ids."""
        try:
            reaped = reap_stalled(
                self.store,
                self.queue,
                stale_after_s=self.settings.stale_after_s,
                timeout_s=self.settings.job_timeout_s,
            )
        except RedisError as exc:
            logger.warning("worker %s: looking for stalled round jobs failed: %s", self.worker_name, exc)
            return []
        if reaped:
            logger.warning("worker %s: recovered stalled round job(s) %s", self.worker_name, ", ".join(reaped))
        return reaped

    def run(self) -> None:
        while not self._stopped.wait(self.settings.reaper_interval_s):
            self.reap_once()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stopped.set()


class RoundsWorker(Worker):
    """RQ's forking worker with a shutdown that cannot hang on its pub/sub thread."""

    def unsubscribe(self) -> None:
        """Leave the worker's command channel, waiting at most a second for the listener thread.

        NOTE: with rq 3.0 and redis-py 8.2, RQ's own version joins the listener thread
        without a timeout. That thread may sleep up to 60 s waiting for a subscription that
        never comes, so a warm shutdown could hang for a minute. The thread is a daemon,
        so one still waiting when the process exits is ended with it.
        """
        if not self.pubsub_thread:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        self.pubsub.unsubscribe()
        try:
            self.pubsub_thread.stop(timeout=1.0)
        except TypeError:
            # redis-py before 8 has stop() without a timeout, and it does not join.
            self.pubsub_thread.stop()
        self.pubsub_thread.join(timeout=1.0)


def run_worker(settings: Settings | None = None, *, burst: bool = False) -> bool:
    """Run a worker on the rounds queue until it is stopped; return whether it ran any job."""
    settings = settings or get_settings()
    connection = Redis.from_url(settings.redis_url)
    name = f"rsir-{socket.gethostname()}-{os.getpid()}"
    queue = Queue(settings.queue_name, connection=connection)
    worker = RoundsWorker([queue], connection=connection, name=name, work_horse_killed_handler=on_work_horse_killed)

    reaper = Reaper(settings, name)
    reaper.reap_once()
    reaper.start()
    logger.info(
        "worker %s: listening on queue %s at %s (stalled after %.0f s without heartbeat, up to %d attempts)",
        name,
        settings.queue_name,
        connection.connection_pool.connection_kwargs.get("host", settings.redis_url),
        settings.stale_after_s,
        settings.max_attempts,
    )
    try:
        return worker.work(burst=burst, with_scheduler=False)
    finally:
        reaper.stop()
        logger.info("worker %s: stopped", name)
