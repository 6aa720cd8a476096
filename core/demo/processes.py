"""Child processes of the demo: each in its own process group, stopped by pid.

Every child is a session leader (``start_new_session``), so the terminal's
Ctrl-C reaches only the demo, which then stops its children in order, and
so that one ``killpg`` reaches whatever a child started (the router's
embedded Redis, a node's git processes). On Linux each child also gets
SIGTERM if the demo itself dies (``PR_SET_PDEATHSIG``, armed by
:mod:`praefect.core.demo.child`, see :func:`praefect_argv`), and the demo
can make itself a child subreaper so that grandchildren orphaned by a child
that died are handed to it and can be stopped too
(:func:`become_subreaper`, :func:`stop_orphans`).

A child's stdout and stderr go, line by line, to a log file and to a tail
kept in memory (for error reports); the line ``praefect <kind> listening on
HOST:PORT`` tells that it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PRAEFECT",
    "ChildProcess",
    "ChildStartError",
    "become_subreaper",
    "child_pids",
    "praefect_argv",
    "stop_orphans",
]

#: how to run the ``praefect`` command with this interpreter
PRAEFECT: tuple[str, ...] = (sys.executable, "-m", "praefect.core.cli")

LISTENING = re.compile(r"^praefect [\w-]+ listening on (\S+)")
_PR_SET_CHILD_SUBREAPER = 36
_TAIL_LINES = 400
_READ_SIZE = 64 * 1024


class ChildStartError(RuntimeError):
    """A child exited or stayed silent instead of saying where it listens."""

    def __init__(self, name: str, reason: str, tail: str) -> None:
        super().__init__(f"{name} did not start: {reason}")
        self.name = name
        self.reason = reason
        self.tail = tail


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def praefect_argv(*args: str) -> list[str]:
    """The command line of a child running ``praefect ARGS`` that dies with this process."""
    if sys.platform.startswith("linux"):
        return [sys.executable, "-m", "praefect.core.demo.child", str(os.getpid()), *args]
    return [*PRAEFECT, *args]


def become_subreaper() -> bool:
    """Make this process adopt the orphaned descendants of its children (Linux).

    Returns False where that is not possible; :func:`stop_orphans` then
    finds nothing to stop.
    """
    libc = _libc()
    return bool(libc is not None and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def child_pids(parent: int | None = None) -> list[int]:
    """The pids whose parent is ``parent`` (default: this process), from /proc."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def stop_orphans(known: Sequence[int] = ()) -> list[int]:
    """SIGKILL and reap every child of this process not in ``known``.

    After :func:`become_subreaper` these are the descendants whose own
    parent died. Returns their pids.
    """
    orphans = [pid for pid in child_pids() if pid not in known]
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in orphans:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return orphans


class ChildProcess:
    """One long-running praefect process (node, router, gateway)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.address: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._ready: asyncio.Future[str] | None = None

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name} pid={self.pid} address={self.address}>"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True between start and exit (a child not reaped yet counts as exited)."""
        return self._process is not None and self._process.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    def tail(self, lines: int = 30, hide: Sequence[str] = ()) -> str:
        """The last ``lines`` lines of the child's output, without those containing a ``hide`` text."""
        kept = [line for line in self._tail if not any(text in line for text in hide)]
        return "\n".join(kept[-lines:])

    async def start(self, time_limit: float = 30.0) -> str:
        """Start the child and wait for its ``listening on`` line; returns the address.

        Raises :class:`ChildStartError` (the child is stopped) when it exits
        first or does not say it listens within ``time_limit`` seconds.
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.address = None
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._copy_output(), name=f"{self.name} output")
        ready = self._ready
        exited = asyncio.create_task(self._process.wait())
        waiters: set[asyncio.Future[Any]] = {ready, exited}
        try:
            done, _ = await asyncio.wait(waiters, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED)
            if ready in done:
                self.address = ready.result()
                return self.address
            reason = (
                f"it exited with status {self._process.returncode}"
                if exited in done
                else f"it did not say where it listens within {time_limit:.0f} s"
            )
        finally:
            if not exited.done():
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited
        await self.stop(grace=2)
        raise ChildStartError(self.name, reason, self.tail())

    async def _copy_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        pending = b""
        log = await asyncio.to_thread(open, self.log_path, "ab", buffering=0)
        try:
            while True:
                chunk = await stream.read(_READ_SIZE)
                if not chunk:
                    break
                await asyncio.to_thread(log.write, chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(raw.decode(errors="replace").rstrip("\r"))
            if pending:
                self._line(pending.decode(errors="replace"))
        finally:
            log.close()

    def _line(self, line: str) -> None:
        self._tail.append(line)
        if self._ready is not None and not self._ready.done():
            match = LISTENING.match(line)
            if match:
                self._ready.set_result(match.group(1))

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (nothing if it is gone)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def kill_now(self) -> None:
        """SIGKILL the child's process group at once (synchronous: for a second Ctrl-C)."""
        self.signal_group(signal.SIGKILL)

    async def wait(self, time_limit: float | None = None) -> int | None:
        """Wait until the child exited (at most ``time_limit`` seconds); its status or None."""
        if self._process is None:
            return None
        try:
            return await asyncio.wait_for(self._process.wait(), time_limit)
        except TimeoutError:
            return None

    async def stop(self, grace: float = 10.0, signum: int = signal.SIGTERM) -> int | None:
        """``signum`` to the group, SIGKILL after ``grace`` seconds; wait and collect the output.

        The group gets SIGKILL in the end in any case, so whatever the child
        started and left behind goes with it.
        """
        if self._process is None:
            return None
        if self._process.returncode is None:
            self.signal_group(signum)
            if await self.wait(grace) is None:
                self.kill_now()
        await self._process.wait()
        self.kill_now()
        if self._pump is not None:
            try:
                await asyncio.wait_for(self._pump, 5)
            except TimeoutError:
                # Something in the group still holds the pipe: it was killed
                # above, so the pump ends with it; do not wait for it here.
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            self._pump = None
        return self._process.returncode
