"""Running git as a child process, without blocking the event loop.

Every git process of the node starts here so that the same rules hold
everywhere: a fixed environment (no user or system config, no prompts), a
process group of its own so that cancelling a call kills git and its
children (pack-objects, index-pack), and no zombies: the process is always
waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from praefect.node.errors import InvalidArgument

GIT_BINARY = os.environ.get("PRAEFECT_GIT_BINARY", "git")
PIPE_CHUNK_SIZE = 64 * 1024
#: The largest message the node streams git's output in: what Gitaly's
#: streamio sends (bigger messages cost the router and the client less).
MESSAGE_SIZE_LIMIT = 128 * 1024
#: How long `read_messages` may keep output that arrived waiting for more,
#: when waiting is allowed at all (see there).
HOLD_SECONDS = 0.002

# Refs and revisions come from callers; anything that git could read as an
# option or that is not a plausible revision is refused before git runs.
_FORBIDDEN_REVISION_CHARS = frozenset(" \t\n\r\x00~^:?*[\\")


def base_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/nonexistent"),
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ASKPASS": "/bin/false",
    }
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class GitResult:
    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class GitCommandError(Exception):
    def __init__(self, result: GitResult) -> None:
        self.result = result
        stderr = result.stderr.decode(errors="replace").strip()
        super().__init__(f"git {result.args[0] if result.args else ''} failed: {stderr}")


def git_argv(args: Sequence[str], git_dir: Path | None) -> list[str]:
    argv = [GIT_BINARY]
    if git_dir is not None:
        argv += ["--git-dir", str(git_dir)]
    return argv + list(args)


async def run_git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> GitResult:
    """Run git to completion and collect its output (for small outputs)."""
    async with spawn_git(args, git_dir=git_dir, cwd=cwd, env=env, stdin=stdin is not None) as process:
        stdout, stderr = await process.communicate(stdin)
    result = GitResult(tuple(args), process.returncode or 0, stdout, stderr)
    if check and not result.ok:
        raise GitCommandError(result)
    return result


@dataclass(slots=True)
class GitProcessInfo:
    """One git process as a process observer sees it (see `set_process_observer`)."""

    args: tuple[str, ...]
    pid: int | None = None
    returncode: int | None = None


ProcessObserver = Callable[[GitProcessInfo], contextlib.AbstractContextManager[object]]
_process_observer: ProcessObserver | None = None


def set_process_observer(observer: ProcessObserver | None) -> None:
    """Run every git process inside `observer(info)`, entered before the spawn
    and left once the process is reaped (node/telemetry.py: a span per
    process); None removes it."""
    global _process_observer
    _process_observer = observer


@contextlib.asynccontextmanager
async def spawn_git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bool = False,
    stderr_to_pipe: bool = True,
    pass_fds: Sequence[int] = (),
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start git; on exit from the block (normal, error or cancellation) make
    sure the process group is gone and the process reaped.

    `pass_fds`: descriptors git inherits under their own numbers (the
    ``fd::<n>`` transport); the caller keeps and closes its copies."""
    info = GitProcessInfo(tuple(args))
    observer = _process_observer
    with observer(info) if observer is not None else contextlib.nullcontext():
        process = await asyncio.create_subprocess_exec(
            *git_argv(args, git_dir),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stderr_to_pipe else asyncio.subprocess.DEVNULL,
            cwd=str(cwd) if cwd else None,
            env=base_environment(env),
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            limit=PIPE_CHUNK_SIZE * 4,
        )
        info.pid = process.pid
        try:
            yield process
        finally:
            # Shield the reap so a second cancellation cannot leave a zombie.
            await asyncio.shield(kill_and_reap(process))
            info.returncode = process.returncode


async def kill_and_reap(process: asyncio.subprocess.Process) -> None:
    """Kill git's process group if it still runs, then reap it.

    The pipes are read to their end first: asyncio's `wait()` also waits for
    every pipe to close, and a pipe paused with unread output (the client
    went away mid-stream) never would. Once the group is dead nothing writes
    to them, so this ends quickly.
    """
    if process.returncode is None:
        kill_process_group(process)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                while await stream.read(PIPE_CHUNK_SIZE):
                    pass
    await process.wait()
    # Release the pipes' file descriptors now, not in the garbage collector.
    transport = getattr(process, "_transport", None)
    if transport is not None:
        transport.close()


def kill_process_group(process: asyncio.subprocess.Process) -> None:
    # Signal only the group: calling `process.kill()` as well makes Python
    # poll the child itself and can reap it before asyncio's child watcher,
    # which then reports exit status 255.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


async def read_chunks(stream: asyncio.StreamReader, size: int = PIPE_CHUNK_SIZE) -> AsyncIterator[bytes]:
    while chunk := await stream.read(size):
        yield chunk


HoldPolicy = Callable[[bytes], bool]


async def read_messages(
    stream: asyncio.StreamReader,
    limit: int = MESSAGE_SIZE_LIMIT,
    *,
    may_hold: HoldPolicy | None = None,
    hold: float | None = None,
) -> AsyncIterator[bytes]:
    """git's output from `stream` in pieces of at most `limit` bytes, each
    meant to be sent as one message.

    git writes to its pipes in small pieces (upload-pack: 8 KiB packets),
    and a message costs the node, the router and the client about as much
    as its bytes do. A piece is whatever the pipe holds when it is read,
    plus, only when `may_hold` allows it, whatever arrives within `hold`
    seconds (default `HOLD_SECONDS`) of its first byte, up to `limit`.

    `may_hold` sees every chunk as it is read and says whether git is sure
    to write more without waiting for its client (see `OutputHold`).
    Otherwise nothing that has data waits, so a negotiation (git waiting for
    the client's next round) never stalls. The end of git's output ends a
    piece at once.
    """
    loop = asyncio.get_running_loop()
    read = stream.read
    hold_for = HOLD_SECONDS if hold is None else hold
    while chunk := await read(limit):
        # `may_hold` first: it must see every chunk to follow the framing.
        if may_hold is None or not may_hold(chunk) or len(chunk) >= limit:
            yield chunk
            continue
        parts = [chunk]
        size = len(chunk)
        deadline = loop.time() + hold_for
        while size < limit:
            try:
                async with asyncio.timeout_at(deadline):
                    # Returns whatever is buffered at once, or the next
                    # data: never more than one wait per arrival.
                    more = await read(limit - size)
            except TimeoutError:
                break  # a timed-out read consumed nothing
            if not more:
                break  # end of output: send what we have now
            parts.append(more)
            size += len(more)
            if not may_hold(more):
                break
        yield parts[0] if len(parts) == 1 else b"".join(parts)


class OutputHold:
    """Whether `read_messages` may wait for more of git's output.

    Waiting only batches output that git is certain to write without input
    from its client:

    - once git's stdin is closed (`stdin_closed()`), git cannot be waiting
      for its client: the stateless smart-HTTP calls, whose client sends the
      whole request first, and any call whose client half-closed;
    - while git is inside a side-band packet stream (upload-pack sending a
      pack, progress, receive-pack's status report): git only reads again
      after the flush packet that ends it, and a flush ends the wait. Packets
      outside side-band (the reference advertisement, ACK/NAK of
      negotiation) never wait, nor does output that is not pkt-line framed.

    It follows the pkt-line framing across chunks; a wrong guess can only
    delay output by the hold time, never stall a call.
    """

    __slots__ = ("_band", "_band_unknown", "_framed", "_header", "_remaining", "_stdin_closed")

    def __init__(self, stdin_closed: Callable[[], bool]) -> None:
        self._stdin_closed = stdin_closed
        self._framed = True  # False once the output is not pkt-lines
        self._header = b""  # the start of a packet header split across chunks
        self._remaining = 0  # payload bytes of the current packet not seen yet
        self._band = False  # the current (or last) packet is a side-band packet
        self._band_unknown = False  # its first payload byte is still to come

    def __call__(self, chunk: bytes) -> bool:
        if self._stdin_closed():
            return True
        if not self._framed:
            return False
        return self._follow(chunk)

    def _follow(self, chunk: bytes) -> bool:
        position, end = 0, len(chunk)
        while position < end:
            if self._remaining:
                if self._band_unknown:
                    # The band is the payload's first byte (1 data, 2 progress, 3 error).
                    self._band = chunk[position] in _SIDE_BANDS
                    self._band_unknown = False
                step = min(self._remaining, end - position)
                position += step
                self._remaining -= step
                continue
            needed = 4 - len(self._header)
            header = self._header + chunk[position : position + needed]
            position += needed
            if len(header) < 4:
                self._header = header
                break
            self._header = b""
            if not _is_hex(header):
                self._framed = False
                return False
            length = int(header, 16)
            self._remaining = max(length - 4, 0)
            # flush, delim and response-end packets (length < 4) end a
            # section, after which git may read; so may an empty packet.
            self._band = False
            self._band_unknown = self._remaining > 0
        # Inside a packet, the rest is already on its way (git writes a
        # packet in one write).
        return bool(self._header) or self._remaining > 0 or self._band


_SIDE_BANDS = frozenset((1, 2, 3))
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _is_hex(header: bytes) -> bool:
    return all(byte in _HEX_DIGITS for byte in header)


def validate_revision(revision: str | bytes, *, what: str = "revision") -> str:
    """Refuse revisions that git could take for an option or that are malformed.

    Returns the revision as text: object ids, ref names, `HEAD`. Range and
    reflog syntax are refused; an RPC that needs them parses them itself.
    """
    text = _decode(revision, what)
    if not text:
        raise_invalid(f"empty {what}")
    if text.startswith("-"):
        raise_invalid(f"invalid {what} {text!r}: must not start with '-'")
    if any(ch in _FORBIDDEN_REVISION_CHARS for ch in text) or ".." in text or "@{" in text:
        raise_invalid(f"invalid {what} {text!r}: contains characters not allowed in a revision")
    return text


async def validate_ref_name(ref: str | bytes, *, what: str = "reference name") -> str:
    """Check a full ref name (refs/...) with `git check-ref-format`."""
    text = _decode(ref, what)
    if not text or text.startswith("-"):
        raise_invalid(f"invalid {what} {text!r}")
    result = await run_git(["check-ref-format", text], check=False)
    if not result.ok:
        raise_invalid(f"invalid {what} {text!r}: not a valid git reference name")
    return text


def raise_invalid(message: str) -> NoReturn:
    raise InvalidArgument(message)


def _decode(value: str | bytes, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise_invalid(f"invalid {what}: not valid UTF-8")
