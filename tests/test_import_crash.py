"""An import killed with SIGKILL at any moment, then re-run, ends with exactly the graph of an
uninterrupted import: each batch is one transaction, and re-running skips what landed.

Per backend, ``identity-graph import`` (a subprocess) is killed at 20 random moments, each
run resuming where the killed ones left off, then run to completion. The moments are drawn
from a seeded generator (the seed is in every assertion message; set
``IDENTITY_GRAPH_CRASH_SEED`` to replay one): some during start-up, the others once the
graph holds a random share of the events, plus a random fraction of a batch's time, so kills
land inside a transaction as well as between two. After each kill the graph is checked:
consistent (:func:`test_fault_injection.snapshot`), holding a prefix of whole batches, and
equal to a one-process import of exactly those batches. The final map and stored links are
compared with one uninterrupted run per backend.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text

from conftest import PostgresSchemas
import identity_graph
from identity_graph import IdentityGraph, MergeRules
from identity_graph.errors import InvalidEvent
from identity_graph.events import parse_event
from test_fault_injection import State, _dispose_checker_engines, snapshot  # noqa: F401 - the fixture is used
from test_importer import collision_history, jsonl, realistic_history, stored_links

pytestmark = pytest.mark.slow

RULES = MergeRules(max_profile_ids=12)
BATCH = 50
KILLS = 20
STARTUP_KILLS = 5  # of KILLS: at a random moment before the first batch would have landed
ENGINE_ROOT = str(Path(identity_graph.__file__).resolve().parents[1])
SEEDS = {"sqlite": 20240601, "postgresql": 20240602}


def history(n_realistic: int, n_collisions: int) -> list[dict[str, Any]]:
    """A realistic export with a collision-heavy history woven into it, chunk by chunk.

    Only valid events, each with a messageId (one derived from its body where it had none,
    so identical redeliveries stay duplicates): the messageIds registered in ``ig_events``
    then name exactly the batches that landed.
    """
    realistic = realistic_history(n_realistic)
    collisions = collision_history(17, n_collisions)
    out: list[dict[str, Any]] = []
    step = max(1, len(realistic) // max(1, len(collisions) // 20))
    c = 0
    for i in range(0, len(realistic), step):
        out.extend(realistic[i : i + step])
        out.extend(collisions[c : c + 20])
        c += 20
    out.extend(collisions[c:])
    valid = []
    for e in out:
        try:
            parse_event(e)
        except InvalidEvent:
            continue
        if "messageId" not in e:
            e = {**e, "messageId": "h-" + hashlib.sha256(orjson.dumps(e, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]}
        valid.append(e)
    return valid


def start_import(url: str, path: Path) -> subprocess.Popen[bytes]:
    # The child imports the very identity_graph this process tests.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ENGINE_ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "identity_graph", "--db", url, "import", str(path), "--quiet", "--batch-size", str(BATCH)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=path.parent,  # `-m` puts the cwd first
    )


class EventCounter:
    """Counts the events a graph has stored, from outside the importing process."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def __call__(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM ig_events")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()


class BatchPrefixes:
    """The batches of the import, and the graph a one-process import of the first k makes."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        self.registered: list[set[str]] = [set()]
        for b in self.batches:
            self.registered.append(self.registered[-1] | {e["messageId"] for e in b})
        self._graph = IdentityGraph("sqlite://", rules=RULES)
        self._fed = 0

    def committed(self, registered: set[str]) -> int | None:
        """How many whole batches ``registered`` is (None: not a prefix of whole batches)."""
        for k, ids in enumerate(self.registered):
            if ids == registered:
                return k
        return None

    def state(self, k: int) -> State:
        """The graph of the first ``k`` batches (k never decreases between calls: batches
        are fed one by one into a single in-memory reference)."""
        assert k >= self._fed
        while self._fed < k:
            self._graph.ingest_many(self.batches[self._fed])
            self._fed += 1
        return dict(self._graph.identities()), stored_links(self._graph)

    def close(self) -> None:
        self._graph.close()


@dataclass(frozen=True)
class Moment:
    """When to kill: ``delay`` seconds after start or at the run's first new batch,
    whichever comes first (start-up), or once ``share`` of the events (and at least one
    more batch) are stored, then ``jitter`` batches' time later."""

    kind: str
    share: float = 0.0
    jitter: float = 0.0
    delay: float = 0.0

    def __str__(self) -> str:
        if self.kind == "startup":
            return f"{self.delay * 1000:.0f} ms after start"
        return f"at {self.share:.0%} of the events + {self.jitter:.2f} batch"


def kill_plan(seed: int, first_commit: float) -> list[Moment]:
    """KILLS moments, in run order: shares increase, start-up kills are mixed in."""
    rng = random.Random(seed)
    plan = [Moment("events", share=s, jitter=rng.uniform(0, 1)) for s in sorted(
        rng.uniform(0.02, 0.85) for _ in range(KILLS - STARTUP_KILLS))]
    for _ in range(STARTUP_KILLS):
        plan.insert(rng.randrange(len(plan) + 1), Moment("startup", delay=rng.uniform(0.0, 1.1) * first_commit))
    return plan


@dataclass
class Reference:
    state: State
    total: int          # events registered by a whole import
    first_commit: float  # seconds from start to the first batch stored
    batch_time: float    # seconds per batch after that


def uninterrupted(url: str, path: Path, batches: int) -> Reference:
    """One whole import at ``url``: its graph, and how long it took (to aim the kills)."""
    IdentityGraph(url, rules=RULES).close()
    count = EventCounter(url)
    try:
        started = time.monotonic()
        proc = start_import(url, path)
        first = None
        while proc.poll() is None:
            if first is None and count() > 0:
                first = time.monotonic() - started
            time.sleep(0.002)
        whole = time.monotonic() - started
        _, err = proc.communicate()
        assert (proc.returncode, err) == (0, b""), err.decode()
        total = count()
    finally:
        count.close()
    first = first if first is not None else whole
    snap = snapshot(url)
    assert snap.problems == []
    return Reference(snap.state, total, first, max(whole - first, 0.001) / batches)


def check_crash_recovery(url: str, reference_url: str, path: Path, events: list[dict[str, Any]], seed: int) -> None:
    prefixes = BatchPrefixes(events)
    try:
        ref = uninterrupted(reference_url, path, len(prefixes.batches))
        assert len(ref.state[0]) > 250
        plan = kill_plan(seed, ref.first_commit)
        IdentityGraph(url, rules=RULES).close()  # the schema and the rules, before the first kill
        count = EventCounter(url)
        runs: list[str] = []
        killed = advanced = mid_run = 0
        try:
            for i, moment in enumerate(plan):
                before = count()
                proc = start_import(url, path)
                if moment.kind == "startup":
                    # A resumed run re-reads what landed before it writes: the first new
                    # batch may land before the delay is up; kill then at the latest.
                    until = time.monotonic() + moment.delay
                    while proc.poll() is None and time.monotonic() < until and count() == before:
                        time.sleep(0.005)
                else:
                    # At least one more batch than before (a kill that only re-reads what
                    # landed is a start-up kill), and a few batches short of the end.
                    target = min(max(moment.share * ref.total, before + 1), ref.total - 3 * BATCH)
                    jitter = moment.jitter
                    if target <= before:
                        # Earlier kills landed late and left no room before the cap: kill as
                        # soon as the next batch lands (waiting past the cap may let the run
                        # finish, and killing now would only be a start-up kill).
                        target, jitter = before + 1, 0.0
                    while proc.poll() is None and count() < target:
                        time.sleep(0.005)
                    time.sleep(jitter * ref.batch_time)
                alive = proc.poll() is None
                if alive:
                    proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=120)
                snap = snapshot(url)
                k = prefixes.committed(snap.registered)
                runs.append(f"kill {i + 1} {moment}: exit {proc.returncode}, events {before} -> {len(snap.registered)}, "
                            f"batches {k}")
                where = f"seed {seed}: " + "; ".join(runs)
                assert alive and proc.returncode == -signal.SIGKILL, f"{where}: the import was not killed"
                assert snap.problems == [], f"{where}: {snap.problems}"
                assert k is not None, f"{where}: the stored events are not a prefix of whole batches"
                assert snap.state == prefixes.state(k), f"{where}: the graph is not that of its {k} batches"
                killed += 1
                advanced += len(snap.registered) > before
                mid_run += 0 < k < len(prefixes.batches)
            proc = start_import(url, path)
            _, err = proc.communicate(timeout=120)
            where = f"seed {seed}: " + "; ".join(runs)
            assert (proc.returncode, err) == (0, b""), f"{where}: {err.decode()}"
        finally:
            count.close()
        assert killed == KILLS
        assert advanced >= KILLS - STARTUP_KILLS, f"{where}: too few kills landed mid-import"
        assert mid_run >= KILLS - STARTUP_KILLS, where
        snap = snapshot(url)
        assert snap.problems == [], f"{where}: {snap.problems}"
        with IdentityGraph(url) as g:
            assert g.rules == RULES
        assert len(snap.registered) == ref.total, where
        assert snap.state[0] == ref.state[0], f"{where}: the resumed map differs from the uninterrupted one"
        assert snap.state[1] == ref.state[1], f"{where}: the resumed links differ from the uninterrupted ones"
        assert ref.state == prefixes.state(len(prefixes.batches))  # the import equals one-process ingestion
    finally:
        prefixes.close()


def _seed(backend: str) -> int:
    return int(os.environ.get("IDENTITY_GRAPH_CRASH_SEED", SEEDS[backend]))


def test_a_sqlite_import_killed_20_times_resumes_to_the_uninterrupted_graph(tmp_path: Path) -> None:
    events = history(2_000, 500)
    path = tmp_path / "history.jsonl"
    path.write_bytes(jsonl(events))
    check_crash_recovery(f"sqlite:///{tmp_path / 'crashed.db'}", f"sqlite:///{tmp_path / 'reference.db'}", path,
                         events, _seed("sqlite"))


@pytest.mark.postgres
def test_a_postgresql_import_killed_20_times_resumes_to_the_uninterrupted_graph(
    pg_schemas: PostgresSchemas, tmp_path: Path
) -> None:
    events = history(1_100, 300)
    path = tmp_path / "history.jsonl"
    path.write_bytes(jsonl(events))
    check_crash_recovery(pg_schemas.new_url(), pg_schemas.new_url(), path, events, _seed("postgresql"))
