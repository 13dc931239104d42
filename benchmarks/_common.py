"""Helpers shared by the benchmark scripts: fresh databases, machine notes, formatting."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote


def backend_name(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@contextmanager
def fresh_graph_url(db_url: str, label: str = "bench") -> Iterator[str]:
    """A URL for a brand-new, empty graph; removed afterwards.

    ``db_url``: ``sqlite`` (a new file in a temporary directory) or a PostgreSQL server URL
    such as ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` (a new schema, reached
    with ``?options=-csearch_path%3D<schema>``, dropped afterwards).
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
            yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def machine_note() -> str:
    import sqlite3

    import sqlalchemy

    return (f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
            f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {platform.machine()}")


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "inf"
