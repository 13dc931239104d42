"""The values the library returns: profiles, per-event results and batch summaries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .rules import Outcome

#: Why an event that re-uses an earlier event's messageId with other content was ignored.
CONFLICT_REASON = "duplicate of an earlier event with a different body (type or IDs); the first one was kept"

Status = Literal["applied", "duplicate", "conflict", "blocked"]


@dataclass(frozen=True)
class Profile:
    """One person: the canonical ID and every ID of the profile.

    >>> p = Profile("507f191e81", frozenset({"507f191e81", "jen@email.com"}))
    >>> p.canonical, sorted(p.ids)
    ('507f191e81', ['507f191e81', 'jen@email.com'])
    """

    canonical: str
    ids: frozenset[str]


@dataclass(frozen=True)
class LinkResult:
    """The outcome of one link an event asserted (``reason`` is set when refused)."""

    source: str
    target: str
    kind: str
    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True)
class Link:
    """One stored link: what an event asserted and what became of it.

    ``outcome`` is ``merged``, ``together`` (already one profile), ``refused`` (``reason``
    says which rule) or ``unmerged`` (taken out by :meth:`IdentityGraph.unmerge`).
    ``reversed`` is set on a link of an :meth:`IdentityGraph.explain` path that the path
    walks against the event's own direction: the event linked ``target -> source``.
    """

    source: str
    target: str
    kind: str
    outcome: str
    reason: str | None
    message_id: str
    type: str
    timestamp: datetime
    reversed: bool = False

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (the time as ISO-8601)."""
        return {
            "source": self.source, "target": self.target, "kind": self.kind, "outcome": self.outcome,
            "reason": self.reason, "message_id": self.message_id, "type": self.type,
            "timestamp": self.timestamp.isoformat(), "reversed": self.reversed,
        }


@dataclass(frozen=True)
class EditResult:
    """What :meth:`IdentityGraph.unmerge` or :meth:`IdentityGraph.delete` changed.

    ``links``: the links taken out, restored or removed. ``before``: the profiles the
    edit changed, as they were; ``after``: the profiles that replaced them. With
    ``dry_run`` nothing was written: this is what the edit would do.
    """

    dry_run: bool
    links: tuple[Link, ...]
    before: tuple[Profile, ...]
    after: tuple[Profile, ...]

    def to_dict(self) -> dict[str, object]:
        def profiles(ps: tuple[Profile, ...]) -> list[dict[str, object]]:
            return [{"canonical": p.canonical, "ids": sorted(p.ids)} for p in ps]

        return {"dry_run": self.dry_run, "links": [l.to_dict() for l in self.links],
                "before": profiles(self.before), "after": profiles(self.after)}


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one event did.

    ``status`` is ``applied``, ``duplicate`` (messageId seen before: nothing changed),
    ``conflict`` (messageId seen before on an event with another type or other IDs: the
    first one stands, nothing changed) or ``blocked`` (its only IDs are blocked values:
    nothing changed). ``replayed`` says the
    event was late and its cluster was rebuilt in event-time order.
    """

    message_id: str
    status: Status
    links: tuple[LinkResult, ...] = ()
    replayed: bool = False


@dataclass(frozen=True)
class InvalidInput:
    """An event ``ingest_many`` skipped: its position in the input (0-based) and why."""

    position: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"event {self.position}: {self.field}: {self.reason}"


@dataclass
class IngestSummary:
    """Counts of one :meth:`IdentityGraph.ingest_many` call."""

    events: int = 0
    applied: int = 0
    duplicates: int = 0
    #: Events re-using an earlier event's messageId with other content (ignored, reported).
    conflicts: int = 0
    invalid: int = 0
    blocked: int = 0
    #: The outcomes of this call's links when they were applied. A late event's replay may decide
    #: stored links again, so :class:`GraphStats` (the stored outcomes) can differ from the sum.
    links_merged: int = 0
    links_together: int = 0
    links_refused: Counter = field(default_factory=Counter)
    #: Late events: their cluster was rebuilt in event-time order. A cost, not a result: how
    #: many depends on how the events were batched (an import's chunks: 115 of 24M events with
    #: 100k-event chunks, 3 with 500k), never the graph they give.
    replayed_events: int = 0
    new_ids: int = 0
    errors: list[InvalidInput] = field(default_factory=list)
    #: Profiles created or changed, and still there (absorbed ones leave the set).
    touched_profiles: set[int] = field(default_factory=set, repr=False)

    @property
    def profiles_touched(self) -> int:
        return len(self.touched_profiles)

    @property
    def links_refused_total(self) -> int:
        return sum(self.links_refused.values())

    def merge(self, other: "IngestSummary") -> None:
        """Add the event counts of ``other`` (a batch's) to these."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.blocked += other.blocked
        self.links_merged += other.links_merged
        self.links_together += other.links_together
        self.links_refused.update(other.links_refused)
        self.replayed_events += other.replayed_events


@dataclass(frozen=True)
class GraphStats:
    """Counts over a whole graph, as :meth:`IdentityGraph.stats` returns them."""

    ids: int
    known_ids: int
    profiles: int
    events: int
    duplicates: int
    newest_event: datetime | None
    size_histogram: tuple[tuple[str, int], ...]
    largest_profiles: tuple[tuple[str, int], ...]
    #: Links by their stored outcome, as the last replay of their cluster left it.
    links_merged: int
    links_together: int
    links_refused: dict[str, int]
    #: Links taken out by :meth:`IdentityGraph.unmerge`.
    links_unmerged: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (times as ISO-8601 strings)."""
        return {
            "ids": self.ids,
            "known_ids": self.known_ids,
            "profiles": self.profiles,
            "events": self.events,
            "duplicates": self.duplicates,
            "newest_event": self.newest_event.isoformat() if self.newest_event else None,
            "size_histogram": dict(self.size_histogram),
            "largest_profiles": [{"canonical": c, "size": n} for c, n in self.largest_profiles],
            "links": {"merged": self.links_merged, "together": self.links_together, "refused": self.links_refused,
                      "unmerged": self.links_unmerged},
        }
