"""The import's fast path (``events.event_from_line``, msgspec) against the general path
(``orjson.loads`` + ``parse_event``) that defines what a JSON line means.

The fast path may hand any line back (None); what it returns must be exactly the general
path's Event. Checked on every line of the bad-input catalogue (also with a messageId and
a time added, so that the fast path gets that far), on generated lines, and through a
whole import. One documented difference: a number beyond a double's range in a field the
engine does not read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_graph import IdentityGraph, InvalidEvent
from identity_graph.events import _MINUTES, _slow_parse_time, event_from_line, parse_event, parse_time
from identity_graph.importer import import_events

from test_bad_input import EVENT_CASES, FILE_CASES

STAMP = b'"messageId":"fast-path","timestamp":"2024-01-01T00:00:00.000Z",'


def general(line: bytes) -> Any:
    """What the general path makes of one line: an Event, or None when it refuses it."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict or "batch" in value:
        return None
    try:
        return parse_event(value, now=0)
    except InvalidEvent:
        return None


def agrees(line: bytes) -> Any:
    fast = event_from_line(line)
    if fast is not None:
        assert fast == general(line), line[:200]
    return fast


def stamped(line: bytes) -> bytes:
    """``line`` with a messageId and a timestamp first (a JSON object's later keys win)."""
    start = line.find(b"{")
    return line if start < 0 else line[: start + 1] + STAMP + line[start + 1:]


CATALOGUE = [c.as_line() for c in EVENT_CASES if c.as_line() is not None]
RAW = [line for case in FILE_CASES for line in case.data.split(b"\n")]


@pytest.mark.parametrize("line", CATALOGUE + [stamped(line) for line in CATALOGUE], ids=lambda b: b[:50].decode("utf-8", "replace"))
def test_catalogue_events_agree(line: bytes) -> None:
    agrees(line)


def test_catalogue_files_agree() -> None:
    overflow = b'"x":1e999'
    taken = 0
    for line in RAW + [stamped(line) for line in RAW]:
        if overflow in line and b'"messageId"' in line:
            continue  # the documented difference: test_overflowing_number_in_an_unread_field
        taken += agrees(line) is not None
    assert taken >= 10  # the valid lines between the bad ones (not only "hand back")


def test_most_catalogue_events_take_the_fast_path() -> None:
    # Not a speed test: shows the comparisons above compared something.
    fast = [line for line in CATALOGUE if event_from_line(line) is not None]
    assert len(fast) > len(CATALOGUE) // 3


@pytest.mark.parametrize("line", [
    b'{"type":"identify","userId":true,"messageId":"m","timestamp":"2024-01-01T00:00:00Z"}',
    b'{"type":"identify","userId":18446744073709551616,"messageId":"m","timestamp":"2024-01-01T00:00:00Z"}',
    b'{"type":"identify","userId":-9223372036854775809,"messageId":"m","timestamp":"2024-01-01T00:00:00Z"}',
    b'{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z","x":"\xff"}',
    b'{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z","x":"\\ud800"}',
    b'{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z","x":' + b"[" * 1100 + b"]" * 1100 + b"}",
    b'{"type":"identify","userId":"u","timestamp":"2024-01-01T00:00:00Z"}',  # its messageId is a hash of it all
    b'{"type":"identify","userId":"u","messageId":"m"}',  # its time is the import's "now"
    b'{"batch":[{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z"}]}',
    b'{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z","batch":null}',
    b'[{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z"}]',
    b'\xef\xbb\xbf{"type":"identify","userId":"u","messageId":"m","timestamp":"2024-01-01T00:00:00Z"}',
    b'{"type":"identify","userId":"u","messageId":5,"timestamp":"2024-01-01T00:00:00Z"}',
    b'{"type":"identify","userId":"u","messageId":"m","timestamp":1700000000}',
])
def test_what_the_fast_path_hands_back(line: bytes) -> None:
    assert event_from_line(line) is None


def test_integers_orjson_keeps_are_taken() -> None:
    for n in (-(2**63), 2**64 - 1, 0, 507):
        line = b'{"type":"identify","userId":%d,"messageId":"m","timestamp":"2024-01-01T00:00:00Z"}' % n
        assert agrees(line).user_id == str(n)


def test_overflowing_number_in_an_unread_field(tmp_path: Path) -> None:
    """The documented difference (events.py, "the import's fast path"): 1e999 where the
    engine does not look is valid JSON, and the event counts; without a messageId the
    event is hashed whole, which needs the number, so it is still refused."""
    line = b'{"type":"identify","userId":"big-u","anonymousId":"big-a","messageId":"big","timestamp":"2024-01-01T00:00:00Z","x":1e999}'
    assert general(line) is None and event_from_line(line) is not None
    no_mid = b'{"type":"identify","userId":"big-u2","anonymousId":"big-a2","x":1e999}'
    path = tmp_path / "big.jsonl"
    path.write_bytes(line + b"\n" + no_mid + b"\n")
    with IdentityGraph("sqlite://") as g:
        s = import_events(g, [path])
        assert (s.applied, s.invalid) == (1, 1)
        assert g.resolve("big-a") == "big-u" and g.resolve("big-a2") is None
        assert "number is infinity" in str(s.issues[0]) and str(s.issues[0]).startswith(f"{path}:2: ")


ID_VALUES = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8), st.text(alphabet="ab\x00é\u2028", max_size=4),
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.just("x" * 1025), st.lists(st.integers(), max_size=2),
)
TIMES = st.one_of(st.none(), st.just("2024-01-01T00:00:00.000Z"), st.just("2024-02-30T00:00:00Z"),
                  st.just("2024-01-01"), st.integers(), st.text(max_size=6))
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["identify", "track", "alias", "group", "page", "nope", None])},
    optional={"userId": ID_VALUES, "anonymousId": ID_VALUES, "previousId": ID_VALUES,
              "messageId": st.one_of(st.just("m"), st.just(""), st.integers(), st.text(max_size=4)),
              "event": st.one_of(st.none(), st.just("Clicked"), st.integers()),
              "groupId": st.one_of(st.none(), st.just("g"), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)),
              "timestamp": TIMES, "originalTimestamp": TIMES, "receivedAt": TIMES, "sentAt": TIMES,
              "context": st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=5), st.floats(), st.integers()), max_size=3)},
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_generated_events_agree(event: dict[str, Any]) -> None:
    # json.dumps: integers of any size stay integers in the text (orjson would refuse them).
    agrees(json.dumps(event, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9٠-٩]{2}\.[0-9]{3}Z\Z"))
def test_remembered_minutes_parse_like_fromisoformat(text: str) -> None:
    def slow() -> Any:
        try:
            return _slow_parse_time(text, "timestamp")
        except InvalidEvent as exc:
            return str(exc)

    def fast() -> Any:
        try:
            return parse_time(text)
        except InvalidEvent as exc:
            return str(exc)

    expected = slow()
    assert fast() == expected  # the minute's first sight
    assert fast() == expected  # and from the cache


def test_the_minute_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import identity_graph.events as events

    monkeypatch.setattr(events, "_MINUTES_KEPT", 3)
    _MINUTES.clear()
    times = [parse_time(f"2024-01-01T00:{m:02d}:30.500Z") for m in range(10)]
    assert times == [_slow_parse_time(f"2024-01-01T00:{m:02d}:30.500Z", "timestamp") for m in range(10)]
    assert len(_MINUTES) <= 3


def test_ingest_command_takes_what_import_takes(tmp_path: Path) -> None:
    """``identity-graph ingest FILE`` decodes lines as ``import`` does, fast path included:
    the same file gives the same graph both ways, also for the documented difference."""
    from click.testing import CliRunner

    from identity_graph.cli import cli

    lines = [
        b'{"type":"identify","userId":"big-u","anonymousId":"big-a","messageId":"big","timestamp":"2024-01-01T00:00:00Z","x":1e999}',
        b'{"type":"identify","userId":"big-u2","anonymousId":"big-a2","x":1e999}',
        b'{"type":"page","anonymousId":"p-a","messageId":"p","timestamp":"2024-01-01T00:00:01.000Z"}',
        b'{"type":"alias","previousId":"p-a","userId":"big-u","messageId":"al","timestamp":"2024-01-01T00:00:02.000Z"}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    graphs = []
    for command in ("import", "ingest"):
        url = f"sqlite:///{tmp_path / command}.db"
        result = CliRunner().invoke(cli, ["--db", url, command, str(path)], prog_name="identity-graph")
        assert result.exit_code == 0, result.output
        with IdentityGraph(url) as g:
            graphs.append(dict(g.identities()))
    assert graphs[0] == graphs[1] == {"big-a": "big-u", "big-u": "big-u", "p-a": "big-u"}
