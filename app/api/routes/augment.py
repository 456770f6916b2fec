"""POST /augment: fidelity-controlled synthetic sequences for caller-supplied users."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from rsir_engine.pipeline import augment_users

from app.api.deps import HolderDep, SettingsDep, check_m, check_users
from app.api.errors import error_responses
from app.api.routes._generation import generation_result, resolve_generation
from app.schemas.inference import AugmentRequest, AugmentResponse

router = APIRouter(tags=["inference"])

logger = logging.getLogger(__name__)


@router.post("/augment", response_model=AugmentResponse, responses=error_responses(404, 409, 413, 422, 503))
def augment(body: AugmentRequest, holder: HolderDep, settings: SettingsDep) -> AugmentResponse:
    """Generate synthetic sequences for each user and keep those that pass the fidelity check."""
    check_users(body.users, settings)
    check_m(body.m, settings)
    loaded, config = resolve_generation(holder, body, min_len=body.min_len, fidelity=True)

    outcome = augment_users(loaded, [(user.user_id, user.items) for user in body.users], config, drop_unknown=body.drop_unknown)
    logger.debug(
        "augment with model version %s: %d users, started %d, kept %d",
        loaded.version, len(body.users), outcome.stats.started, outcome.stats.kept,
    )
    return AugmentResponse(augmentations=[a.to_dict() for a in outcome.augmentations], **generation_result(outcome, config, "augment"))
