"""How is the graph kept? Every query on the graph's tables (see :mod:`.schema`), in one place,
but for those that know the register's keys (:mod:`.register`) and the links' folded layout
(:mod:`.links`), which run on this module's cursor.

Layout: ``ig_ids`` maps each ID to its profile (indexed both ways); ``ig_profiles`` holds
one row per profile with its canonical, size, "holds a known ID" flag and the key of the
last event that affected it. The canonical lives on the profile, not on each ID, so a
merge rewrites only the IDs of the smaller profile. ``ig_links`` keeps every link with its
event and outcome, ``ig_events`` the register of seen messageIds, ``ig_meta`` the rules
and the row writers lock.

Every write runs through :meth:`Store.run_write`, which holds
the graph's single writer lock (SQLite ``BEGIN IMMEDIATE``; a ``FOR UPDATE`` row lock on
PostgreSQL) for the whole decision, so concurrent writers can never lose a merge.
"""

from __future__ import annotations

import json
import logging
import os
import random
import uuid
import time as _time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

from sqlalchemy import Connection, Engine, case, create_engine, event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from .errors import DatabaseUnavailable, StoreError, UnknownId
from .resolver import NO_KEY, Key
from .rules import MERGED, REFUSED, TOGETHER, UNMERGED
from .links import COLUMNS as _LINK_COLUMNS, Links
from .register import Register, Row
from .rows import StoredId, StoredLink
from .schema import SCHEMA_VERSION, events_t, ids_t, links_t, meta_t, metadata, profiles_t

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///identity-graph.db"
# SQLite's limit on bound parameters is 32766 since 3.32; stay far below on every dialect.
_CHUNK = 500
_T = TypeVar("_T")

#: Size buckets of the profile-size histogram: (label, smallest, largest).
SIZE_BUCKETS = [("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6-10", 6, 10), ("11-100", 11, 100),
                ("101-1000", 101, 1000), (">1000", 1001, None)]


def _key(time: int | None, msg: str | None) -> Key | None:
    return None if time is None else (time, msg or "")


def _chunks(items: list[_T], size: int = _CHUNK) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _normalise_url(url: str) -> str:
    # "postgresql://" means psycopg2 to SQLAlchemy; we ship with psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Store:
    """The graph's tables in one database, and every query on them.

    >>> store = Store("sqlite://")
    >>> store.read_meta("schema_version")
    '9'
    """

    def __init__(self, url: str | None = None, *, busy_timeout: float = 60.0) -> None:
        self.url = _normalise_url(url or os.environ.get("IDENTITY_GRAPH_DB") or DEFAULT_URL)
        try:
            parsed = make_url(self.url)
            self.dialect = parsed.get_backend_name()
            kwargs: dict[str, Any] = {}
            if self.dialect == "sqlite":
                kwargs["connect_args"] = {"timeout": busy_timeout}
            elif self.dialect == "postgresql":
                kwargs["pool_pre_ping"] = True
                # No server-side prepared statements: a generic plan made while the graph
                # was small (a sequential scan of ig_ids) would otherwise stick for good.
                kwargs["connect_args"] = {"prepare_threshold": None}
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            hint = ""
            if "postgresql" in self.url:
                hint = " (PostgreSQL needs psycopg 3: pip install 'identity-graph[postgres]')"
            raise DatabaseUnavailable(f"cannot open {self.url!r}: {exc}{hint}") from None
        self.pg = self.dialect == "postgresql"
        if self.dialect == "sqlite":
            self._configure_sqlite(busy_timeout)
        self._writer: Any = None  # the pooled DBAPI connection writes go through
        try:
            self._initialise()
        except BaseException:
            self.engine.dispose()  # the caller gets no store to close: its connections go now
            raise

    # -- connection setup -------------------------------------------------------------

    def _configure_sqlite(self, busy_timeout: float) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # We issue BEGIN ourselves; pysqlite's implicit BEGIN is DEFERRED, which lets
            # two writers read the same state and then collide.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            # 16 KB pages (a new file only: an existing one keeps its size). The messageId
            # register and the link indexes take keys at random, so each commit rewrites
            # most of their pages; larger pages mean fewer of them, with less overhead per
            # byte. Measured (1M-row register, 50k rows a commit): 4 KB 4.6 s, 8 KB 3.9 s,
            # 16 KB 3.7 s, 32 KB 3.5 s; a whole 1M-event import: 4 KB 13.1 s, 8 KB 12.6 s,
            # 16 KB 12.1 s. The price is paid by one-event transactions, which write whole
            # pages: `ingest` one at a time 8,850 -> 7,330 -> 5,590 events/s (its target is
            # 2,000). A lookup reads only a few pages either way.
            cursor.execute("PRAGMA page_size=16384")
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a process crash; only an OS crash may lose the
            # last transactions, never corrupt the file.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            # The default 2 MB page cache thrashes on random-key index inserts (UUIDs).
            cursor.execute("PRAGMA cache_size=-262144")
            cursor.execute("PRAGMA temp_store=MEMORY")
            # Checkpoint every 16,384 pages (256 MB of WAL with 16 KB pages) instead of 1,000:
            # fewer checkpoints and fsyncs on bulk writes. None at all during an import, or a
            # background thread doing them, measured no faster (see benchmarks/README.md).
            cursor.execute("PRAGMA wal_autocheckpoint=16384")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("ig_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def _initialise(self) -> None:
        try:
            stored = self.read_meta("schema_version")
        except StoreError:
            stored = None  # no tables yet (or a failed read: creating the tables will tell)
        if stored == SCHEMA_VERSION:
            return
        if stored is not None and stored.isdigit() and int(stored) > int(SCHEMA_VERSION):
            # An older version would read a newer layout wrongly (schema 7 changed the
            # register's keys: messageIds seen before would look new), so it does not try.
            raise StoreError(
                f"the graph in {self.engine.url!r} was written by a newer identity-graph (schema {stored};"
                f" this one knows schema {SCHEMA_VERSION}): upgrade identity-graph to open it"
            )

        try:
            with self._connect(write=True) as conn, conn.begin():
                if self.pg:
                    # CREATE TABLE IF NOT EXISTS still races on the catalog; serialise creators.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242010001)")
                # A register made before schema 7 is copied under XXH3 keys, and links
                # made before schema 8 into the folded layout (each copy makes its new
                # table), and schema 8's source and target indexes are made covering, in
                # this same transaction: all or nothing.
                cur = conn.connection.cursor()
                sql = _Sql(self.pg)
                started = _time.perf_counter()
                try:
                    links = Links(cur, sql)
                    old_links = links.set_aside()
                    narrow = stored == "8"
                    if narrow:
                        links.drop_narrow_indexes()
                    old_register = Register(cur, sql).migrate(lambda: metadata.create_all(conn))
                    metadata.create_all(conn)
                    # create_all makes a table's indexes only with the table: make those an
                    # existing table lacks (an upgrade dropped them to make them anew).
                    for table in metadata.sorted_tables:
                        have = sql.index_names(cur, table.name)
                        for index in table.indexes:
                            if index.name not in have:
                                index.create(conn)
                    if old_links:
                        links.copy_old(WriteTx(cur, self.pg).insert_rows)
                finally:
                    cur.close()
                existing = dict(conn.execute(select(meta_t.c.key, meta_t.c.value)).all())
                upgraded = [what for what, done in (("register", old_register), ("links", old_links),
                                                      ("link indexes", narrow)) if done]
                if upgraded:
                    # An upgrade of a large graph takes seconds per million events: said, not printed.
                    log.info("upgraded the graph from schema %s to %s (%s) in %.1f s",
                             existing.get("schema_version", "?"), SCHEMA_VERSION, " and ".join(upgraded),
                             _time.perf_counter() - started)
                rows = [
                    {"key": k, "value": v}
                    for k, v in (("schema_version", SCHEMA_VERSION), ("lock", json.dumps(_NEW_LOCK)))
                    if k not in existing
                ]
                if rows:
                    conn.execute(insert(meta_t), rows)
                if existing.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
                    conn.execute(meta_t.update().where(meta_t.c.key == "schema_version").values(value=SCHEMA_VERSION))
        except StoreError as exc:
            raise StoreError(f"cannot create the graph's tables in {self.engine.url!r}: {exc.detail}") from None

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"cannot connect to {self.engine.url!r}: {_one_line(exc.orig)}") from None
        try:
            if write:
                conn = conn.execution_options(ig_write=True)
            yield conn
        except DBAPIError as exc:
            # Every database failure reaches the caller as one of ours, in one line.
            raise StoreError(f"database error: {_one_line(exc.orig)}", _one_line(exc.orig)) from exc
        finally:
            conn.close()

    def _raw_writer(self) -> Any:
        if self._writer is None:
            try:
                self._writer = self.engine.raw_connection()
            except DBAPIError as exc:
                raise DatabaseUnavailable(f"cannot connect to {self.engine.url!r}: {_one_line(exc.orig)}") from None
        return self._writer

    def run_write(self, fn: Callable[["WriteTx"], _T]) -> _T:
        """Run ``fn(tx)`` holding the graph's writer lock, in one transaction, with retries.

        The lock is ``BEGIN IMMEDIATE`` on SQLite and ``SELECT ... FOR UPDATE`` of the
        ``lock`` row on PostgreSQL (READ COMMITTED: every later statement of the
        transaction sees what the previous holder committed). Writes run on one DBAPI
        connection kept for the store's life: a pooled checkout, SQLAlchemy's begin and
        its reset-on-return cost more than a small transaction itself.

        The lock row also carries the graph's *generation*: a fresh random token written
        by every write transaction. ``tx.generation`` is the token found, and
        ``tx.next_generation`` the one this transaction leaves; a process whose cached
        view was made at a token still current knows nobody else has written since.
        A transaction that fails with "database is locked", a deadlock or a serialisation
        failure is retried whole; any other database error becomes :class:`StoreError`.
        """
        delay = 0.01
        for attempt in range(50):
            raw = self._raw_writer()
            cur = raw.cursor()
            try:
                if not self.pg:
                    cur.execute("BEGIN IMMEDIATE")
                tx = WriteTx(cur, self.pg)
                tx.begin()
                result = fn(tx)
                tx.finish()
                if self.pg:
                    raw.commit()
                else:
                    cur.execute("COMMIT")
                return result
            except BaseException as exc:
                self._abandon(raw, cur)
                if not isinstance(exc, self.engine.dialect.loaded_dbapi.Error):
                    raise
                if not _transient(exc) or attempt == 49:
                    raise StoreError(f"database error: {_one_line(exc)}", _one_line(exc)) from exc
                log.debug("retrying after transient error: %s", exc)
            finally:
                cur.close()
            _time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _abandon(self, raw: Any, cur: Any) -> None:
        """Roll back after a failure; a connection that cannot even do that is dropped."""
        try:
            if self.pg:
                raw.rollback()
            elif raw.driver_connection.in_transaction:
                cur.execute("ROLLBACK")
        except Exception:  # the connection is gone: the next write opens a new one
            try:
                raw.invalidate()
            finally:
                self._writer = None

    def analyze(self) -> None:
        """Refresh the query planner's statistics of the graph's tables.

        On PostgreSQL a table filled by one big import has none until autovacuum gets to
        it, and meanwhile the planner takes ``ig_links`` for small and scans it whole for
        every cluster query (measured: an unmerge in a 1M-ID graph went from 280 ms to
        the 10k-ID graph's time). On SQLite, ``PRAGMA optimize`` does the same, cheaply.
        """
        with self._read() as cur:
            if self.pg:
                cur.connection.commit()
                cur.execute("ANALYZE ig_ids, ig_profiles, ig_links, ig_events")
                cur.connection.commit()
            else:
                cur.execute("ROLLBACK")
                cur.execute("PRAGMA optimize")

    def dispose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()

    # -- meta --------------------------------------------------------------------------

    def read_meta(self, key: str) -> str | None:
        with self._connect() as conn:
            return conn.execute(select(meta_t.c.value).where(meta_t.c.key == key)).scalar()

    def write_meta_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there; return the stored value."""

        def go(tx: WriteTx) -> str:
            tx.cur.execute(tx.sql("SELECT value FROM ig_meta WHERE key = ?"), (key,))
            row = tx.cur.fetchone()
            if row is None:
                tx.cur.execute(tx.sql("INSERT INTO ig_meta (key, value) VALUES (?, ?)"), (key, value))
                return value
            return row[0]

        return self.run_write(go)

    def register_size(self) -> int:
        """About how many events the messageId register holds, cheaply: its last rowid on
        SQLite (exact: register rows are never deleted), the planner's row estimate on
        PostgreSQL (as of the last ANALYZE; 0 before one), not a count of a table that
        grows with every event."""
        with self._read() as cur:
            if self.pg:
                cur.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass('ig_events')")
                row = cur.fetchone()
                return max(int(row[0]), 0) if row and row[0] is not None else 0
            cur.execute("SELECT max(rowid) FROM ig_events")
            return int(cur.fetchone()[0] or 0)

    def has_erased_ids(self) -> bool:
        """Whether an ID was ever erased (the lock row counts them; see WriteTx.suppress)."""
        return bool((self.read_json_meta("lock") or {}).get("suppressed"))

    def read_json_meta(self, key: str) -> Any:
        value = self.read_meta(key)
        return None if value is None else json.loads(value)

    # -- reads -------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A DBAPI cursor in a read transaction (one snapshot for the queries inside)."""
        try:
            raw = self.engine.raw_connection()
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"cannot connect to {self.engine.url!r}: {_one_line(exc.orig)}") from None
        driver_error = self.engine.dialect.loaded_dbapi.Error
        cur = None
        try:
            cur = raw.cursor()
            if not self.pg:
                cur.execute("BEGIN")
            yield cur
        except driver_error as exc:
            raise StoreError(f"database error: {_one_line(exc)}", _one_line(exc)) from exc
        finally:
            # End the read transaction here: an in-memory SQLite graph shares one connection
            # with the writer, and the pool does not reset a connection still in use.
            try:
                if self.pg:
                    raw.rollback()
                elif raw.driver_connection.in_transaction:
                    raw.driver_connection.execute("ROLLBACK")
            except driver_error:
                raw.invalidate()  # a connection that cannot roll back is not reused
            finally:
                if cur is not None:
                    cur.close()
                raw.close()

    def read(self, fn: Callable[["ReadTx"], _T]) -> _T:
        """Run ``fn(tx)`` in one read transaction (one snapshot of the graph)."""
        with self._read() as cur:
            return fn(ReadTx(cur, self.pg))

    _LOOKUP = (
        "SELECT p.canonical, p.profile_id FROM ig_ids i"
        " JOIN ig_profiles p ON p.profile_id = i.profile_id WHERE i.id = ?"
    )

    def lookup(self, id_: str) -> tuple[str, list[str]] | None:
        """(canonical, sorted member IDs) of ``id_``'s profile, or None: two indexed queries."""
        q = _placeholders(self.pg)
        with self._read() as cur:
            cur.execute(q(self._LOOKUP), (id_,))
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(q("SELECT id FROM ig_ids WHERE profile_id = ?"), (row[1],))
            members = [r[0] for r in cur.fetchall()]
        return row[0], sorted(members)

    def resolve(self, id_: str) -> str | None:
        """The canonical of ``id_``'s profile, or None: one indexed query."""
        with self._read() as cur:
            cur.execute(_placeholders(self.pg)(self._LOOKUP), (id_,))
            row = cur.fetchone()
        return None if row is None else row[0]

    def iter_identities(self, batch: int = 10_000) -> Iterator[tuple[str, str]]:
        """Every (id, canonical), sorted by ID (code point order), streamed in batches."""
        with self._connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                select(ids_t.c.id, profiles_t.c.canonical)
                .join(profiles_t, ids_t.c.profile_id == profiles_t.c.profile_id)
                .order_by(ids_t.c.id)
            )
            for row in result:
                yield row[0], row[1]

    def all_links(self) -> list[StoredLink]:
        """Every stored link, in event-time order."""
        with self._connect() as conn:
            rows = conn.execute(_select_links()).all()
        return sorted((StoredLink(*row) for row in rows), key=lambda l: (l.time, l.message_id, l.seq))

    def stats(self, largest: int = 10) -> dict[str, Any]:
        """Counts over the whole graph (a handful of aggregate queries)."""
        i, p, lk, e = ids_t.c, profiles_t.c, links_t.c, events_t.c
        with self._connect() as conn:
            one = conn.execute
            lock = json.loads(one(select(meta_t.c.value).where(meta_t.c.key == "lock")).scalar_one())
            out: dict[str, Any] = {
                "ids": one(select(func.count()).select_from(ids_t)).scalar_one(),
                "known_ids": one(select(func.count()).where(i.known_time.is_not(None))).scalar_one(),
                "profiles": one(select(func.count()).select_from(profiles_t)).scalar_one(),
                "events": one(select(func.count()).select_from(events_t)).scalar_one(),
                "newest_event_time": one(select(func.max(e.time))).scalar(),
                "duplicates": lock["duplicates"],
            }
            sizes = []
            for label, low, high in SIZE_BUCKETS:
                cond = p.size >= low if high is None else p.size.between(low, high)
                sizes.append((label, one(select(func.count()).where(cond)).scalar_one()))
            out["size_histogram"] = sizes
            out["largest_profiles"] = [
                (r[0], r[1]) for r in one(select(p.canonical, p.size).order_by(p.size.desc(), p.canonical).limit(largest))
            ]
            out["links"] = _link_counts(one, lk)
        return out


def _link_counts(one: Callable[..., Any], lk: Any) -> list[tuple[str, str | None, int]]:
    """(outcome, reason, count) of the links, refusals by reason.

    Counted in one pass, not by GROUP BY over every link: SQLite sorts a GROUP BY's rows,
    and with ``temp_store=MEMORY`` the sort lives in memory (48M events, 13.8M links:
    ~0.7 GB more for ``stats``). Only the refused links, a few percent, are grouped; an
    outcome outside the four known (none is written) falls back to the GROUP BY.
    """
    counted = (MERGED, TOGETHER, UNMERGED)
    total, *sums = one(select(func.count(), *(func.coalesce(func.sum(case((lk.outcome == o, 1), else_=0)), 0)
                                             for o in counted))).one()
    refused = one(select(lk.reason, func.count()).where(lk.outcome == REFUSED).group_by(lk.reason)
                  .order_by(lk.reason)).all()
    if total != sum(sums) + sum(r[1] for r in refused):
        return [(r[0], r[1], r[2]) for r in one(select(lk.outcome, lk.reason, func.count())
                                                 .group_by(lk.outcome, lk.reason).order_by(lk.outcome, lk.reason))]
    rows = [(o, None, n) for o, n in zip(counted, sums) if n] + [(REFUSED, r[0], r[1]) for r in refused]
    return sorted(rows, key=lambda r: (r[0], r[1] or ""))


#: The lock row's value in a new graph: generation token, profile-number sequence, duplicates seen.
_NEW_LOCK = {"generation": "new", "next_profile_id": 1, "duplicates": 0}


def _one_line(exc: BaseException | None) -> str:
    """Driver messages span lines (libpq adds hints); an error message is one line."""
    return " ".join(str(exc).split())


def _transient(exc: BaseException) -> bool:
    code = getattr(exc, "sqlstate", None)
    if code in ("40001", "40P01"):  # serialization failure, deadlock
        return True
    text = str(exc)
    return "database is locked" in text or "database is busy" in text


def _placeholders(pg: bool) -> Callable[[str], str]:
    return (lambda sql: sql.replace("?", "%s")) if pg else (lambda sql: sql)


def _select_links():  # type: ignore[no-untyped-def]
    c = links_t.c
    return select(c.message_id, c.seq, c.source, c.target, c.kind, c.event_type, c.time, c.outcome, c.reason)


class _Sql:
    """The few differences between our SQLite and PostgreSQL statements.

    The hot statements run on the DBAPI cursor: building and compiling a Core statement
    costs ~100 µs against ~3 µs for the execution itself, and a single-event ingest runs
    a handful of them. Statements are written with ``?`` placeholders once.
    """

    def __init__(self, pg: bool) -> None:
        self.pg = pg
        self._cache: dict[str, str] = {}

    def __call__(self, sql: str) -> str:
        out = self._cache.get(sql)
        if out is None:
            out = self._cache[sql] = sql.replace("?", "%s") if self.pg else sql
        return out

    def in_(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        """``column IN values`` as (SQL fragment, parameters)."""
        if self.pg:
            return f"{column} = ANY(%s)", [values]
        return f"{column} IN ({','.join('?' * len(values))})", values

    def select_in(
        self, cur: Any, head: str, column: str, values: Iterable[Any], prefix: tuple[Any, ...] = (),
        size: int = _CHUNK,
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``head + column IN values`` on ``cur``, ``size`` values a statement;
        ``prefix`` binds ``head``'s own ``?``s."""
        for chunk in _chunks(list(values), size):
            where, params = self.in_(column, chunk)
            cur.execute(self(head) + where, [*prefix, *params])
            yield from cur.fetchall()

    def index_names(self, cur: Any, table: str) -> set[str]:
        """The names of ``table``'s indexes (an upgrade tells a table's schema by them)."""
        if self.pg:
            cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
                        (table,))
        else:
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))
        return {r[0] for r in cur.fetchall()}


_LOAD_IDS = (
    "SELECT i.id, i.profile_id, i.known_time, i.known_msg, i.first_time,"
    " p.canonical, p.size, p.known, p.last_time, p.last_msg"
    " FROM ig_ids i JOIN ig_profiles p ON p.profile_id = i.profile_id WHERE "
)


def _in_time_order(rows: Iterable[tuple[Any, ...]]) -> list[StoredLink]:
    return sorted((StoredLink(*r) for r in rows), key=lambda l: (l.time, l.message_id, l.seq))


class ReadTx:
    """The queries that read the graph, on one DBAPI cursor (a read or a write transaction)."""

    def __init__(self, cur: Any, pg: bool) -> None:
        self.cur = cur
        self.sql = _Sql(pg)
        self.links = Links(cur, self.sql)

    def _select_in(
        self, head: str, column: str, values: Iterable[Any], prefix: tuple[Any, ...] = ()
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``head + column IN values``, in chunks; ``prefix`` binds ``head``'s own ``?``s."""
        return self.sql.select_in(self.cur, head, column, values, prefix)

    def load_ids(self, ids: Iterable[str]) -> dict[str, StoredId]:
        """The stored rows (with profile) of those of ``ids`` that exist."""
        return {
            r[0]: StoredId(r[0], r[1], _key(r[2], r[3]), r[4], r[5], r[6], bool(r[7]), _key(r[8], r[9]) or NO_KEY)
            for r in self._select_in(_LOAD_IDS, "i.id", ids)
        }

    def all_ids(self, limit: int) -> list[StoredId] | None:
        """Every stored ID's row (with profile), or None when there are more than ``limit``."""
        self.cur.execute(self.sql(_LOAD_IDS + "1 = 1 LIMIT ?"), (limit + 1,))
        rows = self.cur.fetchall()
        if len(rows) > limit:
            return None
        return [
            StoredId(r[0], r[1], _key(r[2], r[3]), r[4], r[5], r[6], bool(r[7]), _key(r[8], r[9]) or NO_KEY)
            for r in rows
        ]

    def stored_id(self, id_: str) -> StoredId:
        """``id_``'s stored row; :class:`UnknownId` when no event has mentioned it (or it was erased)."""
        row = self.load_ids([id_]).get(id_)
        if row is None:
            raise UnknownId(f"unknown ID {id_!r}")
        return row

    def cluster(self, seeds: Iterable[str]) -> set[str]:
        """Every stored ID joined to ``seeds`` by profile membership or by any stored link.

        Breadth-first, one round of set-based queries per step; seeds not stored are
        returned as they are.
        """
        seen = set(seeds)
        frontier = list(seen)
        seen_profiles: set[int] = set()
        while frontier:
            found: set[str] = set()
            pids = {r[0] for r in self._select_in("SELECT profile_id FROM ig_ids WHERE ", "id", frontier)}
            for column in ("source", "target"):
                for src, dst in self.links.pairs(column, frontier):  # each pair once, not each repeat
                    found.add(src)
                    found.add(dst)
            new_pids = list(pids - seen_profiles)
            seen_profiles.update(new_pids)
            found.update(r[0] for r in self._select_in("SELECT id FROM ig_ids WHERE ", "profile_id", new_pids))
            frontier = list(found - seen)
            seen.update(frontier)
        return seen

    def links_touching(self, ids: Iterable[str]) -> list[StoredLink]:
        """Stored links with ``source`` in ``ids`` (for a closed cluster: all its links),
        in event-time order."""
        return _in_time_order(self.links.rows(ids))

    def links_of(self, ids: Iterable[str]) -> list[StoredLink]:
        """Stored links with ``source`` or ``target`` in ``ids``, in event-time order."""
        return _in_time_order(self.links.rows(ids, ("source", "target")))

    def links_of_message(self, message_id: str, time: int) -> list[StoredLink]:
        """The links one event (its messageId and its registered time) made, in ``seq`` order."""
        self.cur.execute(
            self.sql(f"SELECT {_LINK_COLUMNS} FROM ig_links WHERE time = ? AND message_id = ? ORDER BY seq"),
            (time, message_id),
        )
        return [StoredLink(*r) for r in self.cur.fetchall()]

    def event_time(self, message_id: str) -> int | None:
        """The event time of a registered messageId, or None when the graph has not seen it."""
        found = Register(self.cur, self.sql).find([message_id]).get(message_id)
        return None if found is None else found[1]

    def members(self, profile_id: int) -> list[str]:
        self.cur.execute(self.sql("SELECT id FROM ig_ids WHERE profile_id = ?"), (profile_id,))
        return [r[0] for r in self.cur.fetchall()]

    def read_meta(self, key: str) -> str | None:
        self.cur.execute(self.sql("SELECT value FROM ig_meta WHERE key = ?"), (key,))
        row = self.cur.fetchone()
        return None if row is None else row[0]

    def is_suppressed(self, digest: str) -> bool:
        self.cur.execute(self.sql("SELECT 1 FROM ig_suppressed WHERE digest = ?"), (digest,))
        return self.cur.fetchone() is not None


class WriteTx(ReadTx):
    """The queries of one locked write transaction. Created by :meth:`Store.run_write`."""

    def __init__(self, cur: Any, pg: bool) -> None:
        super().__init__(cur, pg)
        self._lock: dict[str, Any] = {}
        self._claims = 0  # claim_message_ids calls so far (an import claims once a chunk)

    def begin(self) -> None:
        """Take the writer lock (PostgreSQL; SQLite's is BEGIN IMMEDIATE) and read the lock row."""
        lock = "SELECT value FROM ig_meta WHERE key = 'lock'" + (" FOR UPDATE" if self.sql.pg else "")
        self.cur.execute(lock)
        self._lock = json.loads(self.cur.fetchone()[0])
        self.generation: str = self._lock["generation"]
        self.next_generation = uuid.uuid4().hex

    def finish(self) -> None:
        """Leave a new generation (and the counters) on the lock row: one row, one page."""
        self._lock["generation"] = self.next_generation
        self.cur.execute(self.sql("UPDATE ig_meta SET value = ? WHERE key = 'lock'"), (json.dumps(self._lock),))

    def is_empty(self) -> bool:
        self.cur.execute("SELECT 1 FROM ig_ids LIMIT 1")
        return self.cur.fetchone() is None

    def holds_more_ids_than(self, n: int) -> bool:
        """Whether more than ``n`` IDs are stored: reads at most ``n + 1`` index entries,
        where a COUNT would read them all."""
        self.cur.execute(self.sql("SELECT 1 FROM ig_ids LIMIT 1 OFFSET ?"), (n,))
        return self.cur.fetchone() is not None

    def new_profile_id(self) -> int:
        """A profile number never used before in this graph (numbers are not reused, so a
        cached "profile A moved into B" can never point at a different, later profile A)."""
        pid: int = self._lock["next_profile_id"]
        self._lock["next_profile_id"] = pid + 1
        return pid

    def claim_message_ids(self, rows: list[Row]) -> dict[str, tuple[Any, ...]]:
        """Register (messageId, time, type, digest, key) rows (distinct messageIds; ``key``
        is :func:`~identity_graph.register.register_key` of the messageId).

        Returns, for each messageId that was registered before, the registered event's
        (time, type, digest), to tell a re-send from a different event re-using the
        messageId (see :func:`~identity_graph.register.same_event`; the first event wins, the caller reports the
        second). Every other row was new and is registered now: rule 9 in one pass.
        """
        tx_number = self._lock["tx"] = self._lock.get("tx", 0) + 1
        self._claims += 1
        return Register(self.cur, self.sql).claim(rows, tx_number, staged=self._claims > 1)

    # -- writes ------------------------------------------------------------------------

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.cur.executemany(self.sql(sql), rows)

    def insert_rows(self, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert new rows (no conflicts possible: the caller knows they are new)."""
        if not rows:
            return
        if self.sql.pg:
            # COPY streams the rows in one command. psycopg's executemany pipelines an
            # INSERT per row, which measured ~34 us a link (1M-event import: links 9.1 s).
            with self.cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(rows[0]))
            self.cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def insert_ids(self, rows: list[tuple[str, int, int | None, str | None, int]]) -> None:
        """rows: (id, profile_id, known_time, known_msg, first_time)."""
        self.insert_rows("ig_ids", "id, profile_id, known_time, known_msg, first_time", rows)

    def insert_links(self, rows: list[tuple[Any, ...]]) -> None:
        """rows: (message_id, seq, source, target, kind, event_type, time, outcome, reason)."""
        self.links.insert(rows, self.insert_rows)

    def set_id_fields(self, fields: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Update ``fields`` of existing IDs; each row is the field values, then the ID."""
        assignments = ", ".join(f"{f} = ?" for f in fields)  # field names are ours, never input
        self._many(f"UPDATE ig_ids SET {assignments} WHERE id = ?", rows)

    def relabel(self, moves: list[tuple[int, int]]) -> None:
        """Move every ID of profile ``old`` into profile ``new``, for each (old, new)."""
        self._many("UPDATE ig_ids SET profile_id = ? WHERE profile_id = ?", [(new, old) for old, new in moves])

    def delete_profiles(self, pids: list[int]) -> None:
        for chunk in _chunks(pids):
            where, params = self.sql.in_("profile_id", chunk)
            self.cur.execute(self.sql("DELETE FROM ig_profiles WHERE ") + where, params)

    def insert_profiles(self, rows: list[tuple[Any, ...]]) -> None:
        """rows: (profile_id, canonical, size, known, last_time, last_msg)."""
        self.insert_rows("ig_profiles", "profile_id, canonical, size, known, last_time, last_msg", rows)

    def update_profiles(self, rows: list[tuple[Any, ...]]) -> None:
        """rows: (profile_id, canonical, size, known, last_time, last_msg)."""
        self._many(
            "UPDATE ig_profiles SET canonical = ?, size = ?, known = ?, last_time = ?, last_msg = ?"
            " WHERE profile_id = ?",
            [(*r[1:], r[0]) for r in rows],
        )

    def count_duplicates(self, amount: int) -> None:
        self._lock["duplicates"] += amount

    def update_link_outcomes(self, rows: list[tuple[str, str | None, int, str, int]]) -> None:
        """rows: (outcome, reason, time, message_id, seq)."""
        self._many("UPDATE ig_links SET outcome = ?, reason = ? WHERE time = ? AND message_id = ? AND seq = ?", rows)

    # -- edits (unmerge, delete) ---------------------------------------------------------

    def set_link_outcome(self, message_id: str, time: int, outcome: str, reason: str | None) -> None:
        """Set the outcome of every link of one event (its messageId and registered time)."""
        self.cur.execute(self.sql("UPDATE ig_links SET outcome = ?, reason = ? WHERE time = ? AND message_id = ?"),
                         (outcome, reason, time, message_id))

    def erase_id(self, id_: str) -> list[str]:
        """Delete ``id_`` and every link touching it; return the messageIds of those links.

        Their events' digests are cleared too: a digest fingerprints the event's IDs,
        and an erased ID must leave nothing derived from it behind.
        """
        links = self.links_of([id_])
        messages = sorted({l.message_id for l in links})
        self.links.erase(id_)
        self.cur.execute(self.sql("DELETE FROM ig_ids WHERE id = ?"), (id_,))
        Register(self.cur, self.sql).clear_digests(messages)
        return messages

    def suppress(self, digest: str, when: int) -> None:
        self.cur.execute(self.sql("INSERT INTO ig_suppressed (digest, erased_at) VALUES (?, ?)"), (digest, when))
        self._lock["suppressed"] = self._lock.get("suppressed", 0) + 1

    def suppressed(self) -> set[str] | None:
        """Every erased ID's digest, or None when nothing was ever erased (the lock row
        counts them, so the common case costs no query)."""
        if not self._lock.get("suppressed"):
            return None
        self.cur.execute("SELECT digest FROM ig_suppressed")
        return {r[0] for r in self.cur.fetchall()}

    def salt(self) -> str:
        """The graph's secret salt for erased-ID digests, made on first use."""
        value = self.read_meta("salt")
        if value is None:
            value = uuid.uuid4().hex + uuid.uuid4().hex
            self.cur.execute(self.sql("INSERT INTO ig_meta (key, value) VALUES ('salt', ?)"), (value,))
        return value
