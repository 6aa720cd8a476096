"""Replication inside one process: Redis, state cache, workers, intents.

:class:`ReplicationRuntime` is what the router's replication plugin starts
(``startup``) and stops (``shutdown``), and what ``praefect replicate`` runs
on its own (workers only, no intents of its own). It owns:

- the Redis client: ``redis.url``, or an :class:`EmbeddedRedis` in
  ``redis.data_dir`` when the URL is empty;
- the :class:`RepositoryStore` and the :class:`StateCache` (local writes
  are applied to the cache at once);
- one :class:`ReplicationWorker` per (virtual storage, node);
- the :class:`VerificationWorker` (with the workers, unless
  ``replication.verification_interval`` is 0), which notices replicas that
  vanished from their node and has them repaired;
- this router's liveness key and the :class:`IntentResolver`;
- the mutation path: :meth:`begin_mutation` before forwarding,
  :meth:`record_mutation` after the primary's OK, :meth:`abandon_mutation`
  after a failure.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from praefect.core.mutation import ChangeType
from praefect.core.telemetry.metrics import ReplicationMetrics
from praefect.plugins.replication.cache import CacheListener, StateCache
from praefect.plugins.replication.embedded_redis import (
    EmbeddedRedis,
    connect,
    default_data_dir,
    socket_url,
)
from praefect.plugins.replication.intents import (
    Intent,
    IntentResolver,
    IntentStore,
    RouterPresence,
    new_intent_id,
)
from praefect.plugins.replication.nodes import NodeClients, NodeEndpoint
from praefect.plugins.replication.state import (
    MutationRecord,
    PrimaryCheck,
    PrimaryMissing,
    PrimaryMoved,
    RepositoryStore,
)
from praefect.plugins.replication.verification import VerificationSettings, VerificationWorker
from praefect.plugins.replication.worker import WorkerPool, WorkerSettings
from praefect.settings import Config

log = logging.getLogger("praefect.replication")

__all__ = [
    "DEFINITE_FAILURES",
    "PrimaryMissing",
    "PrimaryMoved",
    "RedisUnavailable",
    "ReplicationRuntime",
    "RuntimeOptions",
    "data_dir_for",
    "default_router_id",
    "endpoints_from_settings",
    "redis_url_for",
]

#: status codes after which the primary certainly did not apply a mutator:
#: its intent is cleared at once. Any other failure (deadline, lost
#: connection, internal error) leaves the intent to the resolver.
DEFINITE_FAILURES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


#: seconds between health probes of a replication target that is down
TARGET_PROBE_INTERVAL = 1.0


class RedisUnavailable(RuntimeError):
    """Redis could not be reached or used; the message says what to do."""


def default_router_id() -> str:
    """host-pid-random: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def endpoints_from_settings(settings: Config) -> list[NodeEndpoint]:
    return [
        NodeEndpoint(vs.name, node.name, node.address, node.token)
        for vs in settings.virtual_storages
        for node in vs.nodes
    ]


def data_dir_for(settings: Config) -> Path:
    """The embedded Redis's directory: ``redis.data_dir``, else a per-user state directory."""
    if settings.redis.data_dir:
        return Path(str(settings.redis.data_dir)).expanduser().absolute()
    return Path(default_data_dir())


def redis_url_for(settings: Config) -> str:
    """``redis.url``, or the socket of the embedded Redis of ``redis.data_dir``."""
    if settings.redis.url:
        return str(settings.redis.url)
    return str(socket_url(data_dir_for(settings)))


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """What runs besides the Redis connection and the state cache."""

    workers: bool = True
    intents: bool = True
    #: start an embedded Redis when ``redis.url`` is empty (else connect to its socket)
    embedded_redis: bool = True
    worker_settings: WorkerSettings | None = None
    #: the verification worker's pace (None: from the settings); runs with the workers
    verification: VerificationSettings | None = None
    presence_ttl: float = 15.0
    resolver_interval: float = 5.0


class ReplicationRuntime:
    """Replication for one router (or one ``praefect replicate``) process."""

    def __init__(
        self,
        settings: Config,
        *,
        router_id: str | None = None,
        options: RuntimeOptions | None = None,
        cache_listeners: Iterable[CacheListener] = (),
        metrics: ReplicationMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.router_id = router_id or default_router_id()
        self.options = options or RuntimeOptions()
        self._listeners = tuple(cache_listeners)
        self.embedded: EmbeddedRedis | None = None
        self._client: aioredis.Redis | None = None
        self._store: RepositoryStore | None = None
        self._cache: StateCache | None = None
        self.intents: IntentStore | None = None
        self.nodes = NodeClients(endpoints_from_settings(settings))
        self.workers: WorkerPool | None = None
        self.presence: RouterPresence | None = None
        self.resolver: IntentResolver | None = None
        self.verifier: VerificationWorker | None = None
        # intents of calls this router is forwarding right now
        self._in_flight: set[str] = set()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("replication is not started")
        return self._client

    @property
    def store(self) -> RepositoryStore:
        if self._store is None:
            raise RuntimeError("replication is not started")
        return self._store

    @property
    def cache(self) -> StateCache:
        if self._cache is None:
            raise RuntimeError("replication is not started")
        return self._cache

    def in_flight(self) -> Collection[str]:
        return frozenset(self._in_flight)

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect (or start the embedded Redis), read the state, start the background work."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        if not settings.redis.url and self.options.embedded_redis:
            self.embedded = EmbeddedRedis(data_dir_for(settings))
            await self.embedded.start()
            url = self.embedded.url
        else:
            url = redis_url_for(settings)
        self._client = connect(url)
        try:
            await self._client.ping()
        except (RedisError, OSError) as error:
            raise RedisUnavailable(
                f"cannot reach Redis at {_masked(url)}: {error}; check redis.url "
                "(or start the router that owns the embedded Redis)"
            ) from error
        names = settings.virtual_storage_names
        self._store = RepositoryStore(self._client)
        self._cache = StateCache(self._store, names)
        for listener in self._listeners:
            self._cache.subscribe(listener)
        self._store.on_change = self._cache.apply
        verification = self.options.verification or VerificationSettings.from_settings(settings)
        if self.options.workers and verification.interval > 0:
            self.verifier = VerificationWorker(
                self._store, self._cache, self.nodes, settings=verification, metrics=self.metrics
            )
            # Before the first read of the state, which it sees as changes.
            self._cache.subscribe(self.verifier.changed)
        await self._cache.start()
        self.intents = IntentStore(self._client)
        if self.options.intents:
            self.presence = RouterPresence(self._client, self.router_id, ttl=self.options.presence_ttl)
            await self.presence.start()
            self.resolver = IntentResolver(
                self._store,
                self.intents,
                self._checksum,
                names,
                router_id=self.router_id,
                in_flight=self.in_flight,
                interval=self.options.resolver_interval,
                grace=self.options.presence_ttl,
            )
            await self.resolver.start()
        if self.options.workers:
            worker_settings = self.options.worker_settings or WorkerSettings(
                batch_size=settings.replication.batch_size,
                max_attempts=settings.replication.max_attempts,
                claim_idle=settings.replication.claim_idle,
                call_timeout=settings.replication.call_timeout,
                concurrency=settings.replication.concurrency,
                target_probe_interval=TARGET_PROBE_INTERVAL,
            )
            self.workers = WorkerPool(
                self._client,
                self._store,
                self.nodes,
                consumer=self.router_id,
                settings=worker_settings,
                metrics=self.metrics,
            )
            await self.workers.start()
        if self.verifier is not None:
            await self.verifier.start()
        log.info(
            "replication started as %s (Redis %s; %d workers)",
            self.router_id,
            _masked(url),
            len(self.workers.workers) if self.workers else 0,
        )

    async def stop(self) -> None:
        """Stop background work; events in hand stay pending for another worker."""
        if self.verifier is not None:
            # Claims in hand expire after their lease.
            await self.verifier.stop()
            self.verifier = None
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        if self.resolver is not None:
            await self.resolver.stop()
            self.resolver = None
        if self.presence is not None:
            await self.presence.stop()
            self.presence = None
        if self._cache is not None:
            await self._cache.stop()
            self._cache = None
        await self.nodes.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None

    async def _checksum(self, virtual_storage: str, node: str, relative_path: str) -> str | None:
        checksum: str | None = await self.nodes.checksum(
            virtual_storage, relative_path, node=node, deadline=60
        )
        return checksum

    # --------------------------------------------------------- mutations

    async def begin_mutation(
        self,
        virtual_storage: str,
        relative_path: str,
        *,
        primary: str,
        replicas: Iterable[str],
        change: ChangeType,
    ) -> Intent:
        """Record the intent of a mutator about to be forwarded to ``primary``.

        Raises :class:`PrimaryMissing` (FAILED_PRECONDITION) instead when
        this router's view says ``primary``'s replica was found missing:
        nothing is sent to a node that lost the repository (the recording
        script refuses such a write too, should the view lag).
        """
        if self.intents is None:
            raise RuntimeError("replication is not started")
        if change is not ChangeType.DELETE and self._cache is not None:
            metadata = self._cache.get(virtual_storage, relative_path)
            if (
                metadata is not None
                and metadata.primary == primary
                and primary in metadata.assigned
                and metadata.replica_generation(primary) < 0
            ):
                raise PrimaryMissing(metadata, primary)
        # In flight before it exists in Redis: this router's resolver must
        # never see the intent of a call it is still forwarding as orphaned.
        intent_id = new_intent_id()
        self._in_flight.add(intent_id)
        try:
            return await self.intents.record(
                virtual_storage, relative_path,
                router_id=self.router_id, node=primary, replicas=replicas, change=change,
                intent_id=intent_id,
            )
        except BaseException as error:
            self._in_flight.discard(intent_id)
            if isinstance(error, (RedisError, OSError)):
                raise RedisUnavailable(
                    f"cannot record the write in Redis ({error}); the write was not sent to "
                    "any node: retry when Redis is reachable"
                ) from error
            raise

    async def record_mutation(
        self,
        virtual_storage: str,
        relative_path: str,
        *,
        primary: str,
        replicas: Iterable[str],
        change: ChangeType,
        intent: Intent | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> MutationRecord:
        """After the primary's OK: bump the generation, queue the events, clear the intent.

        One atomic Redis call. If it fails the intent stays in Redis and this
        router's resolver replicates the change once Redis answers again; the
        caller must still fail the client's call.

        Raises :class:`PrimaryMoved` (a ``CallError``: the client gets
        ABORTED) when ``primary`` is no longer the repository's primary: the
        primary moved while the write was in flight. Nothing is recorded;
        the same call marks ``primary``'s replica outdated, queues its
        replication from the primary now (which undoes the write there) and
        clears the intent.
        """
        try:
            return await self.store.record_mutation(
                virtual_storage,
                relative_path,
                change=change,
                source=primary,
                assigned=(primary, *replicas),
                primary=primary,
                intent_id=intent.id if intent else None,
                trace_context=trace_context,
                check=PrimaryCheck.REPAIR,
            )
        except PrimaryMoved as moved:
            log.warning(
                "%s in %s: refused a write that %s took after %s became the primary; "
                "%s's copy will be replicated from %s",
                relative_path, virtual_storage, primary, moved.primary, primary, moved.primary,
            )
            raise
        except (RedisError, OSError) as error:
            raise RedisUnavailable(
                f"the change reached the primary {primary} but could not be queued for "
                f"replication ({error}); it will be replicated when Redis is back"
            ) from error
        finally:
            if intent is not None:
                self._in_flight.discard(intent.id)

    async def abandon_mutation(self, intent: Intent, code: grpc.StatusCode) -> None:
        """The mutator failed: clear the intent if nothing can have changed, else leave it."""
        try:
            if code in DEFINITE_FAILURES and self.intents is not None:
                await self.intents.clear(intent)
        finally:
            self._in_flight.discard(intent.id)


def _masked(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in userinfo else url
