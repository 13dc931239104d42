"""The folded links layout (schema 8): one first row per (source, target), exact under
shared keys, and the queries on the partial indexes."""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine

from helpers import linked_history, profiles
from identity_graph import IdentityGraph, MergeRules, links
from identity_graph.importer import import_events
from identity_graph.links import pair_key

RULES = MergeRules(max_profile_ids=8)


def folding(g: IdentityGraph) -> tuple[int, int]:
    """Check the layout's invariant on the stored rows; return (rows, distinct pairs).

    Every row's ``pair`` is its (source, target)'s key (as the module computes it now),
    and each (source, target) has exactly one row with ``repeat = 0``."""
    with g._store._connect() as conn:
        rows = conn.exec_driver_sql("SELECT source, target, pair, repeat FROM ig_links").all()
    assert all(p == links.pair_key(s, t) for s, t, p, _ in rows)
    firsts = Counter((s, t) for s, t, _, r in rows if r == 0)
    assert set(firsts) == {(s, t) for s, t, _, _ in rows}
    assert set(firsts.values()) <= {1}
    assert {r for *_, r in rows} <= {0, 1}
    return len(rows), len(firsts)


def crowded_pair_key(source: str, target: str) -> int:
    """Three keys for every pair: most pairs share their key with others."""
    return zlib.crc32(f"{source}\0{target}".encode()) % 3


def answers(g: IdentityGraph, events: list[dict[str, Any]]) -> list[Any]:
    """What a user can ask of the links: explain, history, an unmerge, a delete, and the
    graph and its links after each edit."""
    out: list[Any] = [profiles(g), sorted(map(tuple, stored(g)))]
    ids = sorted({i for i, _ in g.identities()})
    for a, b in zip(ids[::7], ids[3::7]):
        try:
            out.append(("explain", a, b, [(l.source, l.target, l.message_id) for l in g.explain(a, b)]))
        except Exception as exc:  # noqa: BLE001 - the error's kind and text are the answer
            out.append(("explain", a, b, type(exc).__name__, str(exc)))
    out.extend(("history", i, [(l.source, l.target, l.message_id, l.outcome) for l in g.history(i)]) for i in ids[::5])
    merged = next(e["messageId"] for e in events if e["type"] == "alias")
    out.append(("unmerge", sorted(p.canonical for p in g.unmerge(merged).after)))
    out.append(profiles(g))
    gone = ids[len(ids) // 2]
    out.append(("delete", sorted(p.canonical for p in g.delete(gone).after)))
    out.extend([profiles(g), sorted(map(tuple, stored(g)))])
    return out


def stored(g: IdentityGraph) -> list[tuple[Any, ...]]:
    return [(l.message_id, l.seq, l.source, l.target, l.outcome, l.reason or "") for l in g._store.all_links()]


def history() -> list[dict[str, Any]]:
    # Few people and devices, many events: most links repeat a pair.
    return linked_history(400, 5, users=6, devices=8)


def test_repeated_pairs_are_stored_once_in_the_id_indexes(graph_url: str) -> None:
    events = history()
    with IdentityGraph(graph_url, rules=RULES) as g:
        g.ingest_many(events[:150], batch_size=1)  # one by one: each probe sees the stored pairs
        g.ingest_many(events[150:], batch_size=60)  # batches: pairs repeated within one insert
        rows, pairs = folding(g)
        assert rows > 3 * pairs > 0


def test_pairs_that_share_a_key_are_told_apart(
    graph_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same events and edits with real keys and with three keys in all: the same
    answers, and each pair still has its one first row (not one per key)."""
    events = history()
    results = []
    for url, crowded in ((f"sqlite:///{tmp_path / 'plain.db'}", False), (graph_url, True)):
        if crowded:
            monkeypatch.setattr(links, "pair_key", crowded_pair_key)
        with IdentityGraph(url, rules=RULES) as g:
            g.ingest_many(events, batch_size=45)
            results.append(answers(g, events))
            rows, pairs = folding(g)
            if crowded:
                with g._store._connect() as conn:
                    assert {r[0] for r in conn.exec_driver_sql("SELECT DISTINCT pair FROM ig_links")} <= {0, 1, 2}
                assert pairs > 3  # so keys are shared, and the answers above had to tell pairs apart
    assert results[0] == results[1]


def test_a_bulk_import_folds_as_ingest_does(graph_url: str, tmp_path: Path) -> None:
    events = history()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    with IdentityGraph(graph_url, rules=RULES) as g:
        import_events(g, [path], batch_size=70)
        bulk = (profiles(g), sorted(stored(g)), folding(g))
    with IdentityGraph(f"sqlite:///{tmp_path / 'one.db'}", rules=RULES) as g:
        for e in events:
            g.ingest(e)
        assert (profiles(g), sorted(stored(g)), folding(g)) == bulk


def test_lookups_by_id_read_the_partial_indexes(tmp_path: Path) -> None:
    """The ``repeat = 0`` in each statement is what lets SQLite use the partial indexes: a
    statement without it would scan every link."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with IdentityGraph(url) as g:
        g.ingest_many(history()[:50])
    engine = create_engine(url)
    with engine.connect() as conn:
        def plan(sql: str) -> str:
            return " | ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all())

        # Index-only: the partial indexes hold what these statements read.
        assert "COVERING INDEX ix_ig_links_source" in plan(
            "SELECT source, target FROM ig_links WHERE repeat = 0 AND source IN ('u1')")
        assert "COVERING INDEX ix_ig_links_target" in plan(
            "SELECT pair FROM ig_links WHERE repeat = 0 AND target IN ('u1', 'u2')")
        # The probe of an insert, as long as it runs: one seek per (source, target), not
        # an automatic index over the table (which SQLite picks for a long list unless told).
        probe = plan(links.probe_sql(links._BATCH).replace("?", "'x'"))
        assert "SEARCH l USING COVERING INDEX ix_ig_links_source (source=? AND target=?" in probe, probe
        assert "AUTOMATIC" not in probe
        assert "SCAN l" not in probe
        assert "ix_ig_links_pair" in plan(f"SELECT {links.COLUMNS} FROM ig_links WHERE pair IN (1, 2)")
        erase = plan("DELETE FROM ig_links WHERE pair IN (SELECT pair FROM ig_links WHERE repeat = 0 AND source = 'u1'"
                     " UNION SELECT pair FROM ig_links WHERE repeat = 0 AND target = 'u1')"
                     " AND (source = 'u1' OR target = 'u1')")
        assert "SCAN ig_links" not in erase.replace("SCAN ig_links USING", "")
        assert {"ix_ig_links_source", "ix_ig_links_target", "ix_ig_links_pair"} <= set(erase.replace("(", " ").split())
    engine.dispose()


@pytest.mark.postgres
def test_the_postgresql_probe_seeks_each_pair(pg_schemas: Any) -> None:
    """LATERAL ... LIMIT 1: a nested loop of index-only seeks into the covering index,
    never a hash join over every stored pair (which a plain join was planned as)."""
    with IdentityGraph(pg_schemas.new_url()) as g:
        g.ingest_many(history()[:50])
        with g._store._connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: ask whether the index serves
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(
                "EXPLAIN " + links.PG_PROBE, ([f"a{i}" for i in range(500)], [f"u{i}" for i in range(500)])))
    assert "Nested Loop" in plan and "Hash" not in plan, plan
    # Either covering index serves (each holds both ends): the planner picks by its costs.
    assert ("Index Only Scan using ix_ig_links_source" in plan
            or "Index Only Scan using ix_ig_links_target" in plan), plan


def test_a_pair_key_is_the_signed_xxh3_of_source_nul_target() -> None:
    """A stored format: graphs of schema 8 hold these keys, so the function may get faster
    but never different (another scheme needs a migration)."""
    import xxhash

    for s, t in [("a1", "u1"), ("jen@email.com", "507f191e81"), ("é", "caf\udce9"), ("", "")]:
        v = xxhash.xxh3_64(f"{s}\0{t}".encode("utf-8", "surrogatepass")).digest()
        assert pair_key(s, t) == int.from_bytes(v, "big", signed=True)
