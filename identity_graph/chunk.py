"""How an import hands events to the writer: validated events reduced into a :class:`Chunk`.

Seven events in ten of a typical history carry no userId: an anonymous ``page`` or
``track``. Under the rules such an event links nothing (every link ends at a userId) and
marks nothing known; it only makes its IDs exist (rule 7) and sets when each was first
seen. A chunk therefore hands the writer plans only for the events with a userId, and
reduces the others to a map of ID -> earliest time plus their rows for the messageId
register. The writer applies both in one transaction
(:func:`identity_graph.batch.apply_chunk`), and falls back to every event's plan, which the
chunk can still make, whenever the short cut would not be exact.

Chunks are built where the events are parsed, so with parse workers that work runs on
the second core too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
import pickle
from typing import Any, Callable, Mapping, NamedTuple, Optional

import msgspec
import orjson

from .batch import Plan, event_digest, plan_event
from .events import Event
from .pipe import pickled
from .register import register_key
from .rules import MergeRules


_new = tuple.__new__
_KEY = itemgetter(4)
_DIGESTS_KEPT = 1 << 16
# A chunk's register rows cross the pipe as MessagePack: msgspec writes 100k of them in
# ~40 ms where pickle takes ~85-95 ms (its per-object dispatch; 64-bit ints are slow for
# it), and reads them back, as tuples, as fast as pickle does.
_REGISTER_ROWS = list[tuple[str, int, str, Optional[int], int]]
_encode_register = msgspec.msgpack.Encoder().encode
_decode_register = msgspec.msgpack.Decoder(_REGISTER_ROWS).decode


def _planned_key(row: tuple[tuple[Any, ...], Any, int]) -> tuple[int, str]:
    return (row[0][2], row[0][1])  # Event.key: (time, messageId)


@dataclass
class Chunk:
    """The events of one import batch, validated and reduced for the writer.

    Plain tuples only: they cross the pipe from a parse worker several times cheaper than
    named tuples, and the writer turns into :class:`Plan` objects only what it applies.

    ``register``: the (messageId, time, type, digest, key) row of every event whose
    messageId is first in the chunk (``key``: its register key, computed here, off the
    writer); ``planned``: (event fields, origin, digest) of those that carry a
    (non-blocked) userId, so may link or mark it known, in event-time order once taken;
    ``lone``: ID -> earliest time over the others, whose only effect is that their IDs exist; ``lone_events`` counts those with
    IDs and ``blocked`` holds the messageIds of those with none left (rule 2); ``others``: their
    (event fields, origin), for the fall-back; ``repeats``: (event fields, origin) of the
    events re-using a messageId of the chunk, and ``held``: the register row of the first
    event of each such messageId. ``line_offset``: what to add to every origin's line (a
    parse worker numbers the lines of a file's byte range from 1; see the importer).
    """

    register: list[tuple[str, int, str, int, int]] = field(default_factory=list)
    planned: list[tuple[tuple[Any, ...], Any, int]] = field(default_factory=list)
    lone: dict[str, int] = field(default_factory=dict)
    lone_events: int = 0
    blocked: list[str] = field(default_factory=list)
    others: list[tuple[tuple[Any, ...], Any]] | bytes | None = field(default_factory=list)
    repeats: list[tuple[tuple[Any, ...], Any]] = field(default_factory=list)
    held: dict[str, tuple[str, int, str, int, int]] = field(default_factory=dict)
    line_offset: int = 0
    #: The time its events without one were given (they get the time they are read).
    now: int = 0
    #: Set by a parse worker that leaves ``others`` out of the pipe: which chunk of its input
    #: unit this is, so that the writer can read them again if it needs them (``reread``).
    others_at: int | None = None
    #: Called with ``register``: not the chunk itself, whose reference would make a cycle
    #: that keeps every chunk alive while the collector is paused, and not holding the
    #: register, which a packed chunk (see packed) must not keep as objects.
    reread: Callable[[list[Any]], list[tuple[tuple[Any, ...], Any]]] | None = field(
        default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.register) + len(self.repeats)

    def plans(self, rules: MergeRules) -> list[Plan]:
        """The plans of the events that carry a userId."""
        return [plan_event(_new(Event, fields), rules, origin, digest=digest) for fields, origin, digest in self.planned]

    def all_plans(self, rules: MergeRules) -> list[Plan]:
        """Every first event's plan (the order among distinct messageIds does not matter)."""
        return self.plans(rules) + _plans(self._others(), rules)

    def _others(self) -> list[tuple[tuple[Any, ...], Any]]:
        if self.others is None:  # left out of the pipe (see others_at)
            if self.reread is None:
                raise RuntimeError("a chunk's fall-back events were left out, and nothing can read them again")
            self.others = self.reread(self.register)
        elif isinstance(self.others, bytes):  # as it crossed the pipe (see __getstate__)
            self.others = [(tuple(f), tuple(o) if type(o) is list else o) for f, o in orjson.loads(self.others)]
        return self.others

    def __getstate__(self) -> dict[str, Any]:
        # The writer needs ``others`` only on the rare fall-back. A worker that can read its
        # input again never built them (None: see ChunkBuilder's ``keep_others``); otherwise
        # they cross the pipe as one JSON blob, which orjson writes ~7x faster than pickle and
        # nobody reads unless asked.
        state = dict(self.__dict__)
        state.pop("reread", None)
        # Always encodable: a messageId is valid Unicode (events.py refuses lone surrogates),
        # and times, digests and keys are signed 64-bit.
        state["register"] = _encode_register(self.register)
        if isinstance(self.others, list):
            try:
                state["others"] = orjson.dumps(self.others)
            except TypeError:  # a file name orjson cannot encode (not UTF-8): pickled as it is
                pass
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["register"] = _decode_register(state["register"])
        self.__dict__.update(state)

    def packed(self) -> "PackedChunk":
        """This chunk as bytes, in about a third of the memory of its objects, for a
        transaction that keeps what it has applied until it commits (see
        :meth:`IdentityGraph.apply_chunks`): its pickle, as it crosses the pipe (see
        ``__getstate__``), ~0.6 us an event to make."""
        return PackedChunk(pickled(self), self.reread)

    def repeat_plans(self, rules: MergeRules) -> list[Plan]:
        return _plans(self.repeats, rules)

    @property
    def blocked_events(self) -> int:
        return len(self.blocked)

    def resent_others(self, earlier: Mapping[str, tuple[Any, ...]]) -> set[str] | None:
        """Which of ``earlier`` (this chunk's messageIds registered before it, with the
        registered (time, type, digest)) are ``others``, when each is a plain re-send that
        can change nothing; None when one may change something.

        A re-send can change nothing when it has the registered event's type and IDs (its
        digest; a cleared digest proves nothing) at a time no earlier: the registered event
        made those IDs exist, seen first no later than its time. Then the chunk's ``lone``
        map, which counts the re-send too, still holds exactly: the short cut stays, and
        only the counts must call the re-send a duplicate. Retries sent twice across a batch
        boundary are the common case; anything else (a conflict, an earlier time) takes the
        fall-back, which skips the event outright.
        """
        planned = {row[0][1] for row in self.planned}
        others = {m for m in earlier if m not in planned}
        if others:
            for row in self.register:
                mid = row[0]
                if mid in others:
                    time, type_, digest = earlier[mid]
                    if digest is None or (type_, digest) != (row[2], row[3]) or row[1] < time:
                        return None
        return others


class PackedChunk(NamedTuple):
    """A :class:`Chunk` packed (:meth:`Chunk.packed`); ``unpack()`` gives it back.

    >>> c = ChunkBuilder(MergeRules())
    >>> c.add(Event("identify", "m1", 5, "u1", "a1"), ("f", 1, None))
    >>> chunk = c.take()
    >>> again = chunk.packed().unpack()
    >>> (again.register, again.planned) == (chunk.register, chunk.planned)
    True
    """

    data: memoryview
    reread: Callable[[list[Any]], list[tuple[tuple[Any, ...], Any]]] | None

    def unpack(self) -> Chunk:
        chunk: Chunk = pickle.loads(self.data)
        chunk.reread = self.reread
        return chunk


def _plans(rows: list[tuple[tuple[Any, ...], Any]], rules: MergeRules) -> list[Plan]:
    return [plan_event(_new(Event, fields), rules, origin) for fields, origin in rows]


class ChunkBuilder:
    """Collects validated events (in input order) into a :class:`Chunk`.

    >>> b = ChunkBuilder(MergeRules())
    >>> for e in [Event("page", "m1", 5, None, "a1"), Event("page", "m2", 3, None, "a1"),
    ...           Event("identify", "m3", 4, "u1", "a1"), Event("page", "m1", 9, None, "a2"),
    ...           Event("page", "m4", 1, "null", "a3")]:
    ...     b.add(e, None)
    >>> c = b.take()
    >>> c.lone, [row[0][1] for row in c.planned], [f[1] for f, _ in c.repeats], len(c), len(b.take())
    ({'a1': 3, 'a3': 1}, ['m3'], ['m1'], 5, 0)
    """

    def __init__(self, rules: MergeRules, keep_others: bool = True) -> None:
        self._blocked = rules.blocked_values
        # A parse worker that leaves the fall-back events out of the pipe does not keep
        # them either (see Chunk.others_at): ~40% of a chunk's memory, for nothing.
        self._keep_others = keep_others
        # An ID longer than every blocked value cannot be one (case folding never
        # shortens a string): then only "all whitespace" is left to ask, without the two
        # new strings strip() and casefold() make. Most IDs are UUIDs.
        self._longest = max(map(len, self._blocked), default=0)
        self._chunk = Chunk()
        self._seen: dict[str, tuple[str, int, str, int, int]] = {}  # messageId -> its register row
        # (userId, anonymousId, previousId) -> event_digest: a device sends many events
        # with the same IDs. Cleared when large; the digest is a pure function of them.
        self._digests: dict[tuple[Any, Any, Any], int] = {}

    def __len__(self) -> int:
        return len(self._chunk)

    def _kept(self, value: str) -> bool:
        """``not MergeRules.is_blocked(value)``, asking a long ID only "all whitespace?"."""
        if len(value) > self._longest:
            return not value.isspace()
        return bool(value.strip()) and value.casefold() not in self._blocked

    def add(self, event: Event, origin: Any) -> None:
        # Written out (fields unpacked once): it runs for every event of an import.
        fields = tuple(event)
        type_, mid, time, user, anon, prev = fields
        chunk = self._chunk
        seen = self._seen
        first = seen.get(mid)
        if first is not None:
            chunk.repeats.append((fields, origin))
            chunk.held[mid] = first
            return
        ids = (user, anon, prev)
        digests = self._digests
        digest = digests.get(ids)
        if digest is None:
            if len(digests) >= _DIGESTS_KEPT:
                digests.clear()
            digest = digests[ids] = event_digest(event)
        seen[mid] = row = (mid, time, type_, digest, register_key(mid))
        chunk.register.append(row)
        kept = self._kept
        if user is not None and kept(user):
            chunk.planned.append((fields, origin, digest))
            return
        # No userId: no link (every link ends at the userId) and nothing to mark known.
        if self._keep_others:
            chunk.others.append((fields, origin))
        lone = chunk.lone
        found = False
        for value in (prev, anon):
            if value is not None and kept(value):
                found = True
                if time < lone.get(value, time + 1):
                    lone[value] = time
        if found:
            chunk.lone_events += 1
        else:
            chunk.blocked.append(mid)

    def take(self) -> Chunk:
        """The chunk collected so far; the builder starts a new one."""
        chunk, self._chunk, self._seen = self._chunk, Chunk(), {}
        if not self._keep_others:
            chunk.others = None  # left out: read again if ever needed (Chunk.reread)
        # In key order, the register's inserts walk its index's pages in order instead of
        # at random: ~1 us a row less (measured in memory, 1M UUID keys: 3.6 s -> 2.4 s).
        chunk.register.sort(key=_KEY)
        # In event-time order, as the writer applies them: the sort runs here, off the writer.
        chunk.planned.sort(key=_planned_key)
        return chunk
