"""The default ``route``: where each call goes.

Repository state (primary, assigned replicas, generations) comes from the
replication plugin's in-memory view (:func:`~praefect.plugins.routing.reads.repository_state`);
the repository primary from ``cluster.primary`` (which that view keeps in
step, and which failover may change). Nothing here touches Redis.

- mutators: the repository's primary (the configured primary for a
  repository the state does not know); the repository's other assigned
  nodes are the replicas the change must reach;
- accessors: a random healthy replica at the repository's generation
  (distributed reads); the primary when the client sends
  ``gitaly-route-repository-accessor-policy: primary-only``, when the state
  does not know the repository (never created through a router), when the
  replication plugin is not running, or when no up-to-date replica is
  healthy;
- maintenance: every healthy replica (every healthy node for a repository
  the state does not know), the primary first;
- storage-scoped calls: the virtual storage's configured primary;
- a method of unknown operation: the primary.

A primary that the router's health view marks down gives ``UNAVAILABLE``
naming it (the failover plugin's ``route`` runs before this one and
re-routes such calls when it can). The hook is ``trylast`` so any
third-party ``route`` decides first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from praefect.core import hookimpl
from praefect.core.call import Call
from praefect.core.cluster import Cluster
from praefect.core.errors import Unavailable
from praefect.core.methods import Operation
from praefect.core.routing_types import NodeRef, RouteDecision
from praefect.plugins.routing.reads import (
    choose,
    repository_state,
    up_to_date_replicas,
    wants_primary,
)

if TYPE_CHECKING:
    from praefect.plugins.replication.state import RepositoryMetadata

__all__ = ["route"]


@hookimpl(trylast=True)  # type: ignore[untyped-decorator, unused-ignore]
def route(call: Call, cluster: Cluster) -> RouteDecision | None:
    """Choose the node(s) for ``call`` (see the module docstring)."""
    repository = call.repository
    if repository is None:
        if call.storage is None:
            return None
        primary = cluster.virtual_storage(call.storage).configured_primary
        return RouteDecision(
            node=_healthy(primary, cluster, call.storage), reason="storage primary"
        )
    vs, path = repository.virtual_storage, repository.relative_path
    primary = cluster.primary(vs, path)
    state = repository_state(call, vs, path)
    operation = call.method.operation
    if operation is Operation.ACCESSOR:
        return _accessor(call, cluster, vs, path, primary, state)
    if operation is Operation.MUTATOR:
        node = _healthy(primary, cluster, f"{vs}:{path}")
        return RouteDecision(
            node=node,
            replicas=_replicas(cluster, vs, path, primary, state),
            reason="mutator: primary",
        )
    if operation is Operation.MAINTENANCE:
        return _maintenance(call, cluster, vs, primary, state)
    # A method whose operation the descriptors do not say: safest on the primary.
    return RouteDecision(node=_healthy(primary, cluster, f"{vs}:{path}"), reason="primary")


def _accessor(
    call: Call,
    cluster: Cluster,
    vs: str,
    path: str,
    primary: NodeRef,
    state: RepositoryMetadata | None,
) -> RouteDecision:
    if state is None:
        return RouteDecision(
            node=_healthy(primary, cluster, f"{vs}:{path}"), reason="accessor: primary"
        )
    if wants_primary(call):
        return RouteDecision(
            node=_healthy(primary, cluster, f"{vs}:{path}"), reason="accessor: primary-only"
        )
    candidates = up_to_date_replicas(state, cluster, vs)
    if not candidates:
        # The best copy there is: the one the next write builds on.
        return RouteDecision(
            node=_healthy(primary, cluster, f"{vs}:{path}"),
            reason="accessor: primary (no healthy up-to-date replica)",
        )
    return RouteDecision(node=choose(candidates), reason="accessor: up-to-date replica")


def _replicas(
    cluster: Cluster, vs: str, path: str, primary: NodeRef, state: RepositoryMetadata | None
) -> tuple[NodeRef, ...]:
    if state is None or not state.assigned:
        others: tuple[NodeRef, ...] = cluster.replicas(vs, path)
        return others
    return tuple(
        node for node in cluster.nodes(vs) if node != primary and node.name in state.assigned
    )


def _maintenance(
    call: Call, cluster: Cluster, vs: str, primary: NodeRef, state: RepositoryMetadata | None
) -> RouteDecision:
    healthy = [
        node
        for node in cluster.healthy_nodes(vs)
        if state is None or not state.assigned or node.name in state.assigned
    ]
    if not healthy:
        raise Unavailable(
            f"no healthy node of virtual storage {vs!r} can run {call.method.short_name}"
        )
    if primary in healthy:
        healthy.remove(primary)
        healthy.insert(0, primary)
    return RouteDecision(
        node=healthy[0], fan_out=tuple(healthy[1:]), reason="maintenance: every healthy replica"
    )


def _healthy(primary: NodeRef, cluster: Cluster, what: str) -> NodeRef:
    if not cluster.is_healthy(primary):
        raise Unavailable(
            f"the primary of {what}, {primary}, is down; retry when it is back or fail over"
        )
    return primary
