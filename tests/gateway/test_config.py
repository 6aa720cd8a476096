"""The gateway's configuration: every mistake reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from praefect.gateway.config import GatewayConfig, GatewayConfigError, read_secret_file


def test_a_good_configuration_has_defaults() -> None:
    config = GatewayConfig(listen_addr="127.0.0.1:0", router_addr="tcp://127.0.0.1:2305", token="t")
    assert config.storage == "praefect"
    assert config.password is None
    assert config.grpc_target == "127.0.0.1:2305"
    assert config.listen_host_port == ("127.0.0.1", 0)


def test_ipv6_and_unix_addresses_are_accepted() -> None:
    config = GatewayConfig(listen_addr="[::1]:8080", router_addr="unix:/run/praefect.sock", token="t")
    assert config.listen_host_port == ("::1", 8080)
    assert config.grpc_target == "unix:/run/praefect.sock"


def test_every_mistake_is_reported_together() -> None:
    with pytest.raises(GatewayConfigError) as caught:
        GatewayConfig(listen_addr="localhost", router_addr="router", token="", storage="", password="")
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 5
    for expected in ("listen address", "router address", "no router token", "no storage", "password is empty"):
        assert expected in problems


def test_secret_file_loses_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert read_secret_file(secret) == "s3cret"


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read"), ("\n", "is empty")])
def test_unreadable_or_empty_secret_files_are_refused(tmp_path: Path, content: str | None, problem: str) -> None:
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(GatewayConfigError, match=problem):
        read_secret_file(secret)
