"""Benchmark: one long alias chain, ingested one event at a time.

``alias id0 -> id1``, ``alias id1 -> id2``, ... ``alias id(N-1) -> idN``, in time order,
each event with its own timestamp (one second apart) and messageId, fed one at a time to
:meth:`IdentityGraph.ingest` on a fresh graph. Every event merges the whole chain so far
into one new ID, so an engine that rewrites the whole profile per merge is quadratic; with
union by size the cost per event stays flat and doubling N should about double the time.

Target: time(200k) / time(100k) <= 2.3 (and in general ``t_b / t_a <= 1.15 * b / a``).
The graph uses ``MergeRules(max_profile_ids=10**9)`` so the size cap (default 1000) does
not cut the chain. At the end the chain is checked: ``resolve(id0) == idN`` (and the middle
ID, and the profile holds all N+1 IDs).

    .venv/bin/python benchmarks/bench_chain.py                        # 100k and 200k on SQLite
    .venv/bin/python benchmarks/bench_chain.py --sizes 10000,20000    # quick check
    .venv/bin/python benchmarks/bench_chain.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
        --sizes 25000,50000 [--pg-options=-cplan_cache_mode=force_custom_plan]          # (one command)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import backend_name, engine_version, fresh_graph_url, machine_note  # noqa: E402

from identity_graph import IdentityGraph, MergeRules  # noqa: E402

RULES = MergeRules(max_profile_ids=10**9)
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TARGET_SLOWDOWN = 1.15  # allowed: t_b / t_a <= 1.15 * b / a (2.3 for 200k vs 100k)


def chain_events(n: int, seed: int = 1) -> list[dict]:
    """``n`` alias events id0->id1, ..., id(n-1)->id(n), one second apart, in time order."""
    rng = random.Random(seed)
    events = []
    for k in range(n):
        h = f"{(rng.getrandbits(128) & ~((0xF000 << 64) | (0xC000 << 48))) | (0x4000 << 64) | (0x8000 << 48):032x}"
        ts = (START + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        events.append({
            "type": "alias", "previousId": f"id{k}", "userId": f"id{k + 1}",
            "messageId": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", "timestamp": ts,
            "context": {"library": {"name": "analytics-node", "version": "2.1.2"}},
        })
    return events


def run_chain(n: int, db_url: str, pg_options: str = "") -> dict:
    events = chain_events(n)
    marks = max(1, n // 10)
    decile_times: list[float] = []
    outcomes: dict[str, int] = {}
    replayed = 0
    with fresh_graph_url(db_url, f"chain{n}", pg_options) as url:
        g = IdentityGraph(url, rules=RULES)
        try:
            ingest = g.ingest
            began = last = time.perf_counter()
            for i, event in enumerate(events, 1):
                result = ingest(event)
                for link in result.links:
                    outcomes[link.outcome] = outcomes.get(link.outcome, 0) + 1
                replayed += result.replayed
                if i % marks == 0:
                    now = time.perf_counter()
                    decile_times.append(now - last)
                    last = now
            elapsed = time.perf_counter() - began
            resolved = g.resolve("id0")
            middle = g.resolve(f"id{n // 2}")
            profile = g.profile("id0")
        finally:
            g.close()
    ok = resolved == f"id{n}" and middle == f"id{n}" and profile is not None and len(profile.ids) == n + 1
    return {
        "n": n, "seconds": elapsed, "deciles": decile_times, "outcomes": outcomes, "replayed": replayed,
        "resolved": resolved, "ok": ok, "profile_size": None if profile is None else len(profile.ids),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One alias chain of N events, ingested one at a time.")
    ap.add_argument("--sizes", default="100000,200000", help="comma-separated chain lengths (default %(default)s)")
    ap.add_argument("--db-url", default="sqlite",
                    help="'sqlite' (a fresh temporary file per size, default) or a PostgreSQL server URL "
                         "(a fresh schema per size, dropped afterwards)")
    ap.add_argument("--pg-options", default="",
                    help="extra libpq options for the graph's PostgreSQL connections, "
                         "e.g. '-cplan_cache_mode=force_custom_plan'")
    ap.add_argument("--strict", action="store_true", help="exit 2 when a growth target is missed")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    backend = backend_name(args.db_url)

    print(f"bench_chain: one alias chain id0->id1->...->idN, ingested one event at a time with "
          f"IdentityGraph.ingest on {backend}")
    print("rules: MergeRules(max_profile_ids=10**9), so the size cap (default 1000 IDs) does not cut the chain")
    print(f"machine: {machine_note()}\n{engine_version()}")
    if args.pg_options and backend == "postgresql":
        print(f"PostgreSQL connection options: {args.pg_options}")
    runs = []
    failed = False
    for n in sizes:
        r = run_chain(n, args.db_url, args.pg_options)
        runs.append(r)
        d = r["deciles"]
        first, last = d[0], d[-1]
        print(f"  {backend:10s} N={n:>9,}  {r['seconds']:8.1f} s  {n / r['seconds']:8,.0f} events/s  "
              f"(first 10%: {len(d) and n / 10 / first:,.0f}/s, last 10%: {len(d) and n / 10 / last:,.0f}/s, "
              f"last/first decile time {last / first:.2f})")
        print(f"      events/s per tenth of the chain: {', '.join(f'{n / 10 / t:,.0f}' for t in d)}")
        print(f"      outcomes {r['outcomes']}, replayed events {r['replayed']}; "
              f"resolve(id0) = {r['resolved']!r}, profile size {r['profile_size']:,}: "
              f"{'correct' if r['ok'] else 'WRONG (expected id%d, %d IDs)' % (n, n + 1)}")
        failed |= not r["ok"]
    missed = False
    for a, b in zip(runs, runs[1:]):
        ratio = b["seconds"] / a["seconds"]
        target = TARGET_SLOWDOWN * b["n"] / a["n"]
        verdict = "OK" if ratio <= target else "MISSED"
        missed |= ratio > target
        print(f"  ratio time({b['n']:,}) / time({a['n']:,}) = {ratio:.2f}  (target <= {target:.2f}; linear = "
              f"{b['n'] / a['n']:.2f}): {verdict}")
    if failed:
        print("CORRECTNESS FAILURE: the chain did not resolve to its last ID")
        return 1
    return 2 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
