"""The RQ job that runs a round job: load data, run the rounds, publish and promote.

RQ runs ``run_rounds_job`` in a forked work horse. The engine (and with it torch) is
imported inside the function, so the worker's parent process never loads torch or
initializes CUDA, and a crash of the work horse cannot take the parent down.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from app.core.config import Settings, get_settings
from app.core.store import RUNNING_STATES, RoundJob, RoundState, RoundStore

if TYPE_CHECKING:
    from rsir_engine.data import SequenceDataset
    from rsir_engine.registry import ModelRegistry
    from rsir_engine.rounds import RoundConfig, RoundResult

__all__ = ["open_job_dataset", "round_config_from_params", "run_rounds_job"]

logger = logging.getLogger(__name__)

CHAMPION = "champion"


def round_config_from_params(params: dict[str, Any], device: str = "auto") -> RoundConfig:
    """Build the engine's RoundConfig from stored request parameters.

    Raises ConfigError for values the engine rejects, such as a hidden size that is not a
    multiple of the number of heads.
    """
    from rsir_engine.architectures import SASRecConfig
    from rsir_engine.generation import GenerationConfig
    from rsir_engine.rounds import RoundConfig
    from rsir_engine.training import TrainConfig

    model = params.get("model") or {}
    generation = params.get("generation") or {}
    training = params.get("training") or {}
    return RoundConfig(
        rounds=int(params["rounds"]),
        architecture=params.get("architecture", "sasrec"),
        # num_items is a placeholder; run_rounds sets it from the data.
        model=SASRecConfig(num_items=1, **model),
        generation=GenerationConfig(**generation),
        train=TrainConfig(**training),
        warm_start=bool(params.get("warm_start", False)),
        seed_from=params.get("seed_from", "real"),
        device=device,
    )


def open_job_dataset(settings: Settings, params: dict[str, Any]) -> SequenceDataset:
    """Open the named or uploaded dataset of a job's request, with its filters."""
    from rsir_engine.datasets import DATASETS, open_dataset

    from app.core.uploads import UploadStore, open_upload

    name = params["dataset"]
    min_rating = params.get("min_rating")
    k_core = params.get("k_core")
    if name in DATASETS:
        return open_dataset(name, settings.data_dir, min_rating=min_rating, k_core=k_core)
    upload = UploadStore(settings.upload_dir).require(name)
    return open_upload(upload, min_rating=min_rating, k_core=k_core)


class _Heartbeat(threading.Thread):
    """Stamps the job's heartbeat and ends the work horse when it is orphaned or superseded.

    A work horse runs in its own process group, so ``kill -9`` of the worker leaves it
    running. It then exits by itself within one interval, so that the attempt the reaper
    re-enqueues never runs beside it.
    """

    def __init__(self, store: RoundStore, job_id: str, rq_job_id: str, interval_s: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.store = store
        self.job_id = job_id
        self.rq_job_id = rq_job_id
        self.interval_s = interval_s
        self.parent_pid = os.getppid()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            if os.getppid() != self.parent_pid:
                logger.error(
                    "round job %s: worker process %d is gone; ending work horse %d of attempt %s",
                    self.job_id,
                    self.parent_pid,
                    os.getpid(),
                    self.rq_job_id,
                )
                os._exit(1)
            try:
                owned = self.store.heartbeat(self.job_id, rq_job_id=self.rq_job_id)
            except RedisError as exc:
                logger.warning("round job %s: heartbeat failed: %s", self.job_id, exc)
                continue
            if not owned and not self._stopped.is_set():
                logger.error(
                    "round job %s: attempt %s no longer owns the job (it was reaped or ended); "
                    "ending work horse %d",
                    self.job_id,
                    self.rq_job_id,
                    os.getpid(),
                )
                os._exit(1)

    def stop(self) -> None:
        """Stop stamping and wait for the thread, before the job's final state is written."""
        self._stopped.set()
        self.join()


def _write_seed_users(run_dir: Path, dataset: SequenceDataset) -> None:
    """Record the raw id of every seed user, so synthetic sequences can name their seed user.

    NOTE: this mirrors run_rounds' seed order (real users with a non-empty training
    sequence, in dataset order). With seed_from="all", seed indices past this list are
    pseudo-users and have no raw id.
    """
    split = dataset.split()
    seeds = [user for user, sequence in zip(dataset.user_ids, split.train) if sequence]
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = run_dir / "seed_users.json.tmp"
    staging.write_text(json.dumps(seeds), encoding="utf-8")
    staging.replace(run_dir / "seed_users.json")


class _Promoter:
    """Decides after each round whether its model becomes the champion, and announces it."""

    def __init__(self, settings: Settings, redis: Redis, store: RoundStore, registry: ModelRegistry, job_id: str, fingerprint: str) -> None:
        self.mode = settings.promotion
        self.redis = redis
        self.store = store
        self.registry = registry
        self.job_id = job_id
        self.fingerprint = fingerprint

    def reason_to_promote(self, row: RoundResult) -> str | None:
        """Return why ``row``'s version should become champion, or None to keep the current one."""
        from rsir_engine.errors import VersionNotFoundError

        if row.version is None or self.mode == "never":
            return None
        if self.mode == "always":
            return f"promotion=always: round {row.round} of job {self.job_id}"
        try:
            champion = self.registry.get(CHAMPION)
        except VersionNotFoundError:
            return f"no champion yet; round {row.round} of job {self.job_id}"
        if champion.version == row.version:
            return None
        champion_fingerprint = (champion.manifest.get("dataset") or {}).get("fingerprint")
        if champion_fingerprint != self.fingerprint:
            return f"champion version {champion.version} was trained on other data; round {row.round} of job {self.job_id}"
        new = row.valid.get("ndcg@10")
        old = (champion.metrics.get("valid") or {}).get("ndcg@10")
        if new is None:
            return None
        if old is None or new > old:
            old_text = "none" if old is None else f"{old:.4f}"
            return (
                f"validation NDCG@10 {new:.4f} beats champion version {champion.version}'s {old_text}; "
                f"round {row.round} of job {self.job_id}"
            )
        logger.info(
            "round job %s: round %d: version %d keeps champion version %d (validation NDCG@10 %.4f <= %.4f)",
            self.job_id,
            row.round,
            row.version,
            champion.version,
            new,
            old,
        )
        return None

    def __call__(self, row: RoundResult) -> None:
        from app.events import publish_champion_changed

        reason = self.reason_to_promote(row)
        if reason is None or row.version is None:
            return
        # NOTE: two jobs promoting at the same moment can both pass the comparison; the later
        # set_alias wins even when its NDCG@10 is lower. The alias history records both.
        self.registry.set_alias(CHAMPION, row.version, reason=reason, actor=f"job {self.job_id}")
        self.store.record_promotion(self.job_id, row.round, row.version)
        publish_champion_changed(self.redis, row.version)
        logger.info("round job %s: round %d: promoted version %d to champion (%s)", self.job_id, row.round, row.version, reason)


def _run(settings: Settings, redis: Redis, store: RoundStore, job: RoundJob, rq_job_id: str, run_dir: Path) -> dict[str, Any]:
    """Run the job's rounds; raises what the engine raises."""
    from rsir_engine.registry import ModelRegistry
    from rsir_engine.rounds import run_rounds

    job_id = job.id
    config = round_config_from_params(job.params, settings.device)
    dataset = open_job_dataset(settings, job.params)
    _write_seed_users(run_dir, dataset)
    registry = ModelRegistry(settings.checkpoint_dir)
    promote = _Promoter(settings, redis, store, registry, job_id, dataset.fingerprint)
    last_stage: list[tuple[str, int]] = []

    def on_progress(stage: str, round_index: int, fraction: float) -> None:
        if not last_stage or last_stage[-1] != (stage, round_index):
            logger.info("round job %s: round %d: %s (%.0f%% done)", job_id, round_index, stage, 100 * fraction)
            last_stage.append((stage, round_index))
        store.heartbeat(job_id, rq_job_id=rq_job_id, stage=stage, round=round_index, progress=round(fraction, 4))

    def should_stop() -> bool:
        return store.cancel_requested(job_id)

    def on_round(row: RoundResult) -> None:
        store.record_round(job_id, row.to_dict(), rq_job_id=rq_job_id)
        logger.info(
            "round job %s: round %d: published version %s, validation NDCG@10 %.4f, test NDCG@10 %.4f",
            job_id,
            row.round,
            row.version,
            row.valid.get("ndcg@10", float("nan")),
            row.test.get("ndcg@10", float("nan")),
        )
        promote(row)

    result = run_rounds(
        dataset,
        config,
        registry=registry,
        run_dir=run_dir,
        run_id=job_id,
        on_progress=on_progress,
        should_stop=should_stop,
        on_round=on_round,
    )
    return {"state": RoundState.FINISHED.value, "versions": [row.version for row in result.rounds], "seconds": result.seconds}


def _end(store: RoundStore, job_id: str, rq_job_id: str, state: RoundState, **values: Any) -> bool:
    return store.update(
        job_id,
        from_states=RUNNING_STATES,
        where={"rq_job_id": rq_job_id},
        values={"state": state, "stage": state.value, "ended_at": repr(time.time()), **values},
    )


def run_rounds_job(job_id: str) -> dict[str, Any]:
    """Run one attempt of round job ``job_id`` in an RQ work horse."""
    from rsir_engine.errors import RoundCancelled

    settings = get_settings()
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    store = RoundStore(redis)
    rq_job = get_current_job()
    rq_job_id = rq_job.id if rq_job is not None else f"{job_id}-direct"
    job = store.get(job_id)
    if job is None:
        logger.warning("round job %s: not found in the store; RQ job %s does nothing", job_id, rq_job_id)
        return {"state": "missing"}

    attempt = job.attempts + 1
    run_dir = (Path(settings.runs_dir) / job_id).resolve()
    now = repr(time.time())
    started = store.update(
        job_id,
        from_states=[RoundState.QUEUED],
        where={"rq_job_id": rq_job_id},
        values={
            "state": RoundState.STARTED,
            "stage": "loading_data",
            "attempts": attempt,
            "started_at": repr(job.started_at) if job.started_at is not None else now,
            "heartbeat_at": now,
            "worker_pid": os.getpid(),
            "run_dir": str(run_dir),
        },
    )
    if not started:
        current = store.get(job_id)
        state = current.state.value if current is not None else "missing"
        logger.info("round job %s: RQ job %s skipped, the job is %s and owned by %s", job_id, rq_job_id, state, current and current.rq_job_id)
        return {"state": state}
    logger.info(
        "round job %s: attempt %d of %d started in work horse %d (RQ job %s, run folder %s)",
        job_id,
        attempt,
        job.max_attempts,
        os.getpid(),
        rq_job_id,
        run_dir,
    )

    heartbeat = _Heartbeat(store, job_id, rq_job_id, settings.heartbeat_interval_s)
    heartbeat.start()
    try:
        outcome = _run(settings, redis, store, job, rq_job_id, run_dir)
    except RoundCancelled:
        heartbeat.stop()
        _end(store, job_id, rq_job_id, RoundState.CANCELLED)
        logger.info("round job %s: cancelled at a safe point; finished rounds stay published", job_id)
        return {"state": RoundState.CANCELLED.value}
    except JobTimeoutException:
        heartbeat.stop()
        message = f"timed out after {settings.job_timeout_s} s (RSIR_JOB_TIMEOUT_S); finished rounds stay published"
        _end(store, job_id, rq_job_id, RoundState.FAILED, error=message, **{f"attempt_error:{attempt}": message})
        logger.error("round job %s: %s", job_id, message)
        raise
    except Exception as exc:
        heartbeat.stop()
        message = f"{type(exc).__name__}: {exc}"
        _end(store, job_id, rq_job_id, RoundState.FAILED, error=message, **{f"attempt_error:{attempt}": message})
        logger.exception("round job %s: attempt %d failed", job_id, attempt)
        raise
    heartbeat.stop()
    _end(store, job_id, rq_job_id, RoundState.FINISHED, progress=1.0)
    logger.info("round job %s: finished, versions %s, %.1f s", job_id, outcome["versions"], outcome["seconds"])
    return outcome
