"""The store: layout promises (union by size, sort order, WAL) and clear errors."""

from __future__ import annotations

import pytest

from helpers import P, alias, identify, profiles
from identity_graph import DatabaseUnavailable, IdentityGraph, MergeRules


def count_relabelled_ids(monkeypatch):  # type: ignore[no-untyped-def]
    """Sum of ig_ids rows moved between profiles by relabelling, while the list is live."""
    from identity_graph.store import WriteTx

    moved = [0]
    relabel = WriteTx.relabel

    def spy(self, moves):  # type: ignore[no-untyped-def]
        relabel(self, moves)
        if moves:
            moved[0] += self.cur.rowcount

    monkeypatch.setattr(WriteTx, "relabel", spy)
    return moved


def test_a_chain_relabels_only_the_smaller_side(make_graph, monkeypatch) -> None:
    graph = make_graph(MergeRules(max_profile_ids=10**6))
    moved = count_relabelled_ids(monkeypatch)
    n = 300
    for i in range(n):  # id0 -> id1 -> ...: the canonical moves every time, the big side stays
        graph.ingest(alias(i, f"m{i:05d}", f"id{i}", f"id{i + 1}"))
    assert graph.resolve("id0") == f"id{n}"
    assert len(graph.profile("id0").ids) == n + 1  # type: ignore[union-attr]
    # Each merge absorbs the singleton {id(i+1)} into the big profile: ~0 rows moved, where
    # relabelling the source side would move 1 + 2 + ... + n rows.
    assert moved[0] <= n


def test_merging_two_big_profiles_moves_the_smaller_one(make_graph, monkeypatch) -> None:
    graph = make_graph(MergeRules(max_profile_ids=10**6))
    graph.ingest_many(alias(i, f"a{i:03d}", f"small{i}", "S") for i in range(5))
    graph.ingest_many(alias(100 + i, f"b{i:03d}", f"big{i}", "B") for i in range(50))
    moved = count_relabelled_ids(monkeypatch)
    graph.ingest(alias(500, "join", "B", "S"))  # canonical S survives, B's 51 IDs stay put
    assert graph.resolve("big7") == "S"
    assert moved[0] == 6


def test_identities_are_sorted_by_code_point(graph: IdentityGraph) -> None:
    ids = ["b", "B", "a", "é", "Z", "_", "aa", "😀", "ä"]
    graph.ingest_many(identify(i, f"m{i}", anon=x) for i, x in enumerate(ids))
    assert [i for i, _ in graph.identities()] == sorted(ids)


def test_sqlite_is_opened_in_wal_mode(tmp_path) -> None:
    with IdentityGraph(f"sqlite:///{tmp_path / 'g.db'}") as graph:
        with graph._store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_new_sqlite_files_have_16k_pages_and_append_only_links_and_register(tmp_path) -> None:
    with IdentityGraph(f"sqlite:///{tmp_path / 'g.db'}") as graph:
        with graph._store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 16384
            ddl = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())
    assert "WITHOUT ROWID" in ddl["ig_ids"]
    assert "WITHOUT ROWID" not in ddl["ig_links"] and "WITHOUT ROWID" not in ddl["ig_events"]


def test_default_url_is_env_then_local_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IDENTITY_GRAPH_DB", raising=False)
    with IdentityGraph() as graph:
        assert graph.url == "sqlite:///identity-graph.db"
    assert (tmp_path / "identity-graph.db").exists()
    monkeypatch.setenv("IDENTITY_GRAPH_DB", f"sqlite:///{tmp_path / 'env.db'}")
    with IdentityGraph() as graph:
        assert graph.url.endswith("env.db")


def test_reopening_keeps_the_graph(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with IdentityGraph(url) as graph:
        graph.ingest(identify(1, "m1", user="u1", anon="a1"))
    with IdentityGraph(url) as graph:
        assert graph.resolve("a1") == "u1"


def test_an_unknown_driver_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot open 'nosuchdb://x'"):
        IdentityGraph("nosuchdb://x")


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        IdentityGraph("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_plain_postgresql_urls_use_psycopg3() -> None:
    from identity_graph.store import _normalise_url

    assert _normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert _normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_another_writer_invalidates_the_process_cache(make_graph) -> None:
    first, second = make_graph(), make_graph()
    first.ingest(identify(1, "m1", user="u1", anon="d1"))     # first caches {d1, u1}
    second.ingest(alias(2, "m2", "u1", "u2"))                 # second moves u1's profile
    first.ingest(identify(3, "m3", user="u3", anon="d1"))     # must see u2's known profile
    assert profiles(first) == {P("u2", "u1", "d1"), P("u3")}


def test_a_failed_batch_leaves_no_trace_in_the_cache(graph: IdentityGraph, monkeypatch) -> None:
    from identity_graph.store import WriteTx

    graph.ingest(identify(1, "m1", user="u1", anon="d1"))
    insert_links = WriteTx.insert_links

    def fail(self, rows):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(WriteTx, "insert_links", fail)
    with pytest.raises(RuntimeError):
        graph.ingest(alias(2, "m2", "u1", "u2"))
    monkeypatch.setattr(WriteTx, "insert_links", insert_links)
    assert profiles(graph) == {P("u1", "d1")}
    graph.ingest(identify(3, "m3", user="u3", anon="d1"))     # refused: d1's profile holds u1
    graph.ingest(alias(2, "m2", "u1", "u2"))                  # late, now applied for real
    assert profiles(graph) == {P("u2", "u1", "d1"), P("u3")}


def test_stats_counts_links_as_a_group_by_over_every_link_would(make_graph, graph_url: str) -> None:  # type: ignore[no-untyped-def]
    """stats() counts links in one pass and groups only the refusals (a GROUP BY over every
    link is a sort of all of them); its counts must be the GROUP BY's, for every outcome,
    and an outcome it does not know falls back to the GROUP BY."""
    from sqlalchemy import create_engine, text

    g = make_graph(MergeRules(max_profile_ids=3))
    g.identify(user_id="u1", anonymous_id="a1")  # merged
    g.identify(user_id="u1", anonymous_id="a1")  # together
    g.alias("p1", "u1")  # merged: u1, a1, p1
    g.alias("p2", "u1")  # refused: size_cap
    g.identify(user_id="u2", anonymous_id="a1")  # refused: known_id
    taken = g.identify(user_id="u3", anonymous_id="a3")  # merged, then unmerged
    g.unmerge(taken.message_id)
    engine = create_engine(graph_url.replace("postgresql://", "postgresql+psycopg://", 1))

    def grouped() -> list[tuple[str, str | None, int]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
                "SELECT outcome, reason, count(*) FROM ig_links GROUP BY outcome, reason"))]

    def from_stats() -> list[tuple[str, str | None, int]]:
        s = g.stats()
        rows = [("merged", None, s.links_merged), ("together", None, s.links_together),
                ("unmerged", None, s.links_unmerged)]
        return [r for r in rows if r[2]] + [("refused", k, n) for k, n in s.links_refused.items()]

    try:
        assert sorted(from_stats(), key=str) == sorted(grouped(), key=str) == sorted([
            ("merged", None, 2), ("together", None, 1), ("unmerged", None, 1),
            ("refused", "known_id", 1), ("refused", "size_cap", 1)], key=str)
        with engine.begin() as conn:  # a link with an outcome no version writes
            conn.execute(text("UPDATE ig_links SET outcome = 'odd' WHERE outcome = 'together'"))
        s = g.stats()
        assert (s.links_merged, s.links_together, s.links_unmerged) == (2, 0, 1)
        assert s.links_refused == {"known_id": 1, "size_cap": 1, None: 1}  # counted, not lost
    finally:
        engine.dispose()


def test_a_late_event_decides_stored_links_again_so_stats_and_summaries_differ(make_graph) -> None:  # type: ignore[no-untyped-def]
    """The summaries count each link's outcome when it is applied; stats() the stored ones. A
    late event replays its cluster in event-time order, which can change a stored outcome."""
    g = make_graph()
    first = g.ingest_many([identify(10, "m1", user="u1", anon="a1")])  # a1 -> u1: merged
    late = g.ingest_many([identify(5, "m0", user="u2", anon="a1")])  # earlier: a1 goes to u2 first
    assert (first.links_merged, late.links_merged, late.replayed_events) == (1, 1, 1)
    assert sum(s.links_refused.total() for s in (first, late)) == 0
    s = g.stats()  # replayed: a1 -> u2 merged at 5, then a1 -> u1 refused at 10 (known_id)
    assert (s.links_merged, s.links_refused) == (1, {"known_id": 1})
    assert profiles(g) == {P("u2", "a1"), P("u1")}
