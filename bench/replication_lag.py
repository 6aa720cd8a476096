"""Replication lag: from a write's OK until every replica has it, and what replication costs.

    .venv/bin/python bench/replication_lag.py            # 20 writes/s for 20 s per run
    .venv/bin/python bench/replication_lag.py --short    # 3 s per run; CI runs it

One run starts three real storage nodes (`praefect node serve`) and a Redis
of its own (the embedded one, given to every router as ``redis.url``), then
one router (`praefect serve`) after the other, each with its own
repositories:

- **no replication**: ``plugins.blocked = ["praefect.plugins.replication"]``
  (the run checks that Redis then knows nothing of its repositories);
- **replication, OK at once**: ``failover.ack_replicas = 0``: the client's
  OK comes right after the write is recorded in Redis; replication is
  entirely asynchronous, which is what the lag measures;
- **replication, default settings**: the failover plugin holds each OK
  until one replica has the write, so only the last replica lags.

Against each router it commits at a steady rate (an open loop: a write
starts every 1/rate s whether or not the earlier ones finished;
UserCommitFiles, each commit on a new branch from ``main``, round-robin over
a few repositories) and measures:

- the write latency (p50, p99);
- with replication, the lag: from the write's OK until every replica of the
  repository is at the generation the repository had at that OK, as the
  virtual storage's change stream reports it (p50, p99, max);
- Redis commands per mutation, watched with ``MONITOR`` over the steady
  phase, less the background rate of an idle window before it (the
  routers' health votes, liveness keys, blocking reads) and less this
  benchmark's own commands: the commands clients send (round trips) and,
  apart, the commands the Lua scripts run inside Redis. (``INFO
  commandstats`` would mix the two.);
- CPU per mutation of the router and of the nodes (with the git and bridge
  processes they ran), from ``/proc``;

then the throughput of the same writes as fast as they go (a closed loop of
several clients), as a ratio against the router without replication.

Everything it started is stopped on exit, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from _machine import cpu_model
from _processes import Launcher, Started
from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.redis_io import cancellable, raise_if_cancelling
from praefect.plugins.replication.state import RepositoryStore, StateChange
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
USER = shared_pb2.User(
    gl_id="user-1", name=b"Bench", email=b"bench@example.com", gl_username="bench"
)
KEYS = VirtualStorageKeys(VS)
LAG_TARGET = 1.0  # seconds, p99 at 20 writes/s
REPLICATION_PLUGIN = "praefect.plugins.replication"


@dataclass(frozen=True)
class Profile:
    rate: float  # writes per second in the steady phase
    duration: float  # seconds of the steady phase
    repositories: int
    idle: float  # seconds of the idle window that measures background commands
    burst_writes: int  # writes of the throughput phase
    clients: int  # concurrent clients of the throughput phase


FULL = Profile(rate=20, duration=20, repositories=4, idle=3, burst_writes=160, clients=8)
SHORT = Profile(rate=20, duration=3, repositories=4, idle=1, burst_writes=40, clients=8)


@dataclass(frozen=True)
class Variant:
    name: str
    replication: bool
    settings: dict[str, Any]


VARIANTS = (
    Variant("no replication", False, {"plugins": {"blocked": [REPLICATION_PLUGIN]}}),
    Variant("replication, OK at once (ack_replicas = 0)", True, {"failover": {"ack_replicas": 0}}),
    Variant("replication, default settings", True, {}),
)


@dataclass
class Result:
    variant: Variant
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    failed: int = 0
    commands_per_mutation: float = float("nan")
    script_commands_per_mutation: float = float("nan")
    top_commands: list[tuple[str, float]] = field(default_factory=list)
    background_per_second: float = float("nan")
    router_cpu: float = float("nan")  # seconds per mutation
    nodes_cpu: float = float("nan")
    throughput: float = float("nan")
    burst_failed: int = 0
    achieved_rate: float = float("nan")


# ------------------------------------------------------------------ writes


def repository(path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VS, relative_path=path)


def metadata() -> tuple[tuple[str, str], ...]:
    return (bearer_metadata(ROUTER_TOKEN),)


async def commit(channel: aio.Channel, path: str, branch: str, start: str | None) -> None:
    """UserCommitFiles: one new file in a commit on ``branch`` (from ``start``, if given)."""
    header = operations_pb2.UserCommitFilesRequestHeader(
        repository=repository(path),
        user=USER,
        branch_name=branch.encode(),
        commit_message=f"add {branch}".encode(),
    )
    if start:
        header.start_branch_name = start.encode()
    requests = [
        operations_pb2.UserCommitFilesRequest(header=header),
        operations_pb2.UserCommitFilesRequest(
            action=operations_pb2.UserCommitFilesAction(
                header=operations_pb2.UserCommitFilesActionHeader(
                    action=operations_pb2.UserCommitFilesActionHeader.CREATE,
                    file_path=f"{branch}.txt".encode(),
                )
            )
        ),
        operations_pb2.UserCommitFilesRequest(
            action=operations_pb2.UserCommitFilesAction(content=f"{branch}\n".encode())
        ),
    ]
    await operations_pb2_grpc.OperationServiceStub(channel).UserCommitFiles(
        iter(requests), metadata=metadata(), timeout=30
    )


async def create(channel: aio.Channel, path: str) -> None:
    await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepository(
        repository_pb2.CreateRepositoryRequest(repository=repository(path)),
        metadata=metadata(),
        timeout=30,
    )
    await commit(channel, path, "main", None)


# ------------------------------------------------------------------ Redis


class CountingRedis:
    """The benchmark's Redis client, counting the commands it sends (to subtract them)."""

    def __init__(self, url: str) -> None:
        self.client: Any = connect(url)
        self.sent: Counter[str] = Counter()

    async def call(self, name: str, awaitable: Awaitable[Any]) -> Any:
        self.sent[name] += 1
        return await awaitable


@dataclass
class Commands:
    """Commands Redis ran in a window: sent by clients, and run by Lua scripts."""

    sent: Counter[str] = field(default_factory=Counter)
    scripted: Counter[str] = field(default_factory=Counter)


class CommandMonitor:
    """``MONITOR`` on a connection of its own, counting commands per time window."""

    def __init__(self, url: str) -> None:
        # No socket timeout: Redis may be silent for a while (the run without replication).
        self.client: Any = connect(url, socket_timeout=None, health_check_interval=0)
        self._seen: list[tuple[float, bool, str]] = []  # (unix time, by a script, command)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._watch(ready))
        await ready.wait()

    async def _watch(self, ready: asyncio.Event) -> None:
        async with self.client.monitor() as monitor:
            ready.set()
            async for command in monitor.listen():
                name = str(command["command"]).split(" ", 1)[0].lower()
                self._seen.append((float(command["time"]), command["client_type"] == "lua", name))

    def window(self, start: float, end: float) -> Commands:
        if self._task is not None and self._task.done():
            raise RuntimeError(f"MONITOR stopped: {self._task.exception()!r}")
        commands = Commands()
        for when, scripted, name in self._seen:
            if start <= when < end:
                (commands.scripted if scripted else commands.sent)[name] += 1
        return commands

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.client.aclose()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of ``pids`` and of their children that ended, so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


class ReplicaWatcher:
    """Follows the change stream and records when each repository's slowest replica moved.

    ``floor``: the lowest generation among the repository's assigned
    replicas; ``reached(path, generation)`` is the time it first got there.
    """

    def __init__(self, redis: CountingRedis) -> None:
        self.redis = redis
        self.floors: dict[str, list[tuple[int, float]]] = {}
        self.generations: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last: Any = await self.redis.call(
            "xrevrange", self.redis.client.xrevrange(KEYS.changes, count=1)
        )
        position = last[0][0] if last else "0-0"
        self._task = asyncio.create_task(self._follow(position))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, position: str) -> None:
        while True:
            # redis-py can swallow a cancellation that lands in a command:
            # see praefect.plugins.replication.redis_io.
            raise_if_cancelling()
            response: Any = await cancellable(
                self.redis.call(
                    "xread",
                    self.redis.client.xread({KEYS.changes: position}, count=500, block=1000),
                )
            )
            now = time.monotonic()
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    position = entry_id
                    change = StateChange.from_state(VS, fields["p"], int(fields["v"]), fields["r"])
                    if change.metadata is not None:
                        self._apply(change.relative_path, change.metadata, now)
            self._changed.set()
            self._changed = asyncio.Event()

    def _apply(self, path: str, state: Any, now: float) -> None:
        self.generations[path] = state.generation
        if not state.assigned:
            return
        floor = min(state.replica_generation(name) for name in state.assigned)
        history = self.floors.setdefault(path, [])
        if not history or floor > history[-1][0]:
            history.append((floor, now))

    def reached(self, path: str, generation: int) -> float | None:
        for floor, when in self.floors.get(path, ()):
            if floor >= generation:
                return when
        return None

    def converged(self, path: str) -> bool:
        generation = self.generations.get(path)
        return generation is not None and self.reached(path, generation) is not None

    async def wait(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


# ------------------------------------------------------------------ phases


def router_settings(nodes: dict[str, str], redis_url: str, extra: dict[str, Any]) -> str:
    mapping: dict[str, Any] = {
        "listen_addr": "127.0.0.1:0",
        "auth_token": ROUTER_TOKEN,
        "redis": {"url": redis_url},
        "virtual_storages": {
            VS: {
                name: {
                    "address": f"tcp://{address}",
                    "token": NODE_TOKEN,
                    "primary": name == NODES[0],
                }
                for name, address in nodes.items()
            }
        },
    }
    mapping.update(extra)
    text: str = to_toml(mapping)
    return text


async def steady(
    channel: aio.Channel,
    paths: Sequence[str],
    profile: Profile,
    tag: str,
    result: Result,
    redis: CountingRedis,
    watcher: ReplicaWatcher | None,
) -> None:
    """Writes started at a steady rate; latency and (with a watcher) lag of each."""
    loop = asyncio.get_running_loop()
    count = max(1, round(profile.rate * profile.duration))
    store_keys = {path: KEYS.repository(path) for path in paths}

    async def one(number: int) -> None:
        path = paths[number % len(paths)]
        started = time.monotonic()
        try:
            await commit(channel, path, f"{tag}-{number}", "main")
        except aio.AioRpcError:
            result.failed += 1
            return
        ok = time.monotonic()
        result.latencies.append(ok - started)
        if watcher is None:
            return
        generation = int(
            await redis.call("hget", redis.client.hget(store_keys[path], "generation")) or 0
        )
        await watcher.wait(
            lambda: watcher.reached(path, generation) is not None,
            within=60,
            what=f"every replica of {path} at generation {generation}",
        )
        reached = watcher.reached(path, generation)
        assert reached is not None
        result.lags.append(max(0.0, reached - ok))

    begin = loop.time()
    tasks = []
    for number in range(count):
        delay = begin + number / profile.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number)))
    started_all = loop.time() - begin
    await asyncio.gather(*tasks)
    result.achieved_rate = count / started_all * (count - 1) / count if count > 1 else float(count)


async def burst(
    channel: aio.Channel, paths: Sequence[str], profile: Profile, tag: str, result: Result
) -> None:
    """The same writes from several clients, each as fast as its answers come."""
    numbers = iter(range(profile.burst_writes))

    async def client() -> None:
        for number in numbers:
            try:
                await commit(channel, paths[number % len(paths)], f"{tag}-{number}", "main")
            except aio.AioRpcError:
                result.burst_failed += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(profile.clients)))
    result.throughput = (profile.burst_writes - result.burst_failed) / (time.monotonic() - started)


@dataclass
class Cluster:
    """What every variant shares: the nodes, Redis, and where to write files."""

    launcher: Launcher
    root: Path
    nodes: dict[str, Started]
    redis: CountingRedis
    redis_url: str
    monitor: CommandMonitor

    @property
    def addresses(self) -> dict[str, str]:
        return {name: node.address for name, node in self.nodes.items()}

    def nodes_cpu(self) -> float:
        return cpu_seconds([node.pid for node in self.nodes.values()])


def per_mutation(
    window: Commands,
    background: Commands,
    idle: float,
    seconds: float,
    own: Counter[str],
    mutations: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """(sent, scripted) commands per mutation, less the background rate and our own."""
    scale = seconds / idle

    def less(counts: Counter[str], base: Counter[str], ours: Counter[str]) -> dict[str, float]:
        names = set(counts) | set(base)
        return {
            name: (counts[name] - base[name] * scale - ours[name]) / mutations for name in names
        }

    return less(window.sent, background.sent, own), less(
        window.scripted, background.scripted, Counter()
    )


async def one_variant(
    variant: Variant, number: int, cluster: Cluster, profile: Profile, say: Callable[[str], None]
) -> Result:
    result = Result(variant)
    redis = cluster.redis
    config = cluster.root / f"router-{number}.toml"
    config.write_text(router_settings(cluster.addresses, cluster.redis_url, variant.settings))
    router: Started = cluster.launcher.start(f"router-{number}", ["serve", "--config", str(config)])
    paths = [f"bench/run{number}-{index}.git" for index in range(profile.repositories)]
    watcher = ReplicaWatcher(redis) if variant.replication else None

    async def converged(what: str, within: float) -> None:
        if watcher is not None:
            await watcher.wait(lambda: all(watcher.converged(path) for path in paths), within, what)

    try:
        async with aio.insecure_channel(router.address) as channel:
            if watcher is not None:
                await watcher.start()
            await asyncio.gather(*(create(channel, path) for path in paths))
            await converged("the new repositories", 60)
            if watcher is None:
                store = RepositoryStore(redis.client)
                tracked = [path for path in paths if await store.get(VS, path) is not None]
                if tracked:
                    raise RuntimeError(
                        f"plugins.blocked did not block replication: Redis tracks {tracked}"
                    )
                say(f"  {variant.name}: checked that Redis tracks none of its repositories")

            # Idle window: what the router and this benchmark send without writes.
            own_before, idle_start = redis.sent.copy(), time.time()
            await asyncio.sleep(profile.idle)
            idle_end, idle_own = time.time(), redis.sent - own_before

            say(
                f"  {variant.name}: steady phase, {profile.rate:g} writes/s for {profile.duration:g} s"
            )
            own_before, started = redis.sent.copy(), time.time()
            router_cpu, nodes_cpu = cpu_seconds(router.pids()), cluster.nodes_cpu()
            await steady(channel, paths, profile, "steady", result, redis, watcher)
            await converged("the steady writes", 120)
            ended, own = time.time(), redis.sent - own_before
            mutations = max(1, len(result.latencies))
            result.router_cpu = (cpu_seconds(router.pids()) - router_cpu) / mutations
            result.nodes_cpu = (cluster.nodes_cpu() - nodes_cpu) / mutations
            # MONITOR lines arrive a moment after the commands ran.
            await asyncio.sleep(0.5)
            if variant.replication:
                idle = cluster.monitor.window(idle_start, idle_end)
                background = Commands(idle.sent - Counter(dict(idle_own)), idle.scripted)
                sent, scripted = per_mutation(
                    cluster.monitor.window(started, ended),
                    background,
                    idle_end - idle_start,
                    ended - started,
                    own,
                    mutations,
                )
                result.commands_per_mutation = sum(sent.values())
                result.script_commands_per_mutation = sum(scripted.values())
                result.top_commands = sorted(
                    ((name, value) for name, value in sent.items() if value >= 0.05),
                    key=lambda item: -item[1],
                )[:8]
                result.background_per_second = background.sent.total() / (idle_end - idle_start)

            say(
                f"  {variant.name}: throughput, {profile.clients} clients, {profile.burst_writes} writes"
            )
            await burst(channel, paths, profile, "burst", result)
            await converged("the burst writes", 120)
    finally:
        if watcher is not None:
            await watcher.stop()
        cluster.launcher.stop(router)
    return result


# ------------------------------------------------------------------ report


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:,.0f}"


def git_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    return "unknown"


def machine_line() -> str:
    model = cpu_model()
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, git {git_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )


def report(results: Sequence[Result], profile: Profile) -> list[str]:
    lines = [
        f"3 nodes, 1 router; UserCommitFiles (a commit on a new branch) over "
        f"{profile.repositories} repositories",
        "",
        f"{'steady phase: ' + format(profile.rate, 'g') + ' writes/s for ' + format(profile.duration, 'g') + ' s':<48}"
        f"{'writes':>7} {'failed':>7} {'latency p50':>12} {'p99':>7} {'lag p50':>9} {'p99':>7} {'max':>7}",
    ]
    for result in results:
        lines.append(
            f"  {result.variant.name:<46}{len(result.latencies):>7} {result.failed:>7} "
            f"{ms(statistics.median(result.latencies) if result.latencies else float('nan')):>9} ms "
            f"{ms(percentile(result.latencies, 0.99)):>7}"
            + (
                f" {ms(statistics.median(result.lags)):>6} ms {ms(percentile(result.lags, 0.99)):>7}"
                f" {ms(max(result.lags)):>7}"
                if result.lags
                else f" {'-':>9} {'-':>7} {'-':>7}"
            )
        )
    lines.append("  (lag: from the OK until every replica is at the generation of that OK, in ms)")
    lines.append("")
    lines.append(
        "Redis commands per mutation (steady phase, less the idle background and this benchmark's own)"
    )
    lines.append(f"  {'':<46}{'sent':>6} {'in scripts':>11} {'background':>12}")
    for result in results:
        if not result.variant.replication:
            continue
        top = ", ".join(f"{name} {value:.1f}" for name, value in result.top_commands)
        lines.append(
            f"  {result.variant.name:<46}{result.commands_per_mutation:>6.1f} "
            f"{result.script_commands_per_mutation:>11.1f} {result.background_per_second:>8.0f}/s"
        )
        lines.append(f"    sent: {top}")
    lines.append("")
    lines.append(f"CPU per mutation (steady phase)  {'router':>10} {'3 nodes':>10}")
    for result in results:
        lines.append(
            f"  {result.variant.name:<46}{ms(result.router_cpu):>6} ms {ms(result.nodes_cpu):>7} ms"
        )
    lines.append("")
    baseline = results[0].throughput
    lines.append(
        f"throughput: {profile.clients} clients, {profile.burst_writes} writes as fast as they go"
    )
    for result in results:
        lines.append(
            f"  {result.variant.name:<46}{result.throughput:>7.1f} writes/s {result.throughput / baseline:>6.2f}x"
            + (f"  ({result.burst_failed} failed)" if result.burst_failed else "")
        )
    lines.append("")
    for result in results:
        if result.lags:
            p99 = percentile(result.lags, 0.99)
            verdict = "met" if p99 < LAG_TARGET else "NOT met"
            lines.append(
                f"target: lag p99 < {LAG_TARGET:g} s at {profile.rate:g} writes/s, "
                f"{result.variant.name}: {verdict} ({p99:.3f} s)"
            )
    return lines


# ------------------------------------------------------------------ main


def git_env() -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PRAEFECT_", "GIT_"))
    }
    env.update(
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


async def run(profile: Profile, root: Path, say: Callable[[str], None]) -> list[Result]:
    with Launcher(git_env()).running() as launcher:
        nodes: dict[str, Started] = {}
        for name in NODES:
            storage = root / "storage" / name
            storage.mkdir(parents=True)
            nodes[name] = launcher.start(
                name,
                [
                    "node",
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--token",
                    NODE_TOKEN,
                    "--storage",
                    f"{name}={storage}",
                ],
            )
        async with EmbeddedRedis(root / "redis") as embedded:
            redis = CountingRedis(embedded.url)
            monitor = CommandMonitor(embedded.url)
            await monitor.start()
            cluster = Cluster(launcher, root, nodes, redis, embedded.url, monitor)
            try:
                return [
                    await one_variant(variant, number, cluster, profile, say)
                    for number, variant in enumerate(VARIANTS)
                ]
            finally:
                await monitor.stop()
                await redis.client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="3 s per run instead of 20 s (CI)")
    parser.add_argument("--rate", type=float, help="writes per second in the steady phase")
    parser.add_argument("--duration", type=float, help="seconds of the steady phase")
    parser.add_argument("--repositories", type=int, help="repositories the writes go to")
    args = parser.parse_args(argv)
    profile = SHORT if args.short else FULL
    profile = dataclasses.replace(
        profile,
        rate=args.rate or profile.rate,
        duration=args.duration or profile.duration,
        repositories=args.repositories or profile.repositories,
    )

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(machine_line(), flush=True)
    # Short: the embedded Redis's unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="prlag-", dir="/tmp"))
    try:
        results = asyncio.run(run(profile, root, say))
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for line in report(results, profile):
        print(line)
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
