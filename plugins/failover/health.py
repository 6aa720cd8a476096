"""The router's health checks and its part in the shared health view.

Each node is checked every ``failover.health_check_interval`` seconds by a
task of its own (:func:`~praefect.plugins.failover.probe.check_node`, over
the router's own channel to the node, so the check sees what calls see), and
at once when a write to it failed with UNAVAILABLE (:meth:`check_soon`). A
failed check of a node that was healthy is repeated once at once, so one
lost packet does not start a failover.

A vote task publishes the local verdicts (:class:`HealthVotes`) after every
change of one and otherwise once per interval, and applies the majority's
view to the router's :class:`~praefect.core.cluster.Cluster`:

- a change this router recorded: :meth:`Router.announce_node_health`
  (``on_node_down``/``on_node_up`` fire here, once in the whole cluster)
  and ``on_transition`` (the failover plugin's elections);
- a change another router recorded: the cluster view follows silently.

Without votes (``votes=None``) the router decides alone with
:meth:`Router.set_node_health`. When Redis cannot be reached the router keeps
its last view: the majority cannot be known, and writes fail anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from praefect.core.routing_types import NodeRef
from praefect.core.waits import wait_for_event
from praefect.plugins.failover.probe import NodeCheck, check_node
from praefect.plugins.failover.votes import HealthVotes, Tally

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["HealthChecker", "TransitionListener"]

log = logging.getLogger("praefect.failover.health")

#: awaited after this router recorded a change of the shared view of ``node``
TransitionListener = Callable[[NodeRef, bool, str], Awaitable[None]]


class HealthChecker:
    """Health checks of every node of one router, and the votes that follow."""

    def __init__(
        self,
        router: Router,
        votes: HealthVotes | None,
        *,
        router_id: str,
        interval: float,
        health_timeout: float,
        probe_timeout: float,
        on_transition: TransitionListener | None = None,
    ) -> None:
        self.router = router
        self.votes = votes
        self.router_id = router_id
        self.interval = interval
        self.health_timeout = health_timeout
        self.probe_timeout = probe_timeout
        self.on_transition = on_transition
        self._local: dict[NodeRef, NodeCheck] = {}
        # set to check a node before its interval is over
        self._soon: dict[NodeRef, asyncio.Event] = {}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis_failing = False
        #: completed vote rounds (tests wait on it)
        self.rounds = 0
        self._round_done = asyncio.Event()

    @property
    def local_view(self) -> Mapping[NodeRef, NodeCheck]:
        """This router's own last check of each node."""
        return MappingProxyType(self._local)

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Adopt the shared view (if any), then start checking and voting."""
        if self.votes is not None:
            for vs in self.router.cluster.virtual_storages:
                try:
                    view = await self.votes.view(vs.name)
                except (RedisError, OSError) as error:
                    log.warning("cannot read the shared health view of %s: %s", vs.name, error)
                    continue
                for node in vs.nodes:
                    state = view.get(node.name)
                    if state is not None and not state.healthy:
                        self.router.cluster.set_healthy(node, False)
                        log.warning("node %s is down (the routers' shared view)", node)
        self._tasks = [
            asyncio.create_task(self._check_loop(node), name=f"health-check:{node.name}")
            for node in self.router.cluster.all_nodes()
        ]
        self._tasks.append(asyncio.create_task(self._vote_loop(), name="health-votes"))

    async def stop(self) -> None:
        """Stop checking, and withdraw this router's votes (the others decide without it)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.votes is not None:
            for vs in self.router.cluster.virtual_storage_names:
                try:
                    await self.votes.withdraw(vs, self.router_id)
                except (RedisError, OSError) as error:
                    log.info("cannot withdraw the health votes of this router: %s", error)

    async def wait_for_rounds(self, count: int) -> None:
        """Wait until ``count`` more vote rounds completed (bound it with ``asyncio.timeout``)."""
        target = self.rounds + count
        while self.rounds < target:
            await self._round_done.wait()

    # ------------------------------------------------------------ checks

    def check_soon(self, node: NodeRef) -> None:
        """Check ``node`` now rather than at the end of its interval (a call to it failed)."""
        event = self._soon.get(node)
        if event is not None:
            event.set()

    async def check(self, node: NodeRef) -> NodeCheck:
        """Check ``node`` once; a failure of a node that was healthy is confirmed once."""
        result = await self._check_once(node)
        previous = self._local.get(node)
        if not result.healthy and (previous is None or previous.healthy):
            result = await self._check_once(node)
        return result

    async def _check_once(self, node: NodeRef) -> NodeCheck:
        channel = self.router.node_channels[node]
        try:
            return await check_node(
                channel.channel,
                channel.auth_metadata(),
                node.name,
                health_timeout=self.health_timeout,
                probe_timeout=self.probe_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a check must never kill its loop
            return NodeCheck(False, f"health check failed: {type(error).__name__}: {error}")

    async def _check_loop(self, node: NodeRef) -> None:
        loop = asyncio.get_running_loop()
        soon = self._soon.setdefault(node, asyncio.Event())
        while True:
            started = loop.time()
            soon.clear()
            result = await self.check(node)
            previous = self._local.get(node)
            self._local[node] = result
            if previous is None or previous.healthy != result.healthy:
                if not result.healthy:
                    log.info("health check of %s failed: %s", node, result.reason)
                self._changed.set()
            await wait_for_event(soon, self.interval - (loop.time() - started))

    # ------------------------------------------------------------- votes

    async def _vote_loop(self) -> None:
        while True:
            await wait_for_event(self._changed, self.interval)
            self._changed.clear()
            try:
                await self.vote_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("applying the health view failed; trying again")
            self.rounds += 1
            done, self._round_done = self._round_done, asyncio.Event()
            done.set()

    async def vote_round(self) -> None:
        """Publish the local verdicts and apply the resulting view, per virtual storage."""
        for vs in self.router.cluster.virtual_storages:
            checked = {node: self._local[node] for node in vs.nodes if node in self._local}
            if not checked:
                continue
            if self.votes is None:
                for node, result in checked.items():
                    await self.router.set_node_health(node, result.healthy, result.reason)
                continue
            try:
                tally = await self.votes.vote(
                    vs.name, self.router_id, {node.name: result.healthy for node, result in checked.items()}
                )
            except (RedisError, OSError) as error:
                if not self._redis_failing:
                    log.warning(
                        "cannot publish health votes (%s); keeping the last health view until "
                        "Redis answers",
                        error,
                    )
                self._redis_failing = True
                return
            if self._redis_failing:
                log.info("health votes published again")
                self._redis_failing = False
            await self._apply(vs.nodes, tally, checked)

    async def _apply(
        self, nodes: tuple[NodeRef, ...], tally: Tally, checked: Mapping[NodeRef, NodeCheck]
    ) -> None:
        recorded = {transition.node: transition for transition in tally.transitions}
        for node in nodes:
            healthy = tally.view.get(node.name)
            if healthy is None:
                continue
            if node.name in recorded:
                reason = ""
                if not healthy:
                    own = checked.get(node)
                    votes = f"{tally.down_votes.get(node.name, 0)} of {tally.voters} router(s) report it down"
                    reason = f"{own.reason} ({votes})" if own and not own.healthy else votes
                await self.router.announce_node_health(node, healthy, reason)
                if self.on_transition is not None:
                    await self.on_transition(node, healthy, reason)
            elif self.router.cluster.set_healthy(node, healthy):
                log.info(
                    "node %s is %s (recorded by another router)", node, "up" if healthy else "down"
                )
