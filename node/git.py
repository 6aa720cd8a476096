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
