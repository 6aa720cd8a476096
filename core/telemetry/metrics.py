"""Prometheus metrics of one router (or replicate) process, and their endpoint.

Each process keeps its metrics in its own ``CollectorRegistry`` (never
prometheus_client's global one) and serves them at ``/metrics`` on
``prometheus_listen_addr`` from its event loop (aiohttp): collectors read
the router's in-memory state on the loop's thread, and *scrape hooks* (for
example the replication plugin counting its Redis streams) are awaited
before each scrape.

Families (all prefixed ``praefect_``):

==========================================  =========  ==========================================
``calls_total{method,code}``                counter    calls the router served, by gRPC status
``node_call_duration_seconds{vs,node}``     histogram  duration of the router's calls to a node
``node_healthy{virtual_storage,node}``      gauge      1 when the router routes to the node
``configured_primary{vs,node}``             gauge      1 for each virtual storage's configured primary
``primaries{virtual_storage,node}``         gauge      repositories whose primary the node is
``read_distribution_total{vs,node}``        counter    accessor calls routed to the node
``replication_delay_seconds{vs,target}``    histogram  from a mutation to the start of its replay
``replication_latency_seconds{vs,target}``  histogram  duration of a replay
``replication_pending_events{vs,target}``   gauge      events waiting for a target
``replication_dead_lettered_total{vs,t}``   counter    events this process gave up on
``replication_dead_letter_events{vs,t}``    gauge      events in a target's dead-letter stream
==========================================  =========  ==========================================

(``vs`` stands for the ``virtual_storage`` label.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from praefect.settings.addresses import parse_address

if TYPE_CHECKING:
    from praefect.core.cluster import Cluster
    from praefect.core.routing_types import NodeRef

__all__ = [
    "MetricsEndpoint",
    "ReplicationMetrics",
    "RouterMetrics",
    "ScrapeHook",
]

log = logging.getLogger("praefect.telemetry")

#: node calls: from cached unary calls (ms) to clones (minutes)
NODE_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: replication: queueing and replays take from milliseconds to an hour
REPLICATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: seconds a scrape waits for the scrape hooks before serving what it has
SCRAPE_HOOK_TIMEOUT = 5.0

ScrapeHook = Callable[[], Awaitable[None] | None]


class ReplicationMetrics:
    """Replication families; the replay worker and the event streams feed them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["virtual_storage", "target"]
        self.delay = Histogram(
            "praefect_replication_delay_seconds",
            "Seconds from a mutation on the primary to the start of its replay on a target",
            labels,
            buckets=REPLICATION_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "praefect_replication_latency_seconds",
            "Seconds one replay (replicate, remove) took on a target",
            labels,
            buckets=REPLICATION_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "praefect_replication_pending_events",
            "Replication events queued or in progress for a target",
            labels,
            registry=registry,
        )
        self.dead_lettered = Counter(
            "praefect_replication_dead_lettered",
            "Replication events this process moved to the dead-letter stream",
            labels,
            registry=registry,
        )
        self.dead_letters = Gauge(
            "praefect_replication_dead_letter_events",
            "Replication events in a target's dead-letter stream",
            labels,
            registry=registry,
        )
        self.verifications = Counter(
            "praefect_replication_verifications",
            "Replica verifications this process ran, by result: exists, missing (generation "
            "dropped, repair queued), failed (the node did not answer: no verdict) or "
            "inconclusive (the answer was not recorded: a copy, write or mark raced it)",
            ["virtual_storage", "node", "result"],
            registry=registry,
        )

    def observe_delay(self, virtual_storage: str, target: str, seconds: float) -> None:
        self.delay.labels(virtual_storage, target).observe(max(0.0, seconds))

    def observe_latency(self, virtual_storage: str, target: str, seconds: float) -> None:
        self.latency.labels(virtual_storage, target).observe(max(0.0, seconds))

    def set_pending(self, virtual_storage: str, target: str, events: int) -> None:
        self.pending.labels(virtual_storage, target).set(events)

    def count_dead_lettered(self, virtual_storage: str, target: str, events: int = 1) -> None:
        self.dead_lettered.labels(virtual_storage, target).inc(events)

    def set_dead_letters(self, virtual_storage: str, target: str, events: int) -> None:
        self.dead_letters.labels(virtual_storage, target).set(events)

    def count_verification(self, virtual_storage: str, node: str, result: str) -> None:
        self.verifications.labels(virtual_storage, node, result).inc()


class _ClusterCollector(Collector):
    """Node health and configured primaries, read from the cluster at each scrape."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        healthy = GaugeMetricFamily(
            "praefect_node_healthy",
            "1 when the router considers the node healthy and routes calls to it, else 0",
            labels=["virtual_storage", "node"],
        )
        configured = GaugeMetricFamily(
            "praefect_configured_primary",
            "1 for the primary a virtual storage's settings name, else 0",
            labels=["virtual_storage", "node"],
        )
        for vs in self._cluster.virtual_storages:
            for node in vs.nodes:
                healthy.add_metric([vs.name, node.name], 1.0 if self._cluster.is_healthy(node) else 0.0)
                configured.add_metric([vs.name, node.name], 1.0 if node == vs.configured_primary else 0.0)
        return (healthy, configured)


class RouterMetrics:
    """The router's families (and the replication ones) in one registry.

    Implements :class:`praefect.core.telemetry.calls.CallMetrics`.
    """

    def __init__(self, cluster: Cluster, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._cluster = cluster
        self.calls = Counter(
            "praefect_calls",
            "Calls the router served, by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.node_latency = Histogram(
            "praefect_node_call_duration_seconds",
            "Seconds the router's calls to a node took, to the node's status",
            ["virtual_storage", "node"],
            buckets=NODE_CALL_BUCKETS,
            registry=self.registry,
        )
        self.reads = Counter(
            "praefect_read_distribution",
            "Accessor calls routed to each node",
            ["virtual_storage", "node"],
            registry=self.registry,
        )
        self.primaries = Gauge(
            "praefect_primaries",
            "Repositories whose primary the node is (as the replication state says)",
            ["virtual_storage", "node"],
            registry=self.registry,
        )
        self.registry.register(_ClusterCollector(cluster))
        self.replication = ReplicationMetrics(self.registry)
        self._scrape_hooks: list[ScrapeHook] = []
        # label lookups take a lock: keep the children of the hot families
        self._call_children: dict[tuple[str, grpc.StatusCode], Counter] = {}
        self._latency_children: dict[NodeRef, Histogram] = {}
        self._read_children: dict[NodeRef, Counter] = {}

    # -- per call (CallMetrics) ------------------------------------------------------

    def observe_call(self, method: str, code: grpc.StatusCode) -> None:
        key = (method, code)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self.calls.labels(method, code.name)
        child.inc()

    def observe_node_call(self, node: NodeRef, seconds: float) -> None:
        child = self._latency_children.get(node)
        if child is None:
            child = self._latency_children[node] = self.node_latency.labels(node.virtual_storage, node.name)
        child.observe(seconds)

    def observe_read(self, node: NodeRef) -> None:
        child = self._read_children.get(node)
        if child is None:
            child = self._read_children[node] = self.reads.labels(node.virtual_storage, node.name)
        child.inc()

    # -- state pushed by plugins ----------------------------------------------------

    def set_primaries(self, virtual_storage: str, repositories_by_node: Mapping[str, int]) -> None:
        """How many repositories of ``virtual_storage`` each node is primary of.

        Nodes of the virtual storage missing from the mapping get 0.
        """
        for node in self._cluster.nodes(virtual_storage):
            self.primaries.labels(virtual_storage, node.name).set(repositories_by_node.get(node.name, 0))

    def add_scrape_hook(self, hook: ScrapeHook) -> None:
        """Run ``hook`` (a function or coroutine function) before each scrape.

        Hooks update gauges from state that is not in memory (Redis stream
        lengths); each scrape waits for them at most a few seconds.
        """
        self._scrape_hooks.append(hook)

    def remove_scrape_hook(self, hook: ScrapeHook) -> None:
        self._scrape_hooks.remove(hook)

    async def refresh(self) -> None:
        """Run the scrape hooks; a failing or slow hook is logged, not fatal."""
        for hook in list(self._scrape_hooks):
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, SCRAPE_HOOK_TIMEOUT)
            except Exception:
                log.exception("metrics scrape hook %r failed", hook)


class MetricsEndpoint:
    """``GET /metrics`` on ``listen_addr``, served from the running event loop."""

    def __init__(
        self,
        listen_addr: str,
        registry: CollectorRegistry,
        refresh: Callable[[], Awaitable[None]] | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        address = parse_address(listen_addr, allow_unix=False, allow_port_zero=True)
        self._host = address.host
        self._port = address.port
        self._registry = registry
        self._refresh = refresh
        self._reuse_port = reuse_port
        self._runner: web.AppRunner | None = None
        #: ``host:port`` once started
        self.bound_addr: str | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_port=self._reuse_port or None)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OSError(
                f"cannot serve metrics on {self._host}:{self._port} ({error.strerror}): "
                "set prometheus_listen_addr to a free local address, or to \"\""
            ) from error
        self._runner = runner
        host, port = _first_address(runner.addresses)
        self.bound_addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("metrics on http://%s/metrics", self.bound_addr)
        return self.bound_addr

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._refresh is not None:
            await self._refresh()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="praefect metrics: GET /metrics\n")


def _first_address(addresses: Iterable[object]) -> tuple[str, int]:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    raise RuntimeError("the metrics endpoint has no bound address")
