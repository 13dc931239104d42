"""IdentityGraph: the library entry point tying events -> batch (resolver, store) -> lookups."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from .cache import StateCache
from .errors import RulesMismatch
from .results import CONFLICT_REASON, EditResult, GraphStats, IngestResult, IngestSummary, InvalidInput, Link, Profile
from .rules import MergeRules
from .store import Store

# The write path (batch, resolver, events and orjson) is imported by the methods that
# write: a process that only looks IDs up -- every `identity-graph lookup` -- skips it.
if TYPE_CHECKING:
    from .batch import BatchCounts, Plan
    from .chunk import Chunk, PackedChunk
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

    @property
    def dialect(self) -> str:
        """The database behind the graph: ``"sqlite"`` or ``"postgresql"``.

        >>> with IdentityGraph("sqlite://") as g:
        ...     g.dialect
        'sqlite'
        """
        return self._store.dialect

    def close(self) -> None:
        """Release the database connections."""
        self._store.dispose()

    def __enter__(self) -> "IdentityGraph":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------

    def ingest(self, event: Mapping[str, Any] | Event) -> IngestResult:
        """Ingest one Segment event (a dict as the JSON spec has it) and say what happened.

        Raises :class:`InvalidEvent` (and changes nothing) when the event is invalid. An
        :class:`~identity_graph.events.Event` (what ``parse_event`` or ``event_from_line``
        made) is taken as already validated.

        >>> with IdentityGraph("sqlite://") as g:
        ...     g.ingest({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"})
        IngestResult(message_id='m1', status='applied', links=(LinkResult(source='a1', target='u1', kind='implicit', outcome='merged', reason=None),), replayed=False)
        """
        from .batch import apply_plans, plan_event
        from .events import Event, parse_event

        plan = plan_event(event if type(event) is Event else parse_event(event), self.rules)  # type: ignore[arg-type]
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
        from .batch import BatchCounts, apply_plans

        counts = counts if counts is not None else BatchCounts()
        results: list[IngestResult | None] = [None] * len(events)
        plans, slots, repeats = self._plans(events)
        applied = self._store.run_write(
            lambda tx: apply_plans(tx, self.rules, self._cache, plans, list(repeats.values()), counts)
        )
        for slot, result in zip(slots, applied):  # type: ignore[arg-type]
            results[slot] = result
        for index, (slot, plan) in enumerate(repeats.items()):
            status = "conflict" if index in counts.repeat_conflicts else "duplicate"
            results[slot] = IngestResult(plan.event.message_id, status)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def apply_counted(self, events: list[Event] | list[Plan], summary: IngestSummary) -> list[Plan]:
        """Apply already-validated events in one transaction and count the results into ``summary``.

        The bulk entry point of ``ingest_many`` (an import uses :meth:`apply_chunk`): like
        :meth:`apply_events`, without an object per event. ``summary.events`` is left to the
        caller, who counts input. ``events`` may also be :class:`~identity_graph.batch.Plan`s
        made under this graph's rules. Returns the plans of the events that re-used an
        earlier event's messageId with other content, for the caller to report (their
        ``origin`` says where they came from).
        """
        from .batch import apply_plans

        plans, _, repeats = self._plans(events)
        if not plans:
            return []
        return self._counted_write(
            lambda tx, counts: apply_plans(tx, self.rules, self._cache, plans, list(repeats.values()), counts,
                                           counts_only=True),
            summary,
        )

    def apply_chunks(
        self, chunks: Iterable["Chunk"], summary: IngestSummary, keep: int | None = None
    ) -> list[tuple[int, list[Plan]]]:
        """Apply an import's chunks (:class:`~identity_graph.chunk.Chunk`) in one transaction, counting
        into ``summary`` as :meth:`apply_counted` does (``summary.events`` is the caller's).

        ``chunks`` is read inside the transaction, one chunk at a time, so the writer applies
        a chunk while the next one is still being parsed (a generator suits it). A retried
        transaction applies the chunks it took again and only then reads on. If reading
        raises, the transaction is rolled back. The chunks taken are kept for that until the
        commit: the first ``keep`` events' (all when None) as they are, the rest packed
        (:meth:`~identity_graph.chunk.Chunk.packed`: a third of the memory, for ~0.6 us an event).
        Returns, for each chunk taken, its ``line_offset`` and the plans of its events that
        re-used an earlier messageId with other content (their ``origin`` is relative to that chunk).
        """
        from .batch import BatchCounts, apply_chunk
        from .chunk import Chunk

        pending = iter(chunks)
        taken: list[Chunk | PackedChunk] = []  # what a retry applies again
        kept = 0

        def run(tx: Any) -> list[tuple[int, IngestSummary, BatchCounts]]:
            nonlocal kept
            done = []  # not the chunks: they would all stay alive to the commit

            def apply(chunk: Chunk) -> None:
                counts = BatchCounts()
                done.append((chunk.line_offset, apply_chunk(tx, self.rules, self._cache, chunk, counts), counts))

            for held in list(taken):  # a retry: what the failed attempt had taken
                apply(held if type(held) is Chunk else held.unpack())  # type: ignore[union-attr]
            for chunk in pending:
                if keep is None or kept < keep:
                    taken.append(chunk)
                    kept += len(chunk)
                else:
                    taken.append(chunk.packed())
                apply(chunk)
            return done

        out = []
        for line_offset, counted, counts in self._store.run_write(run):
            self._fold(summary, counted, counts)
            out.append((line_offset, counts.conflicting))
        return out

    def _counted_write(self, fn: Callable[[Any, "BatchCounts"], Any], summary: IngestSummary) -> list[Plan]:
        """Run ``fn(tx, counts)`` in one write transaction and fold its counts into
        ``summary`` (after the commit: a retried transaction never counts twice)."""
        from .batch import BatchCounts

        counts = BatchCounts()
        self._fold(summary, self._store.run_write(lambda tx: fn(tx, counts)), counts)
        return counts.conflicting

    @staticmethod
    def _fold(summary: IngestSummary, counted: IngestSummary, counts: "BatchCounts") -> None:
        summary.merge(counted)
        summary.new_ids += counts.new_ids
        summary.touched_profiles -= counts.absorbed
        summary.touched_profiles |= counts.touched

    def _plans(self, events: list[Event] | list[Plan]) -> tuple[list[Plan], dict[int, None], dict[int, Plan]]:
        """Plans of the events whose messageId is first in the list and their slots; and,
        by slot, the plans of the others (repeats of a messageId)."""
        from .batch import Plan, plan_event

        plans: list[Plan] = []
        slots: dict[int, None] = {}
        seen: set[str] = set()
        repeats: dict[int, Plan] = {}
        rules = self.rules
        for slot, item in enumerate(events):
            plan = item if type(item) is Plan else plan_event(item, rules)  # type: ignore[arg-type]
            if plan.event.message_id in seen:
                repeats[slot] = plan
            else:
                seen.add(plan.event.message_id)
                plans.append(plan)
                slots[slot] = None
        return plans, slots, repeats

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

    def register_size(self) -> int:
        """About how many events the graph has registered (rule 9's messageId register):
        exact on SQLite, the planner's estimate on PostgreSQL. An import sizes its
        transactions by it (see :mod:`identity_graph.importer`).

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify("u1", anonymous_id="a1")
        ...     _ = g.identify("u1", anonymous_id="a2")
        ...     g.register_size()
        2
        """
        return self._store.register_size()

    def has_erased_ids(self) -> bool:
        """Whether :meth:`delete` ever erased an ID from this graph (then every batch of an
        import checks its events against the erased ones).

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify("u1", anonymous_id="a1")
        ...     before = g.has_erased_ids()
        ...     _ = g.delete("a1")
        ...     before, g.has_erased_ids()
        (False, True)
        """
        return self._store.has_erased_ids()

    def optimize(self) -> None:
        """Refresh the database's query-planner statistics after a large load (an import
        of 10,000 events or more does it by itself): on PostgreSQL, until they exist, the
        queries of late events, unmerges and deletes may scan whole tables.

        >>> with IdentityGraph("sqlite://") as g:
        ...     g.optimize()
        """
        self._store.analyze()

    # -- correcting history --------------------------------------------------------------

    def unmerge(self, message_id: str, *, undo: bool = False, dry_run: bool = False) -> EditResult:
        """Take out the links of event ``message_id``: the graph becomes what it would be had
        they never been applied. The event's IDs stay (a userId stays known).

        The exclusion is stored: re-importing the event changes nothing, and every later
        rebuild skips it. ``undo=True`` puts the links back. Only the affected cluster is
        recomputed, from its remaining links in event-time order under the rules.
        ``dry_run``: compute and return the result, write nothing.
        Raises :class:`UnknownEvent` for a messageId the graph has not seen.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.ingest({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"})
        ...     r = g.unmerge("m1")
        ...     g.resolve("a1"), [sorted(p.ids) for p in r.before], [p.canonical for p in r.after]
        ('a1', [['a1', 'u1']], ['a1', 'u1'])
        """
        from .edits import unmerge

        return self._edit(lambda tx: unmerge(tx, self.rules, message_id, undo=undo, dry_run=dry_run))

    def delete(self, id_: str, *, dry_run: bool = False) -> EditResult:
        """Erase ``id_``: it no longer resolves, every link touching it is removed, and the
        rest of the graph becomes what it would be had the ID never been sent (as if it
        were a blocked value). The graph keeps a keyed hash of it (HMAC-SHA-256 under a
        salt of its own), never the ID, so re-imported events drop it again.
        ``dry_run``: compute and return the result, write nothing.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="a1")
        ...     _ = g.delete("u1")
        ...     _ = g.identify(user_id="u1", anonymous_id="a1")  # an old event, re-sent
        ...     g.resolve("u1"), g.resolve("a1")
        (None, 'a1')
        """
        from .edits import delete

        return self._edit(lambda tx: delete(tx, self.rules, id_, dry_run=dry_run))

    def _edit(self, fn: Callable[[Any], EditResult]) -> EditResult:
        from .edits import DryRun

        try:
            return self._store.run_write(fn)
        except DryRun as dry:  # raised inside the transaction, which was rolled back
            return dry.result

    # -- reading -----------------------------------------------------------------------

    def resolve(self, id_: str, *, as_of: datetime | None = None) -> str | None:
        """The canonical ID of ``id_``'s profile, or None for an ID no event has mentioned.

        ``as_of``: the canonical as it stood at that event time (see :meth:`profile`).

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     g.resolve("device-1"), g.resolve("nobody")
        ('u1', None)
        """
        if as_of is not None:
            found = self.profile(id_, as_of=as_of)
            return None if found is None else found.canonical
        return self._store.resolve(id_)

    def profile(self, id_: str, *, as_of: datetime | None = None) -> Profile | None:
        """``id_``'s profile (canonical and every ID), or None for an unknown ID.

        ``as_of``: the profile as it stood at that event time: only events with a time at
        or before it count (a naive datetime is UTC); None if no event had mentioned
        ``id_`` by then. It is rebuilt from the stored links of ``id_``'s cluster, so it
        costs a replay of that cluster rather than two indexed queries.

        >>> from datetime import datetime, timezone
        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1", timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc))
        ...     _ = g.alias("u1", "u2", timestamp=datetime(2024, 3, 1, tzinfo=timezone.utc))
        ...     g.profile("device-1").canonical, g.profile("device-1", as_of=datetime(2024, 2, 1)).canonical
        ('u2', 'u1')
        """
        if as_of is not None:
            from .analysis import profile_as_of
            from .events import datetime_to_time

            when = datetime_to_time(as_of)

            def go(tx: Any) -> Profile | None:
                cluster = tx.cluster([id_])
                return profile_as_of(self.rules, tx.load_ids(cluster), tx.links_touching(cluster), id_, when)

            return self._store.read(go)
        found = self._store.lookup(id_)
        return None if found is None else Profile(found[0], frozenset(found[1]))

    def explain(self, a: str, b: str) -> list[Link]:
        """Why ``a`` and ``b`` are one person: the shortest chain of merged links from ``a`` to ``b``.

        Each link is oriented along the path (``path[0].source == a``, each link's target
        the next one's source, ``path[-1].target == b``); ``reversed`` marks a link the
        event made the other way round. ``a == b`` gives ``[]``. Raises
        :class:`UnknownId` for an unknown ID and :class:`NotSameProfile` when they are
        two people, naming the refused link that kept them apart, if one did.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.ingest({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"})
        ...     _ = g.ingest({"type": "alias", "previousId": "jen@email.com", "userId": "u1", "messageId": "m2"})
        ...     [(l.source, l.target, l.message_id) for l in g.explain("a1", "jen@email.com")]
        [('a1', 'u1', 'm1'), ('u1', 'jen@email.com', 'm2')]
        """
        from .analysis import merge_path, refused_between
        from .errors import NotSameProfile
        from .rules import REASONS

        def go(tx: Any) -> list[Link]:
            ra, rb = tx.stored_id(a), tx.stored_id(b)
            if a == b:
                return []
            if ra.profile_id != rb.profile_id:
                left, right = set(tx.members(ra.profile_id)), set(tx.members(rb.profile_id))
                message = f"{a!r} and {b!r} are different people: profiles {ra.canonical!r} and {rb.canonical!r}"
                refused = refused_between(tx.links_of(left), left, right)
                if refused:
                    l = refused[-1]
                    more = f" ({len(refused) - 1} more refused links join them)" if len(refused) > 1 else ""
                    message += (f"; the {l.kind} link {l.source} -> {l.target} of event {l.message_id!r}"
                                f" ({l.event_type}) was refused: {REASONS.get(l.reason, l.reason)}{more}")
                else:
                    message += "; no link joins them"
                raise NotSameProfile(message)
            path = merge_path(tx.links_touching(tx.members(ra.profile_id)), a, b)
            assert path is not None, "a profile's merged links join all of its IDs"
            return path

        return self._store.read(go)

    def history(self, id_: str) -> list[Link]:
        """Every merge and refusal that shaped ``id_``'s profile, in event-time order: the
        links touching its IDs (refused and unmerged ones included, links between IDs
        already together left out). Raises :class:`UnknownId` for an unknown ID.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.ingest({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
        ...                   "timestamp": "2024-01-01T00:00:00Z"})
        ...     _ = g.ingest({"type": "identify", "userId": "u2", "anonymousId": "a1", "messageId": "m2",
        ...                   "timestamp": "2024-01-02T00:00:00Z"})
        ...     [(l.message_id, l.outcome, l.reason) for l in g.history("u1")]
        [('m1', 'merged', None), ('m2', 'refused', 'known_id')]
        """
        from .analysis import history

        def go(tx: Any) -> list[Link]:
            return history(tx.links_of(tx.members(tx.stored_id(id_).profile_id)))

        return self._store.read(go)

    def profile_graph(self, id_: str) -> Any:
        """``id_``'s profile as a ``networkx.MultiDiGraph``: its IDs, and every link touching
        them with kind, outcome, messageId and time (see
        :func:`identity_graph.analysis.profile_graph`). Raises :class:`UnknownId`.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="a1")
        ...     sorted(g.profile_graph("a1").edges(data="outcome"))
        [('a1', 'u1', 'merged')]
        """
        from .analysis import profile_graph

        def go(tx: Any) -> Any:
            row = tx.stored_id(id_)
            members = tx.load_ids(tx.members(row.profile_id))
            links = tx.links_of(members)
            outside = tx.load_ids({i for l in links for i in (l.source, l.target)} - members.keys())
            return profile_graph(
                row.canonical, {i: s.known is not None for i, s in members.items()}, links,
                {i: (s.canonical, s.known is not None) for i, s in outside.items()},
            )

        return self._store.read(go)

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
        merged = together = unmerged = 0
        for outcome, reason, count in raw["links"]:
            if outcome == "merged":
                merged += count
            elif outcome == "together":
                together += count
            elif outcome == "unmerged":
                unmerged += count
            else:
                refused[reason] = refused.get(reason, 0) + count
        newest = raw["newest_event_time"]
        return GraphStats(
            ids=raw["ids"], known_ids=raw["known_ids"], profiles=raw["profiles"], events=raw["events"],
            duplicates=raw["duplicates"], newest_event=None if newest is None else time_to_datetime(newest),
            size_histogram=tuple(raw["size_histogram"]), largest_profiles=tuple(raw["largest_profiles"]),
            links_merged=merged, links_together=together, links_refused=refused, links_unmerged=unmerged,
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
