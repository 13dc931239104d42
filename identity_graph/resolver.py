"""Who is the same person? Union-find over IDs, applying links in event-time order under the rules.

Pure Python, no database. A :class:`Resolver` holds the profiles a batch touches: either
seeded from the store (a stored profile enters as one set with its stored size, canonical
and flags, only its touched IDs present) or built from scratch by :func:`replay`. Sets
are joined by size; each root carries a :class:`ProfileState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

from .rules import MERGED, REFUSED, LinkKind, MergeRules, Outcome

Key = tuple[int, str]
#: Sorts before every real event key: the "last" of a profile nothing has touched yet.
NO_KEY: Key = (-(2**63), "")


@dataclass(slots=True)
class ProfileState:
    """What the rules need to know about one profile.

    ``last`` is the key of the latest event that had an effect on it (a link touching one
    of its IDs, whatever the outcome, or an ID becoming known): an event older than that
    is *late* and forces a replay.
    """

    canonical: str
    size: int = 1
    known: bool = False
    last: Key = NO_KEY


class Link(NamedTuple):
    """A link one event asserts: ``source -> target``.

    ``seq`` orders the links of one event (an alias's explicit link before its implicit
    one), so the full order key is ``(time, message_id, seq)``.
    """

    source: str
    target: str
    kind: LinkKind
    message_id: str
    time: int
    seq: int = 0

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.time, self.message_id, self.seq)


class Resolver:
    """Union-find over IDs with per-set size, canonical, "holds a known ID" and last key.

    >>> r = Resolver(MergeRules())
    >>> r.mark_known("jen@email.com", (1, "m1"))
    >>> r.apply(Link("jen@email.com", "507f191e81", "alias", "m2", 2))
    ('merged', None)
    >>> r.state("jen@email.com").canonical, r.state("507f191e81").size
    ('507f191e81', 2)
    """

    def __init__(self, rules: MergeRules) -> None:
        self.rules = rules
        self._parent: dict[str, str] = {}
        self._state: dict[str, ProfileState] = {}  # root -> state

    def __contains__(self, id_: str) -> bool:
        return id_ in self._parent

    def seed(self, ids: Sequence[str], state: ProfileState) -> None:
        """Enter a stored profile as one set; ``ids`` are the members this batch touches."""
        root = ids[0]
        for id_ in ids:
            self._parent[id_] = root
        self._state[root] = state

    def add(self, id_: str) -> None:
        """Enter an ID seen for the first time as its own profile (rule 7: its own canonical)."""
        if id_ not in self._parent:
            self._parent[id_] = id_
            self._state[id_] = ProfileState(id_)

    def find(self, id_: str) -> str:
        parent = self._parent
        while (up := parent[id_]) != id_:
            parent[id_] = parent[up]  # path halving
            id_ = parent[id_]
        return id_

    def state(self, id_: str) -> ProfileState:
        return self._state[self.find(id_)]

    def mark_known(self, id_: str, key: Key) -> None:
        """``id_`` becomes known at ``key`` (rule 3): its profile now holds a known ID."""
        self.add(id_)
        state = self.state(id_)
        state.known = True
        if key > state.last:
            state.last = key

    def apply(self, link: Link) -> tuple[Outcome, str | None]:
        """Apply one link under the rules (5, 6, 7) and return its outcome and reason."""
        self.add(link.source)
        self.add(link.target)
        src_root, dst_root = self.find(link.source), self.find(link.target)
        src, dst = self._state[src_root], self._state[dst_root]
        outcome, reason = self.rules.decide(
            link.kind, src_root == dst_root, src.size, src.known, dst.size
        )
        key = (link.time, link.message_id)
        if outcome == MERGED:
            merged = ProfileState(
                canonical=dst.canonical,  # rule 7: the target's canonical survives
                size=src.size + dst.size,
                known=src.known or dst.known,
                last=max(src.last, dst.last, key),
            )
            # Union by size keeps find() short; the canonical is independent of the root.
            big, small = (src_root, dst_root) if src.size >= dst.size else (dst_root, src_root)
            self._parent[small] = big
            del self._state[small]
            self._state[big] = merged
        else:
            for state in (src, dst):
                if key > state.last:
                    state.last = key
        return outcome, reason

    def groups(self) -> dict[str, list[str]]:
        """Root -> the IDs present in this resolver that belong to it."""
        out: dict[str, list[str]] = {}
        for id_ in self._parent:
            out.setdefault(self.find(id_), []).append(id_)
        return out



def replay(
    rules: MergeRules,
    ids: Iterable[str],
    known_at: Mapping[str, Key],
    links: Sequence[Link],
) -> tuple[Resolver, list[tuple[Outcome, str | None]]]:
    """Build profiles from scratch: every ID alone, then known-marks and links in event order.

    Returns the resolver and the outcome of each link, in the order of ``links``. An ID
    becomes known just before the links of the event that made it known.

    >>> r, outcomes = replay(MergeRules(), ["a", "u1", "u2"], {"u1": (1, "m1"), "u2": (3, "m3")},
    ...                      [Link("a", "u1", "implicit", "m1", 1), Link("a", "u2", "implicit", "m3", 3)])
    >>> outcomes
    [('merged', None), ('refused', 'known_id')]
    """
    resolver = Resolver(rules)
    for id_ in ids:
        resolver.add(id_)
    # Known-marks sort before the links of their own event (seq -1).
    actions: list[tuple[tuple[int, str, int], int]] = [
        ((key[0], key[1], -1), -1 - i) for i, key in enumerate(known_at.values())
    ]
    known_ids = list(known_at)
    actions.extend((link.key, i) for i, link in enumerate(links))
    actions.sort()
    outcomes: list[tuple[Outcome, str | None]] = [(REFUSED, None)] * len(links)
    for key, index in actions:
        if index < 0:
            resolver.mark_known(known_ids[-1 - index], key[:2])
        else:
            outcomes[index] = resolver.apply(links[index])
    return resolver, outcomes
