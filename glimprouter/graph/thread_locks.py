"""One lock per thread of a checkpoint database, held by the one process (and request) that runs
the thread: two runs of one thread would fork its chain.

A lock is named by a SHA-256 hash of the thread id, so no chosen id can take another thread's
lock. SQLite: `flock` on a file of its own in `<database>.locks/`; a flock belongs to its open
file, so releasing one thread's lock leaves every other lock of the process in place (POSIX
record locks on one shared file did not: closing any descriptor of it dropped them all). Its
file is deleted on release, under the lock; a taker checks that the file it locked is still the
one at its path. PostgreSQL: a session advisory lock on 64 bits of the hash, on a connection of
its own. Either goes when its process ends, however it ends.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from glimprouter.errors import ConfigError
from glimprouter.extras import require
from glimprouter.graph.settings import redact_url
from glimprouter.graph.store import is_postgres


class ThreadBusy(ConfigError):
    """Another process (or request) is running the thread."""


def lock_digest(thread_id: str) -> bytes:
    """The hash a thread's lock is named by."""
    text = thread_id.encode("utf-8", "surrogatepass")
    return hashlib.sha256(b"glimprouter thread lock\0" + text).digest()


def advisory_key(thread_id: str) -> int:
    """PostgreSQL's advisory lock key (a signed 64-bit integer) of a thread."""
    return int.from_bytes(lock_digest(thread_id)[:8], "big", signed=True)


def lock_file(location: str | Path, thread_id: str) -> Path:
    """The file whose flock holds a thread of the SQLite database at `location`."""
    database = Path(location).expanduser()
    return database.with_name(database.name + ".locks") / lock_digest(thread_id).hex()[:40]


@asynccontextmanager
async def thread_lock(
    location: str | Path, thread_id: str, *, name: str | None = None
) -> AsyncIterator[None]:
    """Hold thread `thread_id` of the database at `location` while the block runs, or raise
    ThreadBusy (naming the thread `name`, by default its id) if another run holds it."""
    refusal = ThreadBusy(
        f"thread {name or thread_id!r} of {_shown(location)} is being run by another process: "
        "wait for it to end, or pick another --thread-id"
    )
    if is_postgres(location):
        psycopg = require("psycopg")

        async with await psycopg.AsyncConnection.connect(str(location), autocommit=True) as conn:
            query = "SELECT pg_try_advisory_lock(%s)"
            row = await (await conn.execute(query, (advisory_key(thread_id),))).fetchone()
            if not row[0]:
                raise refusal
            yield  # the lock ends with the session
        return
    path = lock_file(location, thread_id)
    descriptor = _take(path)
    if descriptor is None:
        raise refusal
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still ours: whoever opens it next retries
        os.close(descriptor)


def _take(path: Path) -> int | None:
    """A descriptor of `path` holding its flock, or None if another holds it."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        locked = os.fstat(descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (
            locked.st_dev,
            locked.st_ino,
        ):
            return descriptor
        os.close(descriptor)  # its holder deleted it as we opened it: take the new one


def _shown(location: str | Path) -> str:
    return redact_url(str(location)) if is_postgres(location) else str(location)
