"""What the node's pidfd child watcher saves: the same node with and without it.

    .venv/bin/python bench/child_watcher.py            # the figures of docs/performance.md
    .venv/bin/python bench/child_watcher.py --short    # seconds; CI runs it

On Python 3.11 asyncio waits for each child process in a thread of its own
unless told otherwise; the node starts git for nearly every call, and since
`praefect.core.child_watcher` it waits through pidfds instead. This starts
two real storage nodes over the same seeded repository, one as shipped
(``pidfd``) and one with the watcher switched off before the node's code is
imported (``threaded``), and measures FindCommit (one git process per call)
against each, back to back in every round, at 1 and 32 concurrent callers:
calls per second and the node's CPU per call (all its threads, from /proc).
It prints the medians of the rounds and the ratios pidfd/threaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _machine import cpu_model
from _processes import Launcher, Started
from _seed import git_environment, seed_repository
from _unary_load import run_unary

from praefect.protos.gitaly import commit_pb2, shared_pb2

STORAGE = "gitaly-1"
TOKEN = "bench-node-token"
FIND_COMMIT = "/gitaly.CommitService/FindCommit"
CALLERS = (1, 32)
# The node's own code, with the watcher switched off first: node/server.py
# imports the function by name, so it must be replaced before that import.
THREADED_NODE = (
    sys.executable,
    "-c",
    "import sys, praefect.core.child_watcher as watcher; "
    "watcher.use_pidfd_child_watcher = lambda: False; "
    "from praefect.core.cli import main; sys.exit(main())",
)


@dataclass(frozen=True)
class Profile:
    rounds: int
    warmup: float
    duration: float


PROFILES = {"short": Profile(1, 0.3, 1.0), "full": Profile(5, 1.0, 5.0)}


def start_node(launcher: Launcher, storage: Path, threaded: bool) -> Started:
    args = ["node", "serve", "--listen", "127.0.0.1:0", "--storage", f"{STORAGE}={storage}", "--token", TOKEN]
    if threaded:
        return launcher.start("node (threaded)", args, command=THREADED_NODE)
    return launcher.start("node (pidfd)", args)


def measure(node: Started, request: bytes, callers: int, profile: Profile) -> tuple[float, float]:
    """Calls per second and the node's CPU µs per call."""
    result = run_unary(
        node.address,
        FIND_COMMIT,
        request,
        TOKEN,
        callers=callers,
        processes=1,
        channels_per_process=min(callers, 4),
        warmup=profile.warmup,
        duration=profile.duration,
        watch={"node": node.pids()},
    )
    calls = len(result.latencies)
    if not calls:
        raise RuntimeError(f"no FindCommit call to {node.name} completed in the window")
    return calls / profile.duration, result.watched_cpu["node"] / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="seconds (CI)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 1 short, 5 full)")
    args = parser.parse_args(argv)
    profile = PROFILES["short" if args.short else "full"]
    if args.rounds:
        profile = Profile(args.rounds, profile.warmup, profile.duration)
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"load {load:.2f} at the start",
        flush=True,
    )
    env = {**os.environ, **git_environment()}
    with tempfile.TemporaryDirectory(prefix="bench-watcher-") as work, Launcher(env).running() as launcher:
        storage = Path(work) / "storage"
        seeded = seed_repository(storage, "bench/watch.git", (64 * 1024,), Path(work) / "scratch")
        request = commit_pb2.FindCommitRequest(
            repository=shared_pb2.Repository(storage_name=STORAGE, relative_path=seeded.relative_path),
            revision=b"main",
        ).SerializeToString()
        nodes = {"threaded": start_node(launcher, storage, True), "pidfd": start_node(launcher, storage, False)}
        figures: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for round_number in range(profile.rounds):
            for callers in CALLERS:
                # alternate which node goes first, so neither always runs on a warmer machine
                order = list(nodes) if round_number % 2 == 0 else list(reversed(nodes))
                for name in order:
                    figures.setdefault((name, callers), []).append(measure(nodes[name], request, callers, profile))
            print(f"round {round_number + 1}/{profile.rounds} done (load {os.getloadavg()[0]:.2f})", flush=True)
    print()
    print(f"{'FindCommit':<28} {'threaded':>10} {'pidfd':>10} {'pidfd/threaded':>15}")
    for callers in CALLERS:
        for index, label in ((0, "calls/s"), (1, "node CPU us/call")):
            threaded = statistics.median(f[index] for f in figures[("threaded", callers)])
            pidfd = statistics.median(f[index] for f in figures[("pidfd", callers)])
            row = f"{callers} caller{'s' if callers > 1 else ''}, {label}"
            print(f"{row:<28} {threaded:>10.0f} {pidfd:>10.0f} {pidfd / threaded:>14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
