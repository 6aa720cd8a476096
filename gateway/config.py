"""The gateway's configuration: plain data, validated once at construction.

`GatewayConfig` is separate from `GatewayServer` so that the command line,
the demo and tests build it the same way and every mistake is reported
before anything listens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORAGE = "praefect"
DEFAULT_REALM = "praefect"

# Time limits on the router's answers; docs/gateway.md ("Time limits")
# explains each choice.
#: seconds the router has to send each piece of a ref advertisement
#: (GET info/refs) once the gateway asks for it
DEFAULT_ADVERTISE_TIMEOUT = 60.0
#: seconds the router may keep a POST waiting: to take a piece of the
#: request body, then, once the body is sent, to start answering
DEFAULT_RESPONSE_START_TIMEOUT = 300.0
#: gRPC keepalive on the router channel: a ping after this many seconds,
#: three times the 10 s the router's server permits between pings
DEFAULT_KEEPALIVE_TIME = 30.0
#: seconds a keepalive ping may wait for its acknowledgement (gRPC's default)
DEFAULT_KEEPALIVE_TIMEOUT = 20.0


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
    advertise_timeout: seconds the router has to send each message of an
        InfoRefs answer (a ref advertisement) once the gateway asks for it;
        time spent sending the advertisement to a slow client does not count.
    response_start_timeout: seconds the router may keep a PostUploadPack or
        PostReceivePack waiting before its first response message: to take
        each piece of the request body, and after the whole body to start
        answering. Time spent waiting for the HTTP client does not count,
        and nothing limits the transfer once the answer has started.
    keepalive_time, keepalive_timeout: gRPC keepalive on the router channel
        while calls are in flight: a ping once the connection has been quiet
        for `keepalive_time` seconds, and the connection is given up when
        the acknowledgement takes more than `keepalive_timeout` seconds.
    """

    listen_addr: str
    router_addr: str
    token: str
    storage: str = DEFAULT_STORAGE
    password: str | None = None
    realm: str = DEFAULT_REALM
    graceful_stop_timeout: float = 10.0
    create_repository_timeout: float = 60.0
    advertise_timeout: float = DEFAULT_ADVERTISE_TIMEOUT
    response_start_timeout: float = DEFAULT_RESPONSE_START_TIMEOUT
    keepalive_time: float = DEFAULT_KEEPALIVE_TIME
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT

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
        for name, value, default, remedy in (
            (
                "advertise timeout",
                self.advertise_timeout,
                DEFAULT_ADVERTISE_TIMEOUT,
                "give --advertise-timeout SECONDS",
            ),
            (
                "response start timeout",
                self.response_start_timeout,
                DEFAULT_RESPONSE_START_TIMEOUT,
                "give --response-start-timeout SECONDS",
            ),
            ("keepalive time", self.keepalive_time, DEFAULT_KEEPALIVE_TIME, "set keepalive_time"),
            (
                "keepalive timeout",
                self.keepalive_timeout,
                DEFAULT_KEEPALIVE_TIMEOUT,
                "set keepalive_timeout",
            ),
        ):
            if not _positive_seconds(value):
                problems.append(
                    f"{name} {value!r} is not a positive number of seconds: "
                    f"{remedy} (default {default:g})"
                )
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


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _valid_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host.strip("[]") and port.isdigit() and int(port) <= 65535)
