"""What users write today: networkx connected components + SQLAlchemy ORM writes.

    python benchmarks/naive_networkx.py EVENTS.jsonl OUT.db     # prints a JSON summary on stdout

The usual hand-rolled identity stitching: every ID is a node, every ``previousId -> userId``
and ``anonymousId -> userId`` pair an edge (blocked values such as ``"null"`` dropped, and
nothing else: no known-ID protection, no size cap, no event-time order, no messageId
dedup); ``networkx.connected_components``; each component's canonical is its smallest ID
seen as a ``userId`` (else its smallest ID); the map is written with the ORM
(``session.add_all`` of mapped objects, one commit) into a fresh SQLite file.

Its map differs from the engine's (shared devices fuse people here); only its time is
compared.
"""

from __future__ import annotations

import json
import os
import sys
import time

import networkx as nx
import orjson
from _blocked import BLOCKED
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column



class Base(DeclarativeBase):
    pass


class Identity(Base):
    __tablename__ = "identities"
    id: Mapped[str] = mapped_column(String(1024), primary_key=True)
    canonical: Mapped[str] = mapped_column(String(1024), index=True)


def clean(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    value = str(value)
    if not value.strip() or value.lower() in BLOCKED:
        return None
    return value


def main(argv: list[str]) -> int:
    path, db_path = argv
    if os.path.exists(db_path):
        os.remove(db_path)
    t0 = time.perf_counter()
    graph = nx.Graph()
    users: set[str] = set()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            event = orjson.loads(line)
            user = clean(event.get("userId"))
            anon = clean(event.get("anonymousId"))
            prev = clean(event.get("previousId")) if event.get("type") == "alias" else None
            for x in (user, anon, prev):
                if x is not None:
                    graph.add_node(x)
            if user is not None:
                users.add(user)
                if anon is not None and anon != user:
                    graph.add_edge(anon, user)
                if prev is not None and prev != user:
                    graph.add_edge(prev, user)
    t1 = time.perf_counter()
    mapping: dict[str, str] = {}
    for component in nx.connected_components(graph):
        known = [x for x in component if x in users]
        canonical = min(known) if known else min(component)
        for x in component:
            mapping[x] = canonical
    t2 = time.perf_counter()
    engine = create_engine(f"sqlite:///{db_path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Identity(id=i, canonical=c) for i, c in mapping.items()])
        session.commit()
    engine.dispose()
    t3 = time.perf_counter()
    print(json.dumps({"events": n, "ids": len(mapping), "profiles": len(set(mapping.values())),
                      "edges": graph.number_of_edges(),
                      "phases": {"read+graph": round(t1 - t0, 3), "components": round(t2 - t1, 3),
                                 "orm write": round(t3 - t2, 3)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
