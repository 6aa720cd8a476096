"""Failover inside one router: health checks, elections, routing around a down primary.

:class:`FailoverRuntime` is what the plugin's ``startup`` builds on top of
the replication runtime (its Redis client, repository store, state cache
and router id). Elections happen in three places, all through the same
atomic script, so duplicates are harmless:

- at once, for every repository whose primary is a node that just went
  down, on the router that recorded the change of the shared health view
  (a background task, so the health checks go on);
- in a background sweep on every router, for repositories whose primary is
  still down (the router that should have done it died, a repository got
  a replica back, ...);
- lazily at routing: ``route`` is synchronous and may not touch Redis, so it
  picks the most up-to-date healthy replica from memory and leaves the
  election to ``before_mutation``, which runs before the node sees the
  call. Reads go to that replica without an election.

Why not elect only at routing time: the first write after a failure would
pay for the election, and repositories nobody writes to would keep a dead
primary, which every later read or write must route around. Why not only
on node down: the router that records the change may die before it is
done.

An election whose only qualifying candidates have a copy running into them
answers ``busy`` (see :mod:`praefect.plugins.failover.election`). A write
waiting for it elects again as soon as the copy ends: its wait ends with
the copy, with the client's deadline (gRPC cancels the call) or when the
copy's lease expires, whichever comes first. Background elections wait at
most one sweep interval and leave the rest to the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from praefect.core.call import Call
from praefect.core.cluster import Cluster
from praefect.core.errors import FailedPrecondition, Unavailable
from praefect.core.methods import Operation
from praefect.core.mutation import ChangeType, change_type_for
from praefect.core.routing_types import NodeRef, RouteDecision
from praefect.core.stash import StashKey
from praefect.plugins.failover.election import (
    Election,
    Elector,
    WriteAcknowledger,
    busy_message,
    failover_candidate,
    read_only_message,
)
from praefect.plugins.failover.health import HealthChecker
from praefect.plugins.failover.votes import HealthVotes
from praefect.plugins.replication.redis_io import raise_if_cancelling
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.plugins.replication.state import PrimaryMoved

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["PLANNED", "FailoverRuntime", "PlannedElection"]

log = logging.getLogger("praefect.failover")

#: a client header asking that accessors go to the primary only (Gitaly's name)
ACCESSOR_POLICY_HEADER = "gitaly-route-repository-accessor-policy"
#: elections at the same time during a bulk failover
_CONCURRENCY = 16
#: the background sweep runs this many health intervals apart (at least 2 s)
_SWEEP_INTERVALS = 5
#: first and longest pause (s) between elections that wait for a copy to end
_BUSY_POLL_FIRST = 0.01
_BUSY_POLL_MAX = 0.1


@dataclass(frozen=True, slots=True)
class PlannedElection:
    """``route`` sent a mutator to ``node`` because ``expected``, the primary, is down."""

    expected: str
    node: NodeRef


#: set by ``route`` on a mutator it sent to a replica because the primary is down
PLANNED = StashKey[PlannedElection]()


class FailoverRuntime:
    """Health checks and failover of one router."""

    def __init__(self, router: Router, replication: ReplicationRuntime) -> None:
        self.router = router
        self.replication = replication
        settings = router.settings.failover
        self.enabled = settings.enabled
        self.votes = HealthVotes(replication.client, window=settings.vote_window)
        self.elector = Elector(replication.store, self.votes.scripts)
        self.acknowledger = WriteAcknowledger(
            replication.cache,
            self.elector,
            self._healthy_names,
            replicas=settings.ack_replicas,
            timeout=settings.ack_timeout,
            on_moved=self.repair_after_move,
        )
        self.checker = HealthChecker(
            router,
            self.votes,
            router_id=replication.router_id,
            interval=settings.health_check_interval,
            health_timeout=settings.health_check_timeout,
            probe_timeout=settings.probe_timeout,
            on_transition=self._on_transition,
        )
        self.sweep_interval = max(2.0, _SWEEP_INTERVALS * settings.health_check_interval)
        # repository -> (state version, healthy nodes) when an election found
        # no qualifying replica: the same question gets the same answer
        self._read_only: dict[tuple[str, str], tuple[int, frozenset[str]]] = {}
        self._elections: dict[tuple[str, str], asyncio.Task[Election | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    @property
    def cluster(self) -> Cluster:
        return self.router.cluster

    def _healthy_names(self, virtual_storage: str) -> list[str]:
        return [node.name for node in self.cluster.healthy_nodes(virtual_storage)]

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.checker.start()
        if self.enabled:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="failover-sweep")

    async def stop(self) -> None:
        await self.checker.stop()
        tasks = [
            *([self._sweeper] if self._sweeper else []),
            *self._background,
            *self._elections.values(),
        ]
        self._sweeper = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ----------------------------------------------------------- routing

    def route(self, call: Call, cluster: Cluster) -> RouteDecision | None:
        """Route around a down primary; None when the primary is up (default routing)."""
        repository = call.repository
        if repository is None:
            return None
        vs, path = repository.virtual_storage, repository.relative_path
        primary = cluster.primary(vs, path)
        if cluster.is_healthy(primary):
            return None
        operation = call.method.operation
        if operation is Operation.MAINTENANCE:
            return None
        healthy = cluster.healthy_nodes(vs)
        metadata = self.replication.cache.get(vs, path)
        if metadata is None:
            if (
                self.enabled
                and operation is Operation.MUTATOR
                and change_type_for(call.method.name) is ChangeType.CREATE
                and healthy
            ):
                node = healthy[0]
                return RouteDecision(
                    node=node,
                    replicas=tuple(other for other in cluster.nodes(vs) if other != node),
                    reason=f"create: the configured primary {primary.name} is down",
                )
            return None
        candidate = failover_candidate(metadata, healthy)
        read_only = self._known_read_only(vs, path, metadata.version, healthy)
        if operation is not Operation.MUTATOR:
            if self.enabled and not read_only:
                self.schedule_election(vs, path, primary.name)
            if call.header(ACCESSOR_POLICY_HEADER) in ("primary-only", b"primary-only"):
                return None  # the client wants the primary or nothing
            current = [node for node in healthy if metadata.is_up_to_date(node.name)]
            if current:
                return RouteDecision(
                    node=random.choice(current),
                    reason=f"accessor: up-to-date replica (primary {primary.name} is down)",
                )
            if candidate is None:
                return None
            return RouteDecision(
                node=candidate,
                reason=f"accessor: most up-to-date healthy replica (primary {primary.name} is down)",
            )
        if not self.enabled:
            return None
        if candidate is None or read_only:
            raise FailedPrecondition(read_only_message(path, primary.name))
        call.stash[PLANNED] = PlannedElection(primary.name, candidate)
        return RouteDecision(
            node=candidate,
            replicas=tuple(
                other
                for other in cluster.nodes(vs)
                if other != candidate and (not metadata.assigned or other.name in metadata.assigned)
            ),
            reason=f"failover: primary {primary.name} is down",
        )

    def _known_read_only(
        self, vs: str, path: str, version: int, healthy: tuple[NodeRef, ...]
    ) -> bool:
        memo = self._read_only.get((vs, path))
        return memo is not None and memo == (version, frozenset(node.name for node in healthy))

    async def confirm_planned(self, call: Call, planned: PlannedElection) -> None:
        """Before a re-routed mutator reaches its node: elect that node, or fail the call."""
        repository = call.repository
        assert repository is not None
        vs, path = repository.virtual_storage, repository.relative_path
        try:
            # Wait for a copy into the candidate to end: until the client's
            # deadline (gRPC cancels the call), at most until its lease expires.
            election = await self.elect(
                vs, path, expected=planned.expected, reason=f"{planned.expected} is down",
                wait_for_copies=None, waiter=f"a write ({call.method.name})",
            )
        except (RedisError, OSError) as error:
            raise Unavailable(
                f"the primary of {path!r}, {planned.expected}, is down and a new one cannot be "
                f"elected ({error}): retry when Redis is reachable"
            ) from error
        if election.status == "none":
            raise FailedPrecondition(read_only_message(path, planned.expected))
        if election.status == "busy":
            raise Unavailable(busy_message(path, planned.expected, election.busy))
        if election.primary != planned.node.name:
            raise Unavailable(
                f"the primary of {path!r} is now {election.primary or 'unknown'}, not "
                f"{planned.node.name}: retry the call"
            )

    # --------------------------------------------------------- elections

    async def elect(
        self,
        vs: str,
        path: str,
        *,
        expected: str | None,
        reason: str,
        wait_for_copies: float | None = 0.0,
        waiter: str = "the failover",
    ) -> Election:
        """Elect among this router's healthy nodes; fire ``on_failover`` on a move.

        While the election is ``busy`` (the only qualifying candidates are
        being copied into), elect again every few ms for at most
        ``wait_for_copies`` seconds (``None``: until the copies' leases
        expire), so that the election happens as soon as a copy ends.
        ``waiter`` names who waits, in the log.
        """
        election = await self._elect_once(vs, path, expected=expected, reason=reason)
        if election.status != "busy" or wait_for_copies == 0:
            return election
        loop = asyncio.get_running_loop()
        limit = election.busy_for if wait_for_copies is None else min(wait_for_copies, election.busy_for)
        # A little past the expiry: the election right after it finds the lease gone.
        deadline = loop.time() + limit + _BUSY_POLL_MAX
        log.info(
            "%s in %s: %s cannot take over from %s yet, a copy into it is running; %s waits "
            "until it ends (at most %.1f s)",
            path, vs, ", ".join(election.busy), expected or election.primary or "?", waiter, limit,
        )
        delay = _BUSY_POLL_FIRST
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _BUSY_POLL_MAX)
            election = await self._elect_once(vs, path, expected=expected, reason=reason)
            # redis-py may swallow a cancellation (the client's deadline) in a command
            raise_if_cancelling()
            if election.status != "busy":
                return election
        return election

    async def _elect_once(
        self, vs: str, path: str, *, expected: str | None, reason: str
    ) -> Election:
        healthy = self._healthy_names(vs)
        async with self._limit:
            election = await self.elector.elect(vs, path, healthy, expected=expected)
        key = (vs, path)
        if election.status == "none":
            metadata = self.replication.cache.get(vs, path)
            if metadata is not None:
                self._read_only[key] = (metadata.version, frozenset(healthy))
            log.warning("%s", read_only_message(path, election.primary or expected or "?"))
            return election
        self._read_only.pop(key, None)
        if election.changed:
            log.warning(
                "failover of %s in %s: primary %s -> %s (%s)",
                path, vs, election.previous or "?", election.primary, reason,
            )
            storage = self.cluster.virtual_storage(vs)
            try:
                old, new = storage.node(election.previous), storage.node(election.primary)
            except KeyError:
                return election
            await self.router.hooks.on_failover(vs, path, old, new, reason)
        return election

    # ------------------------------------------- writes to a former primary

    async def repair_after_move(self, vs: str, path: str, node: str, primary: str) -> None:
        """A recorded write's node was replaced as primary before its OK: keep the primary's copy.

        If the primary lacks the write (its node's generation exceeds the
        primary's), the primary is made authoritative again, so replication
        goes from it to ``node`` and not the other way; only while it is
        still the primary (another move's election takes care of itself).
        Writes that reach a former primary before they are recorded never
        get here: the replication plugin's recording script refuses them.
        """
        metadata = await self.replication.store.get(vs, path)
        if metadata is None or metadata.primary == node:
            return
        if metadata.replica_generation(node) > metadata.replica_generation(metadata.primary):
            try:
                await self.replication.store.set_authoritative(
                    vs, path, metadata.primary, only_if_primary=True
                )
            except PrimaryMoved as moved:
                log.info("%s in %s: the primary moved again, to %s", path, vs, moved.primary)
                return
            log.warning(
                "%s in %s: a write reached the former primary %s after %s took over; %s's copy "
                "is authoritative again",
                path, vs, node, metadata.primary, metadata.primary,
            )

    def schedule_election(self, vs: str, path: str, expected: str) -> None:
        """Elect in the background (at most one election per repository at a time)."""
        key = (vs, path)
        if key in self._elections:
            return
        task = asyncio.get_running_loop().create_task(
            self._elect_quietly(vs, path, expected), name=f"failover:{vs}:{path}"
        )
        self._elections[key] = task
        task.add_done_callback(lambda _: self._elections.pop(key, None))

    async def _elect_quietly(self, vs: str, path: str, expected: str) -> Election | None:
        try:
            return await self.elect(
                vs, path, expected=expected, reason=f"{expected} is down",
                wait_for_copies=self.sweep_interval,
            )
        except (RedisError, OSError) as error:
            log.warning("cannot elect a primary for %s in %s: %s", path, vs, error)
            return None

    async def fail_over_node(self, node: NodeRef, reason: str) -> list[Election]:
        """Elect a new primary for every repository whose primary is ``node``."""
        vs = node.virtual_storage
        healthy = frozenset(self._healthy_names(vs))
        paths = [
            path
            for path, metadata in self.replication.cache.repositories(vs).items()
            if metadata.primary == node.name
            and self._read_only.get((vs, path)) != (metadata.version, healthy)
        ]
        if not paths:
            return []

        async def one(path: str) -> Election | None:
            try:
                # A repository still busy after this is the next sweep's.
                return await self.elect(
                    vs, path, expected=node.name, reason=reason,
                    wait_for_copies=self.sweep_interval,
                )
            except (RedisError, OSError) as error:
                log.warning("cannot elect a primary for %s in %s: %s", path, vs, error)
                return None

        results = [result for result in await asyncio.gather(*map(one, paths)) if result]
        moved = sum(1 for result in results if result.changed)
        read_only = sum(1 for result in results if result.status == "none")
        busy = sum(1 for result in results if result.status == "busy")
        log.warning(
            "failover from %s: %d of %d repositories moved, %d read-only, %d waiting for a copy "
            "into their new primary to end",
            node, moved, len(paths), read_only, busy,
        )
        return results

    async def _on_transition(self, node: NodeRef, healthy: bool, reason: str) -> None:
        if healthy or not self.enabled:
            return
        task = asyncio.get_running_loop().create_task(self._fail_over_quietly(node, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fail_over_quietly(self, node: NodeRef, reason: str) -> None:
        try:
            await self.fail_over_node(node, f"{node.name} is down: {reason}" if reason else f"{node.name} is down")
        except Exception:
            log.exception("failover from %s failed; the sweep will try again", node)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            for node in self.cluster.unhealthy_nodes():
                await self._fail_over_quietly(node, "")

