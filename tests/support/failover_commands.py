"""The operator commands (`praefect failover`, `accept-dataloss`, `metadata`)
as processes, and repository state set up in Redis for them.

    status, output = await praefect(settings_file, "failover", "--to", "gitaly-2")
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.state import RepositoryStore
from tests.support.failover_cluster import NAMES, VS
from tests.support.processes import PRAEFECT
from tests.support.router import clean_env

#: how long a test waits for a command
COMMAND_TIMEOUT = 30


async def start_praefect(settings_file: Path, *args: str) -> asyncio.subprocess.Process:
    """`praefect ARGS --config SETTINGS_FILE`, its stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        *PRAEFECT, *args, "--config", str(settings_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**clean_env(), "COLUMNS": "200"},  # rich would wrap table cells at 80
    )


async def praefect(settings_file: Path, *args: str) -> tuple[int, str]:
    """Run `praefect ARGS --config SETTINGS_FILE`: its exit status, and its stdout then its stderr."""
    process = await start_praefect(settings_file, *args)
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    return process.returncode or 0, out.decode() + err.decode()


async def repository_after_writes(
    store: RepositoryStore,
    path: str,
    *,
    writes: int,
    generations: Mapping[str, int],
    primary: str = "gitaly-1",
    assigned: Sequence[str] = NAMES,
) -> None:
    """Track ``path`` with ``primary``, record ``writes`` writes from it, then
    set these replicas' ``generations``."""
    await store.track_repository(VS, path, primary=primary, assigned=assigned)
    for _ in range(writes):
        await store.record_mutation(VS, path, change=ChangeType.UPDATE, source=primary, assigned=assigned)
    for name, generation in generations.items():
        await store.set_replica_generation(VS, path, name, generation)
