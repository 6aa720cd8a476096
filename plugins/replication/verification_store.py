"""Replica verification in Redis: what is due, who checks it, what was found.

Per (virtual storage, node), next to the repository hashes of
:mod:`praefect.plugins.replication.state`:

- ``verify:<node>`` (ZSET): the replicas on ``<node>`` that verification
  checks, member the relative path, score the Redis time (ms) of the last
  verification, minus the time of the mark for one ``praefect verify``
  marked. A replica enters the set when a worker sees it get a generation,
  scored then: the write or copy that gave it one had just succeeded, so
  its first check is one interval later (``praefect verify`` to check it
  sooner). A replica is *due* when its score is older than the
  verification interval: marked ones first, then the oldest;
- ``verify-claims:<node>`` (HASH): path -> JSON claim of a verification
  under way: the holder's token, its expiry (Redis time, ms) and what the
  verdict must still find (the replica's generation, the repository's
  ``created_at``, the replica's score).

Every step that decides is one Lua call (``scripts.py``): the claim (due,
not held, a replica with a generation, no copy running into it), the
verdict (the claim still ours, nothing changed under it; *missing* drops
the replica's generation and queues its repair in the same call), the
release of a claim without verdict, and the hand-over of the primary role
by a primary whose replica is missing.
"""

from __future__ import annotations

import enum
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from praefect.plugins.replication.events import encode_trace
from praefect.plugins.replication.state import RepositoryStore

__all__ = [
    "ClaimStatus",
    "PrimaryReplacement",
    "ReplicaVerification",
    "Verdict",
    "VerdictStatus",
    "VerificationClaim",
    "VerificationStore",
    "describe_verification",
]

_BATCH = 500

T = TypeVar("T")


class ClaimStatus(enum.Enum):
    """What :meth:`VerificationStore.claim` did."""

    CLAIMED = "claimed"
    #: another worker's claim holds (it has not expired)
    HELD = "held"
    #: verified within the interval (by another worker, since the due list was read)
    NOT_DUE = "not-due"
    #: the repository is no longer tracked (dropped from the due set)
    UNTRACKED = "untracked"
    #: the node holds no replica the state believes in: not assigned, or no
    #: generation (dropped from the due set; added back once it has one)
    NO_REPLICA = "no-replica"
    #: a copy (replication) runs into the replica: checked on a later pass
    COPYING = "copying"


@dataclass(frozen=True, slots=True)
class VerificationClaim:
    """A replica this worker checks now, and what Redis held when it was claimed."""

    virtual_storage: str
    relative_path: str
    node: str
    token: str
    generation: int
    created_at: str


class VerdictStatus(enum.Enum):
    """What :meth:`VerificationStore.record` did with a node's answer."""

    #: exists: the verification time was recorded
    VERIFIED = "verified"
    #: missing: the generation was dropped and a repair queued
    MISSING = "missing"
    #: missing on the primary: the generation was dropped; nothing is ever
    #: copied into a primary, so the role must move first
    MISSING_PRIMARY = "missing-primary"
    #: missing, and no other replica has a generation to repair it from
    MISSING_NO_SOURCE = "missing-no-source"
    #: the claim expired and another worker holds it: nothing recorded
    LOST = "lost"
    #: the repository was deleted meanwhile (the replica left the due set)
    UNTRACKED = "untracked"
    #: the repository was deleted and created again meanwhile: no verdict
    RECREATED = "recreated"
    #: exists, but ``praefect verify`` marked the replica after the claim:
    #: the mark stays, the replica is checked again
    MARKED = "marked"
    #: the replica's generation was dropped meanwhile, or it is no longer
    #: assigned (the replica left the due set)
    OUTDATED = "outdated"
    #: missing, but a copy or write changed the replica's generation since
    #: the claim (it may have created the repository after the node answered)
    CHANGED = "changed"
    #: missing, but a copy into the replica is running: its outcome decides
    COPYING = "copying"
    #: missing, but a write forwarded to the node is not recorded yet (an
    #: open intent: a RemoveRepository, say): checked again later
    IN_FLIGHT = "in-flight"

    @property
    def missing(self) -> bool:
        """The replica was found missing and its generation dropped."""
        return self in (
            VerdictStatus.MISSING, VerdictStatus.MISSING_PRIMARY, VerdictStatus.MISSING_NO_SOURCE
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one verification; ``repair_source`` is where the repair copies from."""

    status: VerdictStatus
    claim: VerificationClaim
    verified_at_ms: int = 0
    repair_source: str = ""
    repair_generation: int = -1


@dataclass(frozen=True, slots=True)
class PrimaryReplacement:
    """The outcome of :meth:`VerificationStore.replace_missing_primary`.

    ``status``: ``ok`` (``primary`` took over at ``primary_generation``),
    ``none`` (no candidate has every acknowledged write), ``busy`` (only
    candidates with a copy running into them have), ``conflict`` (the
    primary is no longer the expected one), ``not-missing`` (the primary has
    a generation again) or ``untracked``.
    """

    status: str
    primary: str
    primary_generation: int
    generation: int

    @property
    def changed(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class ReplicaVerification:
    """A replica's entry in the due set (``score`` None: not in it)."""

    score: float | None

    @property
    def verified_at(self) -> float | None:
        """Unix time of the last verification (or of the generation's arrival); None when marked or unknown."""
        return self.score / 1000 if self.score is not None and self.score > 0 else None

    @property
    def marked(self) -> bool:
        """``praefect verify`` marked it: it is checked before any other."""
        return self.score is not None and self.score < 0


def describe_verification(entry: ReplicaVerification | None, now: float | None = None) -> str:
    """``2024-05-01 12:00:00 (3.0 h ago)``, ``marked, due now``, ``never`` or ``-`` (for people)."""
    if entry is None or entry.score is None:
        return "-"
    if entry.marked:
        return "marked, due now"
    verified = entry.verified_at
    if verified is None:
        return "never"
    age = max(0.0, (time.time() if now is None else now) - verified)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(verified))
    if age < 120:
        return f"{stamp} ({age:.0f} s ago)"
    if age < 7200:
        return f"{stamp} ({age / 60:.0f} min ago)"
    if age < 3 * 86400:
        return f"{stamp} ({age / 3600:.1f} h ago)"
    return f"{stamp} ({age / 86400:.1f} days ago)"


class VerificationStore:
    """The verification calls on the Redis of a :class:`RepositoryStore`."""

    def __init__(self, store: RepositoryStore) -> None:
        self.store = store
        self.client = store.client
        self.scripts = store.scripts

    async def redis_time_ms(self) -> int:
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # ------------------------------------------------------------- the due set

    async def seed(self, virtual_storage: str, replicas: Iterable[tuple[str, str]]) -> int:
        """Add (node, path) replicas not in their due set yet, scored now; returns how many."""
        keys = self.store.keys(virtual_storage)
        added = 0
        now = await self.redis_time_ms()
        for chunk in _chunks(sorted(set(replicas)), _BATCH):
            async with self.client.pipeline(transaction=False) as pipe:
                for node, path in chunk:
                    pipe.zadd(keys.verification_due(node), {path: now}, nx=True)
                added += sum(int(count) for count in await pipe.execute())
        return added

    async def mark(self, virtual_storage: str, replicas: Iterable[tuple[str, str]]) -> int:
        """Mark (node, path) replicas for verification before any other; returns how many."""
        keys = self.store.keys(virtual_storage)
        # Each mark its own score (minus Redis time): a verdict on a claim
        # taken before the mark sees that the mark is newer and keeps it.
        score = -float(await self.redis_time_ms())
        marked = 0
        by_node: dict[str, list[str]] = {}
        for node, path in set(replicas):
            by_node.setdefault(node, []).append(path)
        for node, paths in sorted(by_node.items()):
            for chunk in _chunks(sorted(paths), _BATCH):
                await self.client.zadd(keys.verification_due(node), dict.fromkeys(chunk, score))
                marked += len(chunk)
        return marked

    async def due(
        self, virtual_storage: str, node: str, *, interval: float, limit: int
    ) -> list[str]:
        """Up to ``limit`` paths of ``node`` due for verification, most urgent first.

        Some may be claimed by other workers: read a few more than you mean to claim.
        """
        keys = self.store.keys(virtual_storage)
        cutoff = await self.redis_time_ms() - _ms(interval)
        held = int(await self.client.hlen(keys.verification_claims(node)))
        paths = await self.client.zrangebyscore(
            keys.verification_due(node), "-inf", cutoff, start=0, num=limit + held
        )
        return [str(path) for path in paths]

    async def entries(
        self, virtual_storage: str, relative_path: str, nodes: Sequence[str]
    ) -> dict[str, ReplicaVerification]:
        """Each node's entry for the repository (``praefect metadata``'s "verified at")."""
        keys = self.store.keys(virtual_storage)
        async with self.client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.zscore(keys.verification_due(node), relative_path)
            scores = await pipe.execute()
        return {
            node: ReplicaVerification(None if score is None else float(score))
            for node, score in zip(nodes, scores, strict=True)
        }

    # ---------------------------------------------------------- one replica

    async def claim(
        self,
        virtual_storage: str,
        relative_path: str,
        node: str,
        *,
        lease: float,
        interval: float,
    ) -> VerificationClaim | ClaimStatus:
        """Claim the replica's verification for ``lease`` seconds; a status when refused."""
        keys = self.store.keys(virtual_storage)
        token = uuid.uuid4().hex
        status, generation, created = await self.scripts.claim_verification(
            keys=[
                keys.repository(relative_path),
                keys.verification_due(node),
                keys.verification_claims(node),
                keys.copy_leases(relative_path),
            ],
            args=[relative_path, node, token, _ms(lease), _ms(interval)],
        )
        claim_status = ClaimStatus(str(status))
        if claim_status is not ClaimStatus.CLAIMED:
            return claim_status
        return VerificationClaim(
            virtual_storage, relative_path, node, token, int(generation), str(created)
        )

    async def record(self, claim: VerificationClaim, *, exists: bool) -> Verdict:
        """Record what the node answered (see the module docstring and ``scripts.py``)."""
        keys = self.store.keys(claim.virtual_storage)
        path = claim.relative_path
        status, verified_at, version, state, source, source_generation = (
            await self.scripts.record_verification(
                keys=[
                    keys.repository(path),
                    keys.version,
                    keys.changes,
                    keys.verification_due(claim.node),
                    keys.verification_claims(claim.node),
                    keys.copy_leases(path),
                    keys.events(claim.node),
                    keys.intents,
                ],
                args=[
                    path,
                    claim.node,
                    claim.token,
                    "exists" if exists else "missing",
                    self.store.changes_maxlen,
                    claim.virtual_storage,
                    encode_trace({}),
                ],
            )
        )
        self.store.note_change(claim.virtual_storage, path, int(version), str(state or ""))
        return Verdict(
            VerdictStatus(str(status)),
            claim,
            int(verified_at),
            str(source or ""),
            int(source_generation),
        )

    async def release(self, claim: VerificationClaim) -> bool:
        """Give the claim up without a verdict (only if it is still ours)."""
        keys = self.store.keys(claim.virtual_storage)
        released = await self.scripts.release_verification(
            keys=[keys.verification_claims(claim.node)], args=[claim.relative_path, claim.token]
        )
        return bool(int(released))

    async def replace_missing_primary(
        self,
        virtual_storage: str,
        relative_path: str,
        expected: str,
        candidates: Iterable[str],
    ) -> PrimaryReplacement:
        """Move the primary role off ``expected``, whose replica is missing, and queue its repair.

        ``candidates``: nodes that answer, in order of preference. See
        :class:`PrimaryReplacement` for the outcomes. A winner behind the
        repository's generation lacks only unacknowledged writes: the caller
        makes it authoritative (as a failover election does).
        """
        keys = self.store.keys(virtual_storage)
        status, primary, primary_generation, generation, version, state = (
            await self.scripts.replace_missing_primary(
                keys=[
                    keys.repository(relative_path),
                    keys.version,
                    keys.changes,
                    keys.copy_leases(relative_path),
                    keys.events(expected),
                ],
                args=[
                    relative_path,
                    self.store.changes_maxlen,
                    virtual_storage,
                    expected,
                    encode_trace({}),
                    *candidates,
                ],
            )
        )
        if status == "ok":
            self.store.note_change(virtual_storage, relative_path, int(version), str(state))
        return PrimaryReplacement(
            str(status), str(primary or ""), int(primary_generation), int(generation)
        )


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
