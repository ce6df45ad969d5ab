"""How long threads are kept: the threads not touched (run or read) for a while are deleted, and
a thread holding more checkpoints than its cap keeps only its latest. serve-router sweeps while
it serves (--thread-ttl); `glimprouter threads prune` does it by hand. A thread being run is
left alone: each is deleted or trimmed under its own lock.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from glimprouter.graph.thread_locks import ThreadBusy, thread_lock
from glimprouter.graph.threads import ThreadStore

log = logging.getLogger(__name__)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(\d+(?:\.\d*)?)\s*([smhd]?)")
# A sweep runs every quarter of the TTL, between these bounds (seconds).
SWEEP_EVERY = (1.0, 3600.0)


def parse_duration(text: str) -> float:
    """Seconds of a duration such as 90, 90s, 30m, 12h or 7d (ValueError if not one)."""
    found = DURATION.fullmatch(text.strip().lower())
    if not found or float(found[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 12h or 7d")
    return float(found[1]) * UNITS[found[2] or "s"]


def shown_duration(seconds: float) -> str:
    """A duration in its largest whole unit: 7d, 12h, 90s."""
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass
class Pruned:
    """What a prune did: the threads deleted (with when they were last touched), the threads
    trimmed to their latest checkpoint (with the checkpoints deleted), and the threads left
    alone because they were being run."""

    deleted: dict[str, float] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)


async def prune_threads(
    store: ThreadStore,
    *,
    older_than: float | None = None,
    max_checkpoints: int | None = None,
    now: float | None = None,
) -> Pruned:
    """Delete the threads not touched for `older_than` seconds before `now` (default: the
    store's clock), and trim those holding more than `max_checkpoints` checkpoints."""
    saver, pruned = store.saver, Pruned()
    if older_than is not None:
        cutoff = (store.saver.clock() if now is None else now) - older_than
        for thread_id, touched in (await saver.touched()).items():
            if touched >= cutoff:
                continue
            try:
                async with thread_lock(store.location, thread_id):
                    touched = await saver.touched_at(thread_id)  # run since the listing?
                    if touched is not None and touched < cutoff:
                        await saver.forget(thread_id)
                        pruned.deleted[thread_id] = touched
            except ThreadBusy:
                pruned.busy.append(thread_id)
    if max_checkpoints:
        for thread_id in await saver.crowded(max_checkpoints):
            try:
                async with thread_lock(store.location, thread_id):
                    before = await saver.checkpoint_count(thread_id)
                    await saver.keep_latest(thread_id)
                    pruned.trimmed[thread_id] = before - await saver.checkpoint_count(thread_id)
            except ThreadBusy:
                pruned.busy.append(thread_id)
    return pruned


async def sweep_every(store: ThreadStore, ttl: float) -> None:
    """Delete the threads not touched for `ttl` seconds, now and then every quarter of it
    (within SWEEP_EVERY), until cancelled. A failed sweep is logged and the next one tried."""
    least, most = SWEEP_EVERY
    while True:
        try:
            pruned = await prune_threads(store, older_than=ttl)
            if pruned.deleted:
                log.info(
                    "deleted %d thread(s) not touched for %s",
                    len(pruned.deleted),
                    shown_duration(ttl),
                )
        except Exception:
            log.exception("sweeping threads older than --thread-ttl failed; retrying later")
        await asyncio.sleep(min(max(ttl / 4, least), most))
