"""Waiting for an event with a time limit, in loops that must stop when cancelled."""

from __future__ import annotations

import asyncio

__all__ = ["wait_for_event"]


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Until ``event`` is set or ``seconds`` passed; True when it was set.

    Not ``asyncio.timeout`` around ``event.wait()`` with the TimeoutError
    suppressed: a background loop written that way may turn a cancellation
    that arrives as its timeout expires into the TimeoutError it suppresses
    (seen on Python 3.11), and then never stops. ``asyncio.wait`` with a
    timeout never raises TimeoutError, so a cancellation always propagates.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=max(0.0, seconds))
    finally:
        waiter.cancel()
    return bool(done)
