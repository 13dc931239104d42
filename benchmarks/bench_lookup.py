"""Benchmark: is ``identity-graph lookup`` a fast process on a graph of 1,000,000 IDs?

A lookup from the command line is a whole process: interpreter start, imports, opening
the graph, two indexed queries, printing. Its floor is the interpreter importing the two
libraries any such command needs. Contenders, each a fresh process, run ``--runs`` times
(default 21) *interleaved* (one of each per round, the order rotated every round) so that
machine noise hits all of them alike; the median wall time is reported:

* ``baseline``       -- ``python -c "import sqlalchemy, click"``;
* ``lookup``         -- ``identity-graph --db URL lookup <an ordinary ID>`` (a 2-ID profile);
* ``lookup 1000``    -- ``identity-graph --db URL lookup <an ID of the 1,000-ID profile>``;
* ``(info) import``  -- ``python -c "import identity_graph.cli"``, what the imports alone cost;
* ``(info) version`` -- ``identity-graph --version`` (imports, no database);
* ``(info) no exit``  -- the ordinary lookup through ``cli.main`` in ``python -c``, then
  ``os._exit(0)`` after flushing: the same work without the interpreter's teardown.

Ratio = contender median / baseline median; target <= 1.3 for both lookups. Also printed:
the median of per-round ratios (``paired``: each run against the baseline run of the same
round, robust to slow drifts of machine load) and best / best (``min/min``). Then
``python -X importtime`` of the lookup command (median of ``--importtime-runs`` runs):
the top modules by cumulative time, and self time summed by top-level package, to show
what to trim.

The graph (SQLite, built once and cached as ``benchmarks/data/lookup-1m-schema<V>.db``,
``--rebuild`` to redo it, ~30 s): 499,500 ``identify`` events (a ``userId`` and a uuid4-like
``anonymousId`` each: 999,000 IDs in 2-ID profiles) and 999 ``alias`` events into
``whale-user`` (one profile of exactly 1,000 IDs, the default size cap), 1,000,000 IDs in
all, ingested with ``IdentityGraph.ingest_many``.

    .venv/bin/python benchmarks/bench_lookup.py                  # build or reuse the graph, 21 runs each
    .venv/bin/python benchmarks/bench_lookup.py --runs 51        # steadier medians
    .venv/bin/python benchmarks/bench_lookup.py --strict         # exit 2 when a target is missed
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import engine_version, machine_note  # noqa: E402

import identity_graph  # noqa: E402
from identity_graph import IdentityGraph  # noqa: E402
from identity_graph.schema import SCHEMA_VERSION  # noqa: E402

N_IDS = 1_000_000
WHALE = "whale-user"
WHALE_SIZE = 1000
N_PAIRS = (N_IDS - WHALE_SIZE) // 2
ORDINARY_INDEX = N_PAIRS // 2  # the pair whose anonymousId an ordinary lookup asks for
TARGET_RATIO = 1.3
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _anon_ids(seed: int = 1) -> "list[str]":
    rng = random.Random(seed)
    out = []
    for _ in range(N_PAIRS):
        h = f"{rng.getrandbits(128):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}")
    return out


def _events(anons: "list[str]"):  # type: ignore[no-untyped-def]
    for k, anon in enumerate(anons):
        ts = (START + timedelta(milliseconds=10 * k)).isoformat().replace("+00:00", "Z")
        yield {"type": "identify", "userId": f"user-{k:07d}", "anonymousId": anon, "messageId": f"i{k}",
               "timestamp": ts}
    ts = (START + timedelta(days=60)).isoformat().replace("+00:00", "Z")
    yield {"type": "track", "event": "Signed Up", "userId": WHALE, "messageId": "whale", "timestamp": ts}
    for k in range(1, WHALE_SIZE):
        yield {"type": "alias", "previousId": f"whale-id-{k:04d}", "userId": WHALE, "messageId": f"w{k}",
               "timestamp": ts}


def _count_ids(path: str) -> int | None:
    if not os.path.exists(path):
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM ig_ids").fetchone()[0]
    except sqlite3.Error:
        return None


def build_graph(path: str, rebuild: bool) -> str:
    """The cached graph's URL, building it first when missing, stale or ``rebuild``."""
    if not rebuild and _count_ids(path) == N_IDS:
        print(f"graph: reusing {os.path.relpath(path)} ({N_IDS:,} IDs)")
        return f"sqlite:///{path}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".building"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    print(f"graph: building {os.path.relpath(path)} ({N_IDS:,} IDs) ...", flush=True)
    began = time.perf_counter()
    with IdentityGraph(f"sqlite:///{tmp}") as g:
        summary = g.ingest_many(_events(_anon_ids()), batch_size=10_000)
        ingest_seconds = time.perf_counter() - began
        stats = g.stats()
    assert summary.invalid == 0 and stats.ids == N_IDS, (summary, stats)
    assert stats.largest_profiles[0] == (WHALE, WHALE_SIZE), stats.largest_profiles
    with sqlite3.connect(tmp) as conn:  # fold the WAL in: one self-contained file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    os.replace(tmp, path)
    print(f"graph: built in {time.perf_counter() - began:.1f} s (ingest_many of {summary.events:,} events:"
          f" {summary.events / ingest_seconds:,.0f} events/s), {os.path.getsize(path) / 1e6:,.0f} MB")
    return f"sqlite:///{path}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IDENTITY_GRAPH_DB", None)
    # The subprocesses import the very engine this script imported (see the README on
    # measuring an older commit with PYTHONPATH).
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(identity_graph.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    return env


def _script() -> str:
    found = shutil.which("identity-graph", path=os.path.dirname(sys.executable))
    if found is None:
        raise SystemExit(f"identity-graph is not installed next to {sys.executable} (make install)")
    return found


def _run(argv: "list[str]", env: dict[str, str]) -> "tuple[float, subprocess.CompletedProcess[bytes]]":
    began = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True)
    return time.perf_counter() - began, proc


def check_outputs(contenders: "dict[str, list[str]]", env: dict[str, str], ordinary: str, whale_member: str) -> None:
    _, p = _run(contenders["lookup"], env)
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 0 and lines[0] == f"user-{ORDINARY_INDEX:07d}" and len(lines) == 3, (p, lines[:5])
    _, p = _run(contenders["lookup 1000"], env)
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 0 and lines[0] == WHALE and len(lines) == 1 + WHALE_SIZE, (p.stderr, lines[:5])
    assert f"{WHALE} *" in lines and whale_member in lines


def measure(
    contenders: "dict[str, list[str]]", env: dict[str, str], runs: int, warmup: int
) -> "dict[str, list[float]]":
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            _run(contenders[name], env)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            elapsed, proc = _run(contenders[name], env)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
            times[name].append(elapsed)
    return times


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


NO_TEARDOWN = (
    "import os, sys\nfrom identity_graph.cli import cli\n"
    "try:\n    cli.main({argv!r}, prog_name='identity-graph')\n"
    "except SystemExit as e:\n    sys.stdout.flush(); sys.stderr.flush(); os._exit(e.code or 0)\n"
)
LOOKUP_CODE = "import sys; from identity_graph.cli import main; sys.exit(main())"


def importtime(
    code: str, argv_tail: "list[str]", env: dict[str, str], runs: int
) -> "list[tuple[str, int, float, float]]":
    """(module, depth, median self ms, median cumulative ms) of the imports of ``python -c code``."""
    samples: dict[str, tuple[int, list[float], list[float]]] = {}
    for _ in range(runs):
        _, proc = _run([sys.executable, "-X", "importtime", "-c", code, *argv_tail], env)
        for m in _IMPORTTIME.finditer(proc.stderr.decode()):
            self_us, cum_us, indent, module = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            depth = len(indent) // 2
            entry = samples.setdefault(module, (depth, [], []))
            entry[1].append(self_us / 1000)
            entry[2].append(cum_us / 1000)
    return [(mod, d, statistics.median(s), statistics.median(c)) for mod, (d, s, c) in samples.items()]


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description="Wall time of identity-graph lookup processes on a 1M-ID graph.")
    ap.add_argument("--runs", type=int, default=21, help="timed runs per contender (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default %(default)s)")
    ap.add_argument("--importtime-runs", type=int, default=5, help="-X importtime runs (default %(default)s)")
    ap.add_argument("--top", type=int, default=25, help="import-time offenders to list (default %(default)s)")
    ap.add_argument("--db", default=os.path.join(HERE, "data", f"lookup-1m-schema{SCHEMA_VERSION}.db"),
                    help="the cached SQLite graph file (default %(default)s)")
    ap.add_argument("--rebuild", action="store_true", help="build the graph again even if cached")
    ap.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = ap.parse_args(argv)

    print("bench_lookup: wall time of whole processes, median of interleaved runs")
    print(f"machine: {machine_note()}\n{engine_version()}")
    url = build_graph(os.path.abspath(args.db), args.rebuild)
    ordinary = _anon_ids()[ORDINARY_INDEX]
    whale_member = "whale-id-0500"
    env = _env()
    script = _script()
    contenders = {
        "baseline": [sys.executable, "-c", "import sqlalchemy, click"],
        "lookup": [script, "--db", url, "lookup", ordinary],
        "lookup 1000": [script, "--db", url, "lookup", whale_member],
        "(info) import": [sys.executable, "-c", "import identity_graph.cli"],
        "(info) version": [script, "--version"],
        "(info) no exit": [sys.executable, "-c", NO_TEARDOWN.format(argv=["--db", url, "lookup", ordinary])],
    }
    check_outputs(contenders, env, ordinary, whale_member)
    print(f"contenders ({args.runs} runs each, interleaved, after {args.warmup} warm-up rounds):")
    for name, cmd in contenders.items():
        shown = "python -c <the lookup through cli.main, then os._exit>" if name == "(info) no exit" else " ".join(
            os.path.basename(c) if c in (script, sys.executable) else c for c in cmd)
        print(f"  {name:15s} {shown}")
    times = measure(contenders, env, args.runs, args.warmup)
    base = statistics.median(times["baseline"])
    missed = False
    print(f"\n{'contender':15s} {'median':>9s} {'min':>9s} {'max':>9s} {'ratio':>7s} {'paired':>7s}"
          f" {'min/min':>7s}  target")
    for name, samples in times.items():
        med = statistics.median(samples)
        ratio = med / base
        paired = statistics.median(t / b for t, b in zip(samples, times["baseline"]))
        verdict = ""
        if name in ("lookup", "lookup 1000"):
            ok = ratio <= TARGET_RATIO
            missed |= not ok
            verdict = f"<= {TARGET_RATIO}: {'OK' if ok else 'MISSED'}"
        print(f"{name:15s} {med * 1000:7.1f} ms {min(samples) * 1000:6.1f} ms {max(samples) * 1000:6.1f} ms"
              f" {ratio:6.2f}x {paired:6.2f}x {min(samples) / min(times['baseline']):6.2f}x  {verdict}")
    print("ratio: median / baseline median (the target); paired: median of each round's time / that round's"
          " baseline; min/min: best / best")

    rows = importtime(LOOKUP_CODE, ["--db", url, "lookup", ordinary], env, args.importtime_runs)
    total = sum(s for _, _, s, _ in rows)
    print(f"\npython -X importtime of `identity-graph --db URL lookup <id>` (median of {args.importtime_runs} runs;"
          f" sum of self times {total:.1f} ms)")
    print(f"top {args.top} by cumulative time (nesting depth in brackets):")
    print(f"  {'cumul ms':>9s} {'self ms':>8s}  module")
    for mod, depth, self_ms, cum_ms in sorted(rows, key=lambda r: -r[3])[: args.top]:
        print(f"  {cum_ms:9.1f} {self_ms:8.1f}  {'  ' * min(depth, 8)}{mod} [{depth}]")
    by_package: dict[str, tuple[float, int]] = {}
    for mod, _, self_ms, _ in rows:
        top = mod.split(".")[0]
        ms, n = by_package.get(top, (0.0, 0))
        by_package[top] = (ms + self_ms, n + 1)
    print("self time by top-level package (all modules of it imported by the lookup):")
    for top, (ms, n) in sorted(by_package.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {ms:9.1f} ms  {top} ({n} modules)")
    baseline_modules = {mod for mod, *_ in importtime("import sqlalchemy, click", [], env, args.importtime_runs)}
    extra = [r for r in rows if r[0] not in baseline_modules]
    print(f"modules the lookup imports beyond the baseline: {len(extra)} of {len(rows)},"
          f" self time {sum(s for _, _, s, _ in extra):.1f} ms; top {args.top} by self time:")
    for mod, depth, self_ms, cum_ms in sorted(extra, key=lambda r: -r[2])[: args.top]:
        print(f"  {self_ms:8.1f} ms self {cum_ms:8.1f} ms cumul  {mod}")
    return 2 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
