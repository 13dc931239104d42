"""How does history get in? Batch import of event files into a graph.

:func:`import_events` streams the sources (see :mod:`identity_graph.readers`), validates
each event, and hands batches to :meth:`IdentityGraph.apply_events`, the same path that
``ingest`` and ``ingest_many`` take, so an import and one-by-one ingestion give the same
graph. Each batch is one transaction: a crash loses at most the batch in flight, and
re-running the import skips everything that landed (rule 9).

Progress goes to a callback; bad input to another. Nothing here prints.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import orjson

from .batch import gc_paused
from .chunk import Chunk, ChunkBuilder
from .errors import IdentityGraphError, InvalidEvent
from .events import Event, datetime_to_time, parse_event
from .graph import IdentityGraph
from .rules import MergeRules
from .readers import Item, Location, Source, SourceError, expand_sources, raw_text, read_source
from .results import CONFLICT_REASON, IngestSummary

# Each commit rewrites every page of the messageId register (and of the link indexes)
# that its random keys touch, so fewer, larger batches write less. Measured on 1M
# generated events (SQLite, 2 cores), session 2: 10,000 -> 34-37 s, 50,000 -> 28 s;
# session 3, with chunks: 50,000 -> 16.4-16.7 s, 100,000 -> 15.7-16.3 s (peak RSS 340 ->
# 425 MB). Past that the pages touched are nearly all of them anyway and memory grows.
DEFAULT_IMPORT_BATCH = 100_000
PARALLEL_MIN_BYTES = 8 << 20
#: The parse worker's chunks at the start and the end of the input (see _parse).
SMALL_CHUNK = 5_000
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
    batch_size: int = DEFAULT_IMPORT_BATCH,
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
    reading it; what was committed stays, and re-running completes the import.
    ``parallel``: read and validate in a child process while this one writes. Off by
    default in the library: the child is *spawned*, which re-imports the calling script,
    so a script must guard its top level with ``if __name__ == "__main__":`` (the
    multiprocessing rule). The ``import`` command turns it on past ``PARALLEL_MIN_BYTES``
    of input when there is a spare CPU.

    >>> import tempfile, pathlib
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
    if batch_size < 1:
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
    batch_size: int,
    strict: bool,
    report: Callable[[ImportIssue], None],
    progress: Callable[[int], None],
    parallel: bool,
) -> None:
    started = time.perf_counter()
    rules = graph.rules
    args = (expanded, batch_size, rules, strict)
    chunks = _parse_in_worker(*args) if parallel else _parse(*args)
    try:
        for chunk, issues, consumed in chunks:
            summary.events += len(chunk) + len(issues)
            if strict and issues:  # the chunk ends at this issue: what came before is committed
                _flush(graph, chunk, summary, report)
                summary.invalid += 1
                summary.elapsed += time.perf_counter() - started
                raise StrictImportStopped(issues[0], summary)
            for issue in issues:  # reported as read; a conflict only once its batch is written
                summary.invalid += 1
                report(issue)
            _flush(graph, chunk, summary, report)
            progress(consumed)
    finally:
        chunks.close()


def _parse(
    expanded: list[Source], chunk_size: int, rules: MergeRules, strict: bool = False, small: int | None = None
) -> Iterator[tuple[Chunk, list[ImportIssue], int]]:
    """The sources' events, validated and planned under ``rules``, packed into chunks of
    ``chunk_size`` valid events, each with the invalid items met while reading it and the
    input bytes it consumed. With ``strict`` a chunk ends at the first invalid item.

    ``small``: a parse worker's chunk size at both ends of the input. The writer waits for
    the first chunk and the worker waits for the writer's last one: small chunks there
    keep both processes busy (~1 s of a 1M-event import). The end is told from the
    input's size and the bytes an event has taken so far (no end is known for stdin).
    """
    consumed = [0]

    def count(n: int) -> None:
        consumed[0] += n

    builder = ChunkBuilder(rules)
    issues: list[ImportIssue] = []
    sizes = [s.size for s in expanded]
    remaining = None if small is None or None in sizes else sum(sizes)  # type: ignore[arg-type]
    events_seen = bytes_seen = 0
    size = min(chunk_size, small or chunk_size)
    now = datetime_to_time(datetime.now(timezone.utc))
    taken = 0
    for source in expanded:
        for item in read_source(source, count):
            event = _validate(item, now)
            if type(event) is ImportIssue:
                issues.append(event)  # type: ignore[arg-type]
                if not strict:
                    continue
            else:
                builder.add(event, (item.source, item.line, item.index))  # type: ignore[arg-type]
                taken += 1
                if taken < size:
                    continue
            events_seen += taken + len(issues)
            bytes_seen += consumed[0]
            yield builder.take(), issues, consumed[0]
            if remaining is None:
                size = chunk_size
            else:
                # Near the end each chunk takes half of what is left: a few shrinking chunks
                # (each commit rewrites the register's pages, so not many small ones).
                remaining -= consumed[0]
                left = remaining * events_seen / max(bytes_seen, 1)
                size = max(min(small, chunk_size), min(chunk_size, int(left // 2)))  # type: ignore[type-var]
            issues, consumed[0], taken = [], 0, 0
            now = datetime_to_time(datetime.now(timezone.utc))
    yield builder.take(), issues, consumed[0]


# -- the parse worker ---------------------------------------------------------------------
# Reading, JSON decoding and validation take about as long as applying the events, so on
# a machine with a spare core a child process does them while this one writes. Chunks
# cross a pipe pickled; the child stays at most one chunk ahead (send blocks until the
# parent has taken the previous one), so memory stays flat. The child is spawned, not
# forked: it must not inherit this process's open database connections.

def _parse_in_worker(
    expanded: list[Source], chunk_size: int, rules: MergeRules, strict: bool
) -> Iterator[tuple[Chunk, list[ImportIssue], int]]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_worker_main, args=(sender, expanded, chunk_size, rules, strict), daemon=True)
    worker.start()
    sender.close()
    try:
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                worker.join(5)
                raise ImportWorkerFailed(
                    f"the parse worker stopped unexpectedly (exit code {worker.exitcode}); "
                    "run the import again without the worker (parallel=False) to see why"
                ) from None
            if kind == "chunk":
                yield payload
            elif kind == "error":
                raise SourceError(payload)
            else:
                return
    finally:
        receiver.close()
        if worker.is_alive():
            worker.terminate()
        worker.join()


def _worker_main(sender: Any, expanded: list[Source], chunk_size: int, rules: MergeRules, strict: bool) -> None:
    try:
        with gc_paused():
            for chunk in _parse(expanded, chunk_size, rules, strict, small=SMALL_CHUNK):
                sender.send(("chunk", chunk))
        sender.send(("done", None))
    except SourceError as exc:
        sender.send(("error", str(exc)))
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass  # the parent stopped reading (strict stop, error or kill): nothing to do
    finally:
        sender.close()


def _validate(item: Item, now: int) -> Event | ImportIssue:
    if item.error is not None:
        return ImportIssue(item.location, item.error, raw_text(item))
    try:
        return parse_event(item.value, now=now)
    except InvalidEvent as exc:
        return ImportIssue(item.location, str(exc), raw_text(item))


def _flush(graph: IdentityGraph, chunk: Chunk, summary: ImportSummary, report: Callable[[ImportIssue], None]) -> None:
    if not len(chunk):
        return
    for plan in graph.apply_chunk(chunk, summary):
        # Not an invalid line, but the user must hear of it: it names the line and the
        # messageId, and the errors file gets what the graph would have used of it.
        e = plan.event
        raw = orjson.dumps({"messageId": e.message_id, "type": e.type, "timestamp": e.timestamp.isoformat(),
                            "userId": e.user_id, "anonymousId": e.anonymous_id, "previousId": e.previous_id})
        report(ImportIssue(Location(*plan.origin), f"messageId: {CONFLICT_REASON} ({e.message_id!r})", raw))
