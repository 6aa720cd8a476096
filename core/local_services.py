"""Services the router answers itself, authenticated like forwarded calls.

:class:`ServiceRegistrar` stands in for the ``grpc.aio`` server where
generated ``add_XServicer_to_server`` functions expect one: it wraps every
method handler so that the ``authenticate`` hook admits the call first, and
registers it on the real server. Registered method handlers take precedence
over the proxy's generic handler, so these methods are never forwarded.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.empty_pb2 import Empty
from grpc import aio

from praefect.core.call import Call
from praefect.core.errors import CallError
from praefect.core.methods import CallKind, MethodInfo, Operation, Scope

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["ServiceRegistrar"]

log = logging.getLogger("praefect.router")

Behaviour = Callable[..., Any]


class ServiceRegistrar:
    """What ``register_services`` implementations register their servicers on."""

    def __init__(self, server: aio.Server, router: Router) -> None:
        self._server = server
        self._router = router
        self.methods: list[str] = []

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {
            name: self._authenticated(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        }
        self.methods.extend(f"/{service_name}/{name}" for name in method_handlers)
        self._server.add_registered_method_handlers(service_name, wrapped)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        # Generated code registers every method both ways; the registered
        # handlers above take precedence, so the generic ones are never used.
        # A hand-written generic handler has no method table to wrap: refuse.
        for handler in generic_rpc_handlers:
            if not _is_generated(handler):
                raise TypeError(
                    "register_services: register method handlers with "
                    "add_registered_method_handlers (generated add_*_to_server does)"
                )

    def _authenticated(self, name: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        method = self._router.registry.get(name) or _unregistered_method(name, handler)
        router = self._router

        async def admit(context: aio.ServicerContext) -> None:
            call = Call(method, context.invocation_metadata() or (), router=router, peer=context.peer())
            try:
                call.identity = await router.hooks.authenticate(call)
            except CallError as error:
                await context.abort(error.code, error.message)

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, admit))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, admit))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, admit))
        return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, admit))


def _wrap_unary(behaviour: Behaviour, admit: Callable[[aio.ServicerContext], Any]) -> Behaviour:
    async def unary(request: Any, context: aio.ServicerContext) -> Any:
        await admit(context)
        return await behaviour(request, context)

    return unary


def _wrap_stream(behaviour: Behaviour, admit: Callable[[aio.ServicerContext], Any]) -> Behaviour:
    if inspect.isasyncgenfunction(behaviour):

        async def stream_gen(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(context)
            async for response in behaviour(request, context):
                yield response

        return stream_gen

    async def stream(request: Any, context: aio.ServicerContext) -> Any:
        await admit(context)
        return await behaviour(request, context)

    return stream


def _is_generated(handler: grpc.GenericRpcHandler) -> bool:
    return type(handler).__name__ == "DictionaryGenericHandler"


def _unregistered_method(name: str, handler: grpc.RpcMethodHandler) -> MethodInfo:
    kinds = {
        (False, False): CallKind.UNARY_UNARY,
        (False, True): CallKind.UNARY_STREAM,
        (True, False): CallKind.STREAM_UNARY,
        (True, True): CallKind.STREAM_STREAM,
    }
    return MethodInfo(
        name=name,
        service=name.split("/")[1],
        kind=kinds[(bool(handler.request_streaming), bool(handler.response_streaming))],
        operation=Operation.UNKNOWN,
        scope=Scope.REPOSITORY,
        request_class=Empty,
        intercepted=True,
    )
