"""Replay workers: bring a target node up to date, event by event.

One :class:`ReplicationWorker` per (virtual storage, target node) per
process, reading the target's stream in the target's consumer group with a
consumer name per router (or per ``praefect replicate`` process):

1. XREADGROUP new events; hold them by repository. Events of one repository
   are coalesced: only the newest (highest ``sequence``) is carried out, the
   others are acknowledged with it.
2. Update/create: read the repository's state, pick an up-to-date source
   (the primary first), call ReplicateRepository on the target (deadline,
   the target's own token, the source in ``gitaly-servers``), raise the
   target's generation to the source's, then XACK. Delete: RemoveRepository
   on the target (unless the repository was tracked again since), then XACK.
   A target already at the event's generation is acknowledged at once, and
   so is one that is the repository's primary now: nothing is ever
   replicated into the primary (it would overwrite writes it took). The
   raise is conditional (:meth:`RepositoryStore.raise_after_copy`): when
   the source's generation was dropped during the copy (it held a refused
   write that the copy may have taken), the target is left as it was and
   the event is retried, planned again from the state then.
   The copy runs under a *copy lease* on (repository, target)
   (:meth:`RepositoryStore.take_copy_lease`): taken atomically with the
   check that the target is not the primary, released by the raise (or on
   any failure), it keeps every election from making the target primary
   while the copy may still overwrite its refs. Its expiry (the call's
   deadline plus ``lease_slack``) bounds how long a worker that died
   mid-copy holds those elections back.
3. Failure: the newest event is appended again with ``attempt + 1`` and a
   ``not_before`` (exponential backoff with jitter) while the originals are
   acknowledged, in one MULTI; after ``max_attempts`` it goes to the
   dead-letter stream instead. Nothing is dropped silently.
   A target that cannot be reached at all (it does not answer a health
   check either) uses up no attempt: with ``target_probe_interval`` set,
   the worker holds every event until the target answers again, probing it
   at that interval, so a node that was down for an hour still converges
   when it returns, without a single event dead-lettered.
4. Events a worker holds stay pending under its consumer name; it refreshes
   their idle time (XCLAIM JUSTID) while it holds them. Events idle longer
   than ``claim_idle`` belong to a consumer that died: XAUTOCLAIM takes them.
5. The stream is trimmed only up to what the group acknowledged.

Each replay is a ``replicate <change>`` consumer span
(:func:`praefect.core.telemetry.replay_span`): a trace of its own, linked
to the write's published trace context. Its call to the target is a client
span (:func:`praefect.core.telemetry.node_call_span`) whose context the
call carries, so the target node's spans continue the replay's trace. With
:class:`~praefect.core.telemetry.ReplicationMetrics` (``metrics=``) every
replay records its delay and
duration, and every event given up on counts as dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from redis.exceptions import RedisError

from praefect.core.mutation import ChangeType
from praefect.core.telemetry.metrics import ReplicationMetrics
from praefect.core.telemetry.replication import node_call_span, replay_span
from praefect.core.waits import wait_for_event
from praefect.plugins.replication.events import EventDecodeError, ReplicationEvent
from praefect.plugins.replication.keys import VirtualStorageKeys, group_name
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.redis_io import (
    blocking_read_ms,
    cancellable,
    raise_if_cancelling,
)
from praefect.plugins.replication.state import (
    CopyLease,
    LeaseStatus,
    RaiseStatus,
    ReplicaRaise,
    RepositoryMetadata,
    RepositoryStore,
)
from praefect.plugins.replication.streams import ensure_group, trim_acknowledged

log = logging.getLogger("praefect.replication.worker")

REPLICATE_REPOSITORY = "/gitaly.RepositoryService/ReplicateRepository"
REMOVE_REPOSITORY = "/gitaly.RepositoryService/RemoveRepository"

__all__ = ["ReplicationWorker", "WorkerPool", "WorkerSettings", "WorkerStats"]


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker paces itself. Times in seconds."""

    batch_size: int = 50
    #: attempts before an event goes to the dead-letter stream
    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: the backoff varies by up to this fraction either way
    backoff_jitter: float = 0.2
    #: an event pending this long on a consumer that stopped refreshing it is claimed
    claim_idle: float = 60.0
    #: how long one XREADGROUP waits for new events
    block: float = 2.0
    #: deadline of ReplicateRepository / RemoveRepository
    call_timeout: float = 300.0
    #: a copy lease lasts ``call_timeout`` plus this: it must outlast the
    #: copy on the node (which stops at the call's deadline) even when the
    #: worker that holds it dies and never releases it
    lease_slack: float = 10.0
    #: repositories replicated at the same time to one target
    concurrency: int = 4
    trim_interval: float = 10.0
    #: stop reading while this many events are held
    max_held: int = 5_000
    #: seconds between health probes of a target that could not be reached,
    #: while its events are held without using up attempts; 0: off (an
    #: unreachable target fails like any other error)
    target_probe_interval: float = 0.0
    #: deadline of one such health probe
    probe_timeout: float = 2.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1`` after ``attempt`` failures (1, 2, ...)."""
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** max(0, attempt - 1))
        spread = base * self.backoff_jitter
        jitter = (rng or random.Random()).uniform(-spread, spread)
        return max(0.0, base + jitter)


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker (for tests, logs and metrics)."""

    events_read: int = 0
    events_acked: int = 0
    replicate_calls: int = 0
    remove_calls: int = 0
    skipped: int = 0
    retried: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    #: failures that found the target unreachable (no attempt used)
    target_down: int = 0
    #: health probes of a target that was down
    target_probes: int = 0
    #: copies after which the target was not raised (the event was retried)
    not_raised: int = 0


class NoSourceError(RuntimeError):
    """No replica has the generation the event needs."""


class CopyNotCounted(RuntimeError):
    """The copy ran, but the target was not raised: it may hold a change nobody acknowledged."""


@dataclass(slots=True)
class _Held:
    events: list[ReplicationEvent] = field(default_factory=list)

    @property
    def newest(self) -> ReplicationEvent:
        return max(self.events, key=_order)

    @property
    def due(self) -> float:
        return float(self.newest.not_before)


def _order(event: ReplicationEvent) -> tuple[int, int, int]:
    ms, _, seq = (event.stream_id or "0-0").partition("-")
    return (event.sequence, int(ms), int(seq or 0))


class ReplicationWorker:
    """Replays the events of one target node of one virtual storage."""

    def __init__(
        self,
        client: aioredis.Redis,
        store: RepositoryStore,
        nodes: NodeClients,
        virtual_storage: str,
        target: str,
        *,
        consumer: str,
        settings: WorkerSettings | None = None,
        metrics: ReplicationMetrics | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.nodes = nodes
        self.virtual_storage = virtual_storage
        self.target = target
        self.consumer = consumer
        self.settings = settings or WorkerSettings()
        #: where replays record delay, duration and dead letters (None: nowhere)
        self.metrics = metrics
        keys = VirtualStorageKeys(virtual_storage)
        self.stream = keys.events(target)
        self.dead_stream = keys.dead_letters(target)
        self.group = group_name(target)
        self.stats = WorkerStats()
        self._held: dict[str, _Held] = {}
        self._in_flight: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._main: asyncio.Task[None] | None = None
        self._rng = random.Random()
        # Set while the target does not answer: nothing is dispatched, and
        # the target is probed at ``_next_probe`` (a time.time() value).
        self._target_down = False
        self._next_probe = 0.0

    def __repr__(self) -> str:
        return f"ReplicationWorker({self.virtual_storage}/{self.target} as {self.consumer})"

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await ensure_group(self.client, self.virtual_storage, self.target)
        self._main = asyncio.create_task(self.run(), name=f"replicate:{self.virtual_storage}/{self.target}")
        self._main.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%r stopped: %r; its events stay pending for another worker", self, task.exception())

    async def stop(self) -> None:
        """Stop at once; events in hand stay pending and are claimed later (or by our restart)."""
        task, self._main = self._main, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        await self._prepare()
        reader = asyncio.create_task(self._read_loop(), name=f"read:{self.stream}")
        next_claim = next_heartbeat = next_trim = 0.0
        try:
            while True:
                raise_if_cancelling()
                now = time.monotonic()
                if now >= next_claim:
                    await self._guarded(self._claim_abandoned())
                    next_claim = now + self.settings.claim_idle / 2
                if now >= next_heartbeat:
                    await self._guarded(self._heartbeat())
                    next_heartbeat = now + self.settings.claim_idle / 4
                if now >= next_trim:
                    await self._guarded(trim_acknowledged(self.store.scripts, self.virtual_storage, self.target))
                    next_trim = now + self.settings.trim_interval
                if self._target_down and time.time() >= self._next_probe:
                    await self._probe_target()
                next_due = self._dispatch(time.time())
                wait = min(
                    next_claim - now,
                    next_heartbeat - now,
                    next_trim - now,
                    max(0.0, next_due - time.time()),
                )
                if reader.done():
                    reader.result()  # surfaces the reader's crash
                # A Redis command above may have swallowed a cancellation
                # (see redis_io): notice it before waiting up to trim_interval.
                raise_if_cancelling()
                await wait_for_event(self._wake, wait)
                self._wake.clear()
        finally:
            reader.cancel()
            tasks = [*self._tasks, reader]
            for task in self._tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _guarded(self, work: Any) -> Any:
        try:
            return await work
        except (RedisError, OSError) as error:
            log.warning("%r: Redis call failed: %s", self, error)
            return None

    # ------------------------------------------------------------ intake

    async def _prepare(self) -> None:
        """Create the group and take back our own pending events, waiting for Redis if need be."""
        delay = 0.1
        while True:
            raise_if_cancelling()
            try:
                await ensure_group(self.client, self.virtual_storage, self.target)
                await self._read_own_pending()
                return
            except (RedisError, OSError) as error:
                log.warning("%r: cannot start reading (%s); retrying in %.1f s", self, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read_own_pending(self) -> None:
        """Events pending under our consumer name from a previous life of this process."""
        last = "0-0"
        while True:
            response: Any = await self.client.xreadgroup(
                self.group, self.consumer, {self.stream: last}, count=self.settings.batch_size
            )
            entries = response[0][1] if response else []
            if not entries:
                return
            await self._take(entries)
            last = entries[-1][0]

    async def _read_loop(self) -> None:
        delay = 0.1
        while True:
            raise_if_cancelling()
            await self._room.wait()
            try:
                response: Any = await cancellable(
                    self.client.xreadgroup(
                        self.group,
                        self.consumer,
                        {self.stream: ">"},
                        count=self.settings.batch_size,
                        block=blocking_read_ms(self.client, int(self.settings.block * 1000)),
                    )
                )
                delay = 0.1
            except (RedisError, OSError) as error:
                log.warning("%r: reading events failed (%s); retrying in %.1f s", self, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                if "NOGROUP" in str(error):
                    # The stream or group is gone (a Redis that lost its data):
                    # start over from whatever the stream holds now.
                    await self._guarded(ensure_group(self.client, self.virtual_storage, self.target))
                continue
            for _stream, entries in response or ():
                await self._take(entries)

    async def _take(self, entries: Iterable[Any]) -> None:
        for entry in entries:
            if entry is None or entry[1] is None:
                continue  # deleted while pending (cannot happen: we never trim pending events)
            stream_id, fields = entry
            self.stats.events_read += 1
            try:
                event = ReplicationEvent.decode(fields, stream_id)
            except EventDecodeError as error:
                # If this fails the entry stays pending and is claimed again later.
                await self._guarded(self._dead_letter_raw(stream_id, fields, str(error)))
                continue
            self._held.setdefault(event.relative_path, _Held()).events.append(event)
        if self._held_count() >= self.settings.max_held:
            self._room.clear()
        self._wake.set()

    def _held_count(self) -> int:
        return sum(len(held.events) for held in self._held.values())

    async def _claim_abandoned(self) -> None:
        """XAUTOCLAIM events left pending by consumers that stopped refreshing them."""
        start = "0-0"
        for _ in range(100):  # bounded: at most 100 batches per round
            response: Any = await self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                int(self.settings.claim_idle * 1000),
                start_id=start,
                count=self.settings.batch_size,
            )
            start, entries = response[0], response[1]
            claimed = [entry for entry in entries if entry and entry[1] is not None]
            if claimed:
                self.stats.claimed += len(claimed)
                log.info("%r: claimed %d events of a consumer that stopped", self, len(claimed))
                await self._take(claimed)
            if start == "0-0":
                return

    async def _heartbeat(self) -> None:
        """Reset the idle time of every event we hold, so nobody claims them."""
        ids: list[Any] = [
            event.stream_id for held in self._held.values() for event in held.events if event.stream_id
        ]
        ids += [stream_id for batch in self._in_flight.values() for stream_id in batch if stream_id]
        for start in range(0, len(ids), 500):
            await self.client.xclaim(
                self.stream, self.group, self.consumer, 0, ids[start : start + 500], justid=True
            )

    # ---------------------------------------------------------- dispatch

    def _dispatch(self, now: float) -> float:
        """Start due repositories; return when the next held one is due."""
        if self._target_down:
            return self._next_probe
        next_due = float("inf")
        for path in list(self._held):
            if path in self._in_flight:
                continue
            held = self._held[path]
            if held.due > now:
                next_due = min(next_due, held.due)
                continue
            if len(self._in_flight) >= self.settings.concurrency:
                return now + self.settings.block
            del self._held[path]
            self._in_flight[path] = [event.stream_id for event in held.events if event.stream_id]
            task = asyncio.create_task(self._process(path, held.events))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        if self._held_count() < self.settings.max_held:
            self._room.set()
        return next_due

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def _process(self, path: str, events: list[ReplicationEvent]) -> None:
        newest = max(events, key=_order)
        ids = [event.stream_id for event in events if event.stream_id]
        try:
            # One consumer span per replay, its own trace linked to the
            # write; the node calls below carry its context.
            with replay_span(newest, metrics=self.metrics) as span:
                span.set_attributes(
                    {"praefect.generation": newest.generation, "praefect.coalesced": len(events)}
                )
                try:
                    outcome = await self._carry_out(newest)
                except (RedisError, OSError):
                    raise
                except CopyNotCounted as refused:
                    # Not a failure of the call: plan again (the source that
                    # held the refused write no longer qualifies).
                    retried = await self._failed(newest, ids, refused)
                    span.set_attribute("praefect.outcome", f"{refused}; {retried}")
                    return
                except Exception as error:
                    _mark_failed(span, error)
                    if await self._target_unreachable(error):
                        # Still pending under our name; no attempt used.
                        span.set_attribute("praefect.outcome", "held: the target does not answer")
                        self._hold_again(path, events, time.time())
                        return
                    span.set_attribute("praefect.outcome", await self._failed(newest, ids, error))
                    return
                span.set_attribute("praefect.outcome", outcome)
                await self._ack(ids)
                log.debug("%r: %s %s (%d events)", self, outcome, path, len(events))
        except (RedisError, OSError) as error:
            # Redis is unavailable: keep the events (they are still pending
            # under our name) and try again after a pause.
            log.warning("%r: Redis failed while replicating %s (%s); retrying", self, path, error)
            self._hold_again(path, events, time.time() + self.settings.backoff(1, self._rng))
        finally:
            self._in_flight.pop(path, None)

    def _hold_again(self, path: str, events: list[ReplicationEvent], not_before: float) -> None:
        held = self._held.setdefault(path, _Held())
        held.events.extend(_with_not_before(event, not_before) for event in events)

    # ------------------------------------------------------- target down

    async def _target_unreachable(self, error: Exception) -> bool:
        """After a failed call: True (and hold everything) when the target itself is down."""
        if self.settings.target_probe_interval <= 0:
            return False
        if not isinstance(error, grpc.aio.AioRpcError) or error.code() not in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            return False
        if await self.nodes.reachable(
            self.virtual_storage, self.target, deadline=self._probe_deadline()
        ):
            return False
        self.stats.target_down += 1
        if not self._target_down:
            self._target_down = True
            self._next_probe = time.time() + self.settings.target_probe_interval
            log.warning(
                "%r: the target does not answer (%s); holding its events until it does, "
                "probing every %.1f s",
                self, _describe(error), self.settings.target_probe_interval,
            )
        return True

    def _probe_deadline(self) -> float:
        # Short enough that the heartbeat (every claim_idle / 4) stays on time.
        return min(self.settings.probe_timeout, self.settings.claim_idle / 4)

    async def _probe_target(self) -> None:
        self.stats.target_probes += 1
        if await self.nodes.reachable(
            self.virtual_storage, self.target, deadline=self._probe_deadline()
        ):
            self._target_down = False
            log.info("%r: the target answers again; resuming %d held events", self, self._held_count())
        else:
            self._next_probe = time.time() + self.settings.target_probe_interval

    async def _ack(self, ids: list[str]) -> None:
        if ids:
            await self.client.xack(self.stream, self.group, *ids)
            self.stats.events_acked += len(ids)

    # ------------------------------------------------------- replication

    async def _carry_out(self, event: ReplicationEvent) -> str:
        metadata = await self.store.get(event.virtual_storage, event.relative_path)
        if event.change is ChangeType.DELETE:
            if metadata is not None and (
                self.target in metadata.assigned or metadata.version > event.sequence
            ):
                self.stats.skipped += 1
                return "skipped (tracked again since the delete)"
            self.stats.remove_calls += 1
            with node_call_span(REMOVE_REPOSITORY, event.virtual_storage, self.target):
                await self.nodes.remove(
                    event.virtual_storage,
                    event.relative_path,
                    node=self.target,
                    deadline=self.settings.call_timeout,
                )
            return "removed"
        if metadata is None:
            self.stats.skipped += 1
            return "skipped (no longer tracked)"
        if self.target not in metadata.assigned:
            self.stats.skipped += 1
            return "skipped (no longer assigned)"
        if event.generation > metadata.generation:
            # Generations only grow while a repository exists: this event
            # belongs to an earlier life of a path deleted and created again.
            self.stats.skipped += 1
            return "skipped (the repository was created again since)"
        if metadata.primary == self.target:
            return self._skip_primary(event)
        current = metadata.replica_generation(self.target)
        if current >= 0 and current >= event.generation:
            self.stats.skipped += 1
            return "skipped (already at the generation)"
        source = self._choose_source(metadata, event)
        source_generation = metadata.replica_generation(source)
        # No election makes the target primary while the copy may still
        # overwrite its refs; refused if one already did since the read above.
        lease = await self.store.take_copy_lease(
            event.virtual_storage,
            event.relative_path,
            self.target,
            ttl=self.settings.call_timeout + self.settings.lease_slack,
        )
        if lease.status is LeaseStatus.TARGET_PRIMARY:
            return self._skip_primary(event)
        if not lease.granted:
            self.stats.skipped += 1
            return "skipped (no longer tracked)"
        released = False
        try:
            self.stats.replicate_calls += 1
            with node_call_span(REPLICATE_REPOSITORY, event.virtual_storage, self.target) as span:
                span.set_attribute("praefect.source", source)
                await self.nodes.replicate(
                    event.virtual_storage,
                    event.relative_path,
                    source=source,
                    target=self.target,
                    deadline=self.settings.call_timeout,
                )
            # The source actually used (maybe not the event's) must still vouch
            # for the copy: see RepositoryStore.raise_after_copy. The same call
            # releases the lease.
            result = await self.store.raise_after_copy(
                event.virtual_storage,
                event.relative_path,
                self.target,
                source_generation,
                source=source,
                created_at=metadata.created_at,
                lease=lease,
            )
            released = True
        finally:
            if not released:
                await self._release(lease)
        return self._copied(event, source, source_generation, result)

    def _skip_primary(self, event: ReplicationEvent) -> str:
        # Queued while the target was a secondary, replayed after a failover
        # made it the primary: a copy into it would overwrite the writes it
        # has taken as primary. Its own generation says what it has; the
        # others replicate from it.
        self.stats.skipped += 1
        log.info(
            "%r: not replicating %s into %s: it is the primary now (event of generation %d)",
            self, event.relative_path, self.target, event.generation,
        )
        return "skipped: target is now the primary"

    async def _release(self, lease: CopyLease) -> None:
        """Release the lease of a copy that failed, so elections need not wait for its expiry."""
        try:
            await self.store.release_copy_lease(lease)
        except (RedisError, OSError) as error:
            log.warning(
                "%r: cannot release the copy lease on %s (%s); elections of %s wait until it "
                "expires",
                self, lease.relative_path, error, self.target,
            )

    def _copied(
        self, event: ReplicationEvent, source: str, generation: int, result: ReplicaRaise
    ) -> str:
        """The outcome of a copy whose raise was ``result``; raises CopyNotCounted to retry."""
        path = event.relative_path
        if result.holds:
            return f"replicated from {source} at generation {generation}"
        if result.status is RaiseStatus.UNTRACKED:
            return f"replicated from {source}; not raised: the repository is no longer tracked"
        if result.status is RaiseStatus.TARGET_PRIMARY:
            # A defence: the copy lease keeps every election and move from
            # picking the target while the copy runs, so this needs a lease
            # that expired mid-copy or a change of primary that ignores
            # leases. Then whatever it took as primary may be gone.
            log.error(
                "%r: %s became the primary of %s while it was being replicated from %s; "
                "writes it took as primary during the copy may have been overwritten",
                self, self.target, path, source,
            )
            return (
                f"replicated from {source}; not raised: the target became the primary "
                "during the copy"
            )
        self.stats.not_raised += 1
        raise CopyNotCounted(
            f"copied from {source} but not raised to generation {generation}: "
            f"{_why_not_counted(source, result)}"
        )

    def _choose_source(self, metadata: RepositoryMetadata, event: ReplicationEvent) -> str:
        configured = {node.name for node in self.nodes.endpoints(event.virtual_storage)}
        candidates = [
            name
            for name in dict.fromkeys((metadata.primary, event.source, *metadata.assigned))
            if name and name != self.target and name in configured
        ]
        current = [name for name in candidates if metadata.is_up_to_date(name)]
        sufficient = current or [
            name for name in candidates if metadata.replica_generation(name) >= event.generation
        ]
        if not sufficient:
            raise NoSourceError(
                f"no replica of {event.relative_path!r} has generation {event.generation} "
                f"(generations: {dict(metadata.replica_generations)})"
            )
        # Later attempts try the other sources in turn, in case one is down.
        return str(sufficient[event.attempt % len(sufficient)])

    async def _failed(self, event: ReplicationEvent, ids: list[str], error: Exception) -> str:
        """Queue the event again with backoff, or dead-letter it; returns which."""
        attempts = event.attempt + 1
        reason = _describe(error)
        if attempts >= self.settings.max_attempts:
            fields: dict[Any, Any] = event.encode()
            fields.update(
                error=reason,
                attempts=str(attempts),
                failed_at=repr(time.time()),
                coalesced=str(len(ids)),
            )
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead_stream, fields)
                if ids:
                    pipe.xack(self.stream, self.group, *ids)
                await pipe.execute()
            self.stats.dead_lettered += 1
            self.stats.events_acked += len(ids)
            self._count_dead_lettered()
            log.error(
                "%r: giving up on %s after %d attempts, event moved to %s: %s",
                self, event.relative_path, attempts, self.dead_stream, reason,
            )
            return f"dead-lettered after {attempts} attempts"
        delay = self.settings.backoff(attempts, self._rng)
        retry = event.retry(time.time() + delay)
        async with self.client.pipeline(transaction=True) as pipe:
            retry_fields: dict[Any, Any] = retry.encode()
            pipe.xadd(self.stream, retry_fields)
            if ids:
                pipe.xack(self.stream, self.group, *ids)
            await pipe.execute()
        self.stats.retried += 1
        self.stats.events_acked += len(ids)
        log.warning(
            "%r: attempt %d of %d for %s failed (%s); next in %.1f s",
            self, attempts, self.settings.max_attempts, event.relative_path, reason, delay,
        )
        return f"attempt {attempts} of {self.settings.max_attempts} failed; next in {delay:.1f} s"

    def _count_dead_lettered(self) -> None:
        if self.metrics is not None:
            self.metrics.count_dead_lettered(self.virtual_storage, self.target)

    async def _dead_letter_raw(self, stream_id: str, fields: Mapping[str, str], reason: str) -> None:
        payload: dict[Any, Any] = dict(fields)
        payload.update(error=reason, failed_at=repr(time.time()), original_id=stream_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_stream, payload)
            pipe.xack(self.stream, self.group, stream_id)
            await pipe.execute()
        self.stats.dead_lettered += 1
        self._count_dead_lettered()
        log.error("%r: unreadable event %s moved to %s: %s", self, stream_id, self.dead_stream, reason)


def _why_not_counted(source: str, result: ReplicaRaise) -> str:
    if result.status is RaiseStatus.SOURCE_BEHIND:
        dropped = result.source_generation < 0
        now = "was dropped" if dropped else f"went down to {result.source_generation}"
        return f"{source}'s generation {now} during the copy (it held a write that was refused)"
    if result.status is RaiseStatus.SOURCE_IN_FLIGHT:
        return f"{source} is no longer the primary and has a write in flight, to be refused"
    if result.status is RaiseStatus.RECREATED:
        return "the repository was created again during the copy"
    return str(result.status.value)


def _with_not_before(event: ReplicationEvent, not_before: float) -> ReplicationEvent:
    return replace(event, not_before=not_before)


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def _mark_failed(span: trace.Span, error: Exception) -> None:
    """The replay failed (whatever happens to its events next)."""
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, _describe(error)))


class WorkerPool:
    """One worker per (virtual storage, node): what a router or ``praefect replicate`` runs."""

    def __init__(
        self,
        client: aioredis.Redis,
        store: RepositoryStore,
        nodes: NodeClients,
        *,
        consumer: str,
        settings: WorkerSettings | None = None,
        metrics: ReplicationMetrics | None = None,
    ) -> None:
        self.workers = [
            ReplicationWorker(
                client, store, nodes, node.virtual_storage, node.name,
                consumer=consumer, settings=settings, metrics=metrics,
            )
            for node in nodes.endpoints()
        ]

    async def start(self) -> None:
        for worker in self.workers:
            await worker.start()

    async def stop(self) -> None:
        for worker in self.workers:
            await worker.stop()

    def worker(self, virtual_storage: str, target: str) -> ReplicationWorker:
        for worker in self.workers:
            if worker.virtual_storage == virtual_storage and worker.target == target:
                return worker
        raise LookupError(f"no worker for {target!r} in {virtual_storage!r}")
