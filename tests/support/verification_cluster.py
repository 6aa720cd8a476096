"""Replica verification test support: repositories on real nodes, a verifier on real Redis.

    await tracked_everywhere(store, nodes, "g/app.git")   # on every node's disk, all up to date
    async with running_verifier(store, clients, settings=FAST) as verifier:
        await mark(store, nodes, ["g/app.git"])
        checks = await verifier.run_once()

The verifier is driven pass by pass (``run_once``), not by its background
loop, so a test decides when a pass happens.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterable, Mapping

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.cache import StateCache
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.verification import (
    Check,
    VerificationSettings,
    VerificationWorker,
)
from praefect.plugins.replication.verification_store import VerificationStore
from tests.support.replication_cluster import VS, ReplicaNode, make_bare_repo

#: a verifier that re-verifies after an hour: within a test, what it
#: verified is not due again unless marked
FAST = VerificationSettings(
    interval=3600.0, batch_size=25, lease=5.0, call_timeout=2.0, pass_interval=0.05,
    probe_timeout=1.0,
)


async def tracked_everywhere(
    store: RepositoryStore,
    nodes: Mapping[str, ReplicaNode],
    path: str,
    *,
    primary: str | None = None,
    generation: int = 1,
    commits: int = 2,
) -> None:
    """``path`` with the same refs on every node's disk; every replica at ``generation``."""
    names = list(nodes)
    primary = primary or names[0]
    bare = make_bare_repo(nodes[primary].storage, path, commits)
    for name in names:
        if name != primary:
            target = nodes[name].repo(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(bare, target, symlinks=True)
    await store.track_repository(VS, path, primary=primary, assigned=names)
    for _ in range(generation):
        await store.record_mutation(VS, path, change=ChangeType.UPDATE, source=primary, assigned=names)
    for name in names:
        if name != primary:
            await store.set_replica_generation(VS, path, name, generation)


async def mark(store: RepositoryStore, nodes: Iterable[str], paths: Iterable[str]) -> None:
    """What ``praefect verify`` does: these replicas are due at once.

    (A replica a worker sees get its generation is first due one interval
    later: the write or copy that gave it one had just succeeded.)
    """
    await VerificationStore(store).mark(VS, [(node, path) for node in nodes for path in paths])


def checked(checks: Iterable[Check]) -> dict[tuple[str, str], str]:
    """(node, path) -> result of every check of a pass."""
    return {(check.node, check.relative_path): check.result for check in checks}


@contextlib.asynccontextmanager
async def running_verifier(
    store: RepositoryStore,
    clients: NodeClients,
    *,
    settings: VerificationSettings = FAST,
    own_store: bool = False,
) -> AsyncIterator[VerificationWorker]:
    """A verifier with its own state cache on ``store``'s Redis (not started: call ``run_once``).

    ``own_store``: a store (and scripts) of its own on the same client, as
    another router would have; else it shares ``store``, whose changes then
    reach its cache at once.
    """
    verifier_store = RepositoryStore(store.client) if own_store else store
    cache = StateCache(verifier_store, [VS])
    verifier_store.on_change = cache.apply
    verifier = VerificationWorker(verifier_store, cache, clients, settings=settings)
    cache.subscribe(verifier.changed)
    await cache.start()
    try:
        yield verifier
    finally:
        await verifier.stop()
        await cache.stop()
        if not own_store:
            store.on_change = None
