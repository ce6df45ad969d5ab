"""Which replica of a role a chain's request goes to: spread chains, keep each on one replica,
and set a failed replica aside for a while.

A chain goes to the replica its id ranks first by rendezvous (highest-random-weight) hashing of
(chain id, replica's place in the list), not to the least loaded one at its start. The hash
needs no shared state, so every process that runs the chain (serve-router's workers, a resumed
thread, an eval's Ray workers) sends it to the same replica, and the spread is even in
expectation: each of N replicas gets each chain with probability 1/N (16 chains on 2 replicas:
4 to 12 on each in 98% of draws of chain ids). When its replica fails, a chain moves to its
second-ranked replica: the failed replica's chains spread over all the others, and no chain of
a healthy replica moves (least-load placement would have to remember every pin, in every
process, to do the same). Reordering the list moves chains: keep it in one order.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Sequence

from glimprouter.graph.settings import ReplicaAffinity


def session_key(chain_id: str) -> str:
    """What the affinity header carries for a chain: an opaque hash of its id (itself a keyed
    hash of (tenant, thread) for a thread's chain), never the client's thread id: any id then
    makes a valid header value, and no client can pick the replica a balancer sends it to."""
    digest = hashlib.sha256(b"glimprouter session\0" + chain_id.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def rendezvous_order(urls: Sequence[str], chain_id: str) -> list[str]:
    """`urls` in the order a chain tries them: by a hash of (chain, replica's place in the
    list), highest first. The place, not the URL, so that a test's replicas behind proxies on
    random ports split a given set of chains the same way every run."""
    weights = {
        url: hashlib.sha256(f"{place}\n{chain_id}".encode()).digest()
        for place, url in enumerate(urls)
    }
    return sorted(urls, key=weights.__getitem__, reverse=True)


class ReplicaPicker:
    """The order in which a request tries a role's replicas, and the replicas set aside."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._set_aside_until: dict[str, float] = {}
        self._turns: dict[tuple[str, ...], itertools.count[int]] = {}

    def order(self, urls: Sequence[str], chain_id: str, affinity: ReplicaAffinity) -> list[str]:
        """The replicas to try, first choice first: the chain's own (affinity "chain") or the
        next in turn (affinity "request"), with the replicas set aside last: when every replica
        failed lately, the request still tries them all rather than failing unsent."""
        if len(urls) == 1:
            return list(urls)
        if affinity == "chain":
            ranked = rendezvous_order(urls, chain_id)
        else:
            turn = next(self._turns.setdefault(tuple(urls), itertools.count())) % len(urls)
            ranked = [*urls[turn:], *urls[:turn]]
        now = self._clock()
        usable = [url for url in ranked if self._set_aside_until.get(url, 0.0) <= now]
        return usable + [url for url in ranked if url not in usable]

    def set_aside(self, url: str, seconds: float) -> None:
        """Try `url` last for the next `seconds`: it just failed."""
        self._set_aside_until[url] = self._clock() + seconds

    def restore(self, url: str) -> None:
        """`url` answered: try it in its turn again."""
        self._set_aside_until.pop(url, None)

    def is_set_aside(self, url: str) -> bool:
        return self._set_aside_until.get(url, 0.0) > self._clock()
