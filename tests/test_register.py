"""The messageId register: keyed by a 64-bit hash, exact when keys collide, and graphs made
before schema 5 copied into that layout when first opened."""

from __future__ import annotations

import logging
import random
import sqlite3
import zlib
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from sqlalchemy import create_engine, text

from helpers import linked_history, identify, profiles
from test_importer import stored_links
from test_links import answers, folding
from identity_graph import IdentityGraph, MergeRules, UnknownEvent
from identity_graph import batch, chunk, links, register
from identity_graph.importer import import_events
from identity_graph.register import register_key
from identity_graph.schema import SCHEMA_VERSION


def crowded_key(message_id: str, level: int = 0) -> int:
    """A register key with 4 values a level: every few messageIds collide, and sequences
    run many levels deep (level k's keys are 4k..4k+3)."""
    return zlib.crc32(message_id.encode()) % 4 + 4 * level


def crowd(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (register, batch, chunk):
        monkeypatch.setattr(module, "register_key", crowded_key)


@pytest.fixture
def crowded(monkeypatch: pytest.MonkeyPatch) -> None:
    crowd(monkeypatch)


def history(seed: int = 3) -> list[dict[str, Any]]:
    """Links, re-sends (same content) and messageIds re-used with other content."""
    rng = random.Random(seed)
    events = linked_history(160, seed, users=25, devices=40)
    resent = [dict(e) for e in rng.sample(events, 25)]
    reused = [identify(rng.randrange(0, 3000), e["messageId"], user="intruder", anon="x")
              for e in rng.sample(events, 8)]
    out = events + resent + reused
    rng.shuffle(out)
    return out


def outcome(url: str, events: list[dict[str, Any]], tmp_path: Path, bulk: bool) -> tuple[Any, ...]:
    """Everything the register decides: per-event statuses (or the import's counts), the
    graph, the links, and what a second delivery of everything says."""
    rules = MergeRules(max_profile_ids=6)
    with IdentityGraph(url, rules=rules) as g:
        if bulk:
            path = tmp_path / "h.jsonl"
            path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
            first = import_events(g, [path], batch_size=17).to_dict()
            again = import_events(g, [path], batch_size=17).to_dict()
            decided = tuple({k: d[k] for k in ("applied", "duplicates", "conflicts")} for d in (first, again))
        else:
            decided = tuple(tuple(g.ingest(e).status for e in events) for _ in range(2))
        links = {(l.source, l.target, l.message_id, l.outcome, l.reason) for l in g._store.all_links()}
        g.delete("u3")  # clears the digests of the events that named it: found by their keys
        with g._store._connect() as conn:
            cleared = sorted(r[0] for r in conn.exec_driver_sql("SELECT message_id FROM ig_events WHERE digest IS NULL"))
        return decided, profiles(g), links, g.stats().events, cleared


@pytest.mark.parametrize("bulk", [False, True], ids=["ingest", "import"])
def test_colliding_keys_change_no_decision(graph_url: str, tmp_path: Path, bulk: bool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    events = history()
    expected = outcome(f"sqlite:///{tmp_path / 'plain.db'}", events, tmp_path, bulk)
    crowd(monkeypatch)
    got = outcome(graph_url, events, tmp_path, bulk)
    assert got == expected
    assert expected[3] == 160  # one register row per distinct messageId
    assert len(expected[4]) > 2
    if bulk:
        assert expected[0][1]["applied"] == 0 and expected[0][0]["conflicts"] > 0


@pytest.mark.postgres
def test_on_postgresql_an_import_learns_the_holders_of_taken_keys_in_its_one_query(
    pg_schemas: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A re-sent event's key is taken: the staged rows' probe of the register sends back
    the rows that hold them, so no chunk reads them again 500 keys at a time (as a
    re-run of a 1M-event import did, 6,000 queries). Correct answers: see the test above."""
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in linked_history(300, 7)))
    with IdentityGraph(pg_schemas.new_url()) as g:
        import_events(g, [path], batch_size=50)
        reads: list[int] = []
        rows_of = register.Register._rows_of
        monkeypatch.setattr(register.Register, "_rows_of", lambda self, keys: reads.append(len(keys)) or rows_of(self, keys))
        again = import_events(g, [path], batch_size=50)
        assert (again.applied, again.duplicates, again.conflicts) == (0, 300, 0)
        assert reads == []


def test_a_messageId_sharing_a_key_with_a_registered_one_is_not_registered(graph_url: str, crowded: None) -> None:
    taken = next(m for m in (f"m{i}" for i in range(100)) if crowded_key(m) == crowded_key("m0") and m != "m0")
    with IdentityGraph(graph_url) as g:
        g.ingest(identify(1, "m0", user="u1", anon="a1"))
        g.ingest(identify(2, taken, user="u1", anon="a2"))
        with g._store._connect() as conn:
            rows = dict(conn.exec_driver_sql("SELECT message_id, key FROM ig_events").all())
        assert rows == {"m0": crowded_key("m0"), taken: crowded_key(taken, 1)}
        g.unmerge(taken)  # found one level down
        assert g.resolve("a2") == "a2" and g.resolve("a1") == "u1"
        lonely = next(m for m in (f"z{i}" for i in range(100)) if crowded_key(m) == crowded_key("m0"))
        with pytest.raises(UnknownEvent, match=lonely):
            g.unmerge(lonely)  # its first two keys are m0's and the other's, its third free


def test_keys_are_stable_and_spread() -> None:
    keys = {register_key(f"msg-{i}") for i in range(10_000)}
    assert len(keys) == 10_000
    assert register_key("msg-1") == register_key("msg-1") != register_key("msg-1", 1)
    assert register_key("\ud800 lone surrogate") != register_key("\ud801 lone surrogate")


# -- graphs made before schema 5 -------------------------------------------------------------

OLD_REGISTER = ("CREATE TABLE ig_events_old (message_id TEXT PRIMARY KEY, time BIGINT NOT NULL,"
                " type VARCHAR(16) NOT NULL, tx BIGINT NOT NULL, digest BIGINT){layout}")


def make_old(url: str, layout: str) -> None:
    """Turn a new graph's register back into the layout of schema 3 (WITHOUT ROWID) or 4,
    and its links into that of schema 5 and before."""
    make_old_links(url, "4")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(OLD_REGISTER.format(layout=layout)))
        conn.execute(text("INSERT INTO ig_events_old SELECT message_id, time, type, tx, digest FROM ig_events"))
        conn.execute(text("DROP TABLE ig_events"))
        conn.execute(text("ALTER TABLE ig_events_old RENAME TO ig_events"))
    engine.dispose()


OLD_LINKS = ("CREATE TABLE ig_links_old (message_id TEXT NOT NULL, seq SMALLINT NOT NULL,"
             " source VARCHAR(1024) NOT NULL, target VARCHAR(1024) NOT NULL, kind VARCHAR(8) NOT NULL,"
             " event_type VARCHAR(16) NOT NULL, time BIGINT NOT NULL, outcome VARCHAR(8) NOT NULL,"
             " reason VARCHAR(16), PRIMARY KEY (message_id, seq))")
LINK_COLUMNS = "message_id, seq, source, target, kind, event_type, time, outcome, reason"


def make_old_links(url: str, version: str) -> None:
    """Turn a new graph's links back into the layout of schema ``version``: up to 5 keyed
    by (messageId, seq), without a time index; 6 and 7 unkeyed, found by time. Before 8,
    no pair key and no repeat flag: every row in the source and target indexes. 8 has the
    folded rows, but its source and target indexes hold one column each."""
    if version == "8":
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            for column in ("source", "target"):
                conn.execute(text(f"DROP INDEX ix_ig_links_{column}"))
                conn.execute(text(f"CREATE INDEX ix_ig_links_{column} ON ig_links ({column}) WHERE repeat = 0"))
            conn.execute(text("UPDATE ig_meta SET value = '8' WHERE key = 'schema_version'"))
        engine.dispose()
        return
    keyed = int(version) <= 5
    table = OLD_LINKS if keyed else OLD_LINKS.replace(", PRIMARY KEY (message_id, seq))", ")")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(table))
        conn.execute(text(f"INSERT INTO ig_links_old ({LINK_COLUMNS}) SELECT {LINK_COLUMNS} FROM ig_links"))
        conn.execute(text("DROP TABLE ig_links"))
        conn.execute(text("ALTER TABLE ig_links_old RENAME TO ig_links"))
        for column in ("source", "target") if keyed else ("time", "source", "target"):
            conn.execute(text(f"CREATE INDEX ix_ig_links_{column} ON ig_links ({column})"))
        conn.execute(text(f"UPDATE ig_meta SET value = '{version}' WHERE key = 'schema_version'"))
    engine.dispose()


#: The indexes of schema 8's links.
FOLDED = {"ix_ig_links_time", "ix_ig_links_source", "ix_ig_links_target", "ix_ig_links_pair"}


def link_layout(g: IdentityGraph) -> tuple[set[str], bool]:
    """The indexes of ``ig_links`` and whether it has a primary key."""
    with g._store._connect() as conn:
        if g._store.pg:
            names = set(conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'ig_links'"
            ).scalars())
            keyed = conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.table_constraints WHERE table_schema = current_schema()"
                " AND table_name = 'ig_links' AND constraint_type = 'PRIMARY KEY'").scalar() > 0
        else:
            names = set(conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ig_links'").scalars())
            keyed = any(r[5] for r in conn.exec_driver_sql("PRAGMA table_info(ig_links)"))
        names.discard("ig_links_pkey")
        return {n for n in names if not n.startswith("sqlite_autoindex")}, keyed


def id_index_columns(g: IdentityGraph) -> dict[str, list[str]]:
    """The columns of the links' source and target indexes, in order."""
    out = {}
    with g._store._connect() as conn:
        for name in ("ix_ig_links_source", "ix_ig_links_target"):
            if g._store.pg:
                out[name] = list(conn.exec_driver_sql(
                    "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()"
                    " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
                    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                    f" WHERE c.relname = '{name}' ORDER BY k.n").scalars())
            else:
                out[name] = [r[2] for r in conn.exec_driver_sql(f"PRAGMA index_info({name})")]
    return out


#: Schema 9's covering source and target indexes.
COVERING = {"ix_ig_links_source": ["source", "target", "repeat", "pair"],
            "ix_ig_links_target": ["target", "source", "repeat", "pair"]}


def _plain(profiles: Any) -> list[tuple[str, list[str]]]:
    return sorted((p.canonical, sorted(p.ids)) for p in profiles)


def test_a_graph_made_before_schema_6_gets_its_links_copied_into_the_unkeyed_table(
    graph_url: str, tmp_path: Path
) -> None:
    """The same events into a new graph and into one whose links are made old in between:
    the same answers, unmerge included (it finds an event's links by their time)."""
    events = history(11)
    states = []
    for url, old in ((f"sqlite:///{tmp_path / 'new.db'}", False), (graph_url, True)):
        with IdentityGraph(url) as g:
            for e in events[:100]:
                g.ingest(e)
        if old:
            make_old_links(url, "5")
        with IdentityGraph(url) as g:  # opening it migrates
            assert link_layout(g) == (FOLDED, False)
            statuses = [g.ingest(e).status for e in events]
            linked = [e["messageId"] for e in events[:100] if e["type"] == "alias"]
            edits = [(_plain(r.before), _plain(r.after)) for r in map(g.unmerge, linked[:3])]
            edits.append(_plain(g.unmerge(linked[0], undo=True).after))
            states.append((statuses, edits, profiles(g), stored_links(g), g.stats().events))
    assert states[0] == states[1]
    assert len(states[0][3]) > 50


@pytest.mark.parametrize(("version", "upgrade"), [("7", "links"), ("8", "link indexes")])
def test_a_schema_7_or_8_graph_gets_the_new_links_layout_when_opened(
    graph_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    version: str, upgrade: str,
) -> None:
    """The same events into a new graph and into one whose links are made old in between:
    the same answers, one first row per pair, and the covering indexes. Schema 7's links
    are unfolded and copied in many small steps, so a pair's repeats span steps; schema
    8's keep their rows and get their source and target indexes made again."""
    monkeypatch.setattr(links, "_COPY_BATCH", 7)
    events = linked_history(300, 13, users=6, devices=8)
    states = []
    for url, old in ((f"sqlite:///{tmp_path / 'new.db'}", False), (graph_url, True)):
        with IdentityGraph(url) as g:
            first = [g.ingest(e).status for e in events[:200]]
        if old:
            make_old_links(url, version)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="identity_graph.store"):
            g = IdentityGraph(url)  # opening it upgrades
        upgraded = [r.getMessage().split(" in ")[0] for r in caplog.records if r.name == "identity_graph.store"]
        assert upgraded == ([f"upgraded the graph from schema {version} to {SCHEMA_VERSION} ({upgrade})"] if old else [])
        with g:
            assert link_layout(g) == (FOLDED, False)
            assert id_index_columns(g) == COVERING
            rows, pairs = folding(g)
            rest = [g.ingest(e).status for e in events]  # the first 200 again: nothing new
            states.append((first, rest, rows, pairs, folding(g), answers(g, events)))
    assert states[0] == states[1]
    assert states[0][2] > 2 * states[0][3]  # repeats were folded (across copy steps, from 7)


@pytest.mark.parametrize("keys", ["blake2b", "crowded"])
def test_a_graph_made_before_schema_5_is_copied_into_the_keyed_register(
    graph_url: str, tmp_path: Path, keys: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(register, "_MIGRATE_BATCH", 7)  # many batches: the copy resumes after each
    if keys == "crowded":
        crowd(monkeypatch)
    check_migration(graph_url, tmp_path, "")


def test_a_schema_3_graph_with_4k_pages_is_copied_into_the_keyed_register(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("PRAGMA page_size=4096").connection.close()  # made before session 3
    check_migration(f"sqlite:///{path}", tmp_path, " WITHOUT ROWID")


def check_migration(url_old: str, tmp_path: Path, layout: str) -> None:
    """The same events into a new graph and into one made old in between: the same answers."""
    events = history(7)
    states = []
    for url, old in ((f"sqlite:///{tmp_path / 'new.db'}", False), (url_old, True)):
        with IdentityGraph(url) as g:
            first = [g.ingest(e).status for e in events[:100]]
        if old:
            make_old(url, layout)
        with IdentityGraph(url) as g:  # opening it migrates
            rest = [g.ingest(e).status for e in events]  # the first 100 again: nothing new
            linked = next(e["messageId"] for e in events[:100] if e["type"] == "alias")
            g.unmerge(linked)  # found in the copied register
            with g._store._connect() as conn:
                columns = list(conn.exec_driver_sql("SELECT * FROM ig_events LIMIT 1").keys())
                version = conn.exec_driver_sql("SELECT value FROM ig_meta WHERE key = 'schema_version'").scalar()
                keyed = conn.exec_driver_sql("SELECT count(*) FROM ig_events WHERE key IS NOT NULL").scalar()
            assert "key" in columns and version == SCHEMA_VERSION
            assert link_layout(g) == (FOLDED, False)
            states.append((first, rest, profiles(g), g.stats().events, keyed))
    assert states[0] == states[1]
    assert states[0][3] == states[0][4] > 100
    assert set(states[0][1][:100]) == {"duplicate", "conflict"}  # the messageIds re-used with other content


def test_a_key_is_the_signed_xxh3_of_the_message_id() -> None:
    """The stored format: graphs written since schema 7 hold these keys, so the function
    may get faster but never different (a new scheme needs a migration: see the next test)."""
    import xxhash

    for m in ["m1", "0f8fad5b-d9cb-469f-a165-70867728950e", "é", "caf\udce9", ""]:
        for level in (0, 2):
            v = xxhash.xxh3_64(m.encode("utf-8", "surrogatepass"), seed=level).digest()
            assert register_key(m, level) == int.from_bytes(v, "big", signed=True)
    assert register_key("") == 0x2D06800538D394C2  # XXH3_64bits of no input, seed 0: the reference test vector


def blake2b_key(message_id: str, level: int = 0) -> int:
    """The register key of schemas 5 and 6."""
    import hashlib

    data = message_id.encode("utf-8", "surrogatepass")
    salt = {"salt": level.to_bytes(8, "big")} if level else {}
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, **salt).digest(), "big", signed=True)


def make_blake2b_register(url: str) -> None:
    """Give a new graph's register the keys and key index of schemas 5 and 6 (and its
    links their layout of schema 6)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT message_id FROM ig_events")).scalars().all()
        conn.execute(text("DROP INDEX ux_ig_events_xxh3"))
        for m in rows:
            conn.execute(text("UPDATE ig_events SET key = :k WHERE message_id = :m"), {"k": blake2b_key(m), "m": m})
        conn.execute(text("CREATE UNIQUE INDEX ux_ig_events_key ON ig_events (key)"))
    engine.dispose()
    make_old_links(url, "6")  # as a schema-6 graph's were


def register_keys(g: IdentityGraph) -> dict[str, int]:
    with g._store._connect() as conn:
        return dict(conn.exec_driver_sql("SELECT message_id, key FROM ig_events").all())


@pytest.mark.parametrize("keys", ["xxh3", "crowded"])
def test_a_register_of_blake2b_keys_gets_the_new_keys_when_opened(
    graph_url: str, tmp_path: Path, keys: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema-6 graph (blake2b keys) and a new one, given the same events: the same
    answers after the upgrade; every messageId found under its new key, none lost."""
    monkeypatch.setattr(register, "_MIGRATE_BATCH", 7)  # many batches from the streamed copy
    events = history(5)
    states = []
    for url, old in ((f"sqlite:///{tmp_path / 'new.db'}", False), (graph_url, True)):
        with IdentityGraph(url) as g:
            first = [g.ingest(e).status for e in events[:100]]
            before = register_keys(g)
        if old:
            make_blake2b_register(url)
            if keys == "crowded":  # from here on: the new keys collide, many levels deep
                crowd(monkeypatch)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="identity_graph.store"):
            g = IdentityGraph(url)  # opening it migrates
        upgraded = [r.getMessage() for r in caplog.records if r.name == "identity_graph.store"]
        assert [m.split(" in ")[0] for m in upgraded] == (
            [f"upgraded the graph from schema 6 to {SCHEMA_VERSION} (register and links)"] if old else [])
        with g:
            after = register_keys(g)
            rest = [g.ingest(e).status for e in events]  # the first 100 again: nothing new
            linked = next(e["messageId"] for e in events[:100] if e["type"] == "alias")
            g.unmerge(linked)  # found under its new key
            with g._store._connect() as conn:
                version = conn.exec_driver_sql("SELECT value FROM ig_meta WHERE key = 'schema_version'").scalar()
                tx = {t for m, t in conn.exec_driver_sql("SELECT message_id, tx FROM ig_events") if m in before}
            assert version == SCHEMA_VERSION
            if old:
                assert set(after) == set(before) and tx == {0}
                if keys == "xxh3":
                    assert all(after[m] == register_key(m) != blake2b_key(m) for m in after)
                else:
                    assert sorted(after.values()) == sorted(set(after.values()))
                    assert max(after.values()) >= 8  # sequences went past their first levels
            states.append((first, rest, profiles(g), g.stats().events))
        monkeypatch.undo()
        monkeypatch.setattr(register, "_MIGRATE_BATCH", 7)
    assert states[0] == states[1]
    assert set(states[0][1][:100]) == {"duplicate", "conflict"}


def test_the_command_line_says_when_it_upgraded_a_graph(tmp_path: Path) -> None:
    """A real process on a schema-6 graph: one stderr line says what was upgraded, once."""
    import re
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with IdentityGraph(url) as g:
        g.ingest(identify(1, "m1", user="u1", anon="a1"))
    make_blake2b_register(url)
    runs = [subprocess.run([sys.executable, "-m", "identity_graph", "--db", url, "lookup", "a1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0] and runs[0].stdout == runs[1].stdout != ""
    assert re.fullmatch(rf"identity-graph: upgraded the graph from schema 6 to {SCHEMA_VERSION} \(register and links\)"
                        r" in \d+\.\d s\n", runs[0].stderr), runs[0].stderr
    assert runs[1].stderr == ""


def test_a_graph_of_a_newer_schema_is_refused_and_left_as_it_is(graph_url: str, tmp_path: Path) -> None:
    """Opening it would mean reading a layout this version does not know (an older one
    would have taken schema 7's keys for its own and re-applied every event)."""
    from identity_graph import StoreError

    with IdentityGraph(graph_url) as g:
        g.ingest(identify(1, "m1", user="u1", anon="a1"))
        where = repr(g._store.engine.url)
    newer = str(int(SCHEMA_VERSION) + 1)
    engine = create_engine(graph_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE ig_meta SET value = '{newer}' WHERE key = 'schema_version'"))
    with pytest.raises(StoreError) as caught:
        IdentityGraph(graph_url)
    assert str(caught.value) == (
        f"the graph in {where} was written by a newer identity-graph (schema {newer};"
        f" this one knows schema {SCHEMA_VERSION}): upgrade identity-graph to open it")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT value FROM ig_meta WHERE key = 'schema_version'")).scalar() == newer
        assert conn.execute(text("SELECT count(*) FROM ig_events")).scalar() == 1
    engine.dispose()
