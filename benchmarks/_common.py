"""Helpers shared by the benchmark scripts: fresh databases, machine notes, formatting."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote


def backend_name(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@contextmanager
def fresh_graph_url(db_url: str, label: str = "bench", pg_options: str = "") -> Iterator[str]:
    """A URL for a brand-new, empty graph; removed afterwards.

    ``db_url``: ``sqlite`` (a new file in a temporary directory) or a PostgreSQL server URL
    such as ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` (a new schema, reached
    with ``?options=-csearch_path%3D<schema>``, dropped afterwards). ``pg_options``: more
    libpq ``options`` for the graph's connections, e.g. ``-cplan_cache_mode=force_custom_plan``.
    """
    if db_url in ("sqlite", "sqlite:"):
        tmp = tempfile.mkdtemp(prefix=f"ig-{label}-")
        try:
            yield f"sqlite:///{os.path.join(tmp, 'graph.db')}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if not db_url.startswith(("postgresql", "postgres:")):
        raise SystemExit(f"--db-url must be 'sqlite' or a PostgreSQL URL, not {db_url!r}")
    from sqlalchemy import create_engine, text

    base = db_url
    if base.startswith(("postgresql://", "postgres://")):
        base = "postgresql+psycopg://" + base.split("://", 1)[1]
    schema = f"igbench_{label}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in base else "?"
        try:
            options = f"-csearch_path={schema}" + (f" {pg_options}" if pg_options else "")
            yield f"{base}{sep}options={quote(options)}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def engine_version() -> str:
    """The engine measured: git commit, whether identity_graph/ differs from it, and a hash
    of the identity_graph/*.py files this process imported (the engine changes often)."""
    import identity_graph

    pkg = os.path.dirname(os.path.abspath(identity_graph.__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    root = os.path.dirname(pkg)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "identity_graph"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        where = f"commit {head}" + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        where = f"at {pkg} (not a git checkout)"
    return f"engine {where} (identity_graph/*.py sha256 {digest.hexdigest()[:10]})"


def machine_note() -> str:
    import sqlite3

    import sqlalchemy

    return (f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
            f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {platform.machine()}")


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "inf"
