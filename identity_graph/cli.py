"""How does a person drive it? The click commands, each a thin wrapper over one library call.

Imports stay lazy where they cost start-up time: a lookup must be a fast process.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Iterator

import click

from . import __version__
from .errors import IdentityGraphError


def _open(ctx: click.Context) -> Any:
    from .graph import IdentityGraph

    try:
        graph = IdentityGraph(ctx.obj["db"])
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.call_on_close(graph.close)
    return graph


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="IDENTITY_GRAPH_DB", default="sqlite:///identity-graph.db", show_default=True,
              help="Database URL (SQLite file or postgresql+psycopg://...). Env: IDENTITY_GRAPH_DB.")
@click.version_option(__version__, prog_name="identity-graph")
@click.pass_context
def cli(ctx: click.Context, db: str) -> None:
    """Resolve Segment-spec analytics IDs into people.

    \b
    Example:
        identity-graph ingest examples/sample-history.jsonl
        identity-graph lookup jen@email.com
    """
    ctx.ensure_object(dict)
    ctx.obj["db"] = db


def _read_json_lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, Any]]:
    import orjson

    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, _BadLine(f"{name}:{number}: invalid JSON ({exc})")


class _BadLine:
    def __init__(self, message: str) -> None:
        self.message = message


@cli.command()
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--verbose", "-v", is_flag=True, help="Print one result line per event.")
@click.pass_context
def ingest(ctx: click.Context, file: IO[bytes], verbose: bool) -> None:
    """Ingest JSON-lines events one by one from FILE (or stdin), the live path.

    \b
    Example:
        tail -f events.jsonl | identity-graph ingest -
    """
    from .errors import InvalidEvent

    graph = _open(ctx)
    name = getattr(file, "name", "-")
    counts = {"applied": 0, "duplicate": 0, "blocked": 0, "invalid": 0}
    for number, event in _read_json_lines(file, name):
        if isinstance(event, _BadLine):
            counts["invalid"] += 1
            click.echo(event.message, err=True)
            continue
        try:
            result = graph.ingest(event)
        except InvalidEvent as exc:
            counts["invalid"] += 1
            click.echo(f"{name}:{number}: {exc}", err=True)
            continue
        counts[result.status] += 1
        if verbose:
            links = ", ".join(
                f"{l.source} -> {l.target} {l.outcome}" + (f" ({l.reason})" if l.reason else "")
                for l in result.links
            )
            click.echo(f"{name}:{number}: {result.status}" + (f": {links}" if links else ""))
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


@cli.command()
@click.argument("id_")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@click.pass_context
def lookup(ctx: click.Context, id_: str, as_json: bool) -> None:
    """Show the profile of ID: the canonical ID first, then every ID (canonical marked).

    \b
    Example:
        identity-graph lookup jen@email.com --json
    """
    graph = _open(ctx)
    profile = graph.profile(id_)
    if profile is None:
        if graph.rules.is_blocked(id_):
            raise click.ClickException(f"{id_!r} is a blocked value, never an ID (see the rules)")
        raise click.ClickException(f"unknown ID {id_!r}")
    ids = sorted(profile.ids)
    if as_json:
        import json

        click.echo(json.dumps({"id": id_, "canonical": profile.canonical, "ids": ids}, ensure_ascii=False))
        return
    click.echo(profile.canonical)
    for member in ids:
        click.echo(f"{member} *" if member == profile.canonical else member)


def main() -> None:
    cli(prog_name="identity-graph")


if __name__ == "__main__":
    sys.exit(main())
