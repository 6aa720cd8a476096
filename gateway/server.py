"""The gateway server: lifecycle around the aiohttp application.

Like the node and the router, `GatewayServer` has `startup()`, `serve()`
and `shutdown()` (:class:`praefect.core.lifecycle.Server`), stops on
SIGTERM/SIGINT after letting transfers in flight finish (up to the grace
period), and is an async context manager for tests, whose exit cancels the
transfers still running. It does not wait for the router at start: until
the router answers, git gets 503 with a message that says so.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from praefect.core.lifecycle import Server
from praefect.gateway.app import ACCESS_LOG_FORMAT, make_app
from praefect.gateway.config import GatewayConfig
from praefect.gateway.router import RouterClient

log = logging.getLogger("praefect.gateway")
access_log = logging.getLogger("praefect.gateway.access")

#: aiohttp reads a shutdown timeout of 0 as "no limit": the least wait it
#: takes as a limit, for a grace period of 0 (cancel the transfers at once)
_NO_WAIT = 1e-6


class GatewayServer(Server[GatewayConfig]):
    kind = "gateway"

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(config)
        self._router: RouterClient | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL clients clone from, e.g. http://127.0.0.1:8080."""
        assert self.bound_addr is not None, "the gateway is not started"
        return f"http://{self.bound_addr}"

    async def startup(self) -> None:
        self._router = RouterClient(self.config)
        runner = web.AppRunner(
            make_app(self.config, self._router),
            access_log=access_log,
            access_log_format=ACCESS_LOG_FORMAT,
            # gateway.body inflates gzip itself, in bounded pieces, and
            # refuses other encodings with a message git shows.
            auto_decompress=False,
        )
        await runner.setup()
        self._runner = runner
        host, port = self.config.listen_host_port
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await self.shutdown(grace=0)
            raise
        bound_port = runner.addresses[0][1]
        self.bound_addr = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
        if self.config.password is None:
            log.warning(
                "no password configured: anyone who can reach %s can clone and push",
                self.bound_addr,
            )
        log.info("praefect gateway listening on %s", self.bound_addr)
        log.info(
            "calling the router at %s for repositories in storage %s",
            self.config.router_addr,
            self.config.storage,
        )

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop listening, let transfers in flight finish (up to ``grace``
        seconds, then cancel them), and close the router channel."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await _end_connections(runner, self.grace_period(grace))
            await runner.cleanup()
        if self._router is not None:
            await self._router.close()
            self._router = None

    def stop_message(self) -> str:
        return (
            f"stopping: waiting up to {self.config.graceful_stop_timeout:.0f} s "
            "for transfers in flight"
        )


async def _end_connections(runner: web.AppRunner, grace: float) -> None:
    """Stop listening and end every connection within ``grace`` seconds.

    The first steps of ``runner.cleanup()`` (stop the sites, close idle
    connections, wait for the requests in flight, cancel the rest), with
    this stop's grace period: the runner's own ``shutdown_timeout`` is fixed
    when it is built. ``runner.cleanup()`` then finds no connection to wait for.
    """
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if server is None:
        return
    # As aiohttp does: requests accepted before the sites stopped start
    # being handled before the idle connections are closed.
    await asyncio.sleep(0)
    server.pre_shutdown()
    await server.shutdown(max(grace, _NO_WAIT))
