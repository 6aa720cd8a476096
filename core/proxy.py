"""The forwarding path: one generic handler for every forwarded method.

For each method the handler is of the method's own call kind (unary,
server-, client- or bidi-streaming) with identity serializers: requests and
responses stay bytes. Per call the router

1. authenticates (``authenticate`` hook) before reading the request;
2. decodes only the first request message, to find the target repository
   (or storage) through the registry's field paths;
3. asks ``route`` for the node(s);
4. re-encodes only that first message with the virtual storage name
   replaced by the node's storage name (unknown fields survive a decode and
   re-encode);
5. forwards it and every further message as received, with the client's
   metadata minus its ``authorization`` (replaced by the node's own token),
   the remaining deadline, cancellation in both directions, and relays the
   node's initial metadata, messages, status, details and trailing
   metadata;
6. for mutators: ``before_mutation`` before forwarding, ``on_mutation``
   after the primary's OK and before the client sees it,
   ``on_mutation_failed`` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.message import Message
from grpc import aio

from praefect.core.call import Call, Metadata, RepositoryRef
from praefect.core.cluster import UnknownVirtualStorage
from praefect.core.errors import CallError, InvalidArgument
from praefect.core.methods import CallKind, FieldPath, MethodInfo
from praefect.core.mutation import Mutation, MutationFailure, change_type_for, records_mutation
from praefect.core.node_channels import NodeChannel
from praefect.core.routing_types import NodeRef, RouteDecision
from praefect.core.telemetry.calls import note_route
from praefect.core.telemetry.propagation import inject_trace_context

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["ProxyHandler", "outbound_metadata"]

log = logging.getLogger("praefect.proxy")

EOF = aio.EOF

# Metadata the router never forwards: the client's credentials (each node
# gets its own token) and transport-level keys that belong to one hop.
HOP_BY_HOP = frozenset(
    {
        "authorization",
        "user-agent",
        "te",
        "host",
        "connection",
        "content-type",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
    }
)

TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")


def outbound_metadata(metadata: Metadata, authorization: tuple[str, str]) -> tuple[tuple[str, str | bytes], ...]:
    """The client's metadata as forwarded to a node, with the node's ``authorization``."""
    forwarded = [pair for pair in metadata if pair[0] not in HOP_BY_HOP and pair[0][:1] != ":"]
    forwarded.append(authorization)
    return tuple(forwarded)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to find the repository in one method's first request message."""

    method: MethodInfo
    target: tuple[str, ...] | None
    additional: tuple[str, ...] | None
    storage: tuple[str, ...] | None


@dataclass(slots=True)
class _Prepared:
    call: Call
    decision: RouteDecision
    payload: bytes
    fan_out: tuple[tuple[NodeRef, bytes], ...]
    mutation: Mutation | None


class _Abort(Exception):
    """Ends a call with ``code`` and ``message`` (raised inside the handler)."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing: Metadata = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = trailing


class ProxyHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Serves every method of the registry that the router does not answer itself."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        name: str = handler_call_details.method
        handler = self._handlers.get(name)
        if handler is None:
            method = self._router.registry.get(name)
            if method is None:
                # not cached: clients could otherwise grow the table without bound
                return _unimplemented(f"method {name} is not implemented by this router")
            handler = self._handlers[name] = self._build(method)
        return handler

    def _build(self, method: MethodInfo) -> grpc.RpcMethodHandler:
        if method.intercepted:
            return _unimplemented(
                f"{method.name} is answered by the router itself, but no plugin provides "
                f"{method.service}"
            )
        forwarder = _Forwarder(self._router, _plan(method))
        if method.kind is CallKind.UNARY_UNARY:
            return grpc.unary_unary_rpc_method_handler(forwarder.unary_unary)
        if method.kind is CallKind.UNARY_STREAM:
            return grpc.unary_stream_rpc_method_handler(forwarder.unary_stream)
        if method.kind is CallKind.STREAM_UNARY:
            return grpc.stream_unary_rpc_method_handler(forwarder.stream_unary)
        return grpc.stream_stream_rpc_method_handler(forwarder.stream_stream)


class _Forwarder:
    """The four call kinds of one method."""

    __slots__ = ("_plan", "_router")

    def __init__(self, router: Router, plan: _Plan) -> None:
        self._router = router
        self._plan = plan

    # -- the call kinds ------------------------------------------------------------

    async def unary_unary(self, request: bytes, context: aio.ServicerContext) -> bytes:
        try:
            call = await self._admit(context)
            prepared = await self._prepare(call, request)
            channel = self._router.node_channels[prepared.decision.node]
            fan_out = self._start_fan_out(prepared, context) if prepared.fan_out else None
            node_call = channel.callable_for(self._plan.method)(
                prepared.payload,
                metadata=outbound_metadata(call.metadata, channel.auth_metadata()),
                timeout=context.time_remaining(),
            )
            try:
                response: bytes = await node_call
            except aio.AioRpcError as error:
                raise await self._node_failed(prepared, channel, error) from None
            await _relay_metadata(node_call, context)
            if fan_out is not None:
                await fan_out
            await self._mutated(prepared)
            return response
        except _Abort as abort:
            await _abort(context, abort)

    async def unary_stream(self, request: bytes, context: aio.ServicerContext) -> None:
        try:
            call = await self._admit(context)
            prepared = await self._prepare(call, request)
            channel = self._router.node_channels[prepared.decision.node]
            node_call = channel.callable_for(self._plan.method)(
                prepared.payload,
                metadata=outbound_metadata(call.metadata, channel.auth_metadata()),
                timeout=context.time_remaining(),
            )
            try:
                await _relay_responses(node_call, context)
            except aio.AioRpcError as error:
                raise await self._node_failed(prepared, channel, error) from None
            finally:
                if not node_call.done():
                    node_call.cancel()
            await self._mutated(prepared)
        except _Abort as abort:
            await _abort(context, abort)

    async def stream_unary(self, request_iterator: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
        try:
            call = await self._admit(context)
            prepared = await self._prepare(call, await _first_message(context, self._plan.method))
            channel = self._router.node_channels[prepared.decision.node]
            node_call = channel.callable_for(self._plan.method)(
                metadata=outbound_metadata(call.metadata, channel.auth_metadata()),
                timeout=context.time_remaining(),
            )
            try:
                await _pump_requests(context, node_call, prepared.payload)
                response: bytes = await node_call
            except aio.AioRpcError as error:
                raise await self._node_failed(prepared, channel, error) from None
            finally:
                if not node_call.done():
                    node_call.cancel()
            await _relay_metadata(node_call, context)
            await self._mutated(prepared)
            return response
        except _Abort as abort:
            await _abort(context, abort)

    async def stream_stream(self, request_iterator: AsyncIterator[bytes], context: aio.ServicerContext) -> None:
        try:
            call = await self._admit(context)
            prepared = await self._prepare(call, await _first_message(context, self._plan.method))
            channel = self._router.node_channels[prepared.decision.node]
            node_call = channel.callable_for(self._plan.method)(
                metadata=outbound_metadata(call.metadata, channel.auth_metadata()),
                timeout=context.time_remaining(),
            )
            pump = asyncio.create_task(_pump_requests(context, node_call, prepared.payload))
            try:
                await _relay_responses(node_call, context)
            except aio.AioRpcError as error:
                raise await self._node_failed(prepared, channel, error) from None
            finally:
                if not pump.done():
                    pump.cancel()
                if not node_call.done():
                    node_call.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            await self._mutated(prepared)
        except _Abort as abort:
            await _abort(context, abort)

    # -- the steps ------------------------------------------------------------------

    async def _admit(self, context: aio.ServicerContext) -> Call:
        router = self._router
        call = Call(
            self._plan.method,
            context.invocation_metadata() or (),
            router=router,
            peer=context.peer(),
        )
        try:
            call.identity = await router.hooks.authenticate(call)
        except CallError as error:
            raise _Abort(error.code, error.message) from None
        except Exception as error:
            raise _plugin_failure("authenticate", error) from None
        return call

    async def _prepare(self, call: Call, first: bytes) -> _Prepared:
        """Decode, route and rewrite the first message; run ``before_mutation``."""
        plan = self._plan
        router = self._router
        try:
            message = _decode(plan.method, first)
            target = _locate(call, plan, message)
            decision = router.hooks.route(call, router.cluster)
        except CallError as error:
            raise _Abort(error.code, error.message) from None
        except Exception as error:
            raise _plugin_failure("route", error) from None
        if decision is None:
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no plugin chose a node for {plan.method.name}: check plugins.blocked",
            )
        for node in decision.nodes:
            if node not in router.node_channels:
                log.error("route chose %s, which is not a configured node", node)
                raise _Abort(grpc.StatusCode.INTERNAL, f"routing chose an unknown node {node.name!r}")
        note_route(call, decision)
        payload = _rewrite(message, target, decision.node)
        fan_out = tuple((node, _rewrite(message, target, node)) for node in decision.fan_out)
        mutation = None
        if plan.method.is_mutator and records_mutation(plan.method.name) and call.repository is not None:
            mutation = Mutation(
                virtual_storage=call.repository.virtual_storage,
                relative_path=call.repository.relative_path,
                method=plan.method.name,
                change_type=change_type_for(plan.method.name),
                primary=decision.node,
                replicas=decision.replicas,
                trace_context=inject_trace_context() or _trace_context(call),
                call=call,
            )
            try:
                await router.hooks.before_mutation(mutation)
            except CallError as error:
                raise _Abort(error.code, error.message) from None
            except Exception as error:
                raise _plugin_failure("before_mutation", error) from None
        return _Prepared(call, decision, payload, fan_out, mutation)

    def _start_fan_out(self, prepared: _Prepared, context: aio.ServicerContext) -> asyncio.Future[Any]:
        """Send a maintenance call to the further nodes; their failures are logged."""
        timeout = context.time_remaining()
        calls = []
        for node, payload in prepared.fan_out:
            channel = self._router.node_channels[node]
            calls.append(
                _fan_out_call(
                    channel,
                    self._plan.method,
                    payload,
                    outbound_metadata(prepared.call.metadata, channel.auth_metadata()),
                    timeout,
                )
            )
        return asyncio.gather(*calls)

    async def _node_failed(self, prepared: _Prepared, channel: NodeChannel, error: aio.AioRpcError) -> _Abort:
        code = error.code()
        details = error.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE:
            details = f"node {channel.node} is unavailable: {details}"
        if prepared.mutation is not None:
            await self._router.hooks.on_mutation_failed(prepared.mutation, MutationFailure(code, details))
        return _Abort(code, details, tuple(error.trailing_metadata() or ()))

    async def _mutated(self, prepared: _Prepared) -> None:
        if prepared.mutation is None:
            return
        try:
            await self._router.hooks.on_mutation(prepared.mutation)
        except CallError as error:
            raise _Abort(error.code, error.message) from None
        except Exception as error:
            log.exception("on_mutation failed for %s", prepared.mutation.method)
            raise _Abort(
                grpc.StatusCode.INTERNAL,
                f"the change reached the primary {prepared.decision.node.name} but recording "
                f"it for replication failed ({type(error).__name__}); retry the call",
            ) from None


# -- decoding and rewriting ----------------------------------------------------------


def _plan(method: MethodInfo) -> _Plan:
    descriptor = method.request_class.DESCRIPTOR
    return _Plan(
        method=method,
        target=_field_names(descriptor, method.target_repository),
        additional=_field_names(descriptor, method.additional_repository),
        storage=_field_names(descriptor, method.storage_field),
    )


def _field_names(descriptor: Any, path: FieldPath | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    names = []
    for number in path:
        field = descriptor.fields_by_number[number]
        names.append(field.name)
        descriptor = field.message_type
    return tuple(names)


def _decode(method: MethodInfo, data: bytes) -> Message:
    try:
        message: Message = method.request_class.FromString(data)
        return message
    except Exception as error:  # DecodeError, or anything a hostile body triggers
        raise InvalidArgument(
            f"{method.name}: the request is not a valid "
            f"{method.request_class.DESCRIPTOR.full_name} message ({error})"
        ) from None


def _submessage(message: Message, names: tuple[str, ...]) -> Any:
    """The message at ``names`` below ``message``, or None when a level is unset."""
    current: Any = message
    for name in names:
        if not current.HasField(name):
            return None
        current = getattr(current, name)
    return current


@dataclass(frozen=True, slots=True)
class _Target:
    repository: Any  # gitaly.Repository inside the decoded message, or None
    additional: Any
    storage_parent: Any  # the message holding the storage field, or None
    storage_field: str


def _locate(call: Call, plan: _Plan, message: Message) -> _Target:
    """Fill ``call``'s repository fields from ``message``; validate the names."""
    cluster = call.router.cluster
    method = plan.method
    repository = additional = storage_parent = None
    storage_field = ""
    if plan.target is not None:
        repository = _submessage(message, plan.target)
        if repository is None:
            raise InvalidArgument(
                f"{method.name}: the request has no repository: set "
                f"{'.'.join(plan.target)} (storage_name and relative_path)"
            )
        call.repository = _repository_ref(method, repository, "repository")
        _known(cluster, call.repository.virtual_storage)
    elif plan.storage is not None:
        *parents, storage_field = plan.storage
        storage_parent = _submessage(message, tuple(parents))
        name = getattr(storage_parent, storage_field, "") if storage_parent is not None else ""
        if not name:
            raise InvalidArgument(f"{method.name}: the request has no storage name: set {'.'.join(plan.storage)}")
        call.storage = name
        _known(cluster, name)
    if plan.additional is not None:
        additional = _submessage(message, plan.additional)
        if additional is not None:
            call.additional_repository = _repository_ref(method, additional, "additional repository")
            _known(cluster, call.additional_repository.virtual_storage)
    return _Target(repository, additional, storage_parent, storage_field)


def _repository_ref(method: MethodInfo, repository: Any, what: str) -> RepositoryRef:
    if not repository.storage_name:
        raise InvalidArgument(f"{method.name}: the {what} has an empty storage_name: set it to the virtual storage")
    if not repository.relative_path:
        raise InvalidArgument(f"{method.name}: the {what} has an empty relative_path")
    return RepositoryRef(repository.storage_name, repository.relative_path)


def _known(cluster: Any, virtual_storage: str) -> None:
    if virtual_storage not in cluster:
        raise InvalidArgument(str(UnknownVirtualStorage(virtual_storage, cluster.virtual_storage_names)))


def _rewrite(message: Message, target: _Target, node: NodeRef) -> bytes:
    """``message`` with the virtual storage replaced by ``node``'s storage name."""
    if target.repository is not None:
        target.repository.storage_name = node.name
    if target.storage_parent is not None:
        setattr(target.storage_parent, target.storage_field, node.name)
    if target.additional is not None and target.additional.storage_name == node.virtual_storage:
        target.additional.storage_name = node.name
    return message.SerializeToString()


def _trace_context(call: Call) -> Mapping[str, str]:
    context = {}
    for key in TRACE_CONTEXT_KEYS:
        value = call.header(key)
        if isinstance(value, str):
            context[key] = value
    return MappingProxyType(context)


# -- moving messages ---------------------------------------------------------------


async def _first_message(context: aio.ServicerContext, method: MethodInfo) -> bytes:
    first = await context.read()
    if first is EOF:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{method.name}: the request stream is empty: the first message must name the repository",
        )
    return first  # type: ignore[no-any-return]


async def _pump_requests(context: aio.ServicerContext, node_call: Any, first: bytes) -> None:
    """Client -> node: ``first``, then every further message, then half-close.

    Stops quietly when the node call ended: its status is what the client gets.
    """
    try:
        await node_call.write(first)
        read, write = context.read, node_call.write
        while (message := await read()) is not EOF:
            await write(message)
        await node_call.done_writing()
    except (aio.AioRpcError, asyncio.InvalidStateError):
        return


async def _relay_responses(node_call: Any, context: aio.ServicerContext) -> None:
    """Node -> client: initial metadata, every message, trailing metadata."""
    initial = await node_call.initial_metadata()
    if initial:
        await context.send_initial_metadata(tuple(initial))
    read, write = node_call.read, context.write
    while (message := await read()) is not EOF:
        await write(message)
    trailing = await node_call.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple(trailing))


async def _relay_metadata(node_call: Any, context: aio.ServicerContext) -> None:
    initial = await node_call.initial_metadata()
    if initial:
        await context.send_initial_metadata(tuple(initial))
    trailing = await node_call.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple(trailing))


async def _fan_out_call(
    channel: NodeChannel, method: MethodInfo, payload: bytes, metadata: Metadata, deadline: float | None
) -> None:
    try:
        await channel.callable_for(method)(payload, metadata=metadata, timeout=deadline)
    except aio.AioRpcError as error:
        log.warning("%s on %s failed: %s: %s", method.name, channel.node, error.code().name, error.details())


async def _abort(context: aio.ServicerContext, abort: _Abort) -> NoReturn:
    await context.abort(abort.code, abort.message, trailing_metadata=tuple(abort.trailing))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _plugin_failure(hook: str, error: Exception) -> _Abort:
    log.exception("%s hook failed", hook, exc_info=error)
    return _Abort(grpc.StatusCode.INTERNAL, f"internal error in the {hook} hook ({type(error).__name__})")


def _unimplemented(message: str) -> grpc.RpcMethodHandler:
    async def unimplemented(request_iterator: Any, context: aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return grpc.stream_stream_rpc_method_handler(unimplemented)

