"""The router's in-memory view of the cluster, which ``route`` reads.

Virtual storages and their nodes come from the settings. Two parts change
at run time: each node's health flag (set through
:meth:`praefect.core.router.Router.set_node_health`) and the per-repository
primary overrides that replication and failover fill in. Everything here is
plain in-memory state, read synchronously on every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from praefect.core.routing_types import NodeRef

__all__ = ["Cluster", "UnknownVirtualStorage", "VirtualStorage"]


class UnknownVirtualStorage(KeyError):
    """A virtual storage name the router does not serve."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        known = ", ".join(repr(k) for k in self.known) or "none"
        return f"unknown virtual storage {self.name!r}: this router serves {known}"


@dataclass(frozen=True, slots=True)
class VirtualStorage:
    """A virtual storage: its nodes in settings order and its configured primary."""

    name: str
    nodes: tuple[NodeRef, ...]
    configured_primary: NodeRef

    def node(self, name: str) -> NodeRef:
        """The node called ``name``; KeyError if there is none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


class Cluster:
    """Virtual storages, node health, and repository primaries."""

    def __init__(self, virtual_storages: Iterable[VirtualStorage]) -> None:
        self._storages: Mapping[str, VirtualStorage] = MappingProxyType(
            {vs.name: vs for vs in virtual_storages}
        )
        self._healthy: dict[NodeRef, bool] = {
            node: True for vs in self._storages.values() for node in vs.nodes
        }
        # (virtual storage, relative path) -> node name; absent: configured primary
        self._primaries: dict[tuple[str, str], str] = {}

    # -- virtual storages and nodes ------------------------------------------

    @property
    def virtual_storage_names(self) -> tuple[str, ...]:
        return tuple(self._storages)

    @property
    def virtual_storages(self) -> tuple[VirtualStorage, ...]:
        return tuple(self._storages.values())

    def virtual_storage(self, name: str) -> VirtualStorage:
        """The virtual storage ``name``; :class:`UnknownVirtualStorage` if none."""
        try:
            return self._storages[name]
        except KeyError:
            raise UnknownVirtualStorage(name, self._storages) from None

    def __contains__(self, name: object) -> bool:
        return name in self._storages

    def nodes(self, virtual_storage: str) -> tuple[NodeRef, ...]:
        return self.virtual_storage(virtual_storage).nodes

    def all_nodes(self) -> tuple[NodeRef, ...]:
        return tuple(self._healthy)

    # -- health --------------------------------------------------------------

    def is_healthy(self, node: NodeRef) -> bool:
        return self._healthy.get(node, False)

    def set_healthy(self, node: NodeRef, healthy: bool) -> bool:
        """Record ``node``'s health; True when that changed the view."""
        if node not in self._healthy:
            raise KeyError(f"{node} is not a node of this cluster")
        changed = self._healthy[node] != healthy
        self._healthy[node] = healthy
        return changed

    def healthy_nodes(self, virtual_storage: str) -> tuple[NodeRef, ...]:
        return tuple(node for node in self.nodes(virtual_storage) if self._healthy[node])

    def unhealthy_nodes(self) -> tuple[NodeRef, ...]:
        """Every node marked down, in every virtual storage."""
        return tuple(node for node, healthy in self._healthy.items() if not healthy)

    # -- repository primaries -------------------------------------------------

    def primary(self, virtual_storage: str, relative_path: str) -> NodeRef:
        """The repository's primary: its override, else the configured primary."""
        vs = self.virtual_storage(virtual_storage)
        name = self._primaries.get((virtual_storage, relative_path))
        if name is None:
            return vs.configured_primary
        return vs.node(name)

    def set_primary(self, virtual_storage: str, relative_path: str, node_name: str) -> None:
        """Make ``node_name`` the repository's primary (replication, failover)."""
        self.virtual_storage(virtual_storage).node(node_name)  # validates both names
        self._primaries[(virtual_storage, relative_path)] = node_name

    def clear_primary(self, virtual_storage: str, relative_path: str) -> None:
        """Forget the override: the configured primary serves the repository again."""
        self._primaries.pop((virtual_storage, relative_path), None)

    def replicas(self, virtual_storage: str, relative_path: str) -> tuple[NodeRef, ...]:
        """The repository's nodes other than its primary."""
        primary = self.primary(virtual_storage, relative_path)
        return tuple(node for node in self.nodes(virtual_storage) if node != primary)
