"""The ``import`` command: input forms, summary text, --errors, --strict, --json, exit codes."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from helpers import alias, ev, identify, profiles
from identity_graph import IdentityGraph, MergeRules
from identity_graph.cli import cli
from test_importer import EXPECTED, FORMS, HISTORY, envelope, jsonl, stored_links

SUMMARY_TAIL = [
    "  applied 7, duplicates 0, invalid 0, blocked 1",
    "  links: 3 merged, 1 together, 1 refused (known_id 1)",
    "  new IDs 6, profiles touched 3",
]
FIRST_LINE = re.compile(r"imported (\d+) files?: ([\d,]+) events in \d+\.\d s \([\d,]+ events/s\)")
NO_USER = "userId: the event has neither a userId nor an anonymousId"


def run(url: str, *args: Any, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", url, "import", *map(str, args)], input=input)


def graph_of(url: str) -> set[tuple[str, frozenset[str]]]:
    with IdentityGraph(url) as g:
        return profiles(g)


def snapshot(url: str) -> tuple[Any, ...]:
    with IdentityGraph(url) as g:
        s = g.stats()
        return dict(g.identities()), stored_links(g), s.ids, s.known_ids, s.profiles, s.events


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- input forms -------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
def test_every_input_form_imports_and_prints_the_summary(graph_url: str, tmp_path: Path, form: str) -> None:
    paths = FORMS[form](tmp_path)
    result = run(graph_url, *paths, "--quiet")
    assert (result.exit_code, result.stderr) == (0, "")
    first, *rest = result.stdout.splitlines()
    m = FIRST_LINE.fullmatch(first)
    assert m is not None, first
    assert m.group(2) == "8"
    assert rest == SUMMARY_TAIL
    assert graph_of(graph_url) == EXPECTED


def test_the_file_count_is_singular_for_one_file_and_plural_otherwise(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    one = run(url, FORMS["jsonl"](tmp_path / "1")[0])
    many = run(url, *FORMS["mixed-files"](tmp_path / "5"))
    assert one.stdout.startswith("imported 1 file: 8 events in ")
    assert many.stdout.startswith("imported 5 files: 8 events in ")


def test_stdin_is_read_for_a_dash(graph_url: str) -> None:
    result = run(graph_url, "-", input=jsonl(HISTORY))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == SUMMARY_TAIL
    assert graph_of(graph_url) == EXPECTED


@pytest.mark.parametrize("form", ["gz-jsonl", "envelope", "gz-envelope", "array", "bom"])
def test_stdin_is_detected_by_content_like_a_file(tmp_path: Path, form: str) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    data = FORMS[form](tmp_path)[0].read_bytes()
    result = run(url, "-", input=data)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == SUMMARY_TAIL
    assert graph_of(url) == EXPECTED


def test_stdin_and_files_mix_in_one_call(graph_url: str, tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", json.dumps(HISTORY[:3], indent=2).encode())
    c = write(tmp_path / "c.jsonl.gz", gzip.compress(jsonl(HISTORY[6:])))
    result = run(graph_url, a, "-", c, input=json.dumps(envelope(HISTORY[3:6]), indent=2).encode())
    assert result.exit_code == 0
    assert result.stdout.startswith("imported 3 files: 8 events in ")
    assert result.stdout.splitlines()[1:] == SUMMARY_TAIL
    assert graph_of(graph_url) == EXPECTED


def test_an_empty_file_imports_nothing_and_succeeds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = run(url, write(tmp_path / "e.jsonl", b""))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == [
        "  applied 0, duplicates 0, invalid 0, blocked 0",
        "  links: 0 merged, 0 together, 0 refused",
        "  new IDs 0, profiles touched 0",
    ]


def test_leading_blank_lines_do_not_make_the_file_invalid(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = run(url, write(tmp_path / "h.jsonl", b"\n\n" + jsonl(HISTORY)))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == SUMMARY_TAIL


def test_counts_use_thousands_separators_and_list_refusals_by_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    IdentityGraph(url, rules=MergeRules(max_profile_ids=2)).close()
    events = [ev("track", i % 3000, f"t{i}", userId=f"u{i}") for i in range(1500)] + [
        identify(1, "m1", user="u1", anon="a1"),
        identify(2, "m2", user="u1", anon="a2"),      # size_cap
        identify(3, "m3", user="u2", anon="a1"),      # known_id
        identify(4, "m4", user="u3", anon="a1"),      # known_id
    ]
    result = run(url, write(tmp_path / "h.jsonl", jsonl(events)))
    assert result.exit_code == 0
    assert result.stdout.startswith("imported 1 file: 1,504 events in ")
    assert result.stdout.splitlines()[1:] == [
        "  applied 1,504, duplicates 0, invalid 0, blocked 0",
        "  links: 1 merged, 0 together, 3 refused (known_id 2, size_cap 1)",
        "  new IDs 1,502, profiles touched 1,501",
    ]


def test_re_running_the_command_is_a_no_op(graph_url: str, tmp_path: Path) -> None:
    paths = FORMS["folder"](tmp_path)
    assert run(graph_url, *paths).exit_code == 0
    before = snapshot(graph_url)
    again = run(graph_url, *paths)
    assert again.exit_code == 0
    assert again.stdout.splitlines()[1:] == [
        "  applied 0, duplicates 8, invalid 0, blocked 0",
        "  links: 0 merged, 0 together, 0 refused",
        "  new IDs 0, profiles touched 0",
    ]
    assert snapshot(graph_url) == before


# -- --json ------------------------------------------------------------------------------


def test_json_prints_the_summary_as_one_json_object(graph_url: str, tmp_path: Path) -> None:
    result = run(graph_url, *FORMS["mixed-files"](tmp_path), "--json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.count("\n") == 1
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "files", "events", "applied", "duplicates", "conflicts", "invalid", "blocked", "links_merged", "links_together",
        "links_refused", "new_ids", "profiles_touched", "replayed_events", "elapsed_seconds", "events_per_second",
    }
    timing = {k: summary.pop(k) for k in ("elapsed_seconds", "events_per_second")}
    assert all(isinstance(v, (int, float)) and v >= 0 for v in timing.values())
    assert summary == {
        "files": 5, "events": 8, "applied": 7, "duplicates": 0, "conflicts": 0, "invalid": 0, "blocked": 1, "links_merged": 3,
        "links_together": 1, "links_refused": {"known_id": 1}, "new_ids": 6, "profiles_touched": 3,
        "replayed_events": 0,
    }


# -- invalid events, --errors ------------------------------------------------------------


def _with_invalid(tmp_path: Path, n_invalid: int) -> tuple[Path, list[tuple[int, str, str]]]:
    """HISTORY with ``n_invalid`` invalid lines woven in; returns the file and, for each
    invalid line, (line number, reason, raw text)."""
    bad_kinds = [
        (b'{"type":"identify"}', NO_USER),
        (b'{"type":"login","userId":"u"}', "type: 'login' is not one of alias, group, identify, page, screen, track"),
        (b'{"type":"identify","userId":true}', "userId: must be a string or an integer, not a boolean"),
        (b'["identify"]', "event: must be a JSON object, not an array"),
        (b'{"type":"alias","userId":"u"}', "previousId: an alias event needs a previousId"),
        (b'{"type":"track","userId":"u"}', 'event: a track event needs an "event" name'),
        (b"{not json", None),
    ]
    lines: list[bytes] = []
    bad: list[tuple[int, str, str]] = []
    good = iter(HISTORY)
    for i in range(n_invalid):
        raw, reason = bad_kinds[i % len(bad_kinds)]
        if reason is None:
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                reason = f"invalid JSON ({exc})"
        lines.append(raw)
        bad.append((len(lines), reason, raw.decode()))
        nxt = next(good, None)
        if nxt is not None:
            lines.append(orjson.dumps(nxt))
    lines.extend(orjson.dumps(e) for e in good)
    return write(tmp_path / "h.jsonl", b"\n".join(lines) + b"\n"), bad


def test_invalid_events_are_listed_on_stderr_as_file_line_reason(graph_url: str, tmp_path: Path) -> None:
    path, bad = _with_invalid(tmp_path, 3)
    result = run(graph_url, path)
    assert result.exit_code == 0
    assert result.stderr == "".join(f"{path}:{line}: {reason}\n" for line, reason, _ in bad)
    assert result.stdout.splitlines()[1] == "  applied 7, duplicates 0, invalid 3, blocked 1"
    assert graph_of(graph_url) == EXPECTED


def test_exactly_ten_invalid_events_are_all_shown_without_a_more_line(tmp_path: Path) -> None:
    path, bad = _with_invalid(tmp_path, 10)
    result = run(f"sqlite:///{tmp_path / 'g.db'}", path)
    assert result.stderr == "".join(f"{path}:{line}: {reason}\n" for line, reason, _ in bad)


def test_only_the_first_ten_invalid_events_are_shown_then_a_count(tmp_path: Path) -> None:
    path, bad = _with_invalid(tmp_path, 13)
    result = run(f"sqlite:///{tmp_path / 'g.db'}", path)
    assert result.exit_code == 0
    assert result.stderr == "".join(f"{path}:{line}: {reason}\n" for line, reason, _ in bad[:10]) + (
        "... and 3 more rejected events (use --errors FILE to keep them all)\n")
    assert result.stdout.splitlines()[1] == "  applied 7, duplicates 0, invalid 13, blocked 1"


def test_errors_file_keeps_every_rejected_line_as_json(graph_url: str, tmp_path: Path) -> None:
    path, bad = _with_invalid(tmp_path, 13)
    errors = tmp_path / "rejected.jsonl"
    result = run(graph_url, path, "--errors", errors)
    assert result.exit_code == 0
    assert result.stderr == "".join(f"{path}:{line}: {reason}\n" for line, reason, _ in bad[:10]) + (
        "... and 3 more rejected events (all in the --errors file)\n")
    rows = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"file": str(path), "line": line, "item": None, "reason": reason, "raw": raw}
                    for line, reason, raw in bad]
    assert graph_of(graph_url) == EXPECTED


def test_errors_file_locates_items_of_arrays_and_envelopes(tmp_path: Path) -> None:
    arr = write(tmp_path / "a.json", json.dumps([HISTORY[0], {"type": "identify"}], indent=2).encode())
    env = write(tmp_path / "b.json", json.dumps(
        {"batch": [HISTORY[1], {"type": "page"}], "context": {"ip": "192.0.2.1"}}, indent=2).encode())
    errors = tmp_path / "rejected.jsonl"
    result = run(f"sqlite:///{tmp_path / 'g.db'}", arr, env, "--errors", errors)
    assert result.stderr == f"{arr}: [1]: {NO_USER}\n{env}:1: batch[1]: {NO_USER}\n"
    rows = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {"file": str(arr), "line": None, "item": 1, "reason": NO_USER, "raw": '{"type":"identify"}'}
    assert {k: v for k, v in rows[1].items() if k != "raw"} == {"file": str(env), "line": 1, "item": 1, "reason": NO_USER}
    assert json.loads(rows[1]["raw"]) == {"type": "page", "context": {"ip": "192.0.2.1"}}  # as merged


def test_errors_file_keeps_non_ascii_raw_text_as_is(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", '{"type":"identify","traits":{"name":"Jürgen 例"}}\n'.encode())
    errors = tmp_path / "rejected.jsonl"
    run(f"sqlite:///{tmp_path / 'g.db'}", path, "--errors", errors)
    text = errors.read_text(encoding="utf-8")
    assert "Jürgen 例" in text
    assert json.loads(text)["raw"] == '{"type":"identify","traits":{"name":"Jürgen 例"}}'


# -- --strict ----------------------------------------------------------------------------


def _strict_history() -> list[dict[str, Any]]:
    return [identify(i % 3000, f"s{i:05d}", user=f"u{i % 40}", anon=f"a{i % 97}") for i in range(1200)]


def test_strict_stops_at_the_first_invalid_event_with_exit_1(graph_url: str, tmp_path: Path) -> None:
    events = _strict_history()
    path = write(tmp_path / "h.jsonl", jsonl(events[:1100]) + b'{"type":"identify"}\n{"type":"x"}\n' + jsonl(events[1100:]))
    result = run(graph_url, path, "--strict", "--batch-size", "64")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (f"Error: {path}:1101: {NO_USER} (--strict: stopped here; the 1,100 events before it"
                             " were imported)\n")
    with IdentityGraph(graph_url) as g:
        assert g.stats().events == 1100
        assert g.resolve("a1") is not None
        with IdentityGraph("sqlite://") as clean:
            clean.ingest_many(events[:1100])
            assert dict(g.identities()) == dict(clean.identities())


def test_after_a_strict_stop_fixing_the_file_and_re_running_ends_as_a_clean_import(graph_url: str, tmp_path: Path) -> None:
    events = _strict_history()
    path = write(tmp_path / "h.jsonl", jsonl(events[:700]) + b'{"type":"identify"}\n' + jsonl(events[700:]))
    assert run(graph_url, path, "--strict", "--batch-size", "50").exit_code == 1
    path.write_bytes(jsonl(events))  # fixed: the invalid line removed
    result = run(graph_url, path, "--strict", "--batch-size", "50")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1] == "  applied 500, duplicates 700, invalid 0, blocked 0"
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    assert run(clean_url, path).exit_code == 0
    assert snapshot(graph_url) == snapshot(clean_url)


def test_strict_in_an_envelope_names_the_item_and_keeps_the_items_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path = write(tmp_path / "b.json", json.dumps({"batch": HISTORY[:2] + [{"type": "page"}] + HISTORY[2:]}, indent=2).encode())
    result = run(url, path, "--strict")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}:1: batch[2]: {NO_USER} (--strict: stopped here; the 2 events before it"
                             " were imported)\n")
    assert graph_of(url) == {("u1", frozenset({"u1", "a1"}))}


# -- exit codes --------------------------------------------------------------------------


def test_success_exits_0(tmp_path: Path) -> None:
    assert run(f"sqlite:///{tmp_path / 'g.db'}", *FORMS["jsonl"](tmp_path)).exit_code == 0


def test_invalid_events_alone_do_not_fail_the_import(tmp_path: Path) -> None:
    result = run(f"sqlite:///{tmp_path / 'g.db'}", write(tmp_path / "h.jsonl", b'{"type":"identify"}\nnope\n'))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1] == "  applied 0, duplicates 0, invalid 2, blocked 0"


def test_a_missing_path_exits_1_with_one_line_and_imports_nothing(graph_url: str, tmp_path: Path) -> None:
    good = FORMS["jsonl"](tmp_path)[0]
    missing = tmp_path / "nope" / "events.jsonl"
    result = run(graph_url, good, missing)
    assert result.exit_code == 1
    assert (result.stdout, result.stderr) == ("", f"Error: {missing}: no such file or folder\n")
    assert graph_of(graph_url) == set()


def test_an_unreachable_database_exits_1_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = FORMS["jsonl"](tmp_path)[0]
    result = run("postgresql+psycopg://nobody@127.0.0.1:1/x?connect_timeout=2", path)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: cannot connect to ")
    assert result.stderr.count("\n") == 1, result.stderr


def test_an_unreachable_database_message_hides_the_password(tmp_path: Path) -> None:
    result = run("postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/x?connect_timeout=2", FORMS["jsonl"](tmp_path)[0])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "s3cret-pw" not in result.output


def test_a_truncated_gzip_file_exits_1_with_one_error_line(tmp_path: Path) -> None:
    data = gzip.compress(jsonl([identify(i % 3000, f"m{i}", user=f"u{i}") for i in range(4000)]))
    path = write(tmp_path / "h.jsonl.gz", data[: len(data) // 2])
    result = run(f"sqlite:///{tmp_path / 'g.db'}", path)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: {path}: cannot read (")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_corrupt_gzip_file_exits_1_naming_the_file(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(jsonl([identify(i % 3000, f"m{i}", user=f"u{i}") for i in range(4000)])))
    data[-8:-4] = b"\0\0\0\0"  # wrong CRC
    path = write(tmp_path / "h.jsonl.gz", bytes(data))
    result = run(f"sqlite:///{tmp_path / 'g.db'}", path)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: {path}: cannot read (")


@pytest.mark.parametrize("args", [[], ["x.jsonl", "--batch-size", "0"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = run(f"sqlite:///{tmp_path / 'g.db'}", *args)
    assert result.exit_code == 2


def test_the_graph_keeps_its_rules_when_imported_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    IdentityGraph(url, rules=MergeRules(max_profile_ids=2)).close()
    path = write(tmp_path / "h.jsonl", jsonl([alias(1, "m1", "a", "b"), alias(2, "m2", "c", "b")]))
    result = run(url, path)
    assert result.stdout.splitlines()[2] == "  links: 1 merged, 0 together, 1 refused (size_cap 1)"


def test_the_batch_size_default_is_the_importers() -> None:
    from identity_graph.importer import BATCH_GROWTH, DEFAULT_IMPORT_BATCH, MAX_IMPORT_BATCH

    option = next(p for p in cli.commands["import"].params if p.name == "batch_size")
    assert option.default is None  # the importer's growing batch
    assert f"Default: {DEFAULT_IMPORT_BATCH:,}; on SQLite growing with the graph to {MAX_IMPORT_BATCH:,}" in option.help
    assert BATCH_GROWTH == 8 and "(an eighth of the events it holds)" in option.help
