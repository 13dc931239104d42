"""Four processes writing one graph at once end with exactly the single-process map."""

from __future__ import annotations

import multiprocessing
import random
from typing import Any

import pytest

from helpers import alias, ev, identify
from identity_graph import IdentityGraph, MergeRules

RULES = MergeRules(max_profile_ids=12)


def history(seed: int, n: int = 600) -> list[dict[str, Any]]:
    """A collision-heavy history: few users, shared devices, alias chains, junk."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(25)] + ["null"]
    devices = [f"d{i}" for i in range(40)]
    out = []
    for i in range(n):
        t = rng.randrange(0, 3600)
        msg = f"m{i:04d}"
        kind = rng.random()
        if kind < 0.5:
            out.append(identify(t, msg, user=rng.choice(users), anon=rng.choice(devices)))
        elif kind < 0.7:
            out.append(alias(t, msg, rng.choice(users + devices), rng.choice(users)))
        elif kind < 0.85:
            out.append(ev("track", t, msg, userId=rng.choice(users)))
        else:
            out.append(ev("page", t, msg, anonymousId=rng.choice(devices), userId=rng.choice(users)))
    return out


def _worker(url: str, events: list[dict[str, Any]], seed: int) -> None:
    rng = random.Random(seed)
    with IdentityGraph(url, rules=RULES) as g:
        i = 0
        while i < len(events):
            if rng.random() < 0.5:
                g.ingest(events[i])
                i += 1
            else:
                size = rng.randint(2, 30)
                g.ingest_many(events[i : i + size])
                i += size


def run_concurrently(url: str, seed: int, processes: int = 4) -> dict[str, str]:
    events = history(seed)
    rng = random.Random(seed)
    rng.shuffle(events)
    quarters = [events[i::processes] for i in range(processes)]
    IdentityGraph(url, rules=RULES).close()  # create the schema before the race starts
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, q, seed + k)) for k, q in enumerate(quarters)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"writer exited with {p.exitcode}"
    with IdentityGraph(url) as g:
        return dict(g.identities())


def single_process_map(seed: int) -> dict[str, str]:
    with IdentityGraph("sqlite://", rules=RULES) as g:
        for event in sorted(history(seed), key=lambda e: (e["timestamp"], e["messageId"])):
            g.ingest(event)
        return dict(g.identities())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_four_processes_on_one_sqlite_file(tmp_path, seed: int) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert run_concurrently(url, seed) == single_process_map(seed)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("seed", [1, 2])
def test_four_processes_on_one_postgres_graph(pg_schemas, seed: int) -> None:
    url = pg_schemas.new_url()
    assert run_concurrently(url, seed) == single_process_map(seed)
