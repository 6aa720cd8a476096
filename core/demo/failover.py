"""Moving a repository's primary away from a node that went down.

The router fails over by itself when ``failover.enabled`` is on: its health
checks see the node down and another up-to-date replica becomes the
repository's primary in Redis. Where that does not happen in time, the
demo asks for it with ``praefect failover``, as an operator would, if this
praefect has that command.
"""

from __future__ import annotations

import asyncio
import time

from praefect.core.demo.clients import ClusterClients
from praefect.core.demo.cluster import VIRTUAL_STORAGE, DemoCluster
from praefect.core.demo.processes import PRAEFECT

__all__ = ["AUTOMATIC_WAIT", "FailoverUnavailable", "fail_over", "manual_failover_available"]

#: seconds the demo waits for the router's own failover
AUTOMATIC_WAIT = 15.0


class FailoverUnavailable(RuntimeError):
    """No failover happened and none could be asked for; the message says why."""


def manual_failover_available() -> bool:
    """True when this praefect has the ``praefect failover`` command."""
    from praefect.core.cli import main

    return "failover" in main.commands


async def _new_primary(
    clients: ClusterClients, relative_path: str, down_node: str, time_limit: float
) -> str | None:
    deadline = time.monotonic() + time_limit
    while True:
        metadata = await clients.repository(relative_path)
        if metadata is not None and metadata.primary and metadata.primary != down_node:
            return metadata.primary
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)


async def _praefect(*args: str, time_limit: float = 30.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *PRAEFECT, *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), time_limit)
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace").strip()


async def fail_over(
    cluster: DemoCluster,
    clients: ClusterClients,
    relative_path: str,
    down_node: str,
    *,
    automatic_wait: float = AUTOMATIC_WAIT,
) -> str:
    """Wait for (or ask for) another primary of ``relative_path``; says how it happened.

    Raises :class:`FailoverUnavailable` when neither the router nor
    ``praefect failover`` moved the primary.
    """
    began = time.monotonic()
    if cluster.settings.failover.enabled:
        primary = await _new_primary(clients, relative_path, down_node, automatic_wait)
        if primary is not None:
            return (
                f"automatic: {primary} became the primary of {relative_path} "
                f"{time.monotonic() - began:.1f} s after {down_node} went down"
            )
    if not manual_failover_available():
        raise FailoverUnavailable(
            f"no other node became the primary of {relative_path} within {automatic_wait:.0f} s "
            f"of {down_node} going down, and this praefect has no `praefect failover` command "
            "to ask for it: failover is not built yet"
        )
    metadata = await clients.repository(relative_path)
    candidates = [
        name for name in (metadata.up_to_date if metadata is not None else ()) if name != down_node
    ]
    if not candidates:
        raise FailoverUnavailable(
            f"no automatic failover within {automatic_wait:.0f} s, and no other replica of "
            f"{relative_path} is up to date to take over (`praefect dataloss` lists it)"
        )
    status, output = await _praefect(
        "failover", "--config", str(cluster.settings_file),
        "--virtual-storage", VIRTUAL_STORAGE, "--relative-path", relative_path, "--to", candidates[0],
    )
    if status != 0:
        raise FailoverUnavailable(
            f"no automatic failover within {automatic_wait:.0f} s, and `praefect failover "
            f"--to {candidates[0]}` failed with status {status}: {output}"
        )
    primary = await _new_primary(clients, relative_path, down_node, 10.0)
    if primary is None:
        raise FailoverUnavailable(
            f"`praefect failover --to {candidates[0]}` succeeded but {relative_path}'s primary "
            f"is still {down_node}: {output}"
        )
    return f"manual (praefect failover --to {primary}): {primary} became the primary of {relative_path}"
