"""The replication lag benchmark runs end to end in its short mode (as CI runs it).

Only that it completes and prints its figures is asserted: timings on a
shared machine say nothing about correctness.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "replication_lag.py"
RUN_SECONDS = 240
NUMBER = r"[\d,]+"


def run_short_benchmark() -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRAEFECT_")}
    process = subprocess.Popen(
        [sys.executable, str(BENCH), "--short"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmark then stops every process it started.
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        pytest.fail(f"{BENCH.name} --short did not finish within {RUN_SECONDS} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.timeout(RUN_SECONDS + 60)
def test_short_benchmark_completes_and_prints_its_figures() -> None:
    result = run_short_benchmark()

    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert out.startswith("machine: "), out
    assert "checked that Redis tracks none of its repositories" in result.stderr, (
        "the run without replication verified that plugins.blocked works"
    )
    for row in (
        rf"no replication +{NUMBER} +0 +{NUMBER} ms +{NUMBER} +- +- +-",
        rf"replication, OK at once \(ack_replicas = 0\) +{NUMBER} +\d+ +{NUMBER} ms +{NUMBER} "
        rf"+{NUMBER} ms +{NUMBER} +{NUMBER}",
        rf"replication, default settings +{NUMBER} +\d+ +{NUMBER} ms +{NUMBER} +{NUMBER} ms",
        r"Redis commands per mutation",
        r"replication, default settings +-?\d+\.\d +-?\d+\.\d +\d+/s",
        r"sent: evalsha",
        r"CPU per mutation",
        r"no replication +[\d.]+ writes/s +1\.00x",
        r"replication, OK at once \(ack_replicas = 0\) +[\d.]+ writes/s +\d+\.\d\dx",
        r"target: lag p99 < 1 s at 20 writes/s, replication, OK at once .*: (met|NOT met) \([\d.]+ s\)",
    ):
        assert re.search(row, out), f"no line matching {row!r} in:\n{out}"
