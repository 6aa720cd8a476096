"""Every router's in-memory view of repository state, kept fresh from Redis.

Reads (``get``, ``repositories``) never touch Redis: routing decides from
memory. Freshness comes from each virtual storage's change stream, which
every state script appends to together with an incremented version (see
``scripts.py``): one background task per virtual storage reads it with a
blocking XREAD and applies the new states in version order. A version gap
(the capped stream was trimmed past us, or Redis lost data) or a broken
connection leads to a full re-read. Changes this router makes itself are
applied at once through :meth:`StateCache.apply` (``RepositoryStore``'s
``on_change``), so a router reads its own writes without waiting.

Each repository carries the version of its last change; a state is applied
only if it is newer than the one held, so the order in which the stream,
the snapshot and local writes arrive does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.redis_io import (
    blocking_read_ms,
    cancellable,
    raise_if_cancelling,
)
from praefect.plugins.replication.state import RepositoryMetadata, RepositoryStore, StateChange

log = logging.getLogger("praefect.replication.cache")

__all__ = ["CacheListener", "StateCache"]

#: called after a repository's state changed in the cache (``None``: no longer tracked)
CacheListener = Callable[[str, str, RepositoryMetadata | None], None]


@dataclass(slots=True)
class _View:
    repositories: dict[str, RepositoryMetadata] = field(default_factory=dict)
    # version of the deletion of repositories no longer tracked, so a late
    # older state does not bring them back
    deleted: dict[str, int] = field(default_factory=dict)
    version: int = 0
    last_id: str = "0-0"
    resyncs: int = 0


class StateCache:
    """The repository state of some virtual storages, in memory."""

    def __init__(
        self,
        store: RepositoryStore,
        virtual_storages: Iterable[str],
        *,
        block_ms: int = 2_000,
        batch: int = 500,
        retry_delay: float = 0.5,
    ) -> None:
        self.store = store
        self.client: aioredis.Redis = store.client
        self._views = {name: _View() for name in virtual_storages}
        self._block_ms = blocking_read_ms(store.client, block_ms)
        self._batch = batch
        self._retry_delay = retry_delay
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[CacheListener] = []
        # set (and replaced) at every change: wakes wait_until()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------- reads

    def get(self, virtual_storage: str, relative_path: str) -> RepositoryMetadata | None:
        view = self._views.get(virtual_storage)
        return None if view is None else view.repositories.get(relative_path)

    def repositories(self, virtual_storage: str) -> Mapping[str, RepositoryMetadata]:
        view = self._views.get(virtual_storage)
        return MappingProxyType(view.repositories if view else {})

    def version(self, virtual_storage: str) -> int:
        """The highest state version applied in order from the change stream."""
        return self._views[virtual_storage].version

    def resyncs(self, virtual_storage: str) -> int:
        """How many times the whole state was re-read (the first read included)."""
        return self._views[virtual_storage].resyncs

    def subscribe(self, listener: CacheListener) -> None:
        """Call ``listener(vs, path, metadata_or_None)`` after each change it sees."""
        self._listeners.append(listener)

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Read the whole state (raises if Redis cannot be read), then follow the changes."""
        for name in self._views:
            await self._sync(name)
        self._tasks = [
            asyncio.create_task(self._follow(name), name=f"state-cache:{name}")
            for name in self._views
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_for_version(self, virtual_storage: str, version: int) -> None:
        """Wait until the change stream has been applied up to ``version``.

        Bound it with ``asyncio.timeout``.
        """
        await self.wait_until(lambda: self.version(virtual_storage) >= version)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after every change."""
        while not predicate():
            await self._changed.wait()

    # ---------------------------------------------------------- changes

    def apply(self, change: StateChange) -> bool:
        """Apply one repository's state if it is newer than what the cache holds."""
        view = self._views.get(change.virtual_storage)
        if view is None:
            return False
        return self._apply(view, change)

    def _apply(self, view: _View, change: StateChange) -> bool:
        path = change.relative_path
        current = view.repositories.get(path)
        held = current.version if current is not None else view.deleted.get(path, 0)
        if change.version <= held:
            return False
        if change.metadata is None:
            view.repositories.pop(path, None)
            view.deleted[path] = change.version
        else:
            view.repositories[path] = change.metadata
            view.deleted.pop(path, None)
        self._notify(change.virtual_storage, path, change.metadata)
        return True

    def _notify(self, virtual_storage: str, path: str, metadata: RepositoryMetadata | None) -> None:
        for listener in self._listeners:
            try:
                listener(virtual_storage, path, metadata)
            except Exception:
                log.exception("state cache listener %r failed", listener)
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _sync(self, virtual_storage: str) -> None:
        """Replace the view of ``virtual_storage`` by a full read."""
        keys = self.store.keys(virtual_storage)
        view = self._views[virtual_storage]
        # The position in the change stream and the version, read together:
        # every change after this position is replayed over the snapshot.
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(keys.version)
            pipe.xrevrange(keys.changes, count=1)
            raw_version, last = await pipe.execute()
        snapshot = await self.store.list_repositories(virtual_storage)
        old = view.repositories
        view.repositories = {repo.relative_path: repo for repo in snapshot}
        view.deleted = {}
        view.version = int(raw_version or 0)
        view.last_id = last[0][0] if last else "0-0"
        view.resyncs += 1
        for path in old.keys() - view.repositories.keys():
            self._notify(virtual_storage, path, None)
        for path, repo in view.repositories.items():
            if old.get(path) != repo:
                self._notify(virtual_storage, path, repo)
        self._wake()
        log.debug("state of %s read: %d repositories at version %d", virtual_storage, len(snapshot), view.version)

    async def _follow(self, virtual_storage: str) -> None:
        keys: VirtualStorageKeys = self.store.keys(virtual_storage)
        view = self._views[virtual_storage]
        while True:
            raise_if_cancelling()
            try:
                response = await cancellable(
                    self.client.xread(
                        {keys.changes: view.last_id}, count=self._batch, block=self._block_ms
                    )
                )
                if not self._apply_entries(view, virtual_storage, response):
                    log.info("state change feed of %s has a gap: re-reading the state", virtual_storage)
                    await self._sync(virtual_storage)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log.warning("state change feed of %s failed (%s); re-reading", virtual_storage, error)
                await self._resync_until_ok(virtual_storage)

    async def _resync_until_ok(self, virtual_storage: str) -> None:
        delay = self._retry_delay
        while True:
            raise_if_cancelling()
            await asyncio.sleep(delay)
            try:
                await self._sync(virtual_storage)
                return
            except (RedisError, OSError) as error:
                delay = min(delay * 2, 10.0)
                log.warning("cannot read the state of %s (%s); retrying in %.1f s", virtual_storage, error, delay)

    def _apply_entries(self, view: _View, virtual_storage: str, response: object) -> bool:
        """Apply XREAD entries in order; False on a version gap."""
        if not response:
            return True
        assert isinstance(response, list)
        for _stream, entries in response:
            for entry_id, fields in entries:
                version = int(fields["v"])
                if version <= view.version:
                    view.last_id = entry_id
                    continue
                if version != view.version + 1:
                    return False
                self._apply(
                    view,
                    StateChange.from_state(virtual_storage, fields["p"], version, fields["r"]),
                )
                view.version = version
                view.last_id = entry_id
        self._wake()
        return True

    # Exposed for tests and the CLI: how stale may the view be?
    def describe(self) -> dict[str, tuple[int, int]]:
        """virtual storage -> (repositories held, version)."""
        return {name: (len(view.repositories), view.version) for name, view in self._views.items()}
