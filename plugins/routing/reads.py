"""Distributed reads: which replica serves an accessor.

A read goes to a replica chosen at random among the repository's healthy
replicas whose generation equals the repository's (the in-memory
:class:`~praefect.plugins.replication.cache.StateCache`; no Redis round
trip per read). The client can insist on the primary with the header
``gitaly-route-repository-accessor-policy: primary-only`` (as Gitaly's
Praefect), for example to read its own write through another router whose
view may lag by a few milliseconds.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from praefect.core.call import Call
from praefect.core.cluster import Cluster
from praefect.core.routing_types import NodeRef
from praefect.plugins.replication.plugin import state_cache

if TYPE_CHECKING:
    from praefect.plugins.replication.state import RepositoryMetadata

__all__ = [
    "ACCESSOR_POLICY_HEADER",
    "PRIMARY_ONLY",
    "choose",
    "repository_state",
    "up_to_date_replicas",
    "wants_primary",
]

#: metadata key with which a client chooses how its reads are routed
ACCESSOR_POLICY_HEADER = "gitaly-route-repository-accessor-policy"
#: the policy value that sends a read to the repository's primary
PRIMARY_ONLY = "primary-only"

# Module-level: one generator per process, not one per call.
_random = random.Random()


def wants_primary(call: Call) -> bool:
    """True when the client asked for the primary (``primary-only`` policy)."""
    value = call.header(ACCESSOR_POLICY_HEADER)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value is not None and value.strip().lower() == PRIMARY_ONLY


def repository_state(
    call: Call, virtual_storage: str, relative_path: str
) -> RepositoryMetadata | None:
    """The repository's state from this router's in-memory view.

    ``None`` when the repository is not tracked, or when the replication
    plugin is not running (blocked, or a router built without one).
    """
    router = call.router
    if router is None:
        return None
    cache = state_cache(router)
    if cache is None:
        return None
    return cache.get(virtual_storage, relative_path)


def up_to_date_replicas(
    state: RepositoryMetadata, cluster: Cluster, virtual_storage: str
) -> list[NodeRef]:
    """The configured, healthy nodes whose replica is at the repository's generation."""
    generation = state.generation
    generations = state.replica_generations
    return [
        node
        for node in cluster.nodes(virtual_storage)
        if generations.get(node.name, -1) == generation
        and node.name in state.assigned
        and cluster.is_healthy(node)
    ]


def choose(nodes: list[NodeRef]) -> NodeRef:
    """One of ``nodes`` at random (spreads reads evenly)."""
    return nodes[0] if len(nodes) == 1 else _random.choice(nodes)
