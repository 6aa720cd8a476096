"""bench/tracing_overhead.py runs end to end in its short mode (as CI runs it).

Only that it completes and prints every set-up's figures relative to the
untraced router is asserted: timings on a shared machine say nothing about
correctness.
"""

from __future__ import annotations

import re

import pytest

from tests.support.bench import run_short_benchmark

RUN_SECONDS = 150


@pytest.mark.slow
@pytest.mark.timeout(RUN_SECONDS + 60)
def test_short_benchmark_prints_the_cost_of_each_tracing_setup() -> None:
    result = run_short_benchmark("tracing_overhead.py", within=RUN_SECONDS)

    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    out = result.stdout
    for call in ("RepositoryExists", "FindCommit"):
        for callers in (1, 16):
            for setup in ("off", "recorded", "console", "otlp"):
                row = rf"^{call} +{callers} +{setup} +\d+ +[\d.]+ +[\d.]+ +\d+\.\d\d +\d+ +\d+\.\d\d$"
                assert re.search(row, out, re.MULTILINE), f"no {call}/{callers}/{setup} row:\n{out}"
    assert re.search(r"^load average \(1, 5, 15 min\) before: ", out, re.MULTILINE), out
