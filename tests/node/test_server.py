from __future__ import annotations

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praefect.node.server import NodeServer
from tests.support.processes import start_node


async def test_health_is_serving_without_a_token(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_node_binds_a_free_port(node: NodeServer) -> None:
    assert node.bound_addr is not None
    assert not node.bound_addr.endswith(":0")


def test_node_process_starts_and_stops_on_sigterm(tmp_path) -> None:
    proc = start_node({"gitaly-1": tmp_path / "s1"}, token="t")
    try:
        assert proc.address.startswith("127.0.0.1:")
    finally:
        code = proc.stop()
    assert code == 0, proc.log()


def test_node_refuses_to_start_without_a_token(tmp_path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "praefect.core.cli", "node", "serve", "--listen", "127.0.0.1:0",
         "--storage", f"s={tmp_path}"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "no token" in result.stderr


@pytest.mark.parametrize("bad", ["s1", "=x", "s1="])
def test_storage_option_needs_name_and_path(bad: str) -> None:
    from click.testing import CliRunner

    from praefect.core.cli import main

    result = CliRunner().invoke(main, ["node", "serve", "--listen", "127.0.0.1:0", "--token", "t", "--storage", bad])
    assert result.exit_code == 2
    assert "NAME=PATH" in result.output
