"""Shared plumbing of the node's servicers: error translation."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.errors import NodeError
from praefect.node.git import GitCommandError

log = logging.getLogger("praefect.node")

F = TypeVar("F", bound=Callable[..., Any])


class NodeServicer:
    """Base of every servicer: holds the node context."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx


async def _abort_for(error: Exception, ctx: NodeContext, context: aio.ServicerContext, method: str) -> None:
    if isinstance(error, NodeError):
        await context.abort(error.code, ctx.redact(error.message))
    if isinstance(error, GitCommandError):
        log.warning("%s: %s", method, ctx.redact(str(error)))
        await context.abort(grpc.StatusCode.INTERNAL, ctx.redact(str(error)))
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error: {type(error).__name__}")


def rpc(method: F) -> F:
    """Turn `NodeError` and `GitCommandError` raised by a servicer method into
    a gRPC status with a redacted message. Works for unary and streaming
    (async generator) methods."""
    name = method.__name__
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: NodeServicer, request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                # aclosing: a cancelled call closes the inner generator now,
                # so its `finally` (killing git) runs without waiting for GC.
                async with contextlib.aclosing(method(self, request, context)) as responses:
                    async for response in responses:
                        yield response
            except (NodeError, GitCommandError, UnicodeDecodeError, ValueError, OSError) as error:
                await _abort_for(error, self.ctx, context, name)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary_wrapper(self: NodeServicer, request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except (NodeError, GitCommandError, UnicodeDecodeError, ValueError, OSError) as error:
            await _abort_for(error, self.ctx, context, name)

    return unary_wrapper  # type: ignore[return-value]
