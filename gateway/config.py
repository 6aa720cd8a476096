"""The gateway's configuration: plain data, validated once at construction.

`GatewayConfig` is separate from `GatewayServer` so that the command line,
the demo and tests build it the same way and every mistake is reported
before anything listens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORAGE = "praefect"
DEFAULT_REALM = "praefect"


class GatewayConfigError(ValueError):
    """The configuration has one or more problems; the message lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """What the gateway needs to serve git over HTTP.

    listen_addr: HOST:PORT to listen on (port 0 picks a free port).
    router_addr: the Gitaly-protocol server to call (a router or a node),
        HOST:PORT, ``tcp://HOST:PORT`` or ``unix:PATH``.
    token: the router's external token; every call is signed with a v2 token.
    storage: the (virtual) storage name every repository lives in.
    password: the HTTP basic-auth secret (any user name); None serves
        without authentication.
    """

    listen_addr: str
    router_addr: str
    token: str
    storage: str = DEFAULT_STORAGE
    password: str | None = None
    realm: str = DEFAULT_REALM
    graceful_stop_timeout: float = 10.0
    create_repository_timeout: float = 60.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _valid_host_port(self.listen_addr):
            problems.append(
                f"listen address {self.listen_addr!r} is not HOST:PORT (for example 127.0.0.1:8080)"
            )
        if not self.router_addr:
            problems.append("no router address: give --router HOST:PORT")
        elif not (self.router_addr.startswith("unix:") or _valid_host_port(self.grpc_target)):
            problems.append(
                f"router address {self.router_addr!r} is not HOST:PORT, tcp://HOST:PORT or unix:PATH"
            )
        if not self.token:
            problems.append("no router token: give --token (the router's auth_token)")
        if not self.storage:
            problems.append("no storage name: give --storage NAME (the virtual storage)")
        if self.password is not None and not self.password:
            problems.append("the basic-auth password is empty: give a non-empty secret")
        if problems:
            raise GatewayConfigError(problems)

    @property
    def grpc_target(self) -> str:
        """The router address as grpc expects it (without a ``tcp://`` scheme)."""
        return self.router_addr.removeprefix("tcp://")

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen_addr.rpartition(":")
        return host.strip("[]"), int(port)


def read_secret_file(path: Path) -> str:
    """The secret in `path`, without the trailing newline an editor adds.

    Raises GatewayConfigError when the file cannot be read or is empty.
    """
    try:
        secret = path.read_text().rstrip("\r\n")
    except OSError as error:
        raise GatewayConfigError([f"cannot read the secret file {path}: {error.strerror}"]) from error
    if not secret:
        raise GatewayConfigError([f"the secret file {path} is empty"])
    return secret


def _valid_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host.strip("[]") and port.isdigit() and int(port) <= 65535)
