"""One router instance: settings, registry, cluster view, plugins, node channels.

:class:`Router` is what plugins receive in ``startup``/``shutdown``/
``register_services`` and through ``call.router``. The gRPC server around it
lives in :mod:`praefect.core.server`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pluggy

from praefect.core.cluster import Cluster, VirtualStorage
from praefect.core.hooks import Hooks
from praefect.core.node_channels import NodeChannels, NodeEndpoint
from praefect.core.plugin_manager import build_plugin_manager
from praefect.core.registry import MethodRegistry, default_registry
from praefect.core.router_config import RouterConfig
from praefect.core.routing_types import NodeRef
from praefect.core.stash import Stash
from praefect.settings import Config

__all__ = ["Router", "RouterStartError", "cluster_from_settings", "endpoints_from_settings"]

log = logging.getLogger("praefect.router")


class RouterStartError(RuntimeError):
    """The router cannot start; the message says why and what to do."""


def cluster_from_settings(settings: Config) -> Cluster:
    """The cluster view of the configured virtual storages, every node healthy."""
    storages = []
    for vs in settings.virtual_storages:
        nodes = tuple(NodeRef(vs.name, node.name, node.address) for node in vs.nodes)
        primary = next(ref for ref, node in zip(nodes, vs.nodes, strict=True) if node.primary)
        storages.append(VirtualStorage(vs.name, nodes, primary))
    return Cluster(storages)


def endpoints_from_settings(settings: Config) -> list[NodeEndpoint]:
    """Address and token of every configured node."""
    return [
        NodeEndpoint(NodeRef(vs.name, node.name, node.address), node.grpc_target, node.token)
        for vs in settings.virtual_storages
        for node in vs.nodes
    ]


class Router:
    """The parts of one router instance that plugins and the proxy share.

    Attributes:
        config: the router configuration; ``settings`` is its validated settings.
        registry: the method registry.
        cluster: the in-memory cluster view ``route`` reads.
        hooks: the typed hook facade.
        stash: per-router state for plugins (see :class:`~praefect.core.stash.StashKey`).
        node_channels: one channel per node; exists between ``open()`` and ``close()``.
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        registry: MethodRegistry | None = None,
        extra_plugins: Sequence[tuple[str, object]] = (),
        load_entry_points: bool = True,
    ) -> None:
        self.config = config
        self.settings: Config = config.settings
        self.registry = registry or default_registry()
        self.cluster = cluster_from_settings(config.settings)
        self.plugin_manager = plugin_manager or build_plugin_manager(
            config.blocked_plugins,
            load_entry_points=load_entry_points,
            extra_plugins=extra_plugins,
        )
        self.hooks = Hooks(self.plugin_manager)
        self.stash = Stash()
        self._node_channels: NodeChannels | None = None

    @property
    def node_channels(self) -> NodeChannels:
        if self._node_channels is None:
            raise RuntimeError("the router is not open: call open() first")
        return self._node_channels

    def open(self) -> None:
        """Create the node channels (inside the running event loop).

        Raises :class:`RouterStartError` when no plugin implements ``route``
        or ``authenticate``: such a router could not serve a single call.
        """
        missing = [
            name for name in ("authenticate", "route") if not self.hooks.implementers(name)
        ]
        if missing:
            raise RouterStartError(
                f"no plugin implements {' and '.join(missing)}: "
                "check plugins.blocked, or install a plugin that does"
            )
        self._node_channels = NodeChannels(
            endpoints_from_settings(self.settings), self.config.max_message_size
        )

    async def close(self) -> None:
        if self._node_channels is not None:
            await self._node_channels.close()
            self._node_channels = None

    async def set_node_health(self, node: NodeRef, healthy: bool, reason: str = "") -> None:
        """Record ``node``'s health; fire ``on_node_down``/``on_node_up`` on a change."""
        if not self.cluster.set_healthy(node, healthy):
            return
        await self._announce(node, healthy, reason)

    async def announce_node_health(self, node: NodeRef, healthy: bool, reason: str = "") -> None:
        """Record ``node``'s health and fire ``on_node_down``/``on_node_up`` in any case.

        For a change of the health view that several routers share: the
        router that recorded the change calls this (so the hooks fire once
        in the whole cluster), the others only follow it with
        :meth:`~praefect.core.cluster.Cluster.set_healthy`, even when their
        own view had already changed.
        """
        self.cluster.set_healthy(node, healthy)
        await self._announce(node, healthy, reason)

    async def _announce(self, node: NodeRef, healthy: bool, reason: str) -> None:
        if healthy:
            log.info("node %s is up", node)
            await self.hooks.on_node_up(node)
        else:
            log.warning("node %s is down: %s", node, reason or "no reason given")
            await self.hooks.on_node_down(node, reason)
