"""Moving a repository's primary on an operator's order (``praefect failover``).

:class:`PrimaryMover` moves one repository's primary to a chosen node and
says what became of it in a :class:`Move`. It refuses a node that holds no
replica, and one that is behind unless ``force`` (then the node's copy
becomes authoritative and what it lacks is lost, counted again after the
move). The move itself re-checks in Redis that the node is still up to
date, so a write recorded after the repository was read is never lost
without ``force``. A node with a copy (replication) running into it cannot
become primary: the mover tries again until a deadline, then refuses
(``busy``).

The command line (:mod:`praefect.core.cli.failover_cmd`) prints the moves;
``accept-dataloss`` uses :meth:`PrimaryMover.set_primary` for its wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from praefect.plugins.failover.election import Elector
from praefect.plugins.replication.state import PrimaryChange, PrimaryMoved, RepositoryMetadata

__all__ = ["DEFAULT_COPY_WAIT", "CopyWaitListener", "Move", "PrimaryMover", "count_changes"]

#: seconds a move waits, in all, for copies into the new primary to end
DEFAULT_COPY_WAIT = 10.0
_COPY_POLL_FIRST = 0.02
_COPY_POLL_MAX = 0.5

#: told (relative path, target, seconds left) once when a move starts waiting for a copy
CopyWaitListener = Callable[[str, str, float], None]


@dataclass(frozen=True, slots=True)
class Move:
    """What became of one repository: ``result`` says it for people."""

    path: str
    #: the primary before
    before: str
    result: str
    refused: bool = False
    #: refused because a copy into the target was still running
    busy: bool = False

    @property
    def moved(self) -> bool:
        """The target became primary (``forced`` included)."""
        return self.result.startswith(("moved", "forced"))


def count_changes(count: int) -> str:
    """``1 change``, ``2 changes``."""
    return f"{count} change{'' if count == 1 else 's'}"


class PrimaryMover:
    """Moves primaries through the elector's Redis."""

    def __init__(self, elector: Elector, *, on_copy_wait: CopyWaitListener | None = None) -> None:
        self.elector = elector
        self.store = elector.store
        self._on_copy_wait = on_copy_wait

    async def set_primary(
        self,
        vs: str,
        path: str,
        target: str,
        *,
        expected: str | None,
        up_to_date: bool,
        until: float,
    ) -> PrimaryChange:
        """``set_primary``; while it is ``busy`` (a copy into ``target`` runs), again until ``until``.

        ``until`` is a ``time.monotonic()`` value.
        """
        change = await self.store.set_primary(vs, path, target, expected=expected, up_to_date=up_to_date)
        if change.status != "busy" or until <= time.monotonic():
            return change
        if self._on_copy_wait is not None:
            self._on_copy_wait(path, target, until - time.monotonic())
        delay = _COPY_POLL_FIRST
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, _COPY_POLL_MAX)
            change = await self.store.set_primary(
                vs, path, target, expected=expected, up_to_date=up_to_date
            )
            if change.status != "busy":
                return change
        return change

    async def move(
        self,
        repo: RepositoryMetadata,
        target: str,
        *,
        force: bool = False,
        copy_wait_until: float | None = None,
    ) -> Move:
        """Make ``target`` the primary of ``repo`` (as read); wait for copies into it until ``copy_wait_until``.

        ``copy_wait_until`` is a ``time.monotonic()`` value; None: in
        :data:`DEFAULT_COPY_WAIT` seconds.
        """
        vs, path, before = repo.virtual_storage, repo.relative_path, repo.primary
        until = time.monotonic() + DEFAULT_COPY_WAIT if copy_wait_until is None else copy_wait_until
        if before == target:
            return Move(path, before, "already the primary")
        if target not in repo.assigned:
            return Move(path, before, f"refused: {target} holds no replica (not assigned)", True)
        have = repo.replica_generation(target)
        if have < 0:
            return Move(path, before, f"refused: {target} has no replica yet", True)
        behind = repo.generation - have
        if behind > 0 and not force:
            return Move(
                path, before,
                f"refused: {target} is behind by {count_changes(behind)}, which would be lost", True,
            )
        # The move itself checks that the target is still up to date: a write
        # recorded since the read above must not be lost without --force. It
        # also refuses a target with a copy running into it.
        change = await self.set_primary(
            vs, path, target, expected=before, up_to_date=not force, until=until
        )
        if change.status == "busy":
            return Move(path, before, _busy_result(target), refused=True, busy=True)
        if change.status == "conflict":
            return Move(path, before, f"refused: the primary changed meanwhile to {change.primary}; run again", True)
        if change.status == "behind":
            return Move(
                path, before,
                f"refused: {target} fell behind meanwhile (a write was recorded); run again", True,
            )
        if not change.changed:
            return Move(path, before, f"refused: {change.status}", True)
        # Read again: with --force, what the target lacks is what it lacks now.
        after = await self.store.get(vs, path)
        lost = 0 if after is None else after.generation - after.replica_generation(target)
        if lost <= 0:
            return Move(path, before, "moved")
        try:
            record = await self.store.set_authoritative(vs, path, target, only_if_primary=True)
        except PrimaryMoved as moved:
            return Move(
                path, before,
                f"refused: the primary changed meanwhile to {moved.primary}; run again", True,
            )
        await self.elector.acknowledge(vs, path, target, record.generation)
        return Move(
            path, before,
            f"forced: {count_changes(lost)} lost; {target} is authoritative at generation "
            f"{record.generation}",
        )


def _busy_result(target: str) -> str:
    return (
        f"refused: a copy (replication) into {target} is still running, and {target} cannot "
        "become primary before it ends; run again in a moment"
    )
