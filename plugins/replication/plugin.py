"""The default replication plugin's hooks.

- ``startup``: start a :class:`ReplicationRuntime` for the router (Redis or
  the embedded one, the state cache, workers, intent resolver) and keep the
  router's cluster view of repository primaries in step with the cache;
- ``before_mutation``: record the intent (a Redis failure fails the call
  before the node sees it);
- ``on_mutation``: bump the generation and queue one event per replica in
  one atomic call, before the client gets its OK (a Redis failure fails the
  client's call: never a silent OK);
- ``on_mutation_failed``: clear or hand over the intent;
- ``shutdown``: stop everything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from praefect.core import hookimpl
from praefect.core.errors import Unavailable
from praefect.core.mutation import Mutation, MutationFailure
from praefect.core.stash import StashKey
from praefect.plugins.replication.cache import CacheListener, StateCache
from praefect.plugins.replication.intents import Intent
from praefect.plugins.replication.runtime import RedisUnavailable, ReplicationRuntime
from praefect.plugins.replication.state import RepositoryMetadata

if TYPE_CHECKING:
    from praefect.core.cluster import Cluster
    from praefect.core.router import Router

log = logging.getLogger("praefect.replication")

__all__ = [
    "RUNTIME",
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


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def startup(router: Router) -> None:
    runtime = ReplicationRuntime(
        router.settings,
        cache_listeners=[_cluster_listener(router.cluster)],
    )
    await runtime.start()
    router.stash[RUNTIME] = runtime


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def shutdown(router: Router) -> None:
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
    try:
        await runtime.record_mutation(
            mutation.virtual_storage,
            mutation.relative_path,
            primary=mutation.primary.name,
            replicas=[node.name for node in mutation.replicas],
            change=mutation.change_type,
            intent=mutation.call.stash.get(_INTENT, None),
            trace_context=mutation.trace_context,
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
