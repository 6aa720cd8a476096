"""The demo's setup and its status output, without starting processes."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from praefect.core.cli import main
from praefect.core.demo.cluster import NODE_NAMES, DemoCluster, DemoSetupError, Ports
from praefect.core.demo.status import NodeRow, RepositoryRow, Snapshot, plain_lines, render_tables
from praefect.settings import load_config


def test_base_port_gives_router_nodes_and_gateway_consecutive_ports() -> None:
    ports = Ports.from_base(20000)
    assert (ports.router, dict(ports.nodes), ports.gateway) == (
        20000,
        {"gitaly-1": 20001, "gitaly-2": 20002, "gitaly-3": 20003},
        20004,
    )


@pytest.mark.parametrize("base", [80, 1023, 65532])
def test_a_base_port_out_of_range_is_refused_with_the_range(base: int) -> None:
    with pytest.raises(DemoSetupError, match=r"--base-port .* between 1024 and 65531"):
        Ports.from_base(base)


def test_the_command_reports_a_bad_base_port_and_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--base-port", "80", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "--base-port 80 is out of range" in result.output
    assert not (tmp_path / "w").exists()


def test_the_settings_file_describes_the_demo_cluster(tmp_path: Path) -> None:
    cluster = DemoCluster(tmp_path / "demo")
    cluster._write_files()
    settings = load_config(cluster.settings_file, environ={})
    vs = settings.virtual_storage("praefect")
    assert vs.node_names == NODE_NAMES
    assert vs.primary.name == "gitaly-1"
    assert {node.address for node in vs.nodes} == {
        f"tcp://127.0.0.1:{port}" for port in cluster.ports.nodes.values()
    }
    assert settings.listen_addr == cluster.router_address
    assert settings.redis.url == ""
    assert Path(str(settings.redis.data_dir)) == cluster.redis_dir
    tokens = {settings.auth.token, *(node.token for node in vs.nodes)}
    assert len(tokens) == 4 and all(len(token) == 32 for token in tokens)
    assert stat.S_IMODE(cluster.settings_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster.password_file.stat().st_mode) == 0o600
    assert cluster.password_file.read_text().strip() == cluster.secrets.password
    assert DemoCluster(tmp_path / "other").secrets != cluster.secrets


async def test_a_non_empty_workdir_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "something").write_text("x")
    cluster = DemoCluster(tmp_path / "demo")
    with pytest.raises(DemoSetupError, match="is not empty: give an empty or new directory"):
        await cluster.start()
    assert cluster.children == {}


async def test_a_workdir_too_long_for_the_redis_socket_is_refused(tmp_path: Path) -> None:
    cluster = DemoCluster(tmp_path / ("d" * 120))
    with pytest.raises(DemoSetupError, match="too long for the embedded Redis's unix socket"):
        await cluster.start()
    assert not cluster.workdir.exists()


async def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = Ports(router=port, gateway=Ports.free().gateway, nodes=Ports.free().nodes)
        cluster = DemoCluster(tmp_path / "demo", ports=ports)
        with pytest.raises(DemoSetupError, match=rf"port {port} on 127.0.0.1 already in use"):
            await cluster.start()
    assert cluster.children == {}


def _snapshot() -> Snapshot:
    nodes = (
        NodeRow("gitaly-1", "127.0.0.1:1", None, "killed by SIGKILL", False, "unreachable", False, 0, 2, 0),
        NodeRow("gitaly-2", "127.0.0.1:2", 42, "running", True, "", True, 1, 0, 0),
        NodeRow("gitaly-3", "127.0.0.1:3", 43, "running", True, "", None, 0, 0, 1),
    )
    repo = RepositoryRow("demo/project.git", 5, "gitaly-2", {"gitaly-1": 3, "gitaly-2": 5, "gitaly-3": 5})
    return Snapshot(0.0, nodes, (repo,))


def test_plain_lines_show_health_primaries_queues_and_generations() -> None:
    lines = plain_lines(_snapshot())
    assert "gitaly-1 DOWN (killed by SIGKILL) (routers: down), primary of 0, 2 pending, 0 dead-lettered" in lines[0]
    assert "gitaly-2 up (routers: up), primary of 1" in lines[0]
    assert "gitaly-3 up (routers: ?), primary of 0, 0 pending, 1 dead-lettered" in lines[0]
    assert lines[1].endswith(
        "demo/project.git: generation 5, primary gitaly-2, replicas gitaly-1=3(behind) gitaly-2=5 gitaly-3=5"
    )


def test_the_live_table_shows_the_same() -> None:
    console = Console(width=160, record=True, color_system=None)
    console.print(render_tables(_snapshot(), "praefect demo"))
    text = console.export_text()
    assert "down (killed by SIGKILL)" in text
    assert "Routers' view" in text
    assert "3 (behind 2)" in text
    assert "5 ✓" in text
    assert "Ctrl-C stops the demo" in text
