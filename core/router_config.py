"""The router's configuration, validated once, separate from the server.

:class:`RouterConfig` is what :class:`praefect.core.server.RouterServer`
runs with: the validated settings plus the few things a command line or a
test overrides (the listen address, signal handling).
"""

from __future__ import annotations

from dataclasses import dataclass

from praefect.settings import Config

__all__ = ["RouterConfig", "RouterConfigError"]


class RouterConfigError(ValueError):
    """The router cannot start with these settings; the message says why."""


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """What one router instance runs with.

    Attributes:
        settings: the validated settings (plugins read their own sections).
        listen_addr: overrides ``settings.listen_addr`` (port 0 picks one).
        install_signal_handlers: ``serve()`` stops on SIGTERM/SIGINT; tests
            that run a router inside their own event loop turn this off.
        reuse_port: bind with SO_REUSEPORT so that several router processes
            share one port (``server.processes`` > 1).
    """

    settings: Config
    listen_addr: str | None = None
    install_signal_handlers: bool = True
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if not self.settings.auth.token and not self.settings.auth.transitioning:
            raise RouterConfigError(
                "auth_token is empty: the router refuses to serve without client "
                "authentication; set auth_token (or auth.transitioning = true while "
                "rolling tokens out)"
            )
        if not self.settings.virtual_storages:
            raise RouterConfigError("no virtual storage is configured: add [virtual_storages.<name>.<node>]")

    @property
    def bind_addr(self) -> str:
        configured: str = self.settings.listen_addr
        return self.listen_addr or configured

    @property
    def graceful_stop_timeout(self) -> float:
        seconds: float = self.settings.server.graceful_stop_timeout
        return seconds

    @property
    def max_message_size(self) -> int:
        size: int = self.settings.server.max_message_size
        return size

    @property
    def blocked_plugins(self) -> tuple[str, ...]:
        blocked: tuple[str, ...] = self.settings.plugins.blocked
        return blocked
