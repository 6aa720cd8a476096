"""Start real routers in front of real nodes, for the router's tests.

    settings = router_settings({"gitaly-1": node1.address, ...}, node_token=NODE_TOKEN)
    async with running_router(settings) as router:
        async with aio.insecure_channel(router.bound_addr) as channel:
            ...
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from praefect.core.router_config import RouterConfig
from praefect.core.server import RouterServer
from praefect.settings import Config

ROUTER_TOKEN = "router-external-token"
NODE_TOKEN = "node-internal-token"
VIRTUAL_STORAGE = "praefect"


def router_settings_mapping(
    nodes: Mapping[str, str],
    *,
    primary: str | None = None,
    node_tokens: Mapping[str, str] | None = None,
    auth_token: str = ROUTER_TOKEN,
    virtual_storage: str = VIRTUAL_STORAGE,
    **sections: Any,
) -> dict[str, Any]:
    """Settings (as a mapping) for one virtual storage over ``nodes`` (name -> address)."""
    primary = primary or next(iter(nodes))
    tokens = node_tokens or {}
    data: dict[str, Any] = {
        "listen_addr": "127.0.0.1:0",
        "auth_token": auth_token,
        "virtual_storages": {
            virtual_storage: {
                name: {
                    "address": address,
                    "token": tokens.get(name, NODE_TOKEN),
                    "primary": name == primary,
                }
                for name, address in nodes.items()
            }
        },
    }
    # Every router gets its own embedded Redis: two routers on one data
    # directory are refused, and tests must not share state by accident.
    # Short path: the Redis unix socket lives in it (108-byte limit).
    data["redis"] = {"data_dir": tempfile.mkdtemp(prefix="praefect-redis-")}
    # Health checks and failover probe every node each second; tests of the
    # request path (recording nodes that count calls) opt in by passing
    # their own `plugins` section.
    data["plugins"] = {"blocked": ["praefect.plugins.replication", "praefect.plugins.failover"]}
    data.update(sections)
    return data


def router_settings(nodes: Mapping[str, str], **kwargs: Any) -> Config:
    return Config.from_mapping(router_settings_mapping(nodes, **kwargs))


@contextlib.asynccontextmanager
async def running_router(
    settings: Config,
    *,
    extra_plugins: Sequence[tuple[str, object]] = (),
    load_entry_points: bool = False,
    graceful_stop_timeout: float | None = None,
) -> AsyncIterator[RouterServer]:
    """An in-process router on a free loopback port; stopped on exit."""
    config = RouterConfig(settings, listen_addr="127.0.0.1:0", install_signal_handlers=False)
    server = RouterServer(config, extra_plugins=extra_plugins, load_entry_points=load_entry_points)
    await server.startup()
    try:
        yield server
    finally:
        await _shutdown_within(server, ROUTER_STOP_SECONDS)


#: how long an in-process router may take to stop before the test fails
ROUTER_STOP_SECONDS = 30.0


async def _shutdown_within(server: RouterServer, seconds: float) -> None:
    """``shutdown(grace=0)``, failing with the tasks still running if it takes longer.

    A stop that hangs would otherwise surface only as the test's timeout,
    with no sign of what the router was waiting for.
    """
    import asyncio
    import io

    stopping = asyncio.ensure_future(server.shutdown(grace=0))
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    if done:
        stopping.result()
        return
    current = asyncio.current_task()
    running = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        stack = io.StringIO()
        task.print_stack(limit=8, file=stack)
        running.append(stack.getvalue())
    raise AssertionError(
        f"the router did not stop within {seconds:.0f} s; tasks still running:\n" + "\n".join(running)
    )


def processes_matching(*needles: str) -> list[int]:
    """Pids of processes whose command line contains every needle (Linux /proc)."""
    import os
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


async def wait_until(predicate: Any, what: str, within: float = 10.0) -> None:
    """Poll ``predicate()`` until true; fail naming ``what`` after ``within`` s."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def write_settings(path: Any, nodes: Mapping[str, str], **kwargs: Any) -> Any:
    """Write a router settings file for ``nodes`` (see router_settings_mapping)."""
    from praefect.settings import to_toml

    path.write_text(to_toml(router_settings_mapping(nodes, **kwargs)))
    return path


def clean_env() -> dict[str, str]:
    """The test environment without PRAEFECT_* variables that would override settings."""

    from tests.support.gitenv import git_env

    return {key: value for key, value in git_env().items() if not key.startswith("PRAEFECT_")}
