"""Health votes in a real Redis: the majority of live routers decides, once per change."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from praefect.plugins.failover.keys import health_votes_key
from praefect.plugins.failover.votes import HealthVotes, Transition
from tests.support.failover_cluster import eventually

VS = "praefect"


async def test_a_lone_router_decides_alone_and_a_change_is_recorded_once(client: aioredis.Redis) -> None:
    votes = HealthVotes(client, window=5.0)
    first = await votes.vote(VS, "router-a", {"gitaly-1": False, "gitaly-2": True})
    again = await votes.vote(VS, "router-a", {"gitaly-1": False, "gitaly-2": True})
    assert dict(first.view) == {"gitaly-1": False, "gitaly-2": True}
    assert first.voters == 1
    assert first.transitions == (Transition("gitaly-1", False, 1),)
    assert again.transitions == ()
    back = await votes.vote(VS, "router-a", {"gitaly-1": True, "gitaly-2": True})
    assert back.transitions == (Transition("gitaly-1", True, 2),)
    view = await votes.view(VS)
    assert view["gitaly-1"].healthy and view["gitaly-1"].since_ms > 0


async def test_a_node_is_down_only_when_more_live_routers_say_down_than_up(client: aioredis.Redis) -> None:
    votes = HealthVotes(client, window=5.0)
    await votes.vote(VS, "a", {"gitaly-2": True})
    await votes.vote(VS, "b", {"gitaly-2": True})
    one_of_three = await votes.vote(VS, "c", {"gitaly-2": False})
    assert one_of_three.view["gitaly-2"] is True
    assert (one_of_three.voters, one_of_three.down_votes["gitaly-2"]) == (3, 1)
    tie = await votes.vote(VS, "d", {"gitaly-2": False})
    assert tie.view["gitaly-2"] is True, "two against two is no majority"
    majority = await votes.vote(VS, "e", {"gitaly-2": False})
    assert majority.view["gitaly-2"] is False
    assert [t.node for t in majority.transitions] == ["gitaly-2"]
    # a router's own view does not matter once it is outvoted: "a" still says up
    outvoted = await votes.vote(VS, "a", {"gitaly-2": True})
    assert outvoted.view["gitaly-2"] is False and outvoted.transitions == ()


async def test_routers_not_heard_from_within_the_window_stop_counting(client: aioredis.Redis) -> None:
    votes = HealthVotes(client, window=0.3)
    await votes.vote(VS, "gone-1", {"gitaly-1": False})
    await votes.vote(VS, "gone-2", {"gitaly-1": False})
    first = await votes.vote(VS, "alive", {"gitaly-1": True})
    assert first.view["gitaly-1"] is False  # two (fresh) against one

    async def only_the_live_router_counts() -> bool:
        tally = await votes.vote(VS, "alive", {"gitaly-1": True})
        return tally.voters == 1 and tally.view["gitaly-1"] is True

    await eventually(only_the_live_router_counts, within=5, what="the old votes to expire")
    assert set(await client.hkeys(health_votes_key(VS))) == {"alive"}, "expired votes are deleted"
    assert 0 < await client.pttl(health_votes_key(VS)) <= 600


async def test_concurrent_votes_record_each_change_exactly_once(client: aioredis.Redis) -> None:
    votes = HealthVotes(client, window=5.0)
    routers = [f"router-{i}" for i in range(8)]
    tallies = await asyncio.gather(*(votes.vote(VS, r, {"gitaly-3": False}) for r in routers))
    transitions = [t for tally in tallies for t in tally.transitions]
    assert transitions == [Transition("gitaly-3", False, 1)]
    assert all(tally.view["gitaly-3"] is False for tally in tallies)


async def test_votes_lists_each_routers_last_vote(client: aioredis.Redis) -> None:
    votes = HealthVotes(client, window=5.0)
    await votes.vote(VS, "b", {"gitaly-1": True})
    await votes.vote(VS, "a", {"gitaly-1": False})
    listed = await votes.votes(VS)
    assert [(v.router_id, dict(v.nodes)) for v in listed] == [
        ("a", {"gitaly-1": False}),
        ("b", {"gitaly-1": True}),
    ]
    assert all(v.at_ms > 0 for v in listed)


async def test_a_withdrawn_vote_stops_counting_at_once(client: aioredis.Redis) -> None:
    votes = HealthVotes(client, window=5.0)
    await votes.vote(VS, "leaving", {"gitaly-1": True})
    assert (await votes.vote(VS, "staying", {"gitaly-1": False})).view["gitaly-1"] is True  # a tie
    await votes.withdraw(VS, "leaving")
    alone = await votes.vote(VS, "staying", {"gitaly-1": False})
    assert (alone.voters, alone.view["gitaly-1"]) == (1, False)
