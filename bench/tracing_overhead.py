"""What tracing costs the router: the same calls with tracing off and on.

    .venv/bin/python bench/tracing_overhead.py            # a few seconds per figure
    .venv/bin/python bench/tracing_overhead.py --short    # seconds in all (CI)

One run starts a real storage node (`praefect node serve`, never traced) and,
one after the other, real routers in front of it, each in a process of its
own with one tracing set-up:

- ``off``: no tracer provider, what ``tracing.exporter = "none"`` gives;
- ``recorded``: every call sampled (100 %), spans built and ended, then
  dropped: the instrumentation's own cost;
- ``console``: every call sampled, each span written as JSON (to /dev/null);
- ``otlp``: every call sampled, spans batched and sent over OTLP/gRPC to a
  sink process that discards them (the production set-up).

For each it measures unary throughput, p50/p99 latency and the router
process's CPU time per call (user + system, all its threads, from
/proc/PID/stat) at 1 and 16 concurrent callers on RepositoryExists
(router-bound: the node answers without git) and FindCommit (a git process
per call), in rounds (every set-up back to back in each round), and prints
the medians and each set-up's throughput and CPU per call relative to
``off``. CPU per call is the figure to trust on a busy machine: throughput
moves with whatever else runs, the router's own work per call much less.
The load average before and after is printed with the figures. Everything
it started is stopped by pid on exit.

Helper modes (run by the benchmark itself): ``--serve-router SETTINGS
--tracing MODE`` and ``--otlp-sink``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.protos.gitaly import commit_pb2, repository_pb2, shared_pb2
from praefect.settings import to_toml

MODES = ("off", "recorded", "console", "otlp")
NODE = "gitaly-1"
VIRTUAL_STORAGE = "praefect"
NODE_TOKEN = "bench-node-token"
ROUTER_TOKEN = "bench-router-token"
RELATIVE_PATH = "bench/repo.git"
LISTENING = re.compile(r"^praefect [\w-]+ listening on (\S+)")
START_SECONDS = 30.0


# -- helper processes -------------------------------------------------------------------


def serve_router(settings_file: Path, mode: str) -> None:
    """Run a router with tracing ``mode`` until SIGTERM (a helper process)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from praefect.core.router_config import RouterConfig
    from praefect.core.server import RouterServer
    from praefect.settings import load_config

    settings = load_config(settings_file)
    if mode != "off":
        provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create({"service.name": "praefect-router"}))
        if mode == "console":
            devnull = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=devnull)))
        elif mode == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["BENCH_OTLP"])))
        trace.set_tracer_provider(provider)
    asyncio.run(RouterServer(RouterConfig(settings)).serve())


def otlp_sink() -> None:
    """Accept OTLP trace exports and drop them (a helper process)."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request: object, context: object) -> object:
            return trace_service_pb2.ExportTraceServiceResponse()

    async def run() -> None:
        server = aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"praefect otlp-sink listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    asyncio.run(run())


# -- processes ---------------------------------------------------------------------------


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    address: str
    output: list[str]


class Processes:
    """Starts processes that print a ``listening on`` line; stops them all by group."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[Started] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Started:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env or self.env,
            start_new_session=True,
        )
        output: list[str] = []
        found: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace")
                if len(output) < 200:  # keep the start, not a flood of logs
                    output.append(line)
                match = LISTENING.search(line)
                if match and not ready.is_set():
                    found.append(match.group(1))
                    ready.set()

        threading.Thread(target=pump, name=f"{name}-output", daemon=True).start()
        started = Started(name, process, "", output)
        self.started.append(started)
        deadline = time.monotonic() + START_SECONDS
        while not ready.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {START_SECONDS:.0f} s:\n{''.join(output)}")
        started.address = found[0]
        return started

    def stop(self, started: Started) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.process.pid, signal.SIGTERM)
        try:
            started.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.process.pid, signal.SIGKILL)
            started.process.wait(5)
        if started in self.started:
            self.started.remove(started)

    @contextlib.contextmanager
    def running(self) -> Iterator[Processes]:
        try:
            yield self
        finally:
            for started in reversed(list(self.started)):
                self.stop(started)


def seed(storage: Path, scratch: Path, env: dict[str, str]) -> None:
    """A bare repository with a few commits at ``storage/RELATIVE_PATH``."""
    work = scratch / "work"
    work.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)

    run("init", "-q", "-b", "main")
    for index in range(5):
        (work / f"file-{index}.txt").write_text(f"content {index}\n" * 100)
        run("add", ".")
        run("commit", "-q", "-m", f"commit {index}")
    target = storage / RELATIVE_PATH
    target.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(target)], env=env, check=True)


# -- load ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    calls_per_second: float
    p50_ms: float
    p99_ms: float
    #: the router's CPU time per call, microseconds (nan where /proc is missing)
    cpu_us_per_call: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and all its threads (Linux); nan elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    # the command name (field 2) may hold spaces: count fields after its ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


async def measure(address: str, method: str, request: bytes, callers: int, seconds: float, pid: int) -> Figure:
    metadata = (bearer_metadata(ROUTER_TOKEN),)
    latencies: list[float] = []
    async with aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method)
        for _ in range(20):  # warm up: connection, handler caches
            await call(request, metadata=metadata)
        cpu_before = cpu_seconds(pid)
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            while (started := time.perf_counter()) < stop_at:
                await call(request, metadata=metadata)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - began
        # The otlp router exports every 100 ms (OTEL_BSP_SCHEDULE_DELAY, set
        # by run()): the export of all but the last moment's spans is in here.
        cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    return Figure(
        calls_per_second=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        cpu_us_per_call=cpu / len(latencies) * 1e6,
    )


def requests() -> dict[str, tuple[str, bytes]]:
    repository = shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path=RELATIVE_PATH)
    return {
        "RepositoryExists": (
            "/gitaly.RepositoryService/RepositoryExists",
            repository_pb2.RepositoryExistsRequest(repository=repository).SerializeToString(),
        ),
        "FindCommit": (
            "/gitaly.CommitService/FindCommit",
            commit_pb2.FindCommitRequest(repository=repository, revision=b"main").SerializeToString(),
        ),
    }


# -- the benchmark ----------------------------------------------------------------------------


def instrumented() -> bool:
    import inspect

    import praefect.core.server

    return "RouterTelemetry" in inspect.getsource(praefect.core.server)


def run(args: argparse.Namespace) -> None:
    if not instrumented():
        print("warning: core/server.py does not install RouterTelemetry yet: every mode measures an untraced router")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PRAEFECT_", "OTEL_"))}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_AUTHOR_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.com")
    praefect = [sys.executable, "-m", "praefect.core.cli"]
    this = [sys.executable, str(Path(__file__).resolve())]
    figures: dict[tuple[str, str, int], list[Figure]] = {}
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as scratch, Processes(env).running() as processes:
        storage = Path(scratch) / "storage"
        seed(storage, Path(scratch), env)
        node = processes.start("node", [*praefect, "node", "serve", "--listen", "127.0.0.1:0",
                                        "--token", NODE_TOKEN, "--storage", f"{NODE}={storage}"])
        sink = processes.start("otlp sink", [*this, "--otlp-sink"])
        settings = Path(scratch) / "router.toml"
        settings.write_text(to_toml({
            "listen_addr": "127.0.0.1:0",
            "auth_token": ROUTER_TOKEN,
            "logging": {"level": "warning"},
            "plugins": {"blocked": ["praefect.plugins.replication"]},
            "virtual_storages": {VIRTUAL_STORAGE: {NODE: {
                "address": f"tcp://{node.address}", "token": NODE_TOKEN, "primary": True}}},
        }))
        for round_index in range(args.rounds):
            for mode in args.modes:
                router = processes.start(
                    f"router ({mode})",
                    [*this, "--serve-router", str(settings), "--tracing", mode],
                    # exports every 100 ms rather than 5 s: the CPU they take falls
                    # in the measured seconds
                    env={**env, "BENCH_OTLP": f"http://{sink.address}", "OTEL_BSP_SCHEDULE_DELAY": "100"},
                )
                for name, (method, request) in requests().items():
                    for callers in args.callers:
                        figure = asyncio.run(
                            measure(router.address, method, request, callers, args.seconds, router.process.pid)
                        )
                        figures.setdefault((name, mode, callers), []).append(figure)
                processes.stop(router)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    report(figures, args)
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_average()}; CPUs: {os.cpu_count()}")


def report(figures: dict[tuple[str, str, int], list[Figure]], args: argparse.Namespace) -> None:
    print()
    print(
        f"{'call':<18}{'callers':>8}{'tracing':>10}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs off':>8}{'CPU us/call':>13}{'vs off':>8}"
    )
    for name in requests():
        for callers in args.callers:
            base_rate = base_cpu = None
            if "off" in args.modes:
                base_runs = figures[(name, "off", callers)]
                base_rate = statistics.median(f.calls_per_second for f in base_runs)
                base_cpu = statistics.median(f.cpu_us_per_call for f in base_runs)
            for mode in args.modes:
                runs = figures[(name, mode, callers)]
                rate = statistics.median(f.calls_per_second for f in runs)
                p50 = statistics.median(f.p50_ms for f in runs)
                p99 = statistics.median(f.p99_ms for f in runs)
                cpu = statistics.median(f.cpu_us_per_call for f in runs)
                rate_ratio = f"{rate / base_rate:.2f}" if base_rate else "-"
                cpu_ratio = f"{cpu / base_cpu:.2f}" if base_cpu else "-"
                print(
                    f"{name:<18}{callers:>8}{mode:>10}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}"
                    f"{rate_ratio:>8}{cpu:>13.0f}{cpu_ratio:>8}"
                )
    print(
        "\n'vs off': throughput, then the router's CPU time per call, relative to the "
        "untraced router (medians of the rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="one short round (CI)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per figure")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--serve-router", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tracing", choices=MODES, default="off", help=argparse.SUPPRESS)
    parser.add_argument("--otlp-sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_router is not None:
        serve_router(args.serve_router, args.tracing)
        return
    if args.otlp_sink:
        otlp_sink()
        return
    if args.short:
        args.rounds, args.seconds = 1, 1.0
    run(args)


if __name__ == "__main__":
    main()
