"""The `gitaly-servers` call header: where other storages live, and their tokens.

Gitaly's convention for calls that involve a second node (ReplicateRepository
fetches from a source node): the caller adds the metadata header
``gitaly-servers`` whose value is the standard base64 encoding of a JSON
object mapping each storage name to ``{"address": ..., "token": ...}``::

    {"gitaly-1": {"address": "tcp://10.0.0.1:8075", "token": "secret"}}

Addresses are ``tcp://host:port``, ``host:port`` or ``unix:/path``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from praefect.node.errors import InvalidArgument

GITALY_SERVERS_HEADER = "gitaly-servers"

_EXPECTED = (
    f"the {GITALY_SERVERS_HEADER!r} header must be base64 of a JSON object mapping storage "
    'names to {"address": "tcp://host:port", "token": "..."}'
)


@dataclass(frozen=True, slots=True)
class GitalyServer:
    """A storage's node as named in the header."""

    address: str
    token: str

    @property
    def grpc_target(self) -> str:
        return grpc_target(self.address)

    def __repr__(self) -> str:  # never show the token in logs or errors
        return f"GitalyServer(address={self.address!r}, token=<redacted>)"


def grpc_target(address: str) -> str:
    """The gRPC channel target for a node address.

    ``tcp://host:port`` and ``host:port`` give ``host:port``; ``unix:/path``
    (and ``unix:///path``) stay as they are, gRPC understands them.
    Raises `ValueError` for anything else.
    """
    text = address.strip()
    if text.startswith("unix:"):
        if len(text) <= len("unix:"):
            raise ValueError(f"address {address!r} has no socket path")
        return text
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"address {address!r} uses scheme {scheme!r}: use tcp://host:port, host:port "
            "or unix:/path"
        )
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in text:
        raise ValueError(f"address {address!r} is not host:port")
    return text


def parse_gitaly_servers(value: str | bytes | None) -> dict[str, GitalyServer]:
    """Decode a header value; `InvalidArgument` saying what is expected otherwise."""
    if value is None or not value:
        raise InvalidArgument(f"missing {GITALY_SERVERS_HEADER!r} header: {_EXPECTED}")
    raw = value.encode() if isinstance(value, str) else value
    try:
        decoded = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"cannot decode the {GITALY_SERVERS_HEADER!r} header: {_EXPECTED}") from None
    if not isinstance(decoded, dict) or not decoded:
        raise InvalidArgument(f"the {GITALY_SERVERS_HEADER!r} header is not a non-empty object: {_EXPECTED}")
    return {name: _server(name, entry) for name, entry in decoded.items()}


def _server(name: str, entry: Any) -> GitalyServer:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{GITALY_SERVERS_HEADER!r} entry for storage {name!r} is not an object: {_EXPECTED}")
    address, token = entry.get("address"), entry.get("token")
    if not isinstance(address, str) or not address:
        raise InvalidArgument(f"{GITALY_SERVERS_HEADER!r} entry for storage {name!r} has no address: {_EXPECTED}")
    if not isinstance(token, str):
        raise InvalidArgument(f"{GITALY_SERVERS_HEADER!r} entry for storage {name!r} has no token: {_EXPECTED}")
    try:
        grpc_target(address)
    except ValueError as error:
        raise InvalidArgument(f"{GITALY_SERVERS_HEADER!r} entry for storage {name!r}: {error}") from None
    return GitalyServer(address=address, token=token)


def server_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None, storage_name: str
) -> GitalyServer:
    """The node serving `storage_name` according to the call's `gitaly-servers` header."""
    value = next(
        (v for k, v in metadata or () if k.lower() == GITALY_SERVERS_HEADER),
        None,
    )
    servers = parse_gitaly_servers(value)
    try:
        return servers[storage_name]
    except KeyError:
        known = ", ".join(sorted(servers))
        raise InvalidArgument(
            f"the {GITALY_SERVERS_HEADER!r} header has no entry for storage {storage_name!r} "
            f"(it names {known}): add the source storage's address and token"
        ) from None


def build_gitaly_servers(servers: Mapping[str, GitalyServer]) -> str:
    """Encode a header value (what a router sends with ReplicateRepository)."""
    payload = {name: {"address": s.address, "token": s.token} for name, s in servers.items()}
    return base64.b64encode(json.dumps(payload, sort_keys=True).encode()).decode()


def gitaly_servers_metadata(servers: Mapping[str, GitalyServer]) -> tuple[str, str]:
    """The ``(key, value)`` metadata pair for `servers`."""
    return (GITALY_SERVERS_HEADER, build_gitaly_servers(servers))
