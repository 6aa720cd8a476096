"""`praefect serve`, `check`, `dial-nodes` and `plugins` as an operator runs them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.protos.gitaly import repository_pb2, shared_pb2
from tests.core.conftest import Nodes
from tests.support.grpc_client import auth
from tests.support.processes import PRAEFECT, start_process
from tests.support.recording_node import BEHAVIOUR_KEY, recording_node
from tests.support.router import ROUTER_TOKEN, clean_env, write_settings

EXISTS = "/gitaly.RepositoryService/RepositoryExists"
REQUEST = repository_pb2.RepositoryExistsRequest(
    repository=shared_pb2.Repository(storage_name="praefect", relative_path="a.git")
).SerializeToString()


def praefect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRAEFECT, *args], capture_output=True, text=True, env=clean_env(), timeout=60
    )


@pytest.mark.parametrize("command", ["serve", "check", "dial-nodes", "plugins"])
def test_help(command: str) -> None:
    result = praefect(command, "--help")
    assert result.returncode == 0
    assert "--config" in result.stdout


@pytest.mark.parametrize("command", ["check", "dial-nodes"])
def test_all_nodes_ok(command: str, nodes: Nodes, tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "praefect.toml", nodes.addresses)

    result = praefect(command, "--config", str(settings))

    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("gitaly-1", "gitaly-2", "gitaly-3"):
        assert f"{name} ({nodes.address(name)}): OK (healthy, git " in result.stdout


@pytest.mark.parametrize("command", ["check", "dial-nodes"])
def test_wrong_token_and_unreachable_node_are_errors(command: str, nodes: Nodes, tmp_path: Path) -> None:
    addresses = dict(nodes.addresses)
    addresses["gitaly-3"] = "tcp://127.0.0.1:1"  # nothing listens on port 1
    settings = write_settings(
        tmp_path / "praefect.toml", addresses, node_tokens={"gitaly-2": "not-the-node-token"}
    )

    result = praefect(command, "--config", str(settings), "--timeout", "2")

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"gitaly-1 ({nodes.address('gitaly-1')}): OK (healthy, git" in result.stdout
    assert (
        f"gitaly-2 ({nodes.address('gitaly-2')}): ERROR: permission denied: the token configured "
        "for this node does not match the node's token"
    ) in lines
    assert any(line.startswith("gitaly-3 (tcp://127.0.0.1:1): ERROR: unreachable") for line in lines)


def test_check_reports_settings_problems(tmp_path: Path) -> None:
    settings = tmp_path / "praefect.toml"
    settings.write_text('auth_token = ""\n')
    result = praefect("check", "--config", str(settings))
    assert result.returncode == 2
    assert "auth_token" in result.stderr and "virtual_storages" in result.stderr


def test_plugins_lists_the_default_plugins(tmp_path: Path) -> None:
    result = praefect("plugins")
    assert result.returncode == 0, result.stderr
    for name, hook in [("praefect.plugins.auth", "authenticate"), ("praefect.plugins.routing", "route")]:
        (line,) = [line for line in result.stdout.splitlines() if name in line]
        assert hook in line and "default" in line


async def test_serve_sigterm_lets_calls_in_flight_finish(tmp_path: Path) -> None:
    async with recording_node() as node:
        settings = write_settings(
            tmp_path / "praefect.toml",
            {"gitaly-1": node.address},
            server={"graceful_stop_timeout": 20.0},
        )
        router = await asyncio.to_thread(
            start_process, ["serve", "--config", str(settings), "--listen", "127.0.0.1:0"], env=clean_env()
        )
        try:
            assert "praefect router listening on 127.0.0.1:" in router.log()
            async with aio.insecure_channel(router.address) as channel:
                in_flight = asyncio.ensure_future(
                    channel.unary_unary(EXISTS)(REQUEST, metadata=auth(ROUTER_TOKEN, (BEHAVIOUR_KEY, "slow")))
                )
                await node.wait_for_calls(1)

                router.process.send_signal(signal.SIGTERM)

                await _wait_refused(router.address)
                assert not in_flight.done()
                node.release.set()
                # The probes of _wait_refused may reach the node too, before the router stops
                # taking calls: the call in flight is the one that asked to be slow.
                (exists_call,) = [
                    call
                    for call in node.calls
                    if call.method == EXISTS and call.metadata.get(BEHAVIOUR_KEY) == "slow"
                ]
                assert await in_flight == exists_call.requests[0]
            status = await asyncio.to_thread(router.process.wait, 20)
        finally:
            router.stop()
    assert status == 0, router.log()


async def _wait_refused(address: str, within: float = 10.0) -> None:
    """Until a new connection to the stopping router fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        async with aio.insecure_channel(address) as channel:
            try:
                await channel.unary_unary(EXISTS)(REQUEST, metadata=auth(ROUTER_TOKEN), timeout=1)
            except aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the router still accepted new calls {within} s after SIGTERM")


async def test_serve_with_several_processes_shares_one_port(tmp_path: Path) -> None:
    async with recording_node() as node, EmbeddedRedis(tmp_path / "redis") as redis:
        settings = write_settings(
            tmp_path / "praefect.toml",
            {"gitaly-1": node.address},
            server={"processes": 2},
            redis={"url": redis.url},
        )
        router = await asyncio.to_thread(
            start_process, ["serve", "--config", str(settings), "--listen", "127.0.0.1:0"], env=clean_env()
        )
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while router.log().count("praefect router listening on") < 2:
                assert loop.time() < deadline, f"the second worker did not start:\n{router.log()}"
                await asyncio.sleep(0.05)
            addresses = {line.rsplit(" ", 1)[1] for line in router.log().splitlines() if "listening on" in line}
            assert addresses == {router.address}
            for _ in range(4):  # a channel each: connections spread over the workers
                async with aio.insecure_channel(router.address) as channel:
                    await channel.unary_unary(EXISTS)(REQUEST, metadata=auth(ROUTER_TOKEN))
            router.process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(router.process.wait, 20)
        finally:
            router.stop()
    assert status == 0, router.log()
    assert len(node.calls) == 4


def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        settings = write_settings(tmp_path / "praefect.toml", {"gitaly-1": "tcp://127.0.0.1:9"})
        result = praefect("serve", "--config", str(settings), "--listen", address)
    assert result.returncode == 1
    assert f"praefect: cannot start the router: cannot listen on {address}" in result.stderr
