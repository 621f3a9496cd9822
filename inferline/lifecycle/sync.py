"""RegistrySync: keep a data plane serving what the registry says, with no failed requests.

Load and warm the new version, switch aliases in one assignment, let the old
version drain, unload it. A version that fails to load never takes traffic:
its alias keeps pointing at the one already serving, and the audit log says why.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from inferline.errors import InferlineError, ModelLoadError
from inferline.lifecycle.loading import load_version
from inferline.lifecycle.serving import ServingPlane
from inferline.registry.store import Registry, ServingPlan, default_actor

__all__ = ["RegistrySync"]

logger = logging.getLogger(__name__)


class RegistrySync:
    """Keeps a data plane serving what the registry says, with no failed requests."""

    def __init__(self, registry: Registry, dataplane: ServingPlane, poll_seconds: float) -> None:
        self.registry = registry
        self.dataplane = dataplane
        self.poll_seconds = poll_seconds
        self._generation = -1
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        #: Models unloaded through the repository API: not served until loaded again.
        self._unloaded: set[str] = set()
        #: Models whose failed or not-loaded versions the data plane reports.
        self._reported: set[str] = set()

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        await self.sync()
        self._task = asyncio.create_task(self._poll(), name="inferline-registry-sync")
        self._task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        if self._task is not None:
            # No cancel: a sync running in a thread finishes and returns its connection
            # before the registry closes.
            self._stopping.set()
            await asyncio.wait([self._task])
            self._task = None

    async def _poll(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
                return
            except TimeoutError:
                pass
            try:
                await self.sync()
            except InferlineError as exc:  # registry briefly unreachable: keep serving
                logger.warning("registry sync failed: %s", exc.message)

    async def sync(self, force: bool = False) -> None:
        """Reconcile once if the registry changed since the last look."""
        if self._lock is None:
            raise RuntimeError("RegistrySync.start() has not run")
        async with self._lock:
            generation = await asyncio.to_thread(self.registry.generation)
            if generation == self._generation and not force:
                return
            plan = await asyncio.to_thread(self.registry.serving_plan)
            for name in self._unloaded:
                plan.pop(name, None)
            for name, entry in plan.items():
                await self._reconcile(name, entry)
            for name in set(self.dataplane.model_names()) - set(plan):
                for version in self.dataplane.versions(name):
                    await self.dataplane.remove(name, version)
            for name in set(self._reported) - set(plan):
                self.dataplane.unserved.forget_failed(name)
                self.dataplane.unserved.set_unloaded(name, {})
            self._reported &= set(plan)
            self._generation = generation
            gc.collect()  # unloaded models often sit in reference cycles

    async def load(self, name: str) -> None:
        """Serve a model again (repository extension ``load``)."""
        await asyncio.to_thread(self.registry.versions, name)  # 404 for an unknown model
        self._unloaded.discard(name)
        await self.sync(force=True)
        if name not in self.dataplane.model_names():
            failures = self.dataplane.unserved.failures(name)
            reasons = "; ".join(f"version {v}: {r}" for v, r in failures.items())
            raise ModelLoadError(
                f"model {name!r} could not be loaded: {reasons or 'see the audit log'}"
            )

    async def unload(self, name: str) -> None:
        """Stop serving a model on this server (repository extension ``unload``)."""
        await asyncio.to_thread(self.registry.versions, name)
        self._unloaded.add(name)
        await self.sync(force=True)

    async def _reconcile(self, name: str, plan: ServingPlan) -> None:
        plane, wanted, aliases = self.dataplane, plan.wanted, plan.aliases
        self._reported.add(name)
        loaded = set(plane.versions(name)) if name in plane.model_names() else set()
        # A failure is reported while the version is wanted; a retry below may clear it.
        plane.unserved.forget_failed(name, keep={str(v) for v in wanted} - loaded)
        for number in sorted(wanted):
            if str(number) in loaded:
                continue
            try:
                record = await asyncio.to_thread(self.registry.get, name, number)
                await plane.add(await load_version(self.registry, record, plane.executor))
                loaded.add(str(number))
            except InferlineError as exc:
                logger.error("model %s version %s not served: %s", name, number, exc.message)
                plane.unserved.mark_failed(name, str(number), exc.message)
                await asyncio.to_thread(
                    self.registry.record,
                    "load",
                    name,
                    number,
                    f"server refused: {exc.message}",
                    ok=False,
                    actor=default_actor(),
                )
        if not loaded:
            return
        current = plane.aliases(name)
        # An alias whose new version failed to load keeps pointing at the old one.
        mapping = {
            alias: str(v) if str(v) in loaded else current[alias]
            for alias, v in aliases.items()
            if str(v) in loaded or alias in current
        }
        plane.set_aliases(name, mapping)
        keep = {str(v) for v in wanted} | set(mapping.values())
        for version in sorted(loaded - keep):
            await plane.remove(name, version)
        plane.unserved.set_unloaded(
            name, {str(v): _how_to_serve(name, v) for v in plan.registered if str(v) not in keep}
        )


def _how_to_serve(name: str, version: int) -> str:
    return (
        "a server loads a model's latest version and the versions its aliases point at; "
        f"to serve version {version}, point an alias at it (inferline models alias {name} "
        f'<alias> {version}, or PUT /api/v1/models/{name}/aliases/<alias> {{"version": '
        f"{version}}}), then request it by number or alias"
    )


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("registry sync stopped", exc_info=task.exception())
