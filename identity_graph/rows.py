"""The stored graph's rows as the write path handles them: plain named tuples.

Apart from :mod:`identity_graph.store`, so that the modules of the write path (the
batch writer, the cache, the import's chunks) load without SQLAlchemy: an import's
parse workers use them, and each worker then starts ~0.1 s sooner.
"""

from __future__ import annotations

from typing import NamedTuple

from .resolver import Key


class StoredId(NamedTuple):
    """An ID's row joined with its profile's row (a tuple: made by the thousand per batch)."""

    id: str
    profile_id: int
    known: Key | None
    first_time: int
    canonical: str
    size: int
    profile_known: bool
    last: Key


class StoredLink(NamedTuple):
    message_id: str
    seq: int
    source: str
    target: str
    kind: str
    event_type: str
    time: int
    outcome: str
    reason: str | None
