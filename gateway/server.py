"""The gateway server: lifecycle around the aiohttp application.

Like the node and the router, `GatewayServer` has `startup()`, `serve()`
and `shutdown()`, stops on SIGTERM/SIGINT after letting transfers in flight
finish (up to the grace period), and is an async context manager for tests.
It does not wait for the router at start: until the router answers, git
gets 503 with a message that says so.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiohttp import web

from praefect.core.lifecycle import serve_until_stopped
from praefect.gateway.app import ACCESS_LOG_FORMAT, make_app
from praefect.gateway.config import GatewayConfig
from praefect.gateway.router import RouterClient

log = logging.getLogger("praefect.gateway")
access_log = logging.getLogger("praefect.gateway.access")


class GatewayServer:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.bound_addr: str | None = None
        self._router: RouterClient | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

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
            shutdown_timeout=self.config.graceful_stop_timeout,
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
            await self.shutdown()
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

    async def shutdown(self) -> None:
        """Stop listening, let transfers in flight finish (up to the grace
        period, then cancel them), and close the router channel."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._router is not None:
            await self._router.close()
            self._router = None

    async def serve(self) -> None:
        """Start, print the bound address, and run until SIGTERM or SIGINT."""
        await serve_until_stopped(
            "gateway",
            startup=self.startup,
            shutdown=self.shutdown,
            bound_addr=lambda: self.bound_addr,
            stopping=self._stopping,
            stop_message=f"stopping: waiting up to {self.config.graceful_stop_timeout:.0f} s "
            "for transfers in flight",
        )

    def stop(self) -> None:
        """Make `serve()` return (as SIGTERM does)."""
        self._stopping.set()

    async def __aenter__(self) -> GatewayServer:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
