"""Every allowed settings key, declared once.

To add a setting: add a :class:`Key` (and its :class:`Table` if the table is
new) to :data:`SCHEMA`, its default to ``settings.toml``, and a field to the
matching dataclass in ``model.py``; then regenerate ``docs/configuration.md``
with ``python -m praefect.settings.docs --write docs/configuration.md``.
Tests fail until the three agree.

Paths are dotted; a segment in angle brackets (``<node>``) stands for a name
the operator chooses.
"""

from __future__ import annotations

import enum
import functools
import posixpath
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .addresses import ADDRESS_FORMS, AddressError, parse_address

__all__ = [
    "ENV_PREFIX",
    "RESERVED_ENVVARS",
    "SCHEMA",
    "SECRETS_FILE_ENVVAR",
    "SETTINGS_FILE_ENVVAR",
    "Key",
    "Requirement",
    "Table",
    "TableNode",
    "defaults",
    "iter_keys",
    "mask_secrets",
    "mask_token",
    "mask_url_password",
    "resolve",
    "schema_tree",
]

ENV_PREFIX: Final = "PRAEFECT_"
SETTINGS_FILE_ENVVAR: Final = "PRAEFECT_SETTINGS_FILE"
SECRETS_FILE_ENVVAR: Final = "PRAEFECT_SECRETS_FILE"
#: ``PRAEFECT_*`` environment variables that are not settings overrides (they
#: name files, or are read by a command's own options); any other
#: ``PRAEFECT_*`` variable must name a key, or it is reported as unknown.
RESERVED_ENVVARS: Final = frozenset(
    {
        SETTINGS_FILE_ENVVAR,
        SECRETS_FILE_ENVVAR,
        "PRAEFECT_NODE_TOKEN",  # `praefect node serve --token`
        "PRAEFECT_GATEWAY_PASSWORD",  # `praefect gateway --password`
        "PRAEFECT_GIT_BINARY",  # the git the node runs
        "PRAEFECT_TRACE_HOOKS",  # log every hook call
    }
)

ValueType = Literal["str", "bool", "int", "float", "list[str]"]


class Requirement(enum.Enum):
    """When a key must be set to a non-empty value (a table: have entries)."""

    OPTIONAL = "optional"
    ALWAYS = "always"
    #: for the router and the admin commands (``require_virtual_storages``)
    ROUTER = "router"
    #: for ``praefect node serve`` (``require_node``)
    NODE = "node"


class _Missing:
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


#: the default of a key that has none (it must be given)
MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class Key:
    """One setting with a value."""

    path: str
    type: ValueType
    hint: str
    default: Any = MISSING
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    #: extra check of a non-empty string; returns what is wrong, or None
    check: Callable[[str], str | None] | None = None
    required: Requirement = Requirement.OPTIONAL
    #: how to show the value without revealing it (tokens, passwords)
    mask: Callable[[str], str] | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Table:
    """A table of settings; ``required`` means it must have entries."""

    path: str
    hint: str
    required: Requirement = Requirement.OPTIONAL
    empty_message: str = "must not be empty"

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


# ---------------------------------------------------------------- checks


def _check_node_address(value: str) -> str | None:
    try:
        parse_address(value)
    except AddressError as exc:
        return str(exc)
    return None


def _check_listen_address(value: str) -> str | None:
    try:
        parse_address(value, allow_port_zero=True)
    except AddressError as exc:
        return str(exc)
    return None


def _check_tcp_listen_address(value: str) -> str | None:
    try:
        parse_address(value, allow_unix=False, allow_port_zero=True)
    except AddressError as exc:
        return str(exc)
    return None


def _check_otlp_endpoint(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{value!r} is not an http:// or https:// URL, e.g. http://collector:4317"
    return None


REDIS_SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")


def _check_redis_url(value: str) -> str | None:
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme not in REDIS_SCHEMES:
        return f"unsupported Redis URL {mask_url_password(value)!r}"
    return None


def _check_absolute_path(value: str) -> str | None:
    if not posixpath.isabs(value):
        return f"{value!r} is not an absolute path"
    return None


# ---------------------------------------------------------------- masks


def mask_token(value: str) -> str:
    """``********``, or ``****`` plus the last two characters of a long token."""
    if not value:
        return ""
    if len(value) >= 16:
        return "****" + value[-2:]
    return "********"


def mask_url_password(value: str) -> str:
    """The URL with its password (if any) replaced by ``****``."""
    parts = urllib.parse.urlsplit(value)
    if parts.password is None:
        return value
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{user}:****@{host}{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------- the schema

_R = Requirement
_TOKEN_HINT = "any non-empty string; keep it in a secrets file or the environment"

SCHEMA: Final[tuple[Key | Table, ...]] = (
    Table("", "the top level"),
    Key(
        "listen_addr",
        "str",
        'where the router accepts gRPC clients: "host:port" or "unix:/path" (port 0: any free port)',
        default="127.0.0.1:2305",
        check=_check_listen_address,
        required=_R.ALWAYS,
    ),
    Key(
        "auth_token",
        "str",
        "the external token clients sign requests with (Gitaly v2 tokens); "
        "put it in the secrets file or PRAEFECT_AUTH_TOKEN",
        default="",
        required=_R.ROUTER,
        mask=mask_token,
    ),
    Key(
        "prometheus_listen_addr",
        "str",
        'host:port of the Prometheus /metrics endpoint; "" turns it off',
        default="",
        check=_check_tcp_listen_address,
    ),
    Table("auth", "how clients are authenticated"),
    Key(
        "auth.transitioning",
        "bool",
        "log and count failed authentications instead of rejecting them (to roll out a token)",
        default=False,
    ),
    Key(
        "auth.allow_v1_tokens",
        "bool",
        "also accept the plain auth_token as a bearer token (Gitaly v1 tokens)",
        default=False,
    ),
    Table(
        "virtual_storages",
        "the storages clients see, each backed by its nodes: "
        "[virtual_storages.<virtual-storage>.<node>]",
        required=_R.ROUTER,
        empty_message="no virtual storage is configured",
    ),
    Table(
        "virtual_storages.<virtual-storage>",
        "a virtual storage: one table per node, exactly one with primary = true, "
        "e.g. [virtual_storages.praefect.gitaly-1]",
        required=_R.ALWAYS,
        empty_message="this virtual storage has no nodes",
    ),
    Table(
        "virtual_storages.<virtual-storage>.<node>",
        "a storage node; its name is the storage name the node serves",
    ),
    Key(
        "virtual_storages.<virtual-storage>.<node>.address",
        "str",
        f"where the node listens: {ADDRESS_FORMS}",
        check=_check_node_address,
        required=_R.ALWAYS,
    ),
    Key(
        "virtual_storages.<virtual-storage>.<node>.token",
        "str",
        f"the internal token the router presents to this node; {_TOKEN_HINT}",
        required=_R.ALWAYS,
        mask=mask_token,
    ),
    Key(
        "virtual_storages.<virtual-storage>.<node>.primary",
        "bool",
        "serves writes for repositories the router has not seen yet; "
        "exactly one node per virtual storage",
        default=False,
    ),
    Table("redis", "where replication events and repository state are kept"),
    Key(
        "redis.url",
        "str",
        'redis://, rediss://, unix:// or Sentinel URL; "" starts an embedded Redis',
        default="",
        check=_check_redis_url,
        mask=mask_url_password,
    ),
    Key(
        "redis.data_dir",
        "str",
        'where the embedded Redis keeps its data; "" means a per-user state directory',
        default="",
    ),
    Table("logging", "log output"),
    Key(
        "logging.format",
        "str",
        "text for people, json for log collectors",
        default="text",
        choices=("text", "json"),
    ),
    Key(
        "logging.level",
        "str",
        "the least severe level that is logged",
        default="info",
        choices=("debug", "info", "warning", "error"),
    ),
    Table("tracing", "OpenTelemetry tracing"),
    Key(
        "tracing.exporter",
        "str",
        "where spans go: none, console (stdout, for development) or otlp; "
        "at the default, OTEL_TRACES_EXPORTER decides",
        default="none",
        choices=("none", "console", "otlp"),
    ),
    Key(
        "tracing.endpoint",
        "str",
        'the OTLP collector endpoint, http:// (plaintext) or https:// (TLS); "" uses '
        "OTEL_EXPORTER_OTLP_ENDPOINT, else localhost (4317 for grpc, 4318 for http)",
        default="",
        check=_check_otlp_endpoint,
    ),
    Key(
        "tracing.protocol",
        "str",
        "the OTLP transport: grpc, or http (protobuf over HTTP); at the default, "
        "OTEL_EXPORTER_OTLP_PROTOCOL decides",
        default="grpc",
        choices=("grpc", "http"),
    ),
    Key(
        "tracing.service_name",
        "str",
        "prefix of service.name: each process adds its role (praefect-router, "
        "praefect-node, praefect-replicate); OTEL_SERVICE_NAME overrides it",
        default="praefect",
        required=_R.ALWAYS,
    ),
    Key(
        "tracing.sample_ratio",
        "float",
        "share of new traces that are recorded, 0 to 1; a call that arrives with a "
        "sampled trace context is always recorded. At the default, OTEL_TRACES_SAMPLER decides",
        default=1.0,
        minimum=0,
        maximum=1,
    ),
    Table("server", "the router's gRPC server"),
    Key(
        "server.graceful_stop_timeout",
        "float",
        "seconds that running calls get to finish on shutdown",
        default=10.0,
        minimum=0,
    ),
    Key(
        "server.max_message_size",
        "int",
        "the largest gRPC message in bytes, in either direction",
        default=64 * 1024 * 1024,
        minimum=1,
    ),
    Key(
        "server.processes",
        "int",
        "number of router processes sharing the listen address",
        default=1,
        minimum=1,
    ),
    Table("plugins", "which plugins are loaded"),
    Key(
        "plugins.blocked",
        "list[str]",
        "names of plugins not to load (see `praefect plugins`); "
        "lists from several files and the environment are combined",
        default=[],
    ),
    Table("replication", "replication of writes to the other nodes"),
    Key(
        "replication.max_attempts",
        "int",
        "attempts before an event goes to the dead-letter stream",
        default=5,
        minimum=1,
    ),
    Key(
        "replication.batch_size",
        "int",
        "events a worker reads at a time",
        default=50,
        minimum=1,
    ),
    Key(
        "replication.claim_idle",
        "float",
        "seconds an event may stay with a replication worker that stopped working on it "
        "(its router died) before a worker of another router takes it over",
        default=60.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "replication.call_timeout",
        "float",
        "seconds one copy (ReplicateRepository) into a node may take before it fails and is "
        "retried; raise it when the first copy of your largest repository takes longer. A "
        "replica being copied into cannot become primary until its copy ends or this runs out",
        default=300.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "replication.concurrency",
        "int",
        "repositories each replication worker copies into its node at the same time",
        default=4,
        minimum=1,
    ),
    Key(
        "replication.verification_interval",
        "float",
        "seconds after which every replica is checked again for existence on its node (a disk "
        "replaced by an empty one); a replica found missing loses its generation and is "
        "repaired from an up-to-date one. 604800 is 7 days; 0 turns verification off. "
        "`praefect verify` checks a node's replicas at once",
        default=604800.0,
        minimum=0,
    ),
    Table("failover", "health checks and primary failover"),
    Key(
        "failover.enabled",
        "bool",
        "move the primary role away from a node that is down",
        default=True,
    ),
    Key(
        "failover.health_check_interval",
        "float",
        "seconds between health checks of each node",
        default=1.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "failover.health_check_timeout",
        "float",
        "seconds a health check may take before the node counts as failing",
        default=1.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "failover.probe_timeout",
        "float",
        "seconds the storage probe (ServerInfo: the node writes and reads a file in each "
        "storage) may take before the node counts as failing",
        default=2.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "failover.vote_window",
        "float",
        "seconds a router's health vote counts: routers not heard from for longer are "
        "left out of the majority (keep it above health_check_interval + probe_timeout)",
        default=5.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "failover.ack_replicas",
        "int",
        "healthy replicas that must have a write before the client gets its OK (0: "
        "acknowledge at once; then a primary that dies usually leaves its repositories read-only)",
        default=1,
        minimum=0,
    ),
    Key(
        "failover.ack_timeout",
        "float",
        "seconds a write waits for ack_replicas before it is acknowledged anyway",
        default=5.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Table("node", "the storage node run by `praefect node serve`"),
    Key(
        "node.listen_addr",
        "str",
        'where the node accepts gRPC calls: "host:port" or "unix:/path"',
        default="",
        check=_check_listen_address,
        required=_R.NODE,
    ),
    Key(
        "node.token",
        "str",
        f"the internal token callers must present; {_TOKEN_HINT}",
        default="",
        required=_R.NODE,
        mask=mask_token,
    ),
    Table(
        "node.storages",
        "the storages this node serves: name = absolute path of the directory "
        "holding its repositories",
        required=_R.NODE,
        empty_message="the node has no storages",
    ),
    Key(
        "node.storages.<storage>",
        "str",
        "absolute path of the directory that holds the storage's repositories",
        check=_check_absolute_path,
        required=_R.ALWAYS,
    ),
)


# ---------------------------------------------------------------- the tree


def is_placeholder(segment: str) -> bool:
    return segment.startswith("<") and segment.endswith(">")


@dataclass(slots=True)
class TableNode:
    """A table of the schema with its literal children and its named entries."""

    table: Table
    children: dict[str, TableNode | Key] = field(default_factory=dict)
    #: the child that any operator-chosen name maps to (``<node>``)
    wildcard: TableNode | Key | None = None

    def child(self, name: str) -> tuple[str, TableNode | Key] | None:
        """The canonical name and schema of ``name`` here, or None if unknown.

        Literal names match case-insensitively (like dynaconf); chosen names
        keep their spelling.
        """
        lowered = name.lower()
        if lowered in self.children:
            return lowered, self.children[lowered]
        if self.wildcard is not None:
            return name, self.wildcard
        return None


@functools.cache
def schema_tree() -> TableNode:
    """The schema as a tree, built once."""
    nodes: dict[str, TableNode] = {}
    for entry in SCHEMA:
        if isinstance(entry, Table) and entry.path == "":
            nodes[""] = TableNode(entry)
            continue
        parent_path, _, name = entry.path.rpartition(".")
        parent = nodes[parent_path]  # tables are declared before their contents
        item: TableNode | Key = TableNode(entry) if isinstance(entry, Table) else entry
        if isinstance(item, TableNode):
            nodes[entry.path] = item
        if is_placeholder(name):
            assert parent.wildcard is None, entry.path
            parent.wildcard = item
        else:
            assert name == name.lower() and name not in parent.children, entry.path
            parent.children[name] = item
    return nodes[""]


def iter_keys() -> Iterator[Key]:
    """Every key, in declaration order."""
    for entry in SCHEMA:
        if isinstance(entry, Key):
            yield entry


def resolve(segments: Sequence[str]) -> tuple[list[str], TableNode | Key | None]:
    """Canonical spelling of a key path and its schema (None when unknown).

    Unknown parts are lower-cased, so that the unknown key is reported under
    a predictable name.
    """
    node: TableNode | Key | None = schema_tree()
    canonical: list[str] = []
    for segment in segments:
        if isinstance(node, TableNode):
            found = node.child(segment)
            if found is not None:
                name, node = found
                canonical.append(name)
                continue
        node = None
        canonical.append(segment.lower())
    return canonical, node


def defaults() -> dict[str, Any]:
    """The defaults of every key with a literal path, as nested tables.

    ``settings.toml`` must hold exactly this (a test checks it).
    """

    def build(node: TableNode) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, child in node.children.items():
            if isinstance(child, TableNode):
                if child.wildcard is None or child.children:
                    out[name] = build(child)
            elif child.default is not MISSING:
                out[name] = (
                    list(child.default) if isinstance(child.default, list) else child.default
                )
        return out

    return build(schema_tree())


def mask_secrets(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a settings mapping with every secret masked."""

    def walk(node: TableNode | Key | None, value: Any) -> Any:
        if isinstance(node, Key):
            if node.mask is not None and isinstance(value, str):
                return node.mask(value)
            return value
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                found = node.child(str(key)) if isinstance(node, TableNode) else None
                out[str(key)] = walk(found[1] if found else None, item)
            return out
        return value

    masked: dict[str, Any] = walk(schema_tree(), data)
    return masked
