"""load_config: files, secrets, environment overrides, and nothing else."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from praefect.settings import (
    DEFAULTS_FILE,
    EXAMPLES_DIR,
    SettingsError,
    load_config,
)
from praefect.settings.schema import defaults

Write = Callable[[str, str], Path]


def test_defaults_file_holds_exactly_the_schema_defaults() -> None:
    with DEFAULTS_FILE.open("rb") as file:
        assert tomllib.load(file) == defaults()


def test_loads_a_deployment_file(write: Write, good_toml: str) -> None:
    path = write("praefect.toml", good_toml + '\n[logging]\nlevel = "debug"\n')
    config = load_config(path, environ={})
    assert config.virtual_storage("praefect").primary.name == "gitaly-1"
    assert config.logging.level == "debug"
    assert config.logging.format == "text"  # the rest of [logging] keeps its defaults
    assert config.sources == (str(DEFAULTS_FILE), str(path))


def test_relative_path_is_taken_from_the_current_folder(
    write: Write, good_toml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("conf/praefect.toml", good_toml)
    monkeypatch.chdir(tmp_path)
    assert load_config("conf/praefect.toml", environ={}).sources[-1] == str(
        tmp_path / "conf/praefect.toml"
    )


def test_yaml_and_json_files(write: Write) -> None:
    yaml = write(
        "praefect.yaml",
        "auth_token: abc\n"
        "virtual_storages:\n"
        "  praefect:\n"
        "    gitaly-1: {address: 'h:1', token: t, primary: true}\n",
    )
    json = write(
        "praefect.json",
        '{"auth_token": "abc", "virtual_storages": {"praefect": '
        '{"gitaly-1": {"address": "h:1", "token": "t", "primary": true}}}}',
    )
    assert load_config(yaml, environ={}) == load_config(json, environ={})


# ---------------------------------------------------------------- files that cannot be used


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_config(tmp_path / "nope.toml", environ={})
    (problem,) = caught.value.problems
    assert problem.key_path == str(tmp_path / "nope.toml")
    assert problem.message == "the settings file does not exist"


def test_missing_secrets_file_from_environment(write: Write, good_toml: str) -> None:
    path = write("praefect.toml", good_toml)
    with pytest.raises(SettingsError) as caught:
        load_config(path, environ={"PRAEFECT_SECRETS_FILE": "/nonexistent/secrets.toml"})
    (problem,) = caught.value.problems
    assert problem.message == "the secrets file does not exist"
    assert "PRAEFECT_SECRETS_FILE" in problem.hint


def test_unparsable_file(write: Write) -> None:
    path = write("praefect.toml", "listen_addr = \n")
    with pytest.raises(SettingsError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert problem.key_path == str(path)
    assert "cannot read the file" in problem.message
    assert "line 1" in problem.message


def test_unknown_file_type(write: Write) -> None:
    path = write("praefect.conf", "")
    with pytest.raises(SettingsError, match="TOML, YAML or JSON"):
        load_config(path, environ={})


# ---------------------------------------------------------------- secrets and environment


def test_secrets_file_supplies_tokens(write: Write) -> None:
    deployment = write(
        "praefect.toml",
        '[virtual_storages.praefect.gitaly-1]\naddress = "h:1"\nprimary = true\n',
    )
    secrets = write(
        "secrets.toml",
        'auth_token = "from-secrets"\n[virtual_storages.praefect.gitaly-1]\ntoken = "node-secret"\n',
    )
    with pytest.raises(SettingsError) as caught:
        load_config(deployment, environ={})
    assert {p.key_path for p in caught.value.problems} == {
        "auth_token",
        "virtual_storages.praefect.gitaly-1.token",
    }

    config = load_config(deployment, secrets_file=secrets, environ={})
    assert config.auth.token == "from-secrets"
    node = config.virtual_storage("praefect").primary
    assert (node.address, node.token) == ("h:1", "node-secret")
    # the same through the environment variable
    via_env = load_config(deployment, environ={"PRAEFECT_SECRETS_FILE": str(secrets)})
    assert via_env == config


def test_settings_file_from_environment_variable(write: Write, good_toml: str) -> None:
    path = write("praefect.toml", good_toml)
    config = load_config(environ={"PRAEFECT_SETTINGS_FILE": str(path)})
    assert config.sources[-1] == str(path)
    assert config.virtual_storage_names == ("praefect",)


def test_argument_wins_over_environment_variable(write: Write, good_toml: str) -> None:
    chosen = write("chosen.toml", good_toml)
    other = write("other.toml", "this is not toml")
    config = load_config(chosen, environ={"PRAEFECT_SETTINGS_FILE": str(other)})
    assert config.sources[-1] == str(chosen)


def test_environment_overrides_nested_keys(write: Write, good_toml: str) -> None:
    path = write("praefect.toml", good_toml + '\n[redis]\nurl = "redis://file:6379"\n')
    config = load_config(
        path,
        environ={
            "PRAEFECT_REDIS__URL": "redis://env:6379/2",
            "PRAEFECT_AUTH__TRANSITIONING": "true",
            "PRAEFECT_LISTEN_ADDR": "0.0.0.0:2305",
            "PRAEFECT_AUTH_TOKEN": "0123",
            "PRAEFECT_SERVER__PROCESSES": "4",
            "PRAEFECT_FAILOVER__HEALTH_CHECK_INTERVAL": "0.25",
            "PRAEFECT_PLUGINS__BLOCKED": '["tracing"]',
            "PRAEFECT_VIRTUAL_STORAGES__praefect__gitaly-2__TOKEN": "from-env",
            "PRAEFECT_SETTINGS_FILE": "/ignored/because/an/argument/was/given.toml",
            "PRAEFECT_NODE_TOKEN": "read by `praefect node serve --token`",
            "OTHER_VARIABLE": "ignored",
        },
    )
    assert config.redis.url == "redis://env:6379/2"
    assert config.redis.data_dir == ""
    assert config.auth.transitioning is True
    assert config.listen_addr == "0.0.0.0:2305"
    assert config.auth.token == "0123"  # strings are not parsed as numbers
    assert config.server.processes == 4
    assert config.failover.health_check_interval == 0.25
    assert config.plugins.blocked == ("tracing",)
    assert config.virtual_storage("praefect").node("gitaly-2").token == "from-env"


def test_environment_problems_name_the_variable(write: Write, good_toml: str) -> None:
    path = write("praefect.toml", good_toml)
    with pytest.raises(SettingsError) as caught:
        load_config(
            path,
            environ={
                "PRAEFECT_AUTH__TRANSITIONING": "maybe",
                "PRAEFECT_REDIS__URLL": "redis://x",
                "PRAEFECT_BOGUS": "1",
                "PRAEFECT_REDIS____URL": "x",
            },
        )
    found = {p.key_path: p for p in caught.value.problems}
    assert set(found) == {"auth.transitioning", "redis.urll", "bogus", "PRAEFECT_REDIS____URL"}
    assert (
        "environment variable PRAEFECT_AUTH__TRANSITIONING" in found["auth.transitioning"].message
    )
    assert found["redis.urll"].hint == "did you mean `url`?"
    assert "PRAEFECT_BOGUS" in found["bogus"].message


def test_os_environ_is_the_default(
    write: Write, good_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("praefect.toml", good_toml)
    monkeypatch.setenv("PRAEFECT_REDIS__URL", "redis://from-os-environ:6379")
    assert load_config(path).redis.url == "redis://from-os-environ:6379"


# ---------------------------------------------------------------- nothing else is read


def test_stray_files_in_current_and_parent_folders_are_ignored(
    write: Write, good_toml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = 'listen_addr = "10.9.9.9:1"\nauth_token = "stray"\n[logging]\nlevel = "error"\n'
    for folder in ("", "work/"):
        write(folder + "settings.toml", stray)
        write(folder + ".secrets.toml", stray)
        write(folder + "settings.local.toml", stray)
        write(folder + "settings.yaml", "listen_addr: 10.9.9.9:1\n")
        write(folder + ".secrets.yaml", "auth_token: stray\n")
        write(folder + "settings.json", '{"listen_addr": "10.9.9.9:1"}')
        write(folder + ".env", "PRAEFECT_LISTEN_ADDR=10.9.9.9:1\nDYNACONF_LISTEN_ADDR=10.9.9.9:1\n")
    deployment = write("deploy/praefect.toml", good_toml)
    write("deploy/praefect.local.toml", stray)  # dynaconf would load this one too
    monkeypatch.chdir(tmp_path / "work")
    # dynaconf's own variables must not bring files or values in either
    monkeypatch.setenv("SETTINGS_FILE_FOR_DYNACONF", str(tmp_path / "settings.toml"))
    monkeypatch.setenv("SECRETS_FOR_DYNACONF", str(tmp_path / ".secrets.toml"))
    monkeypatch.setenv("INCLUDES_FOR_DYNACONF", str(tmp_path / "settings.toml"))
    monkeypatch.setenv("ENVIRONMENTS_FOR_DYNACONF", "true")
    monkeypatch.setenv("DYNACONF_LISTEN_ADDR", "10.9.9.9:1")

    for config in (load_config(deployment, environ={}), load_config(deployment)):
        assert config.listen_addr == "127.0.0.1:2305"
        assert config.auth.token == "external-token-0123456789"
        assert config.logging.level == "info"
        assert config.sources == (str(DEFAULTS_FILE), str(deployment))

    # and without any deployment file only the defaults are read
    with pytest.raises(SettingsError) as caught:
        load_config(environ={})
    assert {p.key_path for p in caught.value.problems} == {"auth_token", "virtual_storages"}


# ---------------------------------------------------------------- examples


def test_router_example_validates() -> None:
    config = load_config(EXAMPLES_DIR / "praefect.toml", environ={})
    vs = config.virtual_storage("praefect")
    assert vs.node_names == ("gitaly-1", "gitaly-2", "gitaly-3")
    assert vs.primary.name == "gitaly-1"
    assert [node.grpc_target for node in vs.nodes] == [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9003",
    ]
    assert all("REPLACE" in node.token for node in vs.nodes)


def test_node_example_validates() -> None:
    config = load_config(
        EXAMPLES_DIR / "node.toml",
        environ={},
        require_virtual_storages=False,
        require_node=True,
    )
    assert config.node.listen_addr == "127.0.0.1:9001"
    assert set(config.node.storages) == {"gitaly-1"}
    with pytest.raises(SettingsError):
        load_config(EXAMPLES_DIR / "node.toml", environ={})  # not a router file
