"""What the router costs: the same calls direct to a node and through the router.

    .venv/bin/python bench/proxy_overhead.py --full     # the figures of docs/performance.md
    .venv/bin/python bench/proxy_overhead.py --short    # seconds; CI runs it

One run starts a real storage node (`praefect node serve`) and real routers
(`praefect serve`, once with one process and once with `server.processes =
2`) on free loopback ports, seeds a repository of incompressible data, and
measures, direct to the node and through each router:

- unary throughput (RepositoryExists, FindCommit) at 1 and 32 concurrent
  callers, with p50/p99 latency; the 32 callers come from several client
  processes when one client process is not enough to load the node (checked
  in the run: direct throughput with 1 and 2 client processes);
- streaming throughput, CPU per MB and message size: GetBlob of the large
  blob, a full clone through PostUploadPack (a protocol v2 fetch of every
  ref, as `git clone` sends) and through SSHUploadPack (the client's side
  open until git's exit status, as over ssh);
- the router's RSS growth while a large clone streams through it;
- the cost of tracing: the router with tracing off, recording, writing
  to the console and exporting over OTLP, in front of the same node
  (`tracing_overhead.py`, run as part ``tracing``);
- with ``--only ...,floor``: the router's own floor, its CPU per MB relaying
  GetBlob from a fake node that streams from memory (`_fake_node.py`) in
  messages of 16 KiB to 1 MiB.

It prints a table of absolute figures and proxied/direct ratios (medians of
the rounds; each round measures direct and proxied back to back), then the
targets of the router's design. Everything it started is stopped by pid on
exit, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from _machine import cpu_model
from _processes import Launcher, Started, rss_bytes
from _seed import Seeded, git_environment, seed_repository
from _streams import (
    Streamed,
    get_blob,
    get_blob_request,
    ssh_upload_pack,
    ssh_upload_pack_request,
    upload_pack,
    upload_pack_request,
)
from _unary_load import client_options, cpu_seconds, run_unary
from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.protos.gitaly import blob_pb2, commit_pb2, repository_pb2, shared_pb2
from praefect.settings import to_toml

MB = 1024 * 1024
NODE = "gitaly-1"
VIRTUAL_STORAGE = "praefect"
NODE_TOKEN = "bench-node-token"
ROUTER_TOKEN = "bench-router-token"
CALLERS = (1, 32)
UNARY_METHODS = {
    "RepositoryExists": "/gitaly.RepositoryService/RepositoryExists",
    "FindCommit": "/gitaly.CommitService/FindCommit",
}
TARGETS = {"unary throughput at 32 callers": 0.6, "streaming throughput": 0.8}
RSS_LIMIT_MB = 50.0
NAIVE = "naive proxy"
UNUSED_REDIS_URL = "redis://127.0.0.1:1/0"
StreamCall = Callable[[aio.Channel, str, str], Awaitable[Streamed]]
SPY_OPTIONS = tuple(os.environ.get("BENCH_PY_SPY_OPTIONS", "--nonblocking").split())


@dataclass(frozen=True)
class Profile:
    name: str
    blob: int  # the GetBlob blob, first file of the clone repository
    clone_files: tuple[int, ...]  # further files, one commit each
    rss_files: tuple[int, ...]  # the RSS clone's repository; () = the clone repository
    warmup: float
    duration: float
    rounds: int
    stream_rounds: int
    floor_bytes: int  # per stream of the router-floor measurement


PROFILES = {
    "short": Profile(
        name="short",
        blob=16 * MB,
        clone_files=(4 * MB,) * 9,  # ~52 MB: also the RSS clone
        rss_files=(),
        warmup=0.3,
        duration=1.0,
        rounds=1,
        stream_rounds=1,
        floor_bytes=16 * MB,
    ),
    "full": Profile(
        name="full",
        blob=50 * MB,
        clone_files=(5 * MB,) * 10,  # ~100 MB
        rss_files=(50 * MB,) * 10,  # ~500 MB
        warmup=1.0,
        duration=5.0,
        rounds=3,
        stream_rounds=3,
        floor_bytes=128 * MB,
    ),
}


# -- results -----------------------------------------------------------------------


@dataclass
class Series:
    """One figure measured in several rounds, per target ("direct", "router x1", ...)."""

    label: str
    unit: str
    higher_is_better: bool
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, target: str, value: float) -> None:
        self.values.setdefault(target, []).append(value)

    def median(self, target: str) -> float | None:
        found = self.values.get(target)
        return statistics.median(found) if found else None

    def ratio(self, target: str) -> float | None:
        """Median over the rounds of (target / direct) measured in the same round."""
        direct, proxied = self.values.get("direct"), self.values.get(target)
        if not direct or not proxied:
            return None
        ratios = [p / d for d, p in zip(direct, proxied, strict=False) if d > 0]
        return statistics.median(ratios) if ratios else None


@dataclass
class Report:
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, label: str, unit: str, higher_is_better: bool = True) -> Series:
        for series in self.series:
            if series.label == label and series.unit == unit:
                return series
        series = Series(label, unit, higher_is_better)
        self.series.append(series)
        return series


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- the parts under test ------------------------------------------------------------


@dataclass
class Proxy:
    """Something in front of the node: a router, or the naive proxy."""

    process: Started
    storage: str  # the storage name clients send to it
    token: str  # the token clients sign with
    processes: int = 1  # serving processes (forked workers when > 1)

    def serving_pids(self) -> list[int]:
        """The processes that serve calls (not the parent of forked workers)."""
        pids = self.process.pids()
        return pids[1:] if self.processes > 1 else pids


@dataclass
class Cluster:
    node: Started
    proxies: dict[str, Proxy]  # "router x1", "router x2", "naive proxy"
    clone: Seeded
    rss: Seeded

    def targets(self) -> list[tuple[str, str, str]]:
        """(target name, address, storage name) of direct and of each proxy."""
        found = [("direct", self.node.address, NODE)]
        found += [(name, proxy.process.address, proxy.storage) for name, proxy in self.proxies.items()]
        return found

    def token(self, target: str) -> str:
        return NODE_TOKEN if target == "direct" else self.proxies[target].token

    def serving_pids(self, target: str) -> list[int]:
        return self.proxies[target].serving_pids()


def router_settings(node_address: str, processes: int) -> str:
    text: str = to_toml(
        {
            "listen_addr": "127.0.0.1:0",
            "auth_token": ROUTER_TOKEN,
            "logging": {"level": "warning"},
            "server": {"processes": processes},
            # The benchmark measures the forwarding path. Replication and
            # failover need Redis, and the calls measured here are reads:
            # no mutation to record.
            "plugins": {"blocked": ["praefect.plugins.replication", "praefect.plugins.failover"]},
            # Settings validation wants a shared Redis for server.processes > 1;
            # without those two plugins nothing connects to it.
            "redis": {"url": UNUSED_REDIS_URL},
            "virtual_storages": {
                VIRTUAL_STORAGE: {
                    NODE: {"address": f"tcp://{node_address}", "token": NODE_TOKEN, "primary": True}
                }
            },
        }
    )
    return text


def start_cluster(
    launcher: Launcher,
    work: Path,
    profile: Profile,
    router_processes: Sequence[int],
    naive: bool,
    say: Callable[[str], None],
) -> Cluster:
    storage = work / "storage"
    say(f"seeding: a {profile.blob // MB} MB blob and {sum(profile.clone_files) // MB} MB more history")
    clone = seed_repository(storage, "bench/clone.git", (profile.blob, *profile.clone_files), work / "scratch")
    rss = clone
    if profile.rss_files:
        say(f"seeding: {sum(profile.rss_files) // MB} MB for the RSS clone")
        rss = seed_repository(storage, "bench/rss.git", profile.rss_files, work / "scratch")
    node = launcher.start(
        "node", ["node", "serve", "--listen", "127.0.0.1:0", "--storage", f"{NODE}={storage}", "--token", NODE_TOKEN]
    )
    proxies: dict[str, Proxy] = {}
    for count in router_processes:
        name = f"router x{count}"
        settings = work / f"router-{count}.toml"
        settings.write_text(router_settings(node.address, count))
        started = launcher.start(name, ["serve", "--config", str(settings)], listening_lines=count)
        proxies[name] = Proxy(started, VIRTUAL_STORAGE, ROUTER_TOKEN, count)
    if naive:
        started = launcher.start(
            NAIVE, [str(Path(__file__).with_name("_naive_proxy.py")), node.address], command=(sys.executable,)
        )
        proxies[NAIVE] = Proxy(started, NODE, NODE_TOKEN)
    return Cluster(node, proxies, clone, rss)


# -- measurements ----------------------------------------------------------------------


def unary_request(method: str, storage: str, seeded: Seeded) -> bytes:
    repository = shared_pb2.Repository(storage_name=storage, relative_path=seeded.relative_path)
    data: bytes
    if method == "RepositoryExists":
        data = repository_pb2.RepositoryExistsRequest(repository=repository).SerializeToString()
    else:
        data = commit_pb2.FindCommitRequest(repository=repository, revision=b"main").SerializeToString()
    return data


async def check_responses(cluster: Cluster) -> None:
    """Each target answers each unary method correctly (the load only counts bytes)."""
    for target, address, storage in cluster.targets():
        async with aio.insecure_channel(address, options=client_options()) as channel:
            metadata = (bearer_metadata(cluster.token(target)),)
            raw = await channel.unary_unary(UNARY_METHODS["RepositoryExists"])(
                unary_request("RepositoryExists", storage, cluster.clone), metadata=metadata
            )
            if not repository_pb2.RepositoryExistsResponse.FromString(raw).exists:
                raise RuntimeError(f"{target}: RepositoryExists says the seeded repository does not exist")
            raw = await channel.unary_unary(UNARY_METHODS["FindCommit"])(
                unary_request("FindCommit", storage, cluster.clone), metadata=metadata
            )
            if commit_pb2.FindCommitResponse.FromString(raw).commit.id != cluster.clone.head:
                raise RuntimeError(f"{target}: FindCommit main did not return the seeded head")


def choose_client_processes(cluster: Cluster, profile: Profile, report: Report, say: Callable[[str], None]) -> int:
    """Client processes for 32 callers: whichever of 1 or 2 loads the node more."""
    request = unary_request("RepositoryExists", NODE, cluster.clone)
    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    for processes in (1, 2):
        samples = []
        for _ in range(profile.rounds):
            result = run_unary(
                cluster.node.address,
                UNARY_METHODS["RepositoryExists"],
                request,
                NODE_TOKEN,
                callers=32,
                processes=processes,
                channels_per_process=4,
                warmup=profile.warmup,
                duration=profile.duration,
            )
            samples.append(result.rate(profile.duration))
            cpu[processes] = max(result.cpu_seconds) / profile.duration
        rates[processes] = statistics.median(samples)
    gain = rates[2] / rates[1] - 1 if rates[1] else 0.0
    chosen = 2 if gain > 0 else 1
    verdict = (
        "using 2 for 32 callers"
        if chosen == 2
        else "a second client process does not load the node more, so one is not the limit: using 1"
    )
    report.notes.append(
        "client check (direct RepositoryExists, 32 callers): "
        f"1 client process {rates[1]:,.0f} calls/s (client CPU {cpu[1]:.2f} core), "
        f"2 client processes {rates[2]:,.0f} calls/s ({gain:+.0%}; busiest client {cpu[2]:.2f} core); {verdict}"
    )
    say(report.notes[-1])
    return chosen


def measure_unary(cluster: Cluster, profile: Profile, client_processes: int, report: Report, say: Callable[[str], None]) -> None:
    for method, path in UNARY_METHODS.items():
        for callers in CALLERS:
            label = f"{method}, {callers} caller{'s' if callers > 1 else ''}"
            rate = report.get(label, "calls/s")
            p50 = report.get(label, "p50 ms", higher_is_better=False)
            p99 = report.get(label, "p99 ms", higher_is_better=False)
            server_cpu = report.get(label, "CPU µs/call", higher_is_better=False) if callers > 1 else None
            for _ in range(profile.rounds):
                for target, address, storage in cluster.targets():
                    watch = {"node": [cluster.node.pid]}
                    if target != "direct":
                        watch["proxy"] = cluster.serving_pids(target)
                    result = run_unary(
                        address,
                        path,
                        unary_request(method, storage, cluster.clone),
                        cluster.token(target),
                        callers=callers,
                        processes=client_processes if callers > 1 else 1,
                        channels_per_process=4,
                        warmup=profile.warmup,
                        duration=profile.duration,
                        watch=watch,
                    )
                    calls = len(result.latencies)
                    rate.add(target, result.rate(profile.duration))
                    if server_cpu is not None and calls:
                        # node + router: what serving one call costs in all
                        server_cpu.add(target, sum(result.watched_cpu.values()) / calls * 1e6)
                    p50.add(target, percentile(result.latencies, 0.50) * 1000)
                    p99.add(target, percentile(result.latencies, 0.99) * 1000)
            say(f"{label}: " + ", ".join(f"{t} {rate.median(t):,.0f}/s" for t, _, _ in cluster.targets()))


def stream_calls(cluster: Cluster) -> list[tuple[str, StreamCall]]:
    """(label, call) of each streaming measurement."""
    seeded = cluster.clone
    wants = sorted(set(seeded.refs.values()))
    return [
        (
            f"GetBlob {seeded.blob_size // MB} MB",
            lambda channel, storage, token: get_blob(
                channel, get_blob_request(storage, seeded.relative_path, seeded.blob), token, seeded.blob_size
            ),
        ),
        (
            f"clone {seeded.pack_bytes // MB} MB (PostUploadPack v2)",
            lambda channel, storage, token: upload_pack(
                channel, upload_pack_request(storage, seeded.relative_path, wants), token
            ),
        ),
        (
            f"clone {seeded.pack_bytes // MB} MB (SSHUploadPack)",
            lambda channel, storage, token: ssh_upload_pack(
                channel, ssh_upload_pack_request(storage, seeded.relative_path, wants), token
            ),
        ),
    ]


async def measure_streams(cluster: Cluster, profile: Profile, report: Report, say: Callable[[str], None]) -> None:
    """Each stream, each target in turn, per round."""
    for label, stream in stream_calls(cluster):
        rate = report.get(label, "MB/s")
        cpu = report.get(label, "CPU ms/MB", higher_is_better=False)
        proxy_cpu = report.get(label, "proxy CPU ms/MB", higher_is_better=False)
        message_size = report.get(label, "KiB/msg")
        for _ in range(profile.stream_rounds):
            for target, address, storage in cluster.targets():
                proxy = [] if target == "direct" else cluster.serving_pids(target)
                async with aio.insecure_channel(address, options=client_options()) as channel:
                    node_before = cpu_seconds(cluster.node.pid)
                    proxy_before = sum(cpu_seconds(pid) for pid in proxy)
                    streamed = await stream(channel, storage, cluster.token(target))
                    node_used = cpu_seconds(cluster.node.pid) - node_before
                    proxy_used = sum(cpu_seconds(pid) for pid in proxy) - proxy_before
                megabytes = streamed.size / MB
                rate.add(target, megabytes / streamed.seconds)
                # node + proxy: what moving one MB costs in all (git's own
                # processes are the same either way and not counted)
                cpu.add(target, (node_used + proxy_used) * 1000 / megabytes)
                if proxy:
                    proxy_cpu.add(target, proxy_used * 1000 / megabytes)
                message_size.add(target, streamed.size / 1024 / max(streamed.messages, 1))
        say(f"{label}: " + ", ".join(f"{t} {rate.median(t):,.0f} MB/s" for t, _, _ in cluster.targets()))


FLOOR_MESSAGE_SIZES = (16 * 1024, 64 * 1024, 128 * 1024, 1024 * 1024)


def measure_floor(launcher: Launcher, work: Path, profile: Profile, report: Report, say: Callable[[str], None]) -> None:
    """What relaying a stream costs a router by itself, per message size.

    A fake node (`_fake_node.py`) streams GetBlob data from memory in
    messages of a chosen size, direct and through a router of its own: no
    git, disk or node work, so the router's CPU per MB is its floor for
    that message size.
    """
    fake = launcher.start(
        "fake node",
        [str(Path(__file__).with_name("_fake_node.py")), str(profile.floor_bytes), NODE_TOKEN],
        command=(sys.executable,),
    )
    settings = work / "router-floor.toml"
    settings.write_text(router_settings(fake.address, 1))
    router = launcher.start("router (floor)", ["serve", "--config", str(settings)])
    try:
        targets: tuple[tuple[str, str, str, str, list[int]], ...] = (
            ("direct", fake.address, NODE, NODE_TOKEN, []),
            ("router x1", router.address, VIRTUAL_STORAGE, ROUTER_TOKEN, router.pids()),
        )
        asyncio.run(_floor_streams(targets, profile, report, say))
    finally:
        launcher.stop(router)
        launcher.stop(fake)


async def _floor_streams(
    targets: Sequence[tuple[str, str, str, str, list[int]]],
    profile: Profile,
    report: Report,
    say: Callable[[str], None],
) -> None:
    for size in FLOOR_MESSAGE_SIZES:
        label = f"fake node GetBlob, {size // 1024} KiB messages"
        rate = report.get(label, "MB/s")
        proxy_cpu = report.get(label, "proxy CPU ms/MB", higher_is_better=False)
        for _ in range(profile.stream_rounds):
            for target, address, storage, token, proxy in targets:
                repository = shared_pb2.Repository(storage_name=storage, relative_path="bench/fake.git")
                request = blob_pb2.GetBlobRequest(repository=repository, oid="0" * 40, limit=size)
                async with aio.insecure_channel(address, options=client_options()) as channel:
                    before = sum(cpu_seconds(pid) for pid in proxy)
                    streamed = await get_blob(channel, request.SerializeToString(), token, profile.floor_bytes)
                    used = sum(cpu_seconds(pid) for pid in proxy) - before
                rate.add(target, streamed.size / MB / streamed.seconds)
                if proxy:
                    proxy_cpu.add(target, used * 1000 / (streamed.size / MB))
        say(f"{label}: router x1 {proxy_cpu.median('router x1') or 0:.2f} ms/MB")


class PeakRss:
    """The largest summed RSS of some processes, sampled every 20 ms until stopped."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.baseline = self.peak = self.current()
        self._done = asyncio.Event()

    def current(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    async def follow(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.current())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), 0.02)
        self.peak = max(self.peak, self.current())

    def stop(self) -> None:
        self._done.set()


async def measure_rss(cluster: Cluster, report: Report, say: Callable[[str], None]) -> None:
    """RSS growth of each proxy (a router's workers summed) while the large clone streams."""
    seeded = cluster.rss
    label = f"RSS growth, {seeded.pack_bytes // MB} MB clone"
    growth = report.get(label, "MB", higher_is_better=False)
    wants = sorted(set(seeded.refs.values()))
    for name, proxy in cluster.proxies.items():
        peak = PeakRss(proxy.serving_pids())
        sampler = asyncio.create_task(peak.follow())
        try:
            async with aio.insecure_channel(proxy.process.address, options=client_options()) as channel:
                request = upload_pack_request(proxy.storage, seeded.relative_path, wants)
                streamed = await upload_pack(channel, request, proxy.token)
        finally:
            peak.stop()
            await sampler
        baseline = peak.baseline
        growth.add(name, (peak.peak - baseline) / MB)
        size = streamed.size / MB
        say(f"{name}: RSS {baseline / MB:.0f} MB before, peak {peak.peak / MB:.0f} MB during a {size:.0f} MB clone ({size / streamed.seconds:.0f} MB/s)")


@contextlib.contextmanager
def py_spy(pid: int, output: Path, fmt: str) -> Iterator[None]:
    """Record py-spy samples of ``pid`` into ``output`` while the block runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    process = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "250", "--format", fmt, "--output", str(output), *SPY_OPTIONS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        # SIGINT: py-spy stops sampling and writes what it recorded.
        process.send_signal(signal.SIGINT)
        try:
            _, error = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, error = process.communicate()
    if process.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({process.returncode}): {error.decode(errors='replace')}")


PROFILE_FORMATS = (("raw", "collapsed.txt"), ("flamegraph", "svg"))
PROFILE_STREAM_SECONDS = 5.0


def profile_unary(cluster: Cluster, profile: Profile, client_processes: int, out: Path, say: Callable[[str], None]) -> None:
    """py-spy samples of router x1 under 32 callers of RepositoryExists (figures disturbed)."""
    router = first_router(cluster)
    seconds = max(3, round(profile.warmup + profile.duration))
    outputs = []
    for fmt, suffix in PROFILE_FORMATS:
        target = out / f"router-unary32.{suffix}"
        with py_spy(router.pid, target, fmt):
            run_unary(
                router.address,
                UNARY_METHODS["RepositoryExists"],
                unary_request("RepositoryExists", VIRTUAL_STORAGE, cluster.clone),
                ROUTER_TOKEN,
                callers=32,
                processes=client_processes,
                channels_per_process=4,
                warmup=0.2,
                duration=seconds,
            )
        outputs.append(str(target))
    say("profile written: " + ", ".join(outputs))


async def profile_streams(cluster: Cluster, profile: Profile, out: Path, say: Callable[[str], None]) -> None:
    """py-spy samples of router x1 while each stream runs through it again and
    again, ``stream_rounds`` times and for PROFILE_STREAM_SECONDS at least."""
    router = first_router(cluster)
    outputs = []
    for label, stream in stream_calls(cluster):
        name = label.split(" ")[0].lower() + ("-ssh" if "SSH" in label else "")
        for fmt, suffix in PROFILE_FORMATS:
            target = out / f"router-{name}.{suffix}"
            with py_spy(router.pid, target, fmt):
                async with aio.insecure_channel(router.address, options=client_options()) as channel:
                    started = time.monotonic()
                    runs = 0
                    while runs < profile.stream_rounds or time.monotonic() - started < PROFILE_STREAM_SECONDS:
                        await stream(channel, VIRTUAL_STORAGE, ROUTER_TOKEN)
                        runs += 1
            outputs.append(str(target))
    say("profile written: " + ", ".join(outputs))


def first_router(cluster: Cluster) -> Started:
    name = next(name for name in cluster.proxies if name.startswith("router"))
    return cluster.proxies[name].process


# -- output ------------------------------------------------------------------------------


def machine_line() -> str:
    model = cpu_model()
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, load average {os.getloadavg()[0]:.2f} at the start"
    )


def table(report: Report, targets: Sequence[str]) -> list[str]:
    proxied = [t for t in targets if t != "direct"]
    header = f"{'measurement':<42} {'unit':<15} {'direct':>10}"
    for name in proxied:
        header += f" {name:>10} {'ratio':>7}"
    lines = [header, "-" * len(header)]
    for series in report.series:
        row = f"{series.label:<42} {series.unit:<15} {_figure(series.median('direct')):>10}"
        for name in proxied:
            ratio = series.ratio(name)
            row += f" {_figure(series.median(name)):>10} {(f'{ratio:.2f}x' if ratio is not None else '-'):>7}"
        lines.append(row)
    return lines


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def target_lines(report: Report, targets: Sequence[str]) -> list[str]:
    lines = []
    proxied = [t for t in targets if t.startswith("router")]
    unary = [s for s in report.series if s.unit == "calls/s" and s.label.endswith("32 callers")]
    # The streaming target names GetBlob and the PostUploadPack clone.
    streams = [
        s
        for s in report.series
        if s.unit == "MB/s" and (s.label.startswith("GetBlob") or "PostUploadPack" in s.label)
    ]
    for label, series_list, floor in (
        ("unary throughput at 32 callers", unary, TARGETS["unary throughput at 32 callers"]),
        ("streaming throughput", streams, TARGETS["streaming throughput"]),
    ):
        if not series_list:
            continue
        for name in proxied:
            ratios = [(s.label.split(",")[0].split(" (")[0], s.ratio(name)) for s in series_list]
            shown = ", ".join(f"{what} {r:.2f}x" for what, r in ratios if r is not None)
            met = all(r is not None and r >= floor for _, r in ratios)
            lines.append(f"target {label} >= {floor:.1f}x, {name}: {shown} -> {'met' if met else 'NOT met'}")
    for series in report.series:
        if series.unit == "MB" and "RSS" in series.label:
            for name in proxied:
                value = series.median(name)
                if value is not None:
                    met = value < RSS_LIMIT_MB
                    lines.append(
                        f"target RSS growth < {RSS_LIMIT_MB:.0f} MB, {name}: {value:.1f} MB -> {'met' if met else 'NOT met'}"
                    )
    return lines


# -- the run -------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


PARTS = ("unary", "streams", "rss", "tracing", "floor")
DEFAULT_PARTS = ("unary", "streams", "rss", "tracing")


def measure_tracing(profile: Profile) -> list[str]:
    """The router with tracing off and on, in front of the same node: bench/tracing_overhead.py.

    Run as a child process after the other parts (it starts its own node and
    routers, one per tracing set-up); its table is returned as printed.
    """
    script = Path(__file__).with_name("tracing_overhead.py")
    args = [sys.executable, str(script)]
    args += ["--short"] if profile.name == "short" else ["--rounds", str(profile.rounds)]
    result = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed with exit status {result.returncode}")
    lines = result.stdout.splitlines()
    # From the table's header on: its progress lines went to stderr already.
    start = next((i for i, line in enumerate(lines) if line.startswith("call ")), 0)
    return lines[start:]


def run(
    profile: Profile,
    router_processes: Sequence[int],
    parts: Sequence[str],
    naive: bool,
    profile_dir: Path | None,
    server_env: Mapping[str, str] | None = None,
) -> Report:
    report = Report()

    def say(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    env = {**git_environment(), **(server_env or {})}
    work = Path(tempfile.mkdtemp(prefix="praefect-bench-"))
    launcher = Launcher(env)
    try:
        with launcher.running():
            if profile_dir is not None:
                profile_dir.mkdir(parents=True, exist_ok=True)
            if set(parts) & {"unary", "streams", "rss"}:
                run_on_cluster(launcher, work, profile, router_processes, parts, naive, profile_dir, report, say)
            if "floor" in parts:
                measure_floor(launcher, work, profile, report, say)
            report.notes.append(
                f"{profile.rounds} round(s) of {profile.duration:.0f} s after {profile.warmup:.1f} s warm-up per unary "
                f"figure, {profile.stream_rounds} round(s) per stream; figures are medians, ratios are medians "
                "of the per-round proxied/direct ratios"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def run_on_cluster(
    launcher: Launcher,
    work: Path,
    profile: Profile,
    router_processes: Sequence[int],
    parts: Sequence[str],
    naive: bool,
    profile_dir: Path | None,
    report: Report,
    say: Callable[[str], None],
) -> None:
    """The parts measured against a real node with seeded repositories."""
    started = time.monotonic()
    cluster = start_cluster(launcher, work, profile, router_processes, naive, say)
    say(f"started node and routers in {time.monotonic() - started:.1f} s")
    asyncio.run(check_responses(cluster))
    if "unary" in parts:
        client_processes = choose_client_processes(cluster, profile, report, say)
        if profile_dir is not None:
            profile_unary(cluster, profile, client_processes, profile_dir, say)
        measure_unary(cluster, profile, client_processes, report, say)
    if "streams" in parts:
        if profile_dir is not None:
            asyncio.run(profile_streams(cluster, profile, profile_dir, say))
        asyncio.run(measure_streams(cluster, profile, report, say))
    if "rss" in parts:
        asyncio.run(measure_rss(cluster, report, say))


def _environment_item(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_const", dest="mode", const="short", help="seconds, small data (CI)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full", help="the documented figures (default)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default: 1 short, 3 full)")
    parser.add_argument(
        "--router-processes",
        default="1,2",
        help="comma-separated server.processes values to measure (default: 1,2)",
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated parts to measure, of {', '.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})",
    )
    parser.add_argument(
        "--naive",
        action="store_true",
        help="also measure a naive bytes proxy (bench/_naive_proxy.py) as a baseline",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also record py-spy profiles of the router into DIR, under the unary load and each stream",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        type=_environment_item,
        metavar="NAME=VALUE",
        help="extra environment of the node and router processes (not of the clients), "
        "e.g. MALLOC_TRIM_THRESHOLD_=16777216; repeatable",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.mode or "full"]
    if args.rounds:
        profile = Profile(**{**profile.__dict__, "rounds": args.rounds, "stream_rounds": args.rounds})
    try:
        counts = [int(part) for part in args.router_processes.split(",") if part]
    except ValueError:
        parser.error("--router-processes takes numbers such as 1,2")
    parts = [part for part in args.only.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    print(machine_line(), flush=True)
    try:
        with stop_on_sigterm():
            report = run(profile, counts, parts, args.naive, args.profile, dict(args.server_env))
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started is stopped", file=sys.stderr)
        return 130
    targets = ["direct", *(f"router x{count}" for count in counts), *([NAIVE] if args.naive else [])]
    print(f"proxy overhead ({profile.name} mode); ratio = proxied / direct (throughput: higher is better, latency and RSS: lower)")
    for line in table(report, targets):
        print(line)
    for note in report.notes:
        print(f"note: {note}")
    for line in target_lines(report, targets):
        print(line)
    if "tracing" in parts:
        print("tracing on against off (bench/tracing_overhead.py; 'vs off': traced / untraced router)", flush=True)
        try:
            for line in measure_tracing(profile):
                print(line)
        except KeyboardInterrupt:
            print("interrupted: every process the benchmark started is stopped", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
