"""The import floor: the least work that yields the engine's ID -> canonical map.

    python benchmarks/floor.py EVENTS.jsonl [MORE.jsonl ...] OUT.db   # prints a JSON summary on stdout

Independent of ``identity_graph`` (it imports nothing from it): a second, minimal
implementation of the README's rules, used by ``bench_import.py`` both as the speed floor
of ``identity-graph import`` and as a cross-check of its result.

1. Read the file line by line and decode each with msgspec into a struct of only the
   fields the rules read (the fastest parse we found: it never builds the ~1 KB of
   context; ``orjson.loads`` of the whole event is ~2.5x slower); an event without a
   messageId is decoded whole by orjson, since its derived messageId hashes all of it.
   Validate what the engine validates (so invalid events are skipped the same way; none
   in generated histories).
2. Keep one small tuple per valid event, the first of each messageId in file order
   (rule 9): ``(time, messageId, userId, anonymousId, previousId)`` with blocked values
   (rule 2) already dropped; events whose IDs are all blocked keep only their messageId.
3. Sort the tuples by ``(time instant, messageId)`` (rule 8): the file is mostly, not
   entirely, in event-time order.
4. One pass of a dict-based union-find: every ID enters as its own profile (rule 7); a
   userId becomes known at its first event (rule 3), before that event's links; the
   explicit alias link, then the implicit one (rule 4); already together, then known-ID
   protection (rule 5), then the size cap (rule 6); the target's canonical survives (rule 7).
5. One SQLite transaction on a fresh file: ``executemany`` of the map ``(id, canonical)``
   (sorted by ID, into a WITHOUT ROWID table keyed by ID) and of the links with their
   outcomes (a plain table, no index).

Only JSON lines are read (no JSON arrays, batch envelopes or gzip), which is all the
generator writes. An event without any time field would get "now", as in the engine, so
such events cannot be compared exactly between two runs (generated histories have none).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
from _blocked import BLOCKED

MAX_PROFILE_IDS = 1000
PROTECT_KNOWN_IDS = True
TYPES = frozenset({"alias", "identify", "track", "page", "screen", "group"})
TIME_FIELDS = ("timestamp", "originalTimestamp", "receivedAt", "sentAt")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})[.,](\d+)")


class Fields(msgspec.Struct):
    """The fields the rules read; ``Any``: the checks below are the engine's, in Python."""

    type: Any = None
    userId: Any = None
    anonymousId: Any = None
    previousId: Any = None
    messageId: Any = None
    timestamp: Any = None
    originalTimestamp: Any = None
    receivedAt: Any = None
    sentAt: Any = None
    event: Any = None
    groupId: Any = None


class Invalid(Exception):
    pass


def _slow_time(value: object) -> int:
    """Any ISO-8601 string the engine accepts -> epoch microseconds (UTC); naive is UTC."""
    if not isinstance(value, str):
        raise Invalid
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        normalised = _FRACTION.sub(lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", text)
        try:
            parsed = datetime.fromisoformat(normalised)
        except ValueError:
            raise Invalid from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return (parsed - _EPOCH) // _US


def _id(value: object) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        if len(value) > 1024 or "\x00" in value:
            raise Invalid
        return value
    if type(value) is int:
        text = str(value)
        if len(text) > 1024:
            raise Invalid
        return text
    raise Invalid


def _unblocked(value: str | None) -> str | None:
    if value is None or not value.strip() or value.casefold() in BLOCKED:
        return None
    return value


def collect(paths: list[str]) -> tuple[list[tuple], int, int, int]:
    """(records, events read, invalid, duplicates). One record per first-seen messageId."""
    decode = msgspec.json.Decoder(Fields).decode
    seconds: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds (fast path)
    seen: set[str] = set()
    records: list[tuple] = []
    append = records.append
    now = (datetime.now(timezone.utc) - _EPOCH) // _US
    n = invalid = duplicates = 0
    for line in _lines(paths):
        n += 1
        try:
            ev = decode(line)
            if not line.isascii():
                line.decode()  # UTF-8, also in the fields msgspec skips
            type_ = ev.type
            if type(type_) is not str or type_ not in TYPES:
                raise Invalid
            user = _id(ev.userId)
            anon = _id(ev.anonymousId)
            prev = None
            if type_ == "alias":
                prev = _id(ev.previousId)
                if prev is None or user is None:
                    raise Invalid
            elif user is None and anon is None:
                raise Invalid
            elif type_ == "track":
                if type(ev.event) is not str:
                    raise Invalid
            elif type_ == "group" and ev.groupId is None:
                raise Invalid
            t = None
            for value in (ev.timestamp, ev.originalTimestamp, ev.receivedAt, ev.sentAt):
                if value is not None:
                    # Fast path for the exporter's "2026-01-01T00:00:00.000Z".
                    if (type(value) is str and len(value) == 24 and value[23] == "Z" and value[19] == "."
                            and value[20:23].isdigit() and value[20:23].isascii()):
                        sec = seconds.get(value[:19])
                        if sec is None:
                            sec = seconds[value[:19]] = _slow_time(value[:19] + "Z") // 1_000_000
                        t = sec * 1_000_000 + int(value[20:23]) * 1000
                    else:
                        t = _slow_time(value)
                    break
            if t is None:
                t = now
            mid = ev.messageId
            if mid is None:
                body = orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
                mid = "sha256:" + hashlib.sha256(body).hexdigest()[:32]
            elif type(mid) is not str or not mid or len(mid) > 1024:
                raise Invalid
        except (Invalid, orjson.JSONDecodeError, msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            invalid += 1
            continue
        if mid in seen:
            duplicates += 1
            continue
        seen.add(mid)
        user, anon, prev = _unblocked(user), _unblocked(anon), _unblocked(prev)
        if user is None and anon is None and prev is None:
            continue  # blocked: claims its messageId, changes nothing
        append((t, mid, type_, user, anon, prev))
    return records, n, invalid, duplicates


def _lines(paths: list[str]):
    """Every non-blank line of the files, in order (one file after the other)."""
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    yield line


def resolve(records: list[tuple]) -> tuple[dict[str, str], list[tuple], dict[str, int]]:
    """Union-find over the time-sorted records: (id -> canonical, links with outcomes, counts)."""
    parent: dict[str, str] = {}
    size: dict[str, int] = {}  # root -> size
    canon: dict[str, str] = {}  # root -> canonical
    known_root: set[str] = set()  # roots whose profile holds a known ID
    known: set[str] = set()
    links: list[tuple] = []
    counts = {"merged": 0, "together": 0, "known_id": 0, "size_cap": 0}
    cap = MAX_PROFILE_IDS

    def find(x: str) -> str:
        while (up := parent[x]) != x:
            parent[x] = parent[up]
            x = parent[x]
        return x

    def link(src: str, dst: str, kind: str, seq: int, t: int, mid: str, type_: str) -> None:
        rs, rd = find(src), find(dst)
        if rs == rd:
            outcome, reason = "together", None
            counts["together"] += 1
        elif kind == "implicit" and PROTECT_KNOWN_IDS and rs in known_root:
            outcome, reason = "refused", "known_id"
            counts["known_id"] += 1
        elif size[rs] + size[rd] > cap:
            outcome, reason = "refused", "size_cap"
            counts["size_cap"] += 1
        else:
            outcome, reason = "merged", None
            counts["merged"] += 1
            c = canon[rd]
            k = rs in known_root or rd in known_root
            big, small = (rs, rd) if size[rs] >= size[rd] else (rd, rs)
            parent[small] = big
            size[big] += size.pop(small)
            del canon[small]
            canon[big] = c
            known_root.discard(small)
            if k:
                known_root.add(big)
        links.append((mid, seq, src, dst, kind, type_, t, outcome, reason))

    for t, mid, type_, user, anon, prev in records:
        for x in (prev, anon, user):
            if x is not None and x not in parent:
                parent[x] = x
                size[x] = 1
                canon[x] = x
        if user is not None and user not in known:
            known.add(user)
            known_root.add(find(user))
        if user is not None:
            if prev is not None and prev != user:
                link(prev, user, "alias", 0, t, mid, type_)
            if anon is not None and anon != user:
                link(anon, user, "implicit", 1, t, mid, type_)
    mapping = {x: canon[find(x)] for x in parent}
    counts["ids"] = len(mapping)
    counts["known_ids"] = len(known)
    counts["profiles"] = len(canon)
    return mapping, links, counts


def write(db_path: str, mapping: dict[str, str], links: list[tuple]) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, canonical TEXT NOT NULL) WITHOUT ROWID")
        conn.execute("CREATE TABLE links (message_id TEXT, seq INTEGER, source TEXT, target TEXT, kind TEXT,"
                     " event_type TEXT, time INTEGER, outcome TEXT, reason TEXT)")
        conn.executemany("INSERT INTO ids VALUES (?, ?)", sorted(mapping.items()))
        conn.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", links)
        conn.execute("COMMIT")
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    *paths, db_path = argv
    if os.path.exists(db_path):
        os.remove(db_path)
    phases = {}
    t0 = time.perf_counter()
    records, n, invalid, duplicates = collect(paths)
    t1 = time.perf_counter()
    records.sort()  # (time, messageId) first; messageIds are distinct, so the rest never compares
    t2 = time.perf_counter()
    mapping, links, counts = resolve(records)
    t3 = time.perf_counter()
    write(db_path, mapping, links)
    t4 = time.perf_counter()
    phases = {"read+parse": t1 - t0, "sort": t2 - t1, "union-find": t3 - t2, "sqlite write": t4 - t3}
    out = {"events": n, "invalid": invalid, "duplicates": duplicates, "records": len(records),
           "links": len(links), **counts, "phases": {k: round(v, 3) for k, v in phases.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
