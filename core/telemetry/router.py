"""Everything one router observes, built from its settings.

``RouterServer.startup()`` makes one :class:`RouterTelemetry` per router,
passes :attr:`RouterTelemetry.interceptor` to ``aio.server`` (first in the
list), ``await telemetry.start()`` before it serves and
``await telemetry.stop()`` after it stopped. Plugins reach the metrics
through :func:`router_metrics` (replication: ``.replication``, scrape
hooks, ``set_primaries``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from praefect.core.stash import StashKey
from praefect.core.telemetry.calls import CallTelemetry, TelemetryInterceptor
from praefect.core.telemetry.metrics import MetricsEndpoint, RouterMetrics

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["TELEMETRY", "RouterTelemetry", "router_metrics"]

#: the router's telemetry, in ``router.stash``
TELEMETRY = StashKey["RouterTelemetry"]()


class RouterTelemetry:
    """The router's call observation, its metrics and their endpoint.

    Metrics exist only when ``prometheus_listen_addr`` is set: nothing is
    counted that nobody can scrape.
    """

    def __init__(self, router: Router) -> None:
        settings = router.settings
        self.metrics: RouterMetrics | None = None
        self.endpoint: MetricsEndpoint | None = None
        if settings.prometheus_listen_addr:
            self.metrics = RouterMetrics(router.cluster)
            self.endpoint = MetricsEndpoint(
                settings.prometheus_listen_addr,
                self.metrics.registry,
                self.metrics.refresh,
                reuse_port=router.config.reuse_port,
            )
        self.calls = CallTelemetry("router", metrics=self.metrics)
        self.interceptor = TelemetryInterceptor(self.calls)
        router.stash[TELEMETRY] = self

    @property
    def metrics_addr(self) -> str | None:
        """``host:port`` of the metrics endpoint once started."""
        return self.endpoint.bound_addr if self.endpoint is not None else None

    async def start(self) -> None:
        """Serve the metrics endpoint (OSError naming the address when it cannot)."""
        if self.endpoint is not None:
            await self.endpoint.start()

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()


def router_metrics(router: Router) -> RouterMetrics | None:
    """The router's metrics, None when it has no metrics endpoint."""
    telemetry = router.stash.get(TELEMETRY, None)
    return telemetry.metrics if telemetry is not None else None
