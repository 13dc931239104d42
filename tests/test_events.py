"""Validation (section 4): every invalid-input class names its field, and changes nothing."""

from __future__ import annotations

import pytest

from identity_graph import IdentityGraph, InvalidEvent, parse_event
from identity_graph.events import parse_time

BASE = {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
        "timestamp": "2024-01-01T00:00:00Z"}


def with_(**changes: object) -> dict:
    event = dict(BASE)
    for key, value in changes.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


INVALID = [
    # (name, event, field, words the message must contain)
    ("not an object", ["identify"], "event", "must be a JSON object, not an array"),
    ("string, not an object", "identify", "event", "must be a JSON object, not a string"),
    ("missing type", with_(type=...), "type", "is missing"),
    ("unknown type", with_(type="login"), "type", "'login' is not one of"),
    ("type not a string", with_(type=3), "type", "3 is not one of"),
    ("no userId and no anonymousId", with_(userId=..., anonymousId=...), "userId", "neither a userId nor an anonymousId"),
    ("both IDs null", with_(userId=None, anonymousId=None), "userId", "neither a userId nor an anonymousId"),
    ("alias without previousId", {"type": "alias", "userId": "u1"}, "previousId", "needs a previousId"),
    ("alias without userId", {"type": "alias", "previousId": "p"}, "userId", "needs a userId"),
    ("track without event", with_(type="track"), "event", 'needs an "event" name'),
    ("track event not a string", with_(type="track", event=5), "event", "must be a string, not an integer"),
    ("group without groupId", with_(type="group"), "groupId", "needs a groupId"),
    ("userId boolean", with_(userId=True), "userId", "must be a string or an integer, not a boolean"),
    ("anonymousId float", with_(anonymousId=1.5), "anonymousId", "not a number with a fraction"),
    ("userId array", with_(userId=["u"]), "userId", "not an array"),
    ("userId object", with_(userId={"id": "u"}), "userId", "not an object"),
    ("previousId boolean", {"type": "alias", "previousId": False, "userId": "u"}, "previousId", "not a boolean"),
    ("ID of 1,025 characters", with_(userId="x" * 1025), "userId", "longer than 1024 characters"),
    ("ID with NUL", with_(anonymousId="a\x00b"), "anonymousId", "NUL"),
    ("unparseable timestamp", with_(timestamp="last tuesday"), "timestamp", "is not an ISO-8601 date-time"),
    ("timestamp a number", with_(timestamp=1700000000), "timestamp", "must be an ISO-8601 string"),
    ("unparseable receivedAt used", with_(timestamp=..., receivedAt="2024-13-45"), "receivedAt", "not an ISO-8601"),
    ("messageId integer", with_(messageId=7), "messageId", "must be a string, not an integer"),
    ("messageId empty", with_(messageId=""), "messageId", "must not be empty"),
]


@pytest.mark.parametrize("name,event,field,words", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_event_names_field_and_changes_nothing(graph: IdentityGraph, name, event, field, words) -> None:
    graph.identify(user_id="existing", anonymous_id="dev")
    before = list(graph.identities())
    with pytest.raises(InvalidEvent) as caught:
        graph.ingest(event)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")
    assert list(graph.identities()) == before


def test_ingest_many_skips_invalid_with_position_and_keeps_valid(graph: IdentityGraph) -> None:
    events = [
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"},
        {"type": "identify", "userId": True, "messageId": "m2"},
        {"type": "identify", "userId": "u2", "anonymousId": "a2", "messageId": "m3"},
        "garbage",
    ]
    summary = graph.ingest_many(events)
    assert (summary.events, summary.applied, summary.invalid) == (4, 2, 2)
    assert [(e.position, e.field) for e in summary.errors] == [(1, "userId"), (3, "event")]
    assert dict(graph.identities()) == {"a1": "u1", "u1": "u1", "a2": "u2", "u2": "u2"}


def test_ingest_many_reports_invalid_through_callback(graph: IdentityGraph) -> None:
    seen = []
    summary = graph.ingest_many([{"type": "nope"}], on_invalid=seen.append)
    assert summary.invalid == 1 and summary.errors == [] and seen[0].field == "type"


def test_integer_id_is_its_decimal_string() -> None:
    event = parse_event({"type": "identify", "userId": 507, "messageId": "m"})
    assert event.user_id == "507"


def test_string_ids_are_taken_as_is() -> None:
    event = parse_event({"type": "identify", "userId": " Jen@Email.com ", "messageId": "m"})
    assert event.user_id == " Jen@Email.com "


def test_time_falls_back_through_the_fields_in_order() -> None:
    event = parse_event({"type": "identify", "userId": "u", "messageId": "m",
                         "originalTimestamp": None, "receivedAt": "2024-01-01T00:00:01Z",
                         "sentAt": "2030-01-01T00:00:00Z"})
    assert event.time == parse_time("2024-01-01T00:00:01Z")


def test_event_without_time_gets_the_ingest_time() -> None:
    event = parse_event({"type": "identify", "userId": "u", "messageId": "m"}, now=123)
    assert event.time == 123


def test_offsets_compare_as_utc_instants() -> None:
    assert parse_time("2024-01-01T01:00:00+01:00") == parse_time("2024-01-01T00:00:00Z")
    assert parse_time("2024-01-01T00:00:00") == parse_time("2024-01-01T00:00:00Z")  # naive is UTC


def test_extreme_years_parse() -> None:
    assert parse_time("0001-01-01T00:00:00+01:00") < parse_time("9999-12-31T23:59:59-05:00")


def test_derived_message_id_is_stable_and_order_free() -> None:
    a = parse_event({"type": "identify", "userId": "u", "timestamp": "2024-01-01T00:00:00Z"})
    b = parse_event({"timestamp": "2024-01-01T00:00:00Z", "userId": "u", "type": "identify"})
    assert a.message_id == b.message_id and a.message_id.startswith("sha256:")
