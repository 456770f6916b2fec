"""POST /generate: synthetic sequences without the fidelity stop, every step recorded."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from rsir_engine.pipeline import augment_users

from app.api.deps import HolderDep, SettingsDep, check_m, check_users
from app.api.errors import error_responses
from app.api.routes._generation import generation_result, resolve_generation
from app.schemas.inference import GenerateRequest, GenerateResponse

router = APIRouter(tags=["inference"])

logger = logging.getLogger(__name__)


@router.post("/generate", response_model=GenerateResponse, responses=error_responses(404, 409, 413, 422, 503))
def generate(body: GenerateRequest, holder: HolderDep, settings: SettingsDep) -> GenerateResponse:
    """Generate synthetic sequences that only max_len or an empty pool stops, with each step's fidelity record."""
    check_users(body.users, settings)
    check_m(body.m, settings)
    loaded, config = resolve_generation(holder, body, min_len=1, fidelity=False)

    outcome = augment_users(
        loaded, [(user.user_id, user.items) for user in body.users], config, drop_unknown=body.drop_unknown, filter_sequences=False
    )
    logger.debug("generate with model version %s: %d users, %d sequences", loaded.version, len(body.users), outcome.stats.started)
    return GenerateResponse(sequences=[a.to_dict() for a in outcome.augmentations], **generation_result(outcome, config, "generate"))
