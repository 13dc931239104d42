"""What is an event? Segment JSON in, a validated frozen :class:`Event` out.

Pure Python, no I/O. The rules applied here are rules 1, 8 and 9 of the README and the
validation list of section "Validation": every rejection is an :class:`InvalidEvent` that
names the field.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, NamedTuple, Optional, Union

import msgspec
import orjson

from .errors import InvalidEvent

EVENT_TYPES = frozenset({"alias", "identify", "track", "page", "screen", "group"})
_TYPES = {t: t for t in EVENT_TYPES}
#: The fields consulted for event time, in order of preference (rule 8).
TIME_FIELDS = ("timestamp", "originalTimestamp", "receivedAt", "sentAt")
MAX_ID_LENGTH = 1024
MAX_MESSAGE_ID_LENGTH = 1024
#: Prefix of the messageId we derive for events that carry none (rule 9).
DERIVED_ID_PREFIX = "sha256:"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
#: The instants a datetime can hold (years 1 to 9999, UTC), as epoch microseconds.
MIN_TIME = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND
MAX_TIME = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND
_new = tuple.__new__
_JSON_TYPE_NAMES = {bool: "a boolean", float: "a number with a fraction", list: "an array", dict: "an object"}


class Event(NamedTuple):
    """A validated Segment event, reduced to what identity resolution needs.

    (A named tuple: an import makes one per event, and a tuple is the cheapest immutable
    value Python builds.)

    ``time`` is the event time in microseconds since the Unix epoch, UTC; events are
    ordered by ``key == (time, message_id)``. ID fields hold the ID exactly as sent
    (integers turned into their decimal string); ``None`` means absent.

    >>> e = parse_event({"type": "alias", "previousId": "jen@email.com", "userId": 507,
    ...                  "messageId": "m1", "timestamp": "2015-02-23T22:28:55.111Z"})
    >>> e.user_id, e.previous_id, e.key
    ('507', 'jen@email.com', (1424730535111000, 'm1'))
    """

    type: str
    message_id: str
    time: int
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        """The event-time order of rule 8: timestamp, then messageId as a plain string."""
        return (self.time, self.message_id)

    @property
    def timestamp(self) -> datetime:
        """The event time as an aware UTC datetime."""
        return time_to_datetime(self.time)


def time_to_datetime(time: int) -> datetime:
    """Microseconds since the epoch -> aware UTC datetime.

    An event time may lie up to a day outside what a datetime holds ("0001-01-01T00:00:00+01:00"
    is in year 0, UTC): such a time is shown as the nearest datetime there is, rather than
    failing whatever shows it (stats' newest event).

    >>> time_to_datetime(0).isoformat()
    '1970-01-01T00:00:00+00:00'
    >>> time_to_datetime(MAX_TIME + 3_600_000_000).isoformat()
    '9999-12-31T23:59:59.999999+00:00'
    """
    return _EPOCH + timedelta(microseconds=min(max(time, MIN_TIME), MAX_TIME))


def datetime_to_time(value: datetime) -> int:
    """Aware datetime -> microseconds since the epoch; a naive datetime is taken as UTC.

    >>> datetime_to_time(datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
    1000000
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // _MICROSECOND


_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})[.,](\d+)")


def parse_time(value: object, field: str = "timestamp") -> int:
    """Parse an ISO-8601 time (any offset; naive means UTC) into epoch microseconds.

    Digits past the microsecond are dropped; ties are broken by messageId anyway.

    >>> parse_time("2015-02-23T22:28:55.111Z") == parse_time("2015-02-23T23:28:55.111+01:00")
    True
    >>> parse_time("yesterday")
    Traceback (most recent call last):
    ...
    identity_graph.errors.InvalidEvent: timestamp: 'yesterday' is not an ISO-8601 date-time

    Any year a datetime holds is accepted, with any offset, even when the UTC instant
    falls just outside years 1 to 9999 (it is an integer here; see
    :func:`time_to_datetime` for showing it).
    """
    # Segment's clients write "2026-01-01T00:00:20.331Z": such a time is its minute, read
    # once by fromisoformat and remembered, plus the seconds and milliseconds after it. A
    # parse costs ~1 us, one per event of an import; the cache ~0.3 us.
    if type(value) is str and len(value) == 24 and value[23] == "Z" and value[19] == "." and value[16] == ":":
        digits = value[17:19] + value[20:23]  # SS and fff
        if digits.isascii() and digits.isdigit() and digits < "60000":  # no leap second: fromisoformat has none
            minute = _MINUTES.get(value[:16])
            if minute is None:
                minute = _slow_parse_time(value, field) - int(digits) * 1000
                if len(_MINUTES) >= _MINUTES_KEPT:
                    _MINUTES.clear()
                _MINUTES[value[:16]] = minute
            return minute + int(digits) * 1000
    return _slow_parse_time(value, field)


#: "YYYY-MM-DDTHH:MM" -> that minute in epoch microseconds (see parse_time); 45 days of minutes at most.
_MINUTES: dict[str, int] = {}
_MINUTES_KEPT = 1 << 16


def _slow_parse_time(value: object, field: str) -> int:
    if not isinstance(value, str):
        raise InvalidEvent(field, f"must be an ISO-8601 string, not {_type_name(value)}")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        # Python 3.10's fromisoformat does not take the "Z" suffix.
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # 3.10 also only takes 3 or 6 fraction digits: normalise to 6 and retry.
        normalised = _FRACTION.sub(lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", text)
        try:
            parsed = datetime.fromisoformat(normalised)
        except ValueError:
            raise InvalidEvent(field, f"{_short(value)} is not an ISO-8601 date-time") from None
    return datetime_to_time(parsed)


def parse_event(obj: object, *, now: int | None = None) -> Event:
    """Validate one Segment event (a JSON object as a dict) into an :class:`Event`.

    ``now`` (epoch microseconds) is the event time used when the event has none of the
    time fields; it defaults to the current time.

    >>> parse_event({"type": "identify", "userId": "u1", "anonymousId": None,
    ...              "messageId": "m", "timestamp": "2024-01-01T00:00:00Z"}).anonymous_id is None
    True
    >>> parse_event({"type": "track", "userId": "u1", "messageId": "m"})
    Traceback (most recent call last):
    ...
    identity_graph.errors.InvalidEvent: event: a track event needs an "event" name
    """
    # type() first: the ABC isinstance check costs more than the rest of the validation.
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise InvalidEvent("event", f"must be a JSON object, not {_type_name(obj)}")
    get = obj.get
    return _validated(
        get("type"), get("userId"), get("anonymousId"), get("previousId"), get("event"), get("groupId"),
        get("timestamp"), get("originalTimestamp"), get("receivedAt"), get("sentAt"), get("messageId"), obj, now,
    )


def _validated(
    given: Any, user: Any, anon: Any, prev: Any, name: Any, group: Any,
    t1: Any, t2: Any, t3: Any, t4: Any, message_id: Any, obj: Mapping[str, Any] | None, now: int | None,
) -> Event:
    """:func:`parse_event` on the event's fields, whether read from a dict or by
    :func:`event_from_line`: one validation for both. ``obj`` is the whole event, which
    a missing messageId is derived from (``event_from_line`` never gets that far)."""
    if given is None:
        raise InvalidEvent("type", "is missing")
    # One str object per type, not one per event: pickle (an import's parse workers) then
    # writes each type once per batch.
    type_ = _TYPES.get(given) if isinstance(given, str) else None
    if type_ is None:
        raise InvalidEvent("type", f"{_short(given)} is not one of {', '.join(sorted(EVENT_TYPES))}")

    user_id = None if user is None else _id_value(user, "userId")
    anonymous_id = None if anon is None else _id_value(anon, "anonymousId")
    previous_id = None if prev is None or type_ != "alias" else _id_value(prev, "previousId")

    if type_ == "alias":
        if previous_id is None:
            raise InvalidEvent("previousId", "an alias event needs a previousId")
        if user_id is None:
            raise InvalidEvent("userId", "an alias event needs a userId")
    elif user_id is None and anonymous_id is None:
        raise InvalidEvent("userId", "the event has neither a userId nor an anonymousId")
    if type_ == "track":
        if name is None:
            raise InvalidEvent("event", 'a track event needs an "event" name')
        if not isinstance(name, str):
            raise InvalidEvent("event", f"must be a string, not {_type_name(name)}")
    elif type_ == "group" and group is None:
        raise InvalidEvent("groupId", "a group event needs a groupId")

    # Rule 8: the first time field present, in TIME_FIELDS order.
    if t1 is not None:
        time = parse_time(t1, "timestamp")
    elif t2 is not None:
        time = parse_time(t2, "originalTimestamp")
    elif t3 is not None:
        time = parse_time(t3, "receivedAt")
    elif t4 is not None:
        time = parse_time(t4, "sentAt")
    else:
        time = now if now is not None else datetime_to_time(datetime.now(timezone.utc))

    if message_id is None:
        message_id = derive_message_id(obj)  # type: ignore[arg-type]
    elif not isinstance(message_id, str):
        raise InvalidEvent("messageId", f"must be a string, not {_type_name(message_id)}")
    elif not message_id:
        raise InvalidEvent("messageId", "must not be empty")
    elif len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InvalidEvent("messageId", f"is longer than {MAX_MESSAGE_ID_LENGTH} characters")
    elif "\x00" in message_id:
        # PostgreSQL text cannot hold NUL: refused here, the same on every backend.
        raise InvalidEvent("messageId", "contains a NUL character")
    elif not message_id.isascii():
        _check_unicode(message_id, "messageId")

    # tuple.__new__ skips the named tuple's Python-level __new__: one event per input line.
    return _new(Event, (type_, message_id, time, user_id, anonymous_id, previous_id))


# -- the import's fast path ------------------------------------------------------------
# An import spends most of its parsing time building the dicts of each event's context,
# properties and traits, which identity resolution never reads. msgspec decodes a JSON
# line into a struct of only the fields above: the others are checked for JSON syntax
# (and, below, UTF-8) but never built. Whatever this path is unsure of it hands back
# (None), and the caller takes the general path (orjson and parse_event), which says why
# a line is invalid. The one difference: a number beyond a double's range (1e999) in a
# field the engine does not read is not converted, so it no longer makes the event invalid
# (it is valid JSON; orjson alone cannot hold it). An event without a messageId still
# needs every number, for the hash of rule 9, and is read by the general path.

_IdValue = Union[str, int, None]


class _Wire(msgspec.Struct):
    """The fields of a Segment event that :func:`_validated` reads (JSON names)."""

    type: Optional[str] = None
    userId: _IdValue = None
    anonymousId: _IdValue = None
    previousId: _IdValue = None
    event: Any = None
    groupId: Any = None
    timestamp: Optional[str] = None
    originalTimestamp: Optional[str] = None
    receivedAt: Optional[str] = None
    sentAt: Optional[str] = None
    messageId: Optional[str] = None
    # A Segment batch envelope is several events: the general path expands it.
    batch: Union[msgspec.Raw, msgspec.UnsetType] = msgspec.UNSET


_decode_wire = msgspec.json.Decoder(_Wire).decode
_UNSET = msgspec.UNSET
_WIRE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError)
# orjson, the general path's parser, reads integers in this range as integers, the
# others as floats (which are then refused): the fast path must not accept more.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def event_from_line(line: bytes) -> Event | None:
    """The :class:`Event` of one JSON line, or None when the line needs the general path
    (:func:`parse_event` on the line as decoded by orjson): not a valid event, a batch
    envelope, no messageId or no time, or anything else this path does not decide.

    >>> event_from_line(b'{"type":"identify","userId":"u1","messageId":"m1","timestamp":"2024-01-01T00:00:00Z",'
    ...                 b'"context":{"ip":"8.8.8.8"}}')
    Event(type='identify', message_id='m1', time=1704067200000000, user_id='u1', anonymous_id=None, previous_id=None)
    >>> event_from_line(b'{"type":"identify","userId":true,"messageId":"m1"}') is None  # parse_event says why
    True
    """
    try:
        w = _decode_wire(line)
    except _WIRE_ERRORS:
        return None
    if w.messageId is None or w.batch is not _UNSET:
        return None
    if w.timestamp is None and w.originalTimestamp is None and w.receivedAt is None and w.sentAt is None:
        return None  # its time is the caller's "now": the general path has it
    if not line.isascii():
        # msgspec does not check the UTF-8 of strings it skips; invalid JSON must stay invalid.
        try:
            line.decode()
        except UnicodeDecodeError:
            return None
    user, anon, prev = w.userId, w.anonymousId, w.previousId
    for value in (user, anon, prev):
        if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
            return None
    try:
        return _validated(w.type, user, anon, prev, w.event, w.groupId, w.timestamp, w.originalTimestamp,
                          w.receivedAt, w.sentAt, w.messageId, None, None)
    except InvalidEvent:
        return None


def derive_message_id(obj: Mapping[str, Any]) -> str:
    """A deterministic messageId for an event that has none: a hash of its canonical JSON.

    Key order does not matter, so the same event re-sent always gets the same ID.

    >>> derive_message_id({"a": 1, "b": 2}) == derive_message_id({"b": 2, "a": 1})
    True

    orjson stops at 255 levels of nesting and at 64-bit integers; a valid event past
    either (a JSON parser may hand us 1,000 levels) is hashed by a slower encoder instead:

    >>> derive_message_id({"p": [[[[]]]] * 2, "n": 10**30}).startswith(DERIVED_ID_PREFIX)
    True
    """
    try:
        body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # Only what orjson cannot encode takes this path, so every ID derived before
        # stays the same (rule 9: re-importing a history stays a no-op).
        body = _canonical_json(obj)
    return DERIVED_ID_PREFIX + hashlib.sha256(body).hexdigest()[:32]


class _Text(NamedTuple):
    """Output text waiting on the stack; a closing bracket also names the container it
    closes (0 for none), which then leaves the path."""

    text: bytes
    container: int = 0


def _canonical_json(obj: object) -> bytes:
    """Sorted-key JSON of ``obj`` without recursion: any depth, integers of any size.

    Raises :class:`InvalidEvent` for a value that is not JSON (or contains itself).
    """
    out: list[bytes] = []
    path: set[int] = set()  # containers open around the current value: a cycle test
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if type(item) is _Text:
            out.append(item.text)
            path.discard(item.container)
        elif isinstance(item, (Mapping, list, tuple)):
            if id(item) in path:
                raise InvalidEvent("event", "contains itself")
            path.add(id(item))
            if isinstance(item, Mapping):
                pairs = sorted(((_json_key(k), v) for k, v in item.items()), key=lambda kv: kv[0])
                stack.append(_Text(b"}", id(item)))
                for n in range(len(pairs) - 1, -1, -1):
                    stack.append(pairs[n][1])
                    stack.append(_Text((b"," if n else b"") + pairs[n][0] + b":"))
                out.append(b"{")
            else:
                stack.append(_Text(b"]", id(item)))
                for n in range(len(item) - 1, -1, -1):
                    stack.append(item[n])
                    if n:
                        stack.append(_Text(b","))
                out.append(b"[")
        elif type(item) is int:
            out.append(str(item).encode())
        else:
            try:
                out.append(orjson.dumps(item))
            except TypeError as exc:
                raise InvalidEvent("event", f"is not JSON-serialisable ({exc})") from None
    return b"".join(out)


def _json_key(key: object) -> bytes:
    try:
        return orjson.dumps(key if isinstance(key, str) else str(key))
    except TypeError as exc:  # a lone surrogate
        raise InvalidEvent("event", f"is not JSON-serialisable ({exc})") from None


def _id_value(value: Any, field: str) -> str:
    """An ID field's value (not None) as the ID string, or :class:`InvalidEvent`."""
    if type(value) is str:
        if len(value) > MAX_ID_LENGTH:
            raise InvalidEvent(field, f"is longer than {MAX_ID_LENGTH} characters ({len(value)})")
        if "\x00" in value:
            raise InvalidEvent(field, "contains a NUL character")
        if not value.isascii():  # isascii is a flag test: the common case costs nothing
            _check_unicode(value, field)
        return value
    if type(value) is int:  # not bool: bool is an int subclass but not a JSON integer
        text = str(value)
        if len(text) > MAX_ID_LENGTH:
            raise InvalidEvent(field, f"is longer than {MAX_ID_LENGTH} characters ({len(text)})")
        return text
    if isinstance(value, str):
        # A str subclass from a Python caller (a StrEnum member...): its plain text. Said
        # "must be a string or an integer, not a string" before.
        return _id_value(str.__str__(value), field)
    if isinstance(value, int) and not isinstance(value, bool):
        return _id_value(int.__repr__(value), field)  # an IntEnum member: its number
    if type(value) is float and value.is_integer() and abs(value) >= 2**63:
        # orjson reads a JSON integer beyond 64 bits as a float: its digits are already lost.
        raise InvalidEvent(
            field, "must be a string or an integer, not an integer beyond 64 bits (send it as a string)"
        )
    raise InvalidEvent(field, f"must be a string or an integer, not {_type_name(value)}")


def _check_unicode(value: str, field: str) -> None:
    """Reject a string no database can store: a lone UTF-16 surrogate (Python strings can
    hold one; JSON parsers and UTF-8 cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(
            field, f"is not valid Unicode (a lone surrogate U+{ord(value[exc.start]):04X} at index {exc.start})"
        ) from None


def _type_name(value: object) -> str:
    for cls, name in _JSON_TYPE_NAMES.items():
        if isinstance(value, cls):
            return name
    if value is None:
        return "null"
    if isinstance(value, (int, str)):
        return "a string" if isinstance(value, str) else "an integer"
    return type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
