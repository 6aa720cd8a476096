"""Start real praefect processes on loopback and stop every one of them by pid.

Each process runs in a session of its own (so a Ctrl-C in the terminal
reaches only the benchmark, which then stops them in order), and is stopped
by its process-group id, which is its own pid: that also ends the workers a
`praefect serve` with ``server.processes > 1`` forked, and the git processes
a node started. Should the benchmark itself be killed outright, the kernel
sends each of them SIGTERM (Linux's parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Not anchored: forked router workers share stdout, and their lines can run together.
LISTENING = re.compile(r"praefect [\w-]+ listening on (\[[^\]]*\]:\d+|[^\s:]+:\d+)")
PRAEFECT = (sys.executable, "-m", "praefect.core.cli")
START_SECONDS = 30.0
PR_SET_PDEATHSIG = 1


@dataclass
class Started:
    """One praefect process that printed its ``listening on`` line(s)."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return "".join(self.output)

    def pids(self) -> list[int]:
        """This process and its direct children (the forked router workers)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            found = [int(pid) for pid in children.read_text().split()]
        except OSError:
            found = []
        return [self.pid, *found]


class Launcher:
    """Starts praefect processes and stops all of them, whatever happened."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._started: list[tuple[subprocess.Popen[bytes], threading.Thread]] = []

    def start(
        self, name: str, args: Sequence[str], *, listening_lines: int = 1, command: Sequence[str] = PRAEFECT
    ) -> Started:
        """Run ``praefect ARGS``; return once it printed ``listening_lines`` listening lines."""
        process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
        output: list[str] = []
        addresses: list[str] = []
        enough = threading.Event()

        def pump() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace")
                output.append(line)
                for match in LISTENING.finditer(line):
                    addresses.append(match.group(1))
                if len(addresses) >= listening_lines:
                    enough.set()

        reader = threading.Thread(target=pump, name=f"{name}-output", daemon=True)
        reader.start()
        self._started.append((process, reader))
        deadline = time.monotonic() + START_SECONDS
        while not enough.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                text = "".join(output)
                raise RuntimeError(
                    f"{name} ({' '.join(args)}) did not start within {START_SECONDS:.0f} s "
                    f"(exit status {process.poll()}):\n{text}"
                )
        if len(set(addresses)) != 1:
            raise RuntimeError(f"{name} listens on several addresses: {addresses}")
        return Started(name, process, addresses[0], output)

    def stop(self, started: Started) -> None:
        for index, (process, reader) in enumerate(self._started):
            if process is started.process:
                del self._started[index]
                _stop(process, reader)
                return

    def stop_all(self) -> None:
        """Stop every process still running, the last started first."""
        while self._started:
            process, reader = self._started.pop()
            _stop(process, reader)

    @contextlib.contextmanager
    def running(self) -> Iterator[Launcher]:
        try:
            yield self
        finally:
            self.stop_all()


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


# Loaded here, not in the forked child: no dynamic loading between fork and exec.
_LIBC = _load_libc()


def _terminate_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies, even by SIGKILL (Linux)."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes], reader: threading.Thread, grace: float = 10.0) -> None:
    """SIGTERM the process group (its pid), then SIGKILL it after ``grace`` seconds."""
    group = process.pid  # start_new_session: the group id is the pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait(5)
    # Workers or git children that outlived their parent.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    reader.join(5)
    if process.stdout is not None:
        process.stdout.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0
