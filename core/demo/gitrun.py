"""Plain ``git`` as a child process, and generated histories to push.

The demo uses git the way a person would (clone, push, fetch over HTTP),
with a clean configuration: no system or global config (so no credential
helper stores the demo's password, no hooks, no aliases) and never a
password prompt.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GitFailed",
    "HistoryShape",
    "git_environment",
    "import_history",
    "list_refs",
    "run_git",
]

_IDENTITY = {
    "GIT_AUTHOR_NAME": "Praefect Demo",
    "GIT_AUTHOR_EMAIL": "demo@praefect.invalid",
    "GIT_COMMITTER_NAME": "Praefect Demo",
    "GIT_COMMITTER_EMAIL": "demo@praefect.invalid",
}


class GitFailed(RuntimeError):
    """git exited with a non-zero status; the message has its stderr (secrets masked)."""

    def __init__(self, args: Sequence[str], status: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} failed with status {status}: {stderr.strip()}")
        self.status = status
        self.stderr = stderr


def git_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the demo runs git in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(_IDENTITY)
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "LC_ALL": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    time_limit: float = 300.0,
    secrets: Sequence[str] = (),
) -> str:
    """Run ``git ARGS``; its stdout. Raises :class:`GitFailed` or TimeoutError.

    ``secrets`` (a password in a URL) are masked in the error message.
    """
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=git_environment(),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), time_limit)
    except BaseException:
        # Timed out or cancelled (Ctrl-C): git and whatever it started go too.
        if process.returncode is None:
            os.killpg(process.pid, 9)
        await process.wait()
        raise
    if process.returncode != 0:
        shown = [_mask(arg, secrets) for arg in args]
        raise GitFailed(shown, process.returncode or 0, _mask(stderr.decode(errors="replace"), secrets))
    return stdout.decode(errors="replace")


def _mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def list_refs(git_dir: Path, *patterns: str) -> dict[str, str]:
    """ref name -> object id of the refs matching ``patterns`` (all refs without)."""
    output = await run_git(
        ["--git-dir", str(git_dir), "for-each-ref", "--format=%(refname) %(objectname)", *patterns]
    )
    return dict(line.split(" ", 1) for line in output.splitlines() if line)


@dataclass(frozen=True, slots=True)
class HistoryShape:
    """What :func:`import_history` writes.

    ``commits`` commits on ``branch``; ``branches`` more branches
    (``topic-N``: a few commits forked from the main line); ``tags``
    annotated tags (``vN``) spread over the main line; with ``big_file``
    bytes, one more commit on top adding that much random data.
    """

    commits: int = 300
    branches: int = 4
    tags: int = 8
    big_file: int = 0
    branch: str = "main"
    seed: int = 8


_FILES = 40
_WHEN = 1_700_000_000


class _Stream:
    def __init__(self) -> None:
        self.data = bytearray()

    def line(self, text: str) -> None:
        self.data += text.encode() + b"\n"

    def blob(self, payload: bytes) -> None:
        self.data += b"data %d\n" % len(payload) + payload + b"\n"


async def import_history(git_dir: Path, shape: HistoryShape, *, parent: str | None = None) -> int:
    """Write a generated history into the repository at ``git_dir`` with ``git fast-import``.

    The main line continues ``parent`` (a commit id; None starts a new
    history). Returns the number of commits written.
    """
    rng = random.Random(shape.seed)
    words = ["replica", "primary", "router", "generation", "checksum", "event", "node", "push"]
    stream = _Stream()
    mark = 0
    main_ref = f"refs/heads/{shape.branch}"

    def commit(ref: str, message: str, start: str | None, changes: int) -> int:
        nonlocal mark
        mark += 1
        stream.line(f"commit {ref}")
        stream.line(f"mark :{mark}")
        stream.line(f"author Praefect Demo <demo@praefect.invalid> {_WHEN + mark} +0000")
        stream.line(f"committer Praefect Demo <demo@praefect.invalid> {_WHEN + mark} +0000")
        stream.blob(message.encode())
        if start is not None:
            stream.line(f"from {start}")
        for _ in range(changes):
            index = rng.randrange(_FILES)
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
            stream.line(f"M 644 inline src/module_{index:02d}.txt")
            stream.blob(f"# module {index}, commit {mark}\n{text}\n".encode())
        return mark

    main_marks: list[int] = []
    start: str | None = parent
    for n in range(1, shape.commits + 1):
        main_marks.append(commit(main_ref, f"Change {n}: {rng.choice(words)}", start, rng.randint(1, 3)))
        start = None  # the next commit continues this branch
    for n in range(1, shape.branches + 1):
        fork = main_marks[(n * len(main_marks)) // (shape.branches + 1)] if main_marks else None
        branch_start = f":{fork}" if fork is not None else parent
        for k in range(1, 4):
            commit(f"refs/heads/topic-{n}", f"Topic {n}, step {k}", branch_start if k == 1 else None, 1)
    for n in range(1, shape.tags + 1):
        if not main_marks:
            break
        target = main_marks[(n * (len(main_marks) - 1)) // shape.tags]
        stream.line(f"tag v{n}.0")
        stream.line(f"from :{target}")
        stream.line(f"tagger Praefect Demo <demo@praefect.invalid> {_WHEN + target} +0000")
        stream.blob(f"Release {n}.0\n".encode())
    if shape.big_file:
        mark += 1
        stream.line(f"commit {main_ref}")
        stream.line(f"mark :{mark}")
        stream.line(f"committer Praefect Demo <demo@praefect.invalid> {_WHEN + mark} +0000")
        stream.blob(b"Add a large binary file")
        if not main_marks and parent is not None:
            stream.line(f"from {parent}")
        stream.line("M 644 inline assets/large.bin")
        stream.blob(rng.randbytes(shape.big_file))
    await run_git(["--git-dir", str(git_dir), "fast-import", "--quiet"], stdin=bytes(stream.data))
    return mark
