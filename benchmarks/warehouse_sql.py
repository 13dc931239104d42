"""What users hand-roll in a warehouse: identity stitching in SQL, DuckDB standing in for it.

    python benchmarks/warehouse_sql.py EVENTS.jsonl OUT.duckdb   # prints a JSON summary on stdout

The second thing users do today besides a networkx script (the first: ``naive_networkx.py``):
load the raw events into a columnar SQL engine and stitch them there. DuckDB is the one a
user can run on this machine; it reads JSON lines in C++ on every core (``read_json`` with
only the four fields stitching needs). A hosted warehouse adds load jobs and per-query
latency to the same plan, so this is the warehouse's best case. A line DuckDB cannot read
is dropped (``ignore_errors``), as a warehouse load job would skip it; the generated
histories have none.

The same graph and map as ``naive_networkx.py``, so that the two maps can be compared
(``bench_import.py`` does): every ``previousId -> userId`` (alias) and ``anonymousId -> userId``
pair an edge, blocked values dropped, nothing else (no known-ID protection, no size cap, no
event-time order, no messageId dedup); the components found by label propagation (each ID
takes the smallest label among itself and its neighbours, repeated in SQL until no label
changes: the usual warehouse formulation, one query per round); the canonical of a component
its smallest ID seen as a ``userId``, else its smallest ID. The map is written to the
``identities`` table of a fresh DuckDB file, the warehouse itself.

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import json
import os
import sys
import time

import duckdb
from _blocked import BLOCKED


def clean(field: str) -> str:
    """SQL for the ID in the JSON column ``field``, or NULL where ``naive_networkx.clean`` gives
    None: missing, a JSON null or boolean, blank, or blocked (compared lower-cased). DuckDB
    gives a number's text, as ``str`` does."""
    blocked = ", ".join(f"'{b}'" for b in sorted(BLOCKED))
    text = f"{field} ->> '$'"
    return (f"CASE WHEN json_type({field}) IN ('BOOLEAN', 'NULL') OR trim({text}) = '' "
            f"OR lower({text}) IN ({blocked}) THEN NULL ELSE {text} END")


def main(argv: list[str]) -> int:
    path, db_path = argv
    for p in (db_path, db_path + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    t0 = time.perf_counter()
    con = duckdb.connect(db_path)
    con.execute(f"""
        CREATE TEMP TABLE ev AS
        SELECT {clean('userId')} AS u,
               {clean('anonymousId')} AS a,
               CASE WHEN type = 'alias' THEN {clean('previousId')} END AS p
        FROM read_json(?, format = 'newline_delimited', ignore_errors = true,
                       columns = {{'type': 'VARCHAR', 'userId': 'JSON', 'anonymousId': 'JSON',
                                  'previousId': 'JSON'}})
    """, [path])
    events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    con.execute("""
        CREATE TEMP TABLE nodes AS
        SELECT id, bool_or(is_user) AS is_user FROM (
            SELECT u AS id, true AS is_user FROM ev WHERE u IS NOT NULL
            UNION ALL SELECT a, false FROM ev WHERE a IS NOT NULL
            UNION ALL SELECT p, false FROM ev WHERE p IS NOT NULL) GROUP BY id
    """)
    con.execute("""
        CREATE TEMP TABLE edges AS
        SELECT DISTINCT x, y FROM (
            SELECT a AS x, u AS y FROM ev WHERE u IS NOT NULL AND a IS NOT NULL AND a <> u
            UNION ALL SELECT p, u FROM ev WHERE u IS NOT NULL AND p IS NOT NULL AND p <> u)
    """)
    con.execute("CREATE TEMP TABLE both_ways AS SELECT x, y FROM edges UNION ALL SELECT y, x FROM edges")
    t1 = time.perf_counter()
    con.execute("CREATE TEMP TABLE label AS SELECT id, id AS l FROM nodes")
    rounds = 0
    while True:
        rounds += 1
        con.execute("""
            CREATE OR REPLACE TEMP TABLE next AS
            SELECT label.id, least(label.l, coalesce(m.l, label.l)) AS l
            FROM label LEFT JOIN (
                SELECT b.x AS id, min(n.l) AS l FROM both_ways b JOIN label n ON n.id = b.y GROUP BY b.x
            ) m ON m.id = label.id
        """)
        changed = con.execute(
            "SELECT count(*) FROM next JOIN label USING (id) WHERE next.l <> label.l").fetchone()[0]
        con.execute("DROP TABLE label")
        con.execute("ALTER TABLE next RENAME TO label")
        if changed == 0:
            break
    t2 = time.perf_counter()
    con.execute("""
        CREATE TABLE identities AS
        SELECT label.id, coalesce(c.known, c.any) AS canonical
        FROM label JOIN (
            SELECT label.l, min(CASE WHEN nodes.is_user THEN nodes.id END) AS known, min(nodes.id) AS any
            FROM label JOIN nodes USING (id) GROUP BY label.l
        ) c USING (l)
    """)
    ids, profiles = con.execute("SELECT count(*), count(DISTINCT canonical) FROM identities").fetchone()
    edges = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    con.close()
    t3 = time.perf_counter()
    print(json.dumps({"events": events, "ids": ids, "profiles": profiles, "edges": edges, "rounds": rounds,
                      "phases": {"read+edges": round(t1 - t0, 3), "components": round(t2 - t1, 3),
                                 "write": round(t3 - t2, 3)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
