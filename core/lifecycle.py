"""The shared `serve` loop of every praefect server (router, node, gateway).

Each server has `startup()` and `shutdown()`; this runs one until SIGTERM or
SIGINT, printing the `praefect <kind> listening on HOST:PORT` line that
scripts and tests wait for. Signal handlers go in before the line is
printed: whoever reads it may signal at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

log = logging.getLogger("praefect")


async def serve_until_stopped(
    kind: str,
    *,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
    bound_addr: Callable[[], str | None],
    stopping: asyncio.Event,
    install_signal_handlers: bool = True,
    stop_message: str = "stopping",
) -> None:
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stopping.set)
    await startup()
    # One write of the whole line: forked router workers share stdout, and a
    # line written in one piece (under PIPE_BUF) is never interleaved.
    sys.stdout.write(f"praefect {kind} listening on {bound_addr()}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
        log.info("%s", stop_message)
    finally:
        await shutdown()
