"""Token check for every call to the node (its internal token).

The standard health service stays open, as in Gitaly, so that load balancers
and the router's health checks can probe a node without a token; every
other method requires a valid v2 token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from praefect.core.tokens import TokenError, authorization_from_metadata, verify

UNAUTHENTICATED_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
)


class TokenAuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str, *, allow_v1: bool = False) -> None:
        self._token = token
        self._allow_v1 = allow_v1

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in UNAUTHENTICATED_METHODS:
            return handler
        authorization = authorization_from_metadata(handler_call_details.invocation_metadata)
        try:
            verify(authorization, self._token, allow_v1=self._allow_v1)
        except TokenError as error:
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if error.unauthenticated
                else grpc.StatusCode.PERMISSION_DENIED
            )
            return _rejecting_handler(handler, code, str(error))
        return handler


def _rejecting_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    async def reject(request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def reject_stream(request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(reject, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(reject_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(reject, **kwargs)
    return grpc.stream_stream_rpc_method_handler(reject_stream, **kwargs)
