"""The demo cluster: three storage nodes, a router (with its embedded Redis) and the gateway.

Everything lives in one work directory::

    settings.toml        the router's settings (mode 0600: it holds the tokens)
    gateway-password     the HTTP password (mode 0600)
    redis/               the embedded Redis's data directory (its unix socket)
    storages/gitaly-N/   each node's storage
    logs/NAME.log        each process's output

and listens on loopback only. The router owns the embedded Redis
(``redis.url`` is empty, ``redis.data_dir`` is ``redis/``), so
``praefect dataloss --config settings.toml`` and the other admin commands
work against the running demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from praefect.core.demo.processes import ChildProcess, praefect_argv
from praefect.core.lifecycle import StartStop
from praefect.plugins.replication.embedded_redis import MAX_SOCKET_PATH, SOCKET_NAME
from praefect.settings import Config, to_toml

__all__ = [
    "GATEWAY_USER",
    "NODE_NAMES",
    "PRIMARY",
    "PROJECT_PATH",
    "VIRTUAL_STORAGE",
    "DemoCluster",
    "DemoSetupError",
    "Ports",
    "Secrets",
    "describe_exit",
]

VIRTUAL_STORAGE = "praefect"
NODE_NAMES: tuple[str, ...] = ("gitaly-1", "gitaly-2", "gitaly-3")
PRIMARY = NODE_NAMES[0]
PROJECT_PATH = "demo/project.git"
GATEWAY_USER = "demo"
ROUTER = "router"
GATEWAY = "gateway"
_HIGHEST_PORT = 65535


class DemoSetupError(RuntimeError):
    """The demo cannot be set up as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Ports:
    """Where each process listens on 127.0.0.1."""

    router: int
    gateway: int
    nodes: Mapping[str, int]

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """``base``: the router; ``base+1``..``base+3``: the nodes; ``base+4``: the gateway."""
        if not 1024 <= base <= _HIGHEST_PORT - len(NODE_NAMES) - 1:
            raise DemoSetupError(
                f"--base-port {base} is out of range: give a port between 1024 and "
                f"{_HIGHEST_PORT - len(NODE_NAMES) - 1} (the demo uses it and the next "
                f"{len(NODE_NAMES) + 1})"
            )
        nodes = {name: base + 1 + index for index, name in enumerate(NODE_NAMES)}
        return cls(base, base + len(NODE_NAMES) + 1, MappingProxyType(nodes))

    @classmethod
    def free(cls) -> Ports:
        """Ports nothing listens on right now, chosen by the kernel."""
        sockets = []
        try:
            for _ in range(len(NODE_NAMES) + 2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", 0))
            numbers = [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        router, gateway, *node_ports = numbers
        return cls(router, gateway, MappingProxyType(dict(zip(NODE_NAMES, node_ports, strict=True))))

    def all(self) -> list[int]:
        return [self.router, *self.nodes.values(), self.gateway]


@dataclass(frozen=True, slots=True)
class Secrets:
    """The demo's random credentials."""

    auth_token: str = field(repr=False)
    node_tokens: Mapping[str, str] = field(repr=False)
    password: str = field(repr=False)

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            auth_token=secrets.token_hex(16),
            node_tokens=MappingProxyType({name: secrets.token_hex(16) for name in NODE_NAMES}),
            # URL-safe: it goes into the clone URL as it is.
            password=secrets.token_urlsafe(12),
        )


def _merged(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, table by table."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merged[key] = _merged(current, value)
        else:
            merged[key] = value
    return merged


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    # The children read their settings from the demo's files only: a
    # PRAEFECT_* variable in the user's shell must not redirect them.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRAEFECT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class DemoCluster(StartStop):
    """Starts, watches and stops the demo's processes in ``workdir``.

    ``settings_overrides`` (shaped like the settings file) are merged into
    the router's generated settings, e.g. ``{"failover": {"enabled": False}}``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ports: Ports | None = None,
        secrets: Secrets | None = None,
        start_timeout: float = 60.0,
        settings_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir.absolute()
        self.ports = ports or Ports.free()
        self.secrets = secrets or Secrets.generate()
        self.start_timeout = start_timeout
        self.settings_mapping = _merged(self._settings_mapping(), settings_overrides or {})
        self.settings: Config = Config.from_mapping(self.settings_mapping)
        self.children: dict[str, ChildProcess] = {}

    # ------------------------------------------------------------ layout

    @property
    def settings_file(self) -> Path:
        return self.workdir / "settings.toml"

    @property
    def password_file(self) -> Path:
        return self.workdir / "gateway-password"

    @property
    def redis_dir(self) -> Path:
        return self.workdir / "redis"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def scratch_dir(self) -> Path:
        """Where the demo's own clones go."""
        return self.workdir / "work"

    def storage_dir(self, node: str) -> Path:
        return self.workdir / "storages" / node

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    # --------------------------------------------------------- addresses

    @property
    def router_address(self) -> str:
        return f"127.0.0.1:{self.ports.router}"

    @property
    def gateway_address(self) -> str:
        return f"127.0.0.1:{self.ports.gateway}"

    def node_address(self, node: str) -> str:
        return f"127.0.0.1:{self.ports.nodes[node]}"

    def clone_url(self, relative_path: str = PROJECT_PATH, *, with_password: bool = True) -> str:
        """``http://demo:PASSWORD@127.0.0.1:PORT/<relative_path>``."""
        credentials = f"{GATEWAY_USER}:{self.secrets.password}@" if with_password else ""
        return f"http://{credentials}{self.gateway_address}/{relative_path}"

    # ---------------------------------------------------------- settings

    def _settings_mapping(self) -> dict[str, Any]:
        return {
            "listen_addr": self.router_address,
            "auth_token": self.secrets.auth_token,
            "redis": {"url": "", "data_dir": str(self.redis_dir)},
            "logging": {"level": "info"},
            "virtual_storages": {
                VIRTUAL_STORAGE: {
                    name: {
                        "address": f"tcp://{self.node_address(name)}",
                        "token": self.secrets.node_tokens[name],
                        "primary": name == PRIMARY,
                    }
                    for name in NODE_NAMES
                }
            },
        }

    def _check_workdir(self) -> None:
        socket_path = self.redis_dir / SOCKET_NAME
        if len(str(socket_path).encode()) > MAX_SOCKET_PATH:
            raise DemoSetupError(
                f"the work directory's path is too long for the embedded Redis's unix socket "
                f"({len(str(socket_path).encode())} > {MAX_SOCKET_PATH} bytes): choose a shorter "
                "--workdir, for example one under /tmp"
            )
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise DemoSetupError(
                f"the work directory {self.workdir} is not empty: give an empty or new "
                "directory with --workdir (each demo starts from nothing)"
            )
        busy = [port for port in self.ports.all() if not _port_free(port)]
        if busy:
            raise DemoSetupError(
                f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} on 127.0.0.1 "
                "already in use: choose another --base-port, or leave it out to use free ports"
            )

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, text in (
            (self.settings_file, to_toml(self.settings_mapping)),
            (self.password_file, self.secrets.password + "\n"),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        for name in NODE_NAMES:
            self.storage_dir(name).mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.scratch_dir.mkdir(exist_ok=True)

    # ---------------------------------------------------------- children

    def _node_process(self, name: str) -> ChildProcess:
        argv = praefect_argv(
            "node", "serve",
            "--listen", self.node_address(name),
            "--storage", f"{name}={self.storage_dir(name)}",
        )
        env = _child_environment({"PRAEFECT_NODE_TOKEN": self.secrets.node_tokens[name]})
        return ChildProcess(name, argv, log_path=self.log_file(name), env=env, cwd=self.workdir)

    def _router_process(self) -> ChildProcess:
        argv = praefect_argv("serve", "--config", str(self.settings_file))
        return ChildProcess(
            ROUTER, argv, log_path=self.log_file(ROUTER), env=_child_environment({}), cwd=self.workdir
        )

    def _gateway_process(self) -> ChildProcess:
        argv = praefect_argv(
            "gateway",
            "--listen", self.gateway_address,
            "--router", self.router_address,
            "--secret-file", str(self.password_file),
        )
        env = _child_environment({"PRAEFECT_AUTH_TOKEN": self.secrets.auth_token})
        return ChildProcess(GATEWAY, argv, log_path=self.log_file(GATEWAY), env=env, cwd=self.workdir)

    def child(self, name: str) -> ChildProcess:
        return self.children[name]

    def pids(self) -> dict[str, int]:
        """The pid of every child that runs."""
        return {name: child.pid for name, child in self.children.items() if child.running and child.pid}

    async def start(self, progress: Callable[[str], None] | None = None) -> None:
        """Start the nodes (together), then the router and the gateway (together).

        Raises :class:`DemoSetupError` before anything starts when the work
        directory or the ports cannot be used, and
        :class:`~praefect.core.demo.processes.ChildStartError` when a
        process does not start (whatever started is stopped again).
        """
        self._check_workdir()
        self._write_files()
        say = progress or (lambda message: None)
        try:
            say("starting the storage nodes " + ", ".join(NODE_NAMES))
            nodes = [self._node_process(name) for name in NODE_NAMES]
            for node in nodes:
                self.children[node.name] = node
            await self._start_together(nodes)
            # The gateway does not need the router to start (it answers 503
            # until the router is up), so the two start together.
            say("starting the router (with its embedded Redis) and the git HTTP gateway")
            router = self.children[ROUTER] = self._router_process()
            gateway = self.children[GATEWAY] = self._gateway_process()
            await self._start_together([router, gateway])
        except BaseException:
            await self.stop()
            raise

    async def _start_together(self, children: list[ChildProcess]) -> None:
        """Start ``children`` at once; when one fails, stop waiting for the others."""
        tasks = [asyncio.ensure_future(child.start(self.start_timeout)) for child in children]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the gateway, then the router (and its Redis), then the nodes.

        Every child's process group is SIGKILLed at the end in any case.
        """
        try:
            for name in (GATEWAY, ROUTER):
                if name in self.children:
                    await self.children[name].stop(grace)
            await asyncio.gather(
                *(self.children[name].stop(grace) for name in NODE_NAMES if name in self.children)
            )
        finally:
            self.kill_now()

    def kill_now(self) -> None:
        """SIGKILL every child's process group (synchronous: a second Ctrl-C, atexit)."""
        for child in self.children.values():
            child.kill_now()

    async def kill_node(self, name: str) -> int | None:
        """``kill -9`` a node (its whole process group); its pid, None if it was not running."""
        node = self.children[name]
        pid = node.pid if node.running else None
        await node.stop(grace=0, signum=signal.SIGKILL)
        return pid

    async def restart_node(self, name: str) -> str:
        """Start a node that stopped again, on its port and storage; its address."""
        node = self.children[name]
        if node.running:
            raise RuntimeError(f"{name} is still running (pid {node.pid})")
        await node.stop(grace=0)  # collect what is left of the previous run
        return await node.start(self.start_timeout)


def describe_exit(child: ChildProcess) -> str:
    """How a child ended, for people: ``exited with status 1``, ``killed by SIGKILL``."""
    code = child.returncode
    if code is None:
        return "running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"
