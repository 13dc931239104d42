"""Reading event sources: every input form, detected by content, yields the same events."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from identity_graph.readers import EVENT_SUFFIXES, Location, Source, SourceError, expand_sources, read_source

E1 = {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"}
E2 = {"type": "track", "userId": "u1", "event": "Clicked", "messageId": "m2"}
E3 = {"type": "alias", "previousId": "e@x", "userId": "u1", "messageId": "m3"}
EVENTS = [E1, E2, E3]


def jsonl(events: list[Any]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def read(path: Path | str) -> list[tuple[str, Any, str | None]]:
    """(location, value, error) of every item read from ``path``."""
    return [(str(i.location), i.value, i.error) for i in read_source(Source(str(path), None))]


def values(path: Path | str) -> list[Any]:
    items = list(read_source(Source(str(path), None)))
    assert [i.error for i in items] == [None] * len(items)
    return [i.value for i in items]


# -- JSON lines --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["events.jsonl", "events.ndjson", "events.json", "events.txt", "noext"])
def test_json_lines_are_read_line_by_line_whatever_the_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(jsonl(EVENTS))
    assert read(path) == [(f"{path}:{n}", e, None) for n, e in enumerate(EVENTS, 1)]


def test_blank_lines_are_skipped_and_still_counted_in_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(orjson.dumps(E1) + b"\n\n   \n" + orjson.dumps(E2) + b"\n\n")
    assert read(path) == [(f"{path}:1", E1, None), (f"{path}:4", E2, None)]


def test_leading_blank_lines_do_not_turn_json_lines_into_one_document(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n\n" + jsonl(EVENTS))
    assert read(path) == [(f"{path}:{n}", e, None) for n, e in enumerate(EVENTS, 3)]


def test_crlf_line_ends_are_read_and_stripped_from_the_raw_text(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(orjson.dumps(E1) + b"\r\n" + b"{oops\r\n")
    items = list(read_source(Source(str(path), None)))
    assert items[0].value == E1
    assert items[1].error is not None and items[1].error.startswith("invalid JSON (")
    assert items[1].raw == b"{oops"


def test_an_undecodable_line_is_an_error_item_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(orjson.dumps(E1) + b"\nnot json\n" + orjson.dumps(E2) + b"\n")
    items = list(read_source(Source(str(path), None)))
    assert [str(i.location) for i in items] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert [i.value for i in items] == [E1, None, E2]
    try:
        orjson.loads(b"not json\n")
    except orjson.JSONDecodeError as exc:
        expected = f"invalid JSON ({exc})"
    assert items[1].error == expected
    assert items[1].raw == b"not json"


def test_a_line_holding_a_non_object_is_yielded_as_is_for_validation_to_reject(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(orjson.dumps(E1) + b"\n5\n\"x\"\n")
    assert read(path) == [(f"{path}:1", E1, None), (f"{path}:2", 5, None), (f"{path}:3", "x", None)]


def test_a_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl(EVENTS))
    assert values(path) == EVENTS


def test_an_empty_file_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"")
    assert read(path) == []


def test_a_file_of_blank_lines_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n  \n\n")
    assert read(path) == []


def test_non_ascii_ids_are_decoded_as_utf8(tmp_path: Path) -> None:
    event = {"type": "identify", "userId": "jürgen@例え.jp", "messageId": "m-ü"}
    path = tmp_path / "e.jsonl"
    path.write_bytes(json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n")
    assert values(path) == [event]


# -- JSON arrays and pretty-printed documents --------------------------------------------


def test_a_json_array_is_read_element_by_element(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(json.dumps(EVENTS, indent=2))
    assert read(path) == [(f"{path}: [{n}]", e, None) for n, e in enumerate(EVENTS)]


def test_a_json_array_with_a_bom_and_leading_whitespace_is_read(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(b"\xef\xbb\xbf\n  " + json.dumps(EVENTS).encode())
    assert values(path) == EVENTS


def test_a_broken_json_array_keeps_the_elements_before_and_reports_the_rest_as_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(b"[" + orjson.dumps(E1) + b"," + orjson.dumps(E2) + b", {oops")
    items = list(read_source(Source(str(path), None)))
    assert [i.value for i in items[:2]] == [E1, E2]
    assert len(items) == 3
    assert str(items[2].location) == f"{path}: [2]"
    assert items[2].error is not None and items[2].error.endswith("; the rest of the file is skipped")


def test_an_empty_json_array_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text("[]")
    assert read(path) == []


def test_a_pretty_printed_single_event_is_one_event(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(E1, indent=2))
    assert read(path) == [(f"{path}:1", E1, None)]


# -- Segment batch envelopes -------------------------------------------------------------

ENVELOPE = {
    "batch": [
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
         "context": {"ip": "10.0.0.1", "locale": "fr-FR"}},
        {"type": "track", "userId": "u1", "event": "Clicked", "messageId": "m2",
         "integrations": {"Mixpanel": True}},
        {"type": "page", "anonymousId": "a1", "messageId": "m3", "context": "not a dict"},
    ],
    "context": {"ip": "192.0.2.1", "library": {"name": "analytics-python"}},
    "integrations": {"All": False, "Mixpanel": False},
    "sentAt": "2024-01-01T00:00:00Z",
}

#: What each event of ENVELOPE reads as: the envelope's context/integrations merged in,
#: the event's own keys winning (a non-dict value of the event's own stays as it is).
MERGED = [
    {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
     "context": {"ip": "10.0.0.1", "locale": "fr-FR", "library": {"name": "analytics-python"}},
     "integrations": {"All": False, "Mixpanel": False}},
    {"type": "track", "userId": "u1", "event": "Clicked", "messageId": "m2",
     "integrations": {"All": False, "Mixpanel": True},
     "context": {"ip": "192.0.2.1", "library": {"name": "analytics-python"}}},
    {"type": "page", "anonymousId": "a1", "messageId": "m3", "context": "not a dict",
     "integrations": {"All": False, "Mixpanel": False}},
]


def test_a_pretty_printed_envelope_yields_its_events_with_context_and_integrations_merged(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(ENVELOPE, indent=2))
    assert read(path) == [(f"{path}:1: batch[{n}]", e, None) for n, e in enumerate(MERGED)]


def test_an_envelope_whose_context_comes_after_its_batch_is_still_merged(tmp_path: Path) -> None:
    envelope = {"batch": ENVELOPE["batch"], "integrations": ENVELOPE["integrations"], "context": ENVELOPE["context"]}
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(envelope, indent=4))
    assert values(path) == MERGED


def test_an_envelope_without_context_yields_its_events_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"batch": EVENTS}, indent=2))
    assert values(path) == EVENTS


def test_an_envelope_on_one_line_inside_json_lines_is_expanded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    before = {"type": "identify", "userId": "u0", "messageId": "m0"}
    after = {"type": "identify", "userId": "u9", "messageId": "m9"}
    path.write_bytes(jsonl([before, ENVELOPE, after]))
    assert read(path) == (
        [(f"{path}:1", before, None)]
        + [(f"{path}:2: batch[{n}]", e, None) for n, e in enumerate(MERGED)]
        + [(f"{path}:3", after, None)]
    )


def test_an_envelope_as_the_first_line_of_json_lines_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "first.jsonl"
    path.write_bytes(jsonl([ENVELOPE, E1]))
    assert values(path) == MERGED + [E1]


def test_an_envelope_whose_batch_is_not_a_list_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl([{"batch": {"type": "identify"}}, E1]))
    assert read(path) == [(f"{path}:1", None, "batch: must be a list of events"), (f"{path}:2", E1, None)]


def test_envelope_items_that_are_not_objects_are_yielded_for_validation_to_reject(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"batch": [E1, 7], "context": {"ip": "1"}}, indent=2))
    assert [v for _, v, _ in read(path)] == [{**E1, "context": {"ip": "1"}}, 7]


# -- gzip --------------------------------------------------------------------------------

FORMS = {
    "jsonl": lambda: jsonl(EVENTS),
    "array": lambda: json.dumps(EVENTS, indent=2).encode(),
    "envelope": lambda: json.dumps({"batch": EVENTS}, indent=2).encode(),
    "envelope-line": lambda: jsonl([{"batch": EVENTS}]),
    "bom-jsonl": lambda: b"\xef\xbb\xbf" + jsonl(EVENTS),
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", ["events.json.gz", "events.gz", "events.jsonl", "no-extension"])
def test_gzip_is_detected_by_content_for_every_form(tmp_path: Path, form: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(FORMS[form]()))
    assert values(path) == EVENTS


def test_a_file_named_gz_that_is_not_compressed_is_read_as_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(jsonl(EVENTS))
    assert values(path) == EVENTS


def test_a_truncated_gzip_file_raises_source_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    data = gzip.compress(jsonl(EVENTS * 50))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=rf"^{path}: cannot read \("):
        list(read_source(Source(str(path), None)))


def test_on_bytes_reports_every_compressed_byte_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(EVENTS * 700)))
    seen: list[int] = []
    assert len(list(read_source(Source(str(path), None), seen.append))) == 2100
    assert sum(seen) == path.stat().st_size


# -- folders -----------------------------------------------------------------------------


def test_a_folder_expands_to_its_event_files_in_sorted_order_skipping_hidden_and_other_names(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    for rel in ["b.jsonl", "a.ndjson", "c.json.gz", "d.txt", "e.log", "f.JSONL", "sub/g.json", "sub/deeper/h.jsonl",
                ".hidden.jsonl", ".git/x.jsonl", "sub/.cache/y.jsonl", "readme.md", "data.csv", "events.gz",
                "archive.tar.gz", "notes"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    got = [Path(s.path).relative_to(root).as_posix() for s in expand_sources([root])]
    assert got == ["a.ndjson", "b.jsonl", "c.json.gz", "d.txt", "e.log", "f.JSONL", "sub/deeper/h.jsonl", "sub/g.json"]


def test_every_event_suffix_is_picked_up_in_a_folder(tmp_path: Path) -> None:
    for suffix in EVENT_SUFFIXES:
        (tmp_path / f"x{suffix}").write_bytes(b"")
        (tmp_path / f"y{suffix}.gz").write_bytes(b"")
    assert len(expand_sources([tmp_path])) == 2 * len(EVENT_SUFFIXES)


def test_a_file_named_explicitly_is_read_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / ".hidden.csv"
    path.write_bytes(jsonl(EVENTS))
    assert expand_sources([path]) == [Source(str(path), path.stat().st_size)]


def test_sources_keep_the_order_they_are_named_in(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_bytes(b"x")
    (tmp_path / "a.jsonl").write_bytes(b"yy")
    sources = expand_sources([tmp_path / "b.jsonl", "-", tmp_path / "a.jsonl"])
    assert [(s.path, s.size) for s in sources] == [
        (str(tmp_path / "b.jsonl"), 1), ("-", None), (str(tmp_path / "a.jsonl"), 2)]


def test_an_empty_folder_expands_to_nothing(tmp_path: Path) -> None:
    assert expand_sources([tmp_path]) == []


def test_a_missing_path_raises_source_error_with_the_exact_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SourceError) as info:
        expand_sources([tmp_path, missing])
    assert str(info.value) == f"{missing}: no such file or folder"


def test_location_strings() -> None:
    assert str(Location("e.jsonl", 17)) == "e.jsonl:17"
    assert str(Location("b.json", 1, 3)) == "b.json:1: batch[3]"
    assert str(Location("a.json", None, 0)) == "a.json: [0]"


def test_json_lines_whose_first_two_lines_are_broken_still_yield_the_valid_lines(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b'{"type": "identify", "userId":\n{"type"\n' + b'{"type":"page","anonymousId":"a"}\n')
    items = list(read_source(expand_sources([path])[0]))
    assert [(i.line, i.error is None) for i in items] == [(1, False), (2, False), (3, True)]
    assert items[2].value == {"type": "page", "anonymousId": "a"}
    assert items[0].error.startswith("invalid JSON")


# -- byte ranges of a JSON-lines file (two parse workers) -------------------------------


def test_reading_a_file_in_ranges_gives_the_same_items_with_lines_numbered_from_each_range(tmp_path: Path) -> None:
    import random

    from identity_graph.readers import line_start, read_range, splittable

    lines = [b"\xef\xbb\xbf" + orjson.dumps(E1), b"", orjson.dumps(E2) + b"\r", b"{broken",
             orjson.dumps({"batch": [E1, E3], "context": {"ip": "1.2.3.4"}}), b"   ", orjson.dumps(E3)]
    lines += [orjson.dumps({**E2, "messageId": f"m{n}", "pad": "x" * (n % 300)}) for n in range(400)]
    data = b"\n".join(lines)  # no line end after the last line
    path = tmp_path / "h.jsonl"
    path.write_bytes(data)
    source = Source(str(path), len(data))
    assert splittable(source)
    whole = [(i.line, i.index, i.value, i.error) for i in read_source(source)]
    rng = random.Random(5)
    for _ in range(20):
        cuts = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(rng.randrange(1, 30)))})
        items, before = [], 0
        for a, b in zip(cuts, cuts[1:]):
            start, end = line_start(str(path), a), line_start(str(path), b)
            counted: list[int] = []
            got = list(read_range(source, start, None if end == len(data) else end, None, counted))
            # Each range counts its own lines from 1; its lines_read is what the next range adds.
            assert counted == [data.count(b"\n", start, end) + (end == len(data) and start < end)]
            items += [(i.line + before, i.index, i.value, i.error) for i in got]
            before += counted[0]
        assert items == whole
        assert before == len(lines)


@pytest.mark.parametrize("content, expected", [
    (jsonl(EVENTS), True),
    (b"\n\n" + jsonl(EVENTS), True),
    (b"not json at all\n" + jsonl(EVENTS), True),  # still JSON lines, with one bad line
    (json.dumps(EVENTS).encode(), False),          # an array
    (json.dumps(E1, indent=2).encode(), False),    # one pretty-printed document
    (gzip.compress(jsonl(EVENTS)), False),
    (b"", False),
])
def test_only_plain_json_lines_files_are_read_in_ranges(tmp_path: Path, content: bytes, expected: bool) -> None:
    from identity_graph.readers import splittable

    path = tmp_path / "f.json"
    path.write_bytes(content)
    assert splittable(Source(str(path), len(content))) is expected
    assert not splittable(Source("-", None))
