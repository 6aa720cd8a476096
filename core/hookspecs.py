"""The router's hook specifications: the reference for plugin authors.

Every hook is implemented by decorating a module-level function (or a method
of a registered object) with :data:`hookimpl`, which plugin authors import
from :mod:`praefect.core`::

    from praefect.core import hookimpl

    @hookimpl
    def route(call, cluster):
        ...

pluggy never awaits. Where a hook "may return an awaitable", the core awaits
what each implementation returns, one implementation at a time, in pluggy's
call order (plugins registered later run first; ``tryfirst``/``trylast``
adjust that). ``route`` is ``firstresult`` and synchronous: an ``async def``
implementation of it is an error, because its coroutine object would count
as the result.

The core calls these hooks only through :class:`praefect.core.hooks.Hooks`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import pluggy

from praefect.core.call import Call, Identity
from praefect.core.mutation import Mutation, MutationFailure
from praefect.core.routing_types import NodeRef, RouteDecision

if TYPE_CHECKING:
    from praefect.core.cluster import Cluster
    from praefect.core.local_services import ServiceRegistrar
    from praefect.core.router import Router

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "praefect"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def authenticate(call: Call) -> Identity | Awaitable[Identity | None] | None:
    """Establish who makes ``call``, or reject it.

    Called on every incoming call except the standard health service, before
    the request is read and before routing, on every plugin that implements
    it: ``call.method`` and ``call.metadata`` are set, ``call.repository`` is
    not yet. An implementation may return an awaitable (``async def``); the
    core awaits each result in turn.

    Return:
        an :class:`~praefect.core.call.Identity` when the implementation
        recognises the caller's credentials, or ``None`` when it has nothing
        to say (for example the credentials are not of its kind).

    The first identity (in call order) wins. When every implementation
    returns ``None`` the call fails with ``UNAUTHENTICATED``.

    Raise :class:`~praefect.core.errors.Unauthenticated` (missing or
    malformed credentials) or :class:`~praefect.core.errors.PermissionDenied`
    (wrong credentials) to reject the call; a raised error rejects even when
    another implementation returned an identity. Other exceptions fail the
    call with ``INTERNAL``.
    """


@hookspec(firstresult=True)
def route(call: Call, cluster: Cluster) -> RouteDecision | None:
    """Choose the node(s) for ``call``; stops at the first non-None result.

    Called once per forwarded call, after ``authenticate`` and after the
    first request message was decoded, synchronously: read only in-memory
    state (``cluster``), never do I/O here, never ``async def``.

    Arguments:
        call: the authenticated call; ``call.repository`` (or
            ``call.storage`` for storage-scoped methods) names a virtual
            storage that exists in ``cluster``.
        cluster: the router's view of virtual storages, nodes, their health
            and repository primaries.

    Return:
        a :class:`~praefect.core.routing_types.RouteDecision`, or ``None`` to
        let the next implementation decide. The default plugin (``trylast``)
        sends mutators to the repository's primary, accessors to a random
        healthy replica whose generation is current (the primary when the
        ``gitaly-route-repository-accessor-policy: primary-only`` header asks,
        or when the repository is untracked) and maintenance calls to every
        healthy replica.

    Raise a :class:`~praefect.core.errors.CallError` subclass (for example
    ``Unavailable``) to fail the call with that code.
    """


@hookspec
def before_mutation(mutation: Mutation) -> Awaitable[None] | None:
    """A mutator is about to be forwarded to ``mutation.primary``.

    Called on every plugin, each result awaited in turn, after routing and
    before the request reaches the node. Use it to record an intent that
    outlives a crash of this router between the write and ``on_mutation``.

    An exception fails the call before the node sees it: a
    :class:`~praefect.core.errors.CallError` with its code, anything else
    with ``INTERNAL``. Return value: ignored.
    """


@hookspec
def on_mutation(mutation: Mutation) -> Awaitable[None] | None:
    """A mutator succeeded on ``mutation.primary``.

    Called on every plugin after the primary answered OK and BEFORE the
    client receives that answer (for a streaming response: before the final
    status). Each result is awaited in turn. The default replication plugin
    bumps the repository's generation and queues replication to
    ``mutation.replicas`` here.

    An exception fails the client's call (a
    :class:`~praefect.core.errors.CallError` with its code, anything else
    with ``INTERNAL``) although the primary applied the change: a write whose
    replication could not be recorded must never be acknowledged as a silent
    OK. Return value: ignored.
    """


@hookspec
def on_mutation_failed(mutation: Mutation, failure: MutationFailure) -> Awaitable[None] | None:
    """A mutator failed: the primary returned an error or could not be reached.

    Called on every plugin (each result awaited in turn) after
    ``before_mutation`` ran and the forwarded call ended with a status other
    than OK, before the client sees that status. Use it to clear or resolve
    an intent recorded in ``before_mutation``. Exceptions are logged and do
    not change the status the client gets. Return value: ignored.
    """


@hookspec
def on_node_down(node: NodeRef, reason: str) -> Awaitable[None] | None:
    """The health view of ``node`` changed from up to down.

    Called on every plugin (each result awaited in turn) by
    :meth:`praefect.core.router.Router.set_node_health` or
    :meth:`~praefect.core.router.Router.announce_node_health`; ``reason``
    says why (for example the failed health check). With the default
    failover plugin the view is the one all routers share (a majority of
    their votes in Redis), and the hook fires once per change of it in the
    whole cluster, on the router that recorded the change. Exceptions are
    logged.
    """


@hookspec
def on_node_up(node: NodeRef) -> Awaitable[None] | None:
    """The health view of ``node`` changed from down to up.

    Called like ``on_node_down``: by ``set_node_health`` or
    ``announce_node_health``, once per change of the shared view in the
    whole cluster when the failover plugin checks health. Exceptions are
    logged.
    """


@hookspec
def on_failover(
    virtual_storage: str, relative_path: str, old: NodeRef, new: NodeRef, reason: str
) -> Awaitable[None] | None:
    """The primary of a repository moved from ``old`` to ``new`` automatically.

    Called on every plugin (each result awaited in turn) once per move in
    the whole cluster: on the router whose election in Redis made it (the
    other routers follow the new primary without this hook). ``reason``
    says why, for example ``"gitaly-1 is down"``. Moves made with
    ``praefect failover`` or ``praefect accept-dataloss`` do not fire it.
    Exceptions are logged. Return value: ignored.
    """


@hookspec
def register_services(router: Router, registrar: ServiceRegistrar) -> None:
    """Add gRPC services that the router answers itself.

    Called once per router, synchronously, before the server starts. Pass
    ``registrar`` where generated code expects a server, for example
    ``admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, registrar)``.
    Calls to those services are authenticated like every other call and
    never forwarded. Services should be marked ``intercepted`` in their
    ``.proto`` so the method registry knows them. Return value: ignored.
    """


@hookspec
def startup(router: Router) -> Awaitable[None] | None:
    """The router is starting: open connections, start background tasks.

    Called on every plugin (each result awaited in turn) after the node
    channels exist and before the router accepts calls. An exception aborts
    the start; the plugins whose ``startup`` already returned then get their
    ``shutdown`` (latest started first), so a plugin need not clean up after
    a later plugin's failure. Return value: ignored.
    """


@hookspec
def shutdown(router: Router) -> Awaitable[None] | None:
    """The router stopped accepting calls and the calls in flight ended.

    Called on every plugin (each result awaited in turn) before node
    channels close: stop background tasks, flush, close connections.
    Exceptions are logged and do not stop the other implementations.
    Return value: ignored.
    """
