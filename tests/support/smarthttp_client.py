"""Helpers for the transport tests: the git client run without blocking the
event loop, repositories placed in a storage, raw upload-pack requests, and
finding git processes through /proc."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from praefect.node import pktline
from tests.support.gitenv import git, git_env


@dataclass(frozen=True)
class GitRun:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> GitRun:
        assert self.returncode == 0, f"git failed ({self.returncode}):\n{self.stderr}"
        return self


GIT_CLIENT_SECONDS = 120
PROCESS_WAIT_SECONDS = 10


async def git_client(args: Sequence[str], cwd: Path | None = None) -> GitRun:
    """Run the real git client as a child process without blocking the loop
    (an in-process node serves on the same loop)."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=git_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(GIT_CLIENT_SECONDS):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"git {' '.join(args)} did not finish within {GIT_CLIENT_SECONDS} s") from None
    return GitRun(process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def bare_copy(work: Path, bare: Path, *, linked: bool = False) -> Path:
    """Put `work`'s history into a new bare repository at `bare` (a storage
    path) with HEAD pointing where `work`'s HEAD does: packed, or with
    `linked` sharing `work`'s object files through hard links (instant even
    for large files; the objects stay loose)."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    mode = "--local" if linked else "--no-local"
    git(["clone", "-q", "--bare", mode, str(work), str(bare)])
    return bare


def refs_of(repository: Path) -> dict[str, str]:
    """ref name -> object id of every ref of a (bare or work) repository."""
    output = git(["for-each-ref", "--format=%(refname) %(objectname)"], cwd=repository)
    refs = {}
    for line in output.splitlines():
        name, oid = line.split(" ")
        refs[name] = oid
    return refs


def head_of(repository: Path, ref: str = "HEAD") -> str:
    return git(["rev-parse", ref], cwd=repository).strip()


def upload_pack_v0_request(want: str) -> bytes:
    """A protocol v0 stateless-RPC fetch of `want` with nothing in common:
    upload-pack answers with NAK and the whole pack, on side band 1."""
    request: bytes = (
        pktline.encode(f"want {want} side-band-64k ofs-delta no-progress\n")
        + pktline.FLUSH
        + pktline.encode("done\n")
    )
    return request


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    needle = text.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def process_group(pgid: int) -> list[int]:
    """Pids of the processes in process group `pgid` (git and the helpers it
    started, such as pack-objects: spawn_git gives each git its own group)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def process_state(pid: int) -> str | None:
    """The state letter of `pid` (Z for a zombie), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


async def wait_for_processes(text: str) -> list[int]:
    deadline = time.monotonic() + PROCESS_WAIT_SECONDS
    while not (pids := processes_mentioning(text)):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no process mentioning {text!r} appeared within {PROCESS_WAIT_SECONDS} s"
            )
        await asyncio.sleep(0.02)
    return pids


async def wait_until_reaped(pids: Sequence[int]) -> None:
    """Wait until every pid has left /proc: killed and waited for (a zombie
    stays in /proc with state Z until its parent reaps it)."""
    deadline = time.monotonic() + PROCESS_WAIT_SECONDS
    while remaining := {pid: state for pid in pids if (state := process_state(pid)) is not None}:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"git processes still present {PROCESS_WAIT_SECONDS} s after the call ended "
                f"(pid: state, Z = zombie): {remaining}"
            )
        await asyncio.sleep(0.02)
