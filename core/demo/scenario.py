"""``praefect demo --scenario``: the main scenario, step by step, without a terminal.

Steps, each bounded in time and reported on one line (✓/✗, seconds, what
it showed):

1. start: embedded Redis, three nodes, router, gateway;
2. create: the project, through the router (CreateRepository, UserCommitFiles);
3. push: a generated history (hundreds of commits, branches, annotated
   tags) with plain git through the gateway;
4. clone: clone it back through the gateway, compare every ref, git fsck;
5. checksums: CalculateChecksum equal on all three nodes;
6. kill primary: ``kill -9`` the project's primary node;
7. failover: another node becomes the project's primary (automatic
   failover; ``praefect failover`` where the router does not do it);
8. push again: a new commit through the gateway, taken by the new primary;
9. restart: the killed node starts again on its port and storage;
10. converge: checksums equal on all three nodes again, every replica up to date.

The scenario stops at the first step that fails, prints why and the tail
of the logs of the processes concerned, and :meth:`Scenario.run` returns
False.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError

from praefect.core.demo.clients import Checksum, ClusterClients, checksums_agree
from praefect.core.demo.cluster import (
    GATEWAY,
    NODE_NAMES,
    PROJECT_PATH,
    ROUTER,
    VIRTUAL_STORAGE,
    DemoCluster,
)
from praefect.core.demo.failover import FailoverUnavailable, fail_over
from praefect.core.demo.gitrun import GitFailed, HistoryShape, import_history, list_refs, run_git
from praefect.core.demo.processes import ChildStartError

__all__ = ["Scenario", "StepFailed", "StepResult", "wait_for_convergence"]

_TAIL_LINES = 25
#: the demo's own polling, left out of the log tails shown after a failure
_DEMO_PROBES = (
    "/gitaly.RepositoryService/CalculateChecksum",
    "/gitaly.ServerService/ServerInfo",
    "/grpc.health.v1.Health/",
)


class StepFailed(Exception):
    """A step did not hold; ``logs`` names the processes whose output explains it."""

    def __init__(self, message: str, logs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.logs = tuple(logs)


@dataclass(frozen=True, slots=True)
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str
    logs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    timeout: float
    run: Callable[[], Awaitable[str]]
    logs: tuple[str, ...] = field(default=())


def _marks(encoding: str | None) -> tuple[str, str, str]:
    """✓/✗/· where the output can show them, else ok/FAIL/skip."""
    try:
        "✓✗·".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ("ok", "FAIL", "skip")
    return ("✓", "✗", "·")


#: how long Redis may stay unreadable while waiting for convergence
REDIS_GRACE = 5.0


async def wait_for_convergence(
    clients: ClusterClients, relative_path: str, time_limit: float, *, every_replica: bool = True
) -> list[Checksum]:
    """Poll until every node has the same checksum (and, with ``every_replica``,
    Redis says every replica is at the repository's generation).

    Returns the checksums; raises :class:`StepFailed` with the last ones
    seen after ``time_limit`` seconds, or sooner when Redis (the router's
    replication state) cannot be read for :data:`REDIS_GRACE` seconds.
    """
    began = time.monotonic()
    deadline = began + time_limit
    checksums: list[Checksum] = []
    outdated: dict[str, int] = {}
    redis_readable_at = began
    pause = 0.1
    while True:
        left = deadline - time.monotonic()
        checksums = await clients.checksums(relative_path, time_limit=max(1.0, min(10.0, left)))
        metadata = None
        if every_replica:
            try:
                metadata = await clients.repository(relative_path)
            except (RedisError, OSError) as error:
                if time.monotonic() - redis_readable_at > REDIS_GRACE:
                    raise StepFailed(
                        f"the router's Redis cannot be read ({error}): is the router running, "
                        "with the replication plugin (`praefect plugins`)?",
                        (ROUTER,),
                    ) from error
            else:
                redis_readable_at = time.monotonic()
            outdated = metadata.outdated if metadata is not None else {}
        if checksums_agree(checksums) and (
            not every_replica or (metadata is not None and not outdated)
        ):
            return checksums
        if time.monotonic() >= deadline:
            seen = ", ".join(f"{c.node}={str(c)[:12]}" for c in checksums)
            if every_replica and metadata is None:
                state = f"; Redis does not track {relative_path}"
            elif outdated:
                state = f"; Redis says behind: {', '.join(f'{n} by {k}' for n, k in outdated.items())}"
            else:
                state = ""
            raise StepFailed(
                f"the replicas did not converge within {time_limit:.0f} s: {seen}{state}",
                logs=(ROUTER, *NODE_NAMES),
            )
        await asyncio.sleep(pause)
        pause = min(1.0, pause * 1.5)


class Scenario:
    """Runs the steps against a :class:`DemoCluster` it starts and stops itself."""

    def __init__(
        self,
        cluster: DemoCluster,
        *,
        report: Callable[[str], None],
        shape: HistoryShape | None = None,
        encoding: str | None = "utf-8",
    ) -> None:
        self.cluster = cluster
        self.report = report
        self.shape = shape or HistoryShape()
        self.results: list[StepResult] = []
        self._marks = _marks(encoding)
        self._clients: ClusterClients | None = None
        self._work = cluster.scratch_dir / "pushed.git"
        self._killed = ""
        self._pushed_refs: dict[str, str] = {}

    @property
    def clients(self) -> ClusterClients:
        if self._clients is None:
            raise RuntimeError("the cluster is not started")
        return self._clients

    def steps(self) -> list[_Step]:
        nodes = tuple(NODE_NAMES)
        return [
            _Step("start", 90, self._start, (ROUTER, GATEWAY, *nodes)),
            _Step("create", 30, self._create, (ROUTER, *nodes)),
            _Step("push", 120, self._push, (GATEWAY, ROUTER, *nodes)),
            _Step("clone", 120, self._clone, (GATEWAY, ROUTER)),
            _Step("checksums", 60, self._checksums, (ROUTER, *nodes)),
            _Step("kill primary", 15, self._kill_primary, ()),
            _Step("failover", 45, self._fail_over, (ROUTER,)),
            _Step("push again", 45, self._push_again, (GATEWAY, ROUTER, *nodes)),
            _Step("restart", 45, self._restart, nodes),
            _Step("converge", 90, self._converge, (ROUTER, *nodes)),
        ]

    async def run(self) -> bool:
        """Run every step in order until one fails; True when all held."""
        started = time.monotonic()
        steps = self.steps()
        width = max(len(step.name) for step in steps)
        ok_mark, fail_mark, skip_mark = self._marks
        try:
            for index, step in enumerate(steps):
                result = await self._run_step(step)
                self.results.append(result)
                mark = ok_mark if result.ok else fail_mark
                self.report(f"{mark} {step.name:<{width}} {result.seconds:6.1f} s  {result.detail}")
                if not result.ok:
                    for later in steps[index + 1 :]:
                        self.report(f"{skip_mark} {later.name:<{width}}          skipped")
                    self._report_logs(step.name, result.logs)
                    self.report(f"scenario FAILED at step {step.name!r} after {time.monotonic() - started:.1f} s")
                    return False
            self.report(f"scenario passed: {len(steps)} steps in {time.monotonic() - started:.1f} s")
            return True
        finally:
            if self._clients is not None:
                await self._clients.close()

    async def _run_step(self, step: _Step) -> StepResult:
        began = time.monotonic()
        try:
            async with asyncio.timeout(step.timeout):
                detail = await step.run()
        except TimeoutError:
            return StepResult(step.name, False, time.monotonic() - began,
                              f"did not finish within {step.timeout:.0f} s", step.logs)
        except StepFailed as failure:
            return StepResult(step.name, False, time.monotonic() - began, str(failure), failure.logs or step.logs)
        except ChildStartError as error:
            return StepResult(step.name, False, time.monotonic() - began, str(error), (error.name,))
        except GitFailed as error:
            return StepResult(step.name, False, time.monotonic() - began, str(error), step.logs)
        except Exception as error:  # any other failure is this step's failure, reported
            return StepResult(step.name, False, time.monotonic() - began,
                              f"{type(error).__name__}: {error}", step.logs)
        return StepResult(step.name, True, time.monotonic() - began, detail)

    def _report_logs(self, step: str, names: Sequence[str]) -> None:
        for name in dict.fromkeys(names):
            child = self.cluster.children.get(name)
            if child is None:
                continue
            tail = child.tail(_TAIL_LINES, hide=_DEMO_PROBES)
            self.report(f"--- {name}: last lines of {child.log_path} ---")
            for line in tail.splitlines() or ["(no output)"]:
                self.report(f"    {line}")

    # ------------------------------------------------------------- steps

    def _secrets(self) -> tuple[str, ...]:
        return (self.cluster.secrets.password,)

    async def _git(self, args: Sequence[str], cwd: Path | None = None) -> str:
        return await run_git(args, cwd=cwd, time_limit=120, secrets=self._secrets())

    async def _start(self) -> str:
        await self.cluster.start()
        self._clients = ClusterClients(self.cluster.settings, self.cluster.router_address, VIRTUAL_STORAGE)
        pids = self.cluster.pids()
        return (
            f"embedded Redis, {', '.join(NODE_NAMES)}, router {self.cluster.router_address}, "
            f"gateway {self.cluster.gateway_address} (pids {', '.join(str(pids[n]) for n in pids)})"
        )

    async def _create(self) -> str:
        commit = await self.clients.create_project(PROJECT_PATH, "Demo project")
        return f"{PROJECT_PATH} with a README through the router (commit {commit[:12]})"

    async def _push(self) -> str:
        url = self.cluster.clone_url()
        await self._git(["clone", "--quiet", "--bare", url, str(self._work)])
        readme_commit = (await self._git(["--git-dir", str(self._work), "rev-parse", "main"])).strip()
        await import_history(self._work, self.shape, parent=readme_commit)
        await self._git(
            ["--git-dir", str(self._work), "push", "--quiet", "origin",
             "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"],
        )
        self._pushed_refs = await list_refs(self._work, "refs/heads", "refs/tags")
        branches = sum(1 for ref in self._pushed_refs if ref.startswith("refs/heads/"))
        tags = len(self._pushed_refs) - branches
        count = (await self._git(["--git-dir", str(self._work), "rev-list", "--count", "--all"])).strip()
        return f"{count} commits, {branches} branches, {tags} tags with git push through the gateway"

    async def _clone(self) -> str:
        clone = self.cluster.scratch_dir / "cloned.git"
        await self._git(["clone", "--quiet", "--mirror", self.cluster.clone_url(), str(clone)])
        cloned = await list_refs(clone, "refs/heads", "refs/tags")
        if cloned != self._pushed_refs:
            missing = sorted(set(self._pushed_refs) - set(cloned))
            extra = sorted(set(cloned) - set(self._pushed_refs))
            moved = sorted(ref for ref in set(cloned) & set(self._pushed_refs) if cloned[ref] != self._pushed_refs[ref])
            raise StepFailed(
                f"the clone's refs differ from the pushed ones: missing {missing[:5]}, "
                f"unexpected {extra[:5]}, different {moved[:5]}"
            )
        await self._git(["--git-dir", str(clone), "fsck", "--no-progress"])
        return f"{len(cloned)} refs identical to the pushed ones, git fsck clean"

    async def _checksums(self) -> str:
        checksums = await wait_for_convergence(self.clients, PROJECT_PATH, time_limit=50)
        return f"{checksums[0].value[:12]} on {', '.join(c.node for c in checksums)}"

    async def _kill_primary(self) -> str:
        metadata = await self.clients.repository(PROJECT_PATH)
        if metadata is None:
            raise StepFailed(f"{PROJECT_PATH} is not tracked in Redis: the router did not record it", (ROUTER,))
        self._killed = metadata.primary
        pid = await self.cluster.kill_node(self._killed)
        return f"kill -9 {self._killed} (pid {pid}), the primary of {PROJECT_PATH}"

    async def _fail_over(self) -> str:
        try:
            outcome = await fail_over(self.cluster, self.clients, PROJECT_PATH, self._killed)
        except FailoverUnavailable as error:
            raise StepFailed(str(error), (ROUTER,)) from error
        return outcome

    async def _push_again(self) -> str:
        main_before = (await self._git(["--git-dir", str(self._work), "rev-parse", "main"])).strip()
        await import_history(
            self._work, HistoryShape(commits=1, branches=0, tags=0, seed=99), parent=main_before
        )
        new_main = (await self._git(["--git-dir", str(self._work), "rev-parse", "main"])).strip()
        await self._git(["--git-dir", str(self._work), "push", "--quiet", "origin", "main"])
        remote = await self._git(["ls-remote", self.cluster.clone_url(), "refs/heads/main"])
        if not remote.startswith(new_main):
            raise StepFailed(f"main through the gateway is {remote.split()[:1]}, not the pushed {new_main[:12]}")
        metadata = await self.clients.repository(PROJECT_PATH)
        primary = metadata.primary if metadata is not None else "?"
        return f"commit {new_main[:12]} on main through the gateway, taken by {primary}"

    async def _restart(self) -> str:
        address = await self.cluster.restart_node(self._killed)
        return f"{self._killed} is back on {address} (pid {self.cluster.child(self._killed).pid})"

    async def _converge(self) -> str:
        checksums = await wait_for_convergence(self.clients, PROJECT_PATH, time_limit=80)
        metadata = await self.clients.repository(PROJECT_PATH)
        generation = metadata.generation if metadata is not None else "?"
        return (
            f"{checksums[0].value[:12]} on {', '.join(c.node for c in checksums)}; "
            f"every replica at generation {generation}"
        )
