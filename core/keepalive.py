"""gRPC keepalive: what praefect's servers permit and what its clients send.

A connection whose peer vanished without a word (host gone, no RST) looks
alive to TCP for many minutes, and a call on it waits all that time.
Clients that stream for long (the router to its nodes, the gateway to the
router) ping while calls are open, so such a connection fails its calls
within ``time + timeout``. Servers (router and node alike) accept a ping
every 10 s, with or without calls: gRPC's server defaults (one ping per 5
minutes while the server sends nothing, GOAWAY too_many_pings after the
third too many) would kill a quiet call of a client that pings every 30 s,
and long-lived clients such as GitLab keep idle connections open.
"""

from __future__ import annotations

__all__ = ["SERVER_KEEPALIVE_OPTIONS", "client_keepalive_options"]

#: the pings a praefect server accepts (must stay below every client's interval)
SERVER_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)


def client_keepalive_options(
    time: float = 30.0, timeout: float = 20.0, *, without_calls: bool = False
) -> list[tuple[str, int]]:
    """Ping after ``time`` s of quiet; give the connection up when a ping is
    not answered within ``timeout`` s.

    gRPC core applies its general ping timeout (``grpc.http2.ping_timeout_ms``,
    a minute by default) to keepalive pings too, so it is set to the same
    value. ``grpc.http2.max_pings_without_data`` keeps its default of 2.
    """
    timeout_ms = max(1, round(timeout * 1000))
    return [
        ("grpc.keepalive_time_ms", max(1, round(time * 1000))),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1 if without_calls else 0),
    ]
