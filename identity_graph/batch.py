"""The one write path: apply a batch of events to the stored graph, exactly.

Inside the store's writer lock (see :meth:`identity_graph.store.Store.run_write`):

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

import gc
import hashlib
import hmac
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import orjson

from .events import Event
from .resolver import NO_KEY, Key, Link, ProfileState, Resolver, replay
from .results import IngestResult, IngestSummary, LinkResult
from .rules import UNMERGED, MERGED, TOGETHER, MergeRules, Outcome
from .cache import StateCache
from .register import register_key, same_event
from .rows import StoredId

if TYPE_CHECKING:
    from .chunk import Chunk
    from .store import WriteTx


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk load.

    Batches make millions of short-lived tuples and the cache holds millions of
    long-lived ones; none of them form reference cycles, so the collector finds nothing,
    yet its full scans of the live objects took about a third of an import's time.
    Reference counting still frees everything; the collector's state is restored after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Plan(NamedTuple):
    """What one valid event asserts once blocked values are dropped.

    ``digest`` fingerprints the event's IDs (see :func:`event_digest`); ``origin`` is
    wherever the caller says the event came from (an import's file and line), handed
    back when the event turns out to re-use an earlier event's messageId.
    """

    event: Event
    ids: tuple[str, ...]
    user: str | None
    links: tuple[Link, ...]
    digest: int = 0
    origin: Any = None


def event_digest(event: Event) -> int:
    """A 64-bit fingerprint of the event's userId, anonymousId and previousId (stable
    across processes, unlike ``hash``); with its type it tells a re-sent event
    from a different one that re-uses its messageId.

    >>> e = Event("identify", "m1", 0, "u1", "a1")
    >>> event_digest(e) == event_digest(e._replace(message_id="m2")), event_digest(e) == event_digest(e._replace(user_id="u2"))
    (True, False)
    """
    body = orjson.dumps((event.user_id, event.anonymous_id, event.previous_id))
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big", signed=True)


def erased_digest(salt: str, id_: str) -> str:
    """The keyed hash an erased ID is remembered by (HMAC-SHA-256 under the graph's salt).

    >>> erased_digest("salt", "jen@email.com") == erased_digest("salt", "jen@email.com") != erased_digest("pepper", "jen@email.com")
    True
    """
    return hmac.new(salt.encode(), id_.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def plan_event(
    event: Event, rules: MergeRules, origin: Any = None, erased: frozenset[str] = frozenset(),
    digest: int | None = None,
) -> Plan:
    """What ``event`` asserts under ``rules``; no IDs at all when every one is blocked (rule 2).

    ``erased``: IDs deleted from the graph, dropped as if they were blocked values.
    ``digest``: the event's :func:`event_digest`, when the caller has it already.
    """
    if digest is None:
        digest = event_digest(event)
    # Written out for speed (an import plans every event with a userId): MergeRules.is_blocked
    # inlined, and the named tuples built with tuple.__new__.
    blocked = rules.blocked_values
    _, mid, time, user, anon, prev = event
    if user is not None and (not user.strip() or user.casefold() in blocked or user in erased):
        user = None
    if anon is not None and (not anon.strip() or anon.casefold() in blocked or anon in erased):
        anon = None
    if prev is not None and (not prev.strip() or prev.casefold() in blocked or prev in erased):
        prev = None
    if prev is None:
        if anon is None:
            ids: tuple[str, ...] = () if user is None else (user,)
        else:
            ids = (anon,) if user is None or user == anon else (anon, user)
    else:
        ids = tuple(dict.fromkeys(v for v in (prev, anon, user) if v is not None))
    if not ids:
        return _new(Plan, (event, (), None, (), digest, origin))
    # Rule 4: an alias's explicit link first (seq 0), then any implicit link (seq 1).
    # A link from an ID to itself says nothing and is not kept.
    links: tuple[Link, ...] = ()
    if user is not None:
        if prev is not None and prev != user:
            links = (_new(Link, (prev, user, "alias", mid, time, 0)),)
        if anon is not None and anon != user:
            links += (_new(Link, (anon, user, "implicit", mid, time, 1)),)
    return _new(Plan, (event, ids, user, links, digest, origin))


_new = tuple.__new__


@dataclass
class BatchCounts:
    """What a batch did beyond its per-event results: IDs created, profiles written, and
    the events that re-used an earlier event's messageId with other content."""

    new_ids: int = 0
    touched: set[int] = field(default_factory=set)
    absorbed: set[int] = field(default_factory=set)
    conflicting: list[Plan] = field(default_factory=list)
    #: Indices, in the ``repeats`` given to :func:`apply_plans`, of those that conflict.
    repeat_conflicts: set[int] = field(default_factory=set)


def apply_plans(
    tx: WriteTx,
    rules: MergeRules,
    cache: StateCache,
    plans: list[Plan],
    repeats: Sequence[Plan] = (),
    counts: BatchCounts | None = None,
    counts_only: bool = False,
) -> list[IngestResult] | IngestSummary:
    """Apply ``plans`` (distinct messageIds) in one transaction; one result per plan, in order.

    ``repeats``: the batch's later events with the messageId of one of ``plans``; each is
    a duplicate, or a conflict when its content differs from the event that holds the
    messageId (the stored one, else its first in the batch).
    ``counts``, if given, is filled in (reset first: a retried transaction starts over).
    ``counts_only``: return the results counted into an :class:`IngestSummary` instead of
    one object per event (bulk paths need the counts only, and building the objects costs
    more than counting). The caller folds it in after the commit, so a retried
    transaction never counts twice.
    """
    counts = _begin(tx, cache, counts)
    suppressed = tx.suppressed()
    if suppressed:
        plans = _without_erased(plans, rules, tx.salt(), suppressed)
    earlier = tx.claim_message_ids([(p.event.message_id, p.event.time, p.event.type, p.digest,
                                     register_key(p.event.message_id)) for p in plans])
    return _apply_claimed(tx, rules, cache, plans, repeats, counts, counts_only, earlier, {})


def apply_chunk(
    tx: WriteTx, rules: MergeRules, cache: StateCache, chunk: "Chunk", counts: BatchCounts | None = None
) -> IngestSummary:
    """Apply an import's :class:`~identity_graph.chunk.Chunk` in one transaction; its counts.

    The same rules as :func:`apply_plans` on the chunk's events, which it falls back to
    whenever the short cut does not hold. The short cut: an event without a (non-blocked)
    userId links nothing and marks nothing known; it changes nothing but its IDs' existence
    and first-seen times, so those events reach the rules only as the chunk's ``lone`` map
    (ID -> earliest time), and their messageIds only as register rows. That holds while
    every one of them is new to the register or a plain re-send (see
    :meth:`~identity_graph.chunk.Chunk.resent_others`; a conflicting one must take no part)
    and no ID was ever erased (each event is then checked against the erased list).
    """
    repeats = chunk.repeat_plans(rules) if chunk.repeats else []
    if tx.suppressed():
        return apply_plans(tx, rules, cache, chunk.all_plans(rules), repeats, counts, counts_only=True)  # type: ignore[return-value]
    counts = _begin(tx, cache, counts, warm=True)  # an import: may read a known graph whole
    earlier = tx.claim_message_ids(chunk.register)
    resent = chunk.resent_others(earlier) if earlier else set()
    short_cut = resent is not None
    blocked = len(resent.intersection(chunk.blocked)) if resent else 0
    resent_lone = len(resent) - blocked if resent else 0  # re-sent others that have IDs
    if short_cut:
        # When every one of the others is a plain re-send, their IDs exist, seen first no
        # later (see resent_others): the lone map would change nothing, and leaving it out
        # spares looking its IDs up. A chunk imported again (a re-run) takes this way.
        plans, lone = chunk.plans(rules), ({} if resent_lone == chunk.lone_events else chunk.lone)
    else:
        plans, lone = chunk.all_plans(rules), {}
    summary = _apply_claimed(tx, rules, cache, plans, repeats, counts, True, earlier, lone,
                             list(chunk.held.values()), in_order=short_cut)
    if resent is not None:
        summary.applied += chunk.lone_events - resent_lone
        summary.blocked += chunk.blocked_events - blocked
        summary.duplicates += len(resent)
    return summary  # type: ignore[return-value]


def _begin(tx: WriteTx, cache: StateCache, counts: BatchCounts | None, warm: bool = False) -> BatchCounts:
    counts = counts if counts is not None else BatchCounts()
    counts.new_ids, counts.touched, counts.absorbed, counts.conflicting = 0, set(), set(), []
    counts.repeat_conflicts = set()
    cache.begin(tx, warm)
    return counts


def _apply_claimed(
    tx: WriteTx,
    rules: MergeRules,
    cache: StateCache,
    plans: list[Plan],
    repeats: Sequence[Plan],
    counts: BatchCounts,
    counts_only: bool,
    earlier: dict[str, tuple[Any, ...]],
    lone: dict[str, int],
    register: list[tuple[str, int, str, int, int]] | None = None,
    in_order: bool = False,
) -> list[IngestResult] | IngestSummary:
    """The rest of :func:`apply_plans` once the plans' messageIds are registered:
    ``earlier`` holds the ones registered before (not applied again). ``register``: the
    register rows of (at least) the first events of the ``repeats``' messageIds, when
    their plans are not all in ``plans`` (a chunk's). ``in_order``: ``plans`` are already
    in event-time order (a chunk's planned events are sorted where they were parsed)."""
    tx.count_duplicates(len(repeats) + len(earlier))
    conflicts = {
        p.event.message_id for p in plans
        if p.event.message_id in earlier and not same_event(earlier[p.event.message_id], _row(p))
    } if earlier else set()
    counts.conflicting = [p for p in plans if p.event.message_id in conflicts]
    if repeats:
        # The event holding each messageId: the stored one, else the batch's first (which
        # a chunk names by its register row even when its plan is packed away).
        holder = (
            {r[0]: r[1:4] for r in register} if register is not None
            else {p.event.message_id: _row(p) for p in plans}
        )
        holder.update(earlier)
        counts.repeat_conflicts = {
            i for i, r in enumerate(repeats) if not same_event(holder[r.event.message_id], _row(r))
        }
        counts.conflicting += [repeats[i] for i in sorted(counts.repeat_conflicts)]
    # A blocked event changes nothing, but its messageId is claimed all the same: the
    # first event with a messageId wins, however the events were batched (rule 9).
    fresh = [p for p in plans if p.ids and p.event.message_id not in earlier]
    if not in_order:
        fresh.sort(key=_event_key)
    outcomes: dict[tuple[str, int], tuple[Outcome, str | None]] = {}
    replayed: set[str] = set()
    if fresh or lone:
        writer = _BatchWriter(tx, rules, cache, fresh, counts, lone)
        writer.run()
        outcomes, replayed = writer.outcomes, writer.replayed_messages
    cache.commit(tx)
    if counts_only:
        summary = _tally(plans, earlier, conflicts, outcomes, replayed)
        summary.conflicts += len(counts.repeat_conflicts)
        summary.duplicates += len(repeats) - len(counts.repeat_conflicts)
        return summary
    results = []
    for p in plans:
        mid = p.event.message_id
        if mid in earlier:
            results.append(IngestResult(mid, "conflict" if mid in conflicts else "duplicate"))
            continue
        if not p.ids:
            results.append(IngestResult(mid, "blocked"))
            continue
        links = tuple(LinkResult(l.source, l.target, l.kind, *outcomes[(mid, l.seq)]) for l in p.links)
        results.append(IngestResult(mid, "applied", links, mid in replayed))
    return results


def _event_key(plan: Plan) -> tuple[int, str]:
    return plan.event.key


def _row(plan: Plan) -> tuple[int, str, int]:
    """(time, type, digest): the plan as the messageId register holds an event."""
    return (plan.event.time, plan.event.type, plan.digest)


def _without_erased(plans: list[Plan], rules: MergeRules, salt: str, suppressed: set[str]) -> list[Plan]:
    """The plans again, with IDs erased from the graph dropped as if blocked: re-sending
    an old event never brings an erased ID back."""
    out = []
    for p in plans:
        e = p.event
        erased = frozenset(
            v for v in (e.user_id, e.anonymous_id, e.previous_id)
            if v is not None and erased_digest(salt, v) in suppressed
        )
        out.append(plan_event(e, rules, p.origin, erased) if erased else p)
    return out


def assign_profiles(
    tx: WriteTx, resolver: Resolver, stored: Mapping[str, StoredId]
) -> list[tuple[int, list[str], ProfileState]]:
    """Number the profiles of a rebuilt cluster: (profile_id, IDs, state) for each.

    Each profile keeps the stored number most of its IDs already carry (largest profiles
    choose first), so only the IDs that really moved are rewritten; a profile made only
    of new IDs, or whose numbers were all taken, gets a new number.
    """
    groups = sorted(resolver.groups().items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
    taken: set[int] = set()
    out = []
    for root, group in groups:
        votes = Counter(stored[i].profile_id for i in group if i in stored)
        pid = next((p for p, _ in votes.most_common() if p not in taken), None)
        if pid is None:
            pid = tx.new_profile_id()
        taken.add(pid)
        out.append((pid, group, resolver.state(root)))
    return out


def _tally(
    plans: list[Plan],
    earlier: dict[str, tuple[Any, ...]],
    conflicts: set[str],
    outcomes: dict[tuple[str, int], tuple[Outcome, str | None]],
    replayed: set[str],
) -> IngestSummary:
    summary = IngestSummary()
    for p in plans:
        mid = p.event.message_id
        if mid in earlier:
            if mid in conflicts:
                summary.conflicts += 1
            else:
                summary.duplicates += 1
        elif not p.ids:
            summary.blocked += 1
    summary.applied = len(plans) - summary.conflicts - summary.duplicates - summary.blocked
    # ``outcomes`` holds exactly the links of the applied plans: counted by value, in C.
    for (outcome, reason), n in Counter(outcomes.values()).items():
        if outcome == MERGED:
            summary.links_merged += n
        elif outcome == TOGETHER:
            summary.links_together += n
        else:
            summary.links_refused[reason] += n
    summary.replayed_events += len(replayed)
    return summary


class _BatchWriter:
    """Applies one batch of fresh, time-sorted plans inside a write transaction.

    Every write goes to the transaction and, mirrored, to the process's cache.
    """

    def __init__(
        self, tx: WriteTx, rules: MergeRules, cache: StateCache, plans: list[Plan], counts: BatchCounts,
        lone: Mapping[str, int] | None = None,
    ) -> None:
        self.tx = tx
        self.counts = counts
        self.rules = rules
        self.cache = cache
        self.plans = plans
        self.outcomes: dict[tuple[str, int], tuple[Outcome, str | None]] = {}
        self.replayed_messages: set[str] = set()
        self.first_time: dict[str, int] = {}
        for p in plans:
            for i in p.ids:
                if i not in self.first_time:  # plans are time-sorted: the first is the earliest
                    self.first_time[i] = p.event.time
        # IDs of events that only say "this ID exists" (see apply_chunk): the ones no
        # plan mentions become profiles of their own; all count for first-seen times.
        self.lone = [i for i in lone if i not in self.first_time] if lone else []
        if lone:
            first = self.first_time
            for i, t in lone.items():
                if t < first.get(i, t + 1):
                    first[i] = t
        self.stored: dict[str, StoredId] = {}
        self._load(self.first_time, may_fill=True)
        self.id_inserts: list[tuple[Any, ...]] = []
        self.id_updates: dict[str, dict[str, Any]] = {}

    def _load(self, ids: Iterable[str], may_fill: bool = False) -> None:
        """Fill ``stored`` for ``ids``: from the cache, else from the database. ``may_fill``:
        the cache may read the graph whole instead (only before this batch has written:
        a scan later would overwrite the cache's mirror of writes not yet flushed)."""
        misses = self._from_cache(ids)
        if misses and may_fill and self.cache.fill(self.tx, len(misses)):
            misses = self._from_cache(misses)  # none: the cache is complete now
        if misses:
            for i, row in self.tx.load_ids(misses).items():
                self.stored[i] = row
                self.cache.put(row)

    def _from_cache(self, ids: Iterable[str]) -> list[str]:
        """Fill ``stored`` for those of ``ids`` the cache holds; the others, unless the
        cache is complete (then they are not stored either)."""
        misses = []
        get = self.cache.get
        for i in ids:
            row = get(i)
            if row is not None:
                self.stored[i] = row
            elif not self.cache.complete:
                misses.append(i)
        return misses

    # A user ID's known-mark matters only when it is the earliest event carrying it.
    def _marks_known(self, plan: Plan, known_at: Mapping[str, Key]) -> bool:
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
        self._add_lone()
        self._write_common()

    def _add_lone(self) -> None:
        """Each lone ID not stored yet becomes its own profile (rule 7), as a plan would make it."""
        rows = []
        for i in self.lone:
            if i not in self.stored:
                pid = self.tx.new_profile_id()
                state = ProfileState(i)
                rows.append(profile_row(pid, state))
                self.cache.put_profile(pid, state.canonical, state.size, state.known, state.last)
                self._insert_id(i, pid, None)
                self.counts.touched.add(pid)
        self.tx.insert_profiles(rows)

    def _late_cluster(self, known_at: Mapping[str, Key]) -> set[str]:
        seeds: set[str] = set()
        latest = max((s.last for s in self.stored.values()), default=NO_KEY)
        for p in self.plans:
            key = p.event.key
            if key > latest:
                break  # plans are sorted: no later one can be older than a stored profile
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

    def _append(self, plans: list[Plan], known_at: dict[str, Key]) -> None:
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
        new_profiles: list[tuple[Any, ...]] = []
        changed_profiles: list[tuple[Any, ...]] = []
        for root, group in resolver.groups().items():
            state = resolver.state(root)
            origins = {self.stored[i].profile_id: self.stored[i] for i in group if i in self.stored}
            if origins:
                # Union by size: the largest stored profile keeps its number; the others'
                # IDs are relabelled, so each ID moves only into a profile at least twice
                # its old one's size.
                survivor = max(origins, key=lambda pid: (origins[pid].size, -pid))
                moves.extend((pid, survivor) for pid in origins if pid != survivor)
                old = origins[survivor]
                if (state.canonical, state.size, state.known, state.last) != (
                    old.canonical, old.size, old.profile_known, old.last
                ):
                    changed_profiles.append(profile_row(survivor, state))
                    self.counts.touched.add(survivor)
            else:
                survivor = self.tx.new_profile_id()
                new_profiles.append(profile_row(survivor, state))
                self.counts.touched.add(survivor)
            self.cache.put_profile(survivor, state.canonical, state.size, state.known, state.last)
            for i in group:
                if i not in self.stored:
                    self._insert_id(i, survivor, known_changes.get(i))
        for i, key in known_changes.items():
            if i in self.stored:
                self._update_id(i, known=key)
        self.tx.relabel(moves)
        self.tx.delete_profiles([old for old, _ in moves])
        for old, new in moves:
            self.cache.move(old, new)
            self.counts.absorbed.add(old)
        self.tx.update_profiles(changed_profiles)
        self.tx.insert_profiles(new_profiles)

    def _replay(self, plans: list[Plan], cluster: set[str]) -> None:
        """Rebuild the cluster from its stored links plus the batch's, in event-time order."""
        self.replayed_messages.update(p.event.message_id for p in plans)
        self._load(i for i in cluster if i not in self.stored)
        # Links an unmerge took out take no part in any replay.
        stored_links = [
            s for s in self.tx.links_touching(i for i in cluster if i in self.stored) if s.outcome != UNMERGED
        ]
        known_at = {i: self.stored[i].known for i in cluster if i in self.stored and self.stored[i].known}
        known_changes: dict[str, Key] = {}
        for p in plans:
            if self._marks_known(p, known_at):
                known_at[p.user] = known_changes[p.user] = p.event.key  # type: ignore[index]
        batch_links = [l for p in plans for l in p.links]
        links = [Link(s.source, s.target, s.kind, s.message_id, s.time, s.seq) for s in stored_links]  # type: ignore[arg-type]
        resolver, outcomes = replay(self.rules, sorted(cluster), known_at, links + batch_links)

        self.tx.update_link_outcomes([
            (o, r, s.time, s.message_id, s.seq)
            for s, (o, r) in zip(stored_links, outcomes) if (s.outcome, s.reason) != (o, r)
        ])
        for link, outcome in zip(batch_links, outcomes[len(links):]):
            self.outcomes[(link.message_id, link.seq)] = outcome

        old_pids = {self.stored[i].profile_id for i in cluster if i in self.stored}
        taken: set[int] = set()
        rows = []
        for pid, group, state in assign_profiles(self.tx, resolver, self.stored):
            taken.add(pid)
            rows.append(profile_row(pid, state))
            for i in group:
                s = self.stored.get(i)
                if s is None:
                    self._insert_id(i, pid, known_changes.get(i))
                elif s.profile_id != pid:
                    self._update_id(i, profile_id=pid)
        for i, key in known_changes.items():
            if i in self.stored:
                self._update_id(i, known=key)
        self.tx.delete_profiles(sorted(old_pids))
        self.tx.insert_profiles(rows)
        for pid in old_pids:
            self.cache.drop_profile(pid)
        for row in rows:
            self.cache.put_profile(row[0], row[1], row[2], row[3], _row_last(row))
        self.counts.touched.update(taken)
        self.counts.absorbed.update(old_pids - taken)

    def _insert_id(self, id_: str, pid: int, known: Key | None) -> None:
        first = self.first_time[id_]
        self.id_inserts.append((id_, pid, known[0] if known else None, known[1] if known else None, first))
        self.cache.put_id(id_, pid, known, first)

    def _update_id(self, id_: str, **fields: Any) -> None:
        self.id_updates.setdefault(id_, {}).update(fields)
        self.cache.set_id(id_, **fields)

    def _write_common(self) -> None:
        tx = self.tx
        for i, s in self.stored.items():
            first = self.first_time.get(i)
            if first is not None and first < s.first_time:
                self._update_id(i, first_time=first)
        tx.insert_ids(self.id_inserts)
        self.counts.new_ids += len(self.id_inserts)
        # Group updates by the set of fields they change: one executemany per shape.
        by_shape: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for i, fields in self.id_updates.items():
            shape = tuple(sorted(fields))
            values: list[Any] = []
            for f in shape:
                values.extend(fields[f] if f == "known" else (fields[f],))
            by_shape.setdefault(shape, []).append((*values, i))
        for shape, rows in by_shape.items():
            columns = tuple(c for f in shape for c in (("known_time", "known_msg") if f == "known" else (f,)))
            tx.set_id_fields(columns, rows)
        tx.insert_links([
            (l.message_id, l.seq, l.source, l.target, l.kind, p.event.type, l.time,
             *self.outcomes[(l.message_id, l.seq)])
            for p in self.plans for l in p.links
        ])


def profile_row(pid: int, state: ProfileState) -> tuple[Any, ...]:
    """(profile_id, canonical, size, known, last_time, last_msg) as the store takes it."""
    untouched = state.last == NO_KEY
    return (
        pid, state.canonical, state.size, state.known,
        None if untouched else state.last[0], None if untouched else state.last[1],
    )


def _row_last(row: tuple[Any, ...]) -> Key:
    return NO_KEY if row[4] is None else (row[4], row[5])
