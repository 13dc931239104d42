"""Corrections to history: take one event's links out (unmerge) or put them back, and erase
an ID as if it had never been sent.

Both run inside the writer lock (:meth:`identity_graph.store.Store.run_write`) and end the
same way: the *cluster* the edit touches (everything joined to it by profile membership
or by any stored link) is rebuilt from its remaining stored links in event-time order,
under the rules, exactly as a late event would rebuild it. Nothing outside the cluster is
read or written, so an edit costs the size of one cluster, not of the graph.
"""

from __future__ import annotations

import time as _time
from typing import Iterable

from .analysis import to_link
from .batch import profile_row, assign_profiles, erased_digest
from .errors import IdentityGraphError, UnknownEvent
from .resolver import Link as RuleLink, replay
from .results import EditResult, Profile
from .rules import UNMERGED, REFUSED, MergeRules
from .rows import StoredId
from .store import WriteTx


class DryRun(Exception):
    """Raised inside the write transaction to roll a dry run back; carries its result."""

    def __init__(self, result: EditResult) -> None:
        super().__init__("dry run")
        self.result = result


def unmerge(tx: WriteTx, rules: MergeRules, message_id: str, *, undo: bool = False, dry_run: bool = False) -> EditResult:
    """Exclude the links of event ``message_id`` (or, ``undo``, restore them) and rebuild."""
    time = tx.event_time(message_id)
    if time is None:
        raise UnknownEvent(f"no event with messageId {message_id!r} in this graph")
    links = tx.links_of_message(message_id, time)
    if not links:
        raise IdentityGraphError(f"event {message_id!r} linked no IDs: there is nothing to unmerge")
    unmerged = all(l.outcome == UNMERGED for l in links)
    if undo and not unmerged:
        raise IdentityGraphError(f"event {message_id!r} is not unmerged: there is nothing to undo")
    if not undo and unmerged:
        raise IdentityGraphError(f"event {message_id!r} is already unmerged (undo restores it)")
    cluster = tx.cluster({i for l in links for i in (l.source, l.target)})
    old = tx.load_ids(cluster)
    # Restored links get a placeholder outcome; the rebuild decides their real one.
    tx.set_link_outcome(message_id, time, REFUSED if undo else UNMERGED, None)
    after = _rebuild(tx, rules, old)
    changed = tuple(to_link(l) for l in tx.links_of_message(message_id, time))
    return _finish(EditResult(dry_run, changed, *_changes(old, after)))


def delete(tx: WriteTx, rules: MergeRules, id_: str, *, dry_run: bool = False) -> EditResult:
    """Erase ``id_``: its row and every link touching it go, a keyed hash of it stays so
    re-sent events drop it as if blocked, and its cluster is rebuilt without it."""
    salt = tx.salt()
    digest = erased_digest(salt, id_)
    if tx.is_suppressed(digest):
        raise IdentityGraphError(f"{id_!r} is already erased")
    tx.stored_id(id_)  # UnknownId before any other work
    old = tx.load_ids(tx.cluster([id_]))
    removed = tuple(to_link(l) for l in tx.links_of([id_]))
    tx.erase_id(id_)
    tx.suppress(digest, int(_time.time() * 1_000_000))
    # The erased ID's profile goes too, even when the ID was alone in it.
    after = _rebuild(tx, rules, {i: s for i, s in old.items() if i != id_}, {old[id_].profile_id})
    return _finish(EditResult(dry_run, removed, *_changes(old, after)))


def _finish(result: EditResult) -> EditResult:
    if result.dry_run:
        raise DryRun(result)
    return result


def _rebuild(
    tx: WriteTx, rules: MergeRules, stored: dict[str, StoredId], gone: set[int] = frozenset()  # type: ignore[assignment]
) -> dict[str, tuple[str, frozenset[str]]]:
    """Replay a closed cluster from its remaining stored links; write what changed.

    ``gone``: more profile numbers to delete (the profiles of erased IDs). Returns, for
    each ID, its new (canonical, members).
    """
    links = [l for l in tx.links_touching(stored) if l.outcome != UNMERGED]
    known_at = {i: s.known for i, s in stored.items() if s.known is not None}
    rule_links = [RuleLink(l.source, l.target, l.kind, l.message_id, l.time, l.seq) for l in links]  # type: ignore[arg-type]
    resolver, outcomes = replay(rules, sorted(stored), known_at, rule_links)
    tx.update_link_outcomes([
        (o, r, l.time, l.message_id, l.seq) for l, (o, r) in zip(links, outcomes) if (l.outcome, l.reason) != (o, r)
    ])
    rows, moves, after = [], [], {}
    for pid, group, state in assign_profiles(tx, resolver, stored):
        rows.append(profile_row(pid, state))
        members = frozenset(group)
        for i in group:
            after[i] = (state.canonical, members)
            if stored[i].profile_id != pid:
                moves.append((pid, i))
    tx.delete_profiles(sorted({s.profile_id for s in stored.values()} | gone))
    tx.insert_profiles(rows)
    tx.set_id_fields(("profile_id",), moves)
    return after


def _changes(
    old: dict[str, StoredId], after: dict[str, tuple[str, frozenset[str]]]
) -> tuple[tuple[Profile, ...], tuple[Profile, ...]]:
    """The profiles that differ before and after, each side sorted by canonical."""
    groups: dict[int, set[str]] = {}
    for i, s in old.items():
        groups.setdefault(s.profile_id, set()).add(i)
    before = {Profile(old[next(iter(ids))].canonical, frozenset(ids)) for ids in groups.values()}
    now = {Profile(c, m) for c, m in after.values()}
    return _sorted(before - now), _sorted(now - before)


def _sorted(profiles: Iterable[Profile]) -> tuple[Profile, ...]:
    return tuple(sorted(profiles, key=lambda p: (p.canonical, sorted(p.ids))))
