"""Steps shared by /augment and /generate: pick the model, build the config, shape the result."""

from __future__ import annotations

from typing import Any

from rsir_engine.generation import GenerationConfig
from rsir_engine.model_io import LoadedModel
from rsir_engine.pipeline import AugmentOutcome

from app.api.errors import invalid_field
from app.observability import SEQUENCES_GENERATED, SEQUENCES_KEPT
from app.schemas.inference import GenerateRequest
from app.serving import ModelHolder


def resolve_generation(
    holder: ModelHolder, body: GenerateRequest, *, min_len: int, fidelity: bool
) -> tuple[LoadedModel, GenerationConfig]:
    """Pick the requested model and build the generation config with ``max_len`` resolved against it."""
    loaded = holder.get_version(body.model_version)
    model_max_len = loaded.model.config.max_len
    max_len = min(body.max_len or model_max_len, model_max_len)
    if min_len > max_len:
        raise invalid_field(
            ("body", "min_len"),
            f"min_len {min_len} is above the longest possible sequence of {max_len} items "
            f"(model version {loaded.version} reads at most {model_max_len}); lower min_len",
            min_len,
        )
    config = GenerationConfig(
        m=body.m,
        tau=body.tau,
        p=body.p,
        max_len=max_len,
        min_len=min_len,
        temperature=body.temperature,
        top_k=body.top_k,
        fidelity=fidelity,
        seed=body.seed,
    )
    return loaded, config


def generation_result(outcome: AugmentOutcome, config: GenerationConfig, endpoint: str) -> dict[str, Any]:
    """Count the sequences in the metrics and return the response fields both endpoints share."""
    stats = outcome.stats
    prepared = outcome.prepared
    SEQUENCES_GENERATED.labels(endpoint).inc(stats.started)
    SEQUENCES_KEPT.labels(endpoint).inc(stats.kept)
    parameters = config.to_dict()
    parameters.pop("batch_size")
    return {
        "model_version": outcome.model_version,
        "stats": stats.to_dict(),
        "unknown_items": {
            "count": len(prepared.unknown_items),
            "items": prepared.unknown_items,
            "dropped_events": prepared.dropped_items,
            "skipped_users": prepared.skipped_users,
        },
        "truncated_users": prepared.truncated_users,
        "history_max_len": config.max_len,
        "parameters": parameters,
    }
