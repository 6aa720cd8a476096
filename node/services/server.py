"""ServerService: what this node runs and the state of its storages.

The proto marks ServerService `intercepted`: a client of the router never
reaches a node's ServerService, because the router answers these calls
itself by calling every node and reporting their storages under virtual
storage names. The node answers for its own storages only.

Readability and writability are probed, not assumed: a storage counts as
writeable only if a probe file can be created and removed under
``<root>/+praefect/`` (a full or read-only filesystem fails the probe even
when permission bits, or running as root, would let os.access say yes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.repository_args import INTERNAL_DIRECTORY
from praefect.node.services.base import NodeServicer
from praefect.node.services.base import rpc as _rpc
from praefect.protos.gitaly import server_pb2, server_pb2_grpc

# Bound with an explicit type: mypy run on single files cannot follow the
# editable install's import hook and would otherwise see `rpc` as untyped.
rpc: Callable[[Callable[..., Any]], Callable[..., Any]] = _rpc

log = logging.getLogger("praefect.node")

# The node's own directory in each storage, which no repository path may enter.
METADATA_DIRECTORY = INTERNAL_DIRECTORY
FILESYSTEM_ID_FILE = "filesystem_id"
UNKNOWN_FS_TYPE = "unknown"
PROC_MOUNTS = Path("/proc/mounts")
# /proc/mounts writes space, tab, newline and backslash as octal (\040).
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class StorageProbe:
    readable: bool
    writeable: bool
    fs_type: str
    filesystem_id: str


def probe_readable(root: Path) -> bool:
    try:
        with os.scandir(root) as entries:
            next(entries, None)
    except OSError:
        return False
    return True


def probe_writeable(root: Path) -> bool:
    """Create, sync and remove a small file under <root>/+praefect/."""
    probe = root / METADATA_DIRECTORY / f"probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        probe.parent.mkdir(exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"praefect write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError:
        with contextlib.suppress(OSError):
            probe.unlink()
        return False
    return True


def filesystem_id(root: Path) -> str:
    """The storage's stable UUID, created on first use.

    A new id is written to a temporary file and hard-linked into place, so
    that concurrent first calls all end up reporting the same id.
    """
    target = root / METADATA_DIRECTORY / FILESYSTEM_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_id(target)
    target.parent.mkdir(exist_ok=True)
    candidate = target.with_name(f"{FILESYSTEM_ID_FILE}.{uuid.uuid4().hex}.tmp")
    candidate.write_text(f"{uuid.uuid4()}\n")
    try:
        os.link(candidate, target)
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return _read_id(target)


def _read_id(path: Path) -> str:
    text = path.read_text().strip()
    return str(uuid.UUID(text))


def filesystem_type(path: Path, mounts_file: Path = PROC_MOUNTS) -> str:
    """The type of the filesystem holding `path`, from the longest matching
    mount point in /proc/mounts; "unknown" when that cannot be told."""
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return UNKNOWN_FS_TYPE
    resolved = path.resolve()
    best: tuple[int, str] = (-1, UNKNOWN_FS_TYPE)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1]))
        if resolved == mount_point or mount_point in resolved.parents:
            depth = len(mount_point.parts)
            if depth >= best[0]:  # later entries over-mount earlier ones
                best = (depth, fields[2])
    return best[1]


def probe_storage(root: Path) -> StorageProbe:
    readable = probe_readable(root)
    writeable = readable and probe_writeable(root)
    fs_id = ""
    if readable:  # an existing id is still readable on a read-only storage
        try:
            fs_id = filesystem_id(root)
        except (OSError, ValueError) as error:
            log.warning("storage filesystem id unreadable: %s", type(error).__name__)
    return StorageProbe(readable, writeable, filesystem_type(root), fs_id)


class ServerService(NodeServicer, server_pb2_grpc.ServerServiceServicer):  # type: ignore[misc, unused-ignore]
    @rpc
    async def ServerInfo(
        self, request: server_pb2.ServerInfoRequest, context: aio.ServicerContext
    ) -> server_pb2.ServerInfoResponse:
        names = self.ctx.locator.storage_names
        # Probes touch the disk; a slow or hung filesystem must not stall
        # the event loop, so each runs in a worker thread.
        probes = await asyncio.gather(
            *(asyncio.to_thread(probe_storage, self.ctx.locator.storage_root(name)) for name in names)
        )
        return server_pb2.ServerInfoResponse(
            server_version=self.ctx.server_version,
            git_version=self.ctx.git_version,
            storage_statuses=[
                server_pb2.ServerInfoResponse.StorageStatus(
                    storage_name=name,
                    readable=probe.readable,
                    writeable=probe.writeable,
                    fs_type=probe.fs_type,
                    filesystem_id=probe.filesystem_id,
                )
                for name, probe in zip(names, probes, strict=True)
            ],
        )

    @rpc
    async def DiskStatistics(
        self, request: server_pb2.DiskStatisticsRequest, context: aio.ServicerContext
    ) -> server_pb2.DiskStatisticsResponse:
        statuses = []
        for name in self.ctx.locator.storage_names:
            root = self.ctx.locator.storage_root(name)
            try:
                stat = await asyncio.to_thread(os.statvfs, root)
            except OSError as error:
                # As Gitaly does: a storage whose filesystem cannot be read
                # is left out, and the operator finds why in the log.
                log.error("disk statistics of storage %s: %s", name, error.strerror)
                continue
            statuses.append(
                server_pb2.DiskStatisticsResponse.StorageStatus(
                    storage_name=name,
                    available=stat.f_bavail * stat.f_frsize,
                    used=(stat.f_blocks - stat.f_bfree) * stat.f_frsize,
                )
            )
        return server_pb2.DiskStatisticsResponse(storage_statuses=statuses)


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    server_pb2_grpc.add_ServerServiceServicer_to_server(ServerService(ctx), server)
