"""The typed facade through which the core calls the hooks.

Nothing else in the core touches ``pm.hook``. Hooks that may return an
awaitable are called here one implementation at a time, in pluggy's call
order, and each result is awaited before the next implementation runs, so
a plugin sees the effects of the plugins before it and an exception never
leaves another plugin's coroutine un-awaited.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any

import pluggy

from praefect.core.call import Call, Identity
from praefect.core.errors import Unauthenticated
from praefect.core.mutation import Mutation, MutationFailure
from praefect.core.plugin_manager import TRACE_HOOKS_ENV
from praefect.core.routing_types import NodeRef, RouteDecision

if TYPE_CHECKING:
    from praefect.core.cluster import Cluster
    from praefect.core.local_services import ServiceRegistrar
    from praefect.core.router import Router

__all__ = ["Hooks"]

log = logging.getLogger("praefect.hooks")

NO_IDENTITY_MESSAGE = (
    "authentication required: send 'authorization: Bearer <v2 token>' metadata "
    "signed with the router's auth_token"
)

_AWAITED_HOOKS = (
    "authenticate",
    "before_mutation",
    "on_mutation",
    "on_mutation_failed",
    "on_node_down",
    "on_node_up",
    "on_failover",
    "startup",
    "shutdown",
)


class Hooks:
    """Typed calls of every hook of one plugin manager.

    The implementations are looked up once: register every plugin before
    building the facade.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._trace = bool(os.environ.get(TRACE_HOOKS_ENV))
        self._impls: dict[str, tuple[pluggy.HookImpl, ...]] = {
            name: _call_order(getattr(pm.hook, name)) for name in _AWAITED_HOOKS
        }
        # `route` runs on every call: without wrappers or tracing, calling
        # the implementations directly skips pluggy's generic machinery.
        route_caller = pm.hook.route
        self._route_fast: tuple[Any, ...] | None = None
        if not self._trace and not any(
            impl.hookwrapper or impl.wrapper for impl in route_caller.get_hookimpls()
        ):
            self._route_fast = tuple(
                (impl.function, tuple(impl.argnames)) for impl in _call_order(route_caller)
            )

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self._pm

    def implementers(self, hook_name: str) -> tuple[str, ...]:
        """Plugin names implementing ``hook_name``, in call order."""
        caller = getattr(self._pm.hook, hook_name)
        return tuple(impl.plugin_name for impl in _call_order(caller))

    # -- per call --------------------------------------------------------------

    async def authenticate(self, call: Call) -> Identity:
        """The caller's identity; raises an AuthenticationError to reject.

        Every implementation runs; the first identity wins; none at all
        raises :class:`~praefect.core.errors.Unauthenticated`.
        """
        identity: Identity | None = None
        for result in self._each("authenticate", call=call):
            if inspect.isawaitable(result):
                result = await result
            if identity is None and result is not None:
                identity = result
        if identity is None:
            raise Unauthenticated(NO_IDENTITY_MESSAGE)
        return identity

    def route(self, call: Call, cluster: Cluster) -> RouteDecision | None:
        """The first routing decision, or None when no plugin made one."""
        if self._route_fast is None:
            result: RouteDecision | None = self._pm.hook.route(call=call, cluster=cluster)
            return result
        kwargs = {"call": call, "cluster": cluster}
        for function, argnames in self._route_fast:
            decision: RouteDecision | None = function(*[kwargs[name] for name in argnames])
            if decision is not None:
                return decision
        return None

    async def before_mutation(self, mutation: Mutation) -> None:
        """Every implementation in turn; the first exception propagates."""
        await self._broadcast("before_mutation", mutation=mutation)

    async def on_mutation(self, mutation: Mutation) -> None:
        """Every implementation in turn; the first exception propagates."""
        await self._broadcast("on_mutation", mutation=mutation)

    async def on_mutation_failed(self, mutation: Mutation, failure: MutationFailure) -> None:
        """Every implementation in turn; exceptions are logged."""
        await self._broadcast_logged("on_mutation_failed", mutation=mutation, failure=failure)

    # -- cluster events and lifecycle ------------------------------------------

    async def on_node_down(self, node: NodeRef, reason: str) -> None:
        await self._broadcast_logged("on_node_down", node=node, reason=reason)

    async def on_node_up(self, node: NodeRef) -> None:
        await self._broadcast_logged("on_node_up", node=node)

    async def on_failover(
        self, virtual_storage: str, relative_path: str, old: NodeRef, new: NodeRef, reason: str
    ) -> None:
        await self._broadcast_logged(
            "on_failover",
            virtual_storage=virtual_storage,
            relative_path=relative_path,
            old=old,
            new=new,
            reason=reason,
        )

    def register_services(self, router: Router, registrar: ServiceRegistrar) -> None:
        self._pm.hook.register_services(router=router, registrar=registrar)

    async def startup(self, router: Router) -> None:
        """Every implementation in turn; the first exception aborts the start.

        Plugins that had already started are shut down (latest first) before
        the exception propagates, so a failed start leaves no embedded Redis
        or background task behind.
        """
        started: list[str] = []
        for impl in self._impls["startup"]:
            if self._trace:
                log.info("hook startup -> %s", impl.plugin_name)
            try:
                await _invoke(impl, router=router)
            except BaseException:
                log.error(
                    "plugin %s failed to start; shutting down the plugins already started: %s",
                    impl.plugin_name,
                    ", ".join(started) or "none",
                )
                await self._shutdown_plugins(router, started)
                raise
            started.append(impl.plugin_name)

    async def shutdown(self, router: Router) -> None:
        """Every implementation in turn; exceptions are logged."""
        await self._broadcast_logged("shutdown", router=router)

    async def _shutdown_plugins(self, router: Router, plugin_names: list[str]) -> None:
        by_name = {impl.plugin_name: impl for impl in self._impls["shutdown"]}
        for name in reversed(plugin_names):
            impl = by_name.get(name)
            if impl is None:
                continue
            try:
                await _invoke(impl, router=router)
            except Exception:
                log.exception("plugin %s failed in shutdown", name)

    # -- plumbing ----------------------------------------------------------------

    def _each(self, name: str, **kwargs: Any) -> Iterator[Any]:
        """Call the implementations of ``name`` lazily, one per iteration."""
        for impl in self._impls[name]:
            if self._trace:
                log.info("hook %s -> %s", name, impl.plugin_name)
            yield impl.function(*[kwargs[arg] for arg in impl.argnames])

    async def _broadcast(self, name: str, **kwargs: Any) -> None:
        for result in self._each(name, **kwargs):
            if inspect.isawaitable(result):
                await result

    async def _broadcast_logged(self, name: str, **kwargs: Any) -> None:
        for impl in self._impls[name]:
            try:
                await _invoke(impl, **kwargs)
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, name)


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


async def _invoke(impl: pluggy.HookImpl, **kwargs: Any) -> None:
    """Call one implementation, awaiting its result when it returns one."""
    result = impl.function(*[kwargs[arg] for arg in impl.argnames])
    if inspect.isawaitable(result):
        await _awaited(result)


def _call_order(caller: pluggy.HookCaller) -> tuple[pluggy.HookImpl, ...]:
    """Implementations in the order pluggy calls them (wrappers excluded)."""
    impls = [
        impl for impl in caller.get_hookimpls() if not (impl.hookwrapper or impl.wrapper)
    ]
    return tuple(reversed(impls))
