"""`PrimaryMover` (plugins/failover/moves.py) against a real Redis.

What `praefect failover` prints of the moves is tests/failover/test_cli.py.
"""

from __future__ import annotations

from praefect.core.mutation import ChangeType
from praefect.plugins.failover.election import Elector
from praefect.plugins.failover.moves import PrimaryMover
from praefect.plugins.replication.state import RepositoryStore
from tests.support.failover_cluster import NAMES, VS
from tests.support.failover_commands import repository_after_writes


async def test_a_write_recorded_after_the_command_looked_is_never_lost_by_the_move(
    store: RepositoryStore, elector: Elector
) -> None:
    # The command reads a repository, then moves it; a write recorded in
    # between leaves the target behind. Without force the move is refused;
    # with it, the change the target lacks now is reported as lost.
    mover = PrimaryMover(elector)
    await repository_after_writes(store, "race.git", writes=2, generations={"gitaly-2": 2, "gitaly-3": 2})
    looked = await store.require(VS, "race.git")
    await store.record_mutation(VS, "race.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)

    move = await mover.move(looked, "gitaly-2", force=False)
    assert move.refused and "gitaly-2 fell behind meanwhile" in move.result, move
    assert (await store.require(VS, "race.git")).primary == "gitaly-1"

    move = await mover.move(looked, "gitaly-2", force=True)
    assert not move.refused and move.moved, move
    assert move.result.startswith("forced: 1 change lost"), move
    after = await store.require(VS, "race.git")
    assert after.primary == "gitaly-2" and after.is_up_to_date("gitaly-2"), after
