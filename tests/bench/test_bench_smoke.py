"""The proxy benchmark runs end to end in its short mode (as CI runs it).

Only that it completes and prints its figures and ratios is asserted:
timings on a shared machine say nothing about correctness.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "proxy_overhead.py"
RUN_SECONDS = 120
RATIO = r"\d+\.\d\dx"


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
        pytest.fail(f"bench/proxy_overhead.py --short did not finish within {RUN_SECONDS} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.timeout(RUN_SECONDS + 60)
def test_short_benchmark_completes_and_prints_ratios() -> None:
    result = run_short_benchmark()

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
