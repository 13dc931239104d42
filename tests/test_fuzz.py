"""Fuzzing (issue #6, item 5): valid and mutated Segment JSON fed to ``ingest``.

The properties, whatever the input:

- only :class:`InvalidEvent` escapes ``ingest``; and when it does, the graph (identities
  and stats) is exactly as before;
- an accepted event's IDs resolve (an applied event's non-blocked IDs are in the graph);
  a duplicate, conflicting or blocked one changes no identity;
- the readers turn any bytes into items, and the parser any item into an event or an
  :class:`InvalidEvent` (no database needed: many more examples).

Short in CI: a fixed seed (``derandomize``) and a couple of hundred examples per backend.
The atheris harness in ``tests/fuzz/`` runs the parser for as long as one likes.
"""

from __future__ import annotations

import json
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from conftest import PostgresSchemas, postgres_base_url
from identity_graph import IdentityGraph, InvalidEvent, parse_event
from identity_graph.events import EVENT_TYPES, TIME_FIELDS
from identity_graph.readers import Source, SourceError, read_source
from identity_graph.schema import metadata

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies --------------------------------------------------------------------------------

#: A small pool, so that events meet: merges, refusals, duplicates, blocked values.
ID = st.one_of(
    st.sampled_from(["u1", "u2", "u3", "a1", "a2", "a3", "jen@email.com", "507f191e81", "j\u0435n@email.com"]),
    st.sampled_from(["null", "undefined", "", " ", "0", "-1", "anonymous", "[object Object]"]),
    st.integers(-3, 10**20),
    st.text(max_size=12),
)
MESSAGE_ID = st.one_of(st.sampled_from(["m1", "m2", "m3", "m4"]), st.uuids().map(str), st.text(min_size=1, max_size=40))
OFFSETS = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
                           timezone(timedelta(hours=23, minutes=59)), None])
TIME = st.builds(
    lambda dt, sep, fraction: dt.isoformat(sep=sep, timespec=fraction),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS),
    st.sampled_from(["T", " "]),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
) | st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789Z", "2024-01-01", "2024-01-01t00:00:00z"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
#: What a mutation may put anywhere: any JSON, and what only a Python caller can send.
WILD = st.one_of(
    JSON,
    st.text(st.characters(codec=None), max_size=30),                    # any code point...
    st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=4),  # ...surrogates and controls
    st.integers(min_value=2**63) | st.integers(max_value=-(2**63)),    # beyond 64 bits
    st.floats(),                                                       # NaN, infinities
    st.integers(1000, 3000).map(lambda n: "x" * n),                    # around the 1,024 limit
    st.sampled_from([b"u1", ("u1",), frozenset({"u1"}), datetime(2024, 1, 1), 1j, object()]),
    st.builds(lambda depth: _nest(depth), st.integers(250, 1200)),    # past orjson's 255 levels
    TIME, st.text(string.digits + "-:TZ+. ", max_size=30),
)
FIELDS = ["type", "userId", "anonymousId", "previousId", "messageId", "event", "groupId", "traits",
          "properties", "context", *TIME_FIELDS]


def _nest(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A Segment event as the spec has it: every required field, the IDs from a small pool."""
    type_ = draw(st.sampled_from(sorted(EVENT_TYPES)))
    event: dict[str, Any] = {"type": type_}
    if type_ == "alias":
        event["previousId"], event["userId"] = draw(ID), draw(ID)
    else:
        ids = draw(st.sampled_from([("userId",), ("anonymousId",), ("userId", "anonymousId")]))
        for name in ids:
            event[name] = draw(ID)
        if draw(st.booleans()):
            event.setdefault("anonymousId", None)  # official clients send an explicit null
    if type_ == "track":
        event["event"] = draw(st.text(max_size=10))
    if type_ == "group":
        event["groupId"] = draw(st.text(min_size=1, max_size=5) | st.integers())
    if draw(st.integers(0, 4)):
        event["messageId"] = draw(MESSAGE_ID)
    for name in draw(st.lists(st.sampled_from(TIME_FIELDS), max_size=2, unique=True)):
        event[name] = draw(TIME)
    for name in draw(st.lists(st.sampled_from(["traits", "properties", "context"]), max_size=2, unique=True)):
        event[name] = draw(JSON)
    return event


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event with one to three fields dropped or replaced by anything at all, or
    not an object in the first place."""
    if draw(st.integers(0, 19)) == 0:
        return draw(WILD)
    event = draw(valid_events())
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(FIELDS) | st.text(max_size=6))
        if draw(st.booleans()) and name in event:
            del event[name]
        else:
            event[name] = draw(WILD)
    return event


EVENTS = st.one_of(valid_events(), mutated_events())


# -- the graph ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fuzz_graph(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityGraph]:
    """One graph per backend for every example: events meet the history of earlier ones."""
    if request.param == "sqlite":
        url, schemas = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'graph.db'}", None
    else:
        schemas = PostgresSchemas(postgres_base_url())  # type: ignore[arg-type]
        url = schemas.new_url()
    graph = IdentityGraph(url)
    yield graph
    graph.close()
    if schemas is not None:
        schemas.drop_all()


def snapshot(graph: IdentityGraph) -> tuple[Any, ...]:
    """The identities, and for the stats a fingerprint of what they are computed from:
    every table's row count and the ``ig_meta`` rows, whose lock row holds the duplicates
    counter and takes a fresh generation token in every committed write. Equal
    fingerprints mean nothing was written, so every stat is equal too, at two queries
    instead of ``stats()``'s dozen (which would double the run)."""
    with graph._store.engine.connect() as conn:
        counts = conn.execute(select(*[
            select(func.count()).select_from(t).scalar_subquery() for t in metadata.sorted_tables
        ])).one()
        meta = sorted(tuple(r) for r in conn.execute(select(metadata.tables["ig_meta"])))
    return list(graph.identities()), tuple(counts), meta


class Known:
    """The graph's last verified snapshot: taken again only after something may have
    changed it, so a run of rejected events costs one snapshot each, not two."""

    def __init__(self) -> None:
        self.state: dict[int, tuple[Any, ...]] = {}

    def get(self, graph: IdentityGraph) -> tuple[Any, ...]:
        if id(graph) not in self.state:
            self.state[id(graph)] = snapshot(graph)
        return self.state[id(graph)]

    def forget(self, graph: IdentityGraph) -> None:
        self.state.pop(id(graph), None)


KNOWN = Known()


@FUZZ
@given(event=EVENTS)
def test_only_invalid_event_escapes_ingest_and_a_rejection_changes_nothing(fuzz_graph: IdentityGraph, event: Any) -> None:
    """Any exception but InvalidEvent fails the test (and Hypothesis shrinks the event)."""
    graph = fuzz_graph
    before = KNOWN.get(graph)
    KNOWN.forget(graph)  # whatever happens next, check again from the database
    try:
        result = graph.ingest(event)
    except InvalidEvent as exc:
        assert exc.field and exc.reason and "\n" not in str(exc)
        after = snapshot(graph)
        assert after == before
        KNOWN.state[id(graph)] = after
        return
    assert result.status in ("applied", "duplicate", "conflict", "blocked")
    parsed = parse_event(event)  # valid, so this cannot raise either
    assert result.message_id == parsed.message_id
    ids = [i for i in (parsed.user_id, parsed.anonymous_id, parsed.previous_id)
           if i is not None and not graph.rules.is_blocked(i)]
    if result.status == "applied":
        assert ids and all(graph.resolve(i) is not None for i in ids)
    else:
        assert list(graph.identities()) == before[0]
        assert result.links == ()


# -- readers and parser, without a database -----------------------------------------------------------

LINE = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda e: json.dumps(e, default=str).encode(), valid_events()),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"[", b"]", b"{", b'{"batch":[', b"\x1f\x8b", b"NaN", b"\x00", b"\r"]),
)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=6), end=st.sampled_from([b"\n", b"\r\n", b"", b"]"]))
def test_any_bytes_read_as_items_and_parse_or_are_rejected(tmp_path: Path, lines: list[bytes], end: bytes) -> None:
    """Whatever a file holds: items with a location, each valid or an InvalidEvent, one-line
    reasons; only a corrupt gzip stream is a SourceError (the whole file is unreadable)."""
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + end)
    try:
        items = list(read_source(Source(str(path), None)))
    except SourceError as exc:
        assert path.read_bytes()[:2] == b"\x1f\x8b" and "\n" not in str(exc)
        return
    for item in items:
        assert str(item.location).startswith(str(path))
        if item.error is not None:
            assert "\n" not in item.error
            continue
        try:
            parse_event(item.value, now=0)
        except InvalidEvent as exc:
            assert "\n" not in str(exc)


def test_the_strategies_make_both_valid_and_invalid_events() -> None:
    """A fuzz run that only ever hit one branch would prove little: both are common."""
    outcomes = {"valid": 0, "invalid": 0}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(event=EVENTS)
    def count(event: Any) -> None:
        try:
            parse_event(event, now=0)
            outcomes["valid"] += 1
        except InvalidEvent:
            outcomes["invalid"] += 1

    count()
    assert outcomes["valid"] >= 20 and outcomes["invalid"] >= 10, outcomes

