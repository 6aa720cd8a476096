"""A clone of a large repository streams through the node without holding
the pack in memory: the node process's RSS is sampled every 50 ms while the
real git client clones about 200 MB of incompressible data through the HTTP
bridge, and must grow by less than 50 MB. Run with -s to see the figures."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.gitenv import git, git_env
from tests.support.http_bridge import GitHttpBridge
from tests.support.processes import start_node
from tests.support.smarthttp_client import refs_of

TOKEN = "large-clone-token"
BLOB_COUNT = 4
BLOB_SIZE = 50 * 1024 * 1024
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
SAMPLE_INTERVAL = 0.05

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class RssSampler:
    """Samples a process's resident set size in a background thread."""

    pid: int
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self.samples.append(rss_bytes(self.pid))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.samples.append(rss_bytes(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(rss_bytes(self.pid))


def random_chunks(total: int, chunk: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    while total > 0:
        size = min(chunk, total)
        total -= size
        yield os.urandom(size)


def write_large_repository(bare: Path) -> None:
    """A bare repository with one commit of BLOB_COUNT incompressible files."""
    git(["init", "-q", "--bare", "-b", "main", str(bare)])
    # Stored, not deflated, straight into one pack: random data does not
    # compress, blobs over bigFileThreshold skip the delta search, and an
    # unpackLimit of 1 keeps fast-import from exploding the pack into loose
    # objects (which the node would then have to deflate on every clone).
    settings = [
        "core.compression=0",
        "pack.compression=0",
        "core.bigFileThreshold=1m",
        "fastimport.unpackLimit=1",
    ]
    importer = subprocess.Popen(
        ["git", *(arg for pair in settings for arg in ("-c", pair)), "fast-import", "--quiet"],
        cwd=bare,
        env=git_env(),
        stdin=subprocess.PIPE,
    )
    assert importer.stdin is not None
    for mark in range(1, BLOB_COUNT + 1):
        importer.stdin.write(b"blob\nmark :%d\ndata %d\n" % (mark, BLOB_SIZE))
        for chunk in random_chunks(BLOB_SIZE):
            importer.stdin.write(chunk)
        importer.stdin.write(b"\n")
    message = b"large random files"
    importer.stdin.write(
        b"commit refs/heads/main\n"
        b"committer Test <test@example.com> 1700000000 +0000\n"
        b"data %d\n%s\n" % (len(message), message)
    )
    for mark in range(1, BLOB_COUNT + 1):
        importer.stdin.write(b"M 100644 :%d random-%d.bin\n" % (mark, mark))
    importer.stdin.close()
    assert importer.wait(120) == 0, "git fast-import failed"


def test_large_clone_streams_without_growing_the_node(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    bare = storage / "large.git"
    started = time.monotonic()
    write_large_repository(bare)
    setup_seconds = time.monotonic() - started

    node = start_node({"default": storage}, TOKEN)
    try:
        with GitHttpBridge(node.address, TOKEN) as bridge:
            # One small call first, so that one-time allocations of the
            # first call (gRPC, imports) do not count as growth.
            git(["ls-remote", bridge.url("large.git")])
            with RssSampler(node.pid) as sampler:
                clone_started = time.monotonic()
                clone = tmp_path / "clone"
                git(["clone", "-q", "--bare", bridge.url("large.git"), str(clone)])
                clone_seconds = time.monotonic() - clone_started
        assert not bridge.errors, bridge.errors
    finally:
        node.stop()

    baseline, peak = sampler.samples[0], max(sampler.samples)
    pack_bytes = sum(p.stat().st_size for p in (clone / "objects" / "pack").glob("*.pack"))
    mib = 1024 * 1024
    print(
        f"\nlarge clone: repository {BLOB_COUNT * BLOB_SIZE / mib:.0f} MiB (setup {setup_seconds:.1f} s), "
        f"pack received {pack_bytes / mib:.0f} MiB in {clone_seconds:.1f} s "
        f"({pack_bytes / mib / clone_seconds:.0f} MiB/s); node RSS baseline {baseline / mib:.1f} MiB, "
        f"peak {peak / mib:.1f} MiB, growth {(peak - baseline) / mib:.1f} MiB "
        f"over {len(sampler.samples)} samples"
    )
    assert len(sampler.samples) >= 5, "too few RSS samples to say anything"
    assert peak - baseline < RSS_GROWTH_LIMIT, (
        f"node RSS grew by {(peak - baseline) / mib:.1f} MiB while serving the clone "
        f"(limit {RSS_GROWTH_LIMIT / mib:.0f} MiB)"
    )
    assert pack_bytes > BLOB_COUNT * BLOB_SIZE
    assert refs_of(clone) == refs_of(bare)
    git(["fsck", "--no-progress"], cwd=clone)
