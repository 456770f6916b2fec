"""The served champion model: hot swap, a small cache of other versions, and the event listener.

Requests take a reference to the current ``LoadedModel`` once and use it to the end,
so a swap never changes the model under a request in flight. A swap loads and checks
the new checkpoint completely before it replaces the reference; a checkpoint that
fails to load leaves the old model serving.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import redis
import torch

from rsir_engine.errors import RSIRError
from rsir_engine.model_io import LoadedModel, load_version
from rsir_engine.registry import AliasChange, ModelRegistry
from rsir_engine.sequences import pad_left

from app.events import CHAMPION_CHANGED, MODEL_EVENTS_CHANNEL, parse_model_event
from app.observability import MODEL_SWAPS, SERVING_MODEL_VERSION

__all__ = ["CHAMPION_ALIAS", "ChampionListener", "ModelHolder", "ModelNotReadyError", "top_k_items"]

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


class ModelNotReadyError(RuntimeError):
    """Raised when a request needs the champion but none is loaded yet."""


class ModelHolder:
    """Holds the champion this process serves and swaps it atomically."""

    def __init__(self, registry: ModelRegistry, device: torch.device, *, cache_size: int = 2) -> None:
        self.registry = registry
        self.device = device
        self.cache_size = cache_size  # non-champion versions kept loaded, least recently used evicted first
        self.not_ready_reason = "model not loaded yet"
        self._current: LoadedModel | None = None
        self._cache: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards _current and _cache; held only for reference updates
        self._swap_lock = threading.Lock()  # one load-and-swap at a time, so swaps apply in call order

    @property
    def current(self) -> LoadedModel | None:
        """The champion being served, or None while none is loaded."""
        return self._current

    def set_not_ready(self, reason: str) -> None:
        """Record why no model is being served; /readyz and 503 responses report it."""
        self.not_ready_reason = reason

    def get(self) -> LoadedModel:
        """Return the current champion.

        Raises:
            ModelNotReadyError: no champion is loaded yet.
        """
        current = self._current
        if current is None:
            raise ModelNotReadyError(self.not_ready_reason)
        return current

    def load(self, version: int | str) -> LoadedModel:
        """Load and check a registry version or alias without serving it."""
        return load_version(self.registry, version, device=self.device)

    def get_version(self, version: int | str | None) -> LoadedModel:
        """Return the champion when ``version`` is None or names it, else a cached or newly loaded version.

        Raises:
            ModelNotReadyError: no champion is loaded and ``version`` is None.
            VersionNotFoundError: no such version or alias.
            CheckpointError: the version's files fail to load.
        """
        if version is None:
            return self.get()
        number = self.registry.get(version).version
        current = self._current
        if current is not None and current.version == number:
            return current
        with self._lock:
            cached = self._cache.get(number)
            if cached is not None:
                self._cache.move_to_end(number)
                return cached

        # Loading happens outside the lock, so two first requests for one version may both
        # load it. The second result then replaces the first in the cache, which is harmless.
        loaded = self.load(number)
        self._remember(loaded)
        logger.info("loaded model version %d on request (the cache keeps up to %d versions)", number, self.cache_size)
        return loaded

    def _remember(self, loaded: LoadedModel) -> None:
        """Put a non-champion version in the LRU cache."""
        if self.cache_size == 0 or loaded.version is None:
            return
        with self._lock:
            self._cache[loaded.version] = loaded
            self._cache.move_to_end(loaded.version)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _install(self, loaded: LoadedModel) -> None:
        """Serve ``loaded`` from now on; requests already running keep the model they took."""
        with self._lock:
            previous = self._current
            self._current = loaded
            if loaded.version is not None:
                self._cache.pop(loaded.version, None)
        if previous is not None and previous.version != loaded.version:
            self._remember(previous)
        SERVING_MODEL_VERSION.set(loaded.version or 0)
        logger.info(
            "serving model version %s on %s (previous version %s)",
            loaded.version,
            self.device,
            previous.version if previous is not None else None,
        )

    def swap_to(self, version: int | str) -> LoadedModel:
        """Load and check ``version`` completely, then serve it.

        The checkpoint is always read from disk again, even when the version is cached,
        so files damaged after an earlier load are caught.

        Raises:
            VersionNotFoundError: no such version or alias.
            CheckpointError: the files fail to load; the old model keeps serving.
        """
        return self._swap(version, before_install=None)[0]

    def promote(self, version: int | str, *, reason: str, actor: str | None) -> tuple[AliasChange, LoadedModel]:
        """Load and check ``version``, point the champion alias at it, then serve it.

        The alias moves only after the checkpoint has loaded, and both steps happen under
        the swap lock, so a concurrent swap cannot interleave with them. The alias moves
        even when ``version`` is already being served, which repairs an alias that points
        at a version this process rejected.

        Raises:
            VersionNotFoundError: no such version or alias.
            CheckpointError: the files fail to load; neither the alias nor the served model changes.
        """
        loaded, change = self._swap(
            version, before_install=lambda loaded: self.registry.set_alias(CHAMPION_ALIAS, loaded.version, reason=reason, actor=actor)
        )
        assert change is not None
        return change, loaded

    def _swap(
        self, version: int | str, *, before_install: Callable[[LoadedModel], AliasChange] | None
    ) -> tuple[LoadedModel, AliasChange | None]:
        with self._swap_lock:
            current = self._current
            try:
                number = self.registry.get(version).version
                same = current is not None and current.version == number
                loaded = current if same else self.load(number)
            except RSIRError as exc:
                MODEL_SWAPS.labels("rejected").inc()
                logger.error(
                    "rejected swap to model version %s, still serving version %s: %s",
                    version,
                    current.version if current is not None else None,
                    exc,
                )
                raise
            change = before_install(loaded) if before_install is not None else None
            if same:
                logger.debug("model version %d is already being served", number)
            else:
                self._install(loaded)
                MODEL_SWAPS.labels("swapped").inc()
            return loaded, change


@torch.inference_mode()
def top_k_items(loaded: LoadedModel, history: list[int], k: int, *, exclude_history: bool) -> list[tuple[int, float]]:
    """Score the catalogue after ``history`` (internal ids) and return the ``k`` best ``(item, score)`` pairs.

    Only the model's ``max_len`` most recent items are read; ``exclude_history``
    removes every history item from the ranking, including older ones. Fewer than
    ``k`` pairs come back when the catalogue has fewer candidates left.
    """
    model = loaded.model
    items = pad_left([history], model.config.max_len).to(loaded.device)  # (1, L)
    scores = model.score_last(items).float()[0]  # (N+1,), padding column is -inf
    if exclude_history:
        scores[torch.tensor(sorted(set(history)), dtype=torch.long, device=scores.device)] = float("-inf")
    available = int(torch.isfinite(scores).sum())
    values, indices = scores.topk(min(k, available))
    return [(int(item), float(score)) for item, score in zip(indices.tolist(), values.tolist())]


class ChampionListener:
    """Background thread that swaps the holder when ``champion_changed`` arrives on Redis pub/sub.

    The registry's ``champion`` alias is the source of truth: an event only reports that it
    moved. On each event the listener reads the alias and swaps to it, so a stale or
    reordered event cannot roll the champion back, and events from another registry on the
    same Redis server do nothing. After connecting or reconnecting it also compares the
    alias with the served version, because pub/sub drops messages sent while disconnected.
    """

    def __init__(
        self,
        client: redis.Redis,
        holder: ModelHolder,
        *,
        poll_s: float = 0.25,
        max_retry_s: float = 30.0,
    ) -> None:
        self.client = client
        self.holder = holder
        self.poll_s = poll_s  # seconds one wait for a message lasts, which bounds the shutdown delay
        self.max_retry_s = max_retry_s  # maximum pause between reconnection attempts, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rsir-champion-listener", daemon=True)
        self.subscribed = threading.Event()  # set while subscribed; tests wait on it

    def start(self) -> None:
        """Start listening in a daemon thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 1.0
        outage_logged = False
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(MODEL_EVENTS_CHANNEL)
                self.subscribed.set()
                logger.info("listening for model events on Redis channel %s", MODEL_EVENTS_CHANNEL)
                outage_logged = False
                delay = 1.0
                self.sync_with_registry()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=self.poll_s)
                    if message is not None and message.get("type") == "message":
                        self._handle(message["data"])
            except redis.exceptions.RedisError as exc:
                self.subscribed.clear()
                # One warning per outage, not one per retry.
                if not outage_logged:
                    logger.warning(
                        "model events: Redis unreachable (%s); champion swaps from other processes are missed "
                        "until it answers, retrying with up to %.0f s between attempts",
                        exc,
                        self.max_retry_s,
                    )
                    outage_logged = True
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_retry_s)
            finally:
                self.subscribed.clear()
                pubsub.close()
        logger.info("stopped listening for model events")

    def _handle(self, data: bytes | str) -> None:
        event = parse_model_event(data)
        if event is None:
            return
        if event.event != CHAMPION_CHANGED:
            logger.debug("ignoring model event %r for version %d", event.event, event.version)
            return
        logger.info("received %s for model version %d", CHAMPION_CHANGED, event.version)
        self.sync_with_registry(announced=event.version)

    def sync_with_registry(self, announced: int | None = None) -> None:
        """Swap to the registry's champion when it differs from the served version, logging failures instead of raising them."""
        try:
            champion = self.holder.registry.aliases().get(CHAMPION_ALIAS)
        except RSIRError as exc:
            logger.error("cannot read the champion alias from registry %s: %s", self.holder.registry.root, exc)
            return
        if champion is None:
            if announced is not None:
                logger.warning(
                    "event announces model version %d, but registry %s has no champion alias; nothing to swap",
                    announced,
                    self.holder.registry.root,
                )
            return
        if announced is not None and champion != announced:
            logger.info(
                "event announces model version %d, but the registry's champion is version %d; following the registry",
                announced,
                champion,
            )
        current = self.holder.current
        if current is not None and current.version == champion:
            return
        try:
            self.holder.swap_to(champion)
        except RSIRError:
            return  # swap_to logged it, and the old model keeps serving
        except Exception:
            logger.exception("unexpected error while swapping to model version %d; the old model keeps serving", champion)
