"""Commands that work on Redis directly, with the router's settings.

``redis.url``, or the socket of the embedded Redis that a running router
owns in ``redis.data_dir``. Redis trouble ends the command with a message
that says what to check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from praefect.plugins.replication.embedded_redis import connect
from praefect.plugins.replication.runtime import redis_url_for
from praefect.settings import Config

T = TypeVar("T")

#: exit status when Redis or a node cannot be used, or (part of) the request was refused
FAILURE = 1


def fail(message: str) -> NoReturn:
    click.echo(f"praefect: {message}", err=True)
    raise SystemExit(FAILURE)


def run_on_redis(settings: Config, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``work`` with a client of the settings' Redis, then close it."""

    async def runner() -> T:
        client = connect(redis_url_for(settings))
        try:
            await client.ping()
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(runner())
    except (RedisError, OSError) as error:
        hint = (
            "check redis.url"
            if settings.redis.url
            else "redis.url is empty: start the router that owns the embedded Redis in "
            "redis.data_dir, or set redis.url"
        )
        fail(f"cannot use Redis ({error}): {hint}")
