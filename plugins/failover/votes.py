"""Health votes of the routers and the view of their majority, in Redis.

Every router votes about once a second: for each node of a virtual storage,
whether its own checks found it healthy. The vote goes into one hash per
virtual storage together with the time Redis received it; a vote older than
``failover.vote_window`` no longer counts (and is deleted), so a router that
died stops counting after the window. A node is down when more of the
routers heard from within the window say down than up: a majority of the
live routers, and a lone router decides alone.

The outcome is recorded in a second hash, the shared *view*. The tally and
the change of the view happen in one Lua call, so exactly one router records
each change (a :class:`Transition`); that router fires ``on_node_down`` /
``on_node_up``, the others only follow the view.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import redis.asyncio as aioredis

from praefect.plugins.failover.keys import health_view_key, health_votes_key
from praefect.plugins.failover.scripts import FailoverScripts

__all__ = ["HealthVotes", "NodeView", "Tally", "Transition", "Vote"]


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of the shared view that this tally recorded."""

    node: str
    healthy: bool
    epoch: int


@dataclass(frozen=True, slots=True)
class Tally:
    """The result of one vote: the shared view of the voted nodes and what changed."""

    view: Mapping[str, bool]
    transitions: tuple[Transition, ...]
    voters: int
    down_votes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Vote:
    """One router's last vote: when Redis received it (unix ms) and its verdicts."""

    router_id: str
    at_ms: int
    nodes: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class NodeView:
    """The shared view of one node: up or down, and since when (unix ms, 0: always up)."""

    healthy: bool
    since_ms: int = 0


def _as_list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}, not []
    return list(value) if isinstance(value, list) else []


class HealthVotes:
    """Votes and the shared view of every virtual storage in one Redis."""

    def __init__(self, client: aioredis.Redis, *, window: float) -> None:
        self.client = client
        self.window = window
        self.scripts = FailoverScripts.register(client)

    async def vote(self, virtual_storage: str, router_id: str, healthy: Mapping[str, bool]) -> Tally:
        """Record ``router_id``'s verdict per node and return the majority's view."""
        raw = await self.scripts.tally(
            keys=[health_votes_key(virtual_storage), health_view_key(virtual_storage)],
            args=[
                router_id,
                json.dumps({name: 1 if ok else 0 for name, ok in healthy.items()}),
                max(1, int(self.window * 1000)),
            ],
        )
        data = json.loads(raw)
        view = data.get("view") or {}
        return Tally(
            view=MappingProxyType({name: state == "up" for name, state in view.items()}),
            transitions=tuple(
                Transition(str(node), state == "up", int(epoch))
                for node, state, epoch in _as_list(data.get("changes"))
            ),
            voters=int(data.get("voters", 0)),
            down_votes=MappingProxyType(
                {name: int(count) for name, count in (data.get("down") or {}).items()}
            ),
        )

    async def withdraw(self, virtual_storage: str, router_id: str) -> None:
        """Remove ``router_id``'s vote: a router that stops must not count for the window."""
        await self.client.hdel(health_votes_key(virtual_storage), router_id)

    async def view(self, virtual_storage: str) -> dict[str, NodeView]:
        """The shared view as recorded (nodes never reported down are absent: up)."""
        fields: dict[str, str] = await self.client.hgetall(  # type: ignore[assignment]
            health_view_key(virtual_storage)
        )
        return {
            name: NodeView(state == "up", int(fields.get(f"since:{name}", 0) or 0))
            for name, state in fields.items()
            if state in ("up", "down")
        }

    async def votes(self, virtual_storage: str) -> list[Vote]:
        """The votes stored now (including ones older than the window), by router id."""
        fields: dict[str, str] = await self.client.hgetall(  # type: ignore[assignment]
            health_votes_key(virtual_storage)
        )
        votes = []
        for router_id, text in sorted(fields.items()):
            try:
                data = json.loads(text)
                votes.append(
                    Vote(
                        router_id,
                        int(data["at"]),
                        MappingProxyType(
                            {name: value == 1 for name, value in (data.get("nodes") or {}).items()}
                        ),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return votes
