"""The messageId register (rule 9): every applied event's messageId, found by a 64-bit key.

Why a key, not the messageId itself: the register takes one row per event, and its
messageIds (random UUIDs, most of them) arrive in no order, so every commit rewrites
nearly every page of the index that finds them. An index entry of a 64-bit integer takes
about 18 bytes against about 46 for a 36-character UUID, so that index has some 2.5x
fewer pages to rewrite and compares integers instead of strings. Measured on its own,
1M UUIDs in commits of 100k (16 KB pages): 6.3 s as a text key, 3.1-4.1 s as an integer
key; the key itself (xxh3, ~0.2 us) is computed where the events are parsed.

Exact all the same: two messageIds may share a key. A messageId's key is the first free
one along its probe sequence ``register_key(m, 0), register_key(m, 1), ...`` (open
addressing). Register rows are never deleted, so a sequence only ever fills up: looking
a messageId up walks its sequence until it meets the messageId (registered) or a free
key (not registered). With 64-bit keys a probe past the first is a rarity (about one
pair in 10^7 among 10^6 messageIds) that costs one more query, never a wrong answer.

The :class:`Register` runs on the store's DBAPI cursor inside its transaction; only
:mod:`identity_graph.store` uses it. :func:`register_key` (the importer's parse workers key
the rows they hand the writer) and :func:`same_event` (the batch writer compares a re-used
messageId's events) need no database.
"""

from __future__ import annotations

from typing import Any, Callable

from xxhash import xxh3_64_intdigest

#: A register row as the writer gets it: (messageId, time, type, digest, key).
Row = tuple[str, int, str, "int | None", int]

_BATCH = 500  # keys per IN list (far below every dialect's limit on bound parameters)
_MIGRATE_BATCH = 50_000


def register_key(message_id: str, level: int = 0) -> int:
    """The ``level``-th key of ``message_id``'s probe sequence: a signed 64-bit integer,
    the same in every process (unlike ``hash``): the 64-bit XXH3 of its UTF-8, seeded
    with ``level``.

    >>> register_key("m1") == register_key("m1"), register_key("m1") == register_key("m1", 1)
    (True, False)
    >>> -2**63 <= register_key("ajs-2f1e") < 2**63
    True

    A stored format: schema 7 made it XXH3 (blake2b before, ~0.5 us more a key, once
    per event of an import); opening an older graph gives its register these keys (see
    :meth:`Register.migrate`).
    """
    v = xxh3_64_intdigest(message_id.encode("utf-8", "surrogatepass"), level)
    return v - ((v >> 63) << 64)  # as signed: both databases' BIGINT


class Register:
    """The register's statements on one DBAPI cursor; ``sql`` is the store's ``_Sql`` (it
    turns ``?`` into the dialect's marks, writes ``IN`` lists and lists a table's indexes)."""

    def __init__(self, cur: Any, sql: Any) -> None:
        self.cur = cur
        self.sql = sql
        self.pg: bool = sql.pg

    def _rows_of(self, keys: list[int]) -> dict[int, tuple[Any, ...]]:
        """key -> (messageId, time, type, digest, tx) of the registered rows among ``keys``."""
        found: dict[int, tuple[Any, ...]] = {}
        for i in range(0, len(keys), _BATCH):
            where, params = self.sql.in_("key", keys[i:i + _BATCH])
            self.cur.execute("SELECT key, message_id, time, type, digest, tx FROM ig_events WHERE " + where, params)
            found.update((r[0], r[1:]) for r in self.cur.fetchall())
        return found

    def claim(self, rows: list[Row], tx_number: int, staged: bool = False) -> dict[str, tuple[Any, ...]]:
        """Register ``rows`` (distinct messageIds) under the transaction number ``tx_number``.
        ``staged``: an earlier claim of this database transaction may have left rows in the
        PostgreSQL staging table (it is emptied at commit only).

        Returns, for each messageId registered by an earlier transaction, that event's
        (time, type, digest); every other row is registered now. One insert that skips
        taken keys does it; only the rows it skipped are read back, to tell a messageId
        seen before from one that merely shares its key (which moves on to its next key
        and is tried again).
        """
        earlier: dict[str, tuple[Any, ...]] = {}
        pending, level = rows, 0
        while pending:
            skipped = self._insert(pending, tx_number, bulk=level == 0, staged=staged)
            level += 1
            again = []
            for row, (message_id, time, type_, digest, tx) in skipped:
                if message_id != row[0]:
                    again.append((*row[:4], register_key(row[0], level)))
                elif tx != tx_number:
                    earlier[row[0]] = (time, type_, digest)
            pending = again
        return earlier

    def _insert(self, rows: list[Row], tx_number: int, bulk: bool,
                staged: bool = False) -> list[tuple[Row, tuple[Any, ...]]]:
        """Insert the rows whose key is free. Returns the ones skipped (their key was
        taken), each with the registered row that holds its key: (messageId, time, type,
        digest, tx)."""
        # The transaction number is ours (an int), so it is written into the statement:
        # the rows go to the driver as given, without a copy per row.
        head = "INSERT INTO ig_events (message_id, time, type, digest, key, tx) "
        if not self.pg:
            # The rows inserted now are appended after the table's last rowid (we hold the
            # writer lock): reading their keys back in rowid order costs far less than
            # looking every key up in the index, which a batch with a few retries of
            # earlier batches' events would otherwise pay (~1.5 us a row).
            self.cur.execute("SELECT max(rowid) FROM ig_events")
            last = self.cur.fetchone()[0] or 0
            self.cur.executemany(head + f"VALUES (?, ?, ?, ?, ?, {int(tx_number)}) ON CONFLICT DO NOTHING", rows)
            if self.cur.rowcount == len(rows):
                return []
            # In insertion order, so that of two rows sharing a key only the later is skipped.
            self.cur.execute("SELECT key FROM ig_events WHERE rowid > ? ORDER BY rowid", (last,))
            inserted = iter(self.cur.fetchall())
            skipped = []
            next_key = next(inserted, (None,))[0]
            for row in rows:
                if row[4] == next_key:
                    next_key = next(inserted, (None,))[0]
                else:
                    skipped.append(row)
            return self._with_holders(skipped)
        if not bulk:
            # psycopg's executemany is not counted: every row is read back (a few probes).
            self.cur.executemany(head + f"VALUES (%s, %s, %s, %s, %s, {int(tx_number)}) ON CONFLICT DO NOTHING",
                                 rows)
            return self._with_holders(rows)
        # COPY into a session-private staging table, then one INSERT ... SELECT: about half
        # the time of unnest() arrays bound per 5,000 rows.
        self.cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ig_events_in (message_id text COLLATE \"C\", time bigint,"
            " type text, digest bigint, key bigint) ON COMMIT DELETE ROWS"
        )
        if staged:
            self.cur.execute("TRUNCATE ig_events_in")
        with self.cur.copy("COPY ig_events_in (message_id, time, type, digest, key) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        self.cur.execute(head + f"SELECT message_id, time, type, digest, key, {int(tx_number)} FROM ig_events_in"
                         " ON CONFLICT DO NOTHING")
        if self.cur.rowcount == len(rows):
            return []
        # A staged row was skipped when its key's row is another messageId's or an earlier
        # transaction's: the server finds those, and sends back only them with the rows
        # that hold their keys. LATERAL ... LIMIT 1 makes it one index probe per staged
        # row, whatever the planner thinks of the staging table. A plain join was planned
        # as a hash join over the whole register, paid by every chunk with a retried event
        # (a re-run of a 1M-event import: 3.0 s of 14.2 in these joins, ~0.2 s each, and
        # 1.3 s more reading the holders back 500 keys at a time). JIT off: the planner
        # prices 100k probes high enough to compile the query (~75-90 ms a chunk), which
        # saves nothing on probes.
        self.cur.execute("SET LOCAL jit = off")
        self.cur.execute("SELECT s.key, e.message_id, e.time, e.type, e.digest, e.tx FROM ig_events_in s"
                         " CROSS JOIN LATERAL (SELECT message_id, time, type, digest, tx FROM ig_events"
                         " WHERE key = s.key LIMIT 1) e"
                         f" WHERE e.tx <> {int(tx_number)} OR e.message_id <> s.message_id")
        holders = {r[0]: r[1:] for r in self.cur.fetchall()}
        return [(row, holders[row[4]]) for row in rows if row[4] in holders]

    def _with_holders(self, rows: list[Row]) -> list[tuple[Row, tuple[Any, ...]]]:
        """Each of ``rows`` with the registered row that holds its key."""
        holders = self._rows_of([row[4] for row in rows])
        return [(row, holders[row[4]]) for row in rows]

    def find(self, message_ids: list[str]) -> dict[str, tuple[int, int]]:
        """messageId -> (key, time) of each of ``message_ids`` that is registered."""
        found: dict[str, tuple[int, int]] = {}
        pending = {m: register_key(m) for m in message_ids}
        level = 0
        while pending:
            taken = self._rows_of(list(pending.values()))
            level += 1
            again = {}
            for m, key in pending.items():
                row = taken.get(key)
                if row is None:
                    continue  # a free key ends the sequence: never registered
                if row[0] == m:
                    found[m] = (key, row[1])
                else:
                    again[m] = register_key(m, level)
            pending = again
        return found

    def clear_digests(self, message_ids: list[str]) -> None:
        """Forget the digests of these events (their IDs are being erased)."""
        keys = [(key,) for key, _ in self.find(message_ids).values()]
        if keys:
            self.cur.executemany(self.sql("UPDATE ig_events SET digest = NULL WHERE key = ?"), keys)

    def migrate(self, create: Callable[[], None]) -> bool:
        """Give a register made before schema 7 this module's keys; False if there was
        nothing to do (no register yet, or one of schema 7 or later).

        Before schema 5 the register was keyed by the messageId; schemas 5 and 6 keyed it
        by a blake2b hash (their key index is ``ux_ig_events_key``; schema 7's, over XXH3
        keys, has another name). The old table is renamed, ``create`` makes the new one,
        and every row is copied into it through :meth:`claim`, streamed in batches. Every
        copied row gets transaction number 0, which no later transaction has (they count
        from 1), so each stays "registered before" for every later claim.
        """
        columns = self._columns()
        if not columns:
            return False
        if "key" in columns:
            if "ux_ig_events_key" not in self.sql.index_names(self.cur, "ig_events"):
                return False
            self.cur.execute("DROP INDEX ux_ig_events_key")  # the old keys' index
        self.cur.execute("ALTER TABLE ig_events RENAME TO ig_events_old")
        create()
        # A second cursor streams the old rows while this one claims them (server-side on
        # PostgreSQL): a register of any size is copied in bounded memory.
        conn = self.cur.connection
        reader = conn.cursor(name="ig_events_old") if self.pg else conn.cursor()
        try:
            reader.execute("SELECT message_id, time, type, digest FROM ig_events_old")
            claimed = False
            while batch := reader.fetchmany(_MIGRATE_BATCH):
                rows = sorted(((m, t, ty, d, register_key(m)) for m, t, ty, d in batch), key=lambda r: r[4])
                self.claim(rows, 0, staged=claimed)  # several claims in one transaction
                claimed = True
        finally:
            reader.close()
        self.cur.execute("DROP TABLE ig_events_old")
        return True

    def _columns(self) -> set[str]:
        """The register table's columns (none: there is no register table yet)."""
        if self.pg:
            self.cur.execute("SELECT column_name FROM information_schema.columns"
                             " WHERE table_schema = current_schema() AND table_name = 'ig_events'")
            return {r[0] for r in self.cur.fetchall()}
        self.cur.execute("PRAGMA table_info(ig_events)")
        return {r[1] for r in self.cur.fetchall()}


def same_event(stored: tuple[Any, ...], incoming: tuple[Any, ...]) -> bool:
    """(time, type, digest) of a registered event against a new one with its messageId.

    Time is not compared: an event sent without a time gets the time it was read, so
    each re-send of it differs there. A row without a digest is given the benefit of
    the doubt."""
    return stored[1] == incoming[1] and (stored[2] is None or stored[2] == incoming[2])
