"""Replica verification: notice a replica that vanished from its node, and repair it.

Routing and elections trust the generations in Redis. A node whose disk died
and was replaced by an empty one passes every health check, yet holds none
of the repositories the state says it has: reads routed there fail, and it
could be elected primary of a repository it does not have. Like Gitaly's
Praefect, every router (and every ``praefect replicate``) runs a
:class:`VerificationWorker` that asks each node, now and then, whether its
replicas still exist (``RepositoryExists``, with the node's own token):

1. **Due**: a replica whose last verification is older than
   ``replication.verification_interval`` (7 days by default; 0: off).
   Those ``praefect verify`` marked come first, then the oldest. A replica
   enters its node's due set when a worker sees it get a generation (a
   write or a copy into it had just succeeded: its clock starts then, see
   ``verification_store.py``).
2. **Claim**: one Lua call per replica takes it for ``lease`` seconds, so
   workers of several routers never check the same replica at once, and one
   that dies mid-batch holds its replicas that long at most. A replica with
   a copy running into it is not claimed: the node creates a repository in
   a scratch directory and renames it into place at the end, so until then
   it "does not exist", and the copy's own outcome says what it holds.
3. **Ask** the node (only a node that answers a health check first; a node
   that is down or fails the call gives no verdict, the claim is released
   and the replica is checked again on a later pass).
4. **Record** atomically (Lua), only if the claim is still ours and nothing
   changed under it: *exists* records the time; *missing* drops the
   replica's generation (no reads, no elections) and queues a replication
   event that repairs it from the replica with the highest generation, the
   ordinary replay workers carry it out. Not recorded: the repository was
   deleted or created again, the replica's generation changed (a copy or a
   write finished after the node answered), a copy runs into it now, a
   write forwarded to it is not recorded yet (an open intent: a
   RemoveRepository, say), or an operator marked it after the claim.
5. **A primary whose replica is missing** gets no repair event (nothing is
   ever copied into a primary). Its generation is dropped, and from then on
   the recording script refuses writes it takes (:class:`PrimaryMissing`, as
   does the router before forwarding), so no write into an empty repository
   is ever acknowledged. The worker then hands the role, in one Lua call, to
   the answering replica with every acknowledged write (the failover
   plugin's ``acked`` generation, or the repository's), which queues the old
   primary's repair; a winner that lacks only unacknowledged writes is made
   authoritative, as an election does. With no such replica the repository
   stays read-only (``praefect dataloss``) until one answers or an operator
   runs ``accept-dataloss``. With ``failover.enabled = false`` the role is
   not moved.

Each check is counted by result (``exists``, ``missing``, ``failed``,
``inconclusive``) in :class:`~praefect.core.telemetry.metrics.ReplicationMetrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from grpc import aio
from redis.exceptions import RedisError

from praefect.core.telemetry.metrics import ReplicationMetrics
from praefect.core.waits import wait_for_event
from praefect.plugins.replication.cache import StateCache
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.redis_io import raise_if_cancelling
from praefect.plugins.replication.state import (
    PrimaryMissing,
    PrimaryMoved,
    RepositoryMetadata,
    RepositoryStore,
)
from praefect.plugins.replication.verification_store import (
    Verdict,
    VerdictStatus,
    VerificationClaim,
    VerificationStore,
)
from praefect.settings import Config

log = logging.getLogger("praefect.replication.verification")

__all__ = [
    "DEFAULT_INTERVAL",
    "Check",
    "VerificationSettings",
    "VerificationStats",
    "VerificationWorker",
]

#: seconds between verifications of one replica (Gitaly's default too)
DEFAULT_INTERVAL = 7 * 24 * 3600.0
#: longest pause between passes
_PASS_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class VerificationSettings:
    """How a verification worker paces itself. Times in seconds."""

    #: a replica is verified again this long after its last verification; 0: off
    interval: float = DEFAULT_INTERVAL
    #: replicas of one node claimed, and checked at the same time, per pass
    batch_size: int = 25
    #: how long a claim holds; must outlast ``call_timeout``
    lease: float = 30.0
    #: deadline of one RepositoryExists
    call_timeout: float = 10.0
    #: pause between passes when the last one left nothing due
    pass_interval: float = _PASS_INTERVAL
    #: deadline of the health check of a node before its batch
    probe_timeout: float = 2.0
    #: hand the primary role off a primary whose replica is missing (``failover.enabled``)
    replace_primaries: bool = True

    def __post_init__(self) -> None:
        if self.lease <= self.call_timeout:
            raise ValueError(
                f"the verification lease ({self.lease} s) must outlast the call's deadline "
                f"({self.call_timeout} s): a claim must not expire while its check runs"
            )
        if self.batch_size < 1:
            raise ValueError("the verification batch size must be at least 1")

    @classmethod
    def from_settings(cls, settings: Config) -> VerificationSettings:
        interval = float(settings.replication.verification_interval)
        # A short interval (tests, small clusters) is looked at more often.
        pause = min(_PASS_INTERVAL, interval / 4) if interval > 0 else _PASS_INTERVAL
        return cls(
            interval=interval,
            pass_interval=max(0.05, pause),
            replace_primaries=settings.failover.enabled,
        )


@dataclass(frozen=True, slots=True)
class Check:
    """One replica checked in a pass.

    ``result``: ``exists`` (recorded verified), ``missing`` (generation
    dropped), ``failed`` (no answer from the node, or Redis: no verdict) or
    ``inconclusive`` (the answer was not recorded: see ``verdict.status``).
    """

    virtual_storage: str
    node: str
    relative_path: str
    result: str
    verdict: Verdict | None = None
    error: str = ""


@dataclass(slots=True)
class VerificationStats:
    """Counters of one worker (for tests and logs)."""

    passes: int = 0
    #: checks by result
    checks: Counter[str] = field(default_factory=Counter)
    #: replicas added to the due sets
    seeded: int = 0
    #: node batches skipped because the node did not answer a health check
    nodes_down: int = 0
    #: primaries whose replica was missing that handed the role over
    primaries_replaced: int = 0


class _Reachability:
    """Health checks of the nodes, at most one per node and pass."""

    def __init__(self, nodes: NodeClients, deadline: float) -> None:
        self._nodes = nodes
        self._deadline = deadline
        self._known: dict[tuple[str, str], bool] = {}

    async def __call__(self, virtual_storage: str, node: str) -> bool:
        key = (virtual_storage, node)
        if key not in self._known:
            self._known[key] = await self._nodes.reachable(
                virtual_storage, node, deadline=self._deadline
            )
        return self._known[key]


class VerificationWorker:
    """Verifies the replicas of every configured node (see the module docstring)."""

    def __init__(
        self,
        store: RepositoryStore,
        cache: StateCache,
        nodes: NodeClients,
        *,
        settings: VerificationSettings | None = None,
        metrics: ReplicationMetrics | None = None,
    ) -> None:
        self.store = store
        self.verifications = VerificationStore(store)
        self.cache = cache
        self.nodes = nodes
        self.settings = settings or VerificationSettings()
        self.metrics = metrics
        self.stats = VerificationStats()
        self._configured: dict[str, tuple[str, ...]] = {}
        for endpoint in nodes.endpoints():
            names = self._configured.get(endpoint.virtual_storage, ())
            self._configured[endpoint.virtual_storage] = (*names, endpoint.name)
        # Per repository, the replicas with a generation as this process last
        # saw them; those that got one since (a new repository, a repair) wait
        # in _unseeded to be added to their node's due set. Followed change by
        # change (the listener), so that a replica dropped and repaired
        # between two passes is added back all the same.
        self._holding: dict[tuple[str, str], frozenset[str]] = {}
        self._unseeded: set[tuple[str, str, str]] = set()
        # When everything is added again (ZADD NX), in case some change was
        # never seen here (a resync that skipped it): once per interval.
        self._next_full_seed = 0.0
        # Repositories whose primary has no generation, and the state and
        # answering candidates of the last attempt to replace it that failed.
        self._orphaned: set[tuple[str, str]] = set()
        self._tried: dict[tuple[str, str], tuple[int, frozenset[str]]] = {}
        self._down: set[tuple[str, str]] = set()
        self._more = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"VerificationWorker(every {self.settings.interval:g} s)"

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-verification")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Run a pass now (instead of at the end of the pause)."""
        self._wake.set()

    def changed(self, virtual_storage: str, path: str, metadata: RepositoryMetadata | None) -> None:
        """The state cache's listener: note repositories whose replicas may have changed."""
        if virtual_storage not in self._configured:
            return
        key = (virtual_storage, path)
        configured = self._configured[virtual_storage]
        holding = (
            frozenset(
                name
                for name in metadata.assigned
                if name in configured and metadata.replica_generation(name) >= 0
            )
            if metadata is not None
            else frozenset()
        )
        for name in holding - self._holding.get(key, frozenset()):
            self._unseeded.add((virtual_storage, name, path))
        if holding:
            self._holding[key] = holding
        else:
            self._holding.pop(key, None)
        if metadata is not None and _primary_missing(metadata):
            self._orphaned.add(key)
        else:
            self._orphaned.discard(key)
            self._tried.pop(key, None)

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log.warning("replica verification: Redis failed (%s); next pass in %.1f s",
                            error, self.settings.pass_interval)
                self._more = False
            except Exception:
                log.exception("replica verification pass failed")
                self._more = False
            # Redis commands may swallow a cancellation (see redis_io).
            raise_if_cancelling()
            if self._more:
                continue
            await wait_for_event(self._wake, self.settings.pass_interval)

    # -------------------------------------------------------------- a pass

    async def run_once(self) -> list[Check]:
        """One pass: add new replicas to the due sets, check what is due, move missing primaries."""
        self.stats.passes += 1
        await self._seed()
        reachable = _Reachability(self.nodes, self.settings.probe_timeout)
        batches = await asyncio.gather(
            *(
                self._verify_node(vs, node, reachable)
                for vs, names in self._configured.items()
                for node in names
            )
        )
        # A full batch that all got an answer: more may be due, go on at once.
        # Failures wait for the next pass (a node refusing every call must
        # not be asked again and again in a tight loop).
        self._more = any(
            len(batch) >= self.settings.batch_size
            and all(check.result != "failed" for check in batch)
            for batch in batches
        )
        if self.settings.replace_primaries:
            await self._replace_primaries(reachable)
        return [check for batch in batches for check in batch]

    async def _seed(self) -> None:
        """Add replicas that got a generation to their nodes' due sets (first check: one interval on)."""
        now = time.monotonic()
        if now >= self._next_full_seed:
            # The first pass, then once per interval: everything the cache holds.
            self._next_full_seed = now + self.settings.interval
            self._holding.clear()
            for vs in self._configured:
                for path, metadata in self.cache.repositories(vs).items():
                    self.changed(vs, path, metadata)
        pending, self._unseeded = self._unseeded, set()
        by_vs: dict[str, list[tuple[str, str]]] = {}
        for vs, node, path in pending:
            by_vs.setdefault(vs, []).append((node, path))
        try:
            for vs, replicas in by_vs.items():
                self.stats.seeded += await self.verifications.seed(vs, replicas)
        except BaseException:
            self._unseeded |= pending
            raise

    async def _verify_node(self, vs: str, node: str, reachable: _Reachability) -> list[Check]:
        settings = self.settings
        try:
            paths = await self.verifications.due(
                vs, node, interval=settings.interval, limit=settings.batch_size
            )
            if not paths:
                return []
            if not await reachable(vs, node):
                self.stats.nodes_down += 1
                if (vs, node) not in self._down:
                    self._down.add((vs, node))
                    log.warning(
                        "replica verification: %s in %s does not answer; its due replicas wait "
                        "until it does (no verdict on a node that is down)",
                        node, vs,
                    )
                return []
            self._down.discard((vs, node))
            claims: list[VerificationClaim] = []
            for path in paths:
                if len(claims) >= settings.batch_size:
                    break
                claimed = await self.verifications.claim(
                    vs, path, node, lease=settings.lease, interval=settings.interval
                )
                if isinstance(claimed, VerificationClaim):
                    claims.append(claimed)
        except (RedisError, OSError) as error:
            log.warning("replica verification of %s in %s: Redis failed (%s)", node, vs, error)
            return []
        checks = list(await asyncio.gather(*(self._check(claim) for claim in claims)))
        missing = [check.relative_path for check in checks if check.result == "missing"]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            log.warning(
                "replica verification: %d replica(s) missing on %s in %s (lost with a disk?): %s; "
                "their generations were dropped (no reads, no elections) and their repair queued",
                len(missing), node, vs, shown,
            )
        failed = [check for check in checks if check.result == "failed"]
        if failed:
            log.warning(
                "replica verification: %d check(s) on %s in %s got no answer (%s, ...); no "
                "verdict, they are checked again on a later pass",
                len(failed), node, vs, failed[0].error,
            )
        return checks

    async def _check(self, claim: VerificationClaim) -> Check:
        vs, path, node = claim.virtual_storage, claim.relative_path, claim.node
        try:
            exists = await self.nodes.exists(vs, path, node=node, deadline=self.settings.call_timeout)
        except aio.AioRpcError as error:
            reason = f"{error.code().name}: {error.details()}"
            with contextlib.suppress(RedisError, OSError):
                await self.verifications.release(claim)
            # One warning per batch (_verify_node); the details here.
            log.info("replica verification of %s on %s in %s failed: %s", path, node, vs, reason)
            return self._counted(Check(vs, node, path, "failed", error=reason))
        try:
            verdict = await self.verifications.record(claim, exists=exists)
        except (RedisError, OSError) as error:
            log.warning(
                "replica verification of %s on %s in %s: cannot record the answer (%s)",
                path, node, vs, error,
            )
            return self._counted(Check(vs, node, path, "failed", error=str(error)))
        return self._counted(self._outcome(verdict))

    def _outcome(self, verdict: Verdict) -> Check:
        claim = verdict.claim
        vs, path, node = claim.virtual_storage, claim.relative_path, claim.node
        status = verdict.status
        if status is VerdictStatus.VERIFIED:
            return Check(vs, node, path, "exists", verdict)
        if status is VerdictStatus.MISSING:
            # One warning per batch (_verify_node); the details here.
            log.info(
                "replica verification: %s in %s is missing on %s; its generation was dropped and "
                "a replication from %s (generation %d) was queued to repair it",
                path, vs, node, verdict.repair_source, verdict.repair_generation,
            )
        elif status is VerdictStatus.MISSING_PRIMARY:
            self._orphaned.add((vs, path))
            log.warning(
                "replica verification: %s in %s is missing on its primary %s (was it lost with a "
                "disk?); its generation was dropped: the repository takes no write until a "
                "replica with every acknowledged write is its primary",
                path, vs, node,
            )
        elif status is VerdictStatus.MISSING_NO_SOURCE:
            log.error(
                "replica verification: %s in %s is missing on %s and no other replica has a "
                "generation to repair it from: see `praefect dataloss`",
                path, vs, node,
            )
        else:
            log.info(
                "replica verification of %s on %s in %s not recorded: %s",
                path, node, vs, status.value,
            )
            return Check(vs, node, path, "inconclusive", verdict)
        return Check(vs, node, path, "missing", verdict)

    def _counted(self, check: Check) -> Check:
        self.stats.checks[check.result] += 1
        if self.metrics is not None:
            self.metrics.count_verification(check.virtual_storage, check.node, check.result)
        return check

    # ---------------------------------------------------- missing primaries

    async def _replace_primaries(self, reachable: _Reachability) -> None:
        for key in sorted(self._orphaned):
            vs, path = key
            metadata = self.cache.get(vs, path)
            if metadata is None or not _primary_missing(metadata):
                self._orphaned.discard(key)
                continue
            candidates = [
                name
                for name in self._configured[vs]
                if name != metadata.primary and name in metadata.assigned
                and await reachable(vs, name)
            ]
            attempt = (metadata.version, frozenset(candidates))
            if self._tried.get(key) == attempt:
                continue  # the same question got "no" already
            try:
                settled = await self._replace_primary(metadata, candidates)
            except (RedisError, OSError) as error:
                log.warning("cannot replace the primary of %s in %s: %s", path, vs, error)
                return
            if settled:
                self._tried[key] = attempt

    async def _replace_primary(self, metadata: RepositoryMetadata, candidates: list[str]) -> bool:
        """One attempt; False when it must be tried again on the next pass (``busy``)."""
        vs, path, old = metadata.virtual_storage, metadata.relative_path, metadata.primary
        replacement = await self.verifications.replace_missing_primary(vs, path, old, candidates)
        if replacement.status == "busy":
            return False
        if replacement.status == "none":
            log.warning(
                "%s in %s is read-only: its primary %s lost its copy and no answering replica "
                "has every acknowledged write; bring one back, or choose one with `praefect "
                "accept-dataloss`",
                path, vs, old,
            )
            return True
        if not replacement.changed:
            return True
        self.stats.primaries_replaced += 1
        log.warning(
            "%s in %s: primary %s -> %s (the primary's copy is missing); %s is queued to be "
            "replicated from %s",
            path, vs, old, replacement.primary, old, replacement.primary,
        )
        if replacement.primary_generation >= replacement.generation:
            return True
        # The new primary lacks only unacknowledged writes: its copy becomes
        # the repository's, as after a failover election.
        try:
            await self.store.set_authoritative(vs, path, replacement.primary, only_if_primary=True)
        except (PrimaryMoved, PrimaryMissing) as refused:
            log.info("%s in %s: not making %s authoritative: %s",
                     path, vs, replacement.primary, refused)
        return True


def _primary_missing(metadata: RepositoryMetadata) -> bool:
    """The primary holds an assigned replica without a generation (verification dropped it)."""
    return (
        bool(metadata.primary)
        and metadata.primary in metadata.assigned
        and metadata.replica_generation(metadata.primary) < 0
    )
