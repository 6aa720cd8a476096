"""Running the demo as a command: work directory, signals, and leaving nothing behind.

- the first Ctrl-C (or SIGTERM, or SIGHUP when the terminal closes) stops every process in order (gateway,
  router with its Redis, nodes), each by its process group; a second one
  SIGKILLs them all at once;
- whatever happens (an exception, a child that died, Ctrl-C before the
  event loop runs), every child's process group gets SIGKILL before the
  command returns, and grandchildren orphaned on the way (this process is
  their subreaper on Linux) are killed and reaped;
- a temporary work directory is removed afterwards unless something
  failed (its logs are then kept and their place printed); a directory
  given with ``--workdir`` is always kept.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from praefect.core.demo.cluster import DemoCluster, DemoSetupError, Ports
from praefect.core.demo.gitrun import HistoryShape
from praefect.core.demo.interactive import InteractiveDemo
from praefect.core.demo.processes import ChildStartError, become_subreaper, stop_orphans
from praefect.core.demo.scenario import Scenario

__all__ = ["run_demo"]

#: exit status when Ctrl-C ends the scenario
INTERRUPTED = 130


def _temporary_workdir() -> Path:
    # Under /tmp rather than $TMPDIR: the embedded Redis's unix socket path
    # must stay under about 100 bytes.
    base = "/tmp" if Path("/tmp").is_dir() else None
    return Path(tempfile.mkdtemp(prefix="praefect-demo-", dir=base))


async def _supervise(
    cluster: DemoCluster,
    body: Callable[[], Awaitable[int]],
    say: Callable[[str], None],
    interrupted_status: int,
) -> int:
    """Run ``body``; the first signal cancels it, a second kills every child at once."""
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(body())
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            say("stopping every process the demo started (Ctrl-C again kills them at once)")
            work.cancel()
        else:
            say("killing every process the demo started")
            cluster.kill_now()

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
            handled.append(signum)
    try:
        try:
            return await work
        except asyncio.CancelledError:
            if signals == 0:
                raise
            return interrupted_status
        finally:
            await cluster.stop()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def run_demo(
    *,
    workdir: Path | None,
    base_port: int | None,
    scenario: bool,
    console: Console | None = None,
    shape: HistoryShape | None = None,
) -> int:
    """``praefect demo``; returns the exit status."""
    console = console or Console(highlight=False)
    own_workdir = workdir is None
    chosen = workdir.expanduser().absolute() if workdir is not None else _temporary_workdir()

    def say(text: str) -> None:
        # The terminal may be gone (SIGHUP): stopping must go on regardless.
        with contextlib.suppress(OSError):
            console.print(text, highlight=False, markup=False, soft_wrap=True)

    try:
        ports = Ports.from_base(base_port) if base_port is not None else Ports.free()
        cluster = DemoCluster(chosen, ports=ports)
    except DemoSetupError as error:
        say(f"praefect demo: {error}")
        if own_workdir:
            shutil.rmtree(chosen, ignore_errors=True)
        return 2

    if scenario:
        runner = Scenario(cluster, report=say, shape=shape, encoding=sys.stdout.encoding)

        async def body() -> int:
            return 0 if await runner.run() else 1

        interrupted_status = INTERRUPTED
    else:
        demo = InteractiveDemo(cluster, console, live=console.is_terminal)
        body = demo.run
        interrupted_status = 0

    become_subreaper()
    atexit.register(cluster.kill_now)
    status = 1
    try:
        status = asyncio.run(_supervise(cluster, body, say, interrupted_status))
    except KeyboardInterrupt:
        status = interrupted_status
    except DemoSetupError as error:
        say(f"praefect demo: {error}")
        status = 2
    except ChildStartError as error:
        say(f"praefect demo: {error}; its last lines:")
        for line in error.tail.splitlines():
            say(f"    {line}")
        status = 1
    finally:
        cluster.kill_now()
        stop_orphans()
        atexit.unregister(cluster.kill_now)
    if own_workdir and status == 0:
        shutil.rmtree(chosen, ignore_errors=True)
        say(f"stopped every process the demo started and removed {chosen}")
    else:
        say(f"stopped every process the demo started; logs are in {cluster.logs_dir}")
    return status
