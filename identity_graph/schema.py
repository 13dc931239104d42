"""The graph's tables, as SQLAlchemy Core ``Table`` objects.

Core tables, not ORM models: every command of the CLI pays for what it imports, and
declaring ORM models costs ~100 ms (``sqlalchemy.orm`` and the mapper set-up) that no
query here uses. Only :mod:`identity_graph.store` queries these tables.

Times are integer microseconds since the Unix epoch (UTC): exact, compact and the same
on every dialect. IDs sort by code point everywhere: SQLite's BINARY collation does, and
PostgreSQL gets the "C" collation.

On SQLite, ``ig_ids`` and ``ig_suppressed`` are WITHOUT ROWID: the row lives in its key's
B-tree, one read per lookup. ``ig_links`` and ``ig_events`` are not: their keys
(messageIds, most of them random UUIDs) arrive in no order, so every commit rewrites
nearly every page of whatever B-tree they key. As rowid tables their rows are appended,
and only the key's index (key + rowid, about half the row) takes the random writes. A
1M-event import writes about half the bytes, and a second month into a graph that holds
the first costs 2.8 s less (measured with 16 KB pages: the register 7.7 -> 6.7 s, the
links 5.3 -> 3.5 s); a lookup by messageId reads one page more. Graphs made before keep
their layout, which every query here works with just the same. (Schema 6 then drops the
links' key index altogether: see below.)

Schema 5 finds the register's rows by a 64-bit key instead of the messageId (see
:mod:`identity_graph.register`); a graph made before gets its register copied into that
layout when it is first opened.

Schema 6 drops ``ig_links``' primary key on (messageId, seq). The register already makes
those unique: links are written only for an event whose messageId was just registered.
That index was read only to find one event's links (an unmerge), yet its random keys made
every commit rewrite most of its pages. An event's links are now found by their time
(``ix_ig_links_time``), which the caller has from the register: mostly in time order, that
index takes its inserts at its end. Measured on the benchmark's 265k links with its 1M
register rows, in commits of 100k events: links plus commits 2.0 s -> 1.4-1.5 s; the whole
1M-event import, the writer's CPU 5.6-5.7 s -> 5.0-5.6 s. A graph made before gets its
links copied into the new table when it is first opened (now ``links.Links.set_aside``).

Schema 7 changes the register's keys from blake2b to XXH3 (``register_key``): the parse
workers compute one per event of an import, and XXH3 takes ~0.2 us against ~0.5-0.8 us
(1M events: ~0.3-0.5 CPU seconds less). A register made before is copied under the new keys
when the graph is first opened (``Register.migrate``); its key index's name tells it.

Schema 8 folds the links that repeat a (source, target) pair: each row gets the pair's
64-bit key and a repeat flag, and the source and target indexes hold first rows only (see
:mod:`identity_graph.links`, which measured it). A graph made before gets its links copied
into the new table, with their keys and flags, when it is first opened
(``Links.set_aside`` / ``Links.copy_old``); its index names tell it.

Schema 9 makes the links' source and target indexes covering (see
:mod:`identity_graph.links`): a schema-8 graph gets them made again when it is first
opened (``Links.drop_narrow_indexes``); its rows stay as they are.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, SmallInteger, String, Table, Text, text

SCHEMA_VERSION = "9"

IdString = String(1024).with_variant(String(1024, collation="C"), "postgresql")
# INTEGER on SQLite makes a primary key the rowid itself: one B-tree, no separate index.
RowId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

#: Each ID, its profile, when it became known (rule 3) and when it was first seen.
ids_t = Table(
    "ig_ids", metadata,
    Column("id", IdString, primary_key=True),
    Column("profile_id", BigInteger, nullable=False),
    Column("known_time", BigInteger),
    Column("known_msg", Text),
    Column("first_time", BigInteger, nullable=False),
    Index("ix_ig_ids_profile_id", "profile_id"),
    sqlite_with_rowid=False,
)

#: One row per profile: canonical, size, "holds a known ID", last event that affected it.
profiles_t = Table(
    "ig_profiles", metadata,
    Column("profile_id", RowId, primary_key=True, autoincrement=False),
    Column("canonical", IdString, nullable=False),
    Column("size", Integer, nullable=False),
    Column("known", Boolean, nullable=False),
    Column("last_time", BigInteger),
    Column("last_msg", Text),
)

#: Every link with its event and outcome; identified by (messageId, 0 explicit | 1 implicit),
#: unique because the register is (no index of its own: see above), found by the event's
#: ``time`` and messageId. ``outcome`` is merged, together, refused (with ``reason``) or
#: unmerged (taken out by ``IdentityGraph.unmerge`` and skipped by every replay). ``pair``
#: and ``repeat`` fold the rows of one (source, target): see :mod:`identity_graph.links`.
_FIRST = text("repeat = 0")
links_t = Table(
    "ig_links", metadata,
    Column("message_id", Text, nullable=False),
    Column("seq", SmallInteger, nullable=False),
    Column("source", IdString, nullable=False),
    Column("target", IdString, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("event_type", String(16), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("reason", String(16)),
    Column("pair", BigInteger, nullable=False),
    Column("repeat", SmallInteger, nullable=False),
    Index("ix_ig_links_time", "time"),
    # Covering (schema 9): a pair is probed, and an ID's pairs found, without reading the
    # table. ``repeat`` is listed because SQLite counts a partial index as covering only
    # when it holds the columns of its own WHERE clause.
    Index("ix_ig_links_source", "source", "target", "repeat", "pair", sqlite_where=_FIRST, postgresql_where=_FIRST),
    Index("ix_ig_links_target", "target", "source", "repeat", "pair", sqlite_where=_FIRST, postgresql_where=_FIRST),
    Index("ix_ig_links_pair", "pair", "repeat"),
)

#: The register of seen messageIds (rule 9), found by ``key``: a 64-bit hash of the messageId,
#: unique, probed past on a collision (see :mod:`identity_graph.register`); ``tx`` is the
#: write transaction that added it; ``digest`` a 64-bit hash of the event's IDs, so that a
#: later event re-using the messageId with other content is told apart from a plain re-send
#: (see ``batch.event_digest``).
events_t = Table(
    "ig_events", metadata,
    Column("message_id", Text, nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("type", String(16), nullable=False),
    Column("tx", BigInteger, nullable=False),
    Column("digest", BigInteger),
    Column("key", BigInteger, nullable=False),
    # Named for its keys' hash: a register of schemas 5 and 6 has ``ux_ig_events_key``, over
    # blake2b keys, and is given new keys when first opened (see Register.migrate).
    Index("ux_ig_events_xxh3", "key", unique=True),
)

#: Erased IDs (``IdentityGraph.delete``): a keyed hash of each, never the ID itself, so that
#: events replayed later can be recognised without the graph keeping what it was asked to forget.
suppressed_t = Table(
    "ig_suppressed", metadata,
    Column("digest", String(64), primary_key=True),
    Column("erased_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

#: Schema version, the merge rules, and the writers' lock row (generation and counters).
meta_t = Table(
    "ig_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
