"""Benchmark: ingest throughput on a realistic history (see generate.py).

Contenders, each on a fresh graph:

* ``ingest``      -- ``g.ingest(orjson.loads(line))`` for each of the first ``--one`` events
  (default 20,000): one transaction per event;
* ``ingest_many`` -- ``g.ingest_many(orjson.loads(line) for line in lines)`` on the first
  ``--many`` events (default 200,000): one transaction per batch (default 2,000).

Each is compared with a *floor* measured in the same run on the same events: JSON parsing
plus :func:`identity_graph.events.parse_event` and nothing else (best of 3). ``ratio`` is the
contender's time over the floor's: how many times the cost of merely reading the events.

Targets (SQLite): ingest >= 2,000 events/s, ingest_many >= 20,000 events/s.

The events come from ``generate_events(max(--one, --many), seed=--seed)`` (export order),
or from ``--input`` (a JSON-lines file, optionally .gz) written by generate.py. They are
held in memory as JSON lines before timing starts, so neither generation nor disk reads are
timed. After the timed runs, ingest_many is run once more on the first ``--one`` events and
its identities are compared with the one-at-a-time graph (``--no-check`` skips this).

    .venv/bin/python benchmarks/bench_ingest.py                                  # SQLite
    .venv/bin/python benchmarks/bench_ingest.py --one 2000 --many 20000          # quick check
    .venv/bin/python benchmarks/bench_ingest.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/bench_ingest.py --profile benchmarks/out         # cProfile each contender
    .venv/bin/python benchmarks/bench_ingest.py --only ingest --preload 200000   # ingest on a non-empty graph
    .venv/bin/python benchmarks/bench_ingest.py --only ingest_many --many 1000000
        --input benchmarks/data/history.jsonl --progress 100000      # (one command) slow-down as the graph grows
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import itertools
import os
import pstats
import sys
import time
from collections import Counter
from typing import Callable, Iterator

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import backend_name, engine_version, fresh_graph_url, machine_note  # noqa: E402
from generate import generate_events  # noqa: E402

from identity_graph import IdentityGraph, InvalidEvent  # noqa: E402
from identity_graph.events import parse_event  # noqa: E402
from identity_graph.graph import DEFAULT_BATCH_SIZE  # noqa: E402

TARGETS = {("sqlite", "ingest"): 2_000, ("sqlite", "ingest_many"): 20_000}


def load_lines(n: int, seed: int, path: str | None) -> list[bytes]:
    if path:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            return [line for line in itertools.islice(f, n) if line.strip()]
    return [orjson.dumps(ev) for ev in generate_events(n, seed=seed)]


def floor(lines: list[bytes]) -> float:
    """Seconds to json-parse and validate every event (best of 3)."""
    loads = orjson.loads
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for line in lines:
            try:
                parse_event(loads(line))
            except InvalidEvent:
                pass
        best = min(best, time.perf_counter() - began)
    return best


def run_one(g: IdentityGraph, lines: list[bytes]) -> Counter:
    loads, ingest = orjson.loads, g.ingest
    counts: Counter = Counter()
    for line in lines:
        try:
            result = ingest(loads(line))
        except InvalidEvent:
            counts["invalid"] += 1
            continue
        counts[result.status] += 1
        counts["replayed"] += result.replayed
        for link in result.links:
            counts[f"link {link.outcome}" + (f" ({link.reason})" if link.reason else "")] += 1
    return counts


def run_many(g: IdentityGraph, lines: list[bytes], batch_size: int, progress: int = 0) -> Counter:
    loads = orjson.loads
    events = (loads(line) for line in lines)
    if progress:
        events = _with_progress(events, progress)
    s = g.ingest_many(events, batch_size=batch_size)
    counts = Counter({"applied": s.applied, "duplicate": s.duplicates, "blocked": s.blocked,
                      "invalid": s.invalid, "replayed": s.replayed_events,
                      "link merged": s.links_merged, "link together": s.links_together})
    for reason, k in s.links_refused.items():
        counts[f"link refused ({reason})"] = k
    return +counts


def _with_progress(events: Iterator[dict], every: int) -> Iterator[dict]:
    """Pass events through; print the rate of each ``every`` events as ingest_many pulls them."""
    began = last = time.perf_counter()
    for n, event in enumerate(events, 1):
        if n % every == 0:
            now = time.perf_counter()
            print(f"      ... {n:>10,} events: {every / (now - last):9,.0f} events/s over the last {every:,} "
                  f"({n / (now - began):,.0f}/s so far)", flush=True)
            last = now
        yield event


def timed(db_url: str, label: str, fn: Callable[[IdentityGraph], Counter], profile_dir: str | None,
          top: int, pg_options: str = "", preload: list[bytes] | None = None,
          batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[float, Counter]:
    with fresh_graph_url(db_url, label, pg_options) as url:
        g = IdentityGraph(url)
        try:
            if preload:
                run_many(g, preload, batch_size)  # not timed
            prof = cProfile.Profile() if profile_dir else None
            began = time.perf_counter()
            if prof:
                prof.enable()
            counts = fn(g)
            if prof:
                prof.disable()
            elapsed = time.perf_counter() - began
        finally:
            g.close()
    if prof:
        os.makedirs(profile_dir, exist_ok=True)  # type: ignore[arg-type]
        path = os.path.join(profile_dir, f"{label}.prof")  # type: ignore[arg-type]
        prof.dump_stats(path)
        for order, count in (("cumulative", top), ("tottime", max(10, top // 2))):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(count)
            body = [line for line in out.getvalue().splitlines() if line.strip()]
            print(f"\n--- cProfile {label}, by {order} time, top {count} (full profile: {path}) ---")
            print("\n".join(body[2:]))
    return elapsed, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ingest throughput on a realistic Segment history.")
    ap.add_argument("--one", type=int, default=20_000, help="events for one-at-a-time ingest (default %(default)s)")
    ap.add_argument("--many", type=int, default=200_000, help="events for ingest_many (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="generate.py seed (default %(default)s)")
    ap.add_argument("--input", help="read events from this JSON-lines file (.gz ok) instead of generating")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="ingest_many batch size")
    ap.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True, help="run on SQLite")
    ap.add_argument("--pg-url", help="also run on PostgreSQL (a fresh schema, dropped afterwards)")
    ap.add_argument("--pg-one", type=int, help="events for one-at-a-time ingest on PostgreSQL (default --one)")
    ap.add_argument("--pg-options", default="",
                    help="extra libpq options for the graph's PostgreSQL connections, "
                         "e.g. '-cplan_cache_mode=force_custom_plan'")
    ap.add_argument("--preload", type=int, default=0,
                    help="one-at-a-time ingest only: first load this many events with ingest_many (not timed), "
                         "then time ingest on the events that follow them: a graph that is not empty")
    ap.add_argument("--progress", type=int, default=0, metavar="N",
                    help="ingest_many: print the rate of every N events (shows slow-down as the graph grows)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per contender, best reported")
    ap.add_argument("--only", choices=("ingest", "ingest_many"), help="run one contender only")
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the ingest-vs-ingest_many identities comparison")
    ap.add_argument("--profile", metavar="DIR", help="run each contender under cProfile (timings inflated), "
                                                     "write DIR/<label>.prof and print the top functions")
    ap.add_argument("--top", type=int, default=30, help="functions shown per profile (default %(default)s)")
    args = ap.parse_args(argv)

    backends = (["sqlite"] if args.sqlite else []) + ([args.pg_url] if args.pg_url else [])
    need = max(args.preload + max(args.one, args.pg_one or 0) if args.only != "ingest_many" else 0,
               args.many if args.only != "ingest" else 0)
    began = time.perf_counter()
    lines = load_lines(need, args.seed, args.input)
    source = args.input or f"generate_events({need:,}, seed={args.seed})"
    print(f"bench_ingest: {len(lines):,} events from {source} "
          f"({sum(map(len, lines)) / max(len(lines), 1):,.0f} B/event), loaded in {time.perf_counter() - began:.1f} s")
    print(f"machine: {machine_note()}" + ("   [PROFILED: timings inflated by cProfile]" if args.profile else ""))
    print(engine_version())
    if args.pg_url and args.pg_options:
        print(f"PostgreSQL connection options: {args.pg_options}")
    if args.preload:
        print(f"ingest runs on a graph preloaded (untimed, ingest_many) with the first {args.preload:,} events")

    floors: dict[tuple[int, int], float] = {}

    def floor_for(start: int, n: int) -> float:
        if (start, n) not in floors:
            floors[start, n] = floor(lines[start:start + n])
        return floors[start, n]

    rows = []
    one_graph_check = None
    for db in backends:
        backend = backend_name(db)
        contenders = []
        if args.only != "ingest_many":
            start = min(len(lines), args.preload)
            n_one = min(len(lines) - start, args.pg_one or args.one if backend == "postgresql" else args.one)
            contenders.append(("ingest", start, n_one,
                               lambda g, ls=lines[start:start + n_one]: run_one(g, ls)))
        if args.only != "ingest":
            n_many = min(len(lines), args.many)
            contenders.append(("ingest_many", 0, n_many,
                               lambda g, ls=lines[:n_many]: run_many(g, ls, args.batch_size, args.progress)))
        for name, start, n, fn in contenders:
            times = []
            counts: Counter = Counter()
            for rep in range(max(1, args.repeat)):
                label = f"{backend}-{name}-{n}" + (f"-after-{start}" if start else "")
                elapsed, counts = timed(db, label, fn, args.profile if rep == 0 else None, args.top,
                                        args.pg_options, lines[:start], args.batch_size)
                times.append(elapsed)
            best = min(times)
            base = floor_for(start, n)
            target = TARGETS.get((backend, name))
            eps = n / best
            verdict = "" if target is None else (f"target >= {target:,}/s: " + ("OK" if eps >= target else "MISSED"))
            rows.append((backend, name, n, best, eps, n / base, best / base, verdict))
            print(f"  {backend:10s} {name:12s} {n:>8,} events  {best:7.2f} s  {eps:9,.0f} events/s   "
                  f"floor (json + parse_event) {n / base:9,.0f} events/s   ratio {best / base:6.1f}x   {verdict}"
                  + (f"   runs: {', '.join(f'{t:.2f}' for t in times)} s" if len(times) > 1 else ""))
            print(f"      {dict(sorted(counts.items()))}")
            if name == "ingest" and backend == "sqlite" and not start:
                one_graph_check = n
    if args.check and one_graph_check and "sqlite" in [backend_name(b) for b in backends]:
        n = one_graph_check
        with fresh_graph_url("sqlite", "check-one") as u1, fresh_graph_url("sqlite", "check-many") as u2:
            with IdentityGraph(u1) as g1, IdentityGraph(u2) as g2:
                run_one(g1, lines[:n])
                run_many(g2, lines[:n], args.batch_size)
                a, b = list(g1.identities()), list(g2.identities())
        same = a == b
        diff = sum(1 for x, y in zip(a, b) if x != y) + abs(len(a) - len(b))
        print(f"  check: ingest vs ingest_many on the first {n:,} events: {len(a):,} IDs, "
              + ("identical identities" if same else f"DIFFERENT identities ({diff:,} rows differ)"))
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
