"""A TCP proxy on 127.0.0.1 that adds a fixed latency to every request, for tests and benchmarks of bucket reads.

Bytes from the client are delivered to the server `latency` seconds after they arrive (and a new connection
waits as long before it reaches the server), so every request-response exchange, and every connection's
handshake, takes `latency` longer: a bucket one network round trip away. Responses flow back at once.
It counts requests (client chunks that start with an HTTP method), response bytes, connections and the
most requests waiting for an answer at once; `stall()` makes it stop answering, as a bucket can.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

REQUEST = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) ")


class LatencyProxy:
    """Listens on a free loopback port (`endpoint`) and forwards to `upstream` (http://host:port)."""

    def __init__(self, upstream: str, latency: float) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.latency = latency
        self.requests = self.bytes_down = self.connections = self.in_flight = self.max_in_flight = 0
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> LatencyProxy:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="latency-proxy")
        self._thread.start()
        ready.wait()
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._open = asyncio.Event()
        self._open.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        ready.set()
        self._loop.run_forever()

    def stall(self, stalled: bool = True) -> None:
        """Stop forwarding anything either way (connections are still accepted), or start again."""
        self._loop.call_soon_threadsafe(self._open.clear if stalled else self._open.set)

    def reset_counts(self) -> None:
        self._loop.call_soon_threadsafe(self._reset)

    def _reset(self) -> None:
        self.requests = self.bytes_down = self.connections = 0
        self.max_in_flight = self.in_flight

    def counts(self) -> dict[str, int]:
        """Requests, response bytes, connections and the most requests in flight at once, since the last reset."""
        return asyncio.run_coroutine_threadsafe(self._counts(), self._loop).result()

    async def _counts(self) -> dict[str, int]:
        return {"requests": self.requests, "bytes": self.bytes_down, "connections": self.connections,
                "max_in_flight": self.max_in_flight}

    def cpu(self) -> float:
        """CPU seconds the proxy's thread has used."""
        return cpu_seconds_of(f"/proc/self/task/{self._thread.native_id}/stat")

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            await self._connection(client_in, client_out)
        except asyncio.CancelledError:
            self._close(client_out)  # the proxy is stopping

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_out)
        try:
            await self._delay(asyncio.get_running_loop().time() + self.latency)
            server_in, server_out = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._close(client_out)
            return
        self._writers.add(server_out)
        waiting = [False]  # this connection has a request the server has not begun to answer
        tasks = [asyncio.ensure_future(self._requests(client_in, server_out, waiting)),
                 asyncio.ensure_future(self._responses(server_in, client_out, waiting))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        if waiting[0]:
            self.in_flight -= 1
        self._close(client_out)
        self._close(server_out)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, waiting: list[bool]) -> None:
        """Client to server, each chunk `latency` after it arrived."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await self._delay(due)
                if not data:
                    return
                if REQUEST.match(data):
                    self.requests += 1
                    if not waiting[0]:
                        waiting[0] = True
                        self.in_flight += 1
                        self.max_in_flight = max(self.max_in_flight, self.in_flight)
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(1 << 18)
                queue.put_nowait((asyncio.get_running_loop().time() + self.latency, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, waiting: list[bool]) -> None:
        """Server to client, at once (unless stalled)."""
        while data := await reader.read(1 << 18):
            if waiting[0]:
                waiting[0] = False
                self.in_flight -= 1
            await self._open.wait()
            self.bytes_down += len(data)
            writer.write(data)
            await writer.drain()

    async def _delay(self, due: float) -> None:
        """Wait until `due` on the loop's clock, and then for as long as the proxy is stalled."""
        wait = due - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._open.wait()

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        writer.close()


def cpu_seconds_of(stat: str) -> float:
    """User and system CPU seconds in a Linux /proc/.../stat file (of a process or a thread)."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
