"""Benchmark: one import of a large history into a fresh graph, with its rate and memory as it goes.

    .venv/bin/python benchmarks/generate.py --events 100000000 --part-events 1000000 \\
        --output benchmarks/data/history-100M                 # ~45 min, 11.7 GB of gzipped parts
    .venv/bin/python benchmarks/bench_scale.py benchmarks/data/history-100M [--db sqlite|PG_URL] [--every N]

The import runs in this process as the ``import`` command runs a large input: the library's
``import_events(..., parallel=True)`` (two spawned parse workers) with the default batch,
into a fresh graph (``--db sqlite``: a new file under ``--tmp``; or a new schema on a
PostgreSQL server). Every ``--every`` events it prints a line: events so far, elapsed, the
rate of that slice and of the whole, the RSS of this process (the writer) and of its
workers, and the size of the graph's files (SQLite). At the end: the summary, the peak RSS
of the writer and its workers together (sampled every 0.5 s) and the writer's own
``VmHWM``, and the graph's stats.

What bench_import.py compares at 1M and 10M events (the floor, the networkx script) is
not run here: the floor holds every event in memory (5.4 GB at 10M events), and both
would need the whole input uncompressed. This measures how the import itself scales:
whether its rate holds as the graph grows, and whether memory follows the IDs, not the events.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import backend_name, engine_version, fresh_graph_url, machine_note
from bench_import import _rss_kb, _tree

from identity_graph import IdentityGraph
from identity_graph.importer import (DEFAULT_IMPORT_BATCH, GROWING_DIALECTS, MAX_IMPORT_BATCH, ImportIssue,
                                      ImportProgress, import_events)
from identity_graph.readers import expand_sources


def _vm_hwm_kb() -> int:
    return _rss_kb(os.getpid(), b"VmHWM:")


class Sampler(threading.Thread):
    """The RSS of this process and its descendants, every ``period`` seconds; the largest sum kept."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.period = period
        self.peak_kb = 0
        self.writer_kb = self.workers_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.wait(self.period):
            pids = _tree(me)
            self.writer_kb = _rss_kb(me)
            self.workers_kb = sum(_rss_kb(p) for p in pids if p != me)
            self.peak_kb = max(self.peak_kb, self.writer_kb + self.workers_kb)


def _files_mb(url: str) -> float | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One large import, its rate and memory as it goes.")
    ap.add_argument("paths", nargs="+", help="files or folders, as for `identity-graph import`")
    ap.add_argument("--db", default="sqlite", help="'sqlite' (a fresh file) or a PostgreSQL server URL")
    ap.add_argument("--every", type=int, default=10_000_000, help="events between lines (default %(default)s)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="events per transaction (default: the import command's, growing with the graph)")
    ap.add_argument("--tmp", help="folder for the SQLite file (default: the system's temporary folder)")
    args = ap.parse_args(argv)
    if args.tmp:
        tempfile.tempdir = args.tmp  # where fresh_graph_url makes the SQLite file

    print(f"bench_scale: machine: {machine_note()}; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    grows = backend_name(args.db) in GROWING_DIALECTS
    batch = (f"{args.batch_size:,} events" if args.batch_size else
             f"{DEFAULT_IMPORT_BATCH:,} events" + (f", growing with the graph to {MAX_IMPORT_BATCH:,}" if grows else ""))
    print(engine_version() + f"; batch {batch}")
    size = sum(source.size or 0 for source in expand_sources(args.paths))  # the files the import will read
    print(f"input: {' '.join(args.paths)}: {size / 1e9:,.1f} GB on disk")
    print(f"{'events':>12} {'elapsed s':>10} {'slice ev/s':>11} {'all ev/s':>10} {'writer MB':>10}"
          f" {'workers MB':>11} {'graph MB':>9}")

    issues: list[ImportIssue] = []  # the first few; the summary counts them all

    def on_issue(issue: ImportIssue) -> None:
        if len(issues) < 5:
            issues.append(issue)

    with fresh_graph_url(args.db, "scale") as url:
        sampler = Sampler()
        mark = [args.every, 0.0, 0]  # next line at, and the previous line's elapsed and events

        def on_progress(p: ImportProgress) -> None:
            if p.events < mark[0]:
                return
            files = _files_mb(url)
            print(f"{p.events:>12,} {p.elapsed:>10.1f} {(p.events - mark[2]) / (p.elapsed - mark[1]):>11,.0f}"
                  f" {p.events_per_second:>10,.0f} {sampler.writer_kb / 1024:>10,.0f} {sampler.workers_kb / 1024:>11,.0f}"
                  f" {'' if files is None else f'{files:,.0f}':>9}", flush=True)
            mark[:] = [(p.events // args.every + 1) * args.every, p.elapsed, p.events]

        began = time.perf_counter()
        sampler.start()
        with IdentityGraph(url) as graph:
            summary = import_events(graph, args.paths, parallel=True, batch_size=args.batch_size, on_issue=on_issue,
                                    on_progress=on_progress)
            wall = time.perf_counter() - began
            import_hwm_kb = _vm_hwm_kb()  # before stats(), whose queries have memory of their own
            stats = graph.stats()
        sampler.stop.set()
        sampler.join()
        files = _files_mb(url)
    print(f"summary: {summary.to_dict()}")
    print(f"first issues: {[str(i) for i in issues]}")
    print(f"graph: {stats.ids:,} IDs, {stats.profiles:,} profiles, {stats.events:,} register rows"
          + ("" if files is None else f", {files:,.0f} MB of files"))
    print(f"{summary.events:,} events in {wall:,.1f} s: {summary.events / wall:,.0f} events/s; peak RSS, writer and"
          f" workers together: {sampler.peak_kb / 1024:,.0f} MB (sampled); the writer's VmHWM:"
          f" {import_hwm_kb / 1024:,.0f} MB at the end of the import, {_vm_hwm_kb() / 1024:,.0f} MB after stats()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
