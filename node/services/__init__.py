"""The Gitaly services a node serves, one module each.

Every module exposes ``register(server, ctx)``; `SERVICE_MODULES` lists them
so the server adds them all in one place.
"""

from __future__ import annotations

from types import ModuleType

from praefect.node.services import (
    blob,
    commit,
    diff,
    operations,
    ref,
    repository,
    server,
    smarthttp,
    ssh,
)

SERVICE_MODULES: tuple[ModuleType, ...] = (
    server,
    repository,
    ref,
    commit,
    blob,
    diff,
    operations,
    smarthttp,
    ssh,
)
