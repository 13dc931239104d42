"""What may merge? The merge rules as one small frozen config object.

Pure Python, no I/O. :class:`MergeRules` holds the configurable part (blocked values, size
cap, known-ID protection) and :meth:`MergeRules.decide` is the single place where a link's
outcome is decided from the two profiles it joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: Values that are never IDs (rule 2), compared case-insensitively.
DEFAULT_BLOCKED_VALUES: frozenset[str] = frozenset(
    {"null", "undefined", "none", "nan", "0", "-1", "anonymous", "[object object]"}
)
DEFAULT_MAX_PROFILE_IDS = 1000

Outcome = Literal["merged", "refused", "together"]
MERGED: Outcome = "merged"
REFUSED: Outcome = "refused"
TOGETHER: Outcome = "together"
#: A stored link taken out by an unmerge: every replay skips it (not an outcome of decide()).
UNMERGED = "unmerged"

#: Why a link was refused (rules 5 and 6): code -> sentence for people.
REASONS = {
    "known_id": "the anonymous ID's profile already holds a known user ID",
    "size_cap": "the merged profile would hold more than max_profile_ids IDs",
}

LinkKind = Literal["alias", "implicit"]


@dataclass(frozen=True)
class MergeRules:
    """The merge rules a graph is built with; stored in the graph, checked on open.

    >>> rules = MergeRules()
    >>> rules.max_profile_ids, rules.is_blocked("  "), rules.is_blocked("NULL"), rules.is_blocked("u-1")
    (1000, True, True, False)
    >>> MergeRules(max_profile_ids=5).differences(rules)
    ['max_profile_ids: 5 here, 1000 in the graph']
    """

    blocked_values: frozenset[str] = field(default=DEFAULT_BLOCKED_VALUES)
    max_profile_ids: int = DEFAULT_MAX_PROFILE_IDS
    protect_known_ids: bool = True

    def __post_init__(self) -> None:
        # Blocked values compare case-insensitively: keep them folded once, here.
        folded = frozenset(v.casefold() for v in self.blocked_values)
        object.__setattr__(self, "blocked_values", folded)
        if not isinstance(self.max_profile_ids, int) or self.max_profile_ids < 1:
            raise ValueError("max_profile_ids must be a positive integer")

    def is_blocked(self, value: str) -> bool:
        """True for a value that is not an ID: blank, or a blocked value in any case."""
        return not value.strip() or value.casefold() in self.blocked_values

    def decide(
        self,
        kind: LinkKind,
        same_profile: bool,
        source_size: int,
        source_known: bool,
        target_size: int,
    ) -> tuple[Outcome, str | None]:
        """The outcome of a link ``source -> target`` given the two profiles it joins.

        ``source_known``: the source's profile holds a known ID (rule 5).

        >>> MergeRules().decide("implicit", False, 1, True, 1)
        ('refused', 'known_id')
        >>> MergeRules().decide("alias", False, 1, True, 1)
        ('merged', None)
        >>> MergeRules(max_profile_ids=2).decide("alias", False, 2, False, 1)
        ('refused', 'size_cap')
        """
        if same_profile:
            return TOGETHER, None
        if kind == "implicit" and self.protect_known_ids and source_known:
            return REFUSED, "known_id"
        if source_size + target_size > self.max_profile_ids:
            return REFUSED, "size_cap"
        return MERGED, None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, as stored in the graph."""
        return {
            "blocked_values": sorted(self.blocked_values),
            "max_profile_ids": self.max_profile_ids,
            "protect_known_ids": self.protect_known_ids,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeRules":
        """Inverse of :meth:`to_dict`."""
        return cls(
            blocked_values=frozenset(data["blocked_values"]),
            max_profile_ids=int(data["max_profile_ids"]),
            protect_known_ids=bool(data["protect_known_ids"]),
        )

    def differences(self, stored: "MergeRules") -> list[str]:
        """One line per setting where these rules differ from ``stored``."""
        lines = []
        mine, theirs = self.to_dict(), stored.to_dict()
        for name, value in mine.items():
            if value != theirs[name]:
                if name == "blocked_values":
                    added = sorted(set(value) - set(theirs[name]))
                    removed = sorted(set(theirs[name]) - set(value))
                    lines.append(f"blocked_values: adds {added}, drops {removed}")
                else:
                    lines.append(f"{name}: {value!r} here, {theirs[name]!r} in the graph")
        return lines
