"""The replication lag benchmark runs end to end in its short mode (as CI runs it).

Only that it completes and prints its figures is asserted: timings on a
shared machine say nothing about correctness.
"""

from __future__ import annotations

import re

import pytest

from tests.support.bench import run_short_benchmark

RUN_SECONDS = 240
NUMBER = r"[\d,]+"


@pytest.mark.slow
@pytest.mark.timeout(RUN_SECONDS + 60)
def test_short_benchmark_completes_and_prints_its_figures() -> None:
    result = run_short_benchmark("replication_lag.py", within=RUN_SECONDS)

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
