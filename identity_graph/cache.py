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

    def begin(self, tx: WriteTx, warm: bool = False) -> None:
        """Check the cache against the generation found under the lock; invalid until :meth:`commit`.

        ``warm``: when the cache must start over on a graph of at most ``max_ids`` IDs,
        read them all now, in one scan, and be complete. An import into an existing
        graph asks for it: otherwise every batch looks up the IDs it touches, a few
        thousand random reads a batch, which is what made a second month cost more
        than the first.
        """
        if self.max_ids <= 0:
            self.reset()
            return
        # At ``tx.next_generation`` the cache mirrors an earlier batch of this very transaction
        # (an import applies several chunks in one): a token no other transaction has seen.
        if self.generation not in (tx.generation, tx.next_generation) or len(self._ids) > self.max_ids:
            self.reset()
            self.complete = tx.is_empty()
            if warm and not self.complete:
                rows = tx.all_ids(self.max_ids)
                if rows is not None:
                    for row in rows:
                        self.put(row)
                    self.complete = True
        self.generation = None  # a failure before commit() leaves the cache unusable

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
