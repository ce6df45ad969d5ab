"""Whose thread is whose. A thread belongs to the API key that started it: it is saved under a
checkpoint thread id hashed from (tenant, the client's thread id), where the tenant is hashed
from the key's SHA-256 digest (the server never holds a key itself). Another key asking for the
same thread id reaches another checkpoint thread id, so it starts its own chain and learns
nothing of the first. With no keys there is one tenant.

Both hashes are keyed (HMAC-SHA256) with a random secret kept in the checkpoint database
(`glimprouter_secrets`), made on first use: every process and machine sharing the database
derives the same ids, while nobody without the database can tell from an id (or from the
affinity header, a hash of it) which thread or key it stands for, nor pick a thread id that
lands on a replica of their choice.

The checkpoint thread id is a fixed alphabet (`t1-` and hex digits), so any thread id a client
sends (any Unicode, NUL, lone surrogates) is storable in a PostgreSQL text column, and nothing
the client chose becomes a database key, a file name or a header as it is. Threads saved before
tenants existed sit under the client's id itself: the single tenant still resumes them.
"""

from __future__ import annotations

import hashlib
import hmac

# The tenant of a server with no API keys (and of `glimprouter ask`).
SINGLE_TENANT = ""
# The name of the secret in the checkpoint database.
SECRET_NAME = "tenant-hash-key"
CHECKPOINT_ID_PREFIX = "t1-"


def _mac(secret: bytes, *parts: bytes) -> str:
    # Each part but the last has a fixed length or no NUL: the concatenation is unambiguous.
    return hmac.new(secret, b"\0".join(parts), hashlib.sha256).hexdigest()


def tenant_id(secret: bytes, key_digest: bytes | None) -> str:
    """The tenant of the API key whose SHA-256 digest is `key_digest` (None: no key)."""
    if key_digest is None:
        return SINGLE_TENANT
    return _mac(secret, b"tenant", key_digest)[:32]


def checkpoint_thread_id(secret: bytes, tenant: str, thread_id: str) -> str:
    """The thread id a tenant's thread is saved under."""
    client_id = thread_id.encode("utf-8", "surrogatepass")
    return CHECKPOINT_ID_PREFIX + _mac(secret, b"thread", tenant.encode(), client_id)[:40]


def may_be_legacy(thread_id: str, postgres: bool) -> bool:
    """Whether an earlier release could have saved a thread under this id itself: it wrote the
    id as it came, which takes valid UTF-8, and in PostgreSQL no NUL."""
    try:
        thread_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not (postgres and "\0" in thread_id)
