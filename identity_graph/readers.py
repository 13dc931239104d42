"""Where do events come from? Files, folders and stdin, read as a stream of JSON values.

Formats are detected by content, not by name: gzip by its magic bytes; a JSON array by a
leading ``[``; otherwise JSON lines, unless the first two lines are not JSON objects on
their own, in which case the file is one pretty-printed JSON document. Any object with a
``batch`` list is a Segment batch envelope: its top-level ``context`` and
``integrations`` are merged into each event (the event's own keys win), as Segment's
batch endpoint does. Pure reading: nothing here knows the rules.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, NamedTuple

import orjson

from .errors import IdentityGraphError

#: File names a folder is searched for (a file named on the command line is always read).
EVENT_SUFFIXES = (".json", ".jsonl", ".ndjson", ".txt", ".log")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_ENVELOPE_MERGED = ("context", "integrations")


class SourceError(IdentityGraphError):
    """A source cannot be read at all (missing path, unreadable file)."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where one event came from: ``source:line``, plus its index inside a batch envelope,
    or (``line`` None) its index in a top-level JSON array.

    >>> str(Location("events.jsonl", 17)), str(Location("b.json", 1, 3)), str(Location("a.json", None, 0))
    ('events.jsonl:17', 'b.json:1: batch[3]', 'a.json: [0]')
    """

    source: str
    line: int | None
    item: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.source}: [{self.item}]"
        return f"{self.source}:{self.line}" + ("" if self.item is None else f": batch[{self.item}]")


class Item(NamedTuple):
    """One value read: the decoded event, or an ``error`` saying why it could not be.

    Where it came from is kept as plain fields, and :attr:`location` is built only when
    asked for (on errors): an import reads millions of items. ``raw`` is the input text
    (a JSON line may keep its line end; :func:`raw_text` drops it).
    """

    source: str
    line: int | None
    index: int | None
    value: Any
    error: str | None
    raw: bytes

    @property
    def location(self) -> Location:
        return Location(self.source, self.line, self.index)


@dataclass(frozen=True)
class Source:
    """A file to read (``path`` ``"-"`` is stdin) and its size in bytes, when known."""

    path: str
    size: int | None

    @property
    def name(self) -> str:
        return self.path


def expand_sources(paths: Iterable[str | os.PathLike[str]]) -> list[Source]:
    """Files named, and every event file below each folder named, in sorted order.

    Raises :class:`SourceError` for a path that does not exist.
    """
    out: list[Source] = []
    for raw in paths:
        path = os.fspath(raw)
        if path == "-":
            out.append(Source("-", None))
            continue
        p = Path(path)
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and _is_event_file_name(f.name)
            )
            out.extend(Source(str(f), f.stat().st_size) for f in files)
        elif p.exists():
            out.append(Source(path, p.stat().st_size))
        else:
            raise SourceError(f"{path}: no such file or folder")
    return out


def _is_event_file_name(name: str) -> bool:
    name = name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(EVENT_SUFFIXES)


class _Counted(io.RawIOBase):
    """Counts the bytes read from the underlying file (compressed bytes, for gzip)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_source(source: Source) -> tuple[IO[bytes], _Counted]:
    """A binary stream of ``source``'s decompressed content and its byte counter."""
    try:
        raw: IO[bytes] = sys.stdin.buffer if source.path == "-" else open(source.path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"{source.path}: cannot read ({exc.strerror})") from None
    counted = _Counted(raw)
    stream = io.BufferedReader(counted, buffer_size=1 << 20)
    if stream.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb"), counted  # type: ignore[return-value]
    return stream, counted


def read_source(
    source: Source, on_bytes: Callable[[int], None] | None = None, decode: Callable[[bytes], Any] | None = None
) -> Iterator[Item]:
    """Every event value in ``source``, with its location; undecodable input as error items.

    ``on_bytes(n)`` is called as input bytes are consumed (compressed bytes for gzip).
    ``decode``: a fast path for the lines of a JSON-lines input (see :func:`_decode_lines`).
    """
    stream, counted = open_source(source)
    try:
        yield from _read_stream(source.path, stream, counted, on_bytes, decode)
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a truncated/corrupt gzip file
        raise SourceError(f"{source.path}: cannot read ({exc})") from None
    finally:
        if source.path != "-":
            stream.close()


def _read_stream(
    name: str, stream: IO[bytes], counted: _Counted, on_bytes: Callable[[int], None] | None,
    decode: Callable[[bytes], Any] | None = None,
) -> Iterator[Item]:
    head = _peek_first_bytes(stream)
    if head.startswith(_BOM):
        stream.read(len(_BOM))  # a UTF-8 byte order mark says nothing about the events
        head = head[len(_BOM):]
    first = head.lstrip()[:1]
    if first == b"[":
        yield from _read_array(name, stream)
        return
    lines = iter(stream)
    pending: list[tuple[int, bytes]] = []
    if first == b"{":
        # A pretty-printed document starts with lines that are not JSON objects by themselves.
        candidates: list[bytes] = []
        for number, line in enumerate(lines, 1):
            pending.append((number, line))
            if line.strip():
                candidates.append(line)
                if len(candidates) == 2:
                    break
        if candidates and not any(_is_json_object_line(line) for line in candidates):
            yield from _read_document(name, stream, b"".join(line for _, line in pending), decode)
            return
    yield from _decode_lines(name, pending, decode)
    number = pending[-1][0] if pending else 0
    numbered: Iterable[tuple[int, bytes]] = enumerate(lines, number + 1)
    if on_bytes is not None:
        numbered = _reporting(numbered, counted, on_bytes)
    yield from _decode_lines(name, numbered, decode)


def _reporting(
    numbered: Iterable[tuple[int, bytes]], counted: _Counted, on_bytes: Callable[[int], None]
) -> Iterator[tuple[int, bytes]]:
    """The lines as they are, telling ``on_bytes`` the bytes read (all of them, from the
    file's start) every 1,024 lines and at the end."""
    reported = 0
    for number, line in numbered:
        yield number, line
        if number % 1024 == 0:
            on_bytes(counted.count - reported)
            reported = counted.count
    on_bytes(counted.count - reported)


def _decode_lines(
    name: str, numbered: Iterable[tuple[int, bytes]], decode: Callable[[bytes], Any] | None = None
) -> Iterator[Item]:
    """:func:`decode_line` over numbered lines, its common case inlined: this loop runs once
    per event of an import. ``decode``: the caller's fast path, tried first on each line;
    what it returns (unless None) becomes the item's value as it is."""
    loads, new, item = orjson.loads, tuple.__new__, Item
    if decode is not None:
        for number, line in numbered:
            value = decode(line)
            if value is not None:
                yield new(item, (name, number, None, value, None, line))
            else:
                yield from _decode_lines(name, ((number, line),))
        return
    for number, line in numbered:
        try:
            value = loads(line)
        except orjson.JSONDecodeError:
            value = None
        if type(value) is dict and "batch" not in value:
            yield new(item, (name, number, None, value, None, line))
        else:
            yield from decode_line(name, number, line)


def splittable(source: Source) -> bool:
    """Whether ``source`` is a plain (uncompressed) JSON-lines file, whose byte ranges can be
    read apart from each other (see :func:`read_range`): by the same test as the reader's."""
    if source.path == "-" or not source.size:
        return False
    try:
        with open(source.path, "rb") as f:
            if f.read(2) == _GZIP_MAGIC:
                return False
            f.seek(0)
            candidates: list[bytes] = []
            for line in f:
                if not candidates and line.startswith(_BOM):
                    line = line[len(_BOM):]
                if line.strip():
                    candidates.append(line)
                    if len(candidates) == 2:
                        break
    except OSError:
        return False
    first = candidates[0].lstrip()[:1] if candidates else b""
    if first == b"[":
        return False
    return not (first == b"{" and not any(_is_json_object_line(line) for line in candidates))


def line_start(path: str, offset: int) -> int:
    """The offset of the first line that starts at or after ``offset`` (the file's size if none)."""
    if offset <= 0:
        return 0
    with open(path, "rb") as f:
        f.seek(offset - 1)
        position = offset - 1
        while piece := f.read(1 << 16):
            newline = piece.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(piece)
    return position


class _Bounded(io.RawIOBase):
    """The next ``left`` bytes of an open file, as a raw stream of their own."""

    def __init__(self, raw: IO[bytes], left: int) -> None:
        self._raw, self._left = raw, left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        n = self._raw.readinto(memoryview(buffer)[: min(len(buffer), self._left)]) or 0  # type: ignore[attr-defined]
        self._left -= n
        return n


def read_range(
    source: Source, start: int, end: int | None, decode: Callable[[bytes], Any] | None = None,
    lines_read: list[int] | None = None,
) -> Iterator[Item]:
    """The events of bytes ``start`` to ``end`` (None: the end of the file) of a JSON-lines
    file, ``start`` a line start (see :func:`line_start`). Lines are numbered from 1 at
    ``start``: the caller, who knows how many lines came before, adds them. ``lines_read``
    gets the range's number of lines appended once it is read whole.

    A parse worker reads its own ranges and nothing else: it needs no count of the lines
    before them, which would mean reading every other range as well. The range is read
    through a buffer that stops at ``end``, so its lines are split by C-level iteration
    alone, with no Python step per line to watch for the end.
    """
    name = source.path
    try:
        with open(name, "rb", buffering=0) as file:
            file.seek(start)
            raw: Any = file if end is None else _Bounded(file, end - start)
            stream = io.BufferedReader(raw, 1 << 20)
            numbers = count(1)
            yield from _decode_lines(name, zip(numbers, stream), decode)
            if lines_read is not None:
                # zip draws a number before it finds the lines at their end: the next is lines + 2.
                lines_read.append(next(numbers) - 2)
    except OSError as exc:
        raise SourceError(f"{name}: cannot read ({exc})") from None


def _peek_first_bytes(stream: IO[bytes]) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return peek(64)[:64]
    return b""


def _is_json_object_line(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def decode_line(
    name: str, number: int, line: bytes, decode: Callable[[bytes], Any] | None = None
) -> Iterator[Item]:
    """The events of one JSON line (none if blank; several for a batch envelope), or an
    error item saying why the line is not JSON: what every reader of lines shares.
    ``decode``: a fast path tried first (see :func:`_decode_lines`)."""
    if decode is not None:
        yield from _decode_lines(name, ((number, line),), decode)
        return
    if not line.strip():
        return
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if line.startswith(_BOM):
            # Files joined with `cat` keep each one's byte order mark: ignored on any line.
            yield from decode_line(name, number, line[len(_BOM):])
            return
        yield Item(name, number, None, None, f"invalid JSON ({_json_error(line, exc)})", line.rstrip(b"\r\n"))
        return
    if type(value) is dict and "batch" not in value:  # the common case, kept short
        yield Item(name, number, None, value, None, line.rstrip(b"\r\n"))
        return
    yield from _expand(name, number, None, value, line.rstrip(b"\r\n"))


def _json_error(data: bytes, exc: Exception) -> str:
    """The decoder's complaint on one line; for bytes that are not UTF-8, where they are
    (orjson says "surrogates not allowed" at column 1 whatever the bytes and place)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8: byte 0x{data[bad.start]:02x} at column {bad.start + 1}"
    stripped = data.rstrip(b"\r\n")
    if stripped != data:
        # Decoded with its line end, a truncated line is "line 2 column 1" of itself,
        # which reads like the file's line 2: say where on this line it broke off.
        try:
            orjson.loads(stripped)
        except orjson.JSONDecodeError as again:
            return str(again)
    return str(exc)


def _read_array(name: str, stream: IO[bytes]) -> Iterator[Item]:
    """A top-level JSON array, element by element: memory stays flat whatever its size."""
    import ijson  # only arrays need an incremental parser

    index = -1
    try:
        for index, element in enumerate(ijson.items(stream, "item", use_float=True)):
            yield from _expand(name, None, index, element, None)
    except ijson.JSONError as exc:
        # ijson's messages span lines (an excerpt and a "right here" arrow): an issue is one line.
        reason = " ".join(str(exc).split())
        yield Item(name, None, index + 1, None, f"invalid JSON ({reason}); the rest of the file is skipped", b"")


def _read_document(
    name: str, stream: IO[bytes], prefix: bytes = b"", decode: Callable[[bytes], Any] | None = None
) -> Iterator[Item]:
    # One pretty-printed object (a Segment batch envelope is at most 500 KB): decoded
    # whole, since its top-level context may come after its batch.
    data = prefix + stream.read()
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        # Not one document after all: JSON lines whose first lines are broken. Read it as
        # lines, so every valid event in it still counts and each bad line is reported.
        yield from _decode_lines(name, enumerate(data.splitlines(keepends=True), 1), decode)
        return
    yield from _expand(name, 1, None, value, None)


def _expand(name: str, line: int | None, index: int | None, value: Any, raw: bytes | None) -> Iterator[Item]:
    """An event as it is, or the events of a Segment batch envelope."""
    if isinstance(value, dict) and "batch" in value:
        batch = value["batch"]
        if not isinstance(batch, list):
            yield Item(name, line, index, None, "batch: must be a list of events", raw or orjson.dumps(value))
            return
        shared = {k: value[k] for k in _ENVELOPE_MERGED if isinstance(value.get(k), dict)}
        for position, event in enumerate(batch):
            if isinstance(event, dict) and shared:
                event = dict(event)
                for key, outer in shared.items():
                    inner = event.get(key)
                    event[key] = {**outer, **inner} if isinstance(inner, dict) else (outer if inner is None else inner)
            yield Item(name, line, position, event, None, b"")
        return
    yield Item(name, line, index, value, None, raw if raw is not None else b"")


def raw_text(item: Item) -> bytes:
    """The input text of an item, for the error report (re-encoded for envelope items)."""
    if item.raw:
        return item.raw.rstrip(b"\r\n")  # the reader keeps a line's end: it costs a copy per line
    try:
        return orjson.dumps(item.value)
    except TypeError:  # past orjson's 255 levels of nesting, or an integer beyond 64 bits
        pass
    try:
        return repr(item.value).encode()
    except RecursionError:  # deeper than Python's repr goes (ijson reads any depth)
        return b"(nested too deep to show)"
