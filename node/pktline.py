"""git's pkt-line framing: what the node writes itself and what tests parse.

A packet is four hex digits giving the packet's total length (the four
digits included) followed by the payload; ``0000`` is a flush packet, which
ends a section. git does the framing for everything it prints; the node only
frames the smart-HTTP service announcement that git-http-backend adds in
front of a protocol v0/v1 reference advertisement.
"""

from __future__ import annotations

from collections.abc import Iterator

FLUSH = b"0000"
MAX_PAYLOAD = 65516  # LARGE_PACKET_MAX (65520) minus the 4-byte header


class PktLineError(ValueError):
    """Bytes that are not a well-formed sequence of packets."""


def encode(payload: bytes | str) -> bytes:
    """Frame `payload` as one packet."""
    data = payload.encode() if isinstance(payload, str) else payload
    if len(data) > MAX_PAYLOAD:
        raise PktLineError(f"packet payload of {len(data)} bytes exceeds {MAX_PAYLOAD}")
    return f"{len(data) + 4:04x}".encode() + data


def service_announcement(service: str) -> bytes:
    """``# service=git-<service>\\n`` and a flush, as git-http-backend sends
    before the reference advertisement of protocol v0/v1."""
    return encode(f"# service=git-{service}\n") + FLUSH


def decode(data: bytes) -> Iterator[bytes | None]:
    """Split `data` into packet payloads; a flush (or delim/response-end
    packet of protocol v2) comes out as None."""
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 4]
        try:
            length = int(header, 16)
        except ValueError:
            raise PktLineError(f"bad pkt-line header {header!r} at offset {offset}") from None
        if length < 4:
            yield None
            offset += 4
            continue
        if offset + length > len(data):
            raise PktLineError(f"truncated packet at offset {offset}: needs {length} bytes")
        yield data[offset + 4 : offset + length]
        offset += length
