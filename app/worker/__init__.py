"""The Redis job consumer: round jobs from the RQ queue -> rsir_engine rounds -> registry.

Importing this package loads neither torch nor the engine's training code; the job
function imports them inside the work horse.
"""

from __future__ import annotations

from app.worker.dispatch import enqueue_attempt, reap_stalled, recover_job, rq_job_id_for
from app.worker.run import run_worker

__all__ = ["enqueue_attempt", "reap_stalled", "recover_job", "rq_job_id_for", "run_worker"]
