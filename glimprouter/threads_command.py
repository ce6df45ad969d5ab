"""`glimprouter threads prune`: delete the saved threads not touched for a while and trim the
others to their latest checkpoint, by hand, printing what it deleted; and the retention flags
serve-router shares with it."""

from __future__ import annotations

import argparse
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from glimprouter.ask import default_checkpoint_db
from glimprouter.graph.retention import Pruned, parse_duration, prune_threads, shown_duration
from glimprouter.graph.threads import (
    DEFAULT_MAX_THREAD_CHECKPOINTS,
    is_postgres,
    open_threads,
)
from glimprouter.stopping import run


def duration(text: str) -> float:
    """argparse type of a duration flag: seconds."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def checkpoint_cap(text: str) -> int | None:
    """argparse type of --max-thread-checkpoints: a count, 0 for none (None)."""
    try:
        cap = int(text)
    except ValueError:
        cap = -1
    if cap < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of checkpoints (0: keep all)")
    return cap or None


def add_max_checkpoints_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--max-thread-checkpoints",
        type=checkpoint_cap,
        metavar="N",
        default=DEFAULT_MAX_THREAD_CHECKPOINTS,
        help="checkpoints one thread keeps; beyond them it keeps only its latest, all resuming "
        f"needs (default {DEFAULT_MAX_THREAD_CHECKPOINTS}; 0: keep every one)",
    )


def add_threads_command(commands: argparse._SubParsersAction) -> None:
    """Register `threads prune` on the top-level parser."""
    threads = commands.add_parser("threads", help="manage the saved threads (chains)")
    actions = threads.add_subparsers(dest="threads_command", required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="delete old threads and trim the others to their latest checkpoint",
        description="Delete the threads not run or read for --older-than, and keep only the "
        "latest checkpoint of each thread holding more than --max-thread-checkpoints; threads "
        "being run are left alone. Prints what it deleted.",
    )
    prune.add_argument(
        "--checkpoint-db",
        default=None,
        help="a SQLite file or a PostgreSQL URI postgresql://... (default: "
        "GLIMPROUTER_CHECKPOINT_DB or ~/.cache/glimprouter/threads.sqlite)",
    )
    prune.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help="delete the threads not touched for this long: 90s, 30m, 12h, 7d",
    )
    add_max_checkpoints_flag(prune)
    prune.set_defaults(handler=_prune_command)


def _prune_command(args: argparse.Namespace) -> int:
    location = args.checkpoint_db or default_checkpoint_db()
    if not is_postgres(location) and not Path(location).expanduser().exists():
        print(f"no checkpoint database at {location}: nothing to prune")
        return 0
    before = _size(location)
    pruned = run(_prune(location, args.older_than, args.max_thread_checkpoints))
    for line in report(pruned, args.older_than):
        print(line)
    if before is not None:
        print(f"{location}: {before / 1e6:.2f} MB -> {_size(location) / 1e6:.2f} MB")
    return 0


async def _prune(location: str | Path, older_than: float | None, cap: int | None) -> Pruned:
    async with open_threads(location, max_checkpoints=None) as store:
        pruned = await prune_threads(store, older_than=older_than, max_checkpoints=cap)
        if not is_postgres(location) and (pruned.deleted or pruned.trimmed):
            await _vacuum(store.saver)
        return pruned


async def _vacuum(saver: object) -> None:
    """Give SQLite's freed pages back to the file system, when no other process is in it (else
    they are reused by the next checkpoints)."""
    try:
        await saver.sql("VACUUM")  # type: ignore[attr-defined]
    except sqlite3.OperationalError as error:
        print(f"the file keeps its size ({error}): its free space is reused by new checkpoints")


def report(pruned: Pruned, older_than: float | None) -> list[str]:
    """The lines `threads prune` prints."""
    lines = []
    for thread_id, touched in sorted(pruned.deleted.items(), key=lambda item: item[1]):
        when = datetime.fromtimestamp(touched, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"deleted thread {thread_id} (last touched {when})")
    for thread_id, removed in sorted(pruned.trimmed.items()):
        lines.append(f"trimmed thread {thread_id}: {removed} older checkpoint(s) deleted")
    age = f" not touched for {shown_duration(older_than)}" if older_than is not None else ""
    lines.append(
        f"deleted {len(pruned.deleted)} thread(s){age}, trimmed {len(pruned.trimmed)} "
        f"({sum(pruned.trimmed.values())} checkpoint(s))"
        + (f"; {len(pruned.busy)} being run, left alone" if pruned.busy else "")
    )
    return lines


def _size(location: str | Path) -> int | None:
    """The bytes of a SQLite database and its journal files (None for PostgreSQL)."""
    if is_postgres(location):
        return None
    path = Path(location).expanduser()
    files = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return sum(file.stat().st_size for file in files if file.exists())
