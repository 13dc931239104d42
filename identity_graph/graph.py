"""IdentityGraph: the library entry point tying events -> resolver -> store.

Every write, one event or a batch, goes through one path (:meth:`IdentityGraph._apply`)
inside the store's writer lock:

1. drop events whose messageId the graph has already seen (rule 9);
2. load the touched IDs with their profiles;
3. an event is *late* when a profile it would change has already been affected by a
   later event; late events make the whole *cluster* they touch (everything joined to
   them by profile membership or by any stored link, merged or refused) be rebuilt from
   its stored links in event-time order (rule 8). Nothing outside that cluster is read;
4. every other event is applied in event-time order on top of the stored profiles,
   relabelling only the smaller profile of a merge;
5. write the IDs, links with outcomes, profiles and the messageId register.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from .errors import InvalidEvent, RulesMismatch
from .events import Event, datetime_to_time, parse_event
from .resolver import NO_KEY, Key, Link, ProfileState, Resolver, replay
from .rules import MERGED, REFUSED, TOGETHER, MergeRules, Outcome
from .store import Store, StoredId, WriteTx

Status = Literal["applied", "duplicate", "blocked"]
DEFAULT_BATCH_SIZE = 2000


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
class IngestResult:
    """What ingesting one event did.

    ``status`` is ``applied``, ``duplicate`` (messageId seen before: nothing changed) or
    ``blocked`` (its only IDs are blocked values: nothing changed). ``replayed`` says the
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
    invalid: int = 0
    blocked: int = 0
    links_merged: int = 0
    links_together: int = 0
    links_refused: Counter = field(default_factory=Counter)
    replayed_events: int = 0
    errors: list[InvalidInput] = field(default_factory=list)

    def add(self, result: IngestResult) -> None:
        self.events += 1
        if result.status == "applied":
            self.applied += 1
        elif result.status == "duplicate":
            self.duplicates += 1
        else:
            self.blocked += 1
        self.replayed_events += result.replayed
        for link in result.links:
            if link.outcome == MERGED:
                self.links_merged += 1
            elif link.outcome == TOGETHER:
                self.links_together += 1
            else:
                self.links_refused[link.reason] += 1


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one valid event asserts once blocked values are dropped."""

    event: Event
    ids: tuple[str, ...]
    user: str | None
    links: tuple[Link, ...]


def _plan(event: Event, rules: MergeRules) -> _Plan | None:
    """None when every ID of the event is blocked (rule 2)."""
    is_blocked = rules.is_blocked
    user, anon, prev = event.user_id, event.anonymous_id, event.previous_id
    if user is not None and is_blocked(user):
        user = None
    if anon is not None and is_blocked(anon):
        anon = None
    if prev is not None and is_blocked(prev):
        prev = None
    ids = tuple(dict.fromkeys(v for v in (prev, anon, user) if v is not None))
    if not ids:
        return None
    links = []
    # Rule 4: an alias's explicit link first (seq 0), then any implicit link (seq 1).
    # A link from an ID to itself says nothing and is not kept.
    if prev is not None and user is not None and prev != user:
        links.append(Link(prev, user, "alias", event.message_id, event.time, 0))
    if anon is not None and user is not None and anon != user:
        links.append(Link(anon, user, "implicit", event.message_id, event.time, 1))
    return _Plan(event, ids, user, tuple(links))


class IdentityGraph:
    """An identity graph kept in a SQL database (SQLite by default, or PostgreSQL).

    ``url``: a SQLAlchemy URL; default ``$IDENTITY_GRAPH_DB``, else the SQLite file
    ``./identity-graph.db``. ``rules``: the merge rules for a new graph; an existing graph
    keeps the rules it was built with, and opening it with different ones raises
    :class:`RulesMismatch`.

    >>> with IdentityGraph("sqlite://") as g:
    ...     _ = g.identify(user_id="jen@email.com")
    ...     result = g.ingest({"type": "alias", "previousId": "jen@email.com", "userId": "507f191e81"})
    ...     g.profile("jen@email.com")
    Profile(canonical='507f191e81', ids=frozenset({...}))
    >>> result.links[0].outcome
    'merged'
    """

    def __init__(self, url: str | None = None, *, rules: MergeRules | None = None) -> None:
        self._store = Store(url)
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
        parsed = parse_event(event)
        plan = _plan(parsed, self.rules)
        if plan is None:
            return IngestResult(parsed.message_id, "blocked")
        return self._store.run_write(lambda tx: self._apply(tx, [plan]))[0]

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
        summary = IngestSummary()
        report = on_invalid or summary.errors.append
        batch: list[Event] = []
        for position, raw in enumerate(events):
            try:
                batch.append(parse_event(raw))
            except InvalidEvent as exc:
                summary.events += 1
                summary.invalid += 1
                report(InvalidInput(position, exc.field, exc.reason))
                continue
            if len(batch) >= batch_size:
                self._ingest_batch(batch, summary)
                batch = []
        if batch:
            self._ingest_batch(batch, summary)
        return summary

    def _ingest_batch(self, events: list[Event], summary: IngestSummary) -> None:
        results = self.apply_events(events)
        for result in results:
            summary.add(result)

    def apply_events(self, events: list[Event]) -> list[IngestResult]:
        """Apply already-validated events in one transaction; one result per event, in order.

        The bulk entry point for importers: events are deduplicated by messageId (the
        first wins, within the list and against the graph).
        """
        results: list[IngestResult | None] = [None] * len(events)
        plans: list[_Plan] = []
        plan_slots: list[int] = []
        seen: set[str] = set()
        for slot, event in enumerate(events):
            if event.message_id in seen:
                results[slot] = IngestResult(event.message_id, "duplicate")
                continue
            seen.add(event.message_id)
            plan = _plan(event, self.rules)
            if plan is None:
                results[slot] = IngestResult(event.message_id, "blocked")
            else:
                plans.append(plan)
                plan_slots.append(slot)
        if plans:
            applied = self._store.run_write(lambda tx: self._apply(tx, plans))
            for slot, result in zip(plan_slots, applied):
                results[slot] = result
        return results  # type: ignore[return-value]

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

    def identities(self) -> Iterator[tuple[str, str]]:
        """Every (id, canonical) pair, sorted by ID (code points), streamed from the database.

        >>> with IdentityGraph("sqlite://") as g:
        ...     _ = g.identify(user_id="u1", anonymous_id="device-1")
        ...     list(g.identities())
        [('device-1', 'u1'), ('u1', 'u1')]
        """
        return self._store.iter_identities()

    # -- the one write path ------------------------------------------------------------

    def _apply(self, tx: WriteTx, plans: list[_Plan]) -> list[IngestResult]:
        existing = tx.existing_message_ids([p.event.message_id for p in plans])
        fresh = sorted((p for p in plans if p.event.message_id not in existing), key=lambda p: p.event.key)
        outcomes: dict[tuple[str, int], tuple[Outcome, str | None]] = {}
        replayed: set[str] = set()
        if fresh:
            writer = _BatchWriter(tx, self.rules, fresh)
            writer.run()
            outcomes, replayed = writer.outcomes, writer.replayed_messages
        results = []
        for p in plans:
            mid = p.event.message_id
            if mid in existing:
                results.append(IngestResult(mid, "duplicate"))
                continue
            links = tuple(
                LinkResult(l.source, l.target, l.kind, *outcomes[(mid, l.seq)]) for l in p.links
            )
            results.append(IngestResult(mid, "applied", links, mid in replayed))
        return results


class _BatchWriter:
    """Applies one batch of fresh, time-sorted plans inside a write transaction."""

    def __init__(self, tx: WriteTx, rules: MergeRules, plans: list[_Plan]) -> None:
        self.tx = tx
        self.rules = rules
        self.plans = plans
        self.outcomes: dict[tuple[str, int], tuple[Outcome, str | None]] = {}
        self.replayed_messages: set[str] = set()
        touched = {i for p in plans for i in p.ids}
        self.stored: dict[str, StoredId] = tx.load_ids(touched)
        self.first_time: dict[str, int] = {}
        for p in plans:
            for i in p.ids:
                if i not in self.first_time:  # plans are time-sorted: the first is the earliest
                    self.first_time[i] = p.event.time
        self.id_inserts: list[dict[str, Any]] = []
        self.id_updates: dict[str, dict[str, Any]] = {}

    # A user ID's known-mark matters only when it is the earliest event carrying it.
    def _marks_known(self, plan: _Plan, known_at: Mapping[str, Key]) -> bool:
        if plan.user is None:
            return False
        current = known_at.get(plan.user)
        return current is None or plan.event.key < current

    def run(self) -> None:
        known_at = {i: s.known for i, s in self.stored.items() if s.known is not None}
        cluster = self._late_cluster(known_at)
        if cluster:
            replay_plans = [p for p in self.plans if not cluster.isdisjoint(p.ids)]
            append_plans = [p for p in self.plans if cluster.isdisjoint(p.ids)]
        else:
            replay_plans, append_plans = [], self.plans
        if append_plans:
            self._append(append_plans, known_at)
        if replay_plans:
            self._replay(replay_plans, cluster)
        self._write_common()

    def _late_cluster(self, known_at: Mapping[str, Key]) -> set[str]:
        seeds: set[str] = set()
        for p in self.plans:
            key = p.event.key
            affected = [i for l in p.links for i in (l.source, l.target)]
            if self._marks_known(p, known_at):
                affected.append(p.user)  # type: ignore[arg-type]
            if any((s := self.stored.get(i)) is not None and s.last > key for i in affected):
                seeds.update(p.ids)
        if not seeds:
            return set()
        cluster: set[str] = set()
        pending = seeds
        while pending:
            cluster |= self.tx.cluster(pending)
            # Batch events that touch the cluster join it, and bring their own clusters.
            pending = {i for p in self.plans if not cluster.isdisjoint(p.ids) for i in p.ids} - cluster
        return cluster

    def _append(self, plans: list[_Plan], known_at: dict[str, Key]) -> None:
        """Apply in event order on top of the stored profiles; relabel the smaller side."""
        resolver = Resolver(self.rules)
        ids = {i for p in plans for i in p.ids}
        members: dict[int, list[str]] = {}
        for i in ids:
            s = self.stored.get(i)
            if s is not None:
                members.setdefault(s.profile_id, []).append(i)
        for group in members.values():
            s = self.stored[group[0]]
            resolver.seed(group, ProfileState(s.canonical, s.size, s.profile_known, s.last))
        for i in ids:
            resolver.add(i)
        known_changes: dict[str, Key] = {}
        for p in plans:
            if self._marks_known(p, known_at):
                known_at[p.user] = known_changes[p.user] = p.event.key  # type: ignore[index]
                resolver.mark_known(p.user, p.event.key)  # type: ignore[arg-type]
            for link in p.links:
                self.outcomes[(link.message_id, link.seq)] = resolver.apply(link)

        moves: list[tuple[int, int]] = []
        dropped: list[int] = []
        new_profiles: list[dict[str, Any]] = []
        changed_profiles: list[dict[str, Any]] = []
        for root, group in resolver.groups().items():
            state = resolver.state(root)
            origins = {self.stored[i].profile_id: self.stored[i] for i in group if i in self.stored}
            if origins:
                # Union by size: the largest stored profile keeps its number; the others'
                # IDs are relabelled, so each ID moves only into a profile at least twice
                # its old one's size.
                survivor = max(origins, key=lambda pid: (origins[pid].size, -pid))
                for pid in origins:
                    if pid != survivor:
                        moves.append((pid, survivor))
                        dropped.append(pid)
                old = origins[survivor]
                if (state.canonical, state.size, state.known, state.last) != (
                    old.canonical, old.size, old.profile_known, old.last
                ):
                    changed_profiles.append(_profile_row(survivor, state))
            else:
                survivor = self.tx.new_profile_id()
                new_profiles.append(_profile_row(survivor, state))
            for i in group:
                if i not in self.stored:
                    self._insert_id(i, survivor, known_changes.get(i))
        for i, key in known_changes.items():
            if i in self.stored:
                self._update_id(i, known_time=key[0], known_msg=key[1])
        self.tx.relabel(moves)
        self.tx.delete_profiles(dropped)
        self.tx.update_profiles(changed_profiles)
        self.tx.insert_profiles(new_profiles)

    def _replay(self, plans: list[_Plan], cluster: set[str]) -> None:
        """Rebuild the cluster from its stored links plus the batch's, in event-time order."""
        self.replayed_messages.update(p.event.message_id for p in plans)
        missing = [i for i in cluster if i not in self.stored]
        self.stored.update(self.tx.load_ids(missing))
        stored_links = self.tx.links_touching(i for i in cluster if i in self.stored)
        known_at = {i: self.stored[i].known for i in cluster if i in self.stored and self.stored[i].known}
        known_changes: dict[str, Key] = {}
        for p in plans:
            if self._marks_known(p, known_at):
                known_at[p.user] = known_changes[p.user] = p.event.key  # type: ignore[index]
        batch_links = [l for p in plans for l in p.links]
        links = [Link(s.source, s.target, s.kind, s.message_id, s.time, s.seq) for s in stored_links]  # type: ignore[arg-type]
        resolver, outcomes = replay(self.rules, sorted(cluster), known_at, links + batch_links)

        self.tx.update_link_outcomes([
            (o, r, s.link_id) for s, (o, r) in zip(stored_links, outcomes) if (s.outcome, s.reason) != (o, r)
        ])
        for link, outcome in zip(batch_links, outcomes[len(links):]):
            self.outcomes[(link.message_id, link.seq)] = outcome

        # Give each rebuilt profile the stored number most of its IDs already carry, so
        # only the IDs that really moved are rewritten.
        old_pids = {self.stored[i].profile_id for i in cluster if i in self.stored}
        groups = sorted(resolver.groups().items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
        taken: set[int] = set()
        rows = []
        for root, group in groups:
            votes = Counter(self.stored[i].profile_id for i in group if i in self.stored)
            pid = next((p for p, _ in votes.most_common() if p not in taken), None)
            if pid is None:
                pid = self.tx.new_profile_id()
            taken.add(pid)
            rows.append(_profile_row(pid, resolver.state(root)))
            for i in group:
                s = self.stored.get(i)
                if s is None:
                    self._insert_id(i, pid, known_changes.get(i))
                elif s.profile_id != pid:
                    self._update_id(i, profile_id=pid)
        for i, key in known_changes.items():
            if i in self.stored:
                self._update_id(i, known_time=key[0], known_msg=key[1])
        self.tx.delete_profiles(sorted(old_pids))
        self.tx.insert_profiles(rows)

    def _insert_id(self, id_: str, pid: int, known: Key | None) -> None:
        self.id_inserts.append((
            id_, pid, known[0] if known else None, known[1] if known else None, self.first_time[id_]
        ))

    def _update_id(self, id_: str, **fields: Any) -> None:
        self.id_updates.setdefault(id_, {}).update(fields)

    def _write_common(self) -> None:
        tx = self.tx
        for i, s in self.stored.items():
            first = self.first_time.get(i)
            if first is not None and first < s.first_time:
                self._update_id(i, first_time=first)
        tx.insert_ids(self.id_inserts)
        # Group updates by the set of fields they change: one executemany per shape.
        by_shape: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for i, fields in self.id_updates.items():
            shape = tuple(sorted(fields))
            by_shape.setdefault(shape, []).append((*(fields[f] for f in shape), i))
        for shape, rows in by_shape.items():
            tx.set_id_fields(shape, rows)
        tx.insert_links([
            (l.source, l.target, l.kind, l.message_id, p.event.type, l.time, l.seq,
             *self.outcomes[(l.message_id, l.seq)])
            for p in self.plans for l in p.links
        ])
        tx.insert_events([(p.event.message_id, p.event.time, p.event.type) for p in self.plans])


def _profile_row(pid: int, state: ProfileState) -> tuple[Any, ...]:
    """(profile_id, canonical, size, known, last_time, last_msg) as the store takes it."""
    untouched = state.last == NO_KEY
    return (
        pid, state.canonical, state.size, state.known,
        None if untouched else state.last[0], None if untouched else state.last[1],
    )


def _new_event(type_: str, timestamp: datetime | None, **ids: str | None) -> dict[str, Any]:
    when = timestamp or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    body: dict[str, Any] = {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": when.isoformat()}
    body.update({k: v for k, v in ids.items() if v is not None})
    return body
