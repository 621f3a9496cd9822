"""The protocol-agnostic core every entry point calls.

REST, gRPC, streams and batch jobs only parse, call this, and encode, so a model
gives the same answer for the same input whichever way it is asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from inferline._version import __version__
from inferline.batching import Batcher
from inferline.cache import LocalCache, PredictionCache, RedisCache, cache_key, signature_hash
from inferline.errors import (
    InferlineError,
    InternalError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
)
from inferline.lifecycle import Unserved, serve_folder
from inferline.monitoring.records import InferenceRecord, Observer
from inferline.monitoring.telemetry import Observers
from inferline.registry.records import DEFAULT_ALIAS
from inferline.repository import version_key
from inferline.runtimes.base import Model, Outputs
from inferline.served import ServedModel
from inferline.settings import Settings, TensorSpec
from inferline.types import InferRequest, InferResponse, Tensor, datatype_of
from inferline.validation import check_inputs, check_limits

__all__ = ["CLIENT_CLOSED_REQUEST", "EXTENSIONS", "DataPlane"]

logger = logging.getLogger(__name__)

EXTENSIONS = ("binary_tensor_data",)
#: The status observers see for a request cancelled because its client went away
#: (nginx's 499 "client closed request"; no client ever receives it).
CLIENT_CLOSED_REQUEST = 499
NO_OBSERVERS = Observers()


class DataPlane:
    """Loads the models of a folder and answers health, metadata and inference."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor | None = None,
        *,
        observers: Observers = NO_OBSERVERS,
    ) -> None:
        self.settings = settings
        self._executor = executor
        self._owns_executor = executor is None
        self._models: dict[str, dict[str, ServedModel]] = {}
        self._default: dict[str, str] = {}
        self._aliases: dict[str, dict[str, str]] = {}
        #: Versions known but not served (failed to load, not loaded here), and why.
        self.unserved = Unserved()
        self._started = False
        #: Told about every request after it is answered (metrics, logs, drift, ...); fixed
        #: here, so every model served, whenever it was added, reports to the same ones.
        self.observers: tuple[Observer, ...] = observers.requests
        self._on_batch = observers.batches
        self._on_cache_evict = observers.cache_evictions

    # -- lifecycle -------------------------------------------------------------------
    async def start(self, *, scan: bool = True) -> None:
        """Create the executor and, unless ``scan`` is False, load the model folder."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.settings.executor_threads, thread_name_prefix="inferline-model"
            )
        if scan and self.settings.model_dir is not None:
            await serve_folder(self, self.settings.model_dir)
        self._started = True

    @property
    def executor(self) -> Executor:
        """The pool that loads models and runs their sync code (after :meth:`start`)."""
        if self._executor is None:
            raise RuntimeError("DataPlane.start() has not run")
        return self._executor

    async def stop(self) -> None:
        self._started = False
        for name in list(self._models):
            for version in list(self._models[name]):
                await self.remove(name, version)
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def add(self, model: Model) -> None:
        """Start serving a loaded model version (its batcher starts here, in the loop)."""
        batching = model.settings.batching
        on_call = None
        if self._on_batch is not None:
            observer, name, version = self._on_batch, model.name, model.version

            def on_call(rows: int, compute: float, waits: list[float]) -> None:
                observer(name, version, rows, compute, waits)

        batcher = None
        if batching.max_batch_size > 0:
            batcher = Batcher(
                model.infer, batching, name=f"{model.name}:{model.version}", on_batch=on_call
            )
            await batcher.start()
        timeout = model.settings.timeout_ms / 1000 if model.settings.timeout_ms else None
        served = ServedModel(model, batcher, timeout, on_call=on_call)
        if model.settings.cache.enabled:
            served.cache = self._new_cache(model)
            served.signature = signature_hash(
                [[s.model_dump() for s in model.inputs], [s.model_dump() for s in model.outputs]]
            )
        self._models.setdefault(model.name, {})[model.version] = served
        self._default[model.name] = max(self._models[model.name], key=version_key)
        self.unserved.loaded(model.name, model.version)
        _log_model("serving", model.name, model.version)

    def _new_cache(self, model: Model) -> PredictionCache:
        config = model.settings.cache
        if self.settings.cache_url:
            return RedisCache(self.settings.cache_url.get_secret_value(), config.ttl_seconds)
        on_evict = None
        if self._on_cache_evict is not None:
            report, name, version = self._on_cache_evict, model.name, model.version

            def on_evict() -> None:
                report(name, version)

        return LocalCache(config.max_bytes, config.ttl_seconds, on_evict)

    def set_aliases(self, name: str, aliases: dict[str, str]) -> None:
        """Point a model's aliases at loaded versions, all at once (one assignment)."""
        before, self._aliases[name] = self._aliases.get(name, {}), dict(aliases)
        for alias in sorted(before.keys() | aliases.keys()):
            old, new = before.get(alias), aliases.get(alias)
            if new is None:
                logger.info("alias %s of %s removed (was version %s)", alias, name, old)
            elif old != new:
                was = f"version {old}" if old is not None else "none"
                logger.info(
                    "alias %s of %s now points at version %s (was %s)", alias, name, new, was
                )

    async def remove(self, name: str, version: str, drain_seconds: float = 30.0) -> None:
        """Stop routing to a version, let its in-flight requests finish, then unload it."""
        served = self._models.get(name, {}).pop(version, None)
        if served is None:
            return
        if not self._models[name]:
            del self._models[name]
            del self._default[name]
            self._aliases.pop(name, None)
        else:
            self._default[name] = max(self._models[name], key=version_key)
        if served.inflight:
            served.drained = asyncio.Event()
            try:
                await asyncio.wait_for(served.drained.wait(), drain_seconds)
            except TimeoutError:
                logger.warning("%s version %s: unloading with requests in flight", name, version)
        if served.batcher is not None:
            await served.batcher.stop()
        if served.cache is not None:
            await served.cache.close()
        if self._executor is not None:
            await served.model.release(self._executor)
        _log_model("unloaded", name, version)

    def snapshot(self) -> dict[str, Any]:
        """Loaded versions, in-flight requests and queue depths, for sampled gauges."""
        return {
            "models_loaded": sum(len(v) for v in self._models.values()),
            "inflight": {
                name: sum(s.inflight for s in versions.values())
                for name, versions in self._models.items()
            },
            "queue_depth": {
                (name, version): served.batcher.queue_depth
                for name, versions in self._models.items()
                for version, served in versions.items()
                if served.batcher is not None
            },
        }

    # -- health and metadata ---------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return (
            self._started
            and not self.not_ready()
            and all(
                served.model.ready
                for versions in self._models.values()
                for served in versions.values()
            )
        )

    def not_ready(self) -> dict[str, str]:
        """Models that serve no version because their load failed: name → reason."""
        return self.unserved.not_ready(self._models)

    def index(self) -> list[dict[str, str]]:
        """Every version served or known but not served, for the V2 repository index."""
        entries = []
        for name in sorted(set(self._models) | self.unserved.names()):
            served, unserved = self._models.get(name, {}), self.unserved.entries(name)
            for version in sorted(set(served) | set(unserved), key=version_key):
                ok = version in served and served[version].model.ready
                reason = "" if ok else unserved.get(version, "not ready")
                state = "READY" if ok else "UNAVAILABLE"
                entries.append({"name": name, "version": version, "state": state, "reason": reason})
        return entries

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "inferline", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        return sorted(self._lookup(name), key=version_key)

    def resolve(self, name: str, version: str | None) -> ServedModel:
        """The version or alias a request names; none: ``production``, else the newest."""
        versions = self._lookup(name)
        aliases = self._aliases.get(name, {})
        if not version:
            version = aliases.get(DEFAULT_ALIAS, self._default[name])
        served = versions.get(version)
        if served is None and version in aliases:
            served = versions.get(aliases[version])
        if served is None:
            self.unserved.refuse(name, version)
        if served is None:
            available = ", ".join(sorted(versions, key=version_key))
            named = f"; aliases: {', '.join(sorted(aliases))}" if aliases else ""
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}; available: {available}{named}"
            )
        return served

    def aliases(self, name: str) -> dict[str, str]:
        self._lookup(name)
        return dict(self._aliases.get(name, {}))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.resolve(name, version).model.ready

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.resolve(name, version).model
        return {
            "name": model.name,
            "versions": self.versions(name),
            "platform": model.settings.runtime,
            "inputs": [_spec_metadata(s) for s in model.inputs],
            "outputs": [_spec_metadata(s) for s in model.outputs],
        }

    def _lookup(self, name: str) -> dict[str, ServedModel]:
        versions = self._models.get(name)
        if versions is None:
            self.unserved.refuse_model(name)
            raise ModelNotFound(f"model {name!r} not found")
        return versions

    # -- inference -------------------------------------------------------------------
    def check_model(
        self, name: str, version: str | None, *, protocol: str = "python", request_id: str = ""
    ) -> ServedModel:
        """The model a request names, checked before its body is read, as Triton does.

        An unknown model or version raises ``ModelNotFound`` and is told to the
        observers as :meth:`infer` tells a failed request, so it is counted the same.
        """
        try:
            return self.resolve(name, version)
        except ModelNotFound as exc:
            if self.observers:
                self._notify(
                    InferenceRecord(
                        request_id, name, "", protocol, time.time(), 0.0, 404, {}, None, exc.message
                    )
                )
            raise

    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        *,
        protocol: str = "python",
        request_id: str = "",
    ) -> InferResponse:
        """Validate, run and answer one request; observers hear about it either way."""
        started, clock = time.time(), time.perf_counter()
        served: ServedModel | None = None
        try:
            served = self.resolve(name, version)
            response, cache_state = await self._infer(served, name, request, request_id)
        except (Exception, asyncio.CancelledError) as exc:
            if self.observers:
                if isinstance(exc, InferlineError):
                    status, message = exc.http_status, exc.message
                elif isinstance(exc, asyncio.CancelledError):  # the client went away
                    status, message = CLIENT_CLOSED_REQUEST, "client closed request"
                else:
                    status, message = 500, type(exc).__name__
                self._notify(
                    InferenceRecord(
                        request_id,
                        name,
                        served.model.version if served else "",
                        protocol,
                        started,
                        time.perf_counter() - clock,
                        status,
                        {t.name: t.data for t in request.inputs},
                        None,
                        message,
                    )
                )
            raise
        if self.observers:
            self._notify(
                InferenceRecord(
                    request_id,
                    name,
                    response.model_version,
                    protocol,
                    started,
                    time.perf_counter() - clock,
                    200,
                    {t.name: t.data for t in request.inputs},
                    {t.name: t.data for t in response.outputs},
                    cache=cache_state,
                )
            )
        return response

    def _notify(self, record: InferenceRecord) -> None:
        for observer in self.observers:
            try:
                observer.observe(record)
            except Exception:  # an observer must never fail a request
                logger.exception("observer %r failed", observer)

    async def _infer(
        self, served: ServedModel, name: str, request: InferRequest, request_id: str = ""
    ) -> tuple[InferResponse, str | None]:
        model = served.model
        if not model.ready:
            raise ModelNotReady(f"model {name!r} version {model.version} is not ready")
        check_limits(request.inputs, self.settings.max_tensors, self.settings.max_elements)
        inputs = check_inputs(name, request.inputs, model.inputs, text=model.text_inputs)
        wanted = _requested_names(request, model.outputs)
        cache, key, cache_state = served.cache, b"", None
        if cache is not None and request.parameters.get("cache", True) is not False:
            key = cache_key(name, model.version, served.signature, inputs)
            hit = await cache.get(key)
            if hit is not None:
                response = InferResponse(
                    name, model.version, _select_outputs(hit, wanted), request.id, cache="hit"
                )
                return response, "hit"
            cache_state = "miss"
        served.inflight += 1
        try:
            outputs = await served.call(inputs)
        except InferlineError:
            raise
        except Exception as exc:
            # Not known to be the input's fault (runtimes translate those to InvalidInput):
            # the client gets the exception's type and the request id, the log its text.
            logger.exception(
                "model %s version %s failed (request id %s)", name, model.version, request_id
            )
            traced = f"; request id {request_id}" if request_id else ""
            raise InternalError(
                f"model {name!r} version {model.version} failed: {type(exc).__name__}{traced}"
            ) from exc
        finally:
            served.inflight -= 1
            if served.drained is not None and not served.inflight:
                served.drained.set()
        if cache_state == "miss" and cache is not None:
            await cache.put(key, outputs)
        response = InferResponse(
            model_name=name,
            model_version=model.version,
            outputs=_select_outputs(outputs, wanted),
            id=request.id,
            cache=cache_state,
        )
        return response, cache_state


def _requested_names(request: InferRequest, declared: list[TensorSpec]) -> list[str] | None:
    """Requested output names, checked before queueing when the signature names outputs."""
    if request.outputs is None:
        return None
    names = [o.name for o in request.outputs]
    known = {spec.name for spec in declared}
    unknown = [name for name in names if known and name not in known]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; the model has: {', '.join(sorted(known))}"
        )
    return names


def _select_outputs(outputs: Outputs, wanted: Iterable[str] | None) -> list[Tensor]:
    names = list(outputs) if wanted is None else list(wanted)
    tensors = []
    for name in names:
        array = outputs.get(name)
        if array is None:
            raise InvalidInput(f"unknown output {name!r}; the model has: {', '.join(outputs)}")
        tensors.append(Tensor(name, datatype_of(array), list(array.shape), array))
    return tensors


def _spec_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}


def _log_model(what: str, name: str, version: str) -> None:
    logger.info("%s %s version %s", what, name, version, extra={"model": name, "version": version})
