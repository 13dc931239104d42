"""import_events: every input form gives the same graph and summary; counts are exact;
re-running is a no-op; the bulk path equals one-by-one ingestion."""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest

from conftest import PostgresSchemas, postgres_base_url
from helpers import P, alias, ev, identify, profiles
from helpers import linked_history
from identity_graph import IdentityGraph, MergeRules
from identity_graph.importer import ImportIssue, StrictImportStopped, import_events
import identity_graph.importer as importer
from identity_graph.readers import SourceError, expand_sources
from identity_graph.results import CONFLICT_REASON
from identity_graph.store import WriteTx

ROOT = Path(__file__).resolve().parents[1]

# A small history with one of everything: a merge, a plain event, a refused link, an alias,
# a second implicit merge, an event whose userId is junk, a link already together, and an
# event whose only ID is junk (blocked).
HISTORY = [
    identify(1, "m1", user="u1", anon="a1"),                  # a1 -> u1 merged
    ev("track", 2, "m2", userId="u1"),                         # no link
    identify(3, "m3", user="u2", anon="a1"),                   # a1 -> u2 refused: known_id
    alias(4, "m4", "e@x", "u1"),                               # e@x -> u1 merged
    ev("page", 5, "m5", anonymousId="a2", userId="u1"),        # a2 -> u1 merged
    identify(6, "m6", user="null", anon="a3"),                 # userId blocked: a3 alone
    identify(7, "m7", user="u1", anon="a2"),                   # a2 -> u1 together
    identify(8, "m8", user="undefined"),                       # blocked
]
EXPECTED = {P("u1", "a1", "e@x", "a2"), P("u2"), P("a3")}
EXPECTED_COUNTS = {
    "events": 8, "applied": 7, "duplicates": 0, "conflicts": 0, "invalid": 0, "blocked": 1,
    "links_merged": 3, "links_together": 1, "links_refused": {"known_id": 1},
    "new_ids": 6, "profiles_touched": 3,
}


def counts(summary: Any) -> dict[str, Any]:
    d = summary.to_dict()
    return {k: d[k] for k in EXPECTED_COUNTS}


def jsonl(events: list[Any]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def envelope(events: list[Any]) -> dict[str, Any]:
    return {"batch": events, "context": {"library": {"name": "analytics-python"}}, "integrations": {"All": True}}


def stored_links(graph: IdentityGraph) -> set[tuple[Any, ...]]:
    return {(l.source, l.target, l.kind, l.message_id, l.outcome, l.reason) for l in graph._store.all_links()}


# -- every input form ------------------------------------------------------------------
# Each builder writes HISTORY under ``folder`` in some form and returns the paths to import.

H1, H2 = HISTORY[:3], HISTORY[3:]


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _folder(folder: Path) -> list[Path]:
    root = folder / "exports"
    _write(root, "01.jsonl", jsonl(HISTORY[:2]))
    _write(root, "02/a.json", json.dumps(HISTORY[2:4], indent=2).encode())
    _write(root, "03.json.gz", gzip.compress(json.dumps(envelope(HISTORY[4:6]), indent=2).encode()))
    _write(root, "04.ndjson", jsonl(HISTORY[6:]))
    # None of these may be read: each would change the graph.
    _write(root, ".hidden.jsonl", jsonl([alias(9, "x1", "u2", "u1")]))
    _write(root, ".cache/old.jsonl", jsonl([alias(9, "x2", "a3", "u1")]))
    _write(root, "notes.md", jsonl([alias(9, "x3", "u2", "a3")]))
    _write(root, "dump.csv", jsonl([identify(9, "x4", user="u3")]))
    return [root]


FORMS: dict[str, Callable[[Path], list[Path]]] = {
    "jsonl": lambda d: [_write(d, "h.jsonl", jsonl(HISTORY))],
    "ndjson": lambda d: [_write(d, "h.ndjson", jsonl(HISTORY))],
    "json-lines-named-json": lambda d: [_write(d, "h.json", jsonl(HISTORY))],
    "array": lambda d: [_write(d, "h.json", json.dumps(HISTORY).encode())],
    "pretty-array": lambda d: [_write(d, "h.json", json.dumps(HISTORY, indent=2).encode())],
    "envelope": lambda d: [_write(d, "h.json", json.dumps(envelope(HISTORY), indent=2).encode())],
    "envelope-line-in-jsonl": lambda d: [_write(d, "h.jsonl", jsonl([H1[0], envelope(H1[1:] + H2[:2]), *H2[2:]]))],
    "gz-jsonl": lambda d: [_write(d, "h.jsonl.gz", gzip.compress(jsonl(HISTORY)))],
    "gz-array": lambda d: [_write(d, "h.json.gz", gzip.compress(json.dumps(HISTORY, indent=2).encode()))],
    "gz-envelope": lambda d: [_write(d, "h.json.gz", gzip.compress(json.dumps(envelope(HISTORY), indent=2).encode()))],
    "gz-envelope-line": lambda d: [_write(d, "h.ndjson.gz", gzip.compress(jsonl([envelope(H1), *H2])))],
    "gz-without-gz-name": lambda d: [_write(d, "h.jsonl", gzip.compress(jsonl(HISTORY)))],
    "gz-array-no-extension": lambda d: [_write(d, "h", gzip.compress(json.dumps(HISTORY).encode()))],
    "bom": lambda d: [_write(d, "h.jsonl", b"\xef\xbb\xbf" + jsonl(HISTORY))],
    "bom-gz-envelope": lambda d: [_write(d, "h.gz", gzip.compress(
        b"\xef\xbb\xbf" + json.dumps(envelope(HISTORY), indent=2).encode()))],
    "blank-lines": lambda d: [_write(d, "h.jsonl", b"\n".join(orjson.dumps(e) + b"\n  " for e in HISTORY) + b"\n\n")],
    "crlf": lambda d: [_write(d, "h.jsonl", b"".join(orjson.dumps(e) + b"\r\n" for e in HISTORY))],
    "folder": _folder,
    "mixed-files": lambda d: [
        _write(d, "a.jsonl", jsonl(HISTORY[:2])),
        _write(d, "b.json", json.dumps(HISTORY[2:4], indent=2).encode()),
        _write(d, "empty.jsonl", b""),
        _write(d, "c.gz", gzip.compress(json.dumps(envelope(HISTORY[4:6]), indent=2).encode())),
        _write(d, "d.ndjson", jsonl([envelope(HISTORY[6:7]), HISTORY[7]])),
    ],
    "empty-file-and-jsonl": lambda d: [_write(d, "empty.jsonl", b""), _write(d, "h.jsonl", jsonl(HISTORY))],
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_input_form_gives_the_same_graph_and_counts(graph: IdentityGraph, tmp_path: Path, form: str) -> None:
    paths = FORMS[form](tmp_path)
    summary = import_events(graph, paths)
    assert summary.issues == []
    assert profiles(graph) == EXPECTED
    assert counts(summary) == EXPECTED_COUNTS


def test_leading_blank_lines_in_json_lines_are_skipped(graph: IdentityGraph, tmp_path: Path) -> None:
    path = _write(tmp_path, "h.jsonl", b"\n\n" + jsonl(HISTORY))
    summary = import_events(graph, [path])
    assert summary.issues == []
    assert counts(summary) == EXPECTED_COUNTS
    assert profiles(graph) == EXPECTED


def test_stdin_is_read_for_a_dash(graph: IdentityGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(jsonl(HISTORY)))))
    summary = import_events(graph, ["-"])
    assert summary.files == 1
    assert counts(summary) == EXPECTED_COUNTS
    assert profiles(graph) == EXPECTED


def test_files_counts_every_file_read(graph: IdentityGraph, tmp_path: Path) -> None:
    assert import_events(graph, FORMS["mixed-files"](tmp_path)).files == 5
    assert import_events(graph, _folder(tmp_path / "f")).files == 4


def test_an_empty_file_imports_nothing(graph: IdentityGraph, tmp_path: Path) -> None:
    summary = import_events(graph, [_write(tmp_path, "e.jsonl", b"")])
    assert (summary.files, summary.events, summary.applied) == (1, 0, 0)
    assert list(graph.identities()) == []


def test_an_envelope_event_without_message_id_is_hashed_with_its_merged_context(
    graph: IdentityGraph, tmp_path: Path
) -> None:
    bare = [{k: v for k, v in e.items() if k != "messageId"} for e in HISTORY[:2]]
    env = {"batch": bare, "context": {"ip": "192.0.2.1"}}
    import_events(graph, [_write(tmp_path, "env.json", json.dumps(env, indent=2).encode())])
    merged = [{**e, "context": {"ip": "192.0.2.1"}} for e in bare]
    again = import_events(graph, [_write(tmp_path, "merged.jsonl", jsonl(merged))])
    assert (again.duplicates, again.applied) == (2, 0)
    unmerged = import_events(graph, [_write(tmp_path, "bare.jsonl", jsonl(bare))])
    assert (unmerged.duplicates, unmerged.applied) == (0, 2)


def test_folder_files_are_imported_in_sorted_order(graph: IdentityGraph, tmp_path: Path) -> None:
    # The same messageId in two files: the first file read wins (rule 9).
    root = tmp_path / "exports"
    _write(root, "b.jsonl", jsonl([identify(1, "same", user="from-b", anon="a1")]))
    _write(root, "a/x.jsonl", jsonl([identify(1, "same", user="from-a-x", anon="a1")]))
    _write(root, "0.jsonl", jsonl([{"type": "identify"}]))
    _write(root, "c.jsonl", jsonl([{"type": "identify"}]))
    summary = import_events(graph, [root])
    assert graph.resolve("a1") == "from-a-x"
    # Invalid lines are reported as they are read; a conflict when its batch is written.
    assert [Path(i.location.source).name for i in summary.issues] == ["0.jsonl", "c.jsonl", "b.jsonl"]
    assert str(summary.issues[2]).endswith(
        "b.jsonl:1: messageId: duplicate of an earlier event with a different body (type or IDs);"
        " the first one was kept ('same')")


# -- exact counts ------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 10_000])
def test_summary_counts_of_a_small_history(graph: IdentityGraph, tmp_path: Path, batch_size: int) -> None:
    summary = import_events(graph, [_write(tmp_path, "h.jsonl", jsonl(HISTORY))], batch_size=batch_size)
    assert counts(summary) == EXPECTED_COUNTS
    assert summary.replayed_events == 0


@pytest.mark.parametrize("batch_size", [1, 2, 10_000])
def test_duplicates_within_a_file_and_across_files_are_counted_and_the_first_wins(
    graph: IdentityGraph, tmp_path: Path, batch_size: int
) -> None:
    a = _write(tmp_path, "a.jsonl", jsonl([
        identify(1, "m1", user="u1", anon="a1"),
        identify(2, "m2", user="u2", anon="a2"),
        identify(1, "m1", user="u9", anon="a9"),        # same messageId, other body: ignored
    ]))
    b = _write(tmp_path, "b.jsonl", jsonl([identify(3, "m2", user="u1", anon="a2"), identify(4, "m3", user="u3")]))
    summary = import_events(graph, [a, b], batch_size=batch_size)
    assert (summary.events, summary.applied, summary.duplicates, summary.conflicts, summary.new_ids) == (5, 3, 0, 2, 5)
    assert [str(i).split("/")[-1] for i in summary.issues] == [
        f"{name}: messageId: duplicate of an earlier event with a different body (type or IDs);"
        f" the first one was kept ('{mid}')" for name, mid in (("a.jsonl:3", "m1"), ("b.jsonl:1", "m2"))
    ]
    assert profiles(graph) == {P("u1", "a1"), P("u2", "a2"), P("u3")}


def test_invalid_events_are_counted_with_the_events_read_and_kept_in_issues(graph: IdentityGraph, tmp_path: Path) -> None:
    path = _write(tmp_path, "h.jsonl", jsonl([
        HISTORY[0],
        {"type": "identify"},
        {"type": "login", "userId": "u1"},
        ["not", "an", "object"],
        {"type": "identify", "userId": True},
        HISTORY[1],
    ]) + b"{broken\n")
    summary = import_events(graph, [path])
    assert (summary.events, summary.applied, summary.invalid) == (7, 2, 5)
    assert [(i.location.line, i.reason) for i in summary.issues[:4]] == [
        (2, "userId: the event has neither a userId nor an anonymousId"),
        (3, "type: 'login' is not one of alias, group, identify, page, screen, track"),
        (4, "event: must be a JSON object, not an array"),
        (5, "userId: must be a string or an integer, not a boolean"),
    ]
    assert summary.issues[4].location.line == 7
    assert summary.issues[4].reason.startswith("invalid JSON (")
    assert summary.issues[4].raw == b"{broken"


def test_on_issue_receives_every_issue_instead_of_the_summary(graph: IdentityGraph, tmp_path: Path) -> None:
    path = _write(tmp_path, "h.jsonl", jsonl([{"type": "identify"}, HISTORY[0], {"type": "track", "userId": "u"}]))
    seen: list[ImportIssue] = []
    summary = import_events(graph, [path], on_issue=seen.append)
    assert summary.issues == []
    assert [str(i) for i in seen] == [
        f"{path}:1: userId: the event has neither a userId nor an anonymousId",
        f"{path}:3: event: a track event needs an \"event\" name",
    ]


def test_issue_locations_in_arrays_and_envelopes(graph: IdentityGraph, tmp_path: Path) -> None:
    arr = _write(tmp_path, "a.json", json.dumps([HISTORY[0], {"type": "identify"}], indent=2).encode())
    env = _write(tmp_path, "e.jsonl", jsonl([HISTORY[1], {"batch": [HISTORY[2], {"type": "nope", "userId": "x"}]}]))
    summary = import_events(graph, [arr, env])
    assert [i.to_dict() for i in summary.issues] == [
        {"file": str(arr), "line": None, "item": 1,
         "reason": "userId: the event has neither a userId nor an anonymousId", "raw": '{"type":"identify"}'},
        {"file": str(env), "line": 2, "item": 1,
         "reason": "type: 'nope' is not one of alias, group, identify, page, screen, track",
         "raw": '{"type":"nope","userId":"x"}'},
    ]


def test_a_refused_link_is_counted_by_reason(make_graph: Callable[..., IdentityGraph], tmp_path: Path) -> None:
    graph = make_graph(MergeRules(max_profile_ids=2))
    path = _write(tmp_path, "h.jsonl", jsonl([
        identify(1, "m1", user="u1", anon="a1"),
        identify(2, "m2", user="u1", anon="a2"),      # profile would hold 3: size_cap
        identify(3, "m3", user="u2", anon="a1"),      # a1's profile holds u1: known_id
        identify(4, "m4", user="u3", anon="a1"),      # known_id
    ]))
    summary = import_events(graph, [path])
    assert dict(summary.links_refused) == {"known_id": 2, "size_cap": 1}
    assert (summary.links_merged, summary.links_refused_total) == (1, 3)
    assert profiles(graph) == {P("u1", "a1"), P("a2"), P("u2"), P("u3")}


def _old_graph(graph: IdentityGraph, tmp_path: Path) -> None:
    import_events(graph, [_write(tmp_path, "old.jsonl", jsonl([
        identify(1, "o1", user="u1", anon="a1"), identify(2, "o2", user="u9"), identify(3, "o3", user="u8")]))])


def test_new_ids_count_only_ids_this_import_created(graph: IdentityGraph, tmp_path: Path) -> None:
    _old_graph(graph, tmp_path)
    summary = import_events(graph, [_write(tmp_path, "new.jsonl", jsonl([
        identify(10, "n1", user="u1", anon="a5"),   # one new ID (a5)
        identify(11, "n2", user="u7", anon="a7"),   # two new IDs
        identify(12, "n3", user="u9", anon="a1"),   # refused (known_id): nothing new
    ]))])
    assert summary.new_ids == 3


def test_profiles_touched_count_only_profiles_this_import_created_or_changed(graph: IdentityGraph, tmp_path: Path) -> None:
    _old_graph(graph, tmp_path)
    summary = import_events(graph, [_write(tmp_path, "new.jsonl", jsonl([
        identify(10, "n1", user="u1", anon="a5"),   # changes u1's profile
        identify(11, "n2", user="u7", anon="a7"),   # creates one profile
    ]))])
    assert summary.profiles_touched == 2


def test_an_event_that_changes_no_profile_does_not_count_it_as_touched(graph: IdentityGraph, tmp_path: Path) -> None:
    # results.IngestSummary.touched_profiles: "Profiles created or changed, and still there".
    _old_graph(graph, tmp_path)
    before = list(graph.identities()), stored_links(graph)
    summary = import_events(graph, [_write(tmp_path, "new.jsonl", jsonl([
        ev("track", 12, "n3", userId="u8"),         # u8 is known since o3: no link, nothing to change
    ]))])
    assert (list(graph.identities()), stored_links(graph)) == before
    assert (summary.applied, summary.new_ids) == (1, 0)
    assert summary.profiles_touched == 0


@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_profile_absorbed_by_a_later_merge_is_not_counted_as_touched(
    graph: IdentityGraph, tmp_path: Path, batch_size: int
) -> None:
    path = _write(tmp_path, "h.jsonl", jsonl([
        identify(1, "m1", user="u1", anon="a1"),
        identify(2, "m2", user="u2", anon="a2"),
        alias(3, "m3", "u2", "u1"),
    ]))
    summary = import_events(graph, [path], batch_size=batch_size)
    assert (summary.profiles_touched, summary.new_ids, summary.links_merged) == (1, 4, 3)
    assert profiles(graph) == {P("u1", "a1", "u2", "a2")}


def test_a_late_event_in_a_later_batch_is_replayed_in_event_time_order(graph: IdentityGraph, tmp_path: Path) -> None:
    path = _write(tmp_path, "h.jsonl", jsonl([
        identify(10, "m1", user="u1", anon="a1"),
        identify(5, "m2", user="u2", anon="a1"),  # earlier: a1 joins u2 first; u1 is refused
    ]))
    summary = import_events(graph, [path], batch_size=1)
    assert summary.replayed_events == 1
    assert profiles(graph) == {P("u2", "a1"), P("u1")}


@pytest.mark.parametrize("blocked_twice", [False, True])
def test_summary_counts_do_not_depend_on_the_batch_size(tmp_path: Path, blocked_twice: bool) -> None:
    # Redeliveries of m1 and m4 and, in one case, of the blocked event m8.
    history = HISTORY + [HISTORY[0], HISTORY[3]] + ([HISTORY[7]] if blocked_twice else [])
    path = _write(tmp_path, "h.jsonl", jsonl(history))
    got = {}
    for size in (1, 10_000):
        with IdentityGraph(f"sqlite:///{tmp_path / f'g{size}.db'}") as g:
            got[size] = counts(import_events(g, [path], batch_size=size))
    assert got[1] == got[10_000]


def test_a_missing_path_raises_before_anything_is_written(graph: IdentityGraph, tmp_path: Path) -> None:
    good = _write(tmp_path, "h.jsonl", jsonl(HISTORY))
    with pytest.raises(SourceError, match=r"nope\.jsonl: no such file or folder$"):
        import_events(graph, [good, tmp_path / "nope.jsonl"])
    assert list(graph.identities()) == []


def test_batch_size_must_be_positive(graph: IdentityGraph, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        import_events(graph, [_write(tmp_path, "h.jsonl", jsonl(HISTORY))], batch_size=0)


# -- strict ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size, chunk", [(1, None), (2, None), (10_000, None), (10_000, 2)])
def test_strict_stops_at_the_first_invalid_event_after_committing_the_ones_before(
    graph: IdentityGraph, tmp_path: Path, batch_size: int, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunk is not None:  # the stop ends a batch of several chunks: they are committed too
        import identity_graph.importer as importer
        monkeypatch.setattr(importer, "CHUNK_EVENTS", chunk)
    path = _write(tmp_path, "h.jsonl", jsonl(HISTORY[:5] + [{"type": "identify"}] + HISTORY[5:]))
    with pytest.raises(StrictImportStopped) as info:
        import_events(graph, [path], strict=True, batch_size=batch_size)
    stop = info.value
    assert str(stop) == f"{path}:6: userId: the event has neither a userId nor an anonymousId"
    assert (stop.summary.events, stop.summary.applied, stop.summary.invalid) == (6, 5, 1)
    assert profiles(graph) == {P("u1", "a1", "e@x", "a2"), P("u2")}  # a3 (line 7) never came


def test_strict_import_of_a_clean_file_completes(graph: IdentityGraph, tmp_path: Path) -> None:
    summary = import_events(graph, [_write(tmp_path, "h.jsonl", jsonl(HISTORY))], strict=True)
    assert counts(summary) == EXPECTED_COUNTS


# -- re-running --------------------------------------------------------------------------


def _snapshot(graph: IdentityGraph) -> tuple[Any, ...]:
    s = graph.stats()
    return (list(graph.identities()), stored_links(graph), s.ids, s.known_ids, s.profiles, s.events,
            s.links_merged, s.links_together, s.links_refused)


@pytest.mark.parametrize("batch_size", [3, 10_000])
def test_re_running_an_import_changes_nothing(graph: IdentityGraph, tmp_path: Path, batch_size: int) -> None:
    paths = FORMS["mixed-files"](tmp_path)
    import_events(graph, paths, batch_size=batch_size)
    before = _snapshot(graph)
    again = import_events(graph, paths, batch_size=batch_size)
    assert _snapshot(graph) == before
    assert counts(again) == {
        "events": 8, "applied": 0, "duplicates": 8, "conflicts": 0, "invalid": 0, "blocked": 0,
        "links_merged": 0, "links_together": 0, "links_refused": {}, "new_ids": 0, "profiles_touched": 0,
    }


def test_re_running_events_without_message_ids_or_times_changes_nothing(graph: IdentityGraph, tmp_path: Path) -> None:
    bare = [{k: v for k, v in e.items() if k not in ("messageId", "timestamp")} for e in HISTORY]
    path = _write(tmp_path, "bare.jsonl", jsonl(bare))
    import_events(graph, [path])
    before = _snapshot(graph)
    again = import_events(graph, [path])
    assert (again.events, again.applied, again.duplicates, again.blocked) == (8, 0, 8, 0)
    assert _snapshot(graph) == before


def test_a_re_run_in_a_new_process_reads_no_stored_ids(
    make_graph: Callable[..., IdentityGraph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every event of a re-run is registered already, so no stored ID needs reading, not
    even for the anonymous events' first-seen times; a fresh graph object has an empty
    cache, like a new process. (It used to read the whole graph for those.)"""
    path = _write(tmp_path, "h.jsonl", jsonl(linked_history(600, seed=5)))
    import_events(make_graph(), [path], batch_size=100)
    graph = make_graph()
    before = _snapshot(graph)
    reads: list[str] = []
    load_ids, all_ids = WriteTx.load_ids, WriteTx.all_ids

    def counted_load_ids(tx: WriteTx, ids: Any) -> Any:
        ids = list(ids)
        reads.extend(ids)
        return load_ids(tx, ids)

    monkeypatch.setattr(WriteTx, "load_ids", counted_load_ids)
    monkeypatch.setattr(WriteTx, "all_ids", lambda tx, limit: reads.append("*") or all_ids(tx, limit))
    again = import_events(graph, [path], batch_size=100)
    assert (again.applied, again.duplicates) == (0, 600)
    assert reads == []
    assert _snapshot(graph) == before


# -- bulk path vs one by one -------------------------------------------------------------


def collision_history(seed: int, n: int) -> list[dict[str, Any]]:
    """Few users and devices, alias chains, shared devices, junk and integer IDs, tied
    times, events without messageId, and identical redeliveries."""
    rng = random.Random(seed)
    users: list[Any] = [f"u{i}" for i in range(60)] + [7, 8, "null", ""]
    devices: list[Any] = [f"d{i}" for i in range(90)] + ["undefined", "0"]
    out: list[dict[str, Any]] = []
    for i in range(n):
        t = rng.randrange(0, 900)
        msg = f"m{i:05d}"
        kind = rng.random()
        if kind < 0.4:
            e = identify(t, msg, user=rng.choice(users), anon=rng.choice(devices))
        elif kind < 0.6:
            e = alias(t, msg, rng.choice(users + devices), rng.choice(users))
        elif kind < 0.75:
            e = ev("track", t, msg, userId=rng.choice(users))
        elif kind < 0.9:
            e = ev(rng.choice(["page", "screen", "group"]), t, msg, anonymousId=rng.choice(devices),
                   userId=rng.choice(users))
        else:
            e = ev("page", t, msg, anonymousId=rng.choice(devices))
        if rng.random() < 0.05:
            del e["messageId"]
        out.append(e)
        if rng.random() < 0.05:
            out.append(dict(e))  # an identical redelivery
    return out


def realistic_history(n: int) -> list[dict[str, Any]]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.generate import generate_events

    return list(generate_events(n, seed=11))


HISTORIES: dict[str, tuple[Callable[[], list[dict[str, Any]]], MergeRules]] = {
    "collisions": (lambda: collision_history(5, 400), MergeRules(max_profile_ids=12)),
    "realistic": (lambda: realistic_history(700), MergeRules()),
}


class Backend:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.tmp, self.n = name, tmp, 0
        self.pg = PostgresSchemas(postgres_base_url()) if name == "postgresql" else None  # type: ignore[arg-type]
        self.references: dict[str, tuple[dict[str, str], set[tuple[Any, ...]]]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}

    def new_url(self) -> str:
        if self.pg is not None:
            return self.pg.new_url()
        self.n += 1
        return f"sqlite:///{self.tmp / f'g{self.n}.db'}"

    def history(self, name: str) -> list[dict[str, Any]]:
        if name not in self.events:
            self.events[name] = HISTORIES[name][0]()
        return self.events[name]

    def reference(self, name: str) -> tuple[dict[str, str], set[tuple[Any, ...]]]:
        """The graph of ``name`` ingested one event at a time, in a shuffled order."""
        if name not in self.references:
            events = list(self.history(name))
            random.Random(99).shuffle(events)
            with IdentityGraph(self.new_url(), rules=HISTORIES[name][1]) as g:
                for e in events:
                    g.ingest(e)
                self.references[name] = (dict(g.identities()), stored_links(g))
        return self.references[name]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path_factory.mktemp(request.param))
    yield b
    if b.pg is not None:
        b.pg.drop_all()


def _bulk(backend: Backend, name: str, batch_size: int, tmp_path: Path) -> IdentityGraph:
    events = backend.history(name)
    # The file also holds invalid lines: skipped, they must change nothing.
    lines = jsonl(events[: len(events) // 2]) + b"{not json\n" + jsonl([{"type": "identify"}]) + jsonl(events[len(events) // 2:])
    path = _write(tmp_path, "history.jsonl.gz", gzip.compress(lines))
    g = IdentityGraph(backend.new_url(), rules=HISTORIES[name][1])
    summary = import_events(g, [path], batch_size=batch_size)
    assert summary.invalid == 2
    return g


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
@pytest.mark.parametrize("history", list(HISTORIES))
def test_bulk_import_gives_the_map_of_one_by_one_ingestion_in_any_order(
    backend: Backend, history: str, batch_size: int, tmp_path: Path
) -> None:
    with _bulk(backend, history, batch_size, tmp_path) as g:
        got = dict(g.identities())
    expected = backend.reference(history)[0]
    assert len(expected) > 100
    assert got == expected


@pytest.mark.parametrize("batch_size", [7, 10_000])
@pytest.mark.parametrize("history", list(HISTORIES))
def test_bulk_import_stores_the_link_outcomes_of_one_by_one_ingestion(
    backend: Backend, history: str, batch_size: int, tmp_path: Path
) -> None:
    with _bulk(backend, history, batch_size, tmp_path) as g:
        got = stored_links(g)
    assert got == backend.reference(history)[1]


@pytest.mark.parametrize("history", list(HISTORIES))
def test_a_batch_of_several_chunks_is_one_transaction_with_the_same_graph(
    backend: Backend, history: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser hands over chunks of 7 events and a batch takes chunks up to 64 events:
    a transaction of ten chunks (70 events), committed once, gives the graph and the
    link outcomes of one-by-one ingestion."""
    import identity_graph.importer as importer
    from identity_graph.store import Store

    expected = backend.reference(history)  # first: its one-by-one writes are not counted
    monkeypatch.setattr(importer, "CHUNK_EVENTS", 7)
    commits: list[int] = []
    real_run_write = Store.run_write

    def run_write(store: Store, fn: Callable[[Any], Any]) -> Any:
        result = real_run_write(store, fn)
        commits.append(len(result) if isinstance(result, list) else 0)  # chunks applied
        return result

    monkeypatch.setattr(Store, "run_write", run_write)
    with _bulk(backend, history, 64, tmp_path) as g:
        assert (dict(g.identities()), stored_links(g)) == expected
    valid = len(backend.history(history))
    chunks = [n for n in commits if n]
    assert chunks == [10] * (valid // 70) + ([-(-(valid % 70) // 7)] if valid % 70 else []), commits


# The parse worker (a child process reads and validates while the parent writes) -----------

def test_the_parse_worker_gives_the_same_graph_and_summary(make_graph: Callable[..., IdentityGraph],
                                                           tmp_path: Path) -> None:
    history = linked_history(3000, 5)
    path = _write(tmp_path, "h.jsonl", jsonl(history[:1500]) + b"not json\n" + jsonl(history[1500:]))
    rules = MergeRules(max_profile_ids=8)
    with IdentityGraph(f"sqlite:///{tmp_path / 'seq.db'}", rules=rules) as seq:
        expected = import_events(seq, [path], batch_size=400, parallel=False)
        expected_map = dict(seq.identities())
    graph = make_graph(rules)
    summary = import_events(graph, [path], batch_size=400, parallel=True)
    assert counts(summary) == counts(expected)
    assert [str(i) for i in summary.issues] == [str(i) for i in expected.issues] == [f"{path}:1501: " + expected.issues[0].reason]
    assert dict(graph.identities()) == expected_map


def test_the_parse_workers_report_a_conflict_in_a_later_range_at_the_files_own_line(
    graph: IdentityGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each worker numbers its ranges' lines from 1; the writer adds the lines of the ranges
    # before, to invalid lines and to conflicts found only when their batch is applied.
    import identity_graph.importer as importer

    monkeypatch.setattr(importer, "SMALL_CHUNK", 50)  # the file's first and last ranges: this file is small
    history = linked_history(3000, 12)
    clash = dict(history[0], userId="someone-else")  # messageId m00000 again, other content
    path = _write(tmp_path, "h.jsonl", jsonl(history[:2600]) + jsonl([clash]) + b"not json\n" + jsonl(history[2600:]))
    assert len(importer.plan_units(expand_sources([path]), 100, 2)) > 20
    summary = import_events(graph, [path], batch_size=100, parallel=True)
    assert [str(i) for i in summary.issues] == [
        f"{path}:2602: invalid JSON (invalid literal, expected 'null': line 1 column 1 (char 0))",
        f"{path}:2601: messageId: {CONFLICT_REASON} ('m00000')",
    ]


@pytest.mark.parametrize("events, bad_after, batch_size", [(500, 300, 64), (3000, 2222, 100)])
def test_the_parse_workers_stop_at_the_first_invalid_event_when_strict(
    graph: IdentityGraph, tmp_path: Path, events: int, bad_after: int, batch_size: int
) -> None:
    # The file is cut into byte ranges that the two workers parse in turn: the stop is at
    # the first invalid line whichever range it falls in.
    history = linked_history(events, 6)
    path = _write(tmp_path, "h.jsonl",
                  jsonl(history[:bad_after]) + b'{"type": "identify"}\n' + jsonl(history[bad_after:]))
    with pytest.raises(StrictImportStopped) as stop:
        import_events(graph, [path], batch_size=batch_size, strict=True, parallel=True)
    line = bad_after + 1
    assert str(stop.value) == f"{path}:{line}: userId: the event has neither a userId nor an anonymousId"
    assert stop.value.summary.events == line
    with IdentityGraph("sqlite://") as reference:
        reference.ingest_many(history[:bad_after])
        assert dict(graph.identities()) == dict(reference.identities())


def test_a_killed_parse_worker_ends_the_import_with_one_line_and_a_rerun_finishes_it(
    graph: IdentityGraph, tmp_path: Path
) -> None:
    """The OOM killer's way: both workers get SIGKILL once the writer has taken a chunk.
    The writer meets the end of their pipes (between messages or in the middle of one),
    commits what it took, and says what happened; the same import run again completes."""
    import multiprocessing
    import os
    import signal

    from identity_graph.importer import ImportWorkerFailed

    history = linked_history(6000, 13)
    path = _write(tmp_path, "h.jsonl", jsonl(history))
    killed: list[int] = []

    def kill_the_workers(_: Any) -> None:
        if not killed:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
                killed.append(child.pid)  # type: ignore[arg-type]

    with pytest.raises(ImportWorkerFailed) as failed:
        import_events(graph, [path], batch_size=100, parallel=True, on_progress=kill_the_workers)
    assert len(killed) == 2
    assert str(failed.value) == ("a parse worker stopped unexpectedly (killed by SIGKILL); the events read before"
                                 " it are committed: run the import again to finish it")
    assert 0 < graph.stats().events < 6000  # the chunks taken before the kill stayed
    again = import_events(graph, [path], batch_size=100, parallel=True)
    assert again.applied + again.duplicates == 6000
    with IdentityGraph("sqlite://") as reference:
        import_events(reference, [path], batch_size=100)
        assert dict(graph.identities()) == dict(reference.identities())


def test_a_script_without_a_main_guard_hears_why_its_parse_workers_failed_to_start(tmp_path: Path) -> None:
    """The spawned workers import the calling script again; one that imports at its top
    level makes them fail in multiprocessing's bootstrapping, before they parse a line.
    The import says so, and what to do, instead of "stopped unexpectedly"."""
    import subprocess
    import sys

    path = _write(tmp_path, "h.jsonl", jsonl(linked_history(3000, 5)))
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from identity_graph import IdentityGraph\n"
        "from identity_graph.importer import ImportWorkerFailed, import_events\n"
        f"graph = IdentityGraph('sqlite:///{tmp_path / 'g.db'}')\n"
        "try:\n"
        f"    import_events(graph, [{str(path)!r}], batch_size=100, parallel=True)\n"
        "except ImportWorkerFailed as exc:\n"
        "    print(exc)\n"
        "    print(graph.stats().events)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert done.stdout.splitlines() == [
        "a parse worker failed to start (exit code 1): workers are spawned and import the calling script again,"
        " so a script that imports with parallel=True must guard its top level with"
        ' `if __name__ == "__main__":` (or pass parallel=False); the worker\'s error is on stderr',
        "0",
    ]
    assert "bootstrapping phase" in done.stderr  # the child's own error, which the message points to


@pytest.mark.parametrize("batch_size", [50, 10_000])
def test_the_parse_worker_reports_an_unreadable_file_as_a_source_error(
    graph: IdentityGraph, tmp_path: Path, batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import identity_graph.importer as importer

    monkeypatch.setattr(importer, "CHUNK_EVENTS", 50)  # 10,000: the error ends a batch of several chunks
    good = _write(tmp_path, "a.jsonl", jsonl(linked_history(100, 7)))
    bad = _write(tmp_path, "b.jsonl.gz", gzip.compress(jsonl(linked_history(200, 8)))[:-40])
    with pytest.raises(SourceError, match=rf"^{bad}: cannot read \("):
        import_events(graph, [good, bad], batch_size=batch_size, parallel=True)
    # The first file's events were committed, and the second file's before the damage.
    assert graph.resolve("d1") is not None and graph.stats().events > 100


def test_the_import_command_uses_the_worker_only_when_it_pays_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import identity_graph.importer as importer
    from identity_graph.importer import parallel_pays_off

    PARALLEL_MIN_BYTES = 8 << 20  # noqa: N806 (smaller than the real threshold: a smaller test file)
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", PARALLEL_MIN_BYTES)
    small = _write(tmp_path, "small.jsonl", jsonl(HISTORY))
    assert not parallel_pays_off([small]) and not parallel_pays_off(["-"])
    assert not parallel_pays_off([tmp_path / "missing.jsonl"])
    padding = "x" * 900
    events = [dict(e, properties={"pad": padding}) for e in linked_history(PARALLEL_MIN_BYTES // 900 + 500, 9)]
    big = _write(tmp_path, "big.jsonl", jsonl(events))
    assert parallel_pays_off([big]) == ((__import__("os").cpu_count() or 1) > 1)


def test_a_large_import_through_the_command_equals_the_sequential_library_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import identity_graph.importer as importer
    from identity_graph.cli import cli

    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 8 << 20)  # this 10 MB file then takes the workers

    padding = "x" * 900
    events = [dict(e, properties={"pad": padding}) for e in linked_history(10_000, 10)]
    big = _write(tmp_path, "big.jsonl", jsonl(events))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(cli, ["--db", url, "import", str(big), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    with IdentityGraph(f"sqlite:///{tmp_path / 'lib.db'}") as lib, IdentityGraph(url) as via_cli:
        expected = import_events(lib, [big], parallel=False)
        assert json.loads(result.stdout)["applied"] == expected.applied
        assert dict(via_cli.identities()) == dict(lib.identities())


def test_a_large_import_refreshes_the_planner_statistics(pg_schemas, tmp_path: Path, monkeypatch) -> None:
    # Without statistics PostgreSQL scans ig_links whole for every cluster query.
    import identity_graph.importer as importer
    from sqlalchemy import create_engine, text

    monkeypatch.setattr(importer, "ANALYZE_AFTER", 4)
    url = pg_schemas.new_url()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def analysed() -> set[str]:
        with engine.connect() as conn:
            # reltuples is -1 until a table is first analysed (or vacuumed); the
            # pg_stat views would lag behind, being flushed asynchronously.
            return {r[0] for r in conn.execute(text(
                "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                " AND relkind = 'r' AND reltuples >= 0"))}

    with IdentityGraph(url) as g:
        assert import_events(g, [_write(tmp_path, "small.jsonl", jsonl(HISTORY[:3]))]).applied == 3
        assert analysed() == set()
        assert import_events(g, [_write(tmp_path, "big.jsonl", jsonl(HISTORY))]).applied == 4
        assert {"ig_ids", "ig_links", "ig_profiles", "ig_events"} <= analysed()
    engine.dispose()


def test_two_parse_workers_over_mixed_files_give_the_one_reader_graph_and_issues(
    make_graph: Callable[..., IdentityGraph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain JSON-lines files are cut into byte ranges that two workers parse in turn;
    gzip files and arrays go whole to one. The writer takes the pieces in input order, so
    the graph, the counts and every reported line equal one reader's (rule 9 included:
    messageIds re-used across files and ranges with other content)."""
    import identity_graph.importer as importer

    history = linked_history(4000, 11)
    folder = tmp_path / "exports"
    _write(folder, "1.jsonl", jsonl(history[:1700]) + b"not json\n" + jsonl(history[1700:2500]))
    _write(folder, "2.jsonl.gz", gzip.compress(jsonl(history[2500:3000]) + b'{"type": "track"}\n'))
    _write(folder, "3.json", json.dumps(history[3000:3300]).encode())
    _write(folder, "4.jsonl", b"\r\n".join(orjson.dumps(e) for e in history[3300:] + history[100:140]))
    rules = MergeRules(max_profile_ids=8)
    with IdentityGraph(f"sqlite:///{tmp_path / 'one.db'}", rules=rules) as one:
        expected = import_events(one, [folder], batch_size=150)
        expected_map = dict(one.identities())
    monkeypatch.setattr(importer, "PARSE_WORKERS", 2)
    units = importer.plan_units(expand_sources([folder]), 150, 2)
    assert sum(u.end is not None for u in units) > 10 and sum(u.end is None for u in units) == 2
    graph = make_graph(rules)
    summary = import_events(graph, [folder], batch_size=150, parallel=True)
    # Ranges cut batches elsewhere than 150 events, and a link's outcome as counted when its
    # batch is applied may change when a later batch replays a late event: the stored
    # outcomes are what must agree, and every count that does not depend on batching.
    same = {k: v for k, v in counts(summary).items() if not k.startswith("links_")}
    assert same == {k: v for k, v in counts(expected).items() if not k.startswith("links_")}
    assert [str(i) for i in summary.issues] == [str(i) for i in expected.issues]
    assert [i.location.line for i in summary.issues if i.location.source.endswith("1.jsonl")] == [1701]
    assert dict(graph.identities()) == expected_map
    with IdentityGraph(f"sqlite:///{tmp_path / 'one.db'}", rules=rules) as one:
        stored = sorted((l.message_id, l.source, l.target, l.outcome, l.reason) for l in one._store.all_links())
    assert sorted((l.message_id, l.source, l.target, l.outcome, l.reason) for l in graph._store.all_links()) == stored



def test_the_parse_workers_modules_load_without_the_database_layer() -> None:
    """A parse worker imports the importer and the write path's plain modules, never
    SQLAlchemy (~0.1 s of each worker's start, while the writer waits for its first chunk)."""
    import subprocess
    import sys

    code = "import sys, identity_graph.importer; print(sorted(m for m in sys.modules if m.startswith('sqlalchemy')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# A parse worker leaves a chunk's events without a userId (the fall-back's) out of the
# pipe; the writer reads them again when a batch falls back.

def _fall_back_history(tmp_path: Path, gz: bool) -> tuple[Path, list[Any], str]:
    history = linked_history(3000, 21)
    first_page = next(e for e in history if e["type"] == "page")
    clash = dict(first_page, anonymousId="clash-anon")  # its messageId again, other content: the fall-back
    no_time = {"type": "page", "anonymousId": "no-time-anon", "messageId": "no-time-1"}
    data = jsonl(history[:2600]) + jsonl([clash, no_time]) + jsonl(history[2600:])
    path = _write(tmp_path, "h.jsonl.gz" if gz else "h.jsonl", gzip.compress(data) if gz else data)
    return path, history, first_page["messageId"]


def _counting_rereads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import identity_graph.importer as importer

    calls: list[int] = []
    real = importer._reread_others

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(importer, "_reread_others", counting)
    return calls


@pytest.mark.parametrize("gz", [False, True], ids=["ranges", "gzip"])
def test_a_batch_that_falls_back_reads_its_left_out_events_again(
    make_graph: Callable[..., IdentityGraph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    path, _, clashing = _fall_back_history(tmp_path, gz)
    rereads = _counting_rereads(monkeypatch)
    with IdentityGraph(f"sqlite:///{tmp_path / 'seq.db'}") as seq:
        expected = import_events(seq, [path], batch_size=100, parallel=False)
        expected_map = dict(seq.identities())
    graph = make_graph(MergeRules())
    summary = import_events(graph, [path], batch_size=100, parallel=True)
    assert rereads  # the batch with the clash fell back, and its events were read again
    assert counts(summary) == counts(expected) and summary.conflicts == 1
    assert [str(i) for i in summary.issues] == [str(i) for i in expected.issues] == [
        f"{path}:2601: messageId: {CONFLICT_REASON} ({clashing!r})"]
    assert dict(graph.identities()) == expected_map and graph.resolve("clash-anon") is None
    # Read again with the time it was first given: the register and the ID agree on it.
    with graph._store.engine.connect() as conn:
        from sqlalchemy import text

        registered = conn.execute(text("SELECT time FROM ig_events WHERE message_id = 'no-time-1'")).scalar_one()
        first_seen = conn.execute(text("SELECT first_time FROM ig_ids WHERE id = 'no-time-anon'")).scalar_one()
    assert registered == first_seen


def test_into_a_graph_with_erased_ids_the_workers_send_every_event(
    make_graph: Callable[..., IdentityGraph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There every batch falls back (each event is checked against the erased IDs)."""
    path, history, _ = _fall_back_history(tmp_path, gz=False)
    rereads = _counting_rereads(monkeypatch)
    graphs = []
    for parallel in (False, True):
        g = make_graph(MergeRules()) if parallel else IdentityGraph(f"sqlite:///{tmp_path / 'seq.db'}")
        g.ingest(history[0])
        g.delete(history[0]["userId"] if history[0].get("userId") else history[0]["anonymousId"])
        assert g.has_erased_ids()
        import_events(g, [path], batch_size=100, parallel=parallel)
        graphs.append(dict(g.identities()))
        if not parallel:
            g.close()
    assert rereads == [] and graphs[0] == graphs[1]


def test_a_file_that_changed_under_the_import_is_not_read_again_as_if_it_had_not(tmp_path: Path) -> None:
    import identity_graph.importer as importer

    path, _, _ = _fall_back_history(tmp_path, gz=False)
    unit = importer.Unit(expand_sources([path])[0])
    chunk = next(importer._unit_chunks(unit, 100, MergeRules(), False, 1))[0]
    assert importer._reread_others(unit, 0, chunk.now, 100, MergeRules(), False, 1, chunk.register) == chunk.others
    path.write_bytes(jsonl(linked_history(3000, 22)))
    with pytest.raises(SourceError, match=rf"^{path}: the file changed while it was being imported; run the import again$"):
        importer._reread_others(unit, 0, chunk.now, 100, MergeRules(), False, 1, chunk.register)


def test_the_writer_lets_go_of_each_chunk_once_applied(
    graph: IdentityGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import pauses the cyclic collector: a chunk caught in a reference cycle (say, by
    the callable that would read its events again) would stay in memory to the end."""
    import gc
    import weakref

    import identity_graph.batch as batch

    path, _, _ = _fall_back_history(tmp_path, gz=False)
    alive: list[weakref.ref[Any]] = []
    real_apply = batch.apply_chunk

    def apply_chunk(tx: Any, rules: Any, cache: Any, chunk: Any, *rest: Any) -> Any:
        alive.append(weakref.ref(chunk))
        return real_apply(tx, rules, cache, chunk, *rest)

    monkeypatch.setattr(batch, "apply_chunk", apply_chunk)
    was = gc.isenabled()
    gc.disable()
    try:
        import_events(graph, [path], batch_size=100, parallel=True)
        assert len(alive) > 20 and sum(r() is not None for r in alive) <= 1
    finally:
        if was:
            gc.enable()


def _transaction_sizes(graph: IdentityGraph, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The events of each transaction the graph's imports apply, in order (filled as they run)."""
    sizes: list[int] = []
    apply = graph.apply_chunks

    def counted(chunks: Any, summary: Any, **options: Any) -> Any:
        events = [0]

        def counting() -> Any:
            for chunk in chunks:
                events[0] += len(chunk)
                yield chunk

        out = apply(counting(), summary, **options)
        sizes.append(events[0])
        return out

    monkeypatch.setattr(graph, "apply_chunks", counted)
    return sizes


# Events read when each transaction starts, its first chunk included: 5 and 15 -> 10;
# 25 -> 12, so 15 (a transaction ends at the first chunk boundary at or past its size);
# 40 -> 20; 60 -> 30; 90, 130 and 170 -> 40 (the cap), the last cut short by the end of the
# input. Then a graph of 200 rows: 100, capped at 40, from the first transaction.
# PostgreSQL's transactions keep the default (GROWING_DIALECTS).
_GROWN = {"sqlite": ([10, 10, 15, 20, 30, 40, 40, 35], [40] * 5), "postgresql": ([10] * 20, [10] * 20)}


def test_transactions_grow_with_the_register_on_sqlite_unless_a_batch_size_is_given(
    graph: IdentityGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``batch_size`` a SQLite transaction takes max(DEFAULT_IMPORT_BATCH, registered /
    BATCH_GROWTH) events, at most MAX_IMPORT_BATCH (here 10, /2 and 40, in chunks of 5),
    counting the rows the graph held before and the events read since; a PostgreSQL one
    DEFAULT_IMPORT_BATCH; with it, every transaction takes that many. The graph is the
    same either way."""
    monkeypatch.setattr(importer, "CHUNK_EVENTS", 5)
    monkeypatch.setattr(importer, "DEFAULT_IMPORT_BATCH", 10)
    monkeypatch.setattr(importer, "BATCH_GROWTH", 2)
    monkeypatch.setattr(importer, "MAX_IMPORT_BATCH", 40)
    history = linked_history(400, seed=5)
    first, second = _write(tmp_path, "a.jsonl", jsonl(history[:200])), _write(tmp_path, "b.jsonl", jsonl(history[200:]))
    sizes = _transaction_sizes(graph, monkeypatch)
    grown_first, grown_second = _GROWN[graph.dialect]
    import_events(graph, [first])
    assert sizes == grown_first
    graph.optimize()  # PostgreSQL's size is the planner's estimate: ANALYZE (an import of 10k events does it)
    assert graph.register_size() == 200
    del sizes[:]
    import_events(graph, [second])
    assert sizes == grown_second
    grown = profiles(graph)
    del sizes[:]
    with IdentityGraph(f"sqlite:///{tmp_path / 'fixed.db'}") as fixed:
        fixed_sizes = _transaction_sizes(fixed, monkeypatch)
        import_events(fixed, [first, second], batch_size=30)
        assert fixed_sizes == [30] * 13 + [10]
        assert profiles(fixed) == grown


def test_batch_events_grows_from_the_default_to_the_cap() -> None:
    from identity_graph.importer import BATCH_GROWTH, DEFAULT_IMPORT_BATCH, MAX_IMPORT_BATCH, batch_events

    assert batch_events(0) == DEFAULT_IMPORT_BATCH
    assert batch_events(DEFAULT_IMPORT_BATCH * BATCH_GROWTH) == DEFAULT_IMPORT_BATCH
    assert batch_events(3 * DEFAULT_IMPORT_BATCH * BATCH_GROWTH) == 3 * DEFAULT_IMPORT_BATCH
    assert batch_events(10**12) == MAX_IMPORT_BATCH


def test_register_size_counts_the_registered_events(graph: IdentityGraph, tmp_path: Path) -> None:
    """Exact on SQLite; on PostgreSQL the planner's estimate, exact once a small table is analysed."""
    assert graph.register_size() == 0
    graph.ingest_many(linked_history(50, seed=2))
    graph.optimize()  # PostgreSQL: ANALYZE
    assert graph.register_size() == 50
