"""Blocking Redis reads that stay cancellable.

Two properties of redis-py's asyncio client (8.x, on Python 3.11) that the
background loops must work around:

- every reply is awaited under the client's socket timeout, so a blocking
  read (``XREAD BLOCK``) must stay below it or it fails as a timeout;
- a cancellation that lands while a command is being sent or its reply
  read under that timeout can be swallowed, leaving the command running
  and the loop alive after ``stop()``.

:func:`cancellable` runs the read in its own task and, when the caller is
cancelled, abandons it (it ends by itself when BLOCK expires or the client
closes); :func:`raise_if_cancelling` lets a loop notice a cancellation that
a command swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis

__all__ = ["blocking_read_ms", "cancellable", "raise_if_cancelling"]

T = TypeVar("T")


def blocking_read_ms(client: aioredis.Redis, wanted_ms: int) -> int:
    """``wanted_ms`` for a BLOCK argument, capped at half the client's socket timeout."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return max(1, wanted_ms)
    return max(1, min(wanted_ms, int(float(timeout) * 1000 / 2)))


def _consume(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


async def cancellable(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` so that cancelling the caller takes effect at once."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume)
        raise


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
