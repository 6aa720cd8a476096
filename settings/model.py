"""The validated settings: typed, frozen dataclasses.

Build them with :func:`praefect.settings.load_config` or
:meth:`Config.from_mapping`; both validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .addresses import parse_address
from .schema import mask_secrets

__all__ = [
    "AuthConfig",
    "Config",
    "FailoverConfig",
    "LoggingConfig",
    "NodeConfig",
    "NodeServeConfig",
    "PluginsConfig",
    "RedisConfig",
    "ReplicationConfig",
    "ServerConfig",
    "TracingConfig",
    "VirtualStorageConfig",
]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A storage node behind a virtual storage; ``name`` is its storage name."""

    name: str
    address: str
    token: str = field(repr=False)
    primary: bool = False

    @property
    def grpc_target(self) -> str:
        """``host:port`` or ``unix:/path``, as ``grpc.aio.insecure_channel`` wants."""
        return parse_address(self.address).grpc_target


@dataclass(frozen=True, slots=True)
class VirtualStorageConfig:
    """A virtual storage and its nodes, in the order of the settings."""

    name: str
    nodes: tuple[NodeConfig, ...]

    @property
    def primary(self) -> NodeConfig:
        """The configured primary (validation guarantees exactly one)."""
        for node in self.nodes:
            if node.primary:
                return node
        raise LookupError(f"virtual storage {self.name!r} has no primary")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def node(self, name: str) -> NodeConfig:
        """The node called ``name``; KeyError if there is none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Client authentication. ``token`` is the top-level ``auth_token``."""

    token: str = field(repr=False)
    transitioning: bool = False
    allow_v1_tokens: bool = False


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = field(repr=False)
    data_dir: str

    @property
    def embedded(self) -> bool:
        """True when the router starts its own Redis (no URL configured)."""
        return not self.url


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    format: str
    level: str


@dataclass(frozen=True, slots=True)
class TracingConfig:
    exporter: str
    endpoint: str
    protocol: str
    service_name: str
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    graceful_stop_timeout: float
    max_message_size: int
    processes: int


@dataclass(frozen=True, slots=True)
class PluginsConfig:
    blocked: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    max_attempts: int
    batch_size: int
    claim_idle: float = 60.0
    call_timeout: float = 300.0
    concurrency: int = 4
    #: seconds between verifications of a replica's existence; 0: off
    verification_interval: float = 604800.0


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    enabled: bool
    health_check_interval: float
    health_check_timeout: float
    probe_timeout: float = 2.0
    vote_window: float = 5.0
    ack_replicas: int = 1
    ack_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class NodeServeConfig:
    """Settings of ``praefect node serve``; ``storages`` maps name to path."""

    listen_addr: str
    token: str = field(repr=False)
    storages: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, slots=True)
class Config:
    """All settings, validated."""

    listen_addr: str
    auth: AuthConfig
    virtual_storages: tuple[VirtualStorageConfig, ...]
    redis: RedisConfig
    prometheus_listen_addr: str
    logging: LoggingConfig
    tracing: TracingConfig
    server: ServerConfig
    plugins: PluginsConfig
    replication: ReplicationConfig
    failover: FailoverConfig
    node: NodeServeConfig
    #: the files the settings were read from, in order (defaults first)
    sources: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        require_virtual_storages: bool = True,
        require_node: bool = False,
    ) -> Config:
        """Validate ``data`` (shaped like the settings file) into a Config.

        Missing keys take their defaults. Raises SettingsError listing every
        problem.
        """
        from .validation import validate  # validation builds Config objects

        return validate(
            data,
            require_virtual_storages=require_virtual_storages,
            require_node=require_node,
        )

    @property
    def virtual_storage_names(self) -> tuple[str, ...]:
        return tuple(vs.name for vs in self.virtual_storages)

    def virtual_storage(self, name: str) -> VirtualStorageConfig:
        """The virtual storage called ``name``; KeyError if there is none."""
        for vs in self.virtual_storages:
            if vs.name == name:
                return vs
        raise KeyError(name)

    def as_mapping(self, *, mask: bool = True) -> dict[str, Any]:
        """The settings shaped like the settings file; tokens masked unless ``mask=False``.

        ``Config.from_mapping(config.as_mapping(mask=False)) == config``.
        """
        data: dict[str, Any] = {
            "listen_addr": self.listen_addr,
            "auth_token": self.auth.token,
            "prometheus_listen_addr": self.prometheus_listen_addr,
            "auth": {
                "transitioning": self.auth.transitioning,
                "allow_v1_tokens": self.auth.allow_v1_tokens,
            },
            "virtual_storages": {
                vs.name: {
                    node.name: {
                        "address": node.address,
                        "token": node.token,
                        "primary": node.primary,
                    }
                    for node in vs.nodes
                }
                for vs in self.virtual_storages
            },
            "redis": {"url": self.redis.url, "data_dir": self.redis.data_dir},
            "logging": {"format": self.logging.format, "level": self.logging.level},
            "tracing": {
                "exporter": self.tracing.exporter,
                "endpoint": self.tracing.endpoint,
                "protocol": self.tracing.protocol,
                "service_name": self.tracing.service_name,
                "sample_ratio": self.tracing.sample_ratio,
            },
            "server": {
                "graceful_stop_timeout": self.server.graceful_stop_timeout,
                "max_message_size": self.server.max_message_size,
                "processes": self.server.processes,
            },
            "plugins": {"blocked": list(self.plugins.blocked)},
            "replication": {
                "max_attempts": self.replication.max_attempts,
                "batch_size": self.replication.batch_size,
                "claim_idle": self.replication.claim_idle,
                "call_timeout": self.replication.call_timeout,
                "concurrency": self.replication.concurrency,
                "verification_interval": self.replication.verification_interval,
            },
            "failover": {
                "enabled": self.failover.enabled,
                "health_check_interval": self.failover.health_check_interval,
                "health_check_timeout": self.failover.health_check_timeout,
                "probe_timeout": self.failover.probe_timeout,
                "vote_window": self.failover.vote_window,
                "ack_replicas": self.failover.ack_replicas,
                "ack_timeout": self.failover.ack_timeout,
            },
            "node": {
                "listen_addr": self.node.listen_addr,
                "token": self.node.token,
                "storages": dict(self.node.storages),
            },
        }
        return mask_secrets(data) if mask else data
