"""What union-find can't answer: why two IDs are one person, a profile's history, the graph
as it stood at a past time, and a profile as a networkx graph to draw or export.

Plain functions over values the store reads (networkx style); no I/O. Each function
takes what it needs and returns plain values, so it can be tested against a reference
built by hand.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import networkx as nx

from .events import time_to_datetime
from .resolver import Key, Link as RuleLink, replay
from .results import Link, Profile
from .rules import UNMERGED, MERGED, REFUSED, TOGETHER, MergeRules
from .rows import StoredId, StoredLink


def to_link(stored: StoredLink, reversed_: bool = False) -> Link:
    """A stored link row as the public :class:`~identity_graph.results.Link`."""
    source, target = (stored.target, stored.source) if reversed_ else (stored.source, stored.target)
    return Link(source, target, stored.kind, stored.outcome, stored.reason, stored.message_id,
                stored.event_type, time_to_datetime(stored.time), reversed_)


def merge_path(links: Iterable[StoredLink], a: str, b: str) -> list[Link] | None:
    """The shortest chain of merged links from ``a`` to ``b``, each oriented along the
    path; None when merged links do not join them.

    A profile's merged links form a tree (each merge joined two profiles), so within one
    profile the path is unique, and breadth-first search finds it.

    >>> rows = [StoredLink("m1", 1, "a1", "u1", "implicit", "identify", 0, "merged", None),
    ...         StoredLink("m2", 0, "e1", "u1", "alias", "alias", 1, "merged", None)]
    >>> [(l.source, l.target, l.reversed) for l in merge_path(rows, "a1", "e1")]
    [('a1', 'u1', False), ('u1', 'e1', True)]

    Notes
    -----
    O(n) in the profile's links.
    """
    graph = nx.Graph()
    graph.add_nodes_from((a, b))
    for link in links:
        if link.outcome == MERGED:
            graph.add_edge(link.source, link.target, link=link)
    try:
        nodes = nx.shortest_path(graph, a, b)
    except nx.NetworkXNoPath:
        return None
    path = []
    for u, v in zip(nodes, nodes[1:]):
        stored: StoredLink = graph.edges[u, v]["link"]
        path.append(to_link(stored, reversed_=stored.source != u))
    return path


def history(links: Iterable[StoredLink]) -> list[Link]:
    """The links that shaped a profile: merges, refusals and unmerged links, in
    event-time order. Links between IDs already together changed nothing and are left out."""
    ordered = sorted(links, key=lambda l: (l.time, l.message_id, l.seq))
    return [to_link(l) for l in ordered if l.outcome != TOGETHER]


def profile_as_of(
    rules: MergeRules,
    stored: Mapping[str, StoredId],
    links: Sequence[StoredLink],
    id_: str,
    time: int,
) -> Profile | None:
    """``id_``'s profile as it stood at event time ``time`` (inclusive), or None when no
    event up to then mentioned it.

    ``stored`` and ``links`` must hold ``id_``'s whole cluster (everything joined to it by
    any link): the profile is rebuilt from the IDs first seen, the known-marks made and
    the links asserted up to ``time``, in event-time order, under ``rules``. Unmerged
    links are left out, erased IDs are gone: the past is the corrected past.
    """
    row = stored.get(id_)
    if row is None or row.first_time > time:
        return None
    ids = sorted(i for i, s in stored.items() if s.first_time <= time)
    known_at: dict[str, Key] = {i: s.known for i, s in stored.items() if s.known is not None and s.known[0] <= time}
    kept = [
        RuleLink(l.source, l.target, l.kind, l.message_id, l.time, l.seq)  # type: ignore[arg-type]
        for l in links if l.time <= time and l.outcome != UNMERGED
    ]
    resolver, _ = replay(rules, ids, known_at, kept)
    root = resolver.find(id_)
    members = frozenset(i for i in ids if resolver.find(i) == root)
    return Profile(resolver.state(id_).canonical, members)


def profile_graph(
    canonical: str,
    members: Mapping[str, bool],
    links: Iterable[StoredLink],
    outside: Mapping[str, tuple[str, bool]],
) -> nx.MultiDiGraph:
    """One profile as a directed multigraph: its IDs and every link touching them.

    ``members``: the profile's IDs -> known (a user ID) or not. IDs outside the profile
    that a link touches (refused or unmerged links lead out) are nodes with
    ``inside=False``; ``outside`` gives their profile's canonical and whether they are known. Edges carry the link's
    kind, outcome, reason, messageId, event type and time (ISO-8601).
    """
    graph = nx.MultiDiGraph(canonical=canonical)
    for id_, known in sorted(members.items()):
        graph.add_node(id_, known=known, inside=True, canonical=id_ == canonical)
    for l in sorted(links, key=lambda l: (l.time, l.message_id, l.seq)):
        for end in (l.source, l.target):
            if end not in graph:
                other, known = outside.get(end, ("", False))
                graph.add_node(end, known=known, inside=False, canonical=False, profile=other)
        graph.add_edge(
            l.source, l.target, key=f"{l.message_id}#{l.seq}", kind=l.kind, outcome=l.outcome,
            reason=l.reason or "", message_id=l.message_id, event_type=l.event_type,
            time=time_to_datetime(l.time).isoformat(),
        )
    return graph


def summarise_leaves(graph: nx.MultiDiGraph, keep: int = 5, focus: str | None = None) -> nx.MultiDiGraph:
    """A copy of ``graph`` where, around each ID with more than ``keep`` anonymous leaves
    (anonymous IDs of the profile with a single link, merged, to that ID), the leaves are
    replaced by one node "N anonymous IDs": a 1,000-ID profile is mostly such leaves.
    ``focus`` (the ID the picture was asked for) is always drawn itself.

    >>> g = nx.MultiDiGraph()
    >>> g.add_node("u", known=True, inside=True, canonical=True)
    >>> for i in range(8):
    ...     g.add_node(f"a{i}", known=False, inside=True, canonical=False)
    ...     _ = g.add_edge(f"a{i}", "u", outcome="merged", kind="implicit")
    >>> sorted(summarise_leaves(g, keep=5).nodes)
    ['8 anonymous IDs of u', 'u']
    """
    leaves: dict[str, list[str]] = {}
    for node, data in graph.nodes(data=True):
        if data.get("known") or not data.get("inside") or data.get("canonical") or node == focus:
            continue
        edges = list(graph.in_edges(node, data=True)) + list(graph.out_edges(node, data=True))
        if len(edges) == 1 and edges[0][2].get("outcome") == MERGED:
            u, v, _ = edges[0]
            leaves.setdefault(v if u == node else u, []).append(node)
    out = graph.copy()
    for hub, group in sorted(leaves.items()):
        if len(group) <= keep:
            continue
        out.remove_nodes_from(group)
        name = f"{len(group)} anonymous IDs of {hub}"
        out.add_node(name, known=False, inside=True, canonical=False, summary=len(group))
        out.add_edge(name, hub, key="summary", kind="implicit", outcome=MERGED, reason="",
                     message_id=f"{len(group)} events", event_type="", time="")
    return out


def refused_between(links: Iterable[StoredLink], left: set[str], right: set[str]) -> list[StoredLink]:
    """The refused links joining an ID of ``left`` to one of ``right``, in event order."""
    found = [
        l for l in links
        if l.outcome == REFUSED and ((l.source in left and l.target in right) or (l.source in right and l.target in left))
    ]
    return sorted(found, key=lambda l: (l.time, l.message_id, l.seq))
