"""Primary routing: where the default plugin sends each call.

- mutators: the repository's primary (``cluster.primary``: an override set
  by replication or failover, else the virtual storage's configured
  primary); the other nodes are the replicas the change must reach;
- accessors: the primary too, for now (distributed reads to up-to-date
  replicas arrive with replication);
- maintenance: the primary, and the same call to every other healthy node;
- storage-scoped calls: the virtual storage's configured primary.

A primary that the router's health view marks down gives ``UNAVAILABLE``
naming it. The hook is ``trylast`` so any third-party ``route`` decides
first.
"""

from __future__ import annotations

from praefect.core import hookimpl
from praefect.core.call import Call
from praefect.core.cluster import Cluster
from praefect.core.errors import Unavailable
from praefect.core.methods import Operation
from praefect.core.routing_types import NodeRef, RouteDecision

__all__ = ["route"]


@hookimpl(trylast=True)
def route(call: Call, cluster: Cluster) -> RouteDecision | None:
    """Send the call to the repository's primary (see the module docstring)."""
    repository = call.repository
    if repository is None:
        if call.storage is None:
            return None
        primary = cluster.virtual_storage(call.storage).configured_primary
        return RouteDecision(node=_healthy(primary, cluster, call.storage), reason="storage primary")
    vs, path = repository.virtual_storage, repository.relative_path
    primary = cluster.primary(vs, path)
    operation = call.method.operation
    if operation is Operation.MAINTENANCE:
        others = tuple(node for node in cluster.healthy_nodes(vs) if node != primary)
        if not cluster.is_healthy(primary):
            if not others:
                raise Unavailable(f"no healthy node of virtual storage {vs!r} can run {call.method.short_name}")
            return RouteDecision(node=others[0], fan_out=others[1:], reason="maintenance: every healthy node")
        return RouteDecision(node=primary, fan_out=others, reason="maintenance: every healthy node")
    node = _healthy(primary, cluster, f"{vs}:{path}")
    if operation is Operation.MUTATOR:
        return RouteDecision(node=node, replicas=cluster.replicas(vs, path), reason="mutator: primary")
    return RouteDecision(node=node, reason="accessor: primary")


def _healthy(primary: NodeRef, cluster: Cluster, what: str) -> NodeRef:
    if not cluster.is_healthy(primary):
        raise Unavailable(
            f"the primary of {what}, {primary}, is down; retry when it is back or fail over"
        )
    return primary
