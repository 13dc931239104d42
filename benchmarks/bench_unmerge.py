"""Benchmark: does unmerging one event cost the size of its profile, not of the graph?

Three graphs that differ only in how much *else* they hold: 10,000, 100,000 and
1,000,000 IDs of background (``identify`` events, a userId and an anonymousId each: 2-ID
profiles), plus the same probe in each: ``probe-user`` with 100 anonymous IDs, and
``probe-mail`` with 100 more, joined by one ``alias`` event (``probe-alias``); a
``probe-rival`` user is refused by the probe's anonymous IDs 20 times (refused links join
its profile to the probe's cluster). The probe profile holds 202 IDs, the cluster 203.

For each graph: ``unmerge("probe-alias")`` (splits 202 IDs in two), then ``undo`` (joins
them again), ``--runs`` times (default 15), plus ``--runs`` dry runs; median times are
printed, and the ratio of the largest graph's median to the smallest's. Target: the time
does not grow with the rest of the graph (ratio close to 1; the script says OK at <= 1.5).

Graphs are built once with ``IdentityGraph.ingest_many`` and cached as
``benchmarks/data/unmerge-<ids>-schema<V>.db`` (``--rebuild`` to redo; ~40 s for all).

    .venv/bin/python benchmarks/bench_unmerge.py
    .venv/bin/python benchmarks/bench_unmerge.py --db-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from identity_graph import IdentityGraph  # noqa: E402
from identity_graph.schema import SCHEMA_VERSION  # noqa: E402

from _common import engine_version, fresh_graph_url, machine_note  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SIZES = (10_000, 100_000, 1_000_000)


def _ts(i: int) -> str:
    return f"2024-01-01T00:00:00.{i % 1_000_000:06d}Z" if i < 1_000_000 else "2024-01-02T00:00:00Z"


def background(n_ids: int) -> Iterator[dict[str, Any]]:
    for i in range(n_ids // 2):
        yield {"type": "identify", "userId": f"bg-user-{i}", "anonymousId": f"bg-anon-{i:08x}",
               "messageId": f"bg-{i}", "timestamp": _ts(i)}


def probe() -> list[dict[str, Any]]:
    t = "2024-03-01T00:00:{:02d}.{:06d}Z"
    events = []
    for side in ("user", "mail"):
        for k in range(100):
            events.append({"type": "identify", "userId": f"probe-{side}", "anonymousId": f"probe-{side}-anon-{k}",
                           "messageId": f"probe-{side}-{k}", "timestamp": t.format(1 if side == "user" else 2, k)})
    events.append({"type": "alias", "previousId": "probe-mail", "userId": "probe-user",
                   "messageId": "probe-alias", "timestamp": t.format(3, 0)})
    for k in range(20):
        events.append({"type": "identify", "userId": "probe-rival", "anonymousId": f"probe-user-anon-{k}",
                       "messageId": f"probe-rival-{k}", "timestamp": t.format(4, k)})
    return events


def build(url: str, n_ids: int) -> None:
    with IdentityGraph(url) as g:
        g.ingest_many(background(n_ids), batch_size=20_000)
        g.ingest_many(probe())
        g.optimize()  # what `identity-graph import` does after a large import
        assert len(g.profile("probe-user").ids) == 202


def sqlite_graph(n_ids: int, rebuild: bool) -> str:
    path = os.path.join(DATA, f"unmerge-{n_ids}-schema{SCHEMA_VERSION}.db")
    if rebuild or not os.path.exists(path):
        os.makedirs(DATA, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        started = time.perf_counter()
        build(f"sqlite:///{path}", n_ids)
        print(f"  built {path} in {time.perf_counter() - started:.1f} s", flush=True)
    return f"sqlite:///{path}"


def measure(url: str, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"unmerge": [], "undo": [], "dry run": []}
    with IdentityGraph(url) as g:
        for _ in range(runs):
            for label, call in (("unmerge", lambda: g.unmerge("probe-alias")),
                                ("undo", lambda: g.unmerge("probe-alias", undo=True)),
                                ("dry run", lambda: g.unmerge("probe-alias", dry_run=True))):
                started = time.perf_counter()
                result = call()
                times[label].append(time.perf_counter() - started)
                assert len(result.before) + len(result.after) == 3, result
        assert len(g.profile("probe-user").ids) == 202  # left as it was found
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db-url", default="sqlite", help="sqlite (cached files) or a PostgreSQL server URL")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    print(engine_version())
    print(machine_note())
    rows = {}
    for n in SIZES:
        with ExitStack() as stack:
            if args.db_url == "sqlite":
                url = sqlite_graph(n, args.rebuild)
            else:
                url = stack.enter_context(fresh_graph_url(args.db_url, "unmerge"))
                started = time.perf_counter()
                build(url, n)
                print(f"  built a {n:,}-ID graph in {time.perf_counter() - started:.1f} s", flush=True)
            rows[n] = measure(url, args.runs)
        print(f"{n + 203:>10,} IDs: " + ", ".join(f"{k} {v:7.1f} ms" for k, v in rows[n].items()), flush=True)
    small, big = rows[SIZES[0]], rows[SIZES[-1]]
    for k in small:
        ratio = big[k] / small[k]
        print(f"{k:>8}: {SIZES[-1]:,}-ID graph / {SIZES[0]:,}-ID graph = {ratio:.2f}"
              f"  {'OK' if ratio <= 1.5 else 'GROWS'} (target: does not grow; <= 1.5 allows for noise)")


if __name__ == "__main__":
    main()
