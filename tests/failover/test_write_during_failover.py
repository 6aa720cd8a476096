"""A write in flight while `praefect failover` moves the repository's primary.

Real node processes, a real Redis, an in-process router and the real
`praefect failover` command:

- a test plugin holds a write after the primary applied it and before the
  router records it, the primary moves, the write is released: the
  replication plugin's recording script must refuse it (ABORTED) and the
  old primary's copy must follow the new primary's;
- writers that never stop while the primary moves twice (the compare-and-set
  the command uses): whatever window a write lands in, its client gets OK
  only if the final primary has it, and every node ends with the final
  primary's history.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from praefect.core import hookimpl
from praefect.core.mutation import Mutation
from praefect.settings import to_toml
from tests.support.failover_cluster import (
    VS,
    FailoverCluster,
    commit_file,
    create_repository,
    eventually,
)
from tests.support.failover_commands import praefect
from tests.support.gitenv import git

PATH = "held/project.git"
HELD_FILE = "held.txt"
WRITERS = 3
COMMIT_FILES = "/gitaly.OperationService/UserCommitFiles"


class HoldBeforeRecording:
    """Once armed, holds the next UserCommitFiles of PATH until released.

    ``on_mutation`` runs after the primary applied the write; ``tryfirst``:
    before the replication plugin records it.
    """

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    @hookimpl(tryfirst=True)  # type: ignore[untyped-decorator, unused-ignore]
    async def on_mutation(self, mutation: Mutation) -> None:
        if self.armed and mutation.method == COMMIT_FILES and mutation.relative_path == PATH:
            self.armed = False
            self.reached.set()
            await self.release.wait()


async def _praefect(cluster: FailoverCluster, *args: str) -> tuple[int, str]:
    settings_file = cluster.root / "cli.toml"
    settings_file.write_text(to_toml(cluster.settings_mapping()))
    return await praefect(settings_file, *args)


async def _everywhere(cluster: FailoverCluster) -> bool:
    metadata = await cluster.store.get(VS, PATH)
    return metadata is not None and len(metadata.up_to_date) == len(cluster.nodes)


def _refs(cluster: FailoverCluster, node: str) -> str:
    return git(["--git-dir", str(cluster.repo(node, PATH)), "show-ref"], check=False)


@pytest.mark.timeout(90)
async def test_a_write_the_old_primary_answers_after_the_move_is_aborted_and_undone(
    cluster: FailoverCluster,
) -> None:
    hold = HoldBeforeRecording()
    async with cluster.router(("hold", hold)) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, PATH)
            await commit_file(channel, PATH, "main", "first.txt")
            await eventually(lambda: _everywhere(cluster), what="the repository on every node")
            assert await cluster.primary_of(PATH) == "gitaly-1"

            hold.armed = True
            write = asyncio.create_task(commit_file(channel, PATH, "main", HELD_FILE, deadline=60))
            await eventually(hold.reached.is_set, what="the write to reach the hold")
            status, out = await _praefect(
                cluster, "failover", "--virtual-storage", VS, "--to", "gitaly-2", "--relative-path", PATH,
            )
            assert status == 0 and "1 moved" in out, out
            hold.release.set()
            with pytest.raises(aio.AioRpcError) as refused:
                await write

            # The router goes on, and the retry goes to the new primary.
            commit = await commit_file(channel, PATH, "main", "retried.txt")
            await eventually(lambda: _everywhere(cluster), what="every node at the new primary's generation")
    assert refused.value.code() is grpc.StatusCode.ABORTED
    assert refused.value.details() == (
        f"the primary of {PATH!r} moved from gitaly-1 to gitaly-2 while this write was in flight; "
        "the write was not acknowledged and will be undone on gitaly-1: retry it"
    )
    metadata = await cluster.metadata(PATH)
    assert metadata.primary == "gitaly-2"
    assert cluster.has_commit("gitaly-2", PATH, commit), "the acknowledged retry is on the primary"
    primary_refs = _refs(cluster, "gitaly-2")
    for node in ("gitaly-1", "gitaly-3"):
        assert _refs(cluster, node) == primary_refs, f"{node} follows the primary's history"
    tree = git(["--git-dir", str(cluster.repo("gitaly-1", PATH)), "ls-tree", "--name-only", "main"])
    assert HELD_FILE not in tree.split(), "undone on the old primary"
    assert "retried.txt" in tree.split()


@pytest.mark.slow
# Above the sum of the bounded waits below, so a slow step fails naming itself.
@pytest.mark.timeout(240)
async def test_writes_racing_two_failovers_get_ok_only_when_the_new_primary_keeps_them(
    cluster: FailoverCluster,
) -> None:
    """Writers never stop while the primary moves twice; some writes land in
    every window (routed before a move, recorded before it, acknowledged
    after it). Every OK must survive on the final primary and every node."""
    async with cluster.router() as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, PATH)
            await eventually(lambda: _everywhere(cluster), what="the repository on every node")
            acknowledged: dict[int, list[str]] = {number: [] for number in range(WRITERS)}
            failures: list[grpc.StatusCode] = []
            stop = asyncio.Event()

            async def writer(number: int) -> None:
                count = 0
                while not stop.is_set():
                    count += 1
                    try:
                        commit = await commit_file(
                            channel, PATH, f"writer-{number}", f"w{number}-{count}.txt", deadline=30
                        )
                    except aio.AioRpcError as error:
                        failures.append(error.code())
                        continue
                    acknowledged[number].append(commit)

            async def more_writes(what: str) -> None:
                def written() -> int:
                    return sum(len(commits) for commits in acknowledged.values())

                wanted = written() + 2 * WRITERS
                await eventually(lambda: written() >= wanted, within=20, what=f"writes {what}")

            writers = [asyncio.create_task(writer(number)) for number in range(WRITERS)]
            try:
                for target in ("gitaly-2", "gitaly-3"):
                    await more_writes(f"before the move to {target}")
                    await _move_while_writing(cluster, target)
                await more_writes("after the last move")
            finally:
                stop.set()
                await asyncio.gather(*writers)
            await eventually(lambda: _everywhere(cluster), what="every node at the final generation")
    assert await cluster.primary_of(PATH) == "gitaly-3"
    assert set(failures) <= {grpc.StatusCode.ABORTED}, failures
    primary_refs = _refs(cluster, "gitaly-3")
    lost = [
        commit
        for number, commits in acknowledged.items()
        for commit in commits
        if not _on_branch(cluster, "gitaly-3", commit, f"refs/heads/writer-{number}")
    ]
    assert lost == [], f"{len(lost)} acknowledged writes are not on the final primary"
    for node in ("gitaly-1", "gitaly-2"):
        assert _refs(cluster, node) == primary_refs, f"{node} follows the primary's history"


async def _move_while_writing(cluster: FailoverCluster, target: str) -> None:
    """Move the primary to ``target`` the moment it has every recorded write.

    The compare-and-set `praefect failover` uses, with the check that the
    target is up to date inside it: the command's own read-then-move would
    rarely find a moment when the target is not a write behind under this load.
    """

    async def moved() -> bool:
        current = await cluster.primary_of(PATH)
        change = await cluster.store.set_primary(VS, PATH, target, expected=current, up_to_date=True)
        return bool(change.changed)

    await eventually(moved, within=40, what=f"{target} to be up to date for a moment")


def _on_branch(cluster: FailoverCluster, node: str, commit: str, ref: str) -> bool:
    history = git(["--git-dir", str(cluster.repo(node, PATH)), "rev-list", ref], check=False)
    return commit in history.split()
