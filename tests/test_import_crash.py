"""An import killed with SIGKILL at any point, then re-run, ends with exactly the graph of an
uninterrupted import: each batch is one transaction, and re-running skips what landed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from conftest import PostgresSchemas
import identity_graph
from identity_graph import IdentityGraph, MergeRules
from test_importer import collision_history, jsonl, realistic_history, stored_links

pytestmark = pytest.mark.slow

RULES = MergeRules(max_profile_ids=12)
BATCH = 50
ENGINE_ROOT = str(Path(identity_graph.__file__).resolve().parents[1])


def history(n_realistic: int, n_collisions: int) -> list[dict[str, Any]]:
    """A realistic export with a collision-heavy history woven into it, chunk by chunk."""
    realistic = realistic_history(n_realistic)
    collisions = collision_history(17, n_collisions)
    out: list[dict[str, Any]] = []
    step = max(1, len(realistic) // max(1, len(collisions) // 20))
    c = 0
    for i in range(0, len(realistic), step):
        out.extend(realistic[i : i + step])
        out.extend(collisions[c : c + 20])
        c += 20
    out.extend(collisions[c:])
    return out


def start_import(url: str, path: Path) -> subprocess.Popen[bytes]:
    # The child imports the very identity_graph this process tests.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ENGINE_ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "identity_graph", "--db", url, "import", str(path), "--quiet", "--batch-size", str(BATCH)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=path.parent,  # `-m` puts the cwd first
    )


class EventCounter:
    """Counts the events a graph has stored, from outside the importing process."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def __call__(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM ig_events")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()


def crash_and_resume(url: str, path: Path, total: int, full_run: float, seed: int) -> list[tuple[str, int | None, int, int]]:
    """Run the import, killing it at several points (after random delays, in shares of
    ``full_run``, the seconds an uninterrupted run takes, and when the graph has reached
    given shares of the ``total`` events), then once more to completion.

    Returns, per run: (plan, exit code, events stored before, events stored after).
    """
    rng = random.Random(seed)
    plan: list[tuple[str, float]] = [
        ("delay", rng.uniform(0.05, 0.25) * full_run),   # usually while starting up
        ("share", 0.10),
        ("delay", rng.uniform(0.40, 0.55) * full_run),   # anywhere, mostly mid-run
        ("share", 0.50),
        ("share", 0.62),
        ("share", 0.75),
        ("share", 0.88),
    ]
    count = EventCounter(url)
    runs = []
    try:
        for kind, value in plan:
            before = count()
            proc = start_import(url, path)
            if kind == "delay":
                time.sleep(value)
            else:
                target = max(int(value * total), before + total // 25)
                deadline = time.monotonic() + 60
                while proc.poll() is None and count() < target and time.monotonic() < deadline:
                    time.sleep(0.003)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            runs.append((f"{kind} {value:.2f}", proc.returncode, before, count()))
        before = count()
        proc = start_import(url, path)
        out, err = proc.communicate(timeout=120)
        assert (proc.returncode, err) == (0, b""), err.decode()
        runs.append(("to completion", proc.returncode, before, count()))
    finally:
        count.close()
    return runs


def check_crash_recovery(url: str, reference_url: str, path: Path, seed: int) -> None:
    IdentityGraph(reference_url, rules=RULES).close()
    started = time.monotonic()
    proc = start_import(reference_url, path)
    _, err = proc.communicate(timeout=120)
    full_run = time.monotonic() - started
    assert (proc.returncode, err) == (0, b""), err.decode()
    with IdentityGraph(reference_url) as ref:
        expected_map, expected_links = dict(ref.identities()), stored_links(ref)
        total = ref.stats().events

    IdentityGraph(url, rules=RULES).close()  # the schema and the rules, before the first kill
    runs = crash_and_resume(url, path, total, full_run, seed)

    killed = [r for r in runs if r[1] == -signal.SIGKILL]
    mid_run = [r for r in killed if 0 < r[3] < total and r[3] > r[2]]
    assert len(killed) >= 5, runs
    assert len(mid_run) >= 3, runs
    assert runs[-1][3] == total, runs
    with IdentityGraph(url) as g:
        assert g.rules == RULES
        got_map, got_links = dict(g.identities()), stored_links(g)
    assert len(expected_map) > 500
    assert got_map == expected_map
    assert got_links == expected_links


def test_a_killed_sqlite_import_resumes_to_the_uninterrupted_graph(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(jsonl(history(14_000, 2_000)))
    check_crash_recovery(f"sqlite:///{tmp_path / 'crashed.db'}", f"sqlite:///{tmp_path / 'reference.db'}", path, seed=1)


@pytest.mark.postgres
def test_a_killed_postgresql_import_resumes_to_the_uninterrupted_graph(pg_schemas: PostgresSchemas, tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(jsonl(history(3_500, 800)))
    check_crash_recovery(pg_schemas.new_url(), pg_schemas.new_url(), path, seed=2)
