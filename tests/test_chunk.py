"""The import's short cut for events without a userId (identity_graph.chunk, batch.apply_chunk).

Each case imports a history into one graph and ingests the same events one at a time
(the plain ``apply_plans`` path) into another, then compares everything stored: the
IDs with their profile, first-seen time and known mark, every link and outcome, the
register, and the summary counts. The cases aim at each condition under which the
short cut must step aside: an event already registered (re-sent, or re-using a
messageId with other content), a repeat inside one batch, an erased ID, a blocked
userId on an alias, and first-seen times that only an earlier event may lower.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from conftest import PostgresSchemas, postgres_base_url
from sqlalchemy import text

from identity_graph import IdentityGraph
from identity_graph.batch import plan_event
from identity_graph.chunk import Chunk, ChunkBuilder
from identity_graph.events import parse_event
from identity_graph.importer import import_events
from identity_graph.rules import MergeRules
from identity_graph.store import ReadTx


def ts(second: int) -> str:
    return f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000Z"


def page(mid: str, second: int, anon: Any) -> dict[str, Any]:
    return {"type": "page", "messageId": mid, "anonymousId": anon, "timestamp": ts(second)}


def identify(mid: str, second: int, user: Any, anon: Any = None) -> dict[str, Any]:
    e = {"type": "identify", "messageId": mid, "userId": user, "timestamp": ts(second)}
    if anon is not None:
        e["anonymousId"] = anon
    return e


def alias(mid: str, second: int, prev: Any, user: Any, anon: Any = None) -> dict[str, Any]:
    e = {"type": "alias", "messageId": mid, "previousId": prev, "userId": user, "timestamp": ts(second)}
    if anon is not None:
        e["anonymousId"] = anon
    return e


def state(graph: IdentityGraph) -> tuple[Any, ...]:
    with graph._store.engine.connect() as conn:
        ids = sorted(conn.execute(text(
            "SELECT i.id, p.canonical, i.first_time, i.known_time, i.known_msg, p.size, p.known"
            " FROM ig_ids i JOIN ig_profiles p ON p.profile_id = i.profile_id")).all())
        links = sorted(conn.execute(text(
            "SELECT message_id, seq, source, target, kind, time, outcome, reason FROM ig_links")).all())
        register = sorted(conn.execute(text("SELECT message_id, time, type, digest FROM ig_events")).all())
    s = graph.stats()
    return ids, links, register, (s.ids, s.profiles, s.events, s.duplicates)


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def both_ways(
    make: Callable[[str], IdentityGraph], tmp_path: Path, batches: list[list[dict[str, Any]]], batch_size: int = 4,
    before: Callable[[IdentityGraph], None] | None = None,
) -> tuple[IdentityGraph, IdentityGraph, list[Any]]:
    """Import ``batches`` (one file each, one import each) into a graph, and ingest the same
    events one at a time into another; return both graphs and the import summaries."""
    imported, ingested = make("imported"), make("ingested")
    summaries = []
    for n, events in enumerate(batches):
        if before is not None and n == 1:
            before(imported)
            before(ingested)
        issues: list[Any] = []
        summaries.append(import_events(imported, [write(tmp_path / f"{n}.jsonl", events)],
                                       batch_size=batch_size, on_issue=issues.append))
        summaries[-1].issues = issues
        for e in events:
            ingested.ingest(e)
    return imported, ingested, summaries


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], IdentityGraph]]:
    """Opens graphs by name: SQLite files, or PostgreSQL schemas of their own."""
    opened: list[IdentityGraph] = []
    schemas = PostgresSchemas(postgres_base_url()) if request.param == "postgresql" else None  # type: ignore[arg-type]

    def open_(name: str) -> IdentityGraph:
        url = schemas.new_url() if schemas is not None else f"sqlite:///{tmp_path / (name + '.db')}"
        opened.append(IdentityGraph(url))
        return opened[-1]

    yield open_
    for g in opened:
        g.close()
    if schemas is not None:
        schemas.drop_all()


HISTORY = [
    page("p1", 10, "a1"), page("p2", 5, "a1"), page("p3", 7, "a2"),
    identify("i1", 20, "u1", "a1"), page("p4", 21, "a3"), identify("i2", 22, "u2"),
    alias("al1", 30, "jen@example.com", "u1"), page("p5", 3, "a4"), page("p6", 40, "null"),
    alias("al2", 41, "lead-7", "null", "a5"),  # blocked userId: two lone IDs, no link
]


def test_chunk_builder_splits_events_by_user_id() -> None:
    b = ChunkBuilder(MergeRules())
    for e in HISTORY:
        b.add(parse_event(e), None)
    c = b.take()
    assert [row[0][1] for row in c.planned] == ["i1", "i2", "al1"]
    t0 = parse_event(page("x", 0, "x")).time
    assert {i: (t - t0) // 10**6 for i, t in c.lone.items()} == {"a1": 5, "a2": 7, "a3": 21, "a4": 3, "lead-7": 41, "a5": 41}
    assert (c.lone_events, c.blocked_events, len(c.register), len(c)) == (6, 1, 10, 10)
    assert [p.event.message_id for p in c.all_plans(MergeRules())] == [
        "i1", "i2", "al1", "p1", "p2", "p3", "p4", "p5", "p6", "al2"]
    assert c.all_plans(MergeRules())[-1] == plan_event(parse_event(HISTORY[-1]), MergeRules())


def test_a_builder_that_leaves_the_fall_back_events_out_keeps_everything_else() -> None:
    """A parse worker that leaves ``others`` out of the pipe builds them not at all; the
    chunk says so (None, not an empty list), so the writer reads them again if it needs them."""
    chunks = []
    for keep in (True, False):
        b = ChunkBuilder(MergeRules(), keep_others=keep)
        for e in HISTORY + [page("p1", 50, "a9")]:  # a repeat too
            b.add(parse_event(e), None)
        chunks.append(b.take())
    kept, left = chunks
    assert len(kept.others) == 7 and left.others is None  # type: ignore[arg-type]
    assert (left.register, left.planned, left.lone, left.lone_events, left.blocked, left.repeats, left.held) == (
        kept.register, kept.planned, kept.lone, kept.lone_events, kept.blocked, kept.repeats, kept.held)
    with pytest.raises(RuntimeError, match="fall-back events were left out"):
        left.all_plans(MergeRules())
    left.reread = lambda register: kept.others  # type: ignore[assignment,return-value]
    assert left.all_plans(MergeRules()) == kept.all_plans(MergeRules())


def test_fresh_history_equals_one_by_one(make: Any, tmp_path: Path) -> None:
    imported, ingested, (s,) = both_ways(make, tmp_path, [HISTORY])
    assert state(imported) == state(ingested)
    assert (s.applied, s.blocked, s.duplicates, s.new_ids) == (9, 1, 0, 9)


def test_re_sent_and_conflicting_events_without_user_id(make: Any, tmp_path: Path) -> None:
    second = [
        page("p1", 10, "a1"),            # re-sent as it was: a duplicate
        page("p2", 1, "a1"),             # re-sent with an earlier time: still a duplicate, first-seen stays 5
        page("p3", 7, "a9"),             # its messageId with another ID: a conflict, a9 must not appear
        page("n1", 2, "a2"),             # new and earlier: a2's first-seen becomes 2
        page("n2", 50, "a10"),           # new ID
        identify("i1", 20, "u1", "a1"),  # re-sent identify
    ]
    imported, ingested, (_, s) = both_ways(make, tmp_path, [HISTORY, second], batch_size=100)
    assert state(imported) == state(ingested)
    assert (s.applied, s.duplicates, s.conflicts) == (2, 3, 1)
    assert [str(i).split(": ", 1)[1][:8] for i in s.issues] == ["messageI"]
    assert imported.resolve("a9") is None and imported.resolve("a10") == "a10"


def test_plain_re_sends_without_user_id_keep_the_short_cut(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries that straddle a batch boundary: re-sent as they were, or later, they count as
    duplicates and the batch still takes the short cut (no fall-back to every event's plan)."""
    second = [
        page("p1", 10, "a1"),            # re-sent as it was
        page("p3", 9, "a2"),             # re-sent later: first-seen stays 7
        page("p6", 40, "null"),          # a blocked event re-sent: a duplicate, not blocked
        alias("al2", 41, "lead-7", "null", "a5"),
        page("n1", 45, "a11"),
        identify("i1", 20, "u1", "a1"),
    ]
    fall_backs: list[int] = []
    real_all_plans = Chunk.all_plans
    monkeypatch.setattr(Chunk, "all_plans", lambda self, rules: fall_backs.append(1) or real_all_plans(self, rules))
    imported, ingested, (_, s) = both_ways(make, tmp_path, [HISTORY, second], batch_size=100)
    assert state(imported) == state(ingested)
    assert (s.applied, s.duplicates, s.blocked, s.conflicts, s.new_ids) == (1, 5, 0, 0, 1)
    assert fall_backs == []
    assert imported.resolve("a11") == "a11"


def test_a_re_send_with_an_earlier_time_changes_no_first_seen(make: Any, tmp_path: Path) -> None:
    """Alone in its batch (no conflict beside it to force the fall-back): a1 was first seen
    at 5, and the re-send of p2 at 1 is a duplicate, so it stays 5."""
    imported, ingested, (_, s) = both_ways(make, tmp_path, [HISTORY, [page("p2", 1, "a1")]], batch_size=100)
    assert state(imported) == state(ingested)
    assert (s.applied, s.duplicates) == (0, 1)


def test_repeats_within_one_batch_are_held_by_their_first(make: Any, tmp_path: Path) -> None:
    events = [page("r1", 5, "a1"), page("r1", 5, "a1"), page("r1", 6, "other"),
              identify("r2", 7, "u1", "a1"), page("r2", 8, "a3")]
    imported, ingested, (s,) = both_ways(make, tmp_path, [events], batch_size=100)
    assert state(imported) == state(ingested)
    assert (s.applied, s.duplicates, s.conflicts) == (2, 1, 2)
    assert imported.resolve("other") is None and imported.resolve("a3") is None


def test_erased_ids_stay_erased(make: Any, tmp_path: Path) -> None:
    again = [page("p4", 21, "a3"), page("e1", 60, "a3"), page("e2", 61, "a7")]
    imported, ingested, _ = both_ways(
        make, tmp_path, [HISTORY, again], batch_size=100, before=lambda g: g.delete("a3"),
    )
    assert state(imported) == state(ingested)
    assert imported.resolve("a3") is None and imported.resolve("a7") == "a7"


@pytest.mark.parametrize("batch_size", [1, 2, 3, 100])
def test_any_batching_gives_the_same_graph(make: Any, tmp_path: Path, batch_size: int) -> None:
    late = [page("l1", 1, "a1"), identify("l2", 2, "u9", "a2"), page("l3", 0, "u1")]
    imported, ingested, _ = both_ways(make, tmp_path, [HISTORY, late], batch_size=batch_size)
    assert state(imported) == state(ingested)


@pytest.mark.parametrize(
    "max_ids, extra_ids, reads_whole",
    [
        (2_000_000, 0, True),  # 4 IDs to look up in a graph of 9: one scan
        (3, 0, False),  # more IDs stored than the cache may hold: lookups
        (2_000_000, 40, False),  # 4 IDs in a graph of 49, under 1/FILL_RATIO: lookups
    ],
)
def test_an_import_into_an_existing_graph_reads_it_whole_only_when_it_touches_much_of_it(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_ids: int, extra_ids: int, reads_whole: bool
) -> None:
    """A new process importing into a known graph starts with an empty cache. A batch that
    would look up at least 1/FILL_RATIO of the stored IDs (and the graph has at most
    ``max_ids``) reads every ID in one scan, which the import's later batches share;
    a small import into a larger graph (a day into a year) looks up its few IDs."""
    from identity_graph.cache import FILL_RATIO

    assert 4 * FILL_RATIO < 9 + 40  # the third case is below the ratio
    first, reference = make("first"), make("reference")
    others = [page(f"o{n}", 50, f"other{n}") for n in range(extra_ids)]
    import_events(first, [write(tmp_path / "1.jsonl", HISTORY + others)])
    assert first.stats().ids == 9 + extra_ids
    later = [page("m1", 60, "a1"), identify("m2", 61, "u3", "a2"), page("m3", 62, "a8")]
    second = IdentityGraph(first._store.engine.url.render_as_string(hide_password=False))
    lookups: list[list[str]] = []
    real_load_ids = ReadTx.load_ids

    def counting(self: ReadTx, ids: Any) -> Any:
        lookups.append(list(ids))
        return real_load_ids(self, lookups[-1])

    monkeypatch.setattr(ReadTx, "load_ids", counting)
    try:
        second._cache.max_ids = max_ids
        import_events(second, [write(tmp_path / "2.jsonl", later)])
        assert second._cache.complete is reads_whole
        assert sorted(i for batch in lookups for i in batch) == ([] if reads_whole else ["a1", "a2", "a8", "u3"])
        for e in HISTORY + others + later:
            reference.ingest(e)
        assert state(second) == state(reference)
    finally:
        second.close()


def test_holds_more_ids_than_counts_the_stored_ids(make: Any, tmp_path: Path) -> None:
    graph = make("g")
    assert graph._store.run_write(lambda tx: tx.holds_more_ids_than(0)) is False
    import_events(graph, [write(tmp_path / "h.jsonl", HISTORY)])
    assert graph.stats().ids == 9
    answers = graph._store.run_write(lambda tx: [tx.holds_more_ids_than(n) for n in (0, 8, 9, 10)])
    assert answers == [True, True, False, False]


def test_a_chunk_survives_the_pipe() -> None:
    """What the parse worker sends: the fall-back's events and the register rows (as
    MessagePack) come back exactly, also from a file whose name is not UTF-8 (JSON cannot
    carry it; pickle can), through the worker's own memo-less pickling and framing."""
    from helpers import through_pipe

    for source in ("events.jsonl", "caf\udce9.jsonl"):
        b = ChunkBuilder(MergeRules())
        for n, e in enumerate(HISTORY, 1):
            b.add(parse_event(e), (source, n, None))
        c = b.take()
        [(kind, (sent, issues))] = through_pipe(("chunk", (c, [])))
        assert (kind, issues) == ("chunk", [])
        assert sent.all_plans(MergeRules()) == c.all_plans(MergeRules())
        assert (sent.register, sent.planned, sent.lone, sent.held, sent.repeats, sent.blocked) == (
            c.register, c.planned, c.lone, c.held, c.repeats, c.blocked)


def test_a_parse_worker_sends_small_chunks_at_both_ends(tmp_path: Path) -> None:
    """The writer waits for the first chunk and the parser for the writer's last one: the
    worker starts small, runs at full size, and halves what is left near the end."""
    from identity_graph.importer import _parse
    from identity_graph.readers import expand_sources

    # ~1 KB events, as in real exports: the reader's 1 MB read-ahead is then small
    # against the file, and the bytes an event takes are estimated well.
    events = [{**page(f"m{n}", n % 3000, f"a{n % 700}"), "properties": {"pad": "x" * 1000}} for n in range(20_000)]
    sources = expand_sources([write(tmp_path / "h.jsonl", events)])
    sizes = [len(c) for c, _, _ in _parse(sources, 4000, MergeRules(), small=500)]
    assert sum(sizes) == 20_000
    assert sizes[0] == 500 and sizes.count(4000) >= 3
    tail = sizes[sizes.index(4000):]
    assert tail == sorted(tail, reverse=True) and tail[-1] < 1000 and len(tail) - tail.count(4000) <= 6
    assert [len(c) for c, _, _ in _parse(sources, 4000, MergeRules())] == [4000] * 5 + [0]


def test_blocked_check_short_cut_matches_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """ChunkBuilder asks only "all whitespace?" of an ID longer than every blocked value:
    it must sort every ID as MergeRules.is_blocked does, and its remembered digests must
    be event_digest's."""
    import identity_graph.chunk as chunk_module
    from identity_graph.batch import event_digest
    from identity_graph.events import Event

    monkeypatch.setattr(chunk_module, "_DIGESTS_KEPT", 2)  # cleared often
    rules = MergeRules(blocked_values=frozenset({"Guest-User-0000", "n/a"}))
    values = ["guest-user-0000", "GUEST-USER-0000", " " * 40, "\t\u3000" * 10, "", "n/A", "N/A ", "x",
              "guest-user-00000", "real-user-id-0123456789", "\u00df" * 8, "STRASSE-STRASSE-1"]
    b = ChunkBuilder(rules)
    for n, v in enumerate(values):
        b.add(Event("identify", f"u{n}", n, v, "anon"), None)
        b.add(Event("page", f"a{n}", n, None, v), None)
    c = b.take()
    planned = {row[0][3] for row in c.planned}
    assert planned == {v for v in values if not rules.is_blocked(v)}
    # The pages' IDs, and "anon" of the identify events whose userId is blocked.
    assert set(c.lone) == {v for v in values if not rules.is_blocked(v)} | {"anon"}
    by_mid = {row[0]: row[3] for row in c.register}
    for fields, _, digest in c.planned:
        assert digest == by_mid[fields[1]] == event_digest(Event(*fields))
