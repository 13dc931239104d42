"""How does history get in? Batch import of event files into a graph.

:func:`import_events` streams the sources (see :mod:`identity_graph.readers`), validates
each event, packs them into chunks (:class:`~identity_graph.chunk.Chunk`) and hands a batch of
chunks at a time to :meth:`IdentityGraph.apply_chunks`, which applies the rules through the same writer as
``ingest`` and ``ingest_many``, so an import and one-by-one ingestion give the same graph.
Each batch is one transaction: a crash loses at most the batch in flight, and re-running
the import skips everything that landed (rule 9).

Progress goes to a callback; bad input to another. Nothing here prints.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from functools import partial
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

import orjson

from . import pipe
from .batch import Plan, gc_paused
from .chunk import Chunk, ChunkBuilder
from .errors import IdentityGraphError, InvalidEvent
from .events import Event, datetime_to_time, event_from_line, parse_event
from .rules import MergeRules
from .readers import (
    Item, Location, Source, SourceError, expand_sources, line_start, raw_text, read_range, read_source, splittable,
)
from .results import CONFLICT_REASON, IngestSummary

if TYPE_CHECKING:  # not at run time: the parse workers load this module, and need no database layer
    from .graph import IdentityGraph

# Each commit rewrites every page of the messageId register (and of the link indexes)
# that its random keys touch, so fewer, larger transactions write less. Measured on 1M
# generated events (SQLite, 2 cores), session 2: 10,000 -> 34-37 s, 50,000 -> 28 s;
# session 3, with chunks: 50,000 -> 16.4-16.7 s, 100,000 -> 15.7-16.3 s. Session 9, a batch
# of several chunks: 100,000 -> 8.6-9.2 s, 500,000 -> 7.8-8.2 s (the command, three runs
# each, alternated; the writer's largest RSS 404 -> 606 MB). A first try with 300,000 gave
# about half the gain, and 1,000,000 little more than 500,000.
DEFAULT_IMPORT_BATCH = 500_000
#: Unless told a batch size, an import's transactions grow with the graph: one commit
#: rewrites about every page of those indexes however many events it holds, and the
#: indexes grow with the history, so a fixed batch writes more per event the larger the
#: graph (100M events at 500,000 a batch, session 16: 828 GB written for an 18.6 GB graph,
#: and the rate fell from 64k to 17k events/s). A batch of a 1/``BATCH_GROWTH`` of the
#: register's rows keeps the pages written per event about flat. Measured on the register
#: alone (20M random keys, 16 KB pages, session 17): commits of 2M instead of 500k wrote
#: 7.3 GB instead of 17.2 GB and took 39 s instead of 46 s for the last 5M; sorting a whole
#: 500k commit's keys at once instead of per 100k chunk wrote as much. A whole import of 30M
#: events: 578 s -> 457-495 s, 99 GB -> 47-49 GB written (benchmarks/README.md, session 17).
BATCH_GROWTH = 8
#: The databases whose imports grow their transactions. Not PostgreSQL: it writes WAL per
#: row and a touched page once per checkpoint, not every touched page at every commit as
#: SQLite's WAL does, so fewer commits save it little, while a grown batch keeps more
#: events in memory and packs them. 30M events, in turns (session 21): growing 651 and
#: 678 s, peak 1.84 GB; 500,000 a batch 595 and 671 s, peak 1.58 GB; the same WAL (62-63 GB).
#: Session 18 found the same at 20M (337 s against 318 s).
GROWING_DIALECTS = frozenset({"sqlite"})
#: The largest grown batch: its parsed events are kept until it commits (see apply_chunks),
#: the first DEFAULT_IMPORT_BATCH as objects (~440 bytes an event), the rest packed (~140).
MAX_IMPORT_BATCH = 2_000_000
#: Events per chunk, the pipeline's unit (what a parse worker hands the writer, at most a
#: batch): larger chunks keep the writer waiting longer at the start and the workers at the
#: end, and cost memory on both sides of the pipe.
CHUNK_EVENTS = 100_000
#: Input from which the ``import`` command starts parse workers. Spawning two costs ~0.3 s:
#: measured, 54 MB (50k events) into a fresh graph broke even (1.04 s against 1.08 s), and a
#: 29 MB day into a 1M-ID graph took 1.73 s with workers against 1.24 s without.
PARALLEL_MIN_BYTES = 64 << 20
#: The parse worker's chunks at the start and the end of the input (see _parse).
SMALL_CHUNK = 5_000
#: Parse workers for a large input (see "the parse workers"). Two beat one on a 2-core
#: machine too (1M events: 15.5 s -> 14.8 s, three runs each): one worker alone waits on
#: its pipe while the writer applies a batch; two, niced, fill the writer's gaps.
PARSE_WORKERS = 2
#: Events applied from which an import refreshes the planner statistics (see IdentityGraph.optimize).
ANALYZE_AFTER = 10_000


@dataclass(frozen=True)
class ImportIssue:
    """One rejected input: where, why, and the raw text (for the error report)."""

    location: Location
    reason: str
    raw: bytes

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        loc = self.location
        return {
            "file": loc.source, "line": loc.line, "item": loc.item, "reason": self.reason,
            "raw": self.raw.decode("utf-8", errors="replace"),
        }


class ImportWorkerFailed(IdentityGraphError):
    """The child process that reads and validates events died before the end of the input."""


def parallel_pays_off(paths: Iterable[str | os.PathLike[str]]) -> bool:
    """Whether a parse worker is worth spawning (~0.2 s) for these sources: a spare CPU
    and more than ``PARALLEL_MIN_BYTES`` of files (never for stdin)."""
    try:
        sources = expand_sources(paths)
    except SourceError:
        return False  # import_events reports it
    if (os.cpu_count() or 1) < 2 or any(s.size is None for s in sources):
        return False
    return sum(s.size or 0 for s in sources) >= PARALLEL_MIN_BYTES


class StrictImportStopped(IdentityGraphError):
    """``strict`` import met an invalid event; everything before it was committed."""

    def __init__(self, issue: ImportIssue, summary: "ImportSummary") -> None:
        super().__init__(str(issue))
        self.issue = issue
        self.summary = summary


@dataclass(frozen=True)
class ImportProgress:
    """Where an import stands: input bytes consumed (of ``bytes_total`` when known)."""

    bytes_done: int
    bytes_total: int | None
    events: int
    elapsed: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class ImportSummary(IngestSummary):
    """Counts of one import; ``events`` counts every event read, valid or not."""

    files: int = 0
    elapsed: float = 0.0
    issues: list[ImportIssue] = field(default_factory=list, repr=False)

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "events": self.events, "applied": self.applied,
            "duplicates": self.duplicates, "conflicts": self.conflicts, "invalid": self.invalid, "blocked": self.blocked,
            "links_merged": self.links_merged, "links_together": self.links_together,
            "links_refused": dict(sorted(self.links_refused.items())),
            "new_ids": self.new_ids, "profiles_touched": self.profiles_touched,
            "replayed_events": self.replayed_events,
            "elapsed_seconds": round(self.elapsed, 3), "events_per_second": round(self.events_per_second, 1),
        }


def import_events(
    graph: IdentityGraph,
    sources: Iterable[str | os.PathLike[str]],
    *,
    batch_size: int | None = None,
    strict: bool = False,
    on_issue: Callable[[ImportIssue], None] | None = None,
    on_progress: Callable[[ImportProgress], None] | None = None,
    parallel: bool = False,
) -> ImportSummary:
    """Import every event of ``sources`` (files, folders, ``"-"`` for stdin) into ``graph``.

    Invalid events are skipped, counted and passed to ``on_issue`` (else kept in
    ``summary.issues``); with ``strict`` the first one stops the import with
    :class:`StrictImportStopped` after committing the events before it. A missing path
    or unreadable file raises :class:`~identity_graph.readers.SourceError` before or while
    reading it, after committing the events read before it; re-running completes the import.
    ``batch_size``: events per transaction; a batch is applied in chunks of at most
    ``CHUNK_EVENTS`` and kept in memory until it commits. None (the default):
    ``DEFAULT_IMPORT_BATCH``, and on SQLite growing with the graph up to ``MAX_IMPORT_BATCH``
    (see :func:`batch_events` and ``GROWING_DIALECTS``).
    ``parallel``: read and validate in child processes (two; see "the parse workers"
    below) while this one writes. Off by default in the library: they are *spawned*,
    which re-imports the calling script,
    so a script must guard its top level with ``if __name__ == "__main__":`` (the
    multiprocessing rule). The ``import`` command turns it on past ``PARALLEL_MIN_BYTES``
    of input when there is a spare CPU.

    >>> import tempfile, pathlib
    >>> from identity_graph import IdentityGraph
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.jsonl").write_text(
    ...     '{"type":"identify","userId":"u1","anonymousId":"a1","messageId":"m1"}\\n'
    ...     '{"type":"identify"}\\n')
    >>> with IdentityGraph("sqlite://") as g:
    ...     s = import_events(g, [folder])
    ...     g.resolve("a1")
    'u1'
    >>> s.applied, s.invalid, str(s.issues[0]).endswith("a.jsonl:2: userId: the event has neither a userId nor an anonymousId")
    (1, 1, True)
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    expanded = expand_sources(sources)  # a missing path fails before anything is written
    summary = ImportSummary(files=len(expanded))
    report = on_issue or summary.issues.append
    started = time.perf_counter()
    total = None if any(s.size is None for s in expanded) else sum(s.size or 0 for s in expanded)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(ImportProgress(done, total, summary.events, time.perf_counter() - started))

    with gc_paused():
        _import(graph, expanded, summary, batch_size, strict, report, progress, parallel)
    if summary.applied >= ANALYZE_AFTER:
        graph.optimize()
    summary.elapsed = time.perf_counter() - started
    if on_progress is not None:
        on_progress(ImportProgress(done, total, summary.events, summary.elapsed))
    return summary


def _import(
    graph: IdentityGraph,
    expanded: list[Source],
    summary: ImportSummary,
    batch_size: int | None,
    strict: bool,
    report: Callable[[ImportIssue], None],
    progress: Callable[[int], None],
    parallel: bool,
) -> None:
    started = time.perf_counter()
    rules = graph.rules
    # Where batches do not grow, an unset batch size is simply the default (GROWING_DIALECTS).
    fixed = batch_size or (None if graph.dialect in GROWING_DIALECTS else DEFAULT_IMPORT_BATCH)
    registered = graph.register_size() if fixed is None else 0
    args = (expanded, min(fixed or DEFAULT_IMPORT_BATCH, CHUNK_EVENTS), rules, strict)
    # Workers leave a chunk's fall-back events out of the pipe, for the writer to read again
    # in the rare fall-back (~half of a chunk's bytes; 0.2-0.4 s of a 1M-event import),
    # except where every batch falls back: a graph that has erased IDs (see apply_chunk).
    chunks = _parse_in_worker(*args, keep_others=graph.has_erased_ids()) if parallel else _parse(*args)
    # What ended the input early (a --strict issue, an unreadable file, a failed worker):
    # raised once the chunks before it are committed, so that they stay.
    stop: list[Exception] = []

    def take() -> Chunk | None:
        """The next chunk with events; None at the end of the input or at a stop."""
        while not stop:
            try:
                item = next(chunks, None)
            except Exception as exc:  # noqa: BLE001 - raised again by _import, after the commit
                stop.append(exc)
                return None
            if item is None:
                return None
            chunk, issues, consumed = item
            summary.events += len(chunk) + len(issues)
            if strict and issues:  # the chunk ends at this issue: what came before is committed
                summary.invalid += 1
                stop.append(StrictImportStopped(issues[0], summary))
            else:
                for issue in issues:  # reported as read; a conflict only once its batch is written
                    summary.invalid += 1
                    report(issue)
            progress(consumed)
            if len(chunk):
                return chunk
        return None

    try:
        # The first chunk of each batch is taken outside its transaction: the writer lock is
        # not held while the parsing starts, and an input without events writes nothing.
        first = take()
        while first is not None:
            # The events read so far stand for the rows they registered (a re-run's duplicates
            # register nothing, but a re-run's batches need no growing).
            size = fixed or batch_events(registered + summary.events)
            # Past the events of a default batch, the chunks a grown transaction keeps for a
            # retry are packed: 30M events, the writer's peak 2,449 -> 1,772 MB (session 17).
            for line_offset, conflicting in graph.apply_chunks(_batch(first, size, take), summary,
                                                               keep=DEFAULT_IMPORT_BATCH):
                _report_conflicts(line_offset, conflicting, report)
            first = take()
        if stop:
            if isinstance(stop[0], StrictImportStopped):
                summary.elapsed += time.perf_counter() - started
            raise stop[0]
    finally:
        chunks.close()


def batch_events(registered: int) -> int:
    """Events in an import's next transaction when the graph's register holds about
    ``registered`` rows (on SQLite, and no batch size was given): see ``BATCH_GROWTH``.

    >>> batch_events(0), batch_events(8_000_000), batch_events(100_000_000)
    (500000, 1000000, 2000000)
    """
    return max(DEFAULT_IMPORT_BATCH, min(MAX_IMPORT_BATCH, registered // BATCH_GROWTH))


def _batch(first: Chunk, size: int, take: Callable[[], Chunk | None]) -> Iterator[Chunk]:
    """The chunks of one transaction: ``first``, then more from ``take`` while fewer than
    ``size`` events are taken, so a batch ends at the first chunk boundary at or past
    ``size`` (chunks are at most ``CHUNK_EVENTS``), or where ``take`` ends."""
    chunk: Chunk | None = first
    while chunk is not None:
        yield chunk
        size -= len(chunk)
        chunk = take() if size > 0 else None


def _parse(
    expanded: list[Source], chunk_size: int, rules: MergeRules, strict: bool = False, small: int | None = None,
    now: int | None = None, keep_others: bool = True,
) -> Iterator[tuple[Chunk, list[ImportIssue], int]]:
    """The sources' events, validated and planned under ``rules``, packed into chunks of
    ``chunk_size`` valid events, each with the invalid items met while reading it and the
    input bytes it consumed. With ``strict`` a chunk ends at the first invalid item.

    ``small``: a parse worker's chunk size at both ends of the input. The writer waits for
    the first chunk and the worker waits for the writer's last one: small chunks there
    keep both processes busy (~1 s of a 1M-event import). The end is told from the
    input's size and the bytes an event has taken so far (no end is known for stdin).
    ``now``: the time given to events without one, instead of the time each chunk is read
    (to read a chunk again exactly: see _reread_others). ``keep_others``: False leaves each
    chunk's fall-back events out (``others`` None), for a worker that leaves them out of the pipe.
    """
    consumed = [0]

    def count(n: int) -> None:
        consumed[0] += n

    items = (item for source in expanded for item in read_source(source, count, event_from_line))
    sizes = [source.size for source in expanded]
    remaining = None if small is None or None in sizes else sum(sizes)  # type: ignore[arg-type]
    yield from _chunked(items, consumed, chunk_size, rules, strict, small, remaining, now, keep_others)


def _chunked(
    items: Iterable[Item], consumed: list[int], chunk_size: int, rules: MergeRules, strict: bool,
    small: int | None, remaining: int | None, fixed_now: int | None = None, keep_others: bool = True,
) -> Iterator[tuple[Chunk, list[ImportIssue], int]]:
    """:func:`_parse`'s loop; ``consumed[0]`` is kept up to date by the reader of ``items``."""
    builder = ChunkBuilder(rules, keep_others)
    issues: list[ImportIssue] = []
    events_seen = bytes_seen = 0
    size = min(chunk_size, small or chunk_size)
    now = _now() if fixed_now is None else fixed_now
    taken = 0
    add = builder.add
    for item in items:
        event = item[3]  # .value: an Event already when the reader's fast path validated it
        if type(event) is not Event:
            event = _validate(item, now)
        if type(event) is ImportIssue:
            issues.append(event)  # type: ignore[arg-type]
            if not strict:
                continue
        else:
            add(event, item[:3])  # (source, line, index): where it came from
            taken += 1
            if taken < size:
                continue
        events_seen += taken + len(issues)
        bytes_seen += consumed[0]
        yield _taken(builder, now), issues, consumed[0]
        if remaining is None:
            size = chunk_size
        else:
            # Near the end each chunk takes half of what is left: a few shrinking chunks
            # (each commit rewrites the register's pages, so not many small ones).
            remaining -= consumed[0]
            left = remaining * events_seen / max(bytes_seen, 1)
            size = max(min(small, chunk_size), min(chunk_size, int(left // 2)))  # type: ignore[type-var]
        issues, consumed[0], taken = [], 0, 0
        now = _now() if fixed_now is None else fixed_now
    yield _taken(builder, now), issues, consumed[0]


def _now() -> int:
    return datetime_to_time(datetime.now(timezone.utc))


def _taken(builder: ChunkBuilder, now: int) -> Chunk:
    chunk = builder.take()
    chunk.now = now
    return chunk


# -- the parse workers --------------------------------------------------------------------
# Reading, JSON decoding and validation cost more than applying the events, so child
# processes do them while this one writes. The input is cut into *units*: whole files,
# or byte ranges of a plain JSON-lines file (about a chunk each). With two workers,
# worker 0 parses units 0, 2, 4... and worker 1 units 1, 3, 5..., and this process takes
# their chunks unit by unit, in input order: the graph is the one a single reader would
# make (rule 9's "first wins" follows the input). A worker reads its own ranges only and
# numbers their lines from 1; with each range's last chunk it sends the range's number of
# lines, and this process, which takes the ranges in order, adds the lines of the ranges
# before (``Chunk.line_offset``), so every line reported is the file's own. Chunks
# cross pipes pickled (see identity_graph.pipe); a worker waits on its pipe until this
# process takes its chunk, so memory stays flat. Workers are spawned, not forked: they
# must not inherit this process's open database connections.


class Unit(NamedTuple):
    """A piece of the input one worker parses: a whole source, or (``end`` set) the lines
    of a plain JSON-lines file in its bytes ``start`` to ``end`` (both at line starts)."""

    source: Source
    start: int = 0
    end: int | None = None


def plan_units(expanded: list[Source], batch_size: int, workers: int) -> list[Unit]:
    """Cut the input into units for ``workers`` parse workers (see above)."""
    if workers < 2:
        return [Unit(source) for source in expanded]
    units: list[Unit] = []
    for n, source in enumerate(expanded):
        if not splittable(source):
            units.append(Unit(source))
            continue
        per_event = _bytes_per_event(source)
        # A little under a batch, so that a range rarely spills a few events into a chunk of their own.
        step = max(1 << 12, int(batch_size * per_event * 0.95))
        small = max(1 << 12, int(SMALL_CHUNK * per_event))
        cuts = _ranges(source.size or 0, step, small if not units else None, small if n == len(expanded) - 1 else None)
        # Each cut moves to the next line start, once, here: both workers need every range.
        starts = [line_start(source.path, a) for a, _ in cuts] + [source.size or 0]
        units.extend(Unit(source, a, b) for a, b in zip(starts, starts[1:]))
    return units


def _bytes_per_event(source: Source) -> float:
    with open(source.path, "rb") as f:
        head = f.read(1 << 20)
    return len(head) / max(head.count(b"\n"), 1)


def _ranges(size: int, step: int, head: int | None, tail: int | None) -> list[tuple[int, int]]:
    """Byte ranges covering ``size``: ``step`` each, a first of ``head`` and, from two steps
    before the end, each half of what is left down to ``tail`` (see _parse's ``small``: the
    writer waits for the first range, the workers for the writer's last ones).

    >>> _ranges(100, 30, 5, 4)
    [(0, 5), (5, 35), (35, 65), (65, 82), (82, 91), (91, 95), (95, 100)]
    """
    out = []
    start = 0
    if head and size > head:
        out.append((0, head))
        start = head
    while start < size:
        left = size - start
        n = step if tail is None or left > 2 * step else max(tail, left // 2)
        if left - n < (tail or 1):
            n = left
        out.append((start, start + n))
        start += n
    return out


def _parse_in_worker(
    expanded: list[Source], chunk_size: int, rules: MergeRules, strict: bool, keep_others: bool = True
) -> Iterator[tuple[Chunk, list[ImportIssue], int]]:
    import multiprocessing

    workers = PARSE_WORKERS if (os.cpu_count() or 1) >= 2 else 1
    units = plan_units(expanded, chunk_size, workers)
    if len(units) < 2:
        workers = 1
    ctx = multiprocessing.get_context("spawn")
    receivers, processes = [], []
    try:
        for mine in range(workers):
            receiver, sender = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=_worker_main, args=(sender, units, mine, workers, chunk_size, rules, strict, not keep_others),
                daemon=True,
            )
            process.start()
            sender.close()
            receivers.append(receiver)
            processes.append(process)
        inbox = pipe.Inbox()
        lines_before: dict[str, int] = {}  # a file's lines in the ranges taken so far
        started: set[int] = set()  # the workers whose "ready" came
        for n, unit in enumerate(units):
            fd, process = receivers[n % workers].fileno(), processes[n % workers]
            path = unit.source.path
            offset = 0 if unit.end is None else lines_before.get(path, 0)
            while True:
                try:
                    kind, payload = inbox.receive(fd)
                except EOFError:
                    process.join(5)
                    raise _worker_failed(process.exitcode, fd in started) from None
                if kind == "ready":
                    started.add(fd)
                elif kind == "chunk":
                    chunk = payload[0]
                    if chunk.others_at is not None:  # see Chunk.reread
                        chunk.reread = partial(_reread_others, unit, chunk.others_at, chunk.now,
                                               chunk_size, rules, strict, workers)
                    yield _shifted(payload, offset) if offset else payload
                elif kind == "error":
                    raise SourceError(payload)
                else:  # the end of this unit; a range's own number of lines
                    if unit.end is not None:
                        lines_before[path] = offset + payload
                    break
    finally:
        for receiver in receivers:
            receiver.close()
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _worker_failed(exitcode: int | None, started: bool) -> ImportWorkerFailed:
    how = _how_it_ended(exitcode)
    if not started:
        # Nearly always a script that starts an import at its top level: the spawned
        # worker imports that script again, whose import then refuses to spawn from a
        # child (multiprocessing's bootstrapping RuntimeError, printed by the child).
        return ImportWorkerFailed(
            f"a parse worker failed to start ({how}): workers are spawned and import the calling script"
            ' again, so a script that imports with parallel=True must guard its top level with'
            ' `if __name__ == "__main__":` (or pass parallel=False); the worker\'s error is on stderr'
        )
    return ImportWorkerFailed(
        f"a parse worker stopped unexpectedly ({how}); the events read before it are committed:"
        " run the import again to finish it"
    )


def _how_it_ended(exitcode: int | None) -> str:
    """A worker's end as a person reads it: killed by which signal (the OOM killer's is
    SIGKILL), or its exit code (a Python error in it is on stderr already)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return "still running" if exitcode is None else f"exit code {exitcode}"


def _unit_chunks(
    unit: Unit, chunk_size: int, rules: MergeRules, strict: bool, workers: int,
    lines: list[int] | None = None, now: int | None = None, keep_others: bool = True,
) -> Iterator[tuple[Chunk, list[ImportIssue], int]]:
    """One unit's chunks as its worker makes them: a whole source through _parse, or a
    byte range through _chunked (``lines`` gets the range's number of lines). With ``now``,
    the same cuts again with that time for events without one (see _reread_others).
    ``keep_others``: as for :func:`_parse`."""
    if unit.end is None:
        small = SMALL_CHUNK if workers == 1 else None
        yield from _parse([unit.source], chunk_size, rules, strict, small=small, now=now, keep_others=keep_others)
        return
    # The file's last range reads to its end (in case the file grew since it was planned).
    end = None if unit.end >= (unit.source.size or 0) else unit.end
    items = read_range(unit.source, unit.start, end, event_from_line, [] if lines is None else lines)
    yield from _chunked(items, [0], chunk_size, rules, strict, None, None, now, keep_others)


def _reread_others(
    unit: Unit, ordinal: int, now: int, chunk_size: int, rules: MergeRules, strict: bool, workers: int,
    register: list[Any],
) -> list[tuple[tuple[Any, ...], Any]]:
    """The fall-back events a worker left out of the ``ordinal``-th chunk of ``unit``, read
    again: the same cuts, the chunk's ``now`` for events without a time. The chunk's
    ``register`` rows must come out the same, or the file changed under the import."""
    for n, (again, _, _) in enumerate(_unit_chunks(unit, chunk_size, rules, strict, workers, now=now)):
        if n == ordinal:
            if again.register == register:
                return again.others  # type: ignore[return-value]
            break
    raise SourceError(f"{unit.source.path}: the file changed while it was being imported; run the import again")


def _worker_main(
    sender: Any, units: list[Unit], mine: int, workers: int, chunk_size: int, rules: MergeRules, strict: bool,
    leave_others: bool = False,
) -> None:
    if workers > 1:
        # Two workers and the writer share two cores: the writer goes first whenever it has
        # work, and the workers fill the rest (they are what runs ahead).
        try:
            os.nice(5)
        except OSError:
            pass
    # A thread sends, so this worker parses its next unit while a finished chunk waits for
    # the writer, who takes the workers' units in turn: without it each worker would sit
    # idle, one unit ahead, whenever the writer is busy with the other's. One chunk waits
    # in the queue and one in the pipe, at most.
    outbox: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=1)
    gone = threading.Event()

    fd = sender.fileno()

    def send() -> None:
        while (message := outbox.get()) is not None:
            if gone.is_set():
                continue  # the writer stopped reading: let the parser finish
            try:
                pipe.send(fd, message)
            except (BrokenPipeError, EOFError, OSError):
                gone.set()

    thread = threading.Thread(target=send, name="identity-graph-sender", daemon=True)
    thread.start()
    put = outbox.put
    # First, so the writer can tell a worker that never got here (see _worker_failed)
    # from one that died while parsing.
    put(("ready", None))
    try:
        with gc_paused():
            for unit in units[mine::workers]:
                if gone.is_set():
                    break
                lines: list[int] = []
                pending = None
                leave = leave_others and unit.source.size is not None  # a file: the writer can read it again
                chunks = _unit_chunks(unit, chunk_size, rules, strict, workers, lines, keep_others=not leave)
                for ordinal, chunk in enumerate(chunks):
                    if leave:
                        chunk[0].others_at = ordinal  # see _reread_others
                    if unit.end is None:
                        put(("chunk", chunk))
                        continue
                    if pending is not None:
                        put(("chunk", pending))
                    pending = chunk
                if unit.end is None:
                    put(("unit", None))
                    continue
                # _chunked always yields a last chunk: it carries the range's bytes, for progress.
                put(("chunk", (pending[0], pending[1], unit.end - unit.start)))  # type: ignore[index]
                put(("unit", lines[0]))  # _chunked reads the range whole, a strict stop included
        put(("done", None))
    except SourceError as exc:
        put(("error", str(exc)))
    except KeyboardInterrupt:
        # Ctrl-C reaches the workers too; the writer, which got it as well, reports it.
        # (A strict stop or an error ends a worker by terminate() or a closed pipe instead.)
        pass
    finally:
        put(None)
        thread.join()
        sender.close()


def _shifted(
    payload: tuple[Chunk, list[ImportIssue], int], offset: int
) -> tuple[Chunk, list[ImportIssue], int]:
    """A worker's chunk of a range whose lines it numbered from 1, with the ``offset`` lines
    of the file's earlier ranges added: to its issues now, to its events' origins when a
    conflict is reported (see _report_conflicts)."""
    chunk, issues, consumed = payload
    chunk.line_offset = offset
    issues = [ImportIssue(_at(i.location.source, i.location.line, i.location.item, offset), i.reason, i.raw)
              for i in issues]
    return chunk, issues, consumed


def _at(source: str, line: int | None, item: int | None, offset: int) -> Location:
    return Location(source, line if line is None else line + offset, item)


def _validate(item: Item, now: int) -> Event | ImportIssue:
    """An item the reader's fast path did not validate (see _chunked), validated."""
    if item.error is not None:
        return ImportIssue(item.location, item.error, raw_text(item))
    try:
        return parse_event(item.value, now=now)
    except InvalidEvent as exc:
        return ImportIssue(item.location, str(exc), raw_text(item))


def _report_conflicts(line_offset: int, conflicting: list[Plan], report: Callable[[ImportIssue], None]) -> None:
    for plan in conflicting:
        # Not an invalid line, but the user must hear of it: it names the line and the
        # messageId, and the errors file gets what the graph would have used of it.
        e = plan.event
        raw = orjson.dumps({"messageId": e.message_id, "type": e.type, "timestamp": e.timestamp.isoformat(),
                            "userId": e.user_id, "anonymousId": e.anonymous_id, "previousId": e.previous_id})
        report(ImportIssue(_at(*plan.origin, line_offset), f"messageId: {CONFLICT_REASON} ({e.message_id!r})", raw))
