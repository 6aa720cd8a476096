"""Repository state in Redis: what is tracked, generations, primaries, replicas.

A repository of a virtual storage is one hash, ``praefect:{vs}:repo:<path>``:

- ``generation``: bumped by every mutation (0 after creation);
- ``g:<storage>``: the generation each replica has (absent: it has nothing);
- ``primary``: the node that takes the repository's writes;
- ``assigned``: JSON list (sorted) of the nodes that hold a replica;
- ``version``: the virtual storage's state version at the last change.

Next to it, ``praefect:{vs}:copies:<path>`` holds the *copy leases* of the
repository: one per ReplicateRepository a worker is running into one of its
replicas (:meth:`RepositoryStore.take_copy_lease`). No election or move of
the primary picks a node with an unexpired lease: a copy overwrites and
prunes the target's refs, so a node made primary in the middle of one could
lose the writes it took as primary.

A replica is up to date when its generation equals the repository's. Every
change goes through one Lua script (``scripts.py``), so two routers never
disagree, and appends the repository's new state to the virtual storage's
change stream, from which :class:`praefect.plugins.replication.cache.StateCache`
keeps every router's in-memory view fresh.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import grpc
import redis.asyncio as aioredis

from praefect.core.errors import CallError
from praefect.core.mutation import ChangeType
from praefect.plugins.replication.events import encode_trace
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.scripts import Scripts

__all__ = [
    "CopyLease",
    "LeaseStatus",
    "MutationRecord",
    "PrimaryChange",
    "PrimaryCheck",
    "PrimaryMissing",
    "PrimaryMoved",
    "RaiseStatus",
    "ReplicaRaise",
    "RepositoryAlreadyTracked",
    "RepositoryMetadata",
    "RepositoryNotTracked",
    "RepositoryStore",
    "StateChange",
]

#: entries kept in a virtual storage's change stream (approximately); a
#: cache that falls further behind re-reads the whole state
DEFAULT_CHANGES_MAXLEN = 10_000
_STALE_RETRIES = 5
_SCAN_BATCH = 500


class RepositoryNotTracked(LookupError):
    """The repository is not tracked in its virtual storage."""

    def __init__(self, virtual_storage: str, relative_path: str) -> None:
        super().__init__(
            f"repository {relative_path!r} is not tracked in virtual storage {virtual_storage!r}"
        )


class RepositoryAlreadyTracked(ValueError):
    """track_repository on a repository that is tracked already."""

    def __init__(self, metadata: RepositoryMetadata) -> None:
        super().__init__(
            f"repository {metadata.relative_path!r} is already tracked in virtual storage "
            f"{metadata.virtual_storage!r} (primary {metadata.primary}, generation "
            f"{metadata.generation})"
        )
        self.metadata = metadata


class PrimaryCheck(enum.Enum):
    """What ``record_mutation`` does when ``primary`` is no longer the repository's primary."""

    #: record anyway (tracking, removal, ``accept-dataloss``)
    NONE = ""
    #: refuse (:class:`PrimaryMoved`) and change nothing
    REFUSE = "refuse"
    #: refuse, and bring ``source``'s replica back in line with the primary:
    #: its generation is dropped, a replication from the primary to it is
    #: queued and the intent is cleared (a write a former primary took)
    REPAIR = "repair"


class PrimaryMoved(CallError):
    """A change from a node that is no longer the repository's primary was refused.

    The router fails the client's call with ABORTED: the write is not
    acknowledged. ``repaired``: the nodes queued to be replicated from the
    primary again (the one that took the write; empty with
    ``PrimaryCheck.REFUSE``). ``metadata``: the repository after the refusal.
    """

    code = grpc.StatusCode.ABORTED

    def __init__(
        self,
        metadata: RepositoryMetadata,
        node: str,
        *,
        repaired: tuple[str, ...] = (),
    ) -> None:
        path, primary = metadata.relative_path, metadata.primary
        if repaired:
            message = (
                f"the primary of {path!r} moved from {node} to {primary} while this write was "
                f"in flight; the write was not acknowledged and will be undone on {node}: retry it"
            )
        else:
            message = (
                f"the primary of {path!r} is {primary}, no longer {node}: nothing was changed"
            )
        super().__init__(message)
        self.metadata = metadata
        self.node = node
        self.primary = primary
        self.repaired = repaired


class PrimaryMissing(CallError):
    """A write on a primary whose replica verification found missing was refused.

    The primary's repository is gone (a dead disk replaced by an empty one,
    see :mod:`praefect.plugins.replication.verification`): its replica has no
    generation, and a write into what is left there must never become the
    repository's newest copy. FAILED_PRECONDITION: the repository takes
    writes again once a replica with every acknowledged write is its primary
    (the verification worker moves it there when one answers) or an operator
    accepts the loss. ``metadata``: the repository as it is.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, metadata: RepositoryMetadata, node: str) -> None:
        path = metadata.relative_path
        super().__init__(
            f"the primary of {path!r}, {node}, has lost its copy of the repository (verification "
            f"found it missing), so the write was refused; it is accepted again once a replica "
            f"that has every acknowledged write becomes the primary: see `praefect metadata "
            f"--relative-path {path}` and `praefect dataloss`, and `praefect accept-dataloss` "
            "when no replica has them"
        )
        self.metadata = metadata
        self.node = node


def canonical_assignment(nodes: Iterable[str]) -> str:
    """The stored form of a set of nodes: sorted JSON list, no spaces."""
    return json.dumps(sorted(set(nodes)), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RepositoryMetadata:
    """What Redis knows about one repository."""

    virtual_storage: str
    relative_path: str
    generation: int
    primary: str
    assigned: tuple[str, ...]
    replica_generations: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 0
    created_at: float = 0.0

    @classmethod
    def from_hash(
        cls, virtual_storage: str, relative_path: str, fields: Mapping[str, Any]
    ) -> RepositoryMetadata:
        generations = {
            name[2:]: int(value) for name, value in fields.items() if name.startswith("g:")
        }
        assigned = json.loads(fields.get("assigned") or "[]")
        return cls(
            virtual_storage=virtual_storage,
            relative_path=relative_path,
            generation=int(fields.get("generation", 0)),
            primary=str(fields.get("primary", "")),
            assigned=tuple(str(name) for name in assigned),
            replica_generations=MappingProxyType(generations),
            version=int(fields.get("version", 0)),
            created_at=float(fields.get("created_at") or 0.0),
        )

    def replica_generation(self, storage: str) -> int:
        """The generation ``storage`` has; -1 when it has no replica."""
        return self.replica_generations.get(storage, -1)

    def is_up_to_date(self, storage: str) -> bool:
        return self.replica_generation(storage) == self.generation

    @property
    def up_to_date(self) -> tuple[str, ...]:
        """Assigned nodes at the repository's generation, in assignment order."""
        return tuple(name for name in self.assigned if self.is_up_to_date(name))

    @property
    def outdated(self) -> dict[str, int]:
        """Assigned nodes behind the repository: name -> changes they miss."""
        return {
            name: self.generation - self.replica_generation(name)
            for name in self.assigned
            if not self.is_up_to_date(name)
        }


@dataclass(frozen=True, slots=True)
class StateChange:
    """A repository's new state (``None``: no longer tracked) at ``version``."""

    virtual_storage: str
    relative_path: str
    version: int
    metadata: RepositoryMetadata | None

    @classmethod
    def from_state(
        cls, virtual_storage: str, relative_path: str, version: int, state: str
    ) -> StateChange:
        metadata = (
            RepositoryMetadata.from_hash(virtual_storage, relative_path, json.loads(state))
            if state
            else None
        )
        return cls(virtual_storage, relative_path, version, metadata)


@dataclass(frozen=True, slots=True)
class MutationRecord:
    """The result of recording a mutation: what was bumped and who was told."""

    generation: int
    version: int
    targets: tuple[str, ...]
    metadata: RepositoryMetadata | None


@dataclass(frozen=True, slots=True)
class PrimaryChange:
    """The result of set_primary/elect_primary.

    ``status``: ``ok`` (changed), ``unchanged``, ``conflict`` (the primary
    was not the expected one), ``none`` (no up-to-date candidate),
    ``behind`` (the new primary is not up to date), ``busy`` (a copy into
    the new primary, or into every up-to-date candidate, is running: try
    again when it ends), ``untracked`` or ``not-assigned``; ``primary`` is
    the primary now.
    """

    status: str
    primary: str

    @property
    def changed(self) -> bool:
        return self.status == "ok"


class LeaseStatus(enum.Enum):
    """What :meth:`RepositoryStore.take_copy_lease` did."""

    #: the lease holds: no election makes the target primary until it is released or expires
    LEASED = "leased"
    #: refused: the target is the repository's primary now (nothing may be copied into it)
    TARGET_PRIMARY = "target-primary"
    #: refused: the repository is not tracked
    UNTRACKED = "untracked"


@dataclass(frozen=True, slots=True)
class CopyLease:
    """A copy lease on (repository, target), or the refusal of one.

    ``lease_id`` is this copy's own token: releasing it never drops the
    lease of another copy into the same target. ``expires_ms``: Redis time
    (ms) at which the lease stops holding elections back (0 when refused).
    """

    status: LeaseStatus
    virtual_storage: str
    relative_path: str
    target: str
    lease_id: str = ""
    expires_ms: int = 0

    @property
    def granted(self) -> bool:
        return self.status is LeaseStatus.LEASED


class RaiseStatus(enum.Enum):
    """What :meth:`RepositoryStore.raise_after_copy` did with the target's generation."""

    #: raised to the copy's generation
    RAISED = "raised"
    #: the target already had that generation or more
    UNCHANGED = "unchanged"
    #: the repository is no longer tracked
    UNTRACKED = "untracked"
    #: the repository was created again since the copy was planned
    RECREATED = "recreated"
    #: the target is the primary now (it became primary during the copy)
    TARGET_PRIMARY = "target-primary"
    #: the source's generation was dropped, or is below the copy's
    SOURCE_BEHIND = "source-behind"
    #: the source is not the primary and has a write in flight on the repository
    SOURCE_IN_FLIGHT = "source-in-flight"


@dataclass(frozen=True, slots=True)
class ReplicaRaise:
    """The result of raise_after_copy: the status and both generations at that moment (-1: none)."""

    status: RaiseStatus
    generation: int
    source_generation: int

    @property
    def holds(self) -> bool:
        """True when the copy counts: the target is (now) at the copy's generation or above."""
        return self.status in (RaiseStatus.RAISED, RaiseStatus.UNCHANGED)


class RepositoryStore:
    """Reads and atomic changes of repository state in one Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        changes_maxlen: int = DEFAULT_CHANGES_MAXLEN,
        on_change: Callable[[StateChange], object] | None = None,
    ) -> None:
        self.client = client
        self.scripts = Scripts.register(client)
        self.changes_maxlen = changes_maxlen
        # Called with every change this store makes, so the local cache can
        # apply it before the change stream delivers it.
        self.on_change = on_change
        self._keys: dict[str, VirtualStorageKeys] = {}

    def keys(self, virtual_storage: str) -> VirtualStorageKeys:
        keys = self._keys.get(virtual_storage)
        if keys is None:
            keys = self._keys[virtual_storage] = VirtualStorageKeys(virtual_storage)
        return keys

    def _changed(self, virtual_storage: str, path: str, version: int, state: str) -> None:
        if self.on_change is not None and version:
            self.on_change(StateChange.from_state(virtual_storage, path, version, state))

    def note_change(self, virtual_storage: str, path: str, version: int, state: str) -> None:
        """Tell ``on_change`` about a change a script outside this class made (``version`` 0: none)."""
        self._changed(virtual_storage, path, version, state)

    # ------------------------------------------------------------- reads

    async def get(self, virtual_storage: str, relative_path: str) -> RepositoryMetadata | None:
        fields: dict[str, str] = await self.client.hgetall(  # type: ignore[assignment]
            self.keys(virtual_storage).repository(relative_path)
        )
        if not fields:
            return None
        return RepositoryMetadata.from_hash(virtual_storage, relative_path, fields)

    async def require(self, virtual_storage: str, relative_path: str) -> RepositoryMetadata:
        metadata = await self.get(virtual_storage, relative_path)
        if metadata is None:
            raise RepositoryNotTracked(virtual_storage, relative_path)
        return metadata

    async def version(self, virtual_storage: str) -> int:
        return int(await self.client.get(self.keys(virtual_storage).version) or 0)

    async def list_paths(self, virtual_storage: str) -> list[str]:
        paths: list[str] = [
            path async for path in self.client.sscan_iter(
                self.keys(virtual_storage).repositories, count=_SCAN_BATCH
            )
        ]
        return sorted(paths)

    async def list_repositories(self, virtual_storage: str) -> list[RepositoryMetadata]:
        """Every tracked repository, by relative path (hashes read in pipelined batches)."""
        keys = self.keys(virtual_storage)
        paths = await self.list_paths(virtual_storage)
        result: list[RepositoryMetadata] = []
        for start in range(0, len(paths), _SCAN_BATCH):
            chunk = paths[start : start + _SCAN_BATCH]
            async with self.client.pipeline(transaction=False) as pipe:
                for path in chunk:
                    pipe.hgetall(keys.repository(path))
                hashes: list[dict[str, str]] = await pipe.execute()
            result.extend(
                RepositoryMetadata.from_hash(virtual_storage, path, fields)
                for path, fields in zip(chunk, hashes, strict=True)
                if fields
            )
        return result

    async def outdated_repositories(self, virtual_storage: str) -> list[RepositoryMetadata]:
        """Repositories with at least one assigned replica behind (``praefect dataloss``)."""
        return [repo for repo in await self.list_repositories(virtual_storage) if repo.outdated]

    # ----------------------------------------------------------- changes

    async def record_mutation(
        self,
        virtual_storage: str,
        relative_path: str,
        *,
        change: ChangeType,
        source: str,
        assigned: Iterable[str],
        primary: str | None = None,
        intent_id: str | None = None,
        trace_context: Mapping[str, str] | None = None,
        created_at: float | None = None,
        targets: Iterable[str] | None = None,
        track_only: bool = False,
        check: PrimaryCheck = PrimaryCheck.NONE,
    ) -> MutationRecord:
        """Bump the generation and queue one event per target, atomically.

        In one Lua call: a repository not tracked yet becomes tracked at
        generation 0 with ``primary`` (default ``source``) and ``assigned``;
        a tracked one gets its generation incremented and ``source``'s
        replica generation set to the new value (a delete removes it); one
        event per target is appended to the target's stream; the intent
        ``intent_id`` is cleared. Targets default to the assigned nodes
        other than ``source``. When the stored assignment differs from
        ``assigned`` (this router's view was stale), the call is repeated
        with the stored one.

        ``track_only`` raises :class:`RepositoryAlreadyTracked` instead of
        bumping a tracked repository.

        ``check``: when the repository is tracked and its primary is not
        ``primary`` (default ``source``), nothing is recorded and
        :class:`PrimaryMoved` is raised; with ``PrimaryCheck.REPAIR`` the
        same atomic call drops ``source``'s replica generation, queues a
        replication from the primary to ``source`` and clears the intent.
        With any check, a change (not a delete) from a primary whose replica
        has no generation (verification found it missing) is refused with
        :class:`PrimaryMissing` and the intent cleared.
        """
        keys = self.keys(virtual_storage)
        nodes = sorted(set(assigned) | ({source} if source else set()))
        stamp = time.time() if created_at is None else created_at
        trace = encode_trace(trace_context or {})
        for _ in range(_STALE_RETRIES):
            chosen = (
                sorted(set(targets))
                if targets is not None
                else [name for name in nodes if name != source]
            )
            # Without a source there is nobody to repair: refuse only.
            repair = [keys.events(source)] if check is PrimaryCheck.REPAIR and source else []
            check_arg = PrimaryCheck.REFUSE if check is PrimaryCheck.REPAIR and not source else check
            result = await self.scripts.record_mutation(
                keys=[
                    keys.repository(relative_path),
                    keys.repositories,
                    keys.version,
                    keys.changes,
                    keys.intents,
                    *(keys.events(target) for target in chosen),
                    *repair,
                ],
                args=[
                    relative_path,
                    change.value,
                    source,
                    canonical_assignment(nodes),
                    primary or source,
                    intent_id or "",
                    self.changes_maxlen,
                    "track" if track_only else "record",
                    repr(stamp),
                    virtual_storage,
                    trace,
                    check_arg.value,
                    *chosen,
                ],
            )
            status, generation, version, state = result
            if status == "stale":
                nodes = sorted(json.loads(state))
                continue
            if status == "exists":
                raise RepositoryAlreadyTracked(
                    RepositoryMetadata.from_hash(virtual_storage, relative_path, json.loads(state))
                )
            if status == "missing":
                raise PrimaryMissing(
                    RepositoryMetadata.from_hash(virtual_storage, relative_path, json.loads(state)),
                    source,
                )
            if status == "moved":
                self._changed(virtual_storage, relative_path, int(version), state)
                raise PrimaryMoved(
                    RepositoryMetadata.from_hash(virtual_storage, relative_path, json.loads(state)),
                    primary or source,
                    repaired=(source,) if int(version) else (),
                )
            self._changed(virtual_storage, relative_path, int(version), state)
            change_record = StateChange.from_state(
                virtual_storage, relative_path, int(version), state
            )
            return MutationRecord(
                generation=int(generation),
                version=int(version),
                targets=tuple(chosen),
                metadata=change_record.metadata,
            )
        raise RuntimeError(
            f"the assignment of {relative_path!r} kept changing while recording a mutation"
        )

    async def track_repository(
        self,
        virtual_storage: str,
        relative_path: str,
        *,
        primary: str,
        assigned: Iterable[str],
        trace_context: Mapping[str, str] | None = None,
    ) -> MutationRecord:
        """Start tracking a repository that exists on ``primary``; queue its creation elsewhere.

        Raises RepositoryAlreadyTracked when it is tracked already.
        """
        return await self.record_mutation(
            virtual_storage,
            relative_path,
            change=ChangeType.CREATE,
            source=primary,
            assigned=assigned,
            primary=primary,
            trace_context=trace_context,
            track_only=True,
        )

    async def set_authoritative(
        self,
        virtual_storage: str,
        relative_path: str,
        storage: str,
        trace_context: Mapping[str, str] | None = None,
        *,
        only_if_primary: bool = False,
    ) -> MutationRecord:
        """Declare ``storage``'s replica the latest (``accept-dataloss``).

        Bumps the generation with ``storage`` at the new value, so every other
        replica is outdated and gets an event to replicate from ``storage``.
        ``only_if_primary``: only while ``storage`` is the primary, else
        :class:`PrimaryMoved` and nothing changes (a repair on behalf of a
        primary that another election may have replaced meanwhile), and only
        while ``storage`` has a generation, else :class:`PrimaryMissing`
        (verification found its replica gone meanwhile).
        """
        metadata = await self.require(virtual_storage, relative_path)
        return await self.record_mutation(
            virtual_storage,
            relative_path,
            change=ChangeType.UPDATE,
            source=storage,
            assigned=metadata.assigned,
            trace_context=trace_context,
            check=PrimaryCheck.REFUSE if only_if_primary else PrimaryCheck.NONE,
        )

    async def set_replica_generation(
        self, virtual_storage: str, relative_path: str, storage: str, generation: int
    ) -> bool:
        """Raise ``storage``'s generation to ``generation``; never lowers it.

        Returns True when it changed. Untracked repositories are left alone
        (False).
        """
        keys = self.keys(virtual_storage)
        changed, _now, version, state = await self.scripts.set_replica_generation(
            keys=[keys.repository(relative_path), keys.version, keys.changes],
            args=[relative_path, storage, generation, self.changes_maxlen],
        )
        if int(changed) == 1:
            self._changed(virtual_storage, relative_path, int(version), state)
            return True
        return False

    async def take_copy_lease(
        self, virtual_storage: str, relative_path: str, target: str, *, ttl: float
    ) -> CopyLease:
        """Before a copy into ``target``: hold its elections back for at most ``ttl`` seconds.

        Refused (``granted`` False) when ``target`` is the primary now or the
        repository is not tracked. Release it with :meth:`raise_after_copy`
        (``lease=``) or :meth:`release_copy_lease` when the copy is over;
        ``ttl`` must outlast the copy's deadline, so that a holder that dies
        mid-copy cannot leave a target electable while the node still copies.
        """
        keys = self.keys(virtual_storage)
        lease_id = uuid.uuid4().hex
        status, expires = await self.scripts.take_copy_lease(
            keys=[keys.repository(relative_path), keys.copy_leases(relative_path)],
            args=[target, lease_id, max(1, round(ttl * 1000))],
        )
        lease_status = LeaseStatus(str(status))
        return CopyLease(
            lease_status,
            virtual_storage,
            relative_path,
            target,
            lease_id if lease_status is LeaseStatus.LEASED else "",
            int(expires),
        )

    async def release_copy_lease(self, lease: CopyLease) -> bool:
        """Release ``lease`` (only this one); True if it still held. Idempotent."""
        if not lease.granted:
            return False
        keys = self.keys(lease.virtual_storage)
        released = await self.scripts.release_copy_lease(
            keys=[keys.copy_leases(lease.relative_path)], args=[lease.target, lease.lease_id]
        )
        return bool(int(released))

    async def copy_leases(self, virtual_storage: str, relative_path: str) -> dict[str, float]:
        """Targets with a copy running into them now -> seconds until their last lease expires."""
        keys = self.keys(virtual_storage)
        flat = await self.scripts.copy_leases(keys=[keys.copy_leases(relative_path)], args=[])
        return {
            str(flat[i]): int(flat[i + 1]) / 1000 for i in range(0, len(flat), 2)
        }

    async def raise_after_copy(
        self,
        virtual_storage: str,
        relative_path: str,
        target: str,
        generation: int,
        *,
        source: str,
        created_at: float = 0.0,
        lease: CopyLease | None = None,
    ) -> ReplicaRaise:
        """After a copy from ``source``: raise ``target`` to ``generation`` if the copy counts.

        ``generation`` is what ``source`` had when the copy was planned,
        ``created_at`` the repository's then (0: not checked). In one Lua
        call the target is raised only while ``source`` still has
        ``generation`` or more (its generation was not dropped meanwhile:
        it held no refused write), ``source`` has no write in flight on the
        repository unless it is the primary, the repository was not created
        again and ``target`` is not the primary. Never lowers a generation.
        ``lease``: the copy's lease, released in the same call whatever the
        outcome.
        """
        if lease is not None and (lease.virtual_storage, lease.relative_path, lease.target) != (
            virtual_storage, relative_path, target
        ):
            raise ValueError(f"{lease} is not a lease on a copy of {relative_path!r} into {target}")
        keys = self.keys(virtual_storage)
        status, now, source_now, version, state = await self.scripts.raise_after_copy(
            keys=[
                keys.repository(relative_path), keys.version, keys.changes, keys.intents,
                keys.copy_leases(relative_path),
            ],
            args=[
                relative_path, target, generation, self.changes_maxlen, source,
                repr(created_at) if created_at else "",
                lease.lease_id if lease is not None else "",
            ],
        )
        result = ReplicaRaise(RaiseStatus(str(status)), int(now), int(source_now))
        if result.status is RaiseStatus.RAISED:
            self._changed(virtual_storage, relative_path, int(version), state)
        return result

    async def remove_repository(self, virtual_storage: str, relative_path: str) -> bool:
        """Stop tracking the repository (its replicas are left alone); True if it was tracked."""
        keys = self.keys(virtual_storage)
        removed, version = await self.scripts.remove_repository(
            keys=[
                keys.repository(relative_path),
                keys.repositories,
                keys.version,
                keys.changes,
            ],
            args=[relative_path, self.changes_maxlen],
        )
        if int(removed):
            self._changed(virtual_storage, relative_path, int(version), "")
            return True
        return False

    async def set_primary(
        self,
        virtual_storage: str,
        relative_path: str,
        new_primary: str,
        *,
        expected: str | None = None,
        up_to_date: bool = False,
    ) -> PrimaryChange:
        """Make ``new_primary`` the primary if the primary is still ``expected`` (None: any).

        ``up_to_date``: only if ``new_primary``'s replica is at the
        repository's generation when the primary changes (status ``behind``
        otherwise), so a write recorded after the caller looked is not lost.
        A copy running into ``new_primary`` (a copy lease) refuses the move
        with status ``busy``: try again when it ends.
        """
        keys = self.keys(virtual_storage)
        status, primary, version, state = await self.scripts.set_primary(
            keys=[
                keys.repository(relative_path), keys.version, keys.changes,
                keys.copy_leases(relative_path),
            ],
            args=[
                relative_path, expected or "", new_primary, self.changes_maxlen,
                "1" if up_to_date else "",
            ],
        )
        if status == "ok":
            self._changed(virtual_storage, relative_path, int(version), state)
        return PrimaryChange(str(status), str(primary or ""))

    async def elect_primary(
        self, virtual_storage: str, relative_path: str, candidates: Iterable[str]
    ) -> PrimaryChange:
        """Failover: keep an up-to-date primary among ``candidates``, else take the first up-to-date one.

        ``candidates`` are the healthy nodes in order of preference. Status
        ``none`` means no candidate is up to date: the repository is
        read-only until ``accept-dataloss`` or the primary returns. A
        candidate with a copy running into it is skipped; ``busy`` means
        every up-to-date candidate is being copied into (try again when a
        copy ends).
        """
        keys = self.keys(virtual_storage)
        status, primary, version, state = await self.scripts.elect_primary(
            keys=[
                keys.repository(relative_path), keys.version, keys.changes,
                keys.copy_leases(relative_path),
            ],
            args=[relative_path, self.changes_maxlen, *candidates],
        )
        if status == "ok":
            self._changed(virtual_storage, relative_path, int(version), state)
        return PrimaryChange(str(status), str(primary or ""))

    async def set_assigned(
        self, virtual_storage: str, relative_path: str, assigned: Iterable[str]
    ) -> bool:
        """Replace the set of nodes holding a replica; True when it changed."""
        keys = self.keys(virtual_storage)
        changed, version, state = await self.scripts.set_assigned(
            keys=[keys.repository(relative_path), keys.version, keys.changes],
            args=[relative_path, canonical_assignment(assigned), self.changes_maxlen],
        )
        if int(changed) == -1:
            raise RepositoryNotTracked(virtual_storage, relative_path)
        if int(changed) == 1:
            self._changed(virtual_storage, relative_path, int(version), state)
            return True
        return False
