"""OptimizeRepository: keep a repository cheap to serve.

* ``STRATEGY_EAGER``: full repack of everything reachable into one pack with
  a bitmap; unreachable objects go to a cruft pack and are dropped once
  older than two weeks (so objects of a push in flight are never lost);
  then refs are packed and the commit-graph is rewritten.
* ``STRATEGY_HEURISTICAL`` (and unspecified): loose objects are packed
  incrementally; a full repack only when packs have piled up.

Offloading and rehydration (Gitaly's object-storage strategies) are not
supported by this node.
"""

from __future__ import annotations

from pathlib import Path

from praefect.node.errors import InvalidArgument
from praefect.node.git import run_git
from praefect.protos.gitaly import repository_pb2

Strategy = repository_pb2.OptimizeRepositoryRequest.Strategy
# More packs than this make lookups slow enough to warrant a full repack.
MAX_PACKS_BEFORE_FULL_REPACK = 16
UNREACHABLE_GRACE = "2.weeks.ago"


async def count_objects(git_dir: Path) -> dict[str, int]:
    """``git count-objects -v`` as numbers (count = loose objects, packs, ...)."""
    result = await run_git(["count-objects", "-v"], git_dir=git_dir)
    stats: dict[str, int] = {}
    for line in result.stdout.decode().splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            stats[key.strip()] = int(value)
    return stats


async def full_repack(git_dir: Path) -> None:
    await run_git(
        [
            "repack",
            "--quiet",
            "-d",
            "--cruft",
            f"--cruft-expiration={UNREACHABLE_GRACE}",
            "--write-bitmap-index",
        ],
        git_dir=git_dir,
    )


async def incremental_repack(git_dir: Path) -> None:
    await run_git(["repack", "--quiet", "-d"], git_dir=git_dir)


async def optimize_repository(
    git_dir: Path, strategy: repository_pb2.OptimizeRepositoryRequest.Strategy.ValueType
) -> None:
    if strategy == Strategy.STRATEGY_EAGER:
        await full_repack(git_dir)
    elif strategy in (Strategy.STRATEGY_UNSPECIFIED, Strategy.STRATEGY_HEURISTICAL):
        stats = await count_objects(git_dir)
        if stats.get("packs", 0) > MAX_PACKS_BEFORE_FULL_REPACK:
            await full_repack(git_dir)
        elif stats.get("count", 0) > 0:
            await incremental_repack(git_dir)
    else:
        name = Strategy.Name(strategy) if strategy in Strategy.values() else str(strategy)
        raise InvalidArgument(
            f"optimization strategy {name} is not supported by this node: use STRATEGY_HEURISTICAL "
            "or STRATEGY_EAGER"
        )
    await run_git(["pack-refs", "--all", "--prune"], git_dir=git_dir)
    await run_git(["commit-graph", "write", "--reachable", "--split", "--changed-paths"], git_dir=git_dir)
