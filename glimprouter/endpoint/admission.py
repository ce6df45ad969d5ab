"""Admission under --workers N: the serve-router process owns the one Scheduler, and every worker
asks it for a place over a Unix socket, holding that connection while its chain runs. The bounds
hold for the whole server, not per worker, with no service to run besides; a worker that dies
holding places frees them, as the kernel closes its connections.

The exchange, one per connection: the worker sends its key's digest in hex ("-" for no key) and
a newline; the scheduler answers "ok" once the chain may run, or "no MESSAGE" (the 429's); the
worker closes the connection when the run ends, or to stop waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.load import Key, Scheduler, too_many
from glimprouter.errors import ConfigError

_NO_KEY = b"-"
_SOCKET_NAME = "scheduler.sock"
# sun_path holds 108 bytes with its terminating NUL.
_MAX_SOCKET_PATH = 107


@contextlib.contextmanager
def shared_scheduler(scheduler: Scheduler) -> Iterator[str]:
    """Serve `scheduler` on a Unix socket of a private directory from a thread of this process
    while the block runs; yields the socket's path, for the workers' RemoteGate."""
    directory = tempfile.mkdtemp(prefix="glimprouter-admission-")
    if len(os.fsencode(os.path.join(directory, _SOCKET_NAME))) > _MAX_SOCKET_PATH:
        # A deep TMPDIR (a test's, a job scheduler's) makes a path bind() refuses; the
        # directory's mode 0700 is what guards the socket, wherever it is.
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="glimprouter-admission-", dir="/tmp")
    path = os.path.join(directory, _SOCKET_NAME)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping = asyncio.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        try:
            server = await asyncio.start_unix_server(
                lambda reader, writer: _answer(scheduler, reader, writer), path
            )
        except OSError as error:
            failure.append(error)
            return
        finally:
            started.set()
        async with server:
            await stopping.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise ConfigError(
            f"cannot open the workers' admission socket in {directory} ({failure[0]}): "
            "set TMPDIR to a short writable directory, or run with --workers 1"
        )
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join()
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _answer(
    scheduler: Scheduler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One worker's request for a place: granted, refused, or given up by the worker."""
    try:
        line = (await reader.readline()).strip()
        key = None if line == _NO_KEY else bytes.fromhex(line.decode("ascii"))
        # Nothing more comes from the worker: its read ends when it closes, or dies.
        gone = asyncio.ensure_future(reader.read(1))
        admitted = asyncio.ensure_future(scheduler.admit(key))
        await asyncio.wait({gone, admitted}, return_when=asyncio.FIRST_COMPLETED)
        if not admitted.done():
            admitted.cancel()  # the Scheduler forgets the request
            with contextlib.suppress(asyncio.CancelledError):
                await admitted
            return
        if isinstance(error := admitted.exception(), RequestError):  # the Scheduler's 429
            writer.write(b"no " + error.message.encode() + b"\n")
            return
        if error:
            raise error
        try:
            writer.write(b"ok\n")
            await gone
        finally:
            scheduler.release(key)
    except (ConnectionError, ValueError, UnicodeDecodeError):
        return  # a connection that did not follow the exchange holds nothing
    finally:
        writer.close()


class RemoteGate:
    """A worker's places, from its serve-router's Scheduler at the Unix socket `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.asynccontextmanager
    async def slot(self, key: Key) -> AsyncIterator[None]:
        reader, writer = await asyncio.open_unix_connection(self.path)
        try:
            writer.write((_NO_KEY if key is None else key.hex().encode()) + b"\n")
            answer = (await reader.readline()).decode().rstrip("\n")
            if answer.startswith("no "):
                # The scheduler's own 429 ends with its retry advice: said once.
                raise too_many(answer.removeprefix("no ").rpartition("; retry after")[0])
            if answer != "ok":
                raise ConnectionError("the serve-router process's scheduler closed the connection")
            yield
        finally:
            writer.close()
