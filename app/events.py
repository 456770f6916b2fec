"""Model-change events that API processes and workers exchange over Redis pub/sub.

A process that moves the ``champion`` alias publishes ``{"event": "champion_changed",
"version": N}`` on ``MODEL_EVENTS_CHANNEL``; every API process listens there and swaps
to the new champion (see ``app.serving``). Pub/sub delivers only to processes connected
at that moment, so listeners also re-read the alias when they (re)connect.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis

__all__ = [
    "CHAMPION_CHANGED",
    "MODEL_EVENTS_CHANNEL",
    "ModelEvent",
    "parse_model_event",
    "publish_champion_changed",
]

logger = logging.getLogger(__name__)

MODEL_EVENTS_CHANNEL = "rsir:models:events"
CHAMPION_CHANGED = "champion_changed"


@dataclass(frozen=True)
class ModelEvent:
    """One decoded message of ``MODEL_EVENTS_CHANNEL``."""

    event: str
    version: int


def publish_champion_changed(client: redis.Redis, version: int) -> int:
    """Announce that the ``champion`` alias now points at ``version``.

    Call it after the alias has moved in the registry, because listeners check the
    registry before they swap.

    Returns:
        The number of subscribers that received the message.

    Raises:
        redis.exceptions.ConnectionError: Redis cannot be reached.
    """
    message = json.dumps({"event": CHAMPION_CHANGED, "version": int(version)})
    receivers = client.publish(MODEL_EVENTS_CHANNEL, message)
    logger.info("published %s for model version %d to %d subscriber(s)", CHAMPION_CHANGED, version, receivers)
    return int(receivers)


def parse_model_event(data: bytes | str) -> ModelEvent | None:
    """Decode a pub/sub payload, or return None (and log a warning) when it is malformed."""
    try:
        payload = json.loads(data)
        event = payload["event"]
        version = payload["version"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        logger.warning("ignoring malformed message on %s: %r (%s)", MODEL_EVENTS_CHANNEL, data[:200], exc)
        return None
    if not isinstance(event, str) or isinstance(version, bool) or not isinstance(version, int):
        logger.warning("ignoring message on %s with invalid event or version: %r", MODEL_EVENTS_CHANNEL, payload)
        return None
    return ModelEvent(event=event, version=version)
