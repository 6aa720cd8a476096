"""Validation of settings mappings: Config.from_mapping, every mistake reported."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from praefect.settings import (
    Config,
    NodeConfig,
    Problem,
    SettingsError,
    VirtualStorageConfig,
    to_toml,
)
from praefect.settings.schema import mask_token, mask_url_password


def problems_of(data: dict[str, Any], **kwargs: Any) -> dict[str, Problem]:
    with pytest.raises(SettingsError) as caught:
        Config.from_mapping(data, **kwargs)
    return {problem.key_path: problem for problem in caught.value.problems}


def nodes(data: dict[str, Any]) -> dict[str, Any]:
    vs: dict[str, Any] = data["virtual_storages"]["praefect"]
    return vs


# ---------------------------------------------------------------- valid


def test_good_mapping_gives_typed_config_with_defaults(good_mapping: dict[str, Any]) -> None:
    config = Config.from_mapping(good_mapping)

    assert config.listen_addr == "127.0.0.1:2305"
    assert config.auth.token == "external-token-0123456789"
    assert config.auth.transitioning is False
    assert config.auth.allow_v1_tokens is False
    assert config.redis.url == "" and config.redis.embedded
    assert config.prometheus_listen_addr == ""
    assert config.logging.format == "text" and config.logging.level == "info"
    assert config.tracing.exporter == "none" and config.tracing.protocol == "grpc"
    assert config.server.graceful_stop_timeout == 10.0
    assert config.server.max_message_size == 64 * 1024 * 1024
    assert config.server.processes == 1
    assert config.plugins.blocked == ()
    assert config.replication.max_attempts == 5 and config.replication.batch_size == 50
    assert config.failover.enabled is True
    assert config.failover.health_check_interval == 1.0
    assert config.failover.health_check_timeout == 1.0

    vs = config.virtual_storage("praefect")
    assert config.virtual_storage_names == ("praefect",)
    assert vs.node_names == ("gitaly-1", "gitaly-2", "gitaly-3")
    assert vs.primary == NodeConfig(
        "gitaly-1", "tcp://127.0.0.1:9001", "internal-token-0123456789", primary=True
    )
    assert [node.grpc_target for node in vs.nodes] == [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "unix:/tmp/gitaly-3.sock",
    ]
    assert vs.node("gitaly-2").primary is False
    with pytest.raises(KeyError):
        config.virtual_storage("nope")
    with pytest.raises(KeyError):
        vs.node("nope")


def test_config_is_frozen_and_hides_tokens_in_repr(good_mapping: dict[str, Any]) -> None:
    config = Config.from_mapping(good_mapping)
    with pytest.raises(AttributeError):
        config.listen_addr = "x"  # type: ignore[misc, unused-ignore]
    assert "token-0123456789" not in repr(config)
    assert isinstance(config.virtual_storages[0], VirtualStorageConfig)
    hash(config)


def test_keys_ignore_case_but_names_keep_theirs(good_mapping: dict[str, Any]) -> None:
    good_mapping["LOGGING"] = {"Level": "DEBUG"}
    nodes(good_mapping)["Gitaly-4"] = {"Address": "h:1", "TOKEN": "t"}
    config = Config.from_mapping(good_mapping)
    assert config.logging.level == "debug"
    assert config.virtual_storage("praefect").node("Gitaly-4").address == "h:1"


def test_every_value_can_be_set(good_mapping: dict[str, Any]) -> None:
    good_mapping.update(
        listen_addr="[::1]:0",
        prometheus_listen_addr="0.0.0.0:9652",
        auth={"transitioning": True, "allow_v1_tokens": True},
        redis={"url": "rediss://:pw@redis:6380/1", "data_dir": "/var/lib/praefect/redis"},
        logging={"format": "json", "level": "warning"},
        tracing={
            "exporter": "otlp",
            "endpoint": "http://collector:4318",
            "protocol": "http",
            "service_name": "praefect-eu",
        },
        server={"graceful_stop_timeout": 3, "max_message_size": 1024, "processes": 4},
        plugins={"blocked": ["a", "b", "a"]},
        replication={"max_attempts": 2, "batch_size": 10},
        failover={"enabled": False, "health_check_interval": 0.5, "health_check_timeout": 2},
        node={"listen_addr": "unix:/run/node.sock", "token": "n", "storages": {"s": "/srv/s"}},
    )
    config = Config.from_mapping(good_mapping)
    assert config.server.graceful_stop_timeout == 3.0
    assert isinstance(config.server.graceful_stop_timeout, float)
    assert config.plugins.blocked == ("a", "b")
    assert config.failover.health_check_timeout == 2.0
    assert dict(config.node.storages) == {"s": "/srv/s"}
    assert not config.redis.embedded
    # the mapping form round-trips, and its TOML rendering is valid TOML
    assert Config.from_mapping(config.as_mapping(mask=False)) == config
    assert Config.from_mapping(tomllib.loads(to_toml(config.as_mapping(mask=False)))) == config


def test_as_mapping_masks_every_secret(good_mapping: dict[str, Any]) -> None:
    good_mapping["redis"] = {"url": "redis://user:hunter2@redis:6379/0"}
    good_mapping["node"] = {"token": "node-token-0123456789"}
    text = to_toml(Config.from_mapping(good_mapping).as_mapping())
    assert "0123456789" not in text
    assert "hunter2" not in text
    assert 'token = "****89"' in text
    assert "redis://user:****@redis:6379/0" in text


def test_masks() -> None:
    assert mask_token("") == ""
    assert mask_token("short") == "********"
    assert mask_token("a-rather-long-token-xy") == "****xy"
    assert mask_url_password("redis://redis:6379") == "redis://redis:6379"
    assert mask_url_password("redis://:pw@[::1]:6379/0") == "redis://:****@[::1]:6379/0"


# ---------------------------------------------------------------- virtual storages


def test_no_virtual_storage() -> None:
    found = problems_of({"auth_token": "t"})
    assert set(found) == {"virtual_storages"}
    assert "no virtual storage" in found["virtual_storages"].message


def test_virtual_storages_not_required_for_node_serve() -> None:
    config = Config.from_mapping(
        {"node": {"listen_addr": "127.0.0.1:0", "token": "t", "storages": {"s": "/srv/s"}}},
        require_virtual_storages=False,
        require_node=True,
    )
    assert config.virtual_storages == ()
    assert config.auth.token == ""


def test_node_section_required_for_node_serve() -> None:
    found = problems_of({}, require_virtual_storages=False, require_node=True)
    assert set(found) == {"node.listen_addr", "node.token", "node.storages"}


def test_virtual_storage_without_nodes(good_mapping: dict[str, Any]) -> None:
    good_mapping["virtual_storages"]["empty"] = {}
    found = problems_of(good_mapping)
    assert set(found) == {"virtual_storages.empty"}
    assert "no nodes" in found["virtual_storages.empty"].message


def test_no_primary_names_the_nodes(good_mapping: dict[str, Any]) -> None:
    nodes(good_mapping)["gitaly-1"]["primary"] = False
    found = problems_of(good_mapping)
    problem = found["virtual_storages.praefect"]
    assert "no primary" in problem.message
    assert "gitaly-1, gitaly-2, gitaly-3" in problem.hint


def test_two_primaries_are_named(good_mapping: dict[str, Any]) -> None:
    nodes(good_mapping)["gitaly-3"]["primary"] = True
    found = problems_of(good_mapping)
    assert set(found) == {"virtual_storages.praefect"}
    assert "2 primary nodes (gitaly-1, gitaly-3)" in found["virtual_storages.praefect"].message


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://gitaly:8075", "unsupported scheme 'http://'"),
        ("tls://gitaly:8075", "unsupported scheme 'tls://'"),
        ("tcp://gitaly", "missing port"),
        ("gitaly", "missing port"),
        ("gitaly:", "missing port"),
        ("gitaly:80a", "port '80a' is not a number"),
        ("gitaly:70000", "out of range"),
        ("gitaly:0", "out of range"),
        (":8075", "missing host"),
        ("::1:8075", "brackets"),
        ("[::1]", "missing port"),
        ("unix:relative.sock", "must be absolute"),
        ("tcp://gitaly:8075/path", "unexpected path"),
        ("", "must not be empty"),
    ],
)
def test_malformed_address(good_mapping: dict[str, Any], address: str, expected: str) -> None:
    nodes(good_mapping)["gitaly-2"]["address"] = address
    found = problems_of(good_mapping)
    assert set(found) == {"virtual_storages.praefect.gitaly-2.address"}
    problem = found["virtual_storages.praefect.gitaly-2.address"]
    assert expected in problem.message
    assert "tcp://host:port" in problem.hint


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("tcp://gitaly-1.internal:8075", "gitaly-1.internal:8075"),
        ("10.0.0.1:8075", "10.0.0.1:8075"),
        ("tcp://[::1]:8075", "[::1]:8075"),
        ("unix:/var/run/gitaly.sock", "unix:/var/run/gitaly.sock"),
        ("unix:///var/run/gitaly.sock", "unix:/var/run/gitaly.sock"),
    ],
)
def test_grpc_target(good_mapping: dict[str, Any], address: str, target: str) -> None:
    nodes(good_mapping)["gitaly-2"]["address"] = address
    config = Config.from_mapping(good_mapping)
    assert config.virtual_storage("praefect").node("gitaly-2").grpc_target == target


@pytest.mark.parametrize("token", ["", "   "])
def test_empty_node_token(good_mapping: dict[str, Any], token: str) -> None:
    nodes(good_mapping)["gitaly-3"]["token"] = token
    found = problems_of(good_mapping)
    assert set(found) == {"virtual_storages.praefect.gitaly-3.token"}
    assert "must not be empty" in found["virtual_storages.praefect.gitaly-3.token"].message


def test_missing_node_keys(good_mapping: dict[str, Any]) -> None:
    nodes(good_mapping)["gitaly-2"] = {}
    found = problems_of(good_mapping)
    assert set(found) == {
        "virtual_storages.praefect.gitaly-2.address",
        "virtual_storages.praefect.gitaly-2.token",
    }
    assert all(p.message == "missing required setting" for p in found.values())


def test_empty_auth_token(good_mapping: dict[str, Any]) -> None:
    del good_mapping["auth_token"]
    found = problems_of(good_mapping)
    assert set(found) == {"auth_token"}
    assert "PRAEFECT_AUTH_TOKEN" in found["auth_token"].hint


def test_node_level_key_written_in_the_virtual_storage(good_mapping: dict[str, Any]) -> None:
    nodes(good_mapping)["address"] = "tcp://127.0.0.1:9004"
    found = problems_of(good_mapping)
    problem = found["virtual_storages.praefect.address"]
    assert "setting of a node" in problem.message
    assert "[virtual_storages.praefect.<node>]" in problem.hint


# ---------------------------------------------------------------- types and values


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("auth.transitioning", "yes", "expected true or false, got the string 'yes'"),
        ("auth.allow_v1_tokens", 1, "expected true or false, got the integer 1"),
        ("server.processes", "4", "expected an integer, got the string '4'"),
        ("server.processes", True, "expected an integer, got the boolean true"),
        ("server.processes", 2.5, "expected an integer, got the number 2.5"),
        ("server.graceful_stop_timeout", "10s", "expected a number"),
        ("plugins.blocked", "auth", "expected a list of strings"),
        ("plugins.blocked", [1], "expected a list of strings"),
        ("listen_addr", 2305, "expected a string, got the integer 2305"),
        ("redis", "redis://x", "expected a table, got the string"),
        ("server.processes", 0, "must be at least 1, got 0"),
        ("failover.health_check_interval", 0, "must be greater than 0"),
        ("server.graceful_stop_timeout", float("inf"), "finite"),
        ("logging.level", "verbose", "'verbose' is not one of: debug, info, warning, error"),
        ("tracing.exporter", "jaeger", "is not one of: none, console, otlp"),
        ("redis.url", "http://redis:6379", "unsupported Redis URL"),
        ("prometheus_listen_addr", "unix:/run/metrics.sock", "unix sockets are not supported"),
        ("node.storages", {"s": "relative/dir"}, "not an absolute path"),
        ("tracing.service_name", "", "must not be empty"),
    ],
)
def test_wrong_type_or_value(
    good_mapping: dict[str, Any], path: str, value: Any, expected: str
) -> None:
    table = good_mapping
    *parents, last = path.split(".")
    for name in parents:
        table = table.setdefault(name, {})
    table[last] = value
    found = problems_of(good_mapping)
    assert len(found) == 1, found
    (problem,) = found.values()
    assert problem.key_path.startswith(path)
    assert expected in problem.message


def test_type_error_does_not_echo_a_secret(good_mapping: dict[str, Any]) -> None:
    nodes(good_mapping)["gitaly-1"]["token"] = 123456789
    found = problems_of(good_mapping)
    assert "123456789" not in str(found["virtual_storages.praefect.gitaly-1.token"])


def test_choice_typo_gets_a_suggestion(good_mapping: dict[str, Any]) -> None:
    good_mapping["logging"] = {"level": "warn"}
    assert problems_of(good_mapping)["logging.level"].hint == "did you mean `warning`?"


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("path", "suggestion"),
    [
        ("virtual_storage", "virtual_storages"),
        ("listen_address", "listen_addr"),
        ("redis.uri", "url"),
        ("tracing.exporters", "exporter"),
        ("transitioning", "auth.transitioning"),
    ],
)
def test_unknown_key_with_suggestion(
    good_mapping: dict[str, Any], path: str, suggestion: str
) -> None:
    table = good_mapping
    *parents, last = path.split(".")
    for name in parents:
        table = table.setdefault(name, {})
    table[last] = "x"
    problem = problems_of(good_mapping)[path]
    assert problem.message == "unknown setting"
    assert problem.hint == f"did you mean `{suggestion}`?"


def test_unknown_node_key(good_mapping: dict[str, Any]) -> None:
    nodes(good_mapping)["gitaly-1"]["adress"] = "tcp://127.0.0.1:9001"
    found = problems_of(good_mapping)
    assert set(found) == {"virtual_storages.praefect.gitaly-1.adress"}
    assert found["virtual_storages.praefect.gitaly-1.adress"].hint == "did you mean `address`?"


def test_unknown_key_without_close_match_lists_allowed_keys(
    good_mapping: dict[str, Any],
) -> None:
    good_mapping["failover"] = {"zzz": 1}
    problem = problems_of(good_mapping)["failover.zzz"]
    assert problem.hint.startswith("allowed here: enabled, health_check_interval")


# ---------------------------------------------------------------- all at once


def test_every_mistake_is_reported_together(good_mapping: dict[str, Any]) -> None:
    del good_mapping["auth_token"]
    good_mapping["virtual_storage"] = {}
    vs = nodes(good_mapping)
    vs["gitaly-1"]["adress"] = vs["gitaly-1"].pop("address")
    vs["gitaly-2"].update(address="gitaly-2", primary="true")
    vs["gitaly-3"].update(token="", primary=True)
    good_mapping["virtual_storages"]["other"] = {}
    good_mapping["server"] = {"processes": "two"}

    with pytest.raises(SettingsError) as caught:
        Config.from_mapping(good_mapping)

    found = {problem.key_path for problem in caught.value.problems}
    assert found == {
        "auth_token",
        "virtual_storage",
        "virtual_storages.praefect.gitaly-1.adress",
        "virtual_storages.praefect.gitaly-1.address",
        "virtual_storages.praefect.gitaly-2.address",
        "virtual_storages.praefect.gitaly-2.primary",
        "virtual_storages.praefect.gitaly-3.token",
        "virtual_storages.praefect",  # gitaly-1 and gitaly-3 are both primary
        "virtual_storages.other",
        "server.processes",
    }
    report = str(caught.value)
    assert report.startswith("10 problems in the settings:\n")
    assert len(report.splitlines()) == 11
    assert (
        "  virtual_storages.praefect.gitaly-1.adress: unknown setting "
        "(did you mean `address`?)" in report.splitlines()
    )


def test_problem_str() -> None:
    assert str(Problem("a.b", "wrong", "fix it")) == "a.b: wrong (fix it)"
    assert str(Problem("a.b", "wrong")) == "a.b: wrong"
    assert str(SettingsError([Problem("a", "b")])) == "1 problem in the settings:\n  a: b"


def test_several_router_processes_need_a_shared_redis(good_mapping: dict[str, Any]) -> None:
    good_mapping["server"] = {"processes": 2}
    problem = problems_of(good_mapping)["server.processes"]
    assert "redis.url is empty" in problem.message
    good_mapping["redis"] = {"url": "redis://127.0.0.1:6379/0"}
    assert Config.from_mapping(good_mapping).server.processes == 2
