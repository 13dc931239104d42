"""Shared fixtures: a fresh graph on SQLite (a temporary file) and on PostgreSQL (its own schema).

PostgreSQL tests read the server URL from ``IDENTITY_GRAPH_TEST_POSTGRES_URL``. Without it
they skip, except under ``CI=true``, where a missing server is a failure: CI must run them.
"""

from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from identity_graph import IdentityGraph, MergeRules

PG_ENV = "IDENTITY_GRAPH_TEST_POSTGRES_URL"


def postgres_base_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} is not set under CI=true: the PostgreSQL tests must run")
        pytest.skip(f"{PG_ENV} not set")
    return url


class PostgresSchemas:
    """Creates throw-away schemas on the test server and URLs that point into them."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.engine = create_engine(base_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                    isolation_level="AUTOCOMMIT")
        self.schemas: list[str] = []

    def new_url(self) -> str:
        schema = "igt_" + uuid.uuid4().hex[:16]
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        self.schemas.append(schema)
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}options={quote(f'-csearch_path={schema}')}"

    def drop_all(self) -> None:
        with self.engine.connect() as conn:
            for schema in self.schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.schemas.clear()
        self.engine.dispose()


@pytest.fixture
def pg_schemas() -> Iterator[PostgresSchemas]:
    schemas = PostgresSchemas(postgres_base_url())  # type: ignore[arg-type]
    yield schemas
    schemas.drop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def graph_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A URL for a brand-new, empty graph, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'graph.db'}"
    else:
        schemas = PostgresSchemas(postgres_base_url())  # type: ignore[arg-type]
        yield schemas.new_url()
        schemas.drop_all()


@pytest.fixture
def make_graph(graph_url: str) -> Iterator[Callable[..., IdentityGraph]]:
    """Open the test's graph (same URL each call); closes every graph it opened."""
    opened: list[IdentityGraph] = []

    def make(rules: MergeRules | None = None) -> IdentityGraph:
        g = IdentityGraph(graph_url, rules=rules)
        opened.append(g)
        return g

    yield make
    for g in opened:
        g.close()


@pytest.fixture
def graph(make_graph: Callable[..., IdentityGraph]) -> IdentityGraph:
    return make_graph()
