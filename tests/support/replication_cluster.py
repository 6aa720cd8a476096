"""Replication test support: short data dirs, real node processes, bare repositories."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from praefect.plugins.replication.events import ReplicationEvent
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.nodes import NodeClients, NodeEndpoint
from praefect.plugins.replication.plugin import replication_runtime
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.plugins.replication.worker import ReplicationWorker, WorkerSettings
from tests.support.gitenv import git, make_work_repo
from tests.support.processes import ServerProcess, start_node

if TYPE_CHECKING:
    from praefect.core.server import RouterServer

NODE_TOKEN = "replication-node-token"
VS = "praefect"


class StartWorker(Protocol):
    """The ``run_worker`` fixture: starts a replication worker of VS for
    ``target`` (``settings``: the module's ``worker_settings``)."""

    async def __call__(
        self,
        clients: NodeClients,
        target: str,
        *,
        consumer: str = "router-a",
        settings: WorkerSettings | None = None,
    ) -> ReplicationWorker: ...


@contextmanager
def short_tmp_dir(prefix: str = "prr-") -> Iterator[Path]:
    """A directory under /tmp: a unix socket path must stay under 108 bytes,
    which pytest's deep tmp_path can exceed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class ReplicaNode:
    name: str
    storage: Path
    process: ServerProcess | None
    address: str

    def endpoint(self, virtual_storage: str = VS, token: str = NODE_TOKEN) -> NodeEndpoint:
        return NodeEndpoint(virtual_storage, self.name, self.address, token)

    def repo(self, relative_path: str) -> Path:
        return self.storage / relative_path

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


async def start_nodes(root: Path, names: list[str]) -> list[ReplicaNode]:
    """One real `praefect node serve` process per name, each serving storage NAME."""

    async def one(name: str) -> ReplicaNode:
        storage = root / name
        storage.mkdir(parents=True, exist_ok=True)
        process = await asyncio.to_thread(start_node, {name: storage}, NODE_TOKEN)
        return ReplicaNode(name, storage, process, f"tcp://{process.address}")

    return list(await asyncio.gather(*(one(name) for name in names)))


def unreachable_node(root: Path, name: str) -> ReplicaNode:
    """A node whose address has nothing listening (calls fail with UNAVAILABLE)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = root / name
    storage.mkdir(parents=True, exist_ok=True)
    return ReplicaNode(name, storage, None, f"tcp://127.0.0.1:{port}")


def make_bare_repo(storage: Path, relative_path: str, commits: int = 2) -> Path:
    """A bare repository at storage/relative_path with `commits` commits on main."""
    work = Path(tempfile.mkdtemp(prefix="prr-work-"))
    try:
        make_work_repo(work / "w", commits)
        target = storage / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        git(["clone", "-q", "--bare", str(work / "w"), str(target)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def add_commit(bare: Path, name: str) -> str:
    """Commit a new file to main of the bare repository; returns the new commit id."""
    work = Path(tempfile.mkdtemp(prefix="prr-work-"))
    try:
        git(["clone", "-q", str(bare), str(work / "w")])
        (work / "w" / f"{name}.txt").write_text(f"{name}\n")
        git(["add", "."], cwd=work / "w")
        git(["commit", "-q", "-m", name], cwd=work / "w")
        git(["push", "-q", "origin", "HEAD:main"], cwd=work / "w")
        return git(["rev-parse", "HEAD"], cwd=work / "w").strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def stream_entries(client: Any, key: str) -> list[tuple[str, dict[str, str]]]:
    """XRANGE of a whole stream as (id, fields) with text values."""
    entries: Any = await client.xrange(key)
    return [(str(entry_id), dict(fields)) for entry_id, fields in entries]


async def replication_events(client: Any, target: str) -> list[ReplicationEvent]:
    """The events in ``target``'s replication stream (virtual storage VS), oldest first."""
    return [
        ReplicationEvent.decode(fields, entry_id)
        for entry_id, fields in await stream_entries(client, VirtualStorageKeys(VS).events(target))
    ]


def refs_of(bare: Path) -> str:
    """`git show-ref` of a repository (what the checksum summarises)."""
    return git(["show-ref"], cwd=bare, check=False)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 15.0, what: str = "condition"
) -> None:
    """Poll `check` until it is true; fail with `what` after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def runtime_of_router(server: RouterServer) -> ReplicationRuntime:
    """The replication runtime of a started in-process router."""
    assert server.router is not None, "the router is not started"
    runtime = replication_runtime(server.router)
    assert runtime is not None, "the replication plugin did not start"
    return runtime
