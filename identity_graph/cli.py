"""How does a person drive it? The click commands, each a thin wrapper over one library call.

Imports stay lazy where they cost start-up time: a lookup must be a fast process.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import click

from . import __version__
from .errors import IdentityGraphError


class _Notes(logging.Handler):
    """The library's notes (INFO: a graph upgraded when opened) as lines of the command's
    stderr; looked up when written, so that a test runner's swapped stream gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"identity-graph: {record.getMessage()}", err=True)


_NOTES = _Notes(logging.INFO)


def _open(ctx: click.Context) -> Any:
    from .graph import IdentityGraph

    logger = logging.getLogger("identity_graph")
    if _NOTES not in logger.handlers:
        logger.addHandler(_NOTES)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        graph = IdentityGraph(ctx.obj["db"])
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.call_on_close(graph.close)
    return graph


class _Commands(click.Group):
    """The command group; a library error that no command turned into a message of its own
    (a database failing mid-read, say) still ends as one ``Error:`` line and exit 1, never a
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IdentityGraphError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


@cli.command()
@click.argument("path", metavar="[FILE|-]", default="-")
@click.option("--verbose", "-v", is_flag=True, help="Print one result line per event.")
@click.pass_context
def ingest(ctx: click.Context, path: str, verbose: bool) -> None:
    """Ingest JSON-lines events one by one from FILE (or stdin), the live path.

    \b
    Example:
        tail -f events.jsonl | identity-graph ingest -
    """
    from .errors import InvalidEvent

    if path == "-":
        file: IO[bytes] = click.open_file("-", "rb")
    else:
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed by the context below
        except OSError as exc:
            raise click.ClickException(f"{path}: cannot read ({exc.strerror})") from None
        ctx.call_on_close(file.close)
    from .events import event_from_line
    from .readers import decode_line

    graph = _open(ctx)
    counts = {"applied": 0, "duplicate": 0, "blocked": 0, "invalid": 0}
    # Line by line as it arrives (tail -f), decoded as `import` decodes JSON lines (its
    # fast path included: both must take and refuse the same lines).
    items = (item for number, line in enumerate(file, 1) for item in decode_line(path, number, line, event_from_line))
    for item in items:
        where = item.location
        if item.error is not None:
            counts["invalid"] += 1
            click.echo(f"{where}: {item.error}", err=True)
            continue
        try:
            result = graph.ingest(item.value)
        except InvalidEvent as exc:
            counts["invalid"] += 1
            click.echo(f"{where}: {exc}", err=True)
            continue
        if result.status == "conflict":
            from .results import CONFLICT_REASON

            click.echo(f"{where}: messageId: {CONFLICT_REASON} ({result.message_id!r})", err=True)
        counts[result.status] = counts.get(result.status, 0) + 1
        if verbose:
            links = ", ".join(
                f"{l.source} -> {l.target} {l.outcome}" + (f" ({l.reason})" if l.reason else "")
                for l in result.links
            )
            click.echo(f"{where}: {result.status}" + (f": {links}" if links else ""))
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


SHOWN_ISSUES = 10


@cli.command(name="import")
@click.argument("paths", nargs=-1, required=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--errors", "errors_file", type=click.File("w", encoding="utf-8", lazy=True),
              help="Write every rejected event, with its raw text, to FILE as JSON lines.")
@click.option("--strict", is_flag=True, help="Stop at the first invalid event (exit 1); what came before stays.")
# The figures are importer.DEFAULT_IMPORT_BATCH and MAX_IMPORT_BATCH, written out: importing the
# importer here would slow every `lookup` (tests/test_import_cli.py checks that they agree).
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Events per transaction. Default: 500,000; on SQLite growing with the graph to 2,000,000"
                   " (an eighth of the events it holds).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def import_(ctx: click.Context, paths: tuple[str, ...], quiet: bool, errors_file: IO[str] | None,
            strict: bool, batch_size: int | None, as_json: bool) -> None:
    """Import historical events from PATHS: files, folders, or - for stdin.

    JSON lines, JSON arrays and Segment batch envelopes, any of them gzipped; the format
    is detected by content. Invalid events are skipped and reported as FILE:LINE: reason.
    Re-running an import changes nothing that already landed.

    \b
    Example:
        identity-graph --db sqlite:///graph.db import exports/2024-05/ --errors rejected.jsonl
    """
    from .importer import StrictImportStopped, import_events, parallel_pays_off
    from .readers import SourceError

    graph = _open(ctx)
    shown = [0]

    def on_issue(issue: Any) -> None:
        if shown[0] < SHOWN_ISSUES:
            click.echo(str(issue), err=True)
        shown[0] += 1
        if errors_file is not None:
            import json

            errors_file.write(json.dumps(issue.to_dict(), ensure_ascii=False) + "\n")

    bar = None
    last = [0]

    def on_progress(p: Any) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=p.bytes_total, label="importing", file=sys.stderr,
                                    item_show_func=lambda text: text, show_eta=True)
            bar.__enter__()
        bar.update(p.bytes_done - last[0], f"{p.events:,} events, {p.events_per_second:,.0f}/s")
        last[0] = p.bytes_done

    show_progress = not quiet and sys.stderr.isatty() and "-" not in paths
    try:
        summary = import_events(graph, paths, batch_size=batch_size, strict=strict, on_issue=on_issue,
                                on_progress=on_progress if show_progress else None,
                                parallel=parallel_pays_off(paths))
    except StrictImportStopped as stop:
        raise click.ClickException(
            f"{stop.issue} (--strict: stopped here; the {stop.summary.applied:,} events before it were imported)"
        ) from None
    except (SourceError, IdentityGraphError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if shown[0] > SHOWN_ISSUES:
        more = f"{shown[0] - SHOWN_ISSUES:,} more rejected events"
        click.echo(f"... and {more}" + (" (all in the --errors file)" if errors_file else " (use --errors FILE to keep them all)"),
                   err=True)
    if as_json:
        import json

        click.echo(json.dumps(summary.to_dict()))
        return
    refused = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.links_refused.items()))
    click.echo(f"imported {summary.files} file{'s' if summary.files != 1 else ''}: {summary.events:,} events"
               f" in {summary.elapsed:.1f} s ({summary.events_per_second:,.0f} events/s)")
    click.echo(f"  applied {summary.applied:,}, duplicates {summary.duplicates:,}, invalid {summary.invalid:,},"
               f" blocked {summary.blocked:,}" + (f", conflicts {summary.conflicts:,}" if summary.conflicts else ""))
    click.echo(f"  links: {summary.links_merged:,} merged, {summary.links_together:,} together,"
               f" {summary.links_refused_total:,} refused" + (f" ({refused})" if refused else ""))
    click.echo(f"  new IDs {summary.new_ids:,}, profiles touched {summary.profiles_touched:,}")


# ignore_unknown_options: an ID may start with "-" ("-1", "-x9"); it is still an ID.
@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("id_", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@click.option("--as-of", "as_of", metavar="TIME",
              help="The profile as it stood at this event time (ISO-8601; no offset means UTC).")
@click.pass_context
def lookup(ctx: click.Context, id_: str, as_json: bool, as_of: str | None) -> None:
    """Show the profile of ID: the canonical ID first, then every ID (canonical marked).

    \b
    Example:
        identity-graph lookup jen@email.com --json
        identity-graph lookup jen@email.com --as-of 2024-05-01T00:00:00Z
    """
    when = _parse_as_of(as_of) if as_of is not None else None
    graph = _open(ctx)
    profile = graph.profile(id_, as_of=when) if when is not None else graph.profile(id_)
    if profile is None:
        if graph.rules.is_blocked(id_):
            raise click.ClickException(_blocked_reason(id_))
        if when is not None and graph.resolve(id_) is not None:
            raise click.ClickException(f"{id_!r} had not been seen by {as_of}")
        raise click.ClickException(f"unknown ID {id_!r}")
    ids = sorted(profile.ids)
    if as_json:
        import json

        click.echo(json.dumps({"id": id_, "canonical": profile.canonical, "ids": ids}, ensure_ascii=False))
        return
    click.echo(profile.canonical)
    for member in ids:
        click.echo(f"{member} *" if member == profile.canonical else member)


def _parse_as_of(value: str) -> Any:
    from .errors import InvalidEvent
    from .events import parse_time, time_to_datetime

    try:
        return time_to_datetime(parse_time(value, "--as-of"))
    except InvalidEvent as exc:
        raise click.BadParameter(exc.reason, param_hint="'--as-of'") from None


def _blocked_reason(value: str) -> str:
    """Why the rules never take ``value`` as an ID (rule 2)."""
    if not value.strip():
        return f"{value!r} is blank, never an ID"
    return f"{value!r} is a blocked value, never an ID (a placeholder clients send; see `identity-graph rules`)"


def _describe(graph: Any, result: Any, values: tuple[str, ...]) -> list[str]:
    from .rules import REASONS

    blocked = [_blocked_reason(v) for v in dict.fromkeys(values) if graph.rules.is_blocked(v)]
    if result.status != "applied":
        return [f"{result.status}: nothing changed"] + blocked
    lines = []
    for link in result.links:
        head = f"{link.source} -> {link.target}"
        if link.outcome == "merged":
            lines.append(f"{head}: merged into {graph.resolve(link.target)}")
        elif link.outcome == "together":
            lines.append(f"{head}: already together in {graph.resolve(link.target)}")
        else:
            lines.append(f"{head}: refused, {REASONS.get(link.reason, link.reason)} ({link.reason})")
    if not lines:
        lines = ["applied: no link (the two IDs are the same)" if not blocked else "applied: no link"]
    return lines + blocked


def _ingest_one(ctx: click.Context, call: str, *args: str) -> None:
    graph = _open(ctx)
    try:
        result = getattr(graph, call)(*args)
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    for line in _describe(graph, result, args):
        click.echo(line)


@cli.command()
@click.argument("previous_id")
@click.argument("user_id")
@click.pass_context
def alias(ctx: click.Context, previous_id: str, user_id: str) -> None:
    """Merge PREVIOUS_ID into USER_ID with an alias event timestamped now.

    \b
    Example:
        identity-graph alias jen@email.com 507f191e81
    """
    _ingest_one(ctx, "alias", previous_id, user_id)


@cli.command()
@click.argument("user_id")
@click.argument("anonymous_id")
@click.pass_context
def identify(ctx: click.Context, user_id: str, anonymous_id: str) -> None:
    """Link ANONYMOUS_ID to USER_ID with an identify event timestamped now.

    \b
    Example:
        identity-graph identify 507f191e81 anon-phone-19c2
    """
    _ingest_one(ctx, "identify", user_id, anonymous_id)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True,
              help="CSV (header id,canonical; RFC 4180 quoting) or JSON lines.")
@click.option("--output", "-o", type=click.File("wb", lazy=True), default="-",
              help="Write to FILE instead of stdout.")
@click.pass_context
def export(ctx: click.Context, fmt: str, output: IO[bytes]) -> None:
    """Stream the whole ID -> canonical map, sorted by ID, for warehouse joins.

    \b
    Example:
        identity-graph export --format csv --output id_map.csv
    """
    import io

    graph = _open(ctx)
    rows = graph.identities()
    # newline="": the bytes written are exactly the CSV's, CRLF and newlines inside IDs included.
    text = io.TextIOWrapper(output, encoding="utf-8", newline="", write_through=False)
    try:
        if fmt == "csv":
            import csv

            writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180 line ends
            writer.writerow(("id", "canonical"))
            writer.writerows(rows)
        else:
            import json

            for id_, canonical in rows:
                text.write(json.dumps({"id": id_, "canonical": canonical}, ensure_ascii=False) + "\n")
        text.flush()
    finally:
        text.detach()  # leave closing the underlying stream to click


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts: IDs, known IDs, profiles, size histogram, largest profiles, links by outcome.

    \b
    Example:
        identity-graph stats --json
    """
    graph = _open(ctx)
    s = graph.stats()
    if as_json:
        import json

        click.echo(json.dumps(s.to_dict(), ensure_ascii=False, indent=2))
        return
    refused = sum(s.links_refused.values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.links_refused.items()))
    click.echo(f"IDs:          {s.ids} ({s.known_ids} known)")
    click.echo(f"profiles:     {s.profiles}")
    click.echo(f"events:       {s.events} (duplicates seen: {s.duplicates})")
    click.echo(f"newest event: {s.newest_event.isoformat() if s.newest_event else '-'}")
    click.echo(f"links:        {s.links_merged} merged, {s.links_together} together, {refused} refused"
               + (f" ({reasons})" if reasons else "") + (f", {s.links_unmerged} unmerged" if s.links_unmerged else ""))
    click.echo("profile sizes:")
    for label, count in s.size_histogram:
        click.echo(f"  {label:>9}  {count}")
    click.echo("largest profiles:")
    for canonical, size in s.largest_profiles:
        click.echo(f"  {size:>9}  {canonical}")


def _link_line(link: Any) -> str:
    """One link for people: who, which way, which event, when, and what became of it."""
    arrow = f"{link.source} <- {link.target}" if link.reversed else f"{link.source} -> {link.target}"
    return f"{arrow}: {link.kind} link of {link.type} event {link.message_id!r} at {link.timestamp.isoformat()}"


def _outcome(link: Any) -> str:
    from .rules import REASONS

    if link.outcome == "refused":
        return f"refused ({link.reason}: {REASONS.get(link.reason, link.reason)})"
    if link.outcome == "unmerged":
        return "unmerged (taken out by an unmerge)"
    return link.outcome


def _json_out(value: Any) -> None:
    import json

    click.echo(json.dumps(value, ensure_ascii=False))


# ignore_unknown_options: IDs may start with "-" (see lookup).
@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the path as JSON.")
@click.pass_context
def explain(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """Why A and B are the same person: the shortest chain of merges joining them.

    Each line is one link, with the event that made it. When A and B are two people,
    says so (exit 1), naming the refused link that kept them apart, if any.

    \b
    Example:
        identity-graph explain anon-laptop-7f3a jen@email.com
    """
    graph = _open(ctx)
    try:
        path = graph.explain(a, b)
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _json_out({"a": a, "b": b, "canonical": graph.resolve(a), "path": [l.to_dict() for l in path]})
        return
    if a == b:
        click.echo(f"{a} and {b} are the same ID (profile {graph.resolve(a)})")
        return
    links = f"{len(path)} link{'s' if len(path) != 1 else ''}"
    click.echo(f"{a} and {b} are the same person (profile {graph.resolve(a)}), joined by {links}:")
    for link in path:
        click.echo("  " + _link_line(link))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("id_", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON lines.")
@click.pass_context
def history(ctx: click.Context, id_: str, as_json: bool) -> None:
    """Every merge and refusal that shaped the profile of ID, in event-time order.

    \b
    Example:
        identity-graph history 507f191e81
    """
    graph = _open(ctx)
    try:
        links = graph.history(id_)
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    for link in links:
        if as_json:
            _json_out(link.to_dict())
        else:
            click.echo(f"{_link_line(link)}: {_outcome(link)}")
    if not links and not as_json:
        click.echo(f"(no links: {id_} is alone in its profile)")


def _print_edit(result: Any, head: str, as_json: bool, removed: bool = False) -> None:
    if as_json:
        _json_out(result.to_dict())
        return
    if result.dry_run:
        click.echo("dry run: nothing was written; this is what would happen")
    click.echo(head)
    for link in result.links:
        # A removed link has no outcome any more: say what it was.
        click.echo(f"  {_link_line(link)}: " + (f"(was {link.outcome})" if removed else _outcome(link)))
    if not result.before and not result.after:
        click.echo("no profile changed")
        return
    for label, profiles in (("before", result.before), ("after", result.after)):
        click.echo(f"{label}:")
        for p in profiles:
            click.echo(f"  {p.canonical}: {', '.join(sorted(p.ids))}")


@cli.command()
@click.option("--message-id", "message_id", required=True, help="The messageId of the event to take out.")
@click.option("--undo", is_flag=True, help="Put the event's links back instead.")
@click.option("--dry-run", is_flag=True, help="Show the profiles that would result; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def unmerge(ctx: click.Context, message_id: str, undo: bool, dry_run: bool, as_json: bool) -> None:
    """Split a bad merge: the graph becomes what it would be without that event's links.

    The event's IDs stay. The exclusion is stored, so re-importing the event does not
    bring the merge back; --undo restores it. Only the affected profiles are recomputed.

    \b
    Example:
        identity-graph unmerge --message-id 5f1c0a7e-shared-kiosk --dry-run
    """
    graph = _open(ctx)
    try:
        result = graph.unmerge(message_id, undo=undo, dry_run=dry_run)
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    verb = "restored" if undo else "unmerged"
    n = len(result.links)
    _print_edit(result, f"{verb} event {message_id!r} ({n} link{'s' if n != 1 else ''}):", as_json)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("id_", metavar="ID")
@click.option("--dry-run", is_flag=True, help="Show the profiles that would result; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def delete(ctx: click.Context, id_: str, dry_run: bool, as_json: bool) -> None:
    """Erase ID (e.g. a GDPR request): it stops resolving and its links are removed.

    The rest of the graph becomes what it would be had ID never been sent. Only a
    keyed hash of ID is kept, so that re-importing old events never brings it back.

    \b
    Example:
        identity-graph delete jen@email.com --dry-run
    """
    graph = _open(ctx)
    try:
        result = graph.delete(id_, dry_run=dry_run)
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    n = len(result.links)
    _print_edit(result, f"erased {id_!r} ({n} link{'s' if n != 1 else ''} removed):", as_json, removed=True)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("id_", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["dot", "graphml", "json", "svg", "png"]), default="dot",
              show_default=True, help="Text formats, or a picture drawn by Graphviz's dot (svg, png).")
@click.option("--output", "-o", type=click.File("wb", lazy=True), default="-", help="Write to FILE instead of stdout.")
@click.option("--full", is_flag=True,
              help="Draw every ID; by default more than 5 anonymous leaves around one ID are drawn as one node.")
@click.pass_context
def show(ctx: click.Context, id_: str, fmt: str, output: IO[bytes], full: bool) -> None:
    """Draw the profile of ID: its IDs (boxes: known; ellipses: anonymous) and every link
    touching them, with kind, messageId and time; refused links dashed, unmerged dotted.

    \b
    Example:
        identity-graph show jen@email.com --format svg --output jen.svg
    """
    from .analysis import summarise_leaves
    from .export import render, to_dot, to_graphml, to_json

    graph = _open(ctx)
    try:
        drawing = graph.profile_graph(id_)
        if fmt == "graphml":
            data = to_graphml(drawing).encode()
        elif fmt == "json":
            data = to_json(drawing).encode()
        else:
            dot = to_dot(drawing if full else summarise_leaves(drawing, focus=id_))
            data = dot.encode() if fmt == "dot" else render(dot, fmt)
    except IdentityGraphError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "png" and getattr(output, "name", "-") in ("-", "<stdout>") and sys.stdout.isatty():
        raise click.ClickException("a PNG is binary: write it to a file with --output FILE.png")
    output.write(data)


@cli.command()
@click.pass_context
def rules(ctx: click.Context) -> None:
    """Show the merge rules this graph was built with.

    \b
    Example:
        identity-graph --db sqlite:///my.db rules
    """
    r = _open(ctx).rules
    click.echo(f"max_profile_ids:   {r.max_profile_ids}")
    click.echo(f"protect_known_ids: {str(r.protect_known_ids).lower()}")
    click.echo("blocked_values:    " + ", ".join(repr(v) for v in sorted(r.blocked_values)) + ", and blank strings")


def main() -> None:
    cli(prog_name="identity-graph")


if __name__ == "__main__":
    sys.exit(main())
