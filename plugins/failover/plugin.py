"""The failover plugin's hooks.

- ``startup`` (``trylast``: after the replication plugin started its
  runtime): start the health checks, votes and elections of
  :class:`~praefect.plugins.failover.runtime.FailoverRuntime`. Without the
  replication plugin there is no shared state to fail over with: the
  plugin logs that and stays idle;
- ``route`` (unmarked: after third-party implementations, which are
  registered later, and before the default routing, which is ``trylast``): route around a
  primary that is down (see :meth:`FailoverRuntime.route`); ``None``
  otherwise, so the default routing decides;
- ``before_mutation`` (``tryfirst``: before the replication plugin records
  its intent): elect the replica ``route`` chose, or fail the call; while
  the qualifying replicas are being copied into (copy leases), wait for a
  copy to end, within the call's deadline;
- ``on_mutation`` (``trylast``: after the replication plugin recorded the
  write, which it refuses when the write's node is no longer the primary):
  hold the OK until enough replicas have the write, and record it as
  acknowledged;
- ``on_mutation_failed``: a write that found its primary UNAVAILABLE has
  that node checked at once instead of at the end of its interval;
- ``shutdown`` (``tryfirst``: before the replication plugin closes Redis).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from praefect.core import hookimpl
from praefect.core.call import Call
from praefect.core.cluster import Cluster
from praefect.core.mutation import Mutation, MutationFailure
from praefect.core.routing_types import RouteDecision
from praefect.core.stash import StashKey
from praefect.plugins.failover.runtime import PLANNED, FailoverRuntime
from praefect.plugins.replication.plugin import replication_runtime

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = [
    "FAILOVER",
    "before_mutation",
    "failover_runtime",
    "on_mutation",
    "on_mutation_failed",
    "route",
    "shutdown",
    "startup",
]

log = logging.getLogger("praefect.failover")

#: the router's failover runtime, in ``router.stash``
FAILOVER = StashKey[FailoverRuntime]()


def failover_runtime(router: Router) -> FailoverRuntime | None:
    """The failover runtime of ``router``; None when the plugin is idle."""
    return router.stash.get(FAILOVER, None)


@hookimpl(trylast=True)  # type: ignore[untyped-decorator, unused-ignore]
async def startup(router: Router) -> None:
    replication = replication_runtime(router)
    if replication is None:
        log.warning(
            "health checks and failover are off: they need the replication plugin's Redis "
            "state, and it is not running (see `praefect plugins`)"
        )
        return
    runtime = FailoverRuntime(router, replication)
    await runtime.start()
    router.stash[FAILOVER] = runtime


@hookimpl(tryfirst=True)  # type: ignore[untyped-decorator, unused-ignore]
async def shutdown(router: Router) -> None:
    runtime = failover_runtime(router)
    if runtime is not None:
        del router.stash[FAILOVER]
        await runtime.stop()


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
def route(call: Call, cluster: Cluster) -> RouteDecision | None:
    if call.repository is None:
        return None
    runtime = call.router.stash.get(FAILOVER, None)
    if runtime is None:
        return None
    return runtime.route(call, cluster)


@hookimpl(tryfirst=True)  # type: ignore[untyped-decorator, unused-ignore]
async def before_mutation(mutation: Mutation) -> None:
    call = mutation.call
    if call is None:
        return
    planned = call.stash.get(PLANNED, None)
    runtime = call.router.stash.get(FAILOVER, None)
    if planned is not None and runtime is not None:
        await runtime.confirm_planned(call, planned)


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
def on_mutation_failed(mutation: Mutation, failure: MutationFailure) -> None:
    call = mutation.call
    if call is None or failure.code is not grpc.StatusCode.UNAVAILABLE:
        return
    runtime = call.router.stash.get(FAILOVER, None)
    if runtime is not None:
        runtime.checker.check_soon(mutation.primary)


@hookimpl(trylast=True)  # type: ignore[untyped-decorator, unused-ignore]
async def on_mutation(mutation: Mutation) -> None:
    call = mutation.call
    if call is None:
        return
    runtime = call.router.stash.get(FAILOVER, None)
    if runtime is not None:
        await runtime.acknowledger.acknowledge(mutation)
