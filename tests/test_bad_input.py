"""The bad-input catalogue (issue #6, item 1): every kind of broken, hostile or odd input
we know of, each through the real entry points, with its documented outcome.

Three tables, each case one fixture line, file or call:

- ``EVENT_CASES``: an event as a dict, through :meth:`IdentityGraph.ingest`; then the
  same event as line 2 of a JSON-lines file between two valid events, through
  :func:`import_events`. A rejected event must raise :class:`InvalidEvent` naming the
  field with the exact reason, be reported as ``file:2: field: reason``, and leave the
  graph exactly as it was (the valid events around it still imported). An accepted one
  must give its documented status and add exactly its profiles; imported again it is a
  duplicate (rule 9), which also proves the file and dict paths read it alike.
- ``FILE_CASES``: raw bytes no dict can express (transport: broken JSON, encodings,
  envelopes, empty files), through :func:`import_events`: the exact issues, the counts
  and the resulting graph.
- Plain tests at the end, on a fresh graph, for what needs one: event-time order across
  offsets, extreme and future times in ``stats()``, messageId duplicates and conflicts.

A case's ``doc`` says why an acceptance is the documented outcome (README, "Reliability").

Table cases share one seeded graph per backend (a PostgreSQL schema per case would cost
more than the cases): every case works on IDs and messageIds of its own and compares
the graph before and after, as profiles, or for a rejection, as a fingerprint that any
committed write changes (see :func:`fingerprint`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from sqlalchemy import func, select

from conftest import PostgresSchemas, postgres_base_url
from helpers import P, profiles
from identity_graph import IdentityGraph, InvalidEvent
from identity_graph.events import MAX_TIME, parse_time
from identity_graph.importer import ImportIssue, ImportSummary, import_events
from identity_graph.schema import metadata

DROP = object()  #: a field value meaning "leave the field out"
TYPES = "alias, group, identify, page, screen, track"
TEN_MB = 10 * 1024 * 1024
BIG = "x" * TEN_MB
TS = "2024-01-01T00:00:00Z"


def E(tag: str, **fields: Any) -> dict[str, Any]:
    """A valid event of the case ``tag``: its own messageId and IDs (``tag/u``, ``tag/a``,
    and ``tag/p`` for an alias), changed by ``fields`` (``DROP`` removes a field)."""
    type_ = fields.get("type", "identify")
    event: dict[str, Any] = {"type": type_, "messageId": tag, "timestamp": TS,
                             "userId": f"{tag}/u", "anonymousId": f"{tag}/a"}
    if type_ == "alias":
        event["previousId"] = f"{tag}/p"
        del event["anonymousId"]
    if type_ == "track":
        event["event"] = "Clicked"
    if type_ == "group":
        event["groupId"] = "g1"
    for key, value in fields.items():
        if value is DROP:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def nested(depth: int) -> bytes:
    """JSON text of arrays nested ``depth`` deep."""
    return b"[" * depth + b"]" * depth


@dataclass(frozen=True)
class Rejected:
    """``InvalidEvent(field, reason)``; nothing changes."""

    field: str
    reason: str


@dataclass(frozen=True)
class Accepted:
    """``ingest`` returns ``status`` and the graph gains exactly ``adds`` (profiles as
    ``helpers.P`` tuples); ``doc`` says why this is the documented outcome."""

    status: str = "applied"
    adds: frozenset[tuple[str, frozenset[str]]] = frozenset()
    doc: str = ""


def ok(*adds: tuple[str, frozenset[str]], status: str = "applied", doc: str = "") -> Accepted:
    return Accepted(status, frozenset(adds), doc)


def blocked(doc: str = "") -> Accepted:
    return Accepted("blocked", frozenset(), doc or "rule 2: a blocked value is not an ID; the event is counted blocked")


@dataclass(frozen=True)
class EventCase:
    name: str
    event: Any
    outcome: Rejected | Accepted
    #: The event as a line of a file; None when JSON cannot say it (NaN, a lone
    #: surrogate, a Python set). Defaults to ``orjson.dumps(event)``.
    line: bytes | None = b""

    def as_line(self) -> bytes | None:
        return orjson.dumps(self.event) if self.line == b"" else self.line


def std(tag: str) -> tuple[str, frozenset[str]]:
    """The profile ``E(tag)`` makes: ``tag/u`` with ``tag/a``."""
    return P(f"{tag}/u", f"{tag}/a")


# Homoglyphs and invisible characters: each is a different ID from "jen@email.com",
# which the seed history holds (rule 1: strings are taken as-is, no normalisation).
LOOKALIKES = {
    "cyrillic e": "j\u0435n@email.com",
    "greek omicron": "jen@email.c\u03bfm",
    "fullwidth j": "\uff4aen@email.com",
    "zero-width space": "jen@email.com\u200b",
    "zero-width joiner": "je\u200dn@email.com",
    "word joiner": "\u2060jen@email.com",
    "BOM character": "\ufeffjen@email.com",
    "right-to-left override": "\u202ejen@email.com",
    "trailing space": "jen@email.com ",
    "upper case": "Jen@email.com",
    "decomposed e-acute": "jose\u0301@email.com",  # the seed holds the composed "josé@email.com"
}
SQL = {
    "sql drop table": "'; DROP TABLE ids;--",
    "sql drop ig_ids": "Robert'); DROP TABLE ig_ids;--",
    "sql or 1=1": "' OR '1'='1",
    "sql comment and quote": "x\" /* */ OR \"\"=\"",
}
CSV_FORMULAS = {
    "csv =cmd": "=cmd|' /C calc'!A0",
    "csv +sum": "+SUM(1,2)",
    "csv @sum": "@SUM(A1:A2)",
    "csv -2+3": "-2+3",
    "csv hyperlink": '=HYPERLINK("http://evil.example","click")',
}
BLOCKED_VALUES = ["", " ", "\t\n", "null", "NULL", "undefined", "Undefined", "none", "None", "nan", "NaN",
                  "0", "-1", "anonymous", "ANONYMOUS", "[object Object]", "[OBJECT OBJECT]", 0, -1]
WRONG_ID_TYPES = [(True, "a boolean"), (False, "a boolean"), (1.5, "a number with a fraction"),
                  ([], "an array"), (["u"], "an array"), ({}, "an object"), ({"id": "u"}, "an object")]
class Plan:
    """Values a Python caller may hold instead of plain str and int."""

    STR = enum.Enum("Tier", {"GOLD": "plan-gold"}, type=str).GOLD
    INT = enum.IntEnum("Code", {"X": 5070003}).X


FUTURE = (datetime.now(timezone.utc) + timedelta(hours=24)).isoformat()


def _cyclic() -> dict[str, Any]:
    event = E("cyclic", messageId=DROP)
    event["properties"] = {"self": event}
    return event


EVENT_CASES: list[EventCase] = [
    # -- not an event at all ---------------------------------------------------------
    EventCase("top level array", ["identify"], Rejected("event", "must be a JSON object, not an array")),
    EventCase("top level string", "identify", Rejected("event", "must be a JSON object, not a string")),
    EventCase("top level integer", 42, Rejected("event", "must be a JSON object, not an integer")),
    EventCase("top level null", None, Rejected("event", "must be a JSON object, not null")),
    EventCase("top level boolean", True, Rejected("event", "must be a JSON object, not a boolean")),
    EventCase("empty object", {}, Rejected("type", "is missing")),
    # -- schema ------------------------------------------------------------------------
    EventCase("type missing", E("type missing", type=DROP), Rejected("type", "is missing")),
    EventCase("type null", E("type null", type=None), Rejected("type", "is missing")),
    EventCase("type unknown", E("type unknown", type="login"), Rejected("type", f"'login' is not one of {TYPES}")),
    EventCase("type in other case", E("type case", type="Identify"),
              Rejected("type", f"'Identify' is not one of {TYPES}")),  # types are case-sensitive
    EventCase("type integer", E("type int", type=3), Rejected("type", f"3 is not one of {TYPES}")),
    EventCase("type array", E("type array", type=["identify"]), Rejected("type", f"['identify'] is not one of {TYPES}")),
    EventCase("type of 100 KB", E("type big", type=BIG[:100_000]), Rejected("type", f"'{'x' * 56}... is not one of {TYPES}")),
    EventCase("no IDs", E("no ids", userId=DROP, anonymousId=DROP),
              Rejected("userId", "the event has neither a userId nor an anonymousId")),
    EventCase("IDs null", E("ids null", userId=None, anonymousId=None),
              Rejected("userId", "the event has neither a userId nor an anonymousId")),
    EventCase("alias without previousId", E("alias no prev", type="alias", previousId=DROP),
              Rejected("previousId", "an alias event needs a previousId")),
    EventCase("alias previousId null", E("alias prev null", type="alias", previousId=None),
              Rejected("previousId", "an alias event needs a previousId")),
    EventCase("alias without userId", E("alias no user", type="alias", userId=DROP, anonymousId="x"),
              Rejected("userId", "an alias event needs a userId")),
    EventCase("track without event", E("track no event", type="track", event=DROP),
              Rejected("event", 'a track event needs an "event" name')),
    EventCase("track event null", E("track event null", type="track", event=None),
              Rejected("event", 'a track event needs an "event" name')),
    EventCase("track event integer", E("track event int", type="track", event=7),
              Rejected("event", "must be a string, not an integer")),
    EventCase("track event object", E("track event obj", type="track", event={"name": "x"}),
              Rejected("event", "must be a string, not an object")),
    EventCase("track event empty string", E("track event empty", type="track", event=""),
              ok(std("track event empty"), doc="any string is an event name, even an empty one")),
    EventCase("group without groupId", E("group no gid", type="group", groupId=DROP),
              Rejected("groupId", "a group event needs a groupId")),
    EventCase("group groupId null", E("group gid null", type="group", groupId=None),
              Rejected("groupId", "a group event needs a groupId")),
    EventCase("group groupId integer", E("group gid int", type="group", groupId=12),
              ok(std("group gid int"), doc="groupId must be present; its value is not an ID and is not read")),
    EventCase("traits a string", E("traits str", traits="vip"),
              ok(std("traits str"), doc="traits, properties and context are not read, so not checked")),
    EventCase("traits an array", E("traits arr", traits=[1, 2]), ok(std("traits arr"))),
    EventCase("context a number", E("context num", context=5, properties=None), ok(std("context num"))),
    EventCase("previousId of a wrong type on identify", E("prev on identify", previousId=True),
              ok(std("prev on identify"), doc="previousId is read on alias events only")),
    EventCase("unknown top-level fields", E("extra fields", foo={"bar": [1]}, userid="ignored"),
              ok(std("extra fields"), doc="unknown fields are ignored; field names are case-sensitive")),
    EventCase("page and screen carry IDs", E("screen", type="screen", name=None), ok(std("screen"))),
    # -- IDs of every wrong JSON type (rule 1) ---------------------------------------------
    *[EventCase(f"userId {value!r}", E(f"uid {value!r}", userId=value),
                Rejected("userId", f"must be a string or an integer, not {name}"))
      for value, name in WRONG_ID_TYPES],
    *[EventCase(f"anonymousId {value!r}", E(f"aid {value!r}", anonymousId=value),
                Rejected("anonymousId", f"must be a string or an integer, not {name}"))
      for value, name in WRONG_ID_TYPES],
    *[EventCase(f"previousId {value!r}", E(f"pid {value!r}", type="alias", previousId=value),
                Rejected("previousId", f"must be a string or an integer, not {name}"))
      for value, name in WRONG_ID_TYPES],
    EventCase("userId 1.0", E("uid 1.0", userId=1.0),
              Rejected("userId", "must be a string or an integer, not a number with a fraction")),
    EventCase("userId NaN", E("uid nan", userId=math.nan),
              Rejected("userId", "must be a string or an integer, not a number with a fraction"), line=None),
    EventCase("userId integer", E("uid int", userId=5070001),
              ok(P("5070001", "uid int/a"), doc="rule 1: a JSON integer is its decimal string")),
    EventCase("userId negative integer", E("uid neg", userId=-5070002), ok(P("-5070002", "uid neg/a"))),
    EventCase("userId integer beyond 64 bits", E("uid 10**30", userId=10**30 + 7),
              ok(P(str(10**30 + 7), "uid 10**30/a"),
                 doc="a Python int of any size is its decimal string; in a file see 'integer beyond 64 bits'"),
              line=None),
    EventCase("userId a str enum member", E("uid str enum", userId=Plan.STR),
              ok(P("plan-gold", "uid str enum/a"), doc="a str or int subclass from Python is its plain value"),
              line=None),
    EventCase("userId an int enum member", E("uid int enum", userId=Plan.INT), ok(P("5070003", "uid int enum/a")),
              line=None),
    # -- blocked values (rule 2) -----------------------------------------------------------
    *[EventCase(f"blocked userId {value!r}", E(f"blocked {value!r}", userId=value, anonymousId=DROP), blocked())
      for value in BLOCKED_VALUES],
    EventCase("blocked userId with a real anonymousId", E("blocked+anon", userId="undefined"),
              ok(P("blocked+anon/a"), doc="the blocked ID is dropped, the other stays; no link")),
    EventCase("blocked previousId", E("blocked prev", type="alias", previousId="null"),
              ok(P("blocked prev/u"), doc="an alias from a blocked value links nothing")),
    EventCase("blocked anonymousId and userId", E("blocked both", userId="0", anonymousId="[object Object]"), blocked()),
    # -- ID content --------------------------------------------------------------------
    EventCase("ID of 1,024 characters", E("id 1024", userId="id 1024/".ljust(1024, "x")),
              ok(P("id 1024/".ljust(1024, "x"), "id 1024/a"), doc="1,024 characters is the longest ID")),
    EventCase("ID of 1,025 characters", E("id 1025", userId="x" * 1025),
              Rejected("userId", "is longer than 1024 characters (1025)")),
    EventCase("anonymousId of 10 MB", E("id 10mb", anonymousId=BIG),
              Rejected("anonymousId", f"is longer than 1024 characters ({TEN_MB})")),
    EventCase("integer ID of 1,025 digits", E("id 1025 digits", userId=10**1024),
              Rejected("userId", "is longer than 1024 characters (1025)"), line=None),
    EventCase("NUL in userId", E("nul uid", userId="u\x00v"), Rejected("userId", "contains a NUL character")),
    EventCase("NUL in anonymousId", E("nul aid", anonymousId="\x00"), Rejected("anonymousId", "contains a NUL character")),
    EventCase("NUL in previousId", E("nul pid", type="alias", previousId="p\x00"),
              Rejected("previousId", "contains a NUL character")),
    EventCase("lone surrogate in userId", E("surrogate uid", userId="jen\ud800"),
              Rejected("userId", "is not valid Unicode (a lone surrogate U+D800 at index 3)"), line=None),
    EventCase("control characters in an ID", E("ctrl", userId="ctrl\x07\x1b[31m\x7f"),
              ok(P("ctrl\x07\x1b[31m\x7f", "ctrl/a"), doc="only NUL is refused; other control characters are kept")),
    EventCase("emoji ID", E("emoji", userId="\U0001f600 jen"), ok(P("\U0001f600 jen", "emoji/a"))),
    *[EventCase(name, E(name, userId=value), ok(P(value, f"{name}/a"), doc="stored as a value, never as SQL"))
      for name, value in SQL.items()],
    *[EventCase(name, E(name, userId=value), ok(P(value, f"{name}/a"), doc="stored as-is; see the report on CSV export"))
      for name, value in CSV_FORMULAS.items()],
    *[EventCase(f"lookalike: {name}", E(name, userId=value), ok(P(value, f"{name}/a"), doc="a distinct ID (rule 1)"))
      for name, value in LOOKALIKES.items()],
    # -- time (rule 8) -----------------------------------------------------------------
    EventCase("timestamp unparseable", E("ts words", timestamp="yesterday"),
              Rejected("timestamp", "'yesterday' is not an ISO-8601 date-time")),
    EventCase("timestamp empty", E("ts empty", timestamp=""), Rejected("timestamp", "'' is not an ISO-8601 date-time")),
    EventCase("timestamp 30 February", E("ts feb30", timestamp="2024-02-30T00:00:00Z"),
              Rejected("timestamp", "'2024-02-30T00:00:00Z' is not an ISO-8601 date-time")),
    EventCase("timestamp hour 24", E("ts 24h", timestamp="2024-01-01T24:00:00Z"),
              Rejected("timestamp", "'2024-01-01T24:00:00Z' is not an ISO-8601 date-time")),
    EventCase("timestamp offset +25:00", E("ts +25", timestamp="2024-01-01T00:00:00+25:00"),
              Rejected("timestamp", "'2024-01-01T00:00:00+25:00' is not an ISO-8601 date-time")),
    EventCase("timestamp epoch seconds", E("ts epoch", timestamp=1700000000),
              Rejected("timestamp", "must be an ISO-8601 string, not an integer")),
    EventCase("timestamp boolean", E("ts bool", timestamp=True),
              Rejected("timestamp", "must be an ISO-8601 string, not a boolean")),
    EventCase("timestamp object", E("ts obj", timestamp={"$date": TS}),
              Rejected("timestamp", "must be an ISO-8601 string, not an object")),
    EventCase("timestamp NaN", E("ts nan", timestamp=math.nan),
              Rejected("timestamp", "must be an ISO-8601 string, not a number with a fraction"), line=None),
    EventCase("originalTimestamp bad, no timestamp", E("ots bad", timestamp=DROP, originalTimestamp="soon"),
              Rejected("originalTimestamp", "'soon' is not an ISO-8601 date-time")),
    EventCase("timestamp null, receivedAt bad", E("rat bad", timestamp=None, receivedAt="2024-13-01"),
              Rejected("receivedAt", "'2024-13-01' is not an ISO-8601 date-time")),
    EventCase("bad sentAt after a good timestamp", E("sat ignored", sentAt="garbage"),
              ok(std("sat ignored"), doc="only the first present time field is read")),
    EventCase("year 0001", E("y1", timestamp="0001-01-01T00:00:00Z"),
              ok(std("y1"), doc="any year a datetime holds, 0001 to 9999")),
    EventCase("year 9999", E("y9999", timestamp="9999-12-31T23:59:59.999999Z"), ok(std("y9999"))),
    EventCase("year 0001 at +01:00 (year 0 in UTC)", E("y0", timestamp="0001-01-01T00:00:00+01:00"),
              ok(std("y0"), doc="kept as the exact instant; shown as 0001-01-01T00:00:00Z")),
    EventCase("year 9999 at -01:00 (year 10000 in UTC)", E("y10000", timestamp="9999-12-31T23:59:59-01:00"),
              ok(std("y10000"), doc="kept as the exact instant; shown as 9999-12-31T23:59:59.999999Z")),
    EventCase("24 hours in the future", E("future", timestamp=FUTURE),
              ok(std("future"), doc="event times are taken as sent: no clock-skew correction")),
    EventCase("naive timestamp", E("naive", timestamp="2024-01-01T00:00:00"), ok(std("naive"), doc="naive is UTC")),
    EventCase("date only", E("date only", timestamp="2024-01-01"), ok(std("date only"), doc="midnight UTC")),
    EventCase("space separator, lower-case z", E("space sep", timestamp="2024-01-01 00:00:00z"), ok(std("space sep"))),
    EventCase("nanoseconds", E("nanos", timestamp="2024-01-01T00:00:00.123456789Z"),
              ok(std("nanos"), doc="digits past the microsecond are dropped")),
    EventCase("no time at all", E("no time", timestamp=DROP), ok(std("no time"), doc="the time it was ingested")),
    # -- messageId (rule 9) --------------------------------------------------------------
    EventCase("messageId missing", E("mid missing", messageId=DROP),
              ok(std("mid missing"), doc="sha256: of the canonical JSON; re-sending it is a duplicate")),
    EventCase("messageId null", E("mid null", messageId=None), ok(std("mid null"), doc="null is missing")),
    EventCase("messageId integer", E("mid int", messageId=7), Rejected("messageId", "must be a string, not an integer")),
    EventCase("messageId float", E("mid float", messageId=7.5),
              Rejected("messageId", "must be a string, not a number with a fraction")),
    EventCase("messageId boolean", E("mid bool", messageId=False), Rejected("messageId", "must be a string, not a boolean")),
    EventCase("messageId array", E("mid arr", messageId=["m"]), Rejected("messageId", "must be a string, not an array")),
    EventCase("messageId object", E("mid obj", messageId={"id": "m"}),
              Rejected("messageId", "must be a string, not an object")),
    EventCase("messageId empty", E("mid empty", messageId=""), Rejected("messageId", "must not be empty")),
    EventCase("messageId of 1,025 characters", E("mid 1025", messageId="m" * 1025),
              Rejected("messageId", "is longer than 1024 characters")),
    EventCase("messageId of 100 KB", E("mid 100kb", messageId=BIG[:100_000]),
              Rejected("messageId", "is longer than 1024 characters")),
    EventCase("messageId with NUL", E("mid nul", messageId="m\x00"), Rejected("messageId", "contains a NUL character")),
    EventCase("messageId with a lone surrogate", E("mid surrogate", messageId="m\udfff"),
              Rejected("messageId", "is not valid Unicode (a lone surrogate U+DFFF at index 1)"), line=None),
    EventCase("messageId SQL", E("'; DELETE FROM ig_events;--"), ok(std("'; DELETE FROM ig_events;--"))),
    # -- size and depth ----------------------------------------------------------------
    EventCase("property of 10 MB, no messageId", E("prop 10mb hashed", messageId=DROP, properties={"blob": BIG}),
              ok(std("prop 10mb hashed"), doc="only IDs and messageIds are limited in size")),
    EventCase("nesting 1,000 deep", {**E("deep"), "properties": orjson.loads(nested(1000))},
              ok(std("deep"), doc="depth is not limited (in a JSON-lines file: 1,023 levels, the parser's limit)"),
              line=orjson.dumps(E("deep"))[:-1] + b',"properties":' + nested(1000) + b"}"),
    EventCase("nesting 1,000 deep, no messageId", {**E("deep hashed", messageId=DROP), "p": orjson.loads(nested(1000))},
              ok(std("deep hashed"), doc="hashed for its messageId whatever its depth"),
              line=orjson.dumps(E("deep hashed", messageId=DROP))[:-1] + b',"p":' + nested(1000) + b"}"),
    EventCase("Python set in properties", E("set", properties={"s": {1}}),
              ok(std("set"), doc="a Python caller's non-JSON value outside the IDs is never read"), line=None),
    EventCase("Python set in properties, no messageId", E("set hashed", messageId=DROP, properties={"s": {1}}),
              Rejected("event", "is not JSON-serialisable (Type is not JSON serializable: set)"), line=None),
    EventCase("event that contains itself, no messageId", _cyclic(), Rejected("event", "contains itself"), line=None),
]


# -- files: what only raw bytes can say ------------------------------------------------------


@dataclass(frozen=True)
class FileCase:
    """A whole file: the issues as ``"{path}..."`` templates, the counts, the profiles added."""

    name: str
    data: bytes
    issues: list[str]
    counts: dict[str, int]
    adds: frozenset[tuple[str, frozenset[str]]] = frozenset()
    doc: str = ""
    suffix: str = ".jsonl"


def good(tag: str) -> bytes:
    return orjson.dumps(E(tag))


def json_error(line: bytes) -> str:
    """orjson's own message for ``line`` (its wording may change between versions)."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON ({exc})"
    raise AssertionError(f"{line[:80]!r} is valid JSON")


def around(name: str, line: bytes, reasons: list[str] | None = None, adds: tuple[Any, ...] = (),
           *, contains: str = "", applied: int = 0, events: int = 1, doc: str = "") -> FileCase:
    """``line`` as line 2 between two valid events, which must be imported whatever it is.

    ``reasons``: the exact issue reasons at line 2 (default: orjson's error, which must
    contain ``contains``); ``[]`` for an accepted line; ``applied``/``events``: what
    the line itself counts for.
    """
    if reasons is None:
        reason = json_error(line)
        assert contains in reason, (reason, contains)
        reasons = [reason]
    tag = f"file {name}"
    data = good(f"{tag} 1") + b"\n" + line + b"\n" + good(f"{tag} 3") + b"\n"
    counts = {"events": 2 + events, "applied": 2 + applied, "invalid": len(reasons), "duplicates": 0, "blocked": 0}
    return FileCase(name, data, [f"{{path}}:2{r}" if r.startswith(":") else f"{{path}}:2: {r}" for r in reasons],
                    counts, frozenset({std(f"{tag} 1"), std(f"{tag} 3"), *adds}), doc)


def one(tag: str, **fields: Any) -> bytes:
    return orjson.dumps(E(tag, **fields))


def array_error(data: bytes) -> str:
    """ijson's complaint about the JSON array ``data``, on one line (it spans three)."""
    import io

    import ijson

    try:
        for _ in ijson.items(io.BytesIO(data), "item", use_float=True):
            pass
    except ijson.JSONError as exc:
        return " ".join(str(exc).split())
    raise AssertionError("valid JSON array")


ARRAY_NAN = b"[" + good("arr 0") + b',{"type":"identify","userId":"n","x":NaN},' + good("arr 2") + b"]"
NOTHING = {"events": 0, "applied": 0, "invalid": 0, "duplicates": 0, "blocked": 0}
LINES = b"\n".join(good(f"enc {n}") for n in range(2)) + b"\n"
FILE_CASES: list[FileCase] = [
    # -- JSON syntax ---------------------------------------------------------------------
    around("not JSON", b"{not json", contains="unexpected character"),
    around("truncated object", b'{"type":"identify","userId":"t"', contains="unexpected end of data"),
    around("two objects on one line", good("two a") + good("two b"), contains="unexpected content after document",
           doc="one event per line: the whole line is reported"),
    around("trailing comma", b'{"type":"identify","userId":"tc",}', contains="column"),
    around("single quotes", b"{'type':'identify','userId':'sq'}", contains="column"),
    around("NaN", b'{"type":"identify","userId":"nan-v","x":NaN}', contains="column 41",
           doc="NaN and Infinity are not JSON"),
    around("Infinity", b'{"type":"identify","userId":"inf-v","x":Infinity}', contains="column"),
    around("-Infinity", b'{"type":"identify","userId":"inf-v","x":-Infinity}', contains="column"),
    around("number overflowing a double", b'{"type":"identify","userId":"big-v","x":1e999}', contains="infinity"),
    around("lone surrogate escape", b'{"type":"identify","userId":"\\ud800"}', contains="surrogate"),
    around("nesting 1,100 deep", b'{"type":"identify","userId":"d","p":' + nested(1100) + b"}",
           contains="depth limit exceeded", doc="JSON lines nested past 1,023 levels are invalid JSON"),
    # -- encodings and characters ----------------------------------------------------------
    around("byte 0xff", b'{"type":"identify","userId":"\xff\xfe"}', ["invalid JSON (not UTF-8: byte 0xff at column 30)"],
           doc="input must be UTF-8: the first bad byte and its column are named"),
    around("Latin-1 text", b'{"type":"identify","userId":"J\xe9r\xf4me"}',
           ["invalid JSON (not UTF-8: byte 0xe9 at column 31)"]),
    around("overlong UTF-8", b'{"type":"identify","userId":"\xc0\xaf"}', ["invalid JSON (not UTF-8: byte 0xc0 at column 30)"]),
    around("UTF-8-encoded surrogate", b'{"type":"identify","userId":"\xed\xa0\x80"}',
           ["invalid JSON (not UTF-8: byte 0xed at column 30)"]),
    around("a NUL byte", b"\x00", contains="unexpected character"),
    around("raw NUL in a string", b'{"type":"identify","userId":"a\x00b"}', contains="control character"),
    around("raw control character in a string", b'{"type":"identify","userId":"a\x07b"}', contains="control character"),
    around("raw tab in a string", b'{"type":"identify","userId":"a\tb"}', contains="control character"),
    around("escaped NUL in an ID", b'{"type":"identify","userId":"a\\u0000b"}', ["userId: contains a NUL character"]),
    around("escaped control character in an ID", one("esc ctrl", userId="esc\x07"), [], (P("esc\x07", "esc ctrl/a"),),
           applied=1, doc="only NUL is refused in IDs"),
    around("BOM at the start of line 2", b"\xef\xbb\xbf" + good("bom line"), [], (std("bom line"),), applied=1,
           doc="a byte order mark is ignored at the start of any line (files joined with cat)"),
    around("whitespace-only line", b" \t \r", [], events=0, doc="blank lines are skipped, still counted in line numbers"),
    # -- top level -----------------------------------------------------------------------
    around("top level array on line 2", b'[{"type":"identify","userId":"arr"}]',
           ["event: must be a JSON object, not an array"], doc="a leading [ makes an array file only at the start"),
    around("line: top level string", b'"identify"', ["event: must be a JSON object, not a string"]),
    around("line: top level number", b"42", ["event: must be a JSON object, not an integer"]),
    around("line: top level null", b"null", ["event: must be a JSON object, not null"]),
    around("line: top level false", b"false", ["event: must be a JSON object, not a boolean"]),
    # -- batch envelopes -----------------------------------------------------------------
    around("batch a string", b'{"batch":"events"}', ["batch: must be a list of events"]),
    around("batch an object", b'{"batch":' + good("batch obj") + b"}", ["batch: must be a list of events"]),
    around("batch null", b'{"batch":null}', ["batch: must be a list of events"]),
    around("batch items not objects", b'{"batch":[1,null,"x"]}',
           [": batch[0]: event: must be a JSON object, not an integer",
            ": batch[1]: event: must be a JSON object, not null",
            ": batch[2]: event: must be a JSON object, not a string"], events=3),
    around("batch with a good and a bad event", b'{"batch":[' + good("batch ok") + b',{"type":"identify"}]}',
           [": batch[1]: userId: the event has neither a userId nor an anonymousId"], (std("batch ok"),),
           applied=1, events=2),
    around("batch empty", b'{"batch":[]}', [], events=0, doc="an empty batch holds no events"),
    around("batch context not an object", b'{"batch":[' + good("batch ctx") + b'],"context":"x"}', [],
           (std("batch ctx"),), applied=1, doc="a top-level context that is not an object is not merged"),
    # -- IDs only a file can say -------------------------------------------------------------
    around("integer ID beyond 64 bits", b'{"type":"identify","userId":100000000000000000000000000000}',
           ["userId: must be a string or an integer, not an integer beyond 64 bits (send it as a string)"],
           doc="JSON integers must fit 64 bits; a larger numeric ID must be sent as a string"),
    around("integer ID of 64 bits", b'{"type":"identify","messageId":"u64","userId":18446744073709551615}', [],
           (P("18446744073709551615"),), applied=1),
    # -- whole files -----------------------------------------------------------------------
    FileCase("empty file", b"", [], NOTHING, doc="an empty file imports nothing and is no error"),
    FileCase("only blank lines", b"\n \n\t\r\n", [], NOTHING),
    FileCase("only a BOM", b"\xef\xbb\xbf", [], NOTHING),
    FileCase("BOM then events", b"\xef\xbb\xbf" + LINES, [], {**NOTHING, "events": 2, "applied": 2},
             frozenset({std("enc 0"), std("enc 1")}), doc="a UTF-8 byte order mark is ignored"),
    FileCase("UTF-16 with a BOM", LINES.decode().encode("utf-16"),
             ["{path}:1: invalid JSON (not UTF-8: byte 0xff at column 1)",
              "{path}:2: " + json_error(b"\x00{"), "{path}:3: " + json_error(b"\x00")],
             {**NOTHING, "events": 3, "invalid": 3},
             doc="UTF-16 is not read: every line is reported (each newline's high byte starts the next line)"),
    FileCase("JSON array with NaN", ARRAY_NAN,
             ["{path}: [1]: invalid JSON (" + array_error(ARRAY_NAN) + "); the rest of the file is skipped"],
             {**NOTHING, "events": 2, "applied": 1, "invalid": 1}, frozenset({std("arr 0")}),
             doc="a broken array keeps the elements before the break", suffix=".json"),
    FileCase("JSON array, element nested 1,000 deep without messageId",
             b'[{"type":"identify","userId":"arr deep","p":' + nested(1000) + b"}]", [],
             {**NOTHING, "events": 1, "applied": 1}, frozenset({P("arr deep")}), suffix=".json"),
    FileCase("JSON array, invalid element nested 1,000 deep",
             b'[{"type":"identify","p":' + nested(1000) + b"}," + good("arr deep ok") + b"]",
             ["{path}: [0]: userId: the event has neither a userId nor an anonymousId"],
             {**NOTHING, "events": 2, "applied": 1, "invalid": 1}, frozenset({std("arr deep ok")}), suffix=".json"),
    FileCase("pretty-printed envelope, batch not a list", b'{\n  "batch": {"type": "identify"}\n}\n',
             ["{path}:1: batch: must be a list of events"], {**NOTHING, "events": 1, "invalid": 1}, suffix=".json"),
]


# -- fixtures and checks --------------------------------------------------------------------

SEED = [
    {"type": "identify", "userId": "jen@email.com", "anonymousId": "dev-jen", "messageId": "seed-1", "timestamp": TS},
    {"type": "alias", "previousId": "josé@email.com", "userId": "jen@email.com", "messageId": "seed-2",
     "timestamp": TS},
    {"type": "identify", "userId": "bob", "anonymousId": "dev-bob", "messageId": "seed-3", "timestamp": TS},
]
SEED_PROFILES = {P("jen@email.com", "dev-jen", "josé@email.com"), P("bob", "dev-bob")}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityGraph]:
    """One seeded graph per backend for the whole table: a graph per case would cost more
    than the cases (a PostgreSQL schema each); every case has IDs of its own."""
    if request.param == "sqlite":
        url, schemas = f"sqlite:///{tmp_path_factory.mktemp('bad') / 'graph.db'}", None
    else:
        schemas = PostgresSchemas(postgres_base_url())  # type: ignore[arg-type]
        url = schemas.new_url()
    graph = IdentityGraph(url)
    for event in SEED:
        graph.ingest(event)
    assert profiles(graph) >= SEED_PROFILES
    yield graph
    graph.close()
    if schemas is not None:
        schemas.drop_all()


Snapshot = tuple[Any, ...]


def snapshot(graph: IdentityGraph) -> Snapshot:
    """Everything an input could change: profiles, stored links, stats."""
    s = graph.stats()
    links = {(l.source, l.target, l.kind, l.message_id, l.time, l.outcome, l.reason) for l in graph._store.all_links()}
    return profiles(graph), links, (s.ids, s.known_ids, s.profiles, s.events, s.duplicates,
                                    s.links_merged, s.links_together, s.links_refused)


def fingerprint(graph: IdentityGraph) -> tuple[Any, ...]:
    """The row count of every table and the whole ``ig_meta`` table, whose lock row takes
    a fresh generation token in every committed write (README, "The process cache"):
    equal fingerprints mean no write happened. Two queries, however large the graph."""
    with graph._store.engine.connect() as conn:
        counts = conn.execute(select(*[
            select(func.count()).select_from(t).scalar_subquery() for t in metadata.sorted_tables
        ])).one()
        meta = sorted(tuple(r) for r in conn.execute(select(metadata.tables["ig_meta"])))
    return tuple(counts), meta


def event_count(graph: IdentityGraph) -> int:
    """Messages registered (``stats().events``, in one query)."""
    with graph._store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(metadata.tables["ig_events"])).scalar_one()


def import_bytes(graph: IdentityGraph, path: Path, data: bytes) -> tuple[ImportSummary, list[ImportIssue]]:
    path.write_bytes(data)
    issues: list[ImportIssue] = []
    summary = import_events(graph, [path], on_issue=issues.append)
    return summary, issues


def counts(summary: ImportSummary) -> dict[str, int]:
    return {k: getattr(summary, k) for k in ("events", "applied", "invalid", "duplicates", "blocked")}


# -- the tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", EVENT_CASES, ids=[c.name for c in EVENT_CASES])
def test_event_case(shared: IdentityGraph, tmp_path: Path, case: EventCase) -> None:
    """ingest gives the documented outcome; the same event as a file line gives the same."""
    outcome = case.outcome
    if isinstance(outcome, Rejected):
        before = fingerprint(shared)
        with pytest.raises(InvalidEvent) as caught:
            shared.ingest(case.event)
        assert (caught.value.field, caught.value.reason) == (outcome.field, outcome.reason)
        assert str(caught.value) == f"{outcome.field}: {outcome.reason}"
        assert fingerprint(shared) == before
        graph_now = profiles(shared)
    else:
        before_profiles, before_events = profiles(shared), event_count(shared)
        result = shared.ingest(case.event)
        assert result.status == outcome.status
        graph_now = profiles(shared)
        assert graph_now == before_profiles | outcome.adds
        assert event_count(shared) == before_events + 1  # a blocked event too claims its messageId (rule 9)
        for canonical, ids in outcome.adds:
            assert shared.resolve(max(ids)) == canonical

    line = case.as_line()
    if line is None:
        return
    tag = f"line {case.name}"
    data = good(f"{tag} 1") + b"\n" + line + b"\n" + good(f"{tag} 3") + b"\n"
    summary, issues = import_bytes(shared, tmp_path / "events.jsonl", data)
    path = tmp_path / "events.jsonl"
    if isinstance(outcome, Rejected):
        assert [str(i) for i in issues] == [f"{path}:2: {outcome.field}: {outcome.reason}"]
        assert issues[0].raw == line
        assert counts(summary) == {"events": 3, "applied": 2, "invalid": 1, "duplicates": 0, "blocked": 0}
    else:
        assert issues == []  # the event was ingested above: its line is a duplicate (rule 9)
        assert counts(summary) == {"events": 3, "applied": 2, "invalid": 0, "duplicates": 1, "blocked": 0}
    assert profiles(shared) == graph_now | {std(f"{tag} 1"), std(f"{tag} 3")}


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.name for c in FILE_CASES])
def test_file_case(shared: IdentityGraph, tmp_path: Path, case: FileCase) -> None:
    """The exact issues and counts; valid events around bad input are imported, nothing else."""
    before = profiles(shared)
    path = tmp_path / f"events{case.suffix}"
    summary, issues = import_bytes(shared, path, case.data)
    assert [str(i) for i in issues] == [template.replace("{path}", str(path)) for template in case.issues]
    assert all("\n" not in str(i) for i in issues)
    assert counts(summary) == case.counts
    assert summary.files == 1
    assert profiles(shared) == before | case.adds


def test_the_fingerprint_sees_every_write(shared: IdentityGraph) -> None:
    """What makes "fingerprint unchanged" mean "nothing written": even a blocked event,
    which adds no ID, and a duplicate, which adds no row, change it."""
    before = fingerprint(shared)
    assert shared.ingest(E("fingerprint", userId="null", anonymousId=DROP)).status == "blocked"
    after = fingerprint(shared)
    assert after != before
    assert shared.ingest(E("fingerprint", userId="null", anonymousId=DROP)).status == "duplicate"
    assert fingerprint(shared) != after


def test_the_catalogue_has_at_least_fifty_cases() -> None:
    """Issue #6 asks for 50; names must be unique so each case is addressable."""
    names = [c.name for c in EVENT_CASES] + [c.name for c in FILE_CASES]
    assert len(names) >= 50 and len(set(names)) == len(names)


def test_sql_looking_ids_leave_the_tables_intact(shared: IdentityGraph) -> None:
    """After the SQL-looking IDs went in (or now, if run alone), the seed is still there."""
    for name, value in SQL.items():
        shared.ingest(E(f"again {name}", userId=value))
        assert shared.resolve(value) == value
        assert shared.profile(value).ids >= {value, f"again {name}/a"}  # type: ignore[union-attr]
    assert profiles(shared) >= SEED_PROFILES


def test_lookalikes_stay_apart_from_the_id_they_mimic(shared: IdentityGraph) -> None:
    """No normalisation: each lookalike resolves to itself, the original to its own profile."""
    for name, value in LOOKALIKES.items():
        shared.ingest(E(f"apart {name}", userId=value))
        assert shared.resolve(value) == value
    assert shared.resolve("jen@email.com") == "jen@email.com"
    assert shared.profile("jen@email.com").ids == {"jen@email.com", "dev-jen", "josé@email.com"}  # type: ignore[union-attr]


# -- time, on a fresh graph -----------------------------------------------------------------------


def _identify(msg: str, user: str, anon: str, ts: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": msg, "userId": user, "anonymousId": anon, "timestamp": ts}


def test_mixed_offsets_are_ordered_as_utc_instants(graph: IdentityGraph) -> None:
    """00:30+01:00 is 23:30Z the day before: it comes first, whatever the text or arrival order.

    Both events claim the device for a different user; the earlier one wins (rule 5)."""
    graph.ingest(_identify("m-late", "late-user", "device", "2024-01-01T00:00:00Z"))
    result = graph.ingest(_identify("m-early", "early-user", "device", "2024-01-01T00:30:00+01:00"))
    assert result.replayed
    assert profiles(graph) == {P("early-user", "device"), P("late-user")}


def test_equal_instants_in_different_offsets_tie_and_messageid_decides(graph: IdentityGraph) -> None:
    """Same instant, three spellings (Z, +05:30, naive): ties are broken by messageId (rule 8)."""
    graph.ingest(_identify("m3", "third", "device", "2024-01-01T00:00:00"))
    graph.ingest(_identify("m2", "second", "device", "2024-01-01T05:30:00+05:30"))
    graph.ingest(_identify("m1", "first", "device", "2024-01-01T00:00:00Z"))
    assert profiles(graph) == {P("first", "device"), P("second"), P("third")}
    assert {l.time for l in graph._store.all_links()} == {parse_time(TS)}


def test_extreme_years_are_kept_and_shown(graph: IdentityGraph) -> None:
    """Year 0001 to 9999 in any offset is accepted; stats() shows the nearest datetime
    when the UTC instant falls outside (it used to raise OverflowError)."""
    graph.ingest(_identify("m1", "u1", "a1", "0001-01-01T00:00:00+01:00"))
    assert graph.stats().newest_event == datetime(1, 1, 1, tzinfo=timezone.utc)
    graph.ingest(_identify("m2", "u2", "a2", "9999-12-31T23:59:59-01:00"))
    assert graph.stats().newest_event == datetime.max.replace(tzinfo=timezone.utc)
    times = sorted(l.time for l in graph._store.all_links())
    assert times == [parse_time("0001-01-01T00:00:00+01:00"), parse_time("9999-12-31T23:59:59-01:00")]
    assert times[1] > MAX_TIME  # the exact instant is stored, not the clamped one


def test_a_future_time_is_taken_as_sent(graph: IdentityGraph) -> None:
    """No clock-skew correction: the event sorts 24 h ahead, so a present-day event on the
    same device is late and replayed, and still resolves by event time."""
    graph.ingest(_identify("m-future", "future-user", "device", FUTURE))
    assert graph.stats().newest_event == datetime.fromisoformat(FUTURE)
    result = graph.ingest(_identify("m-now", "now-user", "device", datetime.now(timezone.utc).isoformat()))
    assert result.replayed and result.links[0].outcome == "merged"
    assert profiles(graph) == {P("now-user", "device"), P("future-user")}


# -- messageId duplicates and conflicts, on a fresh graph ---------------------------------------

FIRST = _identify("dup-1", "u1", "a1", TS)
CONFLICT_PREFIX = "messageId: duplicate of an earlier event with a different body"


def test_a_resent_event_is_a_duplicate_and_changes_nothing(graph: IdentityGraph) -> None:
    graph.ingest(FIRST)
    before = snapshot(graph)
    result = graph.ingest({**FIRST, "properties": {"re-sent": True}, "context": {"retry": 1}})
    assert result.status == "duplicate"
    after = snapshot(graph)
    assert after[:2] == before[:2]
    assert after[2][:4] == before[2][:4] and after[2][5:] == before[2][5:]
    assert after[2][4] == before[2][4] + 1  # only the duplicates counter moves


def test_a_blocked_first_event_still_wins_its_message_id(graph: IdentityGraph) -> None:
    """Rule 9: the first event with a messageId wins, even a blocked one."""
    assert graph.ingest({**FIRST, "userId": "undefined", "anonymousId": None}).status == "blocked"
    assert graph.ingest(FIRST).status == "conflict"  # other IDs than the blocked first
    assert profiles(graph) == set()


@pytest.mark.parametrize("change", [
    {"userId": "u2"}, {"anonymousId": "a2"}, {"anonymousId": None}, {"type": "page"},
    {"type": "alias", "previousId": "a1", "anonymousId": None},
], ids=["userId", "anonymousId", "anonymousId dropped", "type", "alias"])
def test_a_reused_message_id_with_another_body_is_a_conflict(graph: IdentityGraph, change: dict[str, Any]) -> None:
    """The first wins; the second is reported (status "conflict") and changes nothing."""
    graph.ingest(FIRST)
    before = snapshot(graph)
    result = graph.ingest({**FIRST, **change})
    assert (result.message_id, result.status, result.links) == ("dup-1", "conflict", ())
    after = snapshot(graph)
    assert after[:2] == before[:2]
    assert after[2][:4] == before[2][:4] and after[2][5:] == before[2][5:]


def test_import_reports_a_conflict_and_keeps_the_first(graph: IdentityGraph, tmp_path: Path) -> None:
    """In one file and one batch: line 1 wins, line 3 is a plain duplicate, line 4 a conflict."""
    data = b"\n".join([
        orjson.dumps(FIRST),
        orjson.dumps(_identify("other", "u9", "a9", TS)),
        orjson.dumps({**FIRST, "properties": {"again": True}}),
        orjson.dumps({**FIRST, "userId": "u2"}),
    ]) + b"\n"
    path = tmp_path / "events.jsonl"
    summary, issues = import_bytes(graph, path, data)
    assert [(str(i.location), i.reason.startswith(CONFLICT_PREFIX)) for i in issues] == [(f"{path}:4", True)]
    assert str(issues[0]).startswith(f"{path}:4: {CONFLICT_PREFIX}")
    assert (summary.events, summary.applied, summary.duplicates, summary.conflicts, summary.invalid) == (4, 2, 1, 1, 0)
    assert profiles(graph) == {P("u1", "a1"), P("u9", "a9")}


def test_import_reports_a_conflict_with_an_event_already_in_the_graph(graph: IdentityGraph, tmp_path: Path) -> None:
    """Across transactions: the stored event wins over the file's."""
    graph.ingest(FIRST)
    path = tmp_path / "events.jsonl"
    summary, issues = import_bytes(graph, path, orjson.dumps({**FIRST, "anonymousId": "a2"}) + b"\n"
                                   + orjson.dumps(FIRST) + b"\n")
    assert [str(i.location) for i in issues] == [f"{path}:1"]
    assert issues[0].reason.startswith(CONFLICT_PREFIX)
    assert (summary.conflicts, summary.duplicates, summary.applied) == (1, 1, 0)
    assert profiles(graph) == {P("u1", "a1")}


def test_ingest_many_skips_every_rejected_event_with_its_reason(graph: IdentityGraph) -> None:
    """The bulk path agrees with ingest on every rejected case, and applies nothing of them."""
    rejected = [c for c in EVENT_CASES if isinstance(c.outcome, Rejected)]
    summary = graph.ingest_many([c.event for c in rejected])
    assert [(e.position, e.field, e.reason) for e in summary.errors] == [
        (n, c.outcome.field, c.outcome.reason) for n, c in enumerate(rejected)  # type: ignore[union-attr]
    ]
    assert (summary.invalid, summary.applied) == (len(rejected), 0)
    assert profiles(graph) == set()


CORPUS_CAP = 1 << 16


def catalogue_inputs() -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every catalogue input a file can hold and smaller than 64 KB: the
    atheris seed corpus (tests/fuzz/make_corpus.py)."""
    for case in EVENT_CASES:
        line = case.as_line()
        if line is not None and len(line) <= CORPUS_CAP:
            yield f"event {case.name}", line
    for file_case in FILE_CASES:
        if len(file_case.data) <= CORPUS_CAP:
            yield f"file {file_case.name}", file_case.data

