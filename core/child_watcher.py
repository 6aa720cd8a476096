"""Waiting for child processes without a thread per child.

On Python 3.11 asyncio waits for every child process in a thread of its
own (``ThreadedChildWatcher``: a thread started per child, blocked in
``waitpid``). The storage node starts git for nearly every call, so each
call paid for a thread start, its wake-up and its exit. A pidfd (Linux 5.3
and later) turns the child's exit into an event the loop polls like any
socket. Python 3.12 does this by default; :func:`use_pidfd_child_watcher`
makes 3.11 do the same with :class:`PidfdWatcher`, a backport of 3.12's
watcher: 3.11's own ``PidfdChildWatcher`` is bound to one event loop, and a
process that runs more than one loop (tests do) would find it attached to a
closed one. Measured: see docs/performance.md ("Child processes").
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVarTuple

__all__ = ["PidfdWatcher", "use_pidfd_child_watcher"]

log = logging.getLogger("praefect")

_Args = TypeVarTuple("_Args")


def _pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        descriptor = os.pidfd_open(os.getpid())
    except OSError:  # a kernel before 5.3, or a seccomp filter that forbids it
        return False
    os.close(descriptor)
    return True


class PidfdWatcher(asyncio.AbstractChildWatcher):
    """Each child's exit as a readable pidfd on the loop that started it."""

    def is_active(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass  # every call uses the loop running it

    def __enter__(self) -> PidfdWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def add_child_handler(
        self, pid: int, callback: Callable[[int, int, *_Args], object], *args: *_Args
    ) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

    def remove_child_handler(self, pid: int) -> bool:
        # asyncio never calls this for a child it started; the handler goes
        # when the child exits.
        return True

    @staticmethod
    def _reap(
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        loop.remove_reader(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            # Reaped by someone else: the exit status is lost.
            returncode = 255
            log.warning("child process %d was reaped elsewhere; its exit status is unknown", pid)
        else:
            returncode = os.waitstatus_to_exitcode(status)
        os.close(pidfd)
        callback(pid, returncode, *args)


def use_pidfd_child_watcher() -> bool:
    """Make asyncio wait for children through pidfds; True when it does.

    Process-wide and idempotent. Does nothing on Python 3.12 and later
    (already the default there, and child watchers are deprecated) or where
    pidfds are not available (the threaded watcher stays).
    """
    if sys.version_info >= (3, 12):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(asyncio.get_child_watcher(), PidfdWatcher):
            return True
        if not _pidfd_supported():
            return False
        asyncio.set_child_watcher(PidfdWatcher())
    return True
