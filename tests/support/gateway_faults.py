"""Routers that stop answering, for the gateway's time-limit tests.

`SilentServer` accepts TCP connections, reads and discards what arrives and
never answers: a router process (or the host under it) that hangs before it
says anything. `FreezableProxy` forwards to a real server until frozen, then
stops forwarding in both directions without closing anything: to both ends
the connection stays open but silent, as when the host behind it vanished
without a RST. Thawing forwards what was held, in order, so a connection
frozen for a while carries on as if the network had only been slow.

    async with SilentServer() as silent:
        ... GatewayServer(gateway_config(silent.address)) ...
    async with FreezableProxy(node.address) as proxy:
        proxy.freeze(); ...; proxy.thaw()
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import abstractmethod

from praefect.core.lifecycle import StartStop

CHUNK = 64 * 1024
CLOSE_WITHIN = 5.0


class _Connections:
    """Server-side connection tasks and writers, closed together."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Close every connection; the tasks then end on their own (a
        cancelled one would make asyncio's stream callback log an error)."""
        for writer in self.writers:
            writer.close()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=CLOSE_WITHIN)
            for task in pending:
                task.cancel()


class _LoopbackServer(StartStop):
    """A TCP server on 127.0.0.1 (a free port); its connections close with it."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._connections = _Connections()

    @property
    def address(self) -> str:
        assert self._server is not None, f"the {type(self).__name__} is not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._connections.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.track(task)
        self._connections.writers.add(writer)
        await self._serve(reader, writer)

    @abstractmethod
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection."""


class SilentServer(_LoopbackServer):
    """Accepts connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        with contextlib.suppress(ConnectionError):
            while await reader.read(CHUNK):
                pass
        writer.close()


class FreezableProxy(_LoopbackServer):
    """A TCP proxy on 127.0.0.1 to `target` (HOST:PORT) that can go silent."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._frozen = asyncio.Event()
        self._freeze_after: int | None = None
        #: bytes forwarded from the target to the clients
        self.bytes_down = 0

    def freeze(self) -> None:
        """Stop forwarding in both directions; nothing is closed."""
        self._flowing.clear()
        self._frozen.set()

    def freeze_after(self, downstream_bytes: int) -> asyncio.Event:
        """Freeze once `downstream_bytes` more bytes went from the target to
        the clients; the event is set when frozen."""
        self._frozen.clear()
        self._freeze_after = self.bytes_down + downstream_bytes
        return self._frozen

    def thaw(self) -> None:
        """Forward again, starting with what was held."""
        self._freeze_after = None
        self._frozen.clear()
        self._flowing.set()

    async def stop(self) -> None:
        # A frozen pump waits for the thaw, not for its connection: thawed,
        # the pumps end when the connections close.
        self.thaw()
        await super().stop()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                # Data read just before a freeze is held until the thaw.
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                if downstream:
                    self.bytes_down += len(data)
                    if self._freeze_after is not None and self.bytes_down >= self._freeze_after:
                        self.freeze()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = self.target.rpartition(":")
        try:
            target_reader, target_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        self._connections.writers.add(target_writer)
        await asyncio.gather(
            self._pump(client_reader, target_writer, downstream=False),
            self._pump(target_reader, client_writer, downstream=True),
        )
