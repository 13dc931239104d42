"""Fault injection: the N-th database call of a small import fails, for every N in turn.

After each failure the import has raised a clear, one-line error; the graph is
consistent (checked in SQL over the tables, see :func:`consistency_problems`); it holds
exactly the batches that committed before the failure (the same map and link outcomes
as a fresh import of just those events); and running the import again without the fault
ends at the map and links of an uninterrupted import.

Where the faults are injected, and why there. The write path does not go through
SQLAlchemy's statement execution: :meth:`Store.run_write` drives a raw DBAPI cursor for
speed (see :class:`identity_graph.store.WriteTx`), so a ``before_cursor_execute`` hook
never sees those statements. Faults are therefore injected at two levels, both counting
on one shared counter so that "the N-th call" means the N-th database call of the whole
operation:

* the DBAPI level: the store's engine's ``raw_connection``, where ``Store._raw_writer``
  and the lookups' ``Store._read`` take their connections, is wrapped (for callers in
  ``identity_graph`` only: SQLAlchemy's own ``Connection`` takes its DBAPI connection
  there too) so the connection it returns hands out cursors whose ``execute`` / ``executemany`` (and the connection's
  ``commit`` / ``rollback``) count each call and raise a driver error on the N-th,
  *before* passing the call on: the database never sees the failed call, as when a
  driver call fails on the client side;
* the SQLAlchemy level: a ``before_cursor_execute`` listener on the store's engine counts
  and fails the Core statements (meta reads, schema creation, SQLite's ``BEGIN``, the
  export and stats queries). SQLAlchemy raises a listener's exception inside its
  execution ``try``, so it surfaces wrapped as a ``DBAPIError``, as a real one would.

The engine is made inside ``Store.__init__``, so ``identity_graph.store.create_engine``
is wrapped to install both on every engine a graph opened by the test makes.

The injected error is *non-transient* (SQLite ``disk I/O error``, PostgreSQL
``DiskFull``): retrying cannot help, the import must stop and say why. A *transient*
error ("database is locked", a serialisation failure) injected once must instead be
retried invisibly. A genuinely full disk is made with SQLite's ``PRAGMA max_page_count``
(a size-limited database file), set on every connection of the graph's engine.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner
from urllib.parse import parse_qs

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

import identity_graph.store as store_module
from conftest import PostgresSchemas, postgres_base_url
from helpers import alias, ev, identify
from identity_graph import IdentityGraph, MergeRules
from identity_graph.cli import cli
from identity_graph.errors import IdentityGraphError, StoreError
from identity_graph import importer
from identity_graph.importer import ImportSummary, import_events
from identity_graph.schema import metadata as schema_metadata
from test_importer import jsonl, stored_links

pytestmark = pytest.mark.slow

RULES = MergeRules(max_profile_ids=6)
BATCH = 20
N_EVENTS = 80  # 4 batches: every N of an import stays affordable on both backends

# -- the history ----------------------------------------------------------------------------


def small_history(seed: int, n: int) -> list[dict[str, Any]]:
    """A collision-heavy history with a fixed messageId and time on every event.

    Few IDs, so merges, known-ID refusals and size-cap refusals (max 6 IDs) all happen;
    random times, so later batches hold events older than earlier ones (replays); blocked
    values; and identical redeliveries (duplicates). Every event has a messageId, so the
    set of messageIds registered in ``ig_events`` names exactly the events that landed.
    """
    rng = random.Random(seed)
    users: list[Any] = [f"u{i}" for i in range(10)] + [7, "null"]
    devices: list[Any] = [f"d{i}" for i in range(16)] + ["undefined"]
    out: list[dict[str, Any]] = []
    for i in range(n):
        t, msg = rng.randrange(0, 3000), f"m{i:04d}"
        kind = rng.random()
        if kind < 0.45:
            e = identify(t, msg, user=rng.choice(users), anon=rng.choice(devices))
        elif kind < 0.65:
            e = alias(t, msg, rng.choice(users + devices), rng.choice(users))
        elif kind < 0.8:
            e = ev("track", t, msg, userId=rng.choice(users))
        else:
            e = ev("page", t, msg, anonymousId=rng.choice(devices), userId=rng.choice(users))
        out.append(e)
        if rng.random() < 0.04 and len(out) < n:
            out.append(dict(e))  # an identical redelivery
    return out[:n]


HISTORY = small_history(3, N_EVENTS)


def batch_message_ids(events: list[dict[str, Any]], batch: int = BATCH) -> list[set[str]]:
    """The messageIds registered after 0, 1, 2, ... whole batches of ``events`` committed."""
    out = [set()]
    for end in range(batch, len(events) + batch, batch):
        out.append({e["messageId"] for e in events[:end]})
    return out


# -- the consistency check, in SQL ------------------------------------------------------------

#: Every table of the graph (read from the schema: other tables may be added).
TABLES = tuple(sorted(schema_metadata.tables))

# Each query returns the offending rows; a consistent graph returns none for every one.
CONSISTENCY_QUERIES: dict[str, str] = {
    "an ID whose profile does not exist":
        "SELECT i.id FROM ig_ids i LEFT JOIN ig_profiles p ON p.profile_id = i.profile_id"
        " WHERE p.profile_id IS NULL",
    "a profile whose size is not its member count (or that has no members)":
        "SELECT p.profile_id, p.size, coalesce(c.n, 0) FROM ig_profiles p"
        " LEFT JOIN (SELECT profile_id, count(*) AS n FROM ig_ids GROUP BY profile_id) c"
        " ON c.profile_id = p.profile_id WHERE coalesce(c.n, 0) <> p.size OR p.size < 1",
    "a profile whose canonical is not one of its members":
        "SELECT p.profile_id, p.canonical FROM ig_profiles p WHERE NOT EXISTS"
        " (SELECT 1 FROM ig_ids i WHERE i.id = p.canonical AND i.profile_id = p.profile_id)",
    "a profile whose 'holds a known ID' flag disagrees with its members":
        "SELECT p.profile_id FROM ig_profiles p WHERE"
        " (CASE WHEN p.known THEN 1 ELSE 0 END) <>"
        " (CASE WHEN EXISTS (SELECT 1 FROM ig_ids i WHERE i.profile_id = p.profile_id"
        " AND i.known_time IS NOT NULL) THEN 1 ELSE 0 END)",
    "a link whose source or target is not a stored ID":
        "SELECT l.message_id, l.seq FROM ig_links l WHERE NOT EXISTS (SELECT 1 FROM ig_ids i WHERE i.id = l.source)"
        " OR NOT EXISTS (SELECT 1 FROM ig_ids i WHERE i.id = l.target)",
    "two links with one messageId and seq (the register must keep them unique)":
        "SELECT message_id, seq FROM ig_links GROUP BY message_id, seq HAVING count(*) > 1",
    "a link whose event is not registered":
        "SELECT l.message_id, l.seq FROM ig_links l LEFT JOIN ig_events e ON e.message_id = l.message_id"
        " WHERE e.message_id IS NULL",
    "a merged or together link whose IDs are in two profiles":
        "SELECT l.message_id, l.seq FROM ig_links l JOIN ig_ids a ON a.id = l.source JOIN ig_ids b ON b.id = l.target"
        " WHERE l.outcome IN ('merged', 'together') AND a.profile_id <> b.profile_id",
}

State = tuple[dict[str, str], set[tuple[Any, ...]]]  # (ID -> canonical, stored links)


@dataclass
class Snapshot:
    """What a stored graph holds, read in SQL from a connection of the test's own."""

    problems: list[str]
    registered: set[str]
    state: State


_PG_ENGINES: dict[str, Engine] = {}


@contextmanager
def _connection(url: str) -> Iterator[Connection]:
    """A connection to the graph at ``url`` that no fault is injected into.

    PostgreSQL test URLs differ only in their ``search_path`` option: one engine per
    server is kept and the schema set per connection (a new engine per graph would
    connect and probe the server each time)."""
    if not url.startswith("postgres"):
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()
        return
    base, _, query = url.partition("?")
    options = [v for v in parse_qs(query)["options"] if v.startswith("-csearch_path=")]
    schema = options[0].split("=", 1)[1]
    engine = _PG_ENGINES.get(base)
    if engine is None:
        engine = _PG_ENGINES[base] = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{schema}"')
        try:
            yield conn
        finally:
            conn.rollback()


def snapshot(url: str) -> Snapshot:
    """The consistency problems, registered messageIds, map and links of the graph at ``url``.

    Consistent means, checked in SQL over the tables: every ID belongs to an existing
    profile (so to exactly one: ``id`` is the key of ``ig_ids``), every profile's size is
    its member count, it has members and its canonical is one of them, its known flag is
    its members', links join stored IDs of registered events, merged links never straddle
    two profiles, and the lock row's profile counter is ahead of every profile number.
    The tables are created in one transaction: all of them exist, or none.
    """
    with _connection(url) as conn:
        if url.startswith("postgres"):
            listed = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        else:
            listed = "SELECT name FROM sqlite_master WHERE type = 'table'"
        present = sorted(r[0] for r in conn.exec_driver_sql(listed) if r[0].startswith("ig_"))
        if not present:
            return Snapshot([], set(), ({}, set()))
        if tuple(present) != TABLES:
            return Snapshot([f"only some tables exist: {present}"], set(), ({}, set()))
        problems = []
        for what, sql in CONSISTENCY_QUERIES.items():
            rows = conn.exec_driver_sql(sql).all()
            if rows:
                problems.append(f"{what}: {rows[:5]}")
        lock = conn.exec_driver_sql("SELECT value FROM ig_meta WHERE key = 'lock'").scalar()
        top = conn.exec_driver_sql("SELECT max(profile_id) FROM ig_profiles").scalar()
        if lock is None:
            problems.append("no lock row")
        elif top is not None and json.loads(lock)["next_profile_id"] <= top:
            problems.append(f"profile counter {json.loads(lock)['next_profile_id']} not above profile {top}")
        registered = {r[0] for r in conn.exec_driver_sql("SELECT message_id FROM ig_events")}
        id_map = dict(conn.exec_driver_sql(
            "SELECT i.id, p.canonical FROM ig_ids i JOIN ig_profiles p ON p.profile_id = i.profile_id").all())
        links = {tuple(r) for r in conn.exec_driver_sql(
            "SELECT source, target, kind, message_id, outcome, reason FROM ig_links")}
    return Snapshot(problems, registered, (id_map, links))


def consistency_problems(url: str) -> list[str]:
    """Everything wrong with the stored graph at ``url`` (empty: consistent); see :func:`snapshot`."""
    return snapshot(url).problems


def graph_state(url: str) -> State:
    """(ID -> canonical map, stored links) of the graph at ``url``."""
    return snapshot(url).state


@pytest.fixture(scope="module", autouse=True)
def _dispose_checker_engines() -> Iterator[None]:
    yield
    while _PG_ENGINES:
        _PG_ENGINES.popitem()[1].dispose()


class PrefixReferences:
    """The map and links of a one-process import of the first k batches, for each k."""

    def __init__(self, events: list[dict[str, Any]], rules: MergeRules, batch: int = BATCH) -> None:
        self.events, self.rules, self.batch = events, rules, batch
        self.prefixes = batch_message_ids(events, batch)
        self._cache: dict[int, State] = {}

    def batches_committed(self, registered: set[str]) -> int | None:
        """How many whole batches ``registered`` is, or None when it is no prefix of batches."""
        for k, ids in enumerate(self.prefixes):
            if ids == registered:
                return k
        return None

    def state(self, k: int) -> State:
        if k not in self._cache:
            with IdentityGraph("sqlite://", rules=self.rules) as g:
                g.ingest_many(self.events[: k * self.batch])
                self._cache[k] = (dict(g.identities()), stored_links(g))
        return self._cache[k]


# -- the fault injector ---------------------------------------------------------------------


@dataclass
class Faults:
    """Counts database calls; the ``fail_at``-th raises ``make_error(statement)``.

    ``calls`` keeps each call's statement (its first words), so a failure names the call
    that was failed.
    """

    make_error: Callable[[str], BaseException]
    fail_at: int | None = None
    calls: list[str] = field(default_factory=list)
    fired: str | None = None

    _paused = False  # class-wide: set while the test itself makes a graph

    @staticmethod
    @contextmanager
    def paused() -> Iterator[None]:
        """Neither count nor fail the calls made inside (setting up a graph to test)."""
        Faults._paused = True
        try:
            yield
        finally:
            Faults._paused = False

    def call(self, statement: str, level: str = "dbapi") -> None:
        if Faults._paused:
            return
        self.calls.append(f"{level}: " + " ".join(str(statement).split()[:4]))
        if len(self.calls) == self.fail_at:
            self.fired = self.calls[-1]
            raise self.make_error(self.calls[-1])


class _FaultyCursor:
    """A DBAPI cursor whose execute/executemany go through ``Faults.call`` first."""

    def __init__(self, cursor: Any, faults: Faults) -> None:
        self._cursor, self._faults = cursor, faults

    def execute(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._faults.call(statement)
        return self._cursor.execute(statement, *args, **kwargs)

    def executemany(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._faults.call(statement)
        return self._cursor.executemany(statement, *args, **kwargs)

    def copy(self, statement: str, *args: Any, **kwargs: Any) -> Any:  # PostgreSQL bulk inserts
        self._faults.call(statement)
        return self._cursor.copy(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _FaultyConnection:
    """The store's write connection, with counted (and failing) cursors, commit and rollback."""

    def __init__(self, raw: Any, faults: Faults) -> None:
        self._raw, self._faults = raw, faults

    def cursor(self, *args: Any, **kwargs: Any) -> _FaultyCursor:
        return _FaultyCursor(self._raw.cursor(*args, **kwargs), self._faults)

    def commit(self) -> None:
        self._faults.call("COMMIT (driver)")
        self._raw.commit()

    def rollback(self) -> None:
        self._faults.call("ROLLBACK (driver)")
        self._raw.rollback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def install(monkeypatch: pytest.MonkeyPatch, faults: Faults, extra_connect: Callable[[Any], None] | None = None) -> None:
    """Route every database call of graphs opened from now on through ``faults``.

    ``extra_connect`` runs on each new DBAPI connection of those graphs (the disk-full
    test sets ``max_page_count`` there).
    """
    real_create_engine = store_module.create_engine

    def counting_create_engine(*args: Any, **kwargs: Any) -> Any:
        engine = real_create_engine(*args, **kwargs)
        real_raw_connection = engine.raw_connection

        def raw_connection() -> Any:
            # The library's DBAPI-level paths (the writer's connection, the lookups'
            # readers) take their connections here; so does SQLAlchemy's own Connection,
            # whose statements the listener below counts already: wrap only the former.
            raw = real_raw_connection()
            caller = sys._getframe(1).f_globals.get("__name__", "")
            return _FaultyConnection(raw, faults) if caller.startswith("identity_graph") else raw

        engine.raw_connection = raw_connection  # type: ignore[method-assign]

        @event.listens_for(engine, "before_cursor_execute")
        def _count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            faults.call(statement, "core")

        if extra_connect is not None:
            event.listen(engine, "connect", lambda dbapi_conn, _record: extra_connect(dbapi_conn))
        return engine

    monkeypatch.setattr(store_module, "create_engine", counting_create_engine)


def permanent_error(dialect: str) -> Callable[[str], BaseException]:
    """A driver error that retrying cannot fix (not "locked", no SQLSTATE 40001/40P01)."""
    if dialect == "sqlite":
        return lambda statement: sqlite3.OperationalError("disk I/O error")
    import psycopg.errors

    return lambda statement: psycopg.errors.DiskFull('could not extend file "base/1/2": No space left on device')


def transient_error(dialect: str) -> Callable[[str], BaseException]:
    """A driver error the store must retry: SQLite's lock timeout, PostgreSQL's 40001."""
    if dialect == "sqlite":
        return lambda statement: sqlite3.OperationalError("database is locked")
    import psycopg.errors

    return lambda statement: psycopg.errors.SerializationFailure("could not serialize access due to concurrent update")


PERMANENT_TEXT = {"sqlite": "disk I/O error", "postgresql": "No space left on device"}


# -- the backends ---------------------------------------------------------------------------


class Backend:
    """Graphs of one kind: brand-new empty databases, or copies of a new graph with RULES."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.tmp, self.n = name, tmp, 0
        self.pg = PostgresSchemas(postgres_base_url()) if name == "postgresql" else None  # type: ignore[arg-type]
        self._template: Path | None = None

    def new_url(self) -> str:
        """An empty database: the graph's tables do not exist yet."""
        if self.pg is not None:
            return self.pg.new_url()
        self.n += 1
        return f"sqlite:///{self.tmp / f'g{self.n}.db'}"

    def new_graph(self) -> str:
        """A new, empty graph with RULES, made without any injected fault."""
        if self.pg is not None:
            url = self.pg.new_url()
            with Faults.paused():
                IdentityGraph(url, rules=RULES).close()
            return url
        if self._template is None:
            self._template = self.tmp / "template.db"
            with Faults.paused():
                IdentityGraph(f"sqlite:///{self._template}", rules=RULES).close()  # closing removes the WAL
        url = self.new_url()
        shutil.copy(self._template, url.removeprefix("sqlite:///"))
        return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    if b.pg is not None:
        b.pg.drop_all()


@pytest.fixture(scope="module")
def references() -> PrefixReferences:
    return PrefixReferences(HISTORY, RULES)


@pytest.fixture
def history_file(tmp_path: Path) -> Path:
    path = tmp_path / "history.jsonl"
    path.write_bytes(jsonl(HISTORY))
    return path


def _summary_counts(summary: ImportSummary) -> dict[str, Any]:
    return {k: v for k, v in summary.to_dict().items() if k not in ("elapsed_seconds", "events_per_second")}


def open_and_import(url: str, path: Path) -> tuple[IdentityGraph | None, BaseException | None]:
    """Open a graph with RULES at ``url`` (creating it) and import ``path``; the graph (None
    when opening failed) and the error raised (None when it completed)."""
    try:
        g = IdentityGraph(url, rules=RULES)
    except Exception as exc:  # noqa: BLE001 - the test judges what was raised
        return None, exc
    try:
        import_events(g, [path], batch_size=BATCH)
    except Exception as exc:  # noqa: BLE001
        return g, exc
    return g, None


class Findings:
    """What went wrong, for which injected fault: every N is run, then all are reported.

    A fault-injection run is worth most when it shows every call that misbehaves, not
    only the first; problems are grouped by kind, each with the calls that showed it.
    """

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, where: str) -> None:
        self.by_kind.setdefault(kind, []).append(where)

    def report(self) -> str:
        return "\n".join(f"{kind}: {len(ws)} faults, e.g. {ws[:3]}" for kind, ws in self.by_kind.items())


def check_after_failure(url: str, references: PrefixReferences, where: str, findings: Findings) -> int | None:
    """Whether the graph at ``url`` is consistent and holds exactly the batches that
    committed (into ``findings``); returns how many did."""
    snap = snapshot(url)
    if snap.problems:
        findings.add(f"inconsistent graph after the failure: {snap.problems[0]}", where)
    k = references.batches_committed(snap.registered)
    if k is None:
        findings.add("the registered events are not a prefix of whole batches", where)
    elif snap.state != references.state(k):
        findings.add("the graph is not that of its committed batches", where)
    return k


def check_rerun(url: str, full: State, where: str, findings: Findings) -> None:
    snap = snapshot(url)
    if snap.problems:
        findings.add(f"inconsistent graph after the re-run: {snap.problems[0]}", where)
    if snap.state != full:
        findings.add("the re-run did not end at the uninterrupted graph", where)


# -- the tests --------------------------------------------------------------------------------


def test_the_history_exercises_every_outcome(references: PrefixReferences, history_file: Path) -> None:
    """The faults below only mean something if the small import does everything: merges,
    both refusals, links already together, replays of late events, duplicates, blocked."""
    with IdentityGraph("sqlite://", rules=RULES) as g:
        s = import_events(g, [history_file], batch_size=BATCH)
    assert s.links_merged > 10 and s.links_together > 0, s
    assert set(s.links_refused) == {"known_id", "size_cap"}, s
    assert s.replayed_events > 0 and s.duplicates > 0 and s.blocked > 0, s
    assert len(references.prefixes) == -(-len(HISTORY) // BATCH) + 1


@pytest.mark.parametrize("chunk", [None, 5], ids=["chunk=batch", "chunk=5"])
def test_every_failing_database_call_of_an_import_leaves_a_consistent_resumable_graph(
    backend: Backend, history_file: Path, references: PrefixReferences, monkeypatch: pytest.MonkeyPatch,
    chunk: int | None,
) -> None:
    """Open a brand-new graph (creating its tables and storing its rules) and import a
    small history; the N-th database call fails, for every N from the first to the last
    call of an uninterrupted run. After each: a clear error, a consistent graph holding
    exactly the batches that committed; then the same graph object imports again (its
    process cache must not trust what failed) and ends at the uninterrupted result.
    With ``chunk`` the parser hands over chunks of 5 events, so each batch's transaction
    applies four of them."""
    if chunk is not None:
        monkeypatch.setattr(importer, "CHUNK_EVENTS", chunk)
    faults = Faults(permanent_error(backend.name))
    install(monkeypatch, faults)
    url = backend.new_url()
    g, error = open_and_import(url, history_file)
    assert error is None and g is not None
    g.close()
    total = len(faults.calls)
    full = graph_state(url)
    assert full == references.state(len(references.prefixes) - 1)
    assert consistency_problems(url) == []
    assert total > 6 * (len(references.prefixes) - 1), faults.calls  # every batch made several calls

    committed: dict[int | None, int] = {}
    absorbed: list[str] = []
    findings = Findings()
    for n in range(1, total + 1):
        faults.calls, faults.fail_at, faults.fired = [], n, None
        url = backend.new_url()
        g, error = open_and_import(url, history_file)
        faults.fail_at = None
        where = f"call {n}/{total} ({faults.fired})"
        assert faults.fired is not None, where
        if error is None:
            # A failure the library recovered from by itself (the schema-version read of a
            # new database fails as "no tables yet" would): it must have done the whole job.
            absorbed.append(faults.fired)
            assert g is not None
            g.close()
            check_rerun(url, full, where, findings)
            continue
        if not isinstance(error, IdentityGraphError):
            findings.add(f"raised {type(error).__module__}.{type(error).__name__}, not an IdentityGraphError", where)
        elif "\n" in str(error) or PERMANENT_TEXT[backend.name] not in str(error):
            findings.add("the message is not one line naming the cause", f"{where}: {str(error)!r}")
        k = check_after_failure(url, references, where, findings)
        committed[k] = committed.get(k, 0) + 1
        try:
            if g is None:
                g = IdentityGraph(url, rules=RULES)
            import_events(g, [history_file], batch_size=BATCH)
        except Exception as exc:  # noqa: BLE001 - reported below with the fault that led to it
            findings.add("the re-run raised", f"{where}: {exc!r}")
        finally:
            if g is not None:
                g.close()
        check_rerun(url, full, where, findings)
    assert not findings.by_kind, f"{backend.name}, {total} faults injected:\n{findings.report()}"
    # The failures landed before the first batch's commit and between every two (a
    # failure on the last commit leaves all but the last batch); only a read made while
    # opening the graph was ever absorbed.
    assert set(committed) == set(range(len(references.prefixes) - 1)), committed
    assert all(c.startswith("core: ") for c in absorbed), absorbed


def test_every_failing_database_call_of_the_import_command_is_a_one_line_error(
    backend: Backend, history_file: Path, references: PrefixReferences, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``identity-graph import`` into an existing graph: whichever database call fails, the
    command exits 1 with one line ``Error: ...`` naming the cause and no traceback, and
    leaves a consistent graph of whole batches. (The test above runs the same calls
    through the library and re-runs after each; here the command's output is the point.)"""
    faults = Faults(permanent_error(backend.name))
    install(monkeypatch, faults)
    runner = CliRunner()
    args = ["import", str(history_file), "--quiet", "--batch-size", str(BATCH)]
    url = backend.new_graph()
    faults.calls = []
    result = runner.invoke(cli, ["--db", url, *args])
    assert result.exit_code == 0, result.output
    total = len(faults.calls)
    full = graph_state(url)

    findings = Findings()
    for n in range(1, total + 1):
        url = backend.new_graph()
        faults.calls, faults.fail_at, faults.fired = [], n, None
        result = runner.invoke(cli, ["--db", url, *args])
        faults.fail_at = None
        where = f"call {n}/{total} ({faults.fired})"
        assert faults.fired is not None, where
        lines = result.stderr.splitlines()
        if result.exit_code == 0 and faults.fired.startswith("core: "):
            check_rerun(url, full, where, findings)  # absorbed while opening: the import must be whole
            continue
        if result.exit_code != 1 or not isinstance(result.exception, SystemExit):
            findings.add("not a clean exit 1 (a traceback)", f"{where}: exit {result.exit_code}, {result.exception!r}")
        elif len(lines) != 1 or not lines[0].startswith("Error: ") or PERMANENT_TEXT[backend.name] not in lines[0]:
            findings.add("not one line 'Error: ...' naming the cause", f"{where}: {result.stderr!r}")
        check_after_failure(url, references, where, findings)
    assert not findings.by_kind, f"{backend.name}, {total} faults injected:\n{findings.report()}"


def test_a_failing_read_while_opening_a_graph_is_a_store_error(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smallest case of what the sweeps above find: opening an existing graph reads its
    rules through SQLAlchemy Core; when that read fails, the caller must get a
    :class:`StoreError` with a one-line message (the CLI prints it as ``Error: ...``), not
    a raw ``sqlalchemy.exc.OperationalError`` (a traceback from the CLI)."""
    url = backend.new_graph()
    faults = Faults(permanent_error(backend.name))
    install(monkeypatch, faults)
    faults.fail_at = 10_000
    IdentityGraph(url).close()
    reads = [i + 1 for i, c in enumerate(faults.calls) if c.startswith("core: SELECT")]
    faults.calls, faults.fail_at = [], reads[-1]  # the rules read
    with pytest.raises(StoreError, match=PERMANENT_TEXT[backend.name]) as raised:
        IdentityGraph(url).close()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("command", [["lookup", "u1"], ["lookup", "u1", "--json"], ["stats"]], ids=" ".join)
def test_every_failing_database_call_of_a_read_command_is_a_one_line_error(
    backend: Backend, history_file: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """``lookup`` and ``stats`` on an imported graph: whichever database call fails, one
    line ``Error: ...`` naming the cause and exit 1, never a traceback; the graph is
    untouched (the next run answers as before)."""
    url = backend.new_graph()
    with IdentityGraph(url) as g:
        import_events(g, [history_file], batch_size=BATCH)
    faults = Faults(permanent_error(backend.name))
    install(monkeypatch, faults)
    runner = CliRunner()
    expected = runner.invoke(cli, ["--db", url, *command])
    assert expected.exit_code == 0, expected.output
    total = len(faults.calls)
    assert total >= 2, faults.calls
    findings = Findings()
    for n in range(1, total + 1):
        faults.calls, faults.fail_at, faults.fired = [], n, None
        result = runner.invoke(cli, ["--db", url, *command])
        faults.fail_at = None
        where = f"call {n}/{total} ({faults.fired})"
        lines = result.stderr.splitlines()
        if result.exit_code == 0 and result.stdout == expected.stdout:
            continue  # recovered from (the schema-version read, a read's closing rollback): right answer
        if result.exit_code != 1 or not isinstance(result.exception, SystemExit):
            findings.add("not a clean exit 1 (a traceback)", f"{where}: exit {result.exit_code}, {result.exception!r}")
        elif len(lines) != 1 or not lines[0].startswith("Error: ") or PERMANENT_TEXT[backend.name] not in lines[0]:
            findings.add("not one line 'Error: ...' naming the cause", f"{where}: {result.stderr!r}")
    assert runner.invoke(cli, ["--db", url, *command]).stdout == expected.stdout
    assert not findings.by_kind, f"{backend.name}, {' '.join(command)}, {total} faults injected:\n{findings.report()}"


@pytest.mark.parametrize(("chunk", "packed"), [(None, False), (5, False), (5, True)],
                         ids=["chunk=batch", "chunk=5", "chunk=5,packed"])
def test_a_transient_error_on_a_write_call_is_retried_invisibly(
    backend: Backend, history_file: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None, packed: bool
) -> None:
    """"database is locked" (SQLite) or a serialisation failure (PostgreSQL), once, on a
    call of the write path: the import completes, with the uninterrupted graph and the
    very same summary (a retried batch is neither lost nor counted twice). Tried on the
    first call of each kind of statement and on the last commit. With ``chunk``, a batch
    is four chunks of 5 events: the retried transaction applies the ones it had taken
    again, then takes the rest. With ``packed``, it keeps only the first chunk as it is and
    packs the others (see IdentityGraph.apply_chunks), which the retry unpacks."""
    if chunk is not None:
        monkeypatch.setattr(importer, "CHUNK_EVENTS", chunk)
    unpacked: list[int] = []
    if packed:
        monkeypatch.setattr(importer, "DEFAULT_IMPORT_BATCH", chunk)
        from identity_graph.chunk import PackedChunk

        unpack = PackedChunk.unpack
        monkeypatch.setattr(PackedChunk, "unpack", lambda self: unpacked.append(1) or unpack(self))
        # Every call of the first batch, not only the first of each kind: a failure after
        # its second chunk was taken must replay the first two before taking the third.
    faults = Faults(transient_error(backend.name))
    install(monkeypatch, faults)
    url = backend.new_graph()
    faults.calls = []
    with IdentityGraph(url) as g:
        expected_summary = _summary_counts(import_events(g, [history_file], batch_size=BATCH))
    calls = list(faults.calls)
    full = graph_state(url)
    # The write transactions' calls (run_write retries them); the meta reads made when a
    # graph is opened go through Core and are not retried.
    first_of_kind: dict[str, int] = {}
    for i, c in enumerate(calls):
        if c.startswith("dbapi: "):
            first_of_kind.setdefault(c, i + 1)
    first_commit = next(i for i, c in enumerate(calls) if c.startswith("dbapi: COMMIT")) + 1
    first_batch = [i + 1 for i, c in enumerate(calls[:first_commit]) if c.startswith("dbapi: ")]
    targets = sorted({*first_of_kind.values(), len(calls), *(first_batch if chunk is not None else ())})
    assert len(targets) >= 8 and calls[-1].startswith("dbapi: COMMIT"), calls
    for n in targets:
        url = backend.new_graph()
        faults.calls, faults.fail_at, faults.fired = [], n, None
        with IdentityGraph(url) as g:
            summary = import_events(g, [history_file], batch_size=BATCH)
        faults.fail_at = None
        where = f"{backend.name}: call {n} ({faults.fired}) failed once"
        assert faults.fired is not None, where
        assert len(faults.calls) > len(calls), f"{where}: nothing was retried"
        assert _summary_counts(summary) == expected_summary, where
        snap = snapshot(url)
        assert snap.problems == [] and snap.state == full, where
    assert bool(unpacked) == packed  # some retry applied packed chunks again


def test_a_full_sqlite_file_is_a_clear_error_and_a_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A size-limited database file (``PRAGMA max_page_count`` on every connection) fills
    up mid-import: the command exits 1 with one line naming the cause, the graph holds
    the batches that fitted, consistently, and a re-run with the limit lifted completes."""
    events = [dict(e, properties={"pad": "x" * 200}) for e in small_history(4, 3000)]  # fills sooner
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl(events))
    refs = PrefixReferences(events, RULES, batch=100)
    runner = CliRunner()
    args = ["import", str(path), "--quiet", "--batch-size", "100"]

    def pages(url: str) -> int:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute("PRAGMA page_count").fetchone()[0]

    full_url = f"sqlite:///{tmp_path / 'full.db'}"
    IdentityGraph(full_url, rules=RULES).close()
    assert runner.invoke(cli, ["--db", full_url, *args]).exit_code == 0
    full = graph_state(full_url)
    full_pages = pages(full_url)

    url = f"sqlite:///{tmp_path / 'limited.db'}"
    IdentityGraph(url, rules=RULES).close()
    empty_pages = pages(url)
    limit = (empty_pages + full_pages) // 2

    def cap(dbapi_conn: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {limit}")

    install(monkeypatch, Faults(permanent_error("sqlite")), extra_connect=cap)
    result = runner.invoke(cli, ["--db", url, *args])
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "database or disk is full" in lines[0], result.stderr
    assert pages(url) <= limit

    snap = snapshot(url)
    assert snap.problems == []
    k = refs.batches_committed(snap.registered)
    assert k is not None and 0 < k < len(refs.prefixes) - 1, k
    assert snap.state == refs.state(k)
    again = runner.invoke(cli, ["--db", url, *args])
    assert again.exit_code == 0, again.output
    snap = snapshot(url)
    assert snap.problems == [] and snap.state == full
