"""Failover: how long writes stop when the primary dies, and what is lost.

    .venv/bin/python bench/failover.py              # 3 rounds, the figures of docs/performance.md
    .venv/bin/python bench/failover.py --rounds 1   # one round (CI)

Each round starts three real storage nodes (`praefect node serve`) and one
router (`praefect serve`) with the default settings (the router owns an
embedded Redis in a temporary directory), creates a repository through the
router and lets several clients write to it (UserCommitFiles, each client on
a branch of its own) as fast as they get answers. Then the repository's
primary is killed with SIGKILL, and the clients keep going, retrying what
fails. Measured:

- RTO: from the kill to the first OK of a write *sent after* the kill;
- detection: from the kill until the routers' shared health view in Redis
  marks the node down; election: until the repository has a new primary;
- lost: acknowledged writes (OK received) that the new primary does not
  have on the client's branch afterwards. It must be 0;
- write latency before the kill and after the failover, and, as the baseline
  of the same run, the latency of a router that acknowledges at once
  (``failover.ack_replicas = 0``): the price of holding each OK until a
  replica has the write, which is what lets a replica take over without
  losing acknowledged writes.

Targets: RTO < 3 s, lost = 0. Everything started is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _processes import Launcher, Started
from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.plugins.failover.votes import HealthVotes
from praefect.plugins.replication.embedded_redis import connect, socket_url
from praefect.plugins.replication.state import RepositoryStore
from praefect.protos.gitaly import (
    operations_pb2,
    operations_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
)
from praefect.settings import to_toml

VS = "praefect"
NODES = ("gitaly-1", "gitaly-2", "gitaly-3")
NODE_TOKEN = "bench-node-token"
ROUTER_TOKEN = "bench-router-token"
PATH = "bench/failover.git"
USER = shared_pb2.User(gl_id="user-1", name=b"Bench", email=b"bench@example.com", gl_username="bench")
RTO_TARGET = 3.0


@dataclass
class Round:
    rto: float = float("nan")
    detection: float = float("nan")
    election: float = float("nan")
    acknowledged: int = 0
    lost: int = 0
    failed_calls: int = 0
    latency_before: list[float] = field(default_factory=list)
    latency_after: list[float] = field(default_factory=list)
    latency_async: list[float] = field(default_factory=list)


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRAEFECT_", "GIT_"))}
    env.update(
        GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


def router_settings(nodes: dict[str, str], redis: dict[str, str], **extra: object) -> str:
    """Default settings but for the nodes, tokens and where Redis is."""
    mapping: dict[str, object] = {
        "listen_addr": "127.0.0.1:0",
        "auth_token": ROUTER_TOKEN,
        "redis": redis,
        "virtual_storages": {
            VS: {
                name: {"address": f"tcp://{address}", "token": NODE_TOKEN, "primary": name == NODES[0]}
                for name, address in nodes.items()
            }
        },
    }
    mapping.update(extra)
    text: str = to_toml(mapping)
    return text


def repository() -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VS, relative_path=PATH)


async def commit(channel: aio.Channel, branch: str, name: str) -> str:
    requests = [
        operations_pb2.UserCommitFilesRequest(
            header=operations_pb2.UserCommitFilesRequestHeader(
                repository=repository(), user=USER, branch_name=branch.encode(),
                commit_message=f"add {name}".encode(),
            )
        ),
        operations_pb2.UserCommitFilesRequest(
            action=operations_pb2.UserCommitFilesAction(
                header=operations_pb2.UserCommitFilesActionHeader(
                    action=operations_pb2.UserCommitFilesActionHeader.CREATE, file_path=name.encode()
                )
            )
        ),
        operations_pb2.UserCommitFilesRequest(
            action=operations_pb2.UserCommitFilesAction(content=f"{name}\n".encode())
        ),
    ]
    response = await operations_pb2_grpc.OperationServiceStub(channel).UserCommitFiles(
        iter(requests), metadata=(bearer_metadata(ROUTER_TOKEN),), timeout=15
    )
    commit_id: str = response.branch_update.commit_id
    return commit_id


async def poll(check: Callable[[], object], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def sequential_latency(channel: aio.Channel, branch: str, count: int) -> list[float]:
    times = []
    for number in range(count):
        started = time.monotonic()
        await commit(channel, branch, f"{branch}-{number}.txt")
        times.append(time.monotonic() - started)
    return times


async def one_round(root: Path, clients: int, warmup: int, say: Callable[[str], None]) -> Round:
    # short: it holds the embedded Redis's unix socket (108-byte limit)
    redis_dir = Path(tempfile.mkdtemp(prefix="pfb-", dir="/tmp"))
    try:
        return await _round(root, redis_dir, clients, warmup, say)
    finally:
        shutil.rmtree(redis_dir, ignore_errors=True)


def branch_history(git_dir: Path, branch: str, env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-list", f"refs/heads/{branch}"],
        capture_output=True, text=True, env=env, check=False,
    ).stdout
    return set(out.split())


async def _round(
    root: Path, redis_dir: Path, clients: int, warmup: int, say: Callable[[str], None]
) -> Round:
    result = Round()
    env = git_env()
    with Launcher(env).running() as launcher:
        nodes: dict[str, Started] = {}
        for name in NODES:
            storage = root / name
            storage.mkdir(parents=True)
            nodes[name] = launcher.start(
                name,
                ["node", "serve", "--listen", "127.0.0.1:0", "--token", NODE_TOKEN, "--storage", f"{name}={storage}"],
            )
        config = root / "router.toml"
        addresses = {name: node.address for name, node in nodes.items()}
        config.write_text(router_settings(addresses, {"data_dir": str(redis_dir)}))
        router = launcher.start("router", ["serve", "--config", str(config)])
        # The baseline router acknowledges at once; it shares the first one's Redis.
        baseline_config = root / "baseline.toml"
        baseline_config.write_text(
            router_settings(addresses, {"url": socket_url(redis_dir)}, failover={"ack_replicas": 0})
        )
        client = connect(socket_url(redis_dir))
        store = RepositoryStore(client)
        votes = HealthVotes(client, window=5.0)
        channel = aio.insecure_channel(router.address)
        try:
            await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepository(
                repository_pb2.CreateRepositoryRequest(repository=repository()),
                metadata=(bearer_metadata(ROUTER_TOKEN),), timeout=30,
            )

            async def everywhere() -> bool:
                metadata = await store.get(VS, PATH)
                return metadata is not None and len(metadata.up_to_date) == len(NODES)


            await poll(everywhere, "the repository on every node")
            baseline = launcher.start("baseline-router", ["serve", "--config", str(baseline_config)])
            async with aio.insecure_channel(baseline.address) as fast:
                result.latency_async = await sequential_latency(fast, "latency-async", 20)
            launcher.stop(baseline)  # withdraws its health votes
            result.latency_before = await sequential_latency(channel, "latency-sync", 20)
            say(f"  write latency: {statistics.median(result.latency_before) * 1000:.0f} ms "
                f"(acknowledging at once: {statistics.median(result.latency_async) * 1000:.0f} ms)")

            acknowledged: dict[int, list[str]] = {n: [] for n in range(clients)}
            killed_at: list[float] = []
            first_after: list[float] = []
            stop = asyncio.Event()

            async def writer(number: int) -> None:
                count = 0
                while not stop.is_set():
                    count += 1
                    sent = time.monotonic()
                    try:
                        commit_id = await commit(channel, f"client-{number}", f"w{number}-{count}.txt")
                    except aio.AioRpcError:
                        result.failed_calls += 1
                        await asyncio.sleep(0.02)  # a client's pause before retrying
                        continue
                    done = time.monotonic()
                    acknowledged[number].append(commit_id)
                    if killed_at and sent > killed_at[0]:
                        if not first_after:
                            first_after.append(done)
                        result.latency_after.append(done - sent)

            writers = [asyncio.create_task(writer(n)) for n in range(clients)]
            try:
                await poll(lambda: sum(map(len, acknowledged.values())) >= warmup, "the warm-up writes")
                old: str = (await store.require(VS, PATH)).primary
                os.killpg(nodes[old].pid, signal.SIGKILL)
                killed_at.append(time.monotonic())
                say(f"  kill -9 {old} after {sum(map(len, acknowledged.values()))} acknowledged writes")

                async def detected() -> bool:
                    state = (await votes.view(VS)).get(old)
                    down: bool = state is not None and not state.healthy
                    return down

                await poll(detected, f"{old} to be marked down")
                result.detection = time.monotonic() - killed_at[0]

                async def elected() -> bool:
                    primary: str = (await store.require(VS, PATH)).primary
                    return primary != old

                await poll(elected, "a new primary")
                result.election = time.monotonic() - killed_at[0]
                await poll(lambda: len(result.latency_after) >= 4 * clients, "writes after the failover", 60)
            finally:
                stop.set()
                await asyncio.gather(*writers)
            result.rto = first_after[0] - killed_at[0]
            new = (await store.require(VS, PATH)).primary
            result.acknowledged = sum(map(len, acknowledged.values()))
            for number, commits in acknowledged.items():
                history = await asyncio.to_thread(
                    branch_history, root / new / PATH, f"client-{number}", env
                )
                result.lost += sum(1 for commit_id in commits if commit_id not in history)
            say(f"  new primary {new}; RTO {result.rto:.2f} s; lost {result.lost} of {result.acknowledged}")
        finally:
            await channel.close()
            await client.aclose()
            launcher.stop(router)
    return result


def summary(rounds: Sequence[Round]) -> list[str]:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values) if values else float("nan")

    rto = [r.rto for r in rounds]
    before = med([t for r in rounds for t in r.latency_before])
    after = med([t for r in rounds for t in r.latency_after])
    fast = med([t for r in rounds for t in r.latency_async])
    lost = sum(r.lost for r in rounds)
    lines = [
        "| figure | value |",
        "|---|---|",
        f"| RTO, kill -9 to first OK of a new write (median of {len(rounds)}) | {med(rto):.2f} s |",
        f"| RTO, worst round | {max(rto):.2f} s |",
        f"| detection (shared health view marks the node down), median | {med([r.detection for r in rounds]):.2f} s |",
        f"| new primary elected, median | {med([r.election for r in rounds]):.2f} s |",
        f"| acknowledged writes lost | {lost} of {sum(r.acknowledged for r in rounds)} |",
        f"| failed calls during failover (retried by the clients) | {sum(r.failed_calls for r in rounds)} |",
        f"| write latency, median: acknowledged once a replica has it | {before * 1000:.0f} ms |",
        f"| write latency, median: acknowledged at once (baseline) | {fast * 1000:.0f} ms |",
        f"| cost of waiting for a replica (ratio to baseline) | {before / fast:.1f}x |",
        f"| write latency after failover / before | {after / before:.2f}x |",
        "",
        f"target RTO < {RTO_TARGET:.0f} s: {'met' if max(rto) < RTO_TARGET else 'MISSED'}; "
        f"lost acknowledged writes = 0: {'met' if lost == 0 else 'MISSED'}",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="fresh clusters to fail over (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writers (default 4)")
    parser.add_argument("--warmup", type=int, default=20, help="acknowledged writes before the kill")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"failover benchmark: {args.rounds} round(s), {args.clients} clients; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rounds = []
    for number in range(args.rounds):
        say(f"round {number + 1}:")
        with tempfile.TemporaryDirectory(prefix="praefect-failover-") as root:
            rounds.append(asyncio.run(one_round(Path(root), args.clients, args.warmup, say)))
    say("")
    for line in summary(rounds):
        say(line)
    worst = max(r.rto for r in rounds)
    return 0 if worst < RTO_TARGET and all(r.lost == 0 for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
