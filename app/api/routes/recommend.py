"""POST /recommend: the top-k next items after a history."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from rsir_engine.errors import EmptyInputError, UnknownItemsError

from app.api.deps import HolderDep, SettingsDep, check_items
from app.api.errors import error_responses
from app.schemas.inference import RecommendRequest, RecommendResponse
from app.serving import top_k_items

router = APIRouter(tags=["inference"])

logger = logging.getLogger(__name__)


@router.post("/recommend", response_model=RecommendResponse, responses=error_responses(404, 409, 413, 422, 503))
def recommend(body: RecommendRequest, holder: HolderDep, settings: SettingsDep) -> RecommendResponse:
    """Rank the whole catalogue after the history and return the k best items."""
    check_items(body.items, settings, ("body", "items"))
    loaded = holder.get_version(body.model_version)

    history, unknown = loaded.item_map.to_internal(body.items, drop_unknown=True)
    distinct_unknown = list(dict.fromkeys(unknown))
    if distinct_unknown and not body.drop_unknown:
        raise UnknownItemsError(distinct_unknown)
    if not history:
        raise EmptyInputError("no item of the history is in the model's catalogue, so there is nothing to recommend from")

    ranked = top_k_items(loaded, history, body.k, exclude_history=body.exclude_history)
    raw_ids = loaded.item_map.to_raw([item for item, _ in ranked])
    logger.debug("recommend with model version %s: %d history items, k=%d", loaded.version, len(history), body.k)
    return RecommendResponse(
        model_version=loaded.version,
        exclude_history=body.exclude_history,
        items=[{"rank": rank, "item": raw, "score": score} for rank, (raw, (_, score)) in enumerate(zip(raw_ids, ranked), start=1)],
        unknown_items={"count": len(distinct_unknown), "items": distinct_unknown, "dropped_events": len(unknown)},
        history_truncated=len(history) > loaded.model.config.max_len,
    )
