"""Administration of the event streams: groups, trimming, queue status.

Trimming: an event stream is only ever trimmed by the ``trim_acknowledged``
script (XTRIM MINID up to the lowest id a consumer group still needs: its
lowest pending id, or the entry after its last delivered one). Events are
appended without MAXLEN, since MAXLEN drops the oldest entries whether they
were acknowledged or not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from praefect.plugins.replication.events import EventDecodeError, ReplicationEvent
from praefect.plugins.replication.keys import VirtualStorageKeys, group_name
from praefect.plugins.replication.scripts import Scripts

__all__ = [
    "DeadLetter",
    "QueueDepth",
    "QueueStatus",
    "dead_letters",
    "ensure_group",
    "queue_depth",
    "queue_status",
    "trim_acknowledged",
]

# Counting undelivered events stops here: the CLI shows "10000+".
UNDELIVERED_COUNT_LIMIT = 10_000


async def ensure_group(client: aioredis.Redis, virtual_storage: str, target: str) -> None:
    """Create the target's stream and consumer group (reading from the start) if missing."""
    stream = VirtualStorageKeys(virtual_storage).events(target)
    try:
        await client.xgroup_create(stream, group_name(target), id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


async def trim_acknowledged(scripts: Scripts, virtual_storage: str, target: str) -> int:
    """Remove the events every group has acknowledged; returns how many."""
    stream = VirtualStorageKeys(virtual_storage).events(target)
    return int(await scripts.trim_acknowledged(keys=[stream]))


def _stream_id_time(stream_id: str) -> float:
    return int(stream_id.split("-", 1)[0]) / 1000.0


def _successor(stream_id: str) -> str:
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """The replication queue of one target node."""

    virtual_storage: str
    target: str
    #: events delivered to a worker and not acknowledged yet (in flight or in backoff)
    in_progress: int
    #: events no worker has read yet (capped at UNDELIVERED_COUNT_LIMIT)
    undelivered: int
    #: unix time of the oldest unacknowledged event's mutation, None when none
    oldest_created_at: float | None
    dead_lettered: int
    consumers: int

    @property
    def pending(self) -> int:
        """Every event not acknowledged yet."""
        return self.in_progress + self.undelivered

    def oldest_age(self, now: float | None = None) -> float | None:
        if self.oldest_created_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_created_at)


async def _created_at(client: aioredis.Redis, stream: str, stream_id: str) -> float:
    entries: Any = await client.xrange(stream, min=stream_id, max=stream_id, count=1)
    if entries:
        try:
            return float(ReplicationEvent.decode(entries[0][1], entries[0][0]).created_at)
        except EventDecodeError:
            pass
    return _stream_id_time(stream_id)


async def _group_info(client: aioredis.Redis, stream: str, group: str) -> Any:
    """XINFO GROUPS' entry of ``group``; None when no worker ever read the stream."""
    try:
        groups: Any = await client.xinfo_groups(stream)
    except ResponseError:  # no such stream: nothing was ever queued
        return None
    return next((g for g in groups if g["name"] == group), None)


async def queue_status(client: aioredis.Redis, virtual_storage: str, target: str) -> QueueStatus:
    keys = VirtualStorageKeys(virtual_storage)
    stream = keys.events(target)
    dead = int(await client.xlen(keys.dead_letters(target)))
    info = await _group_info(client, stream, group_name(target))
    if info is None:
        # No worker ever read this stream: everything in it is undelivered.
        first: Any = await client.xrange(stream, count=1)
        length = int(await client.xlen(stream))
        oldest = await _created_at(client, stream, first[0][0]) if first else None
        return QueueStatus(virtual_storage, target, 0, length, oldest, dead, 0)
    in_progress = int(info["pending"])
    oldest_times: list[float] = []
    if in_progress:
        summary: Any = await client.xpending(stream, group_name(target))
        # Acknowledged between XINFO and XPENDING: nothing pending any more.
        if summary["min"] is not None:
            oldest_times.append(await _created_at(client, stream, summary["min"]))
    undelivered_entries: Any = await client.xrange(
        stream, min=_successor(info["last-delivered-id"]), count=UNDELIVERED_COUNT_LIMIT
    )
    if undelivered_entries:
        first_id, fields = undelivered_entries[0]
        try:
            oldest_times.append(ReplicationEvent.decode(fields, first_id).created_at)
        except EventDecodeError:
            oldest_times.append(_stream_id_time(first_id))
    return QueueStatus(
        virtual_storage=virtual_storage,
        target=target,
        in_progress=in_progress,
        undelivered=len(undelivered_entries),
        oldest_created_at=min(oldest_times) if oldest_times else None,
        dead_lettered=dead,
        consumers=int(info["consumers"]),
    )


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """How many events of one target wait, and how many were given up on."""

    virtual_storage: str
    target: str
    #: events not acknowledged yet: in progress, in backoff or undelivered
    #: (the undelivered ones capped at UNDELIVERED_COUNT_LIMIT before Redis 7)
    pending: int
    #: events in the target's dead-letter stream
    dead_letters: int


async def queue_depth(client: aioredis.Redis, virtual_storage: str, target: str) -> QueueDepth:
    """The counts of :func:`queue_status` without its event lookups, for metrics.

    Three or four round trips, none decoding an event: Redis 7 reports the
    group's undelivered entries (``lag``); older servers have them counted
    with one XRANGE from the group's last delivered id.
    """
    keys = VirtualStorageKeys(virtual_storage)
    stream = keys.events(target)
    dead = int(await client.xlen(keys.dead_letters(target)))
    info = await _group_info(client, stream, group_name(target))
    if info is None:
        # No worker ever read this stream: everything in it is undelivered.
        return QueueDepth(virtual_storage, target, int(await client.xlen(stream)), dead)
    lag = info.get("lag")
    if lag is None:
        undelivered: Any = await client.xrange(
            stream, min=_successor(info["last-delivered-id"]), count=UNDELIVERED_COUNT_LIMIT
        )
        lag = len(undelivered)
    return QueueDepth(virtual_storage, target, int(info["pending"]) + int(lag), dead)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that failed every attempt, with the last error."""

    stream_id: str
    event: ReplicationEvent | None
    error: str
    failed_at: float
    fields: dict[str, str]


async def dead_letters(
    client: aioredis.Redis, virtual_storage: str, target: str, *, count: int = 100
) -> list[DeadLetter]:
    """The newest ``count`` dead-lettered events of ``target``, newest first."""
    stream = VirtualStorageKeys(virtual_storage).dead_letters(target)
    entries: Any = await client.xrevrange(stream, count=count)
    result = []
    for stream_id, fields in entries:
        try:
            event: ReplicationEvent | None = ReplicationEvent.decode(fields, stream_id)
        except EventDecodeError:
            event = None
        result.append(
            DeadLetter(
                stream_id=stream_id,
                event=event,
                error=fields.get("error", ""),
                failed_at=float(fields.get("failed_at") or _stream_id_time(stream_id)),
                fields=dict(fields),
            )
        )
    return result
