"""Unary load from client processes: ``callers`` concurrent callers each.

A client process is this file run as a script (a plain subprocess, so that
it imports only gRPC and the token signer, never the benchmark's own
module): it reads its job as one JSON line on stdin, connects, prints
``ready``, waits for ``go`` on stdin (the parent starts every client at
once), runs the callers for the warm-up and the measured window and prints
its result as one JSON line.

Requests are sent pre-serialized and responses kept as bytes (raw
multi-callables without serializers), so that a client spends as little
CPU per call as gRPC allows. Each client opens several channels with a
local subchannel pool, i.e. several connections, so that a router running
several processes on one port (SO_REUSEPORT spreads connections) gets load
on each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from praefect.core.tokens import bearer_metadata

READY_SECONDS = 30.0
MAX_MESSAGE = 64 * 1024 * 1024


def client_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        # A connection per channel, even to the same address.
        ("grpc.use_local_subchannel_pool", 1),
    ]


@dataclass(frozen=True)
class UnaryJob:
    """What one client process does."""

    address: str
    method: str
    request_hex: str
    token: str
    callers: int
    channels: int
    warmup: float
    duration: float


@dataclass(frozen=True)
class UnaryResult:
    """What all client processes measured together."""

    latencies: list[float]  # seconds, of the calls started in the measured window
    cpu_seconds: list[float]  # each client process's CPU time in the window
    watched_cpu: dict[str, float]  # CPU seconds of each watched group of processes in the window

    def rate(self, duration: float) -> float:
        return len(self.latencies) / duration


# -- the client process ------------------------------------------------------------------


async def _client(job: UnaryJob) -> dict[str, Any]:
    request = bytes.fromhex(job.request_hex)
    channels = [aio.insecure_channel(job.address, options=client_options()) for _ in range(job.channels)]
    try:
        calls = [channel.unary_unary(job.method, _registered_method=True) for channel in channels]
        metadata = (bearer_metadata(job.token),)
        # Connect every channel and check the call works before the clock starts.
        for call in calls:
            await asyncio.wait_for(call(request, metadata=metadata), READY_SECONDS)
        print("ready", flush=True)
        go = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), READY_SECONDS * 2)
        if go.strip() != "go":
            raise RuntimeError(f"expected 'go' from the benchmark, got {go!r}")
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + job.warmup
        end = measure_from + job.duration
        latencies: list[float] = []
        errors: list[str] = []
        cpu: list[float] = []

        async def caller(call: Any) -> None:
            perf, now = time.perf_counter, loop.time
            while (started_at := now()) < end:
                before = perf()
                try:
                    await call(request, metadata=metadata)
                except grpc.RpcError as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    if len(errors) > 100:
                        return
                    continue
                if started_at >= measure_from:
                    latencies.append(perf() - before)

        async def cpu_window() -> None:
            await asyncio.sleep(max(0.0, measure_from - loop.time()))
            cpu.append(time.process_time())
            await asyncio.sleep(max(0.0, end - loop.time()))
            cpu.append(time.process_time())

        await asyncio.gather(cpu_window(), *(caller(calls[i % len(calls)]) for i in range(job.callers)))
        return {"latencies": latencies, "errors": errors[:5], "cpu": cpu[1] - cpu[0]}
    finally:
        for channel in channels:
            await channel.close()


def client_main() -> None:
    job = UnaryJob(**json.loads(sys.stdin.readline()))
    print(json.dumps(asyncio.run(_client(job))), flush=True)


# -- the parent's side -------------------------------------------------------------------


def run_unary(
    address: str,
    method: str,
    request: bytes,
    token: str,
    *,
    callers: int,
    processes: int,
    channels_per_process: int,
    warmup: float,
    duration: float,
    watch: Mapping[str, Sequence[int]] | None = None,
) -> UnaryResult:
    """Run ``callers`` callers spread over ``processes`` client processes.

    The CPU time that each group of processes in ``watch`` (name -> pids)
    spends in the measured window is read from /proc, to tell the servers'
    cost per call.
    """
    shares = [callers // processes + (1 if i < callers % processes else 0) for i in range(processes)]
    clients: list[subprocess.Popen[str]] = []
    try:
        for share in shares:
            job = UnaryJob(
                address, method, request.hex(), token, share, min(channels_per_process, share), warmup, duration
            )
            client = subprocess.Popen(
                [sys.executable, str(Path(__file__))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            clients.append(client)
            assert client.stdin is not None
            client.stdin.write(json.dumps(asdict(job)) + "\n")
            client.stdin.flush()
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()  # bounded: the client gives up after READY_SECONDS
            if line.strip() != "ready":
                raise RuntimeError(f"a client process did not get ready for {method} at {address} (exit {client.wait(10)})")
        for client in clients:
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        # Timing a window, not waiting for an event: the clients measure the same one.
        groups = dict(watch or {})
        time.sleep(warmup)
        before = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
        time.sleep(duration)
        after = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
        result = UnaryResult([], [], {name: after[name] - before[name] for name in groups})
        for client in clients:
            out, _ = client.communicate(timeout=warmup + duration + READY_SECONDS)
            if client.returncode != 0 or not out.strip():
                raise RuntimeError(f"a client process for {method} at {address} failed (exit {client.returncode})")
            outcome = json.loads(out)
            if outcome["errors"]:
                raise RuntimeError(f"calls of {method} to {address} failed, e.g. {outcome['errors'][0]}")
            result.latencies.extend(outcome["latencies"])
            result.cpu_seconds.append(outcome["cpu"])
        return result
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait(5)
            for stream in (client.stdin, client.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


if __name__ == "__main__":
    client_main()
