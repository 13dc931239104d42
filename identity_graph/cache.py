"""What this process already knows of the stored graph, so a batch need not read it again.

The cache mirrors the ``ig_ids`` and ``ig_profiles`` rows this process has read or
written. It is valid only while the graph's generation token (rewritten by every write
transaction, see :meth:`identity_graph.store.Store.run_write`) is the one this process
left: any other writer, a failed transaction or a crash in between makes the tokens
differ and the cache is dropped. When it was (re)built on an empty graph it is
*complete*: an ID it does not hold is not stored either, so a fresh import never reads
the database at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .resolver import Key
from .rows import StoredId

if TYPE_CHECKING:
    from .store import WriteTx


# A batch reads the whole graph when it would look up at least 1/FILL_RATIO of its IDs
# (see StateCache.fill).
FILL_RATIO = 8


class StateCache:
    """ID and profile rows known to this process, for one generation of the graph."""

    def __init__(self, max_ids: int = 2_000_000) -> None:
        self.max_ids = max_ids
        self.reset()

    def reset(self) -> None:
        self.generation: str | None = None
        self.complete = False
        self._ids: dict[str, list] = {}  # id -> [profile_id, known key | None, first_time]
        self._profiles: dict[int, tuple[str, int, bool, Key]] = {}  # canonical, size, known, last
        self._forward: dict[int, int] = {}  # absorbed profile -> the profile it moved into
        self._may_fill = False

    def begin(self, tx: WriteTx, warm: bool = False) -> None:
        """Check the cache against the generation found under the lock; invalid until :meth:`commit`.

        ``warm``: this batch may read the whole graph into the cache (see :meth:`fill`).
        """
        self._may_fill = False
        if self.max_ids <= 0:
            self.reset()
            return
        # At ``tx.next_generation`` the cache mirrors an earlier batch of this very transaction
        # (an import applies several chunks in one): a token no other transaction has seen.
        if self.generation not in (tx.generation, tx.next_generation) or len(self._ids) > self.max_ids:
            self.reset()
            self.complete = tx.is_empty()
        self._may_fill = warm and not self.complete
        self.generation = None  # a failure before commit() leaves the cache unusable

    def fill(self, tx: WriteTx, misses: int) -> bool:
        """Read every stored ID in one scan and be complete, when a batch that may
        (:meth:`begin`'s ``warm``) is about to look up ``misses`` IDs, at least
        1/``FILL_RATIO`` of a graph of at most ``max_ids``; whether it did.

        An import's batches share the cache, so one scan serves them all; looked up
        batch by batch, a second month into a month-1 graph cost more than the first
        month. A small import into a large graph (a day's events) is the other way
        round: its few thousand lookups take ~0.03 s, a scan of a 90k-ID graph ~0.35 s.
        Measured on SQLite: ~6 us an ID looked up, ~4 us an ID scanned."""
        if not self._may_fill:
            return False
        self._may_fill = False  # once a batch
        if tx.holds_more_ids_than(min(misses * FILL_RATIO, self.max_ids)):
            return False
        rows = tx.all_ids(self.max_ids)
        if rows is None:
            return False
        for row in rows:
            self.put(row)
        self.complete = True
        return True

    def commit(self, tx: WriteTx) -> None:
        """The transaction's writes are mirrored: valid at the generation it leaves."""
        if self.max_ids > 0:
            self.generation = tx.next_generation

    def _find(self, pid: int) -> int:
        forward = self._forward
        while pid in forward:
            up = forward[pid]
            if up in forward:
                forward[pid] = forward[up]
            pid = up
        return pid

    def get(self, id_: str) -> StoredId | None:
        entry = self._ids.get(id_)
        if entry is None:
            return None
        pid = self._find(entry[0])
        profile = self._profiles.get(pid)
        if profile is None:
            return None
        return StoredId(id_, pid, entry[1], entry[2], *profile)

    # Mirrors of the writes a batch makes -------------------------------------------------

    def put(self, row: StoredId) -> None:
        """A row just read from the database."""
        self._ids[row.id] = [row.profile_id, row.known, row.first_time]
        self._profiles[row.profile_id] = (row.canonical, row.size, row.profile_known, row.last)

    def put_id(self, id_: str, pid: int, known: Key | None, first_time: int) -> None:
        self._ids[id_] = [pid, known, first_time]

    def set_id(self, id_: str, *, profile_id: int | None = None, known: Key | None = None,
               first_time: int | None = None) -> None:
        entry = self._ids.get(id_)
        if entry is None:
            return
        if profile_id is not None:
            entry[0] = profile_id
        if known is not None:
            entry[1] = known
        if first_time is not None:
            entry[2] = first_time

    def put_profile(self, pid: int, canonical: str, size: int, known: bool, last: Key) -> None:
        self._profiles[pid] = (canonical, size, known, last)

    def move(self, old: int, new: int) -> None:
        """Every ID of profile ``old`` now belongs to ``new`` (which survives)."""
        self._forward[old] = new
        self._profiles.pop(old, None)

    def drop_profile(self, pid: int) -> None:
        self._profiles.pop(pid, None)
