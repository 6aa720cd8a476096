"""wait_for_event: set, timed out, and a cancellation that always stops the loop."""

from __future__ import annotations

import asyncio
import random

from praefect.core.waits import wait_for_event


async def test_true_when_the_event_is_set_and_false_after_the_time_limit() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_for_event(event, 10) is True
    assert await wait_for_event(asyncio.Event(), 0.01) is False
    assert await wait_for_event(asyncio.Event(), -1) is False


async def test_a_background_loop_always_stops_when_cancelled() -> None:
    """Cancel loops at random moments, many of them as their short waits expire."""

    async def loop(event: asyncio.Event) -> None:
        while True:
            await wait_for_event(event, 0.001)

    for _ in range(300):
        task = asyncio.create_task(loop(asyncio.Event()))
        await asyncio.sleep(random.random() * 0.003)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the loop went on after it was cancelled"
        assert task.cancelled()
