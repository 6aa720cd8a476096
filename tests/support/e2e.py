"""End-to-end test support: a `praefect demo` process, process trees, big histories,
and the repository checksum computed independently of the node."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gateway import fast_import_history
from tests.support.gitenv import git, git_env
from tests.support.processes import PRAEFECT

# ------------------------------------------------------------ processes


async def poll_until(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """Poll `check` every 0.2 s until it is true; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.2)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1])


def _state_of(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def descendants(pid: int) -> set[int]:
    """Every process below `pid` in the process tree right now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    state = _state_of(pid)
    return state is not None and state != "Z"


def still_alive(pids: set[int], timeout: float) -> set[int]:
    """The pids of `pids` still alive after waiting up to `timeout` seconds for them to go."""
    deadline = time.monotonic() + timeout
    living = {pid for pid in pids if alive(pid)}
    while living and time.monotonic() < deadline:
        time.sleep(0.05)
        living = {pid for pid in living if alive(pid)}
    return living


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


@dataclass
class DemoProcess:
    """`praefect demo ARGS` with its output (stdout and stderr, no terminal) collected by a thread."""

    args: list[str]
    process: subprocess.Popen[bytes] = field(init=False)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = git_env({"PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"})
        self.process = subprocess.Popen(
            [*PRAEFECT, "demo", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern`; fails with the output so far after `timeout` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"praefect demo printed no line matching {pattern!r} "
                        f"(exit status {self.process.poll()}):\n{self.output}"
                    )
                self._changed.wait(min(left, 0.5))

    def wait(self, timeout: float) -> int:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"praefect demo did not exit within {timeout} s:\n{self.output}") from None
        self._reader.join(5)
        return status

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def kill_tree(self) -> None:
        """Last resort of a failing test: nothing may outlive it."""
        for pid in descendants(self.process.pid) | {self.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill_tree()
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


# ------------------------------------------------------------- histories


def history_with_large_file(path: Path, commits: int, branches: int, tags: int, large_file: int) -> Path:
    """A bare repository: `commits` commits on main, `branches` branches, `tags`
    annotated tags (tests.support.gateway.fast_import_history), then one commit
    on main adding `large_file` bytes of random data as assets/large.bin."""
    fast_import_history(path, commits, branches=branches, tags=tags)
    payload = os.urandom(large_file)
    stream = b"".join(
        [
            b"commit refs/heads/main\n",
            b"committer Test <test@example.com> 1800000000 +0000\n",
            b"data 15\nadd large file\n",
            b"from refs/heads/main^0\n",
            b"M 644 inline assets/large.bin\n",
            b"data %d\n" % len(payload),
            payload,
            b"\n",
        ]
    )
    git(["fast-import", "--quiet"], cwd=path, input=stream)
    return path


def refs_with_objects(git_dir: Path) -> dict[str, str]:
    """Every ref of the repository (branches, tags, anything under refs/) -> object id."""
    output = git(["--git-dir", str(git_dir), "for-each-ref", "--format=%(refname) %(objectname)"])
    return dict(line.split(" ", 1) for line in output.splitlines())


def expected_checksum(git_dir: Path) -> str:
    """The repository checksum of docs/node.md, computed here from `git show-ref --head`:
    SHA-1 of each `<oid> <ref>` line, XORed together, as 40 hex digits."""
    value = 0
    for line in git(["--git-dir", str(git_dir), "show-ref", "--head"]).splitlines():
        value ^= int.from_bytes(hashlib.sha1(line.encode()).digest(), "big")
    return f"{value:040x}"
