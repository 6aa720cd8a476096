"""`praefect demo --scenario`: the whole scenario, as CI runs it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.e2e import DemoProcess, descendants, still_alive
from tests.support.replication_cluster import short_tmp_dir

STEPS = (
    "start", "create", "push", "clone", "checksums", "kill primary",
    "failover", "push again", "restart", "converge",
)


@pytest.fixture
def scenario() -> Iterator[DemoProcess]:
    with short_tmp_dir("pre2e-") as workdir:
        process = DemoProcess(["--scenario", "--workdir", str(workdir / "demo")])
        try:
            yield process
        finally:
            process.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_every_step_of_the_scenario_holds(scenario: DemoProcess) -> None:
    scenario.wait_for_line(r"^✓ start ", timeout=60)
    started = descendants(scenario.process.pid)
    status = scenario.wait(timeout=85)
    assert status == 0, scenario.output
    for step in STEPS:
        line = next((line for line in scenario.lines if re.match(rf"^. {step} +\d+\.\d s  ", line)), None)
        assert line is not None and line.startswith("✓"), f"step {step!r}:\n{scenario.output}"
    assert re.search(r"^scenario passed: 10 steps in \d+\.\d s$", scenario.output, re.MULTILINE)
    assert re.search(r"push +\d+\.\d s  \d+ commits, \d+ branches, \d+ tags", scenario.output)
    assert re.search(r"converge +\d+\.\d s  [0-9a-f]{12} on gitaly-1, gitaly-2, gitaly-3", scenario.output)
    assert not still_alive(started, timeout=10)
