"""The lifecycle every praefect server shares (router, node, gateway).

uvicorn's shape: a config object, validated once, separate from the
:class:`Server` that runs it. A server has ``startup()`` (listen and serve,
setting ``bound_addr``) and ``shutdown(grace)`` (stop, letting the work in
flight finish within ``grace`` seconds); ``serve()`` runs one until
SIGTERM, SIGINT or ``request_stop()``, printing the
``praefect <kind> listening on HOST:PORT`` line that scripts and tests
wait for. ``async with server`` is startup, then ``shutdown(grace=0)``:
tests do not wait for a grace period.

:class:`StartStop` is the ``async with`` of the helpers that only start and
stop (the demo's processes, the embedded Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ClassVar, Generic, Protocol, Self, TypeVar

__all__ = ["Server", "ServerConfig", "StartStop", "serve_until_stopped"]

log = logging.getLogger("praefect")


class ServerConfig(Protocol):
    """What :class:`Server` reads of its config."""

    @property
    def graceful_stop_timeout(self) -> float:
        """Seconds the work in flight has to finish when the server stops."""
        ...


ConfigT = TypeVar("ConfigT", bound=ServerConfig)


class Server(ABC, Generic[ConfigT]):
    """One praefect server: ``startup()``, ``serve()``, ``shutdown()``.

    A subclass sets :attr:`kind` and implements ``startup()`` and
    ``shutdown()``; ``stop_message()`` says what a stop waits for.
    """

    #: the word in the listening line: ``praefect <kind> listening on HOST:PORT``
    kind: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        #: HOST:PORT the server listens on, once started
        self.bound_addr: str | None = None
        self._stopping = asyncio.Event()

    @abstractmethod
    async def startup(self) -> None:
        """Listen and serve; set ``bound_addr``."""

    @abstractmethod
    async def shutdown(self, grace: float | None = None) -> None:
        """Stop serving; the work in flight has ``grace`` seconds to finish.

        ``None``: the config's ``graceful_stop_timeout``; ``0``: cancel it at
        once. Does nothing on a server that is not started.
        """

    def grace_period(self, grace: float | None) -> float:
        """The seconds a ``shutdown(grace)`` gives the work in flight."""
        return self.config.graceful_stop_timeout if grace is None else grace

    def stop_message(self) -> str:
        """What ``serve()`` logs when it begins to stop."""
        return "stopping"

    @property
    def install_signal_handlers(self) -> bool:
        """Whether ``serve()`` stops on SIGTERM and SIGINT."""
        return True

    async def serve(self) -> None:
        """Start, print the listening line, and run until SIGTERM, SIGINT or ``request_stop()``."""
        await serve_until_stopped(
            self.kind,
            startup=self.startup,
            shutdown=self.shutdown,
            bound_addr=lambda: self.bound_addr,
            stopping=self._stopping,
            install_signal_handlers=self.install_signal_handlers,
            stop_message=self.stop_message(),
        )

    def request_stop(self) -> None:
        """Make ``serve()`` stop gracefully, as SIGTERM does."""
        self._stopping.set()

    async def __aenter__(self) -> Self:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(grace=0)


class StartStop(ABC):
    """``async with`` for a thing that has ``start()`` and ``stop()``."""

    @abstractmethod
    async def start(self) -> None:
        """Start (the ``async with`` entry)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop what ``start()`` started."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_until_stopped(
    kind: str,
    *,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
    bound_addr: Callable[[], str | None],
    stopping: asyncio.Event,
    install_signal_handlers: bool = True,
    stop_message: str = "stopping",
) -> None:
    """Run ``startup``, print the listening line, wait for ``stopping``, run ``shutdown``.

    Signal handlers go in before the line is printed: whoever reads it may
    signal at once.
    """
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stopping.set)
    await startup()
    # One write of the whole line: forked router workers share stdout, and a
    # line written in one piece (under PIPE_BUF) is never interleaved.
    sys.stdout.write(f"praefect {kind} listening on {bound_addr()}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
        log.info("%s", stop_message)
    finally:
        await shutdown()
