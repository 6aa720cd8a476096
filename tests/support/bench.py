"""Running a benchmark of bench/ in its short mode, as CI does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def run_short_benchmark(script: str, *, within: float) -> subprocess.CompletedProcess[str]:
    """``bench/<script> --short``; fails the test if it runs longer than ``within`` seconds."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRAEFECT_")}
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / script), "--short"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        stdout, stderr = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmark then stops every process it started.
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        pytest.fail(f"bench/{script} --short did not finish within {within:.0f} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
