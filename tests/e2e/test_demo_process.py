"""`praefect demo` as a person runs it, without a terminal: the clone URL
works, and however it ends, no process it started is left."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.e2e import DemoProcess, command_of, descendants, still_alive
from tests.support.gitenv import git_env
from tests.support.replication_cluster import short_tmp_dir

CLONE_URL = r"^  (http://demo:[^@\s]+@127\.0\.0\.1:\d+/demo/project\.git)$"
NODE_PID = r"^  (gitaly-1|gitaly-2|gitaly-3|router|gateway)\s+\S+\s+pid (\d+)"


@pytest.fixture
def demo() -> Iterator[DemoProcess]:
    with short_tmp_dir("pre2e-") as workdir:
        process = DemoProcess(["--workdir", str(workdir / "demo")])
        try:
            yield process
        finally:
            process.close()


def _started_processes(demo: DemoProcess) -> set[int]:
    """Every process below the demo once it runs: 3 nodes, router, Redis, gateway (at least)."""
    pids = descendants(demo.process.pid)
    commands = [command_of(pid) for pid in pids]
    assert sum("node serve" in command for command in commands) == 3, commands
    assert any("redis-server" in command for command in commands), commands
    assert any(" gateway " in command for command in commands), commands
    return pids


def _assert_all_gone(pids: set[int]) -> None:
    left = still_alive(pids, timeout=10)
    assert not left, "left running: " + "; ".join(f"{pid} {command_of(pid)}" for pid in left)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_clone_url_works_a_killed_node_shows_and_ctrl_c_stops_every_process(
    demo: DemoProcess,
) -> None:
    url = demo.wait_for_line(CLONE_URL, timeout=60).group(1)
    demo.wait_for_line(r"^✓ waiting for the replicas to converge", timeout=60)
    demo.wait_for_line(r"demo/project\.git: generation \d+, primary gitaly-1", timeout=15)
    listed = {int(match.group(2)) for line in demo.lines if (match := re.match(NODE_PID, line))}
    started = _started_processes(demo)
    assert listed <= started and len(listed) == 5

    heads = subprocess.run(
        ["git", "ls-remote", url, "refs/heads/main"], env=git_env(), capture_output=True, timeout=30
    )
    assert heads.returncode == 0, heads.stderr.decode()
    assert heads.stdout.decode().endswith("\trefs/heads/main\n")

    # A child that dies is shown, and the project's primary moves away from it.
    node = next(pid for pid in started if "gitaly-1=" in command_of(pid))
    os.kill(node, signal.SIGKILL)
    demo.wait_for_line(r"nodes: gitaly-1 DOWN \(killed by SIGKILL\)", timeout=10)
    demo.wait_for_line(r"demo/project\.git: generation \d+, primary gitaly-[23]", timeout=20)

    demo.interrupt()
    assert demo.wait(timeout=30) == 0
    assert "stopped every process the demo started" in demo.output
    _assert_all_gone(started)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_second_ctrl_c_kills_everything_at_once(demo: DemoProcess) -> None:
    demo.wait_for_line(CLONE_URL, timeout=60)
    started = _started_processes(demo)
    demo.interrupt()
    demo.wait_for_line(r"^stopping every process the demo started", timeout=10)
    demo.interrupt()
    demo.wait(timeout=30)
    assert "killing every process the demo started" in demo.output
    _assert_all_gone(started)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_when_the_router_dies_the_demo_stops_everything_and_fails(demo: DemoProcess) -> None:
    demo.wait_for_line(CLONE_URL, timeout=60)
    started = _started_processes(demo)
    router = next(pid for pid in started if " serve --config " in command_of(pid))
    os.kill(router, signal.SIGKILL)
    assert demo.wait(timeout=30) == 1
    assert "the router stopped on its own (killed by SIGKILL)" in demo.output
    _assert_all_gone(started)
