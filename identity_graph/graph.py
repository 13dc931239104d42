"""IdentityGraph: the library entry point tying events -> batch (resolver, store) -> lookups."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from .cache import StateCache
from .errors import RulesMismatch
from .results import CONFLICT_REASON, GraphStats, IngestResult, IngestSummary, InvalidInput, Profile
from .rules import MergeRules
from .store import Store

# The write path (batch, resolver, events and orjson) is imported by the methods that
# write: a process that only looks IDs up -- every `identity-graph lookup` -- skips it.
if TYPE_CHECKING:
    from .batch import BatchCounts, Plan
    from .events import Event

DEFAULT_BATCH_SIZE = 2000


class IdentityGraph:
    """An identity graph kept in a SQL database (SQLite by default, or PostgreSQL).

    ``url``: a SQLAlchemy URL; default ``$IDENTITY_GRAPH_DB``, else the SQLite file
    ``./identity-graph.db``. ``rules``: the merge rules for a new graph; an existing graph
    keeps the rules it was built with, and opening it with different ones raises
    :class:`RulesMismatch`. ``cache_ids``: how many ID rows this process may keep in memory
    between writes (0: none); the cache is dropped whenever another writer intervenes.
    An ``IdentityGraph`` is not thread-safe: use one per thread or process.

    >>> with IdentityGraph("sqlite://") as g:
    ...     _ = g.identify(user_id="jen@email.com")
    ...     result = g.ingest({"type": "alias", "previousId": "jen@email.com", "userId": "507f191e81"})
    ...     g.profile("jen@email.com")
    Profile(canonical='507f191e81', ids=frozenset({...}))
    >>> result.links[0].outcome
    'merged'
    """

    def __init__(
        self, url: str | None = None, *, rules: MergeRules | None = None, cache_ids: int = 2_000_000
    ) -> None:
        self._store = Store(url)
        # Rows this process has read or written, reused while no other writer intervenes.
        self._cache = StateCache(cache_ids)
        try:
            self.rules = self._load_rules(rules)
        except BaseException:
            self._store.dispose()
            raise

    def _load_rules(self, wanted: MergeRules | None) -> MergeRules:
        stored = self._store.read_json_meta("rules")
        if stored is None:
            value = self._store.write_meta_if_absent("rules", json.dumps((wanted or MergeRules()).to_dict()))
            stored = json.loads(value)
        rules = MergeRules.from_dict(stored)
        if wanted is not None and wanted != rules:
            raise RulesMismatch(
                "this graph was built with other merge rules: " + "; ".join(wanted.differences(rules))
                + " (open it without rules to use the stored ones)"
            )
        return rules

    @property
    def url(self) -> str:
        return self._store.url

    def close(self) -> None:
        """Release the database connections."""
        self._store.dispose()

    def __enter__(self) -> "IdentityGraph":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------

    def ingest(self, event: Mapping[str, Any]) -> IngestResult:
        """Ingest one Segment event (a dict as the JSON spec has it) and say what happened.

        Raises :class:`InvalidEvent` (and changes nothing) when the event is invalid.

        >>> with IdentityGraph("sqlite://") as g:
        ...     g.ingest({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"})
        IngestResult(message_id='m1', status='applied', links=(LinkResult(source='a1', target='u1', kind='implicit', outcome='merged', reason=None),), replayed=False)
        """
        from .batch import apply_plans, plan_event
        from .events import parse_event

        plan = plan_event(parse_event(event), self.rules)
        return self._store.run_write(lambda tx: apply_plans(tx, self.rules, self._cache, [plan]))[0]

    def ingest_many(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_invalid: Callable[[InvalidInput], None] | None = None,
    ) -> IngestSummary:
        """Ingest many events, one transaction per batch; invalid ones are skipped and counted.

        Each skipped event is passed to ``on_invalid`` if given, else kept in
        ``summary.errors``.

        >>> with IdentityGraph("sqlite://") as g:
        ...     s = g.ingest_many([{"type": "identify", "userId": "u1", "anonymousId": "a1"},
        ...                        {"type": "identify"}])
        >>> s.applied, s.invalid, str(s.errors[0])
        (1, 1, 'event 1: userId: the event has neither a userId nor an anonymousId')
        """
        from .batch import gc_paused, plan_event
        from .errors import InvalidEvent
        from .events import parse_event

        summary = IngestSummary()
        report = on_invalid or summary.errors.append
        rules = self.rules
        batch: list[Plan] = []

        def flush() -> None:
            for plan in self.apply_counted(batch, summary):
                report(InvalidInput(plan.origin, "messageId", CONFLICT_REASON))

        with gc_paused():
            for position, raw in enumerate(events):
                summary.events += 1
                try:
                    batch.append(plan_event(parse_event(raw), rules, position))
                except InvalidEvent as exc:
                    summary.invalid += 1
                    report(InvalidInput(position, exc.field, exc.reason))
                    continue
                if len(batch) >= batch_size:
                    flush()
                    batch = []
            if batch:
                flush()
        return summary

    def apply_events(self, events: list[Event], counts: BatchCounts | None = None) -> list[IngestResult]:
        """Apply already-validated events in one transaction; one result per event, in order.

        Events are deduplicated by messageId (the first wins, within the list and against
        the graph). ``counts`` receives the new IDs and the profiles written.
        """
        from .batch import apply_plans

        results: list[IngestResult | None] = [None] * len(events)
        plans, slots, duplicates, conflicting = self._plans(events)
        for slot, event in enumerate(events):
            if slot not in slots:
                status = "conflict" if slot in conflicting else "duplicate"
                results[slot] = IngestResult(event.message_id, status)  # type: ignore[arg-type]
        if plans:
            applied = self._store.run_write(
                lambda tx: apply_plans(tx, self.rules, self._cache, plans, duplicates, counts)
            )
            for slot, result in zip(slots, applied):  # type: ignore[arg-type]
                results[slot] = result
        return results  # type: ignore[return-value]

    def apply_counted(self, events: list[Event] | list[Plan], summary: IngestSummary) -> list[Plan]:
        """Apply already-validated events in one transaction and count the results into ``summary``.

        The bulk entry point (``ingest_many``, imports): like :meth:`apply_events`, without
        an object per event. ``summary.events`` is left to the caller, who counts input.
        ``events`` may also be :class:`~identity_graph.batch.Plan`s made under this graph's
        rules (an import's parse worker makes them). Returns the plans of the events that
        re-used an earlier event's messageId with other content, for the caller to report
        (their ``origin`` says where they came from).
        """
        from .batch import BatchCounts, apply_plans

        plans, _, duplicates, conflicting = self._plans(events)
        counts = BatchCounts()
        batch = IngestSummary(duplicates=duplicates - len(conflicting), conflicts=len(conflicting))
        if plans:
            batch.merge(self._store.run_write(  # type: ignore[arg-type]
                lambda tx: apply_plans(tx, self.rules, self._cache, plans, duplicates, counts, counts_only=True)
            ))
        summary.merge(batch)
        summary.new_ids += counts.new_ids
        summary.touched_profiles -= counts.absorbed
        summary.touched_profiles |= counts.touched
        return [*conflicting.values(), *counts.conflicting]

    def _plans(
        self, events: list[Event] | list[Plan]
    ) -> tuple[list[Plan], dict[int, None], int, dict[int, Plan]]:
        """Plans of the events whose messageId is first in the list and their slots; how
        many others there are; and, by slot, those of the others whose content differs
        from the first's (conflicts)."""
        from .batch import Plan, plan_event

        plans: list[Plan] = []
        slots: dict[int, None] = {}
        first: dict[str, Plan] = {}
        conflicting: dict[int, Plan] = {}
        rules = self.rules
        for slot, item in enumerate(events):
            plan = item if type(item) is Plan else plan_event(item, rules)  # type: ignore[arg-type]
            earlier = first.get(plan.event.message_id)
            if earlier is None:
                first[plan.event.message_id] = plan
                plans.append(plan)
                slots[slot] = None
            elif earlier.content != plan.content:
                conflicting[slot] = plan
        return plans, slots, len(events) - len(plans), conflicting

    def alias(self, previous_id: str, user_id: str, *, timestamp: datetime | None = None) -> IngestResult:
        """Ingest an ``alias`` event (now, with a new messageId) merging ``previous_id`` into ``user_id``.

        >>> with IdentityGraph("sqlite://") as g:
        ...     [(l.kind, l.outcome) for l in g.alias("jen@email.com", "507f191e81").links]
        [('alias', 'merged')]
        """
        return self.ingest(_new_event("alias", timestamp, previousId=previous_id, userId=user_id))

    def identify(
        self,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> IngestResult:
        """Ingest an ``identify`` event (now, with a new messageId).

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     g.identify(user_id="u2", anonymous_id="device-1").links[0].reason
        'known_id'
        """
        return self.ingest(_new_event("identify", timestamp, userId=user_id, anonymousId=anonymous_id))

    # -- reading -----------------------------------------------------------------------

    def resolve(self, id_: str) -> str | None:
        """The canonical ID of ``id_``'s profile, or None for an ID no event has mentioned.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     g.resolve("device-1"), g.resolve("nobody")
        ('u1', None)
        """
        return self._store.resolve(id_)

    def profile(self, id_: str) -> Profile | None:
        """``id_``'s profile (canonical and every ID), or None for an unknown ID.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     sorted(g.profile("u1").ids)
        ['device-1', 'u1']
        """
        found = self._store.lookup(id_)
        return None if found is None else Profile(found[0], frozenset(found[1]))

    def stats(self) -> GraphStats:
        """Counts over the whole graph: IDs, profiles, size histogram, largest profiles, links.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     s = g.stats()
        >>> s.ids, s.known_ids, s.profiles, s.links_merged
        (2, 1, 1, 1)
        """
        from .events import time_to_datetime

        raw = self._store.stats()
        refused: dict[str, int] = {}
        merged = together = 0
        for outcome, reason, count in raw["links"]:
            if outcome == "merged":
                merged += count
            elif outcome == "together":
                together += count
            else:
                refused[reason] = refused.get(reason, 0) + count
        newest = raw["newest_event_time"]
        return GraphStats(
            ids=raw["ids"], known_ids=raw["known_ids"], profiles=raw["profiles"], events=raw["events"],
            duplicates=raw["duplicates"], newest_event=None if newest is None else time_to_datetime(newest),
            size_histogram=tuple(raw["size_histogram"]), largest_profiles=tuple(raw["largest_profiles"]),
            links_merged=merged, links_together=together, links_refused=refused,
        )

    def identities(self) -> Iterator[tuple[str, str]]:
        """Every (id, canonical) pair, sorted by ID (code points), streamed from the database.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     list(g.identities())
        [('device-1', 'u1'), ('u1', 'u1')]
        """
        return self._store.iter_identities()


def _new_event(type_: str, timestamp: datetime | None, **ids: str | None) -> dict[str, Any]:
    when = timestamp or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    body: dict[str, Any] = {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": when.isoformat()}
    body.update({k: v for k, v in ids.items() if v is not None})
    return body
