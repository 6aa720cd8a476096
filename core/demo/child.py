"""Runs ``praefect ARGS`` as a child of the demo that dies with the demo.

``python -m praefect.core.demo.child PARENT_PID ARGS...`` asks the kernel
to send SIGTERM to this process when its parent dies (Linux's
``PR_SET_PDEATHSIG``), exits at once if the parent died before that was
armed, and then runs the praefect command line with ``ARGS`` in this same
process.

The demo starts its children this way rather than with a ``preexec_fn``:
that would make Python fork (instead of vfork) a process that has gRPC
threads, which gRPC warns about and which is unsafe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if not argv or not argv[0].isdigit():
        sys.exit("usage: python -m praefect.core.demo.child PARENT_PID ARGS...")
    parent = int(argv[0])
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(1)  # the demo died before the death signal was armed
    from praefect.core.cli import main as praefect

    praefect(args=argv[1:], prog_name="praefect")


if __name__ == "__main__":
    main(sys.argv[1:])
