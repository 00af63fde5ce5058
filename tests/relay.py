"""A TCP relay a test can cut and heal: one node's network path to a server.

Stopping a shared server (``RedisServer.down()``) takes it away from every
node at once. Some failures only show when one node loses it and the others
do not; such a node connects through a ``Relay``. ``cut()`` closes every
relayed connection and refuses new ones (as a partition with a reset would),
``heal()`` accepts again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib

from servers import HOST, free_port


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    async def start(self) -> Relay:
        await self.heal()
        return self

    async def heal(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, HOST, self.port, reuse_address=True
            )

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)
