"""Per-repository primary elections and write acknowledgements, atomic in Redis.

Who may become primary
----------------------
A replica qualifies when it is healthy, assigned, and has every write a
client was told succeeded: its generation is at least the repository's
``acked`` generation (see :mod:`praefect.plugins.failover.scripts`). Among
those the current primary stays if it qualifies, else the replica with the
highest generation wins. With no qualifying replica the repository is
read-only until its primary returns or an operator runs ``praefect
accept-dataloss``.

Why ``acked`` and not "at the repository's generation": the generation is
bumped when the primary's OK is recorded, before the client sees it, and
replication is asynchronous. Under a stream of writes the replicas are
almost always a write or two behind, so "a replica at the current
generation" would rarely exist when a primary dies mid-stream. The writes a
replica lacks beyond ``acked`` were never acknowledged (their clients got an
error or nothing), so promoting it loses no acknowledged write. Writes are
acknowledged only once ``failover.ack_replicas`` healthy replicas have them
(:class:`WriteAcknowledger`), which is what makes such a replica exist.

When the winner is behind the repository's generation, the election
declares it authoritative right after (a new generation, replication from it
to the others), so the replicas converge on the new primary and drop the
unacknowledged writes only the old primary had.

Copies running into a candidate
-------------------------------
A replication worker holds a *copy lease* on (repository, target) while
ReplicateRepository runs into the target (see
:meth:`~praefect.plugins.replication.state.RepositoryStore.take_copy_lease`).
The copy is a mirror fetch: it overwrites and prunes the target's refs. A
node elected in the middle of one would take writes as primary that the end
of the copy then undoes, so the election skips a candidate with an
unexpired lease. When every qualifying candidate has one, the election says
``busy`` rather than ``none``: the repository is not read-only, it only has
to wait until a copy ends (the lease is released then, or expires after the
copy's deadline if its worker died), and the callers elect again then.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc

from praefect.core.errors import CallError
from praefect.core.mutation import Mutation
from praefect.core.routing_types import NodeRef
from praefect.plugins.failover.scripts import FailoverScripts
from praefect.plugins.replication.cache import StateCache
from praefect.plugins.replication.state import (
    PrimaryMoved,
    RepositoryMetadata,
    RepositoryStore,
    StateChange,
)

__all__ = [
    "Election",
    "Elector",
    "MovedBeforeAcknowledgement",
    "MovedListener",
    "WriteAcknowledger",
    "busy_message",
    "failover_candidate",
    "read_only_message",
]

log = logging.getLogger("praefect.failover")

#: ``await listener(vs, path, node, primary)``: a write reached ``node`` after
#: ``primary`` replaced it
MovedListener = Callable[[str, str, str, str], Awaitable[None]]


class MovedBeforeAcknowledgement(CallError):
    """A recorded write whose node stopped being the primary before it was acknowledged.

    ABORTED, like a write refused before it is recorded
    (:class:`~praefect.plugins.replication.state.PrimaryMoved`): the client
    retries it on the new primary.
    """

    code = grpc.StatusCode.ABORTED


def busy_message(relative_path: str, primary: str, busy: Iterable[str]) -> str:
    """What a mutator gets when the replicas that could take over are still being copied into."""
    nodes = ", ".join(busy) or "the replica that can take over"
    return (
        f"the primary of {relative_path!r}, {primary}, is down and a copy (replication) into "
        f"{nodes} is still running: it cannot become primary until the copy ends; retry the "
        "call in a moment"
    )


def read_only_message(relative_path: str, primary: str) -> str:
    """What a mutator of a repository without a qualifying replica gets."""
    return (
        f"repository {relative_path!r} is read-only: no up-to-date replica is healthy; see "
        f"`praefect dataloss` (its primary {primary} is down: bring it back, or make a "
        "replica authoritative with `praefect accept-dataloss`)"
    )


def failover_candidate(
    metadata: RepositoryMetadata, healthy: Iterable[NodeRef]
) -> NodeRef | None:
    """The healthy assigned replica with the highest generation (earlier node on ties).

    Decided from memory for routing; the election in Redis has the last word
    (it also requires the acknowledged generation, which the cache does not hold).
    """
    best: NodeRef | None = None
    best_generation = -1
    for node in healthy:
        if node.name not in metadata.assigned:
            continue
        generation = metadata.replica_generation(node.name)
        if generation > best_generation:
            best, best_generation = node, generation
    return best


@dataclass(frozen=True, slots=True)
class Election:
    """The outcome of one election.

    ``status``: ``ok`` (``primary`` took over from ``previous``), ``unchanged``
    (the primary qualifies), ``none`` (no candidate qualifies: read-only),
    ``busy`` (the only qualifying candidates, ``busy``, have a copy running
    into them: elect again when one ends, at the latest in ``busy_for``
    seconds when their leases expire), ``conflict`` (the primary was not the
    expected one; ``primary`` is the one now) or ``untracked``.
    """

    status: str
    primary: str
    previous: str
    primary_generation: int = -1
    generation: int = -1
    version: int = 0
    busy: tuple[str, ...] = ()
    busy_for: float = 0.0

    @property
    def changed(self) -> bool:
        return self.status == "ok"


class Elector:
    """Runs the election and acknowledgement scripts for one Redis."""

    def __init__(self, store: RepositoryStore, scripts: FailoverScripts) -> None:
        self.store = store
        self.scripts = scripts

    async def elect(
        self,
        virtual_storage: str,
        relative_path: str,
        candidates: Sequence[str],
        *,
        expected: str | None = None,
    ) -> Election:
        """Elect among ``candidates`` (healthy nodes, by preference), atomically.

        ``expected``: only if the primary is still this node (else
        ``conflict``). A winner behind the repository's generation is made
        authoritative afterwards (see the module docstring). Candidates
        being copied into are skipped; ``busy`` when only they qualify.
        """
        keys = self.store.keys(virtual_storage)
        before = expected or ""
        status, primary, version, state, primary_generation, generation, busy, busy_ms = (
            await self.scripts.elect(
                keys=[
                    keys.repository(relative_path), keys.version, keys.changes,
                    keys.copy_leases(relative_path),
                ],
                args=[relative_path, self.store.changes_maxlen, before, *candidates],
            )
        )
        election = Election(
            str(status),
            str(primary or ""),
            before,
            int(primary_generation),
            int(generation),
            int(version),
            tuple(str(name) for name in json.loads(busy)) if busy else (),
            int(busy_ms) / 1000,
        )
        if not election.changed:
            return election
        if self.store.on_change is not None:
            self.store.on_change(
                StateChange.from_state(virtual_storage, relative_path, election.version, state)
            )
        if election.primary_generation < election.generation:
            # The new primary lacks only unacknowledged writes: make its copy
            # the repository's, so the others replicate from it. Only while it
            # is the primary: a later election may have replaced it already,
            # and then that one's winner is the authority.
            try:
                await self.store.set_authoritative(
                    virtual_storage, relative_path, election.primary, only_if_primary=True
                )
            except PrimaryMoved as moved:
                log.info(
                    "%s in %s: not making %s authoritative, %s is the primary now",
                    relative_path, virtual_storage, election.primary, moved.primary,
                )
                return election
            log.info(
                "%s in %s: new primary %s lacked %d unacknowledged change(s); it is now "
                "authoritative",
                relative_path,
                virtual_storage,
                election.primary,
                election.generation - election.primary_generation,
            )
        return election

    async def acknowledge(
        self, virtual_storage: str, relative_path: str, primary: str, generation: int
    ) -> tuple[str, str]:
        """Mark ``generation`` acknowledged if ``primary`` still is the primary.

        Returns ``(status, primary now)``; status ``ok``, ``moved`` or ``untracked``.
        """
        status, current = await self.scripts.acknowledge(
            keys=[self.store.keys(virtual_storage).repository(relative_path)],
            args=[primary, generation],
        )
        return str(status), str(current or "")


class WriteAcknowledger:
    """Holds a write's OK until enough healthy replicas have it; records the acknowledgement.

    Runs in ``on_mutation`` after the replication plugin recorded the write
    (so the state cache knows its generation). It waits until
    ``replicas`` healthy replicas (fewer if fewer are healthy) reached that
    generation, at most ``timeout`` seconds; a repository whose replicas
    missed the deadline is acknowledged at once until one catches up, so a
    broken replica costs one timeout, not one per write. Then it raises the
    repository's ``acked`` generation, unless the primary moved meanwhile:
    then the client gets ABORTED (retry), because the new primary may not
    have the write, and ``on_moved`` repairs what the write left behind.

    A write whose node had stopped being the primary before it was recorded
    never gets here: the replication plugin's recording script refuses it
    (:class:`~praefect.plugins.replication.state.PrimaryMoved`).
    """

    def __init__(
        self,
        cache: StateCache,
        elector: Elector,
        healthy: Callable[[str], Sequence[str]],
        *,
        replicas: int,
        timeout: float,
        on_moved: MovedListener | None = None,
    ) -> None:
        self.cache = cache
        self.elector = elector
        # virtual storage -> names of its healthy nodes
        self.healthy = healthy
        self.replicas = replicas
        self.timeout = timeout
        self.on_moved = on_moved
        # repository -> generation a replica missed the deadline for
        self._lagging: dict[tuple[str, str], int] = {}

    async def acknowledge(self, mutation: Mutation) -> None:
        """After the write is recorded: wait for replicas, then record the acknowledgement."""
        vs, path, primary = mutation.virtual_storage, mutation.relative_path, mutation.primary.name
        metadata = self.cache.get(vs, path)
        if metadata is None:
            return  # deleted (or not tracked): nothing to protect
        if metadata.primary and metadata.primary != primary:
            # Known moved: repair at once rather than wait for replication,
            # which would now copy this node's copy over the primary's.
            await self._moved(vs, path, primary, metadata.primary)
        generation = metadata.replica_generation(primary)
        if generation < 0:
            return
        if self.replicas > 0:
            await self._wait_for_replicas(vs, path, primary, generation)
        status, current = await self.elector.acknowledge(vs, path, primary, generation)
        if status == "moved":
            await self._moved(vs, path, primary, current)

    async def _moved(self, vs: str, path: str, node: str, current: str) -> None:
        if self.on_moved is not None:
            try:
                await self.on_moved(vs, path, node, current)
            except Exception:
                log.exception("repairing %s in %s after its primary moved failed", path, vs)
        raise MovedBeforeAcknowledgement(
            f"the primary of {path!r} moved from {node} to {current} before this write was "
            f"acknowledged; the write may not be on {current}: retry it"
        )

    async def _wait_for_replicas(self, vs: str, path: str, primary: str, generation: int) -> None:
        metadata = self.cache.get(vs, path)
        if metadata is None:
            return
        replicas = [
            name for name in self.healthy(vs) if name != primary and name in metadata.assigned
        ]
        needed = min(self.replicas, len(replicas))
        if needed == 0:
            return

        def have_it(target: int) -> bool:
            current = self.cache.get(vs, path)
            if current is None:
                return True
            count = sum(1 for name in replicas if current.replica_generation(name) >= target)
            return count >= needed

        key = (vs, path)
        lagging = self._lagging.get(key)
        if lagging is not None:
            if not have_it(lagging):
                return
            del self._lagging[key]
        if have_it(generation):
            return
        # asyncio.wait, not asyncio.timeout: on Python 3.11 the latter can turn
        # the client's cancellation into a TimeoutError at the deadline.
        waiter = asyncio.ensure_future(self.cache.wait_until(lambda: have_it(generation)))
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self.timeout)
        finally:
            waiter.cancel()
        if not done:
            self._lagging[key] = generation
            log.warning(
                "%s in %s: no healthy replica reached generation %d within %.1f s; "
                "acknowledging without waiting until one does (failover.ack_timeout)",
                path,
                vs,
                generation,
                self.timeout,
            )
