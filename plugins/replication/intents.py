"""Intents: the no-crash-window half of replication.

Before a mutator is forwarded to a primary, the router records an *intent*
(virtual storage, path, router id, node, start time) in
``praefect:{vs}:intents``. The Lua call that records the mutation's events
clears it (``RepositoryStore.record_mutation(intent_id=...)``); a mutator
that failed for certain clears it at once. An intent that stays behind means
a write may have reached the node while nobody queued its replication: the
router died between the node's OK and the event, or the outcome was unknown
(deadline, lost connection).

Every router runs an :class:`IntentResolver`. It takes intents of routers
whose liveness key (:class:`RouterPresence`) has expired, and its own intents
that are no longer in flight, compares CalculateChecksum of the node that
got the write with every other replica, and when they differ records the
change (generation bump + events from that node) in the same atomic call
that clears the intent. Nothing that reached a primary is left
unreplicated and unknown.

A node that is no longer the repository's primary (it failed over while the
write was in flight) never has its write recorded: the write was not
acknowledged, and recording it would replicate that node's copy over the
primary's. When its checksum differs from the primary's, its replica is
marked outdated and a replication from the primary to it is queued instead,
in the same atomic call that clears the intent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.keys import VirtualStorageKeys, router_key
from praefect.plugins.replication.state import (
    PrimaryCheck,
    PrimaryMoved,
    RepositoryMetadata,
    RepositoryStore,
)

log = logging.getLogger("praefect.replication.intents")

__all__ = [
    "ChecksumProbe",
    "Intent",
    "IntentResolver",
    "IntentStore",
    "Resolution",
    "RouterPresence",
    "new_intent_id",
]

#: ``await probe(virtual_storage, node, relative_path)``: the repository's
#: checksum on ``node``, ``None`` when it does not exist there; raises when
#: the node cannot answer.
ChecksumProbe = Callable[[str, str, str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Intent:
    """A mutator forwarded to ``node`` and not yet recorded."""

    id: str
    virtual_storage: str
    relative_path: str
    router_id: str
    node: str
    replicas: tuple[str, ...]
    change: ChangeType
    started_at: float

    def encode(self) -> str:
        return json.dumps(
            {
                "path": self.relative_path,
                "router": self.router_id,
                "node": self.node,
                "replicas": list(self.replicas),
                "change": self.change.value,
                "started_at": self.started_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, intent_id: str, virtual_storage: str, text: str) -> Intent:
        data = json.loads(text)
        return cls(
            id=intent_id,
            virtual_storage=virtual_storage,
            relative_path=str(data["path"]),
            router_id=str(data["router"]),
            node=str(data["node"]),
            replicas=tuple(str(name) for name in data.get("replicas", ())),
            change=ChangeType(data.get("change", ChangeType.UPDATE.value)),
            started_at=float(data["started_at"]),
        )


def new_intent_id() -> str:
    return uuid.uuid4().hex


class IntentStore:
    """Intents in Redis, one hash per virtual storage."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def record(
        self,
        virtual_storage: str,
        relative_path: str,
        *,
        router_id: str,
        node: str,
        replicas: Iterable[str],
        change: ChangeType,
        intent_id: str | None = None,
    ) -> Intent:
        intent = Intent(
            id=intent_id or new_intent_id(),
            virtual_storage=virtual_storage,
            relative_path=relative_path,
            router_id=router_id,
            node=node,
            replicas=tuple(replicas),
            change=change,
            started_at=time.time(),
        )
        await self.client.hset(
            VirtualStorageKeys(virtual_storage).intents, intent.id, intent.encode()
        )
        return intent

    async def clear(self, intent: Intent) -> bool:
        """Forget the intent; True when it was still there."""
        removed = await self.client.hdel(VirtualStorageKeys(intent.virtual_storage).intents, intent.id)
        return bool(removed)

    async def exists(self, intent: Intent) -> bool:
        return bool(
            await self.client.hexists(VirtualStorageKeys(intent.virtual_storage).intents, intent.id)
        )

    async def list(self, virtual_storage: str) -> list[Intent]:
        raw: dict[str, str] = await self.client.hgetall(  # type: ignore[assignment]
            VirtualStorageKeys(virtual_storage).intents
        )
        intents = []
        for intent_id, text in raw.items():
            try:
                intents.append(Intent.decode(intent_id, virtual_storage, text))
            except (ValueError, KeyError):
                log.warning("ignoring unreadable intent %s in %s", intent_id, virtual_storage)
        return sorted(intents, key=lambda intent: intent.started_at)

    async def claim(self, intent: Intent, resolver_id: str, ttl: float) -> bool:
        """Take the short-lived lock for resolving ``intent``; False if another router has it."""
        key = VirtualStorageKeys(intent.virtual_storage).intent_lock(intent.id)
        return bool(await self.client.set(key, resolver_id, nx=True, px=int(ttl * 1000)))

    async def release(self, intent: Intent) -> None:
        await self.client.delete(VirtualStorageKeys(intent.virtual_storage).intent_lock(intent.id))


class RouterPresence:
    """This router's liveness key, refreshed in the background until stopped.

    Other routers treat the intents of a router whose key has expired as
    orphaned. ``ttl`` must exceed the longest pause of the refresh loop.
    """

    def __init__(self, client: aioredis.Redis, router_id: str, *, ttl: float = 15.0) -> None:
        self.client = client
        self.router_id = router_id
        self.ttl = ttl
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._refresh()
        self._task = asyncio.create_task(self._run(), name=f"router-presence:{self.router_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.client.delete(router_key(self.router_id))

    async def _refresh(self) -> None:
        await self.client.set(
            router_key(self.router_id),
            json.dumps({"started": time.time()}),
            px=int(self.ttl * 1000),
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self._refresh()
            except (RedisError, OSError) as error:
                log.warning("cannot refresh this router's liveness key: %s", error)

    @staticmethod
    async def alive(client: aioredis.Redis, router_ids: Iterable[str]) -> set[str]:
        """The routers among ``router_ids`` whose liveness key exists."""
        ids = sorted(set(router_ids))
        if not ids:
            return set()
        # One EXISTS per key: the keys may live in different cluster slots.
        async with client.pipeline(transaction=False) as pipe:
            for router_id in ids:
                pipe.exists(router_key(router_id))
            found = await pipe.execute()
        return {router_id for router_id, exists in zip(ids, found, strict=True) if exists}


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the resolver did with an intent: ``outcome`` and the nodes queued."""

    intent: Intent
    #: "in-sync", "replicated", "created", "deleted", "nothing-written", or
    #: "repaired" (the node is no longer the primary: its copy is queued to be
    #: replicated from the primary, undoing the write)
    outcome: str
    targets: tuple[str, ...] = ()


class IntentResolver:
    """Finds orphaned intents and resolves them by comparing checksums."""

    def __init__(
        self,
        store: RepositoryStore,
        intents: IntentStore,
        checksum: ChecksumProbe,
        virtual_storages: Iterable[str],
        *,
        router_id: str,
        in_flight: Callable[[], Collection[str]] = frozenset,
        interval: float = 5.0,
        grace: float = 15.0,
        lock_ttl: float = 120.0,
    ) -> None:
        self.store = store
        self.intents = intents
        self.checksum = checksum
        self.virtual_storages = tuple(virtual_storages)
        self.router_id = router_id
        self.in_flight = in_flight
        self.interval = interval
        self.grace = grace
        self.lock_ttl = lock_ttl
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="intent-resolver")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.resolve_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resolving intents failed; trying again in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    async def orphaned(self, virtual_storage: str) -> list[Intent]:
        """Intents nobody will finish: of dead routers, or ours and no longer in flight."""
        intents = await self.intents.list(virtual_storage)
        others = {intent.router_id for intent in intents if intent.router_id != self.router_id}
        alive = await RouterPresence.alive(self.intents.client, others)
        in_flight = self.in_flight()
        now = time.time()
        result = []
        for intent in intents:
            if intent.router_id == self.router_id:
                if intent.id not in in_flight:
                    result.append(intent)
            elif intent.router_id not in alive and now - intent.started_at >= self.grace:
                result.append(intent)
        return result

    async def resolve_once(self) -> list[Resolution]:
        """Resolve every orphaned intent once; intents that cannot be resolved yet stay."""
        done: list[Resolution] = []
        for virtual_storage in self.virtual_storages:
            for intent in await self.orphaned(virtual_storage):
                if not await self.intents.claim(intent, self.router_id, self.lock_ttl):
                    continue
                try:
                    # Another router may have resolved it between our list and our claim.
                    if not await self.intents.exists(intent):
                        continue
                    done.append(await self.resolve(intent))
                except (RedisError, OSError):
                    raise
                except Exception as error:
                    log.warning(
                        "cannot resolve the intent for %s in %s yet: %s",
                        intent.relative_path,
                        intent.virtual_storage,
                        error,
                    )
                finally:
                    await self.intents.release(intent)
        return done

    async def resolve(self, intent: Intent) -> Resolution:
        """Compare checksums and queue replication from the node that got the write.

        A node that is no longer the repository's primary gets no say: its
        write was never acknowledged, so its copy is brought back in line
        with the primary's instead (see :meth:`_resolve_former_primary`).
        """
        vs, path, source = intent.virtual_storage, intent.relative_path, intent.node
        metadata = await self.store.get(vs, path)
        if metadata is not None and metadata.primary and metadata.primary != source:
            return await self._resolve_former_primary(intent, metadata)
        source_sum = await self.checksum(vs, source, path)
        if metadata is None:
            if source_sum is None:
                await self.intents.clear(intent)
                return self._log(Resolution(intent, "nothing-written"))
            return await self._record(
                intent, ChangeType.CREATE, (source, *intent.replicas), "created"
            )
        if source_sum is None:
            if intent.change is ChangeType.DELETE:
                return await self._record(intent, ChangeType.DELETE, metadata.assigned, "deleted")
            # The node that got the write does not have the repository: the
            # write cannot have changed anything there.
            await self.intents.clear(intent)
            return self._log(Resolution(intent, "nothing-written"))
        differing = False
        for replica in metadata.assigned:
            if replica == source:
                continue
            try:
                if await self.checksum(vs, replica, path) != source_sum:
                    differing = True
                    break
            except Exception as error:
                log.info("checksum of %s on %s unavailable (%s): replicating", path, replica, error)
                differing = True
                break
        if not differing:
            await self.intents.clear(intent)
            return self._log(Resolution(intent, "in-sync"))
        return await self._record(intent, ChangeType.UPDATE, metadata.assigned, "replicated")

    async def _resolve_former_primary(
        self, intent: Intent, metadata: RepositoryMetadata
    ) -> Resolution:
        """The intent's node is no longer the primary: undo its write rather than spread it.

        Equal checksums (the write changed nothing, or the primary has it
        too): the intent is cleared. Otherwise, or when either node cannot
        answer, the node's replica is marked outdated and a replication from
        the primary to it is queued, atomically with the clearing, so its
        copy follows the primary's history and never the other way round.
        """
        vs, path, node, primary = (
            intent.virtual_storage, intent.relative_path, intent.node, metadata.primary
        )
        change = ChangeType.UPDATE
        try:
            node_sum = await self.checksum(vs, node, path)
            if node_sum is None and intent.change is ChangeType.DELETE:
                change = ChangeType.DELETE
            same = node_sum == await self.checksum(vs, primary, path)
        except Exception as error:
            log.info(
                "cannot compare %s on %s with the primary %s (%s): repairing %s",
                path, node, primary, error, node,
            )
            same = False
        if same:
            await self.intents.clear(intent)
            return self._log(Resolution(intent, "in-sync"))
        # The same guarded call as a router's: it repairs the node, unless the
        # primary moved back to it meanwhile, when the write is recorded.
        outcome = "deleted" if change is ChangeType.DELETE else "replicated"
        return await self._record(intent, change, metadata.assigned, outcome)

    async def _record(
        self, intent: Intent, change: ChangeType, assigned: Iterable[str], outcome: str
    ) -> Resolution:
        """Record the write from the intent's node, only while it is the primary."""
        try:
            record = await self.store.record_mutation(
                intent.virtual_storage, intent.relative_path, change=change,
                source=intent.node, assigned=assigned, intent_id=intent.id,
                check=PrimaryCheck.REPAIR,
            )
        except PrimaryMoved as moved:
            return self._log(Resolution(intent, "repaired", moved.repaired))
        return self._log(Resolution(intent, outcome, record.targets))

    @staticmethod
    def _log(resolution: Resolution) -> Resolution:
        intent = resolution.intent
        log.info(
            "resolved the intent of router %s for %s in %s (%s): %s%s",
            intent.router_id,
            intent.relative_path,
            intent.virtual_storage,
            intent.change.value,
            resolution.outcome,
            f", replication to {', '.join(resolution.targets)} queued" if resolution.targets else "",
        )
        return resolution
