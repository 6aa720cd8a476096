"""The default replication plugin's hooks.

- ``startup``: start a :class:`ReplicationRuntime` for the router (Redis or
  the embedded one, the state cache, workers, intent resolver) and keep the
  router's cluster view of repository primaries in step with the cache;
  when the router has metrics, the workers record their replays in them and
  a scrape hook refreshes the replication gauges (:class:`ReplicationGauges`);
- ``before_mutation``: record the intent (a Redis failure fails the call
  before the node sees it);
- ``on_mutation``: bump the generation and queue one event per replica in
  one atomic call, before the client gets its OK (a Redis failure fails the
  client's call: never a silent OK), inside a ``publish replication events``
  producer span whose context the events carry (the replays link to it);
- ``on_mutation_failed``: clear or hand over the intent;
- ``shutdown``: stop everything.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from opentelemetry import trace

from praefect.core import hookimpl
from praefect.core.errors import Unavailable
from praefect.core.mutation import Mutation, MutationFailure
from praefect.core.stash import StashKey
from praefect.core.telemetry.replication import publish_span
from praefect.core.telemetry.router import router_metrics
from praefect.plugins.replication.cache import CacheListener, StateCache
from praefect.plugins.replication.intents import Intent
from praefect.plugins.replication.runtime import RedisUnavailable, ReplicationRuntime
from praefect.plugins.replication.state import RepositoryMetadata
from praefect.plugins.replication.streams import queue_depth

if TYPE_CHECKING:
    from praefect.core.cluster import Cluster
    from praefect.core.router import Router
    from praefect.core.telemetry.metrics import RouterMetrics

log = logging.getLogger("praefect.replication")

__all__ = [
    "RUNTIME",
    "ReplicationGauges",
    "before_mutation",
    "on_mutation",
    "on_mutation_failed",
    "replication_runtime",
    "shutdown",
    "startup",
    "state_cache",
]

#: the router's replication runtime, in ``router.stash``
RUNTIME = StashKey[ReplicationRuntime]()
#: the intent of a mutator call, in ``call.stash``
_INTENT = StashKey[Intent]()
#: the router's replication gauges, in ``router.stash`` when it has metrics
_GAUGES = StashKey["ReplicationGauges"]()


def replication_runtime(router: Router) -> ReplicationRuntime | None:
    """The replication runtime of ``router``, None when the plugin did not start."""
    return router.stash.get(RUNTIME, None)


def state_cache(router: Router) -> StateCache | None:
    """The in-memory repository state (generations, primaries) for routing decisions."""
    runtime = replication_runtime(router)
    return runtime.cache if runtime is not None else None


def _cluster_listener(cluster: Cluster) -> CacheListener:
    def apply(virtual_storage: str, relative_path: str, metadata: RepositoryMetadata | None) -> None:
        if virtual_storage not in cluster:
            return
        configured = cluster.virtual_storage(virtual_storage).configured_primary.name
        if metadata is None or not metadata.primary or metadata.primary == configured:
            cluster.clear_primary(virtual_storage, relative_path)
            return
        try:
            cluster.set_primary(virtual_storage, relative_path, metadata.primary)
        except KeyError:
            log.warning(
                "repository %s in %s has primary %r, which is not a configured node",
                relative_path, virtual_storage, metadata.primary,
            )

    return apply


class ReplicationGauges:
    """Refreshes the replication gauges of a router's metrics before each scrape.

    Per (virtual storage, node): events pending and events dead-lettered,
    from Redis (a few round trips per node, see
    :func:`~praefect.plugins.replication.streams.queue_depth`); repositories
    whose primary the node is, from the in-memory state cache.
    """

    def __init__(self, runtime: ReplicationRuntime, cluster: Cluster, metrics: RouterMetrics) -> None:
        self.runtime = runtime
        self.cluster = cluster
        self.metrics = metrics

    async def refresh(self) -> None:
        """The scrape hook; a Redis failure raises (logged, the scrape still answers)."""
        self.refresh_primaries()
        replication = self.metrics.replication
        for node in self.runtime.nodes.endpoints():
            depth = await queue_depth(self.runtime.client, node.virtual_storage, node.name)
            replication.set_pending(depth.virtual_storage, depth.target, depth.pending)
            replication.set_dead_letters(depth.virtual_storage, depth.target, depth.dead_letters)

    def refresh_primaries(self) -> None:
        cache = self.runtime.cache
        for vs in self.cluster.virtual_storages:
            configured = vs.configured_primary.name
            primaries = Counter(
                metadata.primary or configured for metadata in cache.repositories(vs.name).values()
            )
            self.metrics.set_primaries(vs.name, primaries)


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def startup(router: Router) -> None:
    metrics = router_metrics(router)
    runtime = ReplicationRuntime(
        router.settings,
        cache_listeners=[_cluster_listener(router.cluster)],
        # From the start: a replay taken at once is timed too.
        metrics=metrics.replication if metrics is not None else None,
    )
    await runtime.start()
    router.stash[RUNTIME] = runtime
    if metrics is not None:
        gauges = ReplicationGauges(runtime, router.cluster, metrics)
        metrics.add_scrape_hook(gauges.refresh)
        router.stash[_GAUGES] = gauges


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def shutdown(router: Router) -> None:
    gauges = router.stash.get(_GAUGES, None)
    if gauges is not None:
        del router.stash[_GAUGES]
        gauges.metrics.remove_scrape_hook(gauges.refresh)
    runtime = replication_runtime(router)
    if runtime is not None:
        del router.stash[RUNTIME]
        await runtime.stop()


def _runtime_of(mutation: Mutation) -> ReplicationRuntime | None:
    if mutation.call is None:
        return None
    return replication_runtime(mutation.call.router)


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def before_mutation(mutation: Mutation) -> None:
    runtime = _runtime_of(mutation)
    if runtime is None or mutation.call is None:
        return
    try:
        intent = await runtime.begin_mutation(
            mutation.virtual_storage,
            mutation.relative_path,
            primary=mutation.primary.name,
            replicas=[node.name for node in mutation.replicas],
            change=mutation.change_type,
        )
    except RedisUnavailable as error:
        raise Unavailable(str(error)) from error
    mutation.call.stash[_INTENT] = intent


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def on_mutation(mutation: Mutation) -> None:
    runtime = _runtime_of(mutation)
    if runtime is None or mutation.call is None:
        return
    replicas = [node.name for node in mutation.replicas]
    try:
        # A producer span under the call's server span; the events carry its
        # context (the call's own when this router does not trace).
        with publish_span(
            mutation.virtual_storage, mutation.relative_path, mutation.change_type, replicas
        ) as published:
            record = await runtime.record_mutation(
                mutation.virtual_storage,
                mutation.relative_path,
                primary=mutation.primary.name,
                replicas=replicas,
                change=mutation.change_type,
                intent=mutation.call.stash.get(_INTENT, None),
                trace_context=published or mutation.trace_context,
            )
            trace.get_current_span().set_attributes(
                {"praefect.targets": list(record.targets), "praefect.generation": record.generation}
            )
    except RedisUnavailable as error:
        raise Unavailable(str(error)) from error


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def on_mutation_failed(mutation: Mutation, failure: MutationFailure) -> None:
    runtime = _runtime_of(mutation)
    if runtime is None or mutation.call is None:
        return
    intent = mutation.call.stash.get(_INTENT, None)
    if intent is not None:
        await runtime.abandon_mutation(intent, failure.code)
