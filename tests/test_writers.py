"""Eight writer processes on one graph end with exactly the single-process graph: no lost merge.

Each writer (a spawned process) takes a random share of one collision-heavy history (few
IDs: merges race, known-ID and size-cap refusals happen, events arrive late and replay)
and writes it by a random mix of ``ingest`` (one event), ``ingest_many``,
``import_events`` of small files, and ``alias`` / ``identify`` calls of its own. Some
events go to two writers (a redelivery: the first claim wins). Every event has a fixed
messageId and time (the API calls get distinct times and report the messageIds they were
given), so the graph the rules define is one: that of one process ingesting every event.
The writers start together behind a barrier, on one SQLite file and one PostgreSQL schema.

Checked: every writer ran without an error (SQLite's "database is locked" and
PostgreSQL's serialisation failures are retried inside the library, never surfaced),
the graph is consistent, the final map equals the single-process map, and every stored
link's outcome equals the single-process outcome (so no merge was lost).

The negative control runs the very same harness against a deliberately naive write path
(installed in the children only): ``Store.run_write`` runs ``fn(tx)`` in autocommit mode,
each statement its own transaction, so nothing holds the writers' lock while a batch
reads profiles and writes its decision (SQLite gets no ``BEGIN IMMEDIATE``; PostgreSQL's
``SELECT ... FOR UPDATE`` of the lock row releases its lock as soon as that statement
ends), and ``IdentityGraph(..., cache_ids=0)``. The harness must catch it: its final map
must differ from the single-process one, or the test has no teeth.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import PostgresSchemas
from helpers import alias, ev, identify
from identity_graph import IdentityGraph, MergeRules
from identity_graph.errors import StoreError
from identity_graph.importer import import_events
from identity_graph.store import Store, WriteTx, _one_line
from test_fault_injection import State, _dispose_checker_engines, snapshot  # noqa: F401 - the fixture is used
from test_importer import jsonl, stored_links

pytestmark = pytest.mark.slow

RULES = MergeRules(max_profile_ids=8)
WRITERS = 8
API_CALLS = 6  # alias / identify calls per writer
BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)


def shared_history(seed: int, n: int) -> list[dict[str, Any]]:
    """Collision-heavy: 14 users, 22 devices, blocked values, in the first hour of 2024."""
    rng = random.Random(seed)
    users: list[Any] = [f"u{i}" for i in range(14)] + ["null"]
    devices: list[Any] = [f"d{i}" for i in range(22)] + ["undefined"]
    out = []
    for i in range(n):
        t, msg = rng.randrange(0, 3600), f"m{i:04d}"
        kind = rng.random()
        if kind < 0.45:
            out.append(identify(t, msg, user=rng.choice(users), anon=rng.choice(devices)))
        elif kind < 0.7:
            out.append(alias(t, msg, rng.choice(users + devices), rng.choice(users)))
        elif kind < 0.85:
            out.append(ev("page", t, msg, anonymousId=rng.choice(devices), userId=rng.choice(users)))
        else:
            out.append(ev("track", t, msg, userId=rng.choice(users)))
    return out


def api_calls(seed: int, writer: int) -> list[tuple[str, str, str, str]]:
    """(kind, first ID, second ID, ISO time) of the alias/identify calls a writer makes.

    Times fall inside the history's hour at microsecond offsets no other event has, so
    the order of events never depends on the random messageIds the calls are given.
    """
    rng = random.Random(seed * 1000 + writer)
    out = []
    for j in range(API_CALLS):
        when = BASE_TIME + timedelta(seconds=rng.randrange(0, 3600), microseconds=writer * 1000 + j + 1)
        user, device = f"u{rng.randrange(14)}", f"d{rng.randrange(22)}"
        if rng.random() < 0.5:
            out.append(("alias", rng.choice([device, f"u{rng.randrange(14)}"]), user, when.isoformat()))
        else:
            out.append(("identify", user, device, when.isoformat()))
    return out


# -- the naive write path (negative control) -------------------------------------------------


def _naive_run_write(self: Store, fn: Any) -> Any:
    """``fn(tx)`` with every statement in its own transaction: no writers' lock, no retry."""
    raw = self._raw_writer()
    if self.pg:
        raw.driver_connection.autocommit = True  # FOR UPDATE then locks for one statement only
    cur = raw.cursor()  # SQLite: the connection is in autocommit (isolation_level None), no BEGIN
    try:
        tx = WriteTx(cur, self.pg)
        tx.begin()
        result = fn(tx)
        tx.finish()
        return result
    except self.engine.dialect.loaded_dbapi.Error as exc:
        raise StoreError(f"database error: {_one_line(exc)}") from exc
    finally:
        cur.close()


_REAL_RUN_WRITE = Store.run_write
_REAL_INIT = Store.__init__


# -- the writer process ------------------------------------------------------------------------


class _RetryCounter(logging.Handler):
    """Counts the store's "retrying after transient error" debug records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("retrying"):
            self.count += 1


def _writer(url: str, naive: bool, events: list[dict[str, Any]], calls: list[tuple[str, str, str, str]],
            seed: int, workdir: str, barrier: Any, busy_timeout: float | None = None) -> dict[str, Any]:
    """One writer: its events and API calls in a random mix of the four write paths.

    Any exception is recorded, not raised: the naive control must run to its end, and the
    correct run asserts that none happened. The report also lists the API events with
    the messageIds they were given, for the single-process reference.
    """
    Store.run_write = _naive_run_write if naive else _REAL_RUN_WRITE  # type: ignore[method-assign]
    Store.__init__ = _REAL_INIT if busy_timeout is None else (  # type: ignore[method-assign]
        lambda self, url=None, **kw: _REAL_INIT(self, url, **{**kw, "busy_timeout": busy_timeout}))
    # The naive path's failed executemany calls leave psycopg pipelines it warns about on close.
    logging.getLogger("psycopg").setLevel(logging.ERROR if naive else logging.WARNING)
    retries = _RetryCounter()
    store_log = logging.getLogger("identity_graph.store")
    store_log.setLevel(logging.DEBUG)
    store_log.addHandler(retries)
    rng = random.Random(seed)
    report: dict[str, Any] = {"errors": [], "api_events": [], "retries": 0}
    pending = list(calls)
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    files = 0
    graph = IdentityGraph(url, cache_ids=0) if naive else IdentityGraph(url)
    barrier.wait(timeout=120)
    try:
        i = 0
        while i < len(events) or pending:
            pick = rng.random()
            action = "api" if pending and (pick < 0.15 or i >= len(events)) else (
                "ingest" if pick < 0.55 else "many" if pick < 0.8 else "import")
            try:
                if action == "api":
                    kind, a, b, when = pending.pop(0)
                    at = datetime.fromisoformat(when)
                    if kind == "alias":
                        result = graph.alias(a, b, timestamp=at)
                        body = {"type": "alias", "previousId": a, "userId": b}
                    else:
                        result = graph.identify(user_id=a, anonymous_id=b, timestamp=at)
                        body = {"type": "identify", "userId": a, "anonymousId": b}
                    report["api_events"].append({**body, "messageId": result.message_id, "timestamp": when})
                elif action == "ingest":
                    graph.ingest(events[i])
                    i += 1
                elif action == "many":
                    size = rng.randint(2, 12)
                    graph.ingest_many(events[i : i + size], batch_size=rng.choice([1, 3, 100]))
                    i += size
                else:
                    size = rng.randint(2, 16)
                    files += 1
                    path = folder / f"chunk{files}.jsonl"
                    path.write_bytes(jsonl(events[i : i + size]))
                    import_events(graph, [path], batch_size=rng.choice([1, 4, 100]))
                    i += size
            except Exception as exc:  # noqa: BLE001 - recorded; the test judges
                report["errors"].append(f"{action}: {type(exc).__name__}: {exc}"[:300])
                if action != "api":
                    i += 1  # go on past the event that failed (the rest is written again)
    finally:
        graph.close()
        store_log.removeHandler(retries)
    report["retries"] = retries.count
    return report


def _serve(inbox: Any, outbox: Any, barrier: Any) -> None:
    """A writer process: runs the jobs it is sent (one per round) until sent None."""
    while True:
        item = inbox.get()
        if item is None:
            return
        w, job = item
        try:
            report = _writer(**job, barrier=barrier)
        except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
            report = {"errors": [f"writer crashed: {exc!r}"], "api_events": [], "retries": 0}
        outbox.put((w, report))


class WriterPool:
    """WRITERS spawned processes, kept for the whole module: spawning eight interpreters
    (each importing SQLAlchemy) costs more than a round of writing, and the tests run
    several rounds. Each round every process opens the graph anew, so nothing carries
    over but the imported modules."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(WRITERS)
        self.inboxes = [ctx.Queue() for _ in range(WRITERS)]
        self.outbox = ctx.Queue()
        self.procs = [ctx.Process(target=_serve, args=(self.inboxes[w], self.outbox, self.barrier), daemon=True)
                      for w in range(WRITERS)]
        for p in self.procs:
            p.start()

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Each process runs its job; their reports (None: no answer, the process died)."""
        for w, job in enumerate(jobs):
            self.inboxes[w].put((w, job))
        reports: list[dict[str, Any] | None] = [None] * len(jobs)
        for _ in jobs:
            try:
                w, report = self.outbox.get(timeout=300)
            except queue.Empty:
                break
            reports[w] = report
        return reports

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


# -- the harness -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run of the writers left: the graph, what each writer reported, the reference."""

    state: State
    problems: list[str]
    registered: int
    errors: list[str]
    retries: int
    reference: State
    reference_events: int


def run_writers(pool: WriterPool, url: str, seed: int, tmp: Path, naive: bool = False,
                busy_timeout: float | None = None) -> Outcome:
    """WRITERS processes write one history into the (new) graph at ``url``, all at once."""
    events = shared_history(seed, 480)
    rng = random.Random(seed)
    shares: list[list[dict[str, Any]]] = [[] for _ in range(WRITERS)]
    for e in events:
        for w in rng.sample(range(WRITERS), 2 if rng.random() < 0.1 else 1):  # some delivered twice
            shares[w].append(e)
    for share in shares:
        rng.shuffle(share)
    IdentityGraph(url, rules=RULES).close()  # the schema and the rules, before the race
    reports = pool.run([
        {"url": url, "naive": naive, "events": shares[w], "calls": api_calls(seed, w), "seed": seed * 100 + w,
         "workdir": str(tmp / f"writer{w}"), "busy_timeout": busy_timeout}
        for w in range(WRITERS)
    ])
    written = [r for r in reports if r is not None]
    api_events = [e for r in written for e in r["api_events"]]
    with IdentityGraph("sqlite://", rules=RULES) as reference:
        reference.ingest_many(events + api_events)
        expected = (dict(reference.identities()), stored_links(reference))
    snap = snapshot(url)
    return Outcome(
        state=snap.state, problems=snap.problems, registered=len(snap.registered),
        errors=[e for r in written for e in r["errors"]]
        + [f"writer {w} did not answer (died)" for w, r in enumerate(reports) if r is None],
        retries=sum(r["retries"] for r in written), reference=expected,
        reference_events=len({e["messageId"] for e in events + api_events}),
    )


def lost_merges(outcome: Outcome) -> list[tuple[Any, ...]]:
    """Links merged in the single-process graph whose two IDs are not one profile here."""
    got = outcome.state[0]
    return [l for l in outcome.reference[1]
            if l[4] == "merged" and (got.get(l[0]) is None or got.get(l[0]) != got.get(l[1]))]


def verdict(outcome: Outcome) -> list[str]:
    """Everything the harness holds against a run (empty: the run is right)."""
    problems = []
    if outcome.errors:
        problems.append(f"{len(outcome.errors)} errors seen by writers, e.g. {outcome.errors[:3]}")
    if outcome.problems:
        problems.append(f"inconsistent graph: {outcome.problems}")
    got_map, expected_map = outcome.state[0], outcome.reference[0]
    if got_map != expected_map:
        wrong = sorted(i for i in expected_map.keys() | got_map.keys() if got_map.get(i) != expected_map.get(i))
        problems.append(f"the map differs from the single-process map for {len(wrong)} of {len(expected_map)} IDs, "
                        f"e.g. {[(i, got_map.get(i), expected_map.get(i)) for i in wrong[:3]]}")
    lost = lost_merges(outcome)
    if lost:
        problems.append(f"{len(lost)} lost merges, e.g. {lost[:2]}")
    if outcome.state[1] != outcome.reference[1]:
        differ = outcome.state[1] ^ outcome.reference[1]
        problems.append(f"{len(differ)} stored links differ from the single-process outcomes")
    if outcome.registered != outcome.reference_events:
        problems.append(f"{outcome.registered} events registered, {outcome.reference_events} expected")
    return problems


def _url(backend: str, tmp: Path, pg: PostgresSchemas | None, name: str) -> str:
    return pg.new_url() if pg is not None else f"sqlite:///{tmp / f'{name}.db'}"


@pytest.fixture(scope="module")
def pool() -> Iterator[WriterPool]:
    writers = WriterPool()
    yield writers
    writers.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _schemas(backend: str, request: pytest.FixtureRequest) -> PostgresSchemas | None:
    return request.getfixturevalue("pg_schemas") if backend == "postgresql" else None


# -- the tests -------------------------------------------------------------------------------


def test_the_history_makes_writers_collide() -> None:
    """The race only tests something if the single-process graph has merges, both kinds
    of refusal, and profiles that grow past two IDs."""
    with IdentityGraph("sqlite://", rules=RULES) as g:
        g.ingest_many(shared_history(1, 480))
        stats = g.stats()
    assert stats.links_merged > 30 and set(stats.links_refused) == {"known_id", "size_cap"}, stats
    assert stats.largest_profiles[0][1] == RULES.max_profile_ids, stats


def test_eight_writers_end_with_the_single_process_graph(pool: WriterPool, backend: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    pg = _schemas(backend, request)
    outcome = run_writers(pool, _url(backend, tmp_path, pg, "shared"), seed=1, tmp=tmp_path)
    assert verdict(outcome) == [], f"{backend}, {outcome.retries} transient errors retried"
    assert len(outcome.reference[0]) > 30
    print(f"{backend}: 8 writers, {outcome.retries} transient errors retried")


def test_sqlite_lock_timeouts_are_retried_never_surfaced(pool: WriterPool, tmp_path: Path) -> None:
    """The same race with SQLite's busy timeout cut to 5 ms: writers waiting for the lock
    now get "database is locked" from SQLite itself, which the store must retry whole;
    no writer may see it, and the graph must still be the single-process one."""
    outcome = run_writers(pool, f"sqlite:///{tmp_path / 'impatient.db'}", seed=2, tmp=tmp_path, busy_timeout=0.005)
    assert verdict(outcome) == [], f"{outcome.retries} transient errors retried"
    # Eight writers released together behind a barrier with a 5 ms patience: SQLite must
    # have turned some of them away, or this test did not exercise the retry at all.
    assert outcome.retries > 0
    print(f"sqlite, 5 ms busy timeout: {outcome.retries} 'database is locked' retried")


def test_the_harness_catches_a_naive_write_path(pool: WriterPool, backend: str, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    """Negative control: without the writers' lock the same harness must see lost merges
    (a map that differs from the single-process one) in at least one of three rounds."""
    pg = _schemas(backend, request)
    seen = []
    for round_ in range(3):
        outcome = run_writers(pool, _url(backend, tmp_path, pg, f"naive{round_}"), seed=10 + round_,
                              tmp=tmp_path / f"round{round_}", naive=True)
        seen.append(verdict(outcome))
        if outcome.state[0] != outcome.reference[0]:
            break
    else:
        pytest.fail(f"{backend}: the naive write path gave the single-process map in 3 rounds: {seen}")
    print(f"{backend}: naive write path, round {round_ + 1}: " + "; ".join(seen[-1]))
