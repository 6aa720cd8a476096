"""Build the plugin manager of one router instance.

The router's own behaviour (authentication, routing, replication) is a set
of default plugins listed in :data:`DEFAULT_PLUGINS`. They are registered
before the third-party plugins found in the ``praefect`` entry-point group,
so a third-party implementation runs first (pluggy calls the plugins
registered last first) and the defaults mark their ``route`` ``trylast``.
Settings ``plugins.blocked`` lists plugin names that are not registered:
a default plugin by its module name, a third-party one by its entry-point name.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from praefect.core import __version__, hookspecs

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "TRACE_HOOKS_ENV",
    "PluginInfo",
    "build_plugin_manager",
    "plugin_infos",
]

log = logging.getLogger("praefect.plugins")

#: the router's built-in behaviour, registered in this order
DEFAULT_PLUGINS: tuple[str, ...] = (
    "praefect.plugins.auth",
    "praefect.plugins.routing",
    "praefect.plugins.replication",
    "praefect.plugins.failover",
)

#: third-party plugins declare an entry point in this group
ENTRY_POINT_GROUP = "praefect"

#: set to a non-empty value to log every hook call (logger ``praefect.hooks``)
TRACE_HOOKS_ENV = "PRAEFECT_TRACE_HOOKS"

_hook_log = logging.getLogger("praefect.hooks")


def build_plugin_manager(
    blocked: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
    extra_plugins: Sequence[tuple[str, object]] = (),
) -> pluggy.PluginManager:
    """A new plugin manager with the hook specs, default and installed plugins.

    ``extra_plugins`` (name, plugin) are registered last, after the entry
    points: tests and embedders use them to add a plugin object directly.
    Raises ``pluggy.PluginValidationError`` when a plugin implements a hook
    that does not exist or with the wrong arguments.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if pm.is_blocked(module_name):
            log.info("default plugin %s is blocked by plugins.blocked", module_name)
            continue
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name, plugin in extra_plugins:
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
    pm.check_pending()
    if os.environ.get(TRACE_HOOKS_ENV):
        pm.add_hookcall_monitoring(_before_hook, _after_hook)
    return pm


def _before_hook(hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    plugins = ", ".join(impl.plugin_name for impl in hook_impls)
    _hook_log.info("hook %s(%s) -> [%s]", hook_name, ", ".join(kwargs), plugins)


def _after_hook(
    outcome: pluggy.Result[Any],
    hook_name: str,
    hook_impls: Sequence[pluggy.HookImpl],
    kwargs: Mapping[str, Any],
) -> None:
    if outcome.exception is not None:
        _hook_log.info("hook %s raised %r", hook_name, outcome.exception)
    else:
        _hook_log.info("hook %s returned %r", hook_name, outcome.get_result())


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What ``praefect plugins`` shows for one registered plugin."""

    name: str
    version: str
    source: str  # "default" or "entry point (<distribution>)"
    hooks: tuple[str, ...]


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """The registered plugins in registration order with their hooks."""
    distributions = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        hooks = tuple(
            sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        )
        dist = distributions.get(id(plugin))
        if dist is not None:
            infos.append(
                PluginInfo(name, dist.version, f"entry point ({dist.project_name})", hooks)
            )
        else:
            source = "default" if name in DEFAULT_PLUGINS else "registered"
            infos.append(PluginInfo(name, _module_version(plugin), source, hooks))
    return infos


def _module_version(plugin: object) -> str:
    if isinstance(plugin, ModuleType) and plugin.__name__.startswith("praefect."):
        version: str = __version__
        return version
    return str(getattr(plugin, "__version__", "")) or "-"
