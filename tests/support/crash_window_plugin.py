"""A test-only router plugin that stops a write between the primary's OK and its event.

Loaded into a ``praefect serve`` process as an entry point (see
:func:`crash_window_env`). Its ``on_mutation`` runs before the replication
plugin's (pluggy calls plugins registered later first, and entry points are
registered after the default plugins): for a WriteRef to a repository whose
path contains ``crash-window`` it creates the file named by
``$CRASH_WINDOW_SIGNAL`` and then never returns, so the primary has the write and Redis has only its
intent when the test kill -9s the router.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from praefect.core import hookimpl
from praefect.core.mutation import Mutation

SIGNAL_ENV = "CRASH_WINDOW_SIGNAL"
MARKER = "crash-window"
STOPPED_METHOD = "/gitaly.RepositoryService/WriteRef"


@hookimpl  # type: ignore[untyped-decorator, unused-ignore]
async def on_mutation(mutation: Mutation) -> None:
    if mutation.method != STOPPED_METHOD or MARKER not in mutation.relative_path:
        return
    signal_file = os.environ.get(SIGNAL_ENV)
    if signal_file:
        # One tiny write, once, in a router that is about to be killed.
        Path(signal_file).write_text(f"{os.getpid()}\n")  # noqa: ASYNC240
    await asyncio.Event().wait()  # until the router is killed


def crash_window_env(root: Path, signal_file: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what loads this plugin as the entry point ``crash-window``."""
    site = root / "crash-window-site"
    dist = site / "praefect_test_crash_window-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: praefect-test-crash-window\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[praefect]\ncrash-window = tests.support.crash_window_plugin\n"
    )
    repo_root = Path(__file__).resolve().parents[2]
    paths = [str(site), str(repo_root), base.get("PYTHONPATH", "")]
    return {**base, "PYTHONPATH": os.pathsep.join(filter(None, paths)), SIGNAL_ENV: str(signal_file)}
