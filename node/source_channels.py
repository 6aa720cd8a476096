"""One gRPC channel per source node, shared by the replications from it.

A replication target talks to the source node named in the call's
``gitaly-servers`` header. Opening a channel per replication costs a TCP
connection and an HTTP/2 handshake on both nodes each time; replications
come in streams from the same few sources, so the channel is kept and
reused:

* `source_channel(target)` lends the event loop's channel to ``target``
  (created on first use) for the duration of an ``async with`` block;
* a channel nobody has used for `IDLE_TIMEOUT` seconds is closed;
* a channel whose call failed with UNAVAILABLE is dropped (`discard`), so
  that the next replication connects afresh instead of waiting out gRPC's
  reconnection backoff; the backoff is also capped, for calls in between;
* `close_source_channels()` closes them all; the node calls it on shutdown.

gRPC channels belong to the event loop that created them, so each loop has
its own set (tests run several loops in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from grpc import aio

IDLE_TIMEOUT = 60.0
CHANNEL_OPTIONS = (
    # A restarted source is reachable again within a second.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(eq=False)
class _Entry:
    channel: aio.Channel
    users: int = 0
    expiry: asyncio.TimerHandle | None = None
    closed: bool = False


@dataclass(eq=False)
class SourceChannels:
    """The channels of one event loop, by gRPC target (``host:port``, ``unix:...``)."""

    idle_timeout: float = IDLE_TIMEOUT
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def use(self, target: str) -> AsyncIterator[aio.Channel]:
        """The channel to `target`, not closed before the block ends."""
        entry = self._entries.get(target)
        if entry is None:
            entry = self._entries[target] = _Entry(aio.insecure_channel(target, options=CHANNEL_OPTIONS))
        if entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None
        entry.users += 1
        try:
            yield entry.channel
        finally:
            entry.users -= 1
            if entry.users == 0:
                if self._entries.get(target) is entry:
                    loop = asyncio.get_running_loop()
                    entry.expiry = loop.call_later(self.idle_timeout, self._expire, target, entry)
                else:  # discarded while in use
                    self._close_later(entry)

    def discard(self, target: str) -> None:
        """Forget the channel to `target`; it closes once its last user is done."""
        entry = self._entries.pop(target, None)
        if entry is not None and entry.users == 0:
            self._close_later(entry)

    def _expire(self, target: str, entry: _Entry) -> None:
        if self._entries.get(target) is entry and entry.users == 0:
            del self._entries[target]
            self._close_later(entry)

    def _close_later(self, entry: _Entry) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()
        if entry.closed:
            return
        entry.closed = True
        task = asyncio.get_running_loop().create_task(entry.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every channel now (calls still running on them are cancelled)."""
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            self._close_later(entry)
        await asyncio.gather(*self._closing, return_exceptions=True)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SourceChannels] = weakref.WeakKeyDictionary()


def source_channels() -> SourceChannels:
    """The running event loop's channels."""
    loop = asyncio.get_running_loop()
    channels = _per_loop.get(loop)
    if channels is None:
        channels = _per_loop[loop] = SourceChannels()
    return channels


def source_channel(target: str) -> contextlib.AbstractAsyncContextManager[aio.Channel]:
    """``async with source_channel("host:port") as channel``: see `SourceChannels.use`."""
    return source_channels().use(target)


async def close_source_channels() -> None:
    """Close the running loop's channels to source nodes (at node shutdown)."""
    channels = _per_loop.pop(asyncio.get_running_loop(), None)
    if channels is not None:
        await channels.close()
