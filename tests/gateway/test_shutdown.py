"""The gateway's stop: transfers in flight get the grace period and no more;
leaving `async with` (tests) does not wait for them.

A silent router (accepts TCP, never answers) keeps an info/refs request in
flight for as long as the advertise timeout allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from praefect.gateway.config import GatewayConfig
from praefect.gateway.server import GatewayServer
from tests.gateway.conftest import PASSWORD, gateway_config
from tests.support.gateway import basic_auth
from tests.support.gateway_faults import SilentServer
from tests.support.replication_cluster import eventually

LONG = 60.0
#: far below LONG: a stop that took this long waited for the transfer's end
PROMPTLY = 10.0


@contextlib.asynccontextmanager
async def request_in_flight(
    gateway: GatewayServer, router: SilentServer, project: str
) -> AsyncIterator[asyncio.StreamReader]:
    """Send GET info/refs and wait until the gateway calls the router for it;
    the reader gets what the gateway answers."""
    assert gateway.bound_addr is not None
    host, _, port = gateway.bound_addr.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = [
            f"GET /{project}/info/refs?service=git-upload-pack HTTP/1.1",
            f"Host: {gateway.bound_addr}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in basic_auth("alice", PASSWORD).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()

        async def called() -> bool:
            return router.accepted >= 1

        await eventually(called, within=PROMPTLY, what="the gateway to call the router")
        yield reader
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def stopped_during_a_request(
    config: GatewayConfig,
    router: SilentServer,
    project: str,
    stop: Callable[[GatewayServer], Awaitable[object]],
) -> tuple[float, bytes]:
    """Start a gateway, `stop` it while a request waits for the router: the
    seconds the stop took and what the client got."""
    gateway = GatewayServer(config)
    await gateway.startup()
    try:
        async with request_in_flight(gateway, router, project) as answer:
            stopping = time.monotonic()
            await stop(gateway)
            took = time.monotonic() - stopping
            return took, await asyncio.wait_for(answer.read(), PROMPTLY)
    finally:
        await gateway.shutdown(grace=0)


async def test_leaving_async_with_cancels_a_transfer_in_flight(
    silent_router: SilentServer, project: str
) -> None:
    config = gateway_config(silent_router.address, advertise_timeout=LONG, graceful_stop_timeout=LONG)

    took, answer = await stopped_during_a_request(
        config, silent_router, project, stop=lambda gateway: gateway.__aexit__(None, None, None)
    )

    assert took < PROMPTLY, f"the exit waited {took:.1f} s for the transfer"
    assert answer == b"", "the transfer is cut without an answer"


@pytest.mark.parametrize(("configured", "grace"), [(1.0, None), (LONG, 1.0)])
async def test_shutdown_cancels_a_transfer_still_running_after_the_grace_period(
    silent_router: SilentServer, project: str, configured: float, grace: float | None
) -> None:
    config = gateway_config(
        silent_router.address, advertise_timeout=LONG, graceful_stop_timeout=configured
    )

    took, answer = await stopped_during_a_request(
        config, silent_router, project, stop=lambda gateway: gateway.shutdown(grace)
    )

    assert 1.0 <= took < PROMPTLY, took
    assert answer == b"", "the transfer is cut without an answer"


async def test_shutdown_lets_a_transfer_that_ends_within_the_grace_period_finish(
    silent_router: SilentServer, project: str
) -> None:
    # The router's silence is answered with a 504 after 0.5 s: the end of
    # this transfer, well inside the grace period.
    config = gateway_config(silent_router.address, advertise_timeout=0.5)

    took, answer = await stopped_during_a_request(
        config, silent_router, project, stop=lambda gateway: gateway.shutdown(grace=LONG)
    )

    assert took < PROMPTLY, took
    assert answer.startswith(b"HTTP/1.1 504 "), answer
    assert b"did not answer within 0.5 s" in answer
