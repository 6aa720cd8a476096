"""How long the gateway waits for the router before it gives up.

A router (or the host under it) that accepts the connection and then never
answers would otherwise leave git waiting forever. The limits cover waits
for the router only, never time spent on the HTTP client, and never the
length of a transfer: a pack flows for as long as it needs, and a
connection that dies during it is found by gRPC keepalive
(router.channel_options).

- GET info/refs: each message of the InfoRefs answer within
  `advertise_timeout` of asking for it. Not a gRPC deadline on the whole
  call: a protocol v0 advertisement of a repository with very many refs,
  sent to a slow client, may take longer than any fixed limit. Not only
  the first message either: a node sends the `# service=` line before git
  has said anything, so a git that hangs after it would otherwise go
  unnoticed.
- POST git-upload-pack / git-receive-pack: each piece of the request body
  taken by the router within `response_start_timeout` (as nginx's
  proxy_send_timeout limits each write, not the upload), then, once the
  whole body is sent, the first response message within the same limit.
  After that nothing limits the transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

#: what the gateway was waiting for, in the messages
WAITING_FOR_ADVERTISEMENT = "waiting for the ref advertisement to start"
WAITING_FOR_MORE = "waiting for the rest of the ref advertisement"
WAITING_FOR_BODY = "waiting for the router to take the request body"
WAITING_FOR_RESPONSE = "waiting for the response to start after the whole request was sent"


@dataclass(frozen=True, slots=True)
class RouterLimit:
    """A limit on one wait for the router during a `method` call.

    seconds: the limit; option: the command-line option that sets it.
    """

    method: str
    seconds: float
    option: str

    async def wait(self, step: Awaitable[_T], call: Any, waiting_for: str) -> _T:
        """`step` (a read or write on `call`), or RouterTimeout when it takes
        longer than the limit; the call is then cancelled, so that the
        router stops working on it."""
        deadline = asyncio.timeout(self.seconds)
        try:
            async with deadline:
                return await step
        except TimeoutError:
            if not deadline.expired():
                raise
            call.cancel()
            raise RouterTimeout(self, waiting_for) from None


class RouterTimeout(Exception):
    """The router kept the gateway waiting longer than `limit` allows;
    `waiting_for` says for what (one of the WAITING_FOR_* texts)."""

    def __init__(self, limit: RouterLimit, waiting_for: str) -> None:
        super().__init__(f"{limit.method}: no answer within {limit.seconds:g} s ({waiting_for})")
        self.limit = limit
        self.waiting_for = waiting_for
