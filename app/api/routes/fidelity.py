"""POST /fidelity: run the fidelity check over candidate sequences a caller supplies."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from rsir_engine.errors import UnknownItemsError
from rsir_engine.fidelity import check_sequences

from app.api.deps import HolderDep, SettingsDep, check_items
from app.api.errors import error_responses, invalid_field
from app.schemas.inference import CandidateReportPublic, FidelityRequest, FidelityResponse

router = APIRouter(tags=["inference"])

logger = logging.getLogger(__name__)


@router.post("/fidelity", response_model=FidelityResponse, responses=error_responses(404, 409, 413, 422, 503))
def fidelity(body: FidelityRequest, holder: HolderDep, settings: SettingsDep) -> FidelityResponse:
    """Check each candidate step by step against the user's history and report where it would be cut."""
    check_items(body.items, settings, ("body", "items"))
    if len(body.candidates) > settings.max_users_per_request:
        raise invalid_field(
            ("body", "candidates"),
            f"{len(body.candidates)} candidates are more than the limit of {settings.max_users_per_request} "
            "per request (RSIR_MAX_USERS_PER_REQUEST); split the request",
            len(body.candidates),
        )
    loaded = holder.get_version(body.model_version)
    max_len = loaded.model.config.max_len
    for index, candidate in enumerate(body.candidates):
        if len(candidate) > max_len:
            raise invalid_field(
                ("body", "candidates", index),
                f"candidate {index} has {len(candidate)} items, but model version {loaded.version} generates "
                f"at most {max_len}; send at most {max_len} items",
                len(candidate),
            )

    item_map = loaded.item_map
    history, unknown = item_map.to_internal(body.items, drop_unknown=True)
    candidates = []
    for candidate in body.candidates:
        internal, missing = item_map.to_internal(candidate, drop_unknown=True)
        candidates.append(internal)
        unknown.extend(missing)
    if unknown:
        raise UnknownItemsError(list(dict.fromkeys(unknown)))
    # Generation reads the same most recent max_len items of a history, so the records match /augment's.
    truncated = len(history) > max_len
    history = history[-max_len:]

    reports = check_sequences(loaded.model, [history] * len(candidates), candidates, tau=body.tau)
    logger.debug("fidelity with model version %s: %d candidates", loaded.version, len(candidates))
    return FidelityResponse(
        model_version=loaded.version,
        tau=body.tau,
        history_truncated=truncated,
        reports=[
            CandidateReportPublic(
                steps=[{**step.to_dict(), "item": item_map.to_raw([step.item])[0]} for step in report.steps],
                kept_length=report.kept_length,
                kept_items=item_map.to_raw(candidate[: report.kept_length]),
                stop_reason=report.stop_reason.value if report.stop_reason is not None else None,
            )
            for report, candidate in zip(reports, candidates)
        ],
    )
