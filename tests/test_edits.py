"""Unmerge, delete, as-of, explain and history against the plain reference of test_oracle.

Every check compares the engine with :func:`test_oracle.reference` run on the same
events: without the unmerged events' links, without the erased IDs, or only up to a
time. Histories are random (seeded), small and collision-heavy, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from identity_graph import IdentityGraph, IdentityGraphError, MergeRules, NotSameProfile, Profile, UnknownEvent, UnknownId
from test_oracle import BASE, ev, identify, ref_instant, reference

SEEDS = [1, 2, 3]
RULES = MergeRules(max_profile_ids=6)
CAP = 6


def history(seed: int, n: int = 90) -> list[dict[str, Any]]:
    """Random identify / alias / track / page events over small pools of IDs."""
    rng = random.Random(seed)
    users = [f"user-{i}" for i in range(7)]
    anons = [f"anon-{i}" for i in range(12)]
    emails = [f"mail-{i}@x.io" for i in range(4)]
    events = []
    for k in range(n):
        mid, t = f"m{k:03d}", rng.randrange(0, 2000)
        r = rng.random()
        if r < 0.45:
            events.append(identify(mid, t, user=rng.choice(users), anon=rng.choice(anons)))
        elif r < 0.65:
            events.append(ev("alias", mid, t, previousId=rng.choice(emails + anons + users), userId=rng.choice(users)))
        elif r < 0.85:
            events.append(ev("track", mid, t, anonymousId=rng.choice(anons)))
        else:
            events.append(ev("page", mid, t, anonymousId=rng.choice(anons), userId=rng.choice(users + emails)))
    return events


def loaded(url: str, events: list[dict[str, Any]], seed: int) -> IdentityGraph:
    g = IdentityGraph(url, rules=RULES)
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)
    g.ingest_many(shuffled, batch_size=17)
    return g


def outcomes(g: IdentityGraph) -> dict[tuple[str, str, str], str]:
    """(messageId, source, target) -> outcome of every stored link an unmerge left in."""
    names = {"refused": {"known_id": "refused: known ID", "size_cap": "refused: size cap"}}
    return {
        (l.message_id, l.source, l.target): names.get(l.outcome, {}).get(l.reason, l.outcome)  # type: ignore[arg-type]
        for l in g._store.all_links() if l.outcome != "unmerged"
    }


def ref_outcomes(events: list[dict[str, Any]], **kw: Any) -> dict[tuple[str, str, str], str]:
    trace: list[tuple[str, ...]] = []
    reference(events, CAP, trace, **kw)
    return {(m, s, t): o for m, _, s, t, o in trace}


def linking(events: list[dict[str, Any]]) -> list[str]:
    return [m for (m, _, _), _ in ref_outcomes(events).items()]


@pytest.mark.parametrize("seed", SEEDS)
def test_unmerge_equals_the_reference_without_those_links(graph_url: str, seed: int) -> None:
    events = history(seed)
    rng = random.Random(seed)
    chosen = rng.sample(sorted(set(linking(events))), 4)
    with loaded(graph_url, events, seed) as g:
        excluded: set[str] = set()
        for mid in chosen:
            before = dict(g.identities())
            dry = g.unmerge(mid, dry_run=True)
            assert dict(g.identities()) == before, "a dry run writes nothing"
            real = g.unmerge(mid)
            assert (dry.before, dry.after, dry.links) == (real.before, real.after, real.links)
            assert all(l.outcome == "unmerged" and l.message_id == mid for l in real.links)
            excluded.add(mid)
            assert_consistent(g)
            assert dict(g.identities()) == reference(events, CAP, excluded=frozenset(excluded)), mid
            assert outcomes(g) == ref_outcomes(events, excluded=frozenset(excluded))
            # The result lists exactly the profiles that changed.
            now = {Profile(g.resolve(i), frozenset(g.profile(i).ids)) for p in real.after for i in p.ids}
            assert now == set(real.after)

        # The exclusion is stored: the whole history again changes nothing.
        g.ingest_many(events, batch_size=25)
        assert dict(g.identities()) == reference(events, CAP, excluded=frozenset(excluded))

        for mid in chosen[:2]:
            restored = g.unmerge(mid, undo=True)
            assert all(l.outcome != "unmerged" for l in restored.links)
            excluded.discard(mid)
            assert_consistent(g)
            assert dict(g.identities()) == reference(events, CAP, excluded=frozenset(excluded))
            assert outcomes(g) == ref_outcomes(events, excluded=frozenset(excluded))


def test_unmerge_then_a_late_event_replays_without_the_excluded_links(graph_url: str) -> None:
    events = history(11)
    mid = sorted(set(linking(events)))[3]
    late = [identify("late-1", 5, user="user-1", anon="anon-3"), ev("alias", "late-2", 1, previousId="anon-4",
                                                                     userId="user-2")]
    with loaded(graph_url, events, 11) as g:
        g.unmerge(mid)
        for e in late:
            g.ingest(e)
        assert dict(g.identities()) == reference(events + late, CAP, excluded=frozenset({mid}))
        assert outcomes(g) == ref_outcomes(events + late, excluded=frozenset({mid}))


def test_unmerge_errors_name_the_problem(graph: IdentityGraph) -> None:
    graph.ingest(identify("m1", 1, user="u1", anon="a1"))
    graph.ingest(ev("track", "m2", 2, anonymousId="a1"))
    with pytest.raises(UnknownEvent, match="no event with messageId 'nope' in this graph"):
        graph.unmerge("nope")
    with pytest.raises(IdentityGraphError, match="event 'm2' linked no IDs: there is nothing to unmerge"):
        graph.unmerge("m2")
    with pytest.raises(IdentityGraphError, match="event 'm1' is not unmerged: there is nothing to undo"):
        graph.unmerge("m1", undo=True)
    graph.unmerge("m1")
    with pytest.raises(IdentityGraphError, match=r"event 'm1' is already unmerged \(undo restores it\)"):
        graph.unmerge("m1")
    assert graph.resolve("u1") == "u1" and graph.resolve("a1") == "a1"


def assert_consistent(g: IdentityGraph) -> None:
    """Every ID in exactly one existing profile; every profile's size and canonical right."""
    engine = create_engine(g.url)
    with engine.connect() as conn:
        bad = conn.execute(text(
            "SELECT p.profile_id FROM ig_profiles p LEFT JOIN ig_ids i ON i.profile_id = p.profile_id"
            " GROUP BY p.profile_id, p.size, p.canonical"
            " HAVING COUNT(i.id) <> p.size OR SUM(CASE WHEN i.id = p.canonical THEN 1 ELSE 0 END) <> 1"
        )).all()
        orphans = conn.execute(text(
            "SELECT i.id FROM ig_ids i LEFT JOIN ig_profiles p ON p.profile_id = i.profile_id"
            " WHERE p.profile_id IS NULL"
        )).all()
    engine.dispose()
    assert (bad, orphans) == ([], [])


def _cells(url: str) -> set[str]:
    """Every text value stored in the graph's tables."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    found: set[str] = set()
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            if table.startswith("ig_"):
                for row in conn.execute(text(f"SELECT * FROM {table}")):
                    found.update(str(v) for v in row if v is not None)
    engine.dispose()
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_delete_equals_the_reference_without_that_id(graph_url: str, seed: int) -> None:
    events = history(seed)
    rng = random.Random(seed)
    targets = [rng.choice([i for i in reference(events, CAP) if i.startswith(p)]) for p in ("user-", "anon-", "mail-")]
    with loaded(graph_url, events, seed) as g:
        erased: set[str] = set()
        for id_ in targets:
            before = dict(g.identities())
            dry = g.delete(id_, dry_run=True)
            assert dict(g.identities()) == before, "a dry run writes nothing"
            real = g.delete(id_)
            assert (dry.before, dry.after) == (real.before, real.after)
            assert all(id_ in (l.source, l.target) for l in real.links)
            erased.add(id_)
            assert_consistent(g)
            assert g.resolve(id_) is None and g.profile(id_) is None
            assert dict(g.identities()) == reference(events, CAP, erased=frozenset(erased)), id_
            assert outcomes(g) == ref_outcomes(events, erased=frozenset(erased))
        with pytest.raises(IdentityGraphError, match="is already erased"):
            g.delete(targets[0])

        # Re-importing the old events, and new ones naming the ID, never bring it back.
        more = [identify("new-1", 3000, user=targets[0], anon="anon-1"),
                ev("alias", "new-2", 3001, previousId=targets[1], userId="user-3")]
        g.ingest_many(events + more, batch_size=30)
        assert dict(g.identities()) == reference(events + more, CAP, erased=frozenset(erased))
        assert all(g.resolve(i) is None for i in erased)
        url = g.url
    assert not (_cells(url) & erased), "the graph keeps no copy of an erased ID"


def test_delete_an_unknown_id_is_an_error(graph: IdentityGraph) -> None:
    with pytest.raises(UnknownId, match="unknown ID 'ghost'"):
        graph.delete("ghost")


def _until(events: list[dict[str, Any]], when: datetime) -> list[dict[str, Any]]:
    """The events with a time at or before ``when``."""
    def instant(e: dict[str, Any]) -> datetime:
        second, fraction = ref_instant(e)
        return second + timedelta(microseconds=int(fraction * 1_000_000))

    return [e for e in events if instant(e) <= when]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_as_of_equals_the_reference_built_from_the_events_up_to_then(graph_url: str, seed: int) -> None:
    events = history(seed)
    rng = random.Random(seed)
    mid = rng.choice(sorted(set(linking(events))))
    with loaded(graph_url, events, seed) as g:
        g.unmerge(mid)  # as-of shows the corrected past
        times = [BASE + timedelta(seconds=s) for s in (-1, 0, 250, 700, 1200, 1999, 5000)]
        times.append(ref_instant(rng.choice(events))[0])  # exactly an event's time: it counts
        for when in times:
            expected = reference(_until(events, when), CAP, excluded=frozenset({mid}))
            members: dict[str, set[str]] = {}
            for i, c in expected.items():
                members.setdefault(c, set()).add(i)
            for id_ in sorted(reference(events, CAP)):
                got = g.profile(id_, as_of=when)
                if id_ not in expected:
                    assert got is None and g.resolve(id_, as_of=when) is None, (id_, when)
                else:
                    c = expected[id_]
                    assert got == Profile(c, frozenset(members[c])), (id_, when)
                    assert g.resolve(id_, as_of=when) == c


def _bfs_length(edges: list[tuple[str, str]], a: str, b: str) -> int | None:
    near: dict[str, set[str]] = {}
    for s, t in edges:
        near.setdefault(s, set()).add(t)
        near.setdefault(t, set()).add(s)
    dist = {a: 0}
    todo = deque([a])
    while todo:
        x = todo.popleft()
        for y in near.get(x, ()):
            if y not in dist:
                dist[y] = dist[x] + 1
                todo.append(y)
    return dist.get(b)


@pytest.mark.parametrize("seed", SEEDS)
def test_explain_gives_a_valid_shortest_chain_of_merges(graph_url: str, seed: int) -> None:
    events = history(seed)
    ref = ref_outcomes(events)
    merged = [(s, t) for (m, s, t), o in ref.items() if o == "merged"]
    expected = reference(events, CAP)
    rng = random.Random(seed)
    ids = sorted(expected)
    with loaded(graph_url, events, seed) as g:
        for _ in range(40):
            a, b = rng.choice(ids), rng.choice(ids)
            if expected[a] != expected[b]:
                with pytest.raises(NotSameProfile) as info:
                    g.explain(a, b)
                message = str(info.value)
                assert message.startswith(f"{a!r} and {b!r} are different people: profiles "
                                          f"{expected[a]!r} and {expected[b]!r}; ")
                refused = {m for (m, s, t), o in ref.items() if o.startswith("refused")
                           and {expected[s], expected[t]} == {expected[a], expected[b]}}
                if refused:
                    assert any(f"of event {m!r}" in message for m in refused), message
                else:
                    assert message.endswith("; no link joins them")
                continue
            path = g.explain(a, b)
            assert len(path) == _bfs_length(merged, a, b)
            if a == b:
                assert path == []
                continue
            assert path[0].source == a and path[-1].target == b
            assert all(x.target == y.source for x, y in zip(path, path[1:]))
            for link in path:
                stored = (link.target, link.source) if link.reversed else (link.source, link.target)
                assert ref[(link.message_id, *stored)] == "merged"
                assert link.outcome == "merged"


def test_explain_an_unknown_id_is_an_error(graph: IdentityGraph) -> None:
    graph.ingest(identify("m1", 1, user="u1", anon="a1"))
    with pytest.raises(UnknownId, match="unknown ID 'zz'"):
        graph.explain("a1", "zz")


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_history_lists_every_merge_and_refusal_of_the_profile_in_order(graph_url: str, seed: int) -> None:
    events = history(seed)
    trace: list[tuple[str, ...]] = []
    expected = reference(events, CAP, trace)
    with loaded(graph_url, events, seed) as g:
        for canonical in sorted(set(expected.values()))[:8]:
            members = {i for i, c in expected.items() if c == canonical}
            want = [(m, s, t, o) for m, _, s, t, o in trace
                    if o != "together" and (s in members or t in members)]
            got = g.history(canonical)
            names = {"known_id": "refused: known ID", "size_cap": "refused: size cap"}
            assert [(l.message_id, l.source, l.target, names.get(l.reason, l.outcome)) for l in got] == want
            assert [l.timestamp for l in got] == sorted(l.timestamp for l in got)
