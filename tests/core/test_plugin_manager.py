"""The per-router plugin manager and the hook facade's call order."""

from __future__ import annotations

import dataclasses
import logging

import pluggy
import pytest

from praefect.core import hookimpl
from praefect.core.call import Call
from praefect.core.cluster import Cluster
from praefect.core.hooks import Hooks
from praefect.core.plugin_manager import (
    DEFAULT_PLUGINS,
    TRACE_HOOKS_ENV,
    build_plugin_manager,
    plugin_infos,
)
from praefect.core.router import Router, RouterStartError
from praefect.core.router_config import RouterConfig, RouterConfigError
from praefect.core.stash import Stash, StashKey
from tests.support.router import router_settings

SETTINGS = router_settings({"gitaly-1": "tcp://127.0.0.1:9001"})


def test_default_plugins_are_registered_in_order() -> None:
    pm = build_plugin_manager(load_entry_points=False)
    names = [info.name for info in plugin_infos(pm)]
    assert names == list(DEFAULT_PLUGINS)


def test_each_router_gets_its_own_manager() -> None:
    assert build_plugin_manager(load_entry_points=False) is not build_plugin_manager(load_entry_points=False)


def test_blocked_plugins_are_not_registered() -> None:
    pm = build_plugin_manager(["praefect.plugins.routing"], load_entry_points=False)
    assert "praefect.plugins.routing" not in [info.name for info in plugin_infos(pm)]
    assert pm.is_blocked("praefect.plugins.routing")


def test_a_router_without_routing_refuses_to_start() -> None:
    # the failover plugin's `route` only routes around a down primary
    blocked = ["praefect.plugins.routing", "praefect.plugins.failover"]
    settings = router_settings({"gitaly-1": "tcp://127.0.0.1:9001"}, plugins={"blocked": blocked})
    router = Router(RouterConfig(settings), load_entry_points=False)
    with pytest.raises(RouterStartError, match="no plugin implements route"):
        router.open()


def test_a_misspelt_hook_fails_at_build() -> None:
    class Typo:
        @hookimpl
        def on_mutaton(self, mutation: object) -> None: ...

    with pytest.raises(pluggy.PluginValidationError, match="on_mutaton"):
        build_plugin_manager(load_entry_points=False, extra_plugins=[("typo", Typo())])


def test_a_hook_with_unknown_arguments_fails_at_build() -> None:
    class Wrong:
        @hookimpl
        def route(self, call: Call, cluster: Cluster, extra: int) -> None: ...

    with pytest.raises(pluggy.PluginValidationError):
        build_plugin_manager(load_entry_points=False, extra_plugins=[("wrong", Wrong())])


def test_later_plugins_run_first_and_defaults_last() -> None:
    class Mine:
        @hookimpl
        def route(self, call: Call, cluster: Cluster) -> None: ...

    pm = build_plugin_manager(load_entry_points=False, extra_plugins=[("mine", Mine())])
    assert Hooks(pm).implementers("route") == (
        "mine",
        "praefect.plugins.failover",
        "praefect.plugins.routing",
    )


def test_trace_hooks_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(TRACE_HOOKS_ENV, "1")
    pm = build_plugin_manager(load_entry_points=False)
    caplog.set_level(logging.INFO, logger="praefect.hooks")
    from praefect.core.registry import default_registry

    call = Call(default_registry()["/gitaly.ServerService/ServerInfo"], (), router=None)  # type: ignore[arg-type, unused-ignore]
    pm.hook.route(call=call, cluster=None)  # no repository, no storage: the default returns None
    assert any("hook route" in record.getMessage() for record in caplog.records)


def test_router_refuses_an_empty_auth_token_unless_transitioning() -> None:
    from praefect.settings import AuthConfig

    RouterConfig(dataclasses.replace(SETTINGS, auth=AuthConfig(token="", transitioning=True)))
    with pytest.raises(RouterConfigError, match="auth_token is empty"):
        RouterConfig(dataclasses.replace(SETTINGS, auth=AuthConfig(token="", transitioning=False)))


def test_stash_is_typed_per_key() -> None:
    counter = StashKey[int]()
    label = StashKey[str]()
    stash = Stash()
    stash[counter] = 1
    assert stash[counter] == 1 and counter in stash and label not in stash
    assert stash.get(label, "none") == "none"
    assert stash.setdefault(label, "x") == "x" and stash[label] == "x"
    del stash[counter]
    assert len(stash) == 1
    with pytest.raises(KeyError):
        stash[counter]
