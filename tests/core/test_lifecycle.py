"""The lifecycle the router, the node and the gateway share (core/lifecycle.py)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from praefect.core.lifecycle import Server, StartStop
from praefect.core.server import RouterServer
from praefect.gateway.server import GatewayServer
from praefect.node.server import NodeServer

WITHIN = 10.0


@dataclass(frozen=True)
class Config:
    graceful_stop_timeout: float = 7.0


class RecordingServer(Server[Config]):
    """Records the lifecycle calls; listens nowhere."""

    kind = "recording"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.calls: list[str] = []
        self.started = asyncio.Event()

    async def startup(self) -> None:
        self.calls.append("startup")
        self.bound_addr = "127.0.0.1:4242"
        self.started.set()

    async def shutdown(self, grace: float | None = None) -> None:
        self.calls.append(f"shutdown within {self.grace_period(grace)} s")

    @property
    def install_signal_handlers(self) -> bool:
        return False  # pytest's own SIGINT handling stays

    def stop_message(self) -> str:
        return "stopping the recording server"


async def test_async_with_starts_and_shuts_down_without_a_grace_period() -> None:
    async with RecordingServer(Config()) as server:
        assert server.calls == ["startup"]

    assert server.calls == ["startup", "shutdown within 0 s"]


async def test_serve_prints_the_listening_line_and_stops_gracefully_on_request(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="praefect")
    server = RecordingServer(Config())
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(WITHIN):
            await server.started.wait()
        assert not serving.done()
        server.request_stop()
        async with asyncio.timeout(WITHIN):
            await serving
    finally:
        serving.cancel()

    assert capsys.readouterr().out == "praefect recording listening on 127.0.0.1:4242\n"
    assert server.calls == ["startup", "shutdown within 7.0 s"]
    assert "stopping the recording server" in caplog.messages


@pytest.mark.parametrize(
    ("server", "kind"), [(RouterServer, "router"), (NodeServer, "node"), (GatewayServer, "gateway")]
)
def test_every_praefect_server_shares_the_lifecycle(server: type[Server[Any]], kind: str) -> None:
    # The listening line scripts and tests wait for names the server's kind.
    assert issubclass(server, Server)
    assert server.kind == kind


class Recording(StartStop):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")


async def test_start_stop_is_stopped_when_the_block_fails() -> None:
    thing = Recording()
    with pytest.raises(RuntimeError, match="in the block"):
        async with thing as entered:
            assert entered is thing and thing.calls == ["start"]
            raise RuntimeError("in the block")

    assert thing.calls == ["start", "stop"]
