"""The links table's folded layout (schemas 8 and 9): each (source, target) pair indexed once.

Why: every event that carries an anonymousId with its userId stores a link, and most of
them repeat a pair already stored (the benchmark's 100M-event history: 30.2M link rows,
1.25M distinct pairs, 96 % repeats). Every row kept an entry in the ``source`` and the
``target`` index, and those entries arrive in no order, so each commit rewrote most pages
of both: at 100M events they were 2.6 GB, the largest random-key indexes of the graph.

The layout: each row carries ``pair``, a 64-bit XXH3 of its source and target
(:func:`pair_key`), and ``repeat``: 0 for the first stored row of its (source, target), 1
for every later one. The ``source`` and ``target`` indexes are partial (``WHERE repeat =
0``): they hold each pair once. An index on ``(pair, repeat)`` holds every row, and its
keys repeat, so a repeated pair's entries land on the pages the first one made. A query
by ID finds the pairs through the partial indexes, then their rows through ``pair``.
Replayed on the 100M graph's links (``benchmarks/out/session18-proto_links.py.txt``):
438 -> 338 s, 121.8 -> 46.0 GB written, those indexes 2,612 -> 705 MB.

Schema 9 makes the partial indexes covering: the source index holds (source, target,
repeat, pair), the target index (target, source, repeat, pair). An insert's probe (which
of its pairs are stored?) and the search for an ID's pairs then read those small indexes
only, never the table (see :meth:`Links.stored`).

Exact all the same: two pairs may share a key. Rows fetched by key are kept only when
their source (or target) is one asked for, and the probe asks for the (source, target)
itself, not its key. The one invariant: every stored (source, target) has exactly one row
with ``repeat = 0``. Rows are inserted by :meth:`Links.insert` only (under the writer
lock, which makes the probe race-free), and deleted by :meth:`Links.erase` only, which
takes every row of the pairs it touches.

Only :mod:`identity_graph.store` uses this module; like the register, it runs on the
store's DBAPI cursor inside its transaction.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from xxhash import xxh3_64_intdigest

#: The columns every link row has, in the order callers hand them (pair and repeat follow).
COLUMNS = "message_id, seq, source, target, kind, event_type, time, outcome, reason"

_BATCH = 500  # values per SQLite IN list (the store's chunk: far below its limit on bound parameters)
# PostgreSQL takes a list as one array parameter, whatever its length: one round trip for
# an insert's probe instead of one per 500 keys (1M-event import: the probes 0.74 -> ~0.1 s).
_PG_BATCH = 50_000
_COPY_BATCH = 50_000  # rows per step when an older layout is copied

#: Writes rows into a table: (table, columns, rows); the store's COPY / executemany.
Write = Callable[[str, str, list[tuple[Any, ...]]], None]


def pair_key(source: str, target: str) -> int:
    """The key of a link's (source, target): a signed 64-bit integer, the same in every
    process: the XXH3 of ``source``, a NUL and ``target`` in UTF-8 (IDs hold no NUL).

    >>> pair_key("anon-1", "u1") == pair_key("anon-1", "u1"), pair_key("anon-1", "u1") == pair_key("u1", "anon-1")
    (True, False)
    >>> -2**63 <= pair_key("a", "b") < 2**63
    True
    """
    v = xxh3_64_intdigest(f"{source}\0{target}".encode("utf-8", "surrogatepass"))
    return v - ((v >> 63) << 64)  # as signed: both databases' BIGINT


def probe_sql(n: int) -> str:
    """SQLite's statement for :meth:`Links.stored` of ``n`` pairs: a VALUES list joined to
    the table, which seeks each pair (a row-value ``IN`` list would scan the index).

    ``INDEXED BY``: without it, SQLite's planner (which has no statistics: nothing runs
    ANALYZE) builds an automatic index over every link for each statement once the list
    is long. On a 10M-event graph: 1.4 s for 500 pairs, against 4.6 ms through the index.

    >>> "INDEXED BY ix_ig_links_source" in probe_sql(2)
    True
    """
    return (f"SELECT l.source, l.target FROM (VALUES {','.join(['(?,?)'] * n)}) AS v"
            " JOIN ig_links AS l INDEXED BY ix_ig_links_source"
            " ON l.source = v.column1 AND l.target = v.column2 WHERE l.repeat = 0")


#: PostgreSQL's statement for :meth:`Links.stored`: the pairs as two arrays. LATERAL ...
#: LIMIT 1 makes it one index-only probe per pair: a plain join was planned as a hash join
#: over every first row of the graph (2M links, 50k pairs: 0.30 s against 0.17 s, and
#: growing with the graph).
PG_PROBE = ("SELECT l.source, l.target FROM unnest(%s::text[], %s::text[]) AS v(s, t)"
            " CROSS JOIN LATERAL (SELECT source, target FROM ig_links"
            " WHERE source = v.s AND target = v.t AND repeat = 0 LIMIT 1) AS l")


class Links:
    """The statements that know the folded layout, on one DBAPI cursor; ``sql`` is the
    store's ``_Sql`` (``?`` marks, ``IN`` lists, a table's index names)."""

    def __init__(self, cur: Any, sql: Any) -> None:
        self.cur = cur
        self.sql = sql

    def _select_in(self, head: str, column: str, values: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        return self.sql.select_in(self.cur, head, column, values, size=_PG_BATCH if self.sql.pg else _BATCH)

    # -- reads ---------------------------------------------------------------------------

    def pairs(self, column: str, values: Iterable[Any]) -> Iterator[tuple[str, str]]:
        """(source, target) of every stored pair whose ``column`` (source or target) is in
        ``values``, once each: from the partial index alone."""
        return self._select_in("SELECT source, target FROM ig_links WHERE repeat = 0 AND ", column, values)

    def rows(self, ids: Iterable[str], columns: tuple[str, ...] = ("source",)) -> list[tuple[Any, ...]]:
        """Every stored row whose source (or, with ``columns``, target) is in ``ids``; the
        first nine columns (:data:`COLUMNS`)."""
        wanted = set(ids)
        keys: set[int] = set()
        for column in columns:
            keys.update(r[0] for r in self._select_in("SELECT pair FROM ig_links WHERE repeat = 0 AND ", column, wanted))
        found = self._select_in(f"SELECT {COLUMNS} FROM ig_links WHERE ", "pair", sorted(keys))
        # A key shared by another pair brings its rows too: keep only the asked-for IDs'.
        return [r for r in found if any(r[2 if c == "source" else 3] in wanted for c in columns)]

    # -- writes --------------------------------------------------------------------------

    def insert(self, rows: list[tuple[Any, ...]], write: Write) -> None:
        """Store new links (rows of :data:`COLUMNS`), each with its key and repeat flag.

        One probe of the distinct pairs (:meth:`stored`) finds those stored already; a pair
        met twice within ``rows`` is a repeat from its second row on.
        """
        if not rows:
            return
        first = self.stored(sorted({(r[2], r[3]) for r in rows}))
        folded = []
        for row in rows:
            pair = (row[2], row[3])
            folded.append((*row, pair_key(*pair), 1 if pair in first else 0))
            first.add(pair)
        write("ig_links", COLUMNS + ", pair, repeat", folded)

    def stored(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``pairs`` (source, target) that have a first row stored.

        One seek per pair into the partial source index, which holds the target and the
        flag: index-only, so the table is not read. (Schema 8 probed by the pair key and
        read each found row from the table, to tell pairs that share a key apart: a random
        page per pair, 74-126 ms per 100k-event chunk of a 45M-event graph.) ``pairs`` in
        sorted order makes the seeks walk the index forward.
        """
        found: set[tuple[str, str]] = set()
        if self.sql.pg:
            # JIT off, as for the register's probe: the planner prices 50k probes high
            # enough to compile the query, for nothing.
            self.cur.execute("SET LOCAL jit = off")
        size = _PG_BATCH if self.sql.pg else _BATCH
        for i in range(0, len(pairs), size):
            chunk = pairs[i:i + size]
            if self.sql.pg:  # two arrays: one parameter each, whatever their length
                self.cur.execute(PG_PROBE, ([p[0] for p in chunk], [p[1] for p in chunk]))
            else:
                self.cur.execute(probe_sql(len(chunk)), [x for p in chunk for x in p])
            found.update(map(tuple, self.cur.fetchall()))
        return found

    def erase(self, id_: str) -> None:
        """Delete every link whose source or target is ``id_``: all the rows of its pairs,
        so no pair is left without its first row."""
        self.cur.execute(self.sql(
            "DELETE FROM ig_links WHERE pair IN (SELECT pair FROM ig_links WHERE repeat = 0 AND source = ?"
            " UNION SELECT pair FROM ig_links WHERE repeat = 0 AND target = ?) AND (source = ? OR target = ?)"
        ), (id_, id_, id_, id_))

    # -- older layouts -------------------------------------------------------------------

    def set_aside(self) -> bool:
        """Rename a links table of an older layout (schemas before 8) to ``ig_links_old``,
        for :meth:`copy_old` once the new one exists; False when there is none (no graph
        yet, or a folded one). Its indexes go first: the new table's take their names."""
        indexes = self.sql.index_names(self.cur, "ig_links")
        if not indexes or "ix_ig_links_pair" in indexes:
            return False  # every links table ever made had indexes: none means no table
        for name in ("ix_ig_links_time", "ix_ig_links_source", "ix_ig_links_target"):
            if name in indexes:
                self.cur.execute(f"DROP INDEX {name}")
        self.cur.execute("ALTER TABLE ig_links RENAME TO ig_links_old")
        return True

    def drop_narrow_indexes(self) -> None:
        """Drop schema 8's one-column source and target indexes: the store then makes
        every declared index the graph lacks, schema 9's covering ones among them."""
        for name in ("ix_ig_links_source", "ix_ig_links_target"):
            self.cur.execute(f"DROP INDEX IF EXISTS {name}")

    def copy_old(self, write: Write) -> None:
        """Copy the links set aside by :meth:`set_aside` into the new table through
        :meth:`insert`, and drop the old table (in the caller's transaction with the rest
        of the upgrade: all or nothing).

        In the order they are stored (the order they were written, mostly event time), not
        sorted: the old time index is gone (its name is the new table's), and sorting every
        link would take memory in proportion to the graph. Which row of a pair is its
        first changes no answer."""
        # A second cursor streams the old rows while this one inserts (server-side on
        # PostgreSQL): links of any number are copied in bounded memory.
        conn = self.cur.connection
        reader = conn.cursor(name="ig_links_old") if self.sql.pg else conn.cursor()
        try:
            reader.execute(f"SELECT {COLUMNS} FROM ig_links_old")
            while batch := reader.fetchmany(_COPY_BATCH):
                self.insert([tuple(r) for r in batch], write)
        finally:
            reader.close()
        self.cur.execute("DROP TABLE ig_links_old")
