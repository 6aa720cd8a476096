"""Parsing of the network addresses that appear in settings.

Three spellings are accepted for a node: ``tcp://host:port``, ``host:port``
and ``unix:/absolute/path`` (``unix:///absolute/path`` too). IPv6 hosts go in
brackets: ``[::1]:9001``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Address", "AddressError", "parse_address"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")

ADDRESS_FORMS = '"tcp://host:port", "host:port" or "unix:/absolute/path"'


class AddressError(ValueError):
    """An address that cannot be used; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address: either a TCP host and port or a unix socket path."""

    scheme: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def grpc_target(self) -> str:
        """What ``grpc.aio.insecure_channel`` and ``add_insecure_port`` expect."""
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(
    text: str,
    *,
    allow_unix: bool = True,
    allow_port_zero: bool = False,
) -> Address:
    """Parse ``text`` or raise :class:`AddressError` saying what is wrong.

    ``allow_port_zero`` is for listen addresses (port 0 picks a free port).
    """
    text = text.strip()
    if not text:
        raise AddressError("the address is empty")
    if text.lower().startswith("unix:"):
        if not allow_unix:
            raise AddressError(f"unix sockets are not supported here: {text!r}")
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise AddressError(f"the unix socket path must be absolute: {text!r}")
        return Address(scheme="unix", path=path)
    hostport = text
    if "://" in text:
        scheme, hostport = text.split("://", 1)
        if scheme.lower() != "tcp":
            raise AddressError(f"unsupported scheme {scheme + '://'!r} in {text!r}")
    if "/" in hostport:
        raise AddressError(f"unexpected path in {text!r}")
    host, port = _split_host_port(hostport, text)
    return Address(scheme="tcp", host=host, port=_parse_port(port, text, allow_port_zero))


def _split_host_port(hostport: str, text: str) -> tuple[str, str]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise AddressError(f"unclosed '[' in {text!r}")
        host, rest = hostport[1:end], hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"{host!r} is not an IPv6 address in {text!r}") from None
        if not rest:
            raise AddressError(f"missing port in {text!r}")
        if not rest.startswith(":"):
            raise AddressError(f"expected ':port' after ']' in {text!r}")
        return host, rest[1:]
    colons = hostport.count(":")
    if colons == 0:
        raise AddressError(f"missing port in {text!r}")
    if colons > 1:
        raise AddressError(f"put IPv6 addresses in brackets, e.g. [::1]:9001, not {text!r}")
    host, port = hostport.rsplit(":", 1)
    if not host:
        raise AddressError(f"missing host in {text!r}")
    if not _HOSTNAME.match(host):
        raise AddressError(f"{host!r} is not a valid host name in {text!r}")
    return host, port


def _parse_port(port: str, text: str, allow_zero: bool) -> int:
    if not port:
        raise AddressError(f"missing port in {text!r}")
    if not port.isascii() or not port.isdigit():
        raise AddressError(f"port {port!r} is not a number in {text!r}")
    number = int(port)
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        raise AddressError(f"port {number} is out of range {low}-65535 in {text!r}")
    return number
