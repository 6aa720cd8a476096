"""The proxy benchmark runs end to end in its short mode (as CI runs it).

Only that it completes and prints its figures and ratios is asserted:
timings on a shared machine say nothing about correctness.
"""

from __future__ import annotations

import re

import pytest

from tests.support.bench import run_short_benchmark

RUN_SECONDS = 240
RATIO = r"\d+\.\d\dx"


@pytest.mark.slow
@pytest.mark.timeout(RUN_SECONDS + 60)
def test_short_benchmark_completes_and_prints_ratios() -> None:
    result = run_short_benchmark("proxy_overhead.py", within=RUN_SECONDS)

    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert out.startswith("machine: "), out
    for row in (
        r"RepositoryExists, 1 caller +calls/s",
        r"RepositoryExists, 32 callers +calls/s",
        r"RepositoryExists, 32 callers +p99 ms",
        r"FindCommit, 32 callers +calls/s",
        r"GetBlob \d+ MB +MB/s",
        r"clone \d+ MB \(PostUploadPack v2\) +MB/s",
    ):
        # direct, then for each router (1 and 2 processes) its figure and ratio
        assert re.search(rf"^{row} .*{RATIO} .*{RATIO}$", out, re.MULTILINE), f"no ratio line for {row!r}:\n{out}"
    assert re.search(r"^RSS growth, \d+ MB clone +MB ", out, re.MULTILINE), out
    assert len(re.findall(r"^target .* -> (met|NOT met)$", out, re.MULTILINE)) == 6, out
    # ... and the cost of tracing, each set-up against the untraced router
    assert "tracing on against off" in out, out
    for setup in ("off", "recorded", "console", "otlp"):
        row = rf"^RepositoryExists +16 +{setup} +\d+ +[\d.]+ +[\d.]+ +\d+\.\d\d +\d+ +\d+\.\d\d$"
        assert re.search(row, out, re.MULTILINE), f"no tracing row for {setup!r}:\n{out}"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_child_watcher_benchmark_completes_and_prints_ratios() -> None:
    result = run_short_benchmark("child_watcher.py", within=90)

    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert out.startswith("machine: "), out
    for callers in ("1 caller", "32 callers"):
        for figure in ("calls/s", "node CPU us/call"):
            row = rf"^{callers}, {figure} +\d+ +\d+ +{RATIO}$"
            assert re.search(row, out, re.MULTILINE), f"no ratio line for {callers}, {figure}:\n{out}"
