"""The history commands of the command line (issue #5): explain, history, unmerge, delete,
show and lookup --as-of, with exact output and exit codes on SQLite and PostgreSQL.

They all run on one small hand-made history (HISTORY below): Ann browses on her laptop,
identifies as ann@x.com, is aliased to her database ID u-42 and logs in on her phone;
Bo then logs in on that same phone, which is refused (rule 5: the phone's profile already
holds a known ID), and on his tablet. So Ann's profile is a chain of three links, one of
them walked backwards from a-laptop to a-phone, and a refused link leads out of it to Bo.

Exit codes: 0 done, 1 not found or refused (one ``Error: ...`` line on stderr), 2 usage.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import networkx as nx
import orjson
import pytest
from click.testing import CliRunner, Result

from helpers import profiles
from test_docs import console_steps
from identity_graph import IdentityGraph
from identity_graph.cli import cli
from identity_graph.export import GRAPHVIZ_HINT

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROFILE_DOT = FIXTURES / "profile-small.dot"
README = REPO / "README.md"

HISTORY: list[dict[str, Any]] = [
    {"type": "track", "event": "Viewed", "anonymousId": "a-laptop", "messageId": "m01",
     "timestamp": "2024-03-01T10:00:00Z"},
    {"type": "identify", "anonymousId": "a-laptop", "userId": "ann@x.com", "messageId": "m02",
     "timestamp": "2024-03-01T10:05:00Z"},
    {"type": "alias", "previousId": "ann@x.com", "userId": "u-42", "messageId": "m03",
     "timestamp": "2024-03-01T10:06:00Z"},
    # Sent with an offset: printed as the UTC instant, 09:00.
    {"type": "identify", "anonymousId": "a-phone", "userId": "u-42", "messageId": "m04",
     "timestamp": "2024-03-02T10:00:00+01:00"},
    {"type": "identify", "anonymousId": "a-phone", "userId": "bo@x.com", "messageId": "m05",
     "timestamp": "2024-03-02T12:00:00Z"},
    {"type": "identify", "anonymousId": "a-tablet", "userId": "bo@x.com", "messageId": "m06",
     "timestamp": "2024-03-03T08:00:00Z"},
    {"type": "track", "event": "Viewed", "userId": "c-solo", "messageId": "m07",
     "timestamp": "2024-03-04T08:00:00Z"},
]

# Each link as the commands print it.
M02 = "a-laptop -> ann@x.com: implicit link of identify event 'm02' at 2024-03-01T10:05:00+00:00"
M03 = "ann@x.com -> u-42: alias link of alias event 'm03' at 2024-03-01T10:06:00+00:00"
M04 = "a-phone -> u-42: implicit link of identify event 'm04' at 2024-03-02T09:00:00+00:00"
M05 = "a-phone -> bo@x.com: implicit link of identify event 'm05' at 2024-03-02T12:00:00+00:00"
M06 = "a-tablet -> bo@x.com: implicit link of identify event 'm06' at 2024-03-03T08:00:00+00:00"
KNOWN_ID = "refused (known_id: the anonymous ID's profile already holds a known user ID)"
UNMERGED = "unmerged (taken out by an unmerge)"

ANN = "u-42\na-laptop\na-phone\nann@x.com\nu-42 *\n"
BO = "bo@x.com\na-tablet\nbo@x.com *\n"
GRAPH = {
    ("u-42", frozenset({"a-laptop", "a-phone", "ann@x.com", "u-42"})),
    ("bo@x.com", frozenset({"a-tablet", "bo@x.com"})),
    ("c-solo", frozenset({"c-solo"})),
}
#: The graph with event m04 (a-phone -> u-42) taken out: m05 is no longer refused.
GRAPH_WITHOUT_M04 = {
    ("u-42", frozenset({"a-laptop", "ann@x.com", "u-42"})),
    ("bo@x.com", frozenset({"a-phone", "a-tablet", "bo@x.com"})),
    ("c-solo", frozenset({"c-solo"})),
}


def invoke(url: str | None, *args: Any, env: dict[str, str | None] | None = None) -> Result:
    argv = (["--db", url] if url is not None else []) + [str(a) for a in args]
    return CliRunner().invoke(cli, argv, env=env, prog_name="identity-graph")


def ok(result: Result) -> str:
    """The stdout of a command that must have succeeded without a word on stderr."""
    assert (result.exit_code, result.stderr) == (0, ""), (result.exit_code, result.output, result.exception)
    return result.stdout


def failed(result: Result, code: int = 1) -> str:
    """The stderr of a command that must have failed with ``code`` and printed nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def graph_of(url: str) -> set[tuple[str, frozenset[str]]]:
    with IdentityGraph(url) as g:
        return profiles(g)


def history_lines(url: str, id_: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(invoke(url, "history", id_, "--json")).splitlines()]


@pytest.fixture
def history_file(tmp_path: Path) -> Path:
    path = tmp_path / "history.jsonl"
    path.write_bytes(jsonl(HISTORY))
    return path


@pytest.fixture
def url(graph_url: str, history_file: Path) -> str:
    """The test's graph, holding HISTORY, imported with the CLI."""
    out = ok(invoke(graph_url, "import", "--quiet", "--json", history_file))
    summary = json.loads(out)
    assert (summary["applied"], summary["links_merged"], summary["links_refused"]) == (7, 4, {"known_id": 1})
    assert graph_of(graph_url) == GRAPH
    return graph_url


# -- explain -------------------------------------------------------------------------------


def test_explain_prints_the_chain_of_links_with_their_events(url: str) -> None:
    assert ok(invoke(url, "explain", "a-laptop", "a-phone")) == (
        "a-laptop and a-phone are the same person (profile u-42), joined by 3 links:\n"
        f"  {M02}\n"
        f"  {M03}\n"
        "  u-42 <- a-phone: implicit link of identify event 'm04' at 2024-03-02T09:00:00+00:00\n"
    )


def test_explain_walks_the_other_way_round_when_asked_the_other_way_round(url: str) -> None:
    assert ok(invoke(url, "explain", "a-phone", "a-laptop")) == (
        "a-phone and a-laptop are the same person (profile u-42), joined by 3 links:\n"
        f"  {M04}\n"
        "  u-42 <- ann@x.com: alias link of alias event 'm03' at 2024-03-01T10:06:00+00:00\n"
        "  ann@x.com <- a-laptop: implicit link of identify event 'm02' at 2024-03-01T10:05:00+00:00\n"
    )


def test_explain_of_two_direct_neighbours_is_one_link(url: str) -> None:
    assert ok(invoke(url, "explain", "a-tablet", "bo@x.com")) == (
        f"a-tablet and bo@x.com are the same person (profile bo@x.com), joined by 1 link:\n  {M06}\n")


def test_explain_of_an_id_with_itself_is_no_link(url: str) -> None:
    assert ok(invoke(url, "explain", "u-42", "u-42")) == (
        "u-42 and u-42 are the same ID (profile u-42)\n")


def test_explain_json_is_one_line_with_the_path_each_link_oriented_along_it(url: str) -> None:
    out = ok(invoke(url, "explain", "a-laptop", "a-phone", "--json"))
    assert out.count("\n") == 1
    link = {"outcome": "merged", "reason": None}
    assert json.loads(out) == {
        "a": "a-laptop", "b": "a-phone", "canonical": "u-42",
        "path": [
            {**link, "source": "a-laptop", "target": "ann@x.com", "kind": "implicit", "message_id": "m02",
             "type": "identify", "timestamp": "2024-03-01T10:05:00+00:00", "reversed": False},
            {**link, "source": "ann@x.com", "target": "u-42", "kind": "alias", "message_id": "m03",
             "type": "alias", "timestamp": "2024-03-01T10:06:00+00:00", "reversed": False},
            {**link, "source": "u-42", "target": "a-phone", "kind": "implicit", "message_id": "m04",
             "type": "identify", "timestamp": "2024-03-02T09:00:00+00:00", "reversed": True},
        ],
    }


REFUSED_M05 = ("the implicit link a-phone -> bo@x.com of event 'm05' (identify) was refused:"
               " the anonymous ID's profile already holds a known user ID")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_explain_of_two_people_exits_1_naming_the_refused_link(url: str, json_flag: list[str]) -> None:
    assert failed(invoke(url, "explain", "a-laptop", "a-tablet", *json_flag)) == (
        f"Error: 'a-laptop' and 'a-tablet' are different people: profiles 'u-42' and 'bo@x.com'; {REFUSED_M05}\n")
    # The refused link itself, asked about from its own ends, the other way round.
    assert failed(invoke(url, "explain", "bo@x.com", "a-phone", *json_flag)) == (
        f"Error: 'bo@x.com' and 'a-phone' are different people: profiles 'bo@x.com' and 'u-42'; {REFUSED_M05}\n")


def test_explain_of_two_people_no_link_joins(url: str) -> None:
    assert failed(invoke(url, "explain", "c-solo", "u-42")) == (
        "Error: 'c-solo' and 'u-42' are different people: profiles 'c-solo' and 'u-42'; no link joins them\n")


@pytest.mark.parametrize("a, b", [("nobody", "u-42"), ("u-42", "nobody"), ("nobody", "nobody")])
def test_explain_of_an_unknown_id_exits_1(url: str, a: str, b: str) -> None:
    assert failed(invoke(url, "explain", a, b)) == "Error: unknown ID 'nobody'\n"


def test_explain_needs_two_ids(url: str) -> None:
    assert "Missing argument 'B'" in failed(invoke(url, "explain", "u-42"), code=2)


# -- history -------------------------------------------------------------------------------


def test_history_lists_every_merge_and_refusal_in_event_time_order(url: str) -> None:
    expected = f"{M02}: merged\n{M03}: merged\n{M04}: merged\n{M05}: {KNOWN_ID}\n"
    for member in ("u-42", "a-laptop", "ann@x.com", "a-phone"):
        assert ok(invoke(url, "history", member)) == expected
    # Bo's side sees the refused link too: it touches bo@x.com.
    assert ok(invoke(url, "history", "a-tablet")) == f"{M05}: {KNOWN_ID}\n{M06}: merged\n"


def test_history_of_an_id_without_links_prints_nothing(url: str) -> None:
    assert ok(invoke(url, "history", "c-solo")) == "(no links: c-solo is alone in its profile)\n"


def test_history_json_is_one_link_per_line(url: str) -> None:
    out = ok(invoke(url, "history", "a-tablet", "--json"))
    assert [json.loads(line) for line in out.splitlines()] == [
        {"source": "a-phone", "target": "bo@x.com", "kind": "implicit", "outcome": "refused", "reason": "known_id",
         "message_id": "m05", "type": "identify", "timestamp": "2024-03-02T12:00:00+00:00", "reversed": False},
        {"source": "a-tablet", "target": "bo@x.com", "kind": "implicit", "outcome": "merged", "reason": None,
         "message_id": "m06", "type": "identify", "timestamp": "2024-03-03T08:00:00+00:00", "reversed": False},
    ]
    assert [l["message_id"] for l in history_lines(url, "u-42")] == ["m02", "m03", "m04", "m05"]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_history_of_an_unknown_id_exits_1(url: str, json_flag: list[str]) -> None:
    assert failed(invoke(url, "history", "nobody", *json_flag)) == "Error: unknown ID 'nobody'\n"


# -- unmerge -------------------------------------------------------------------------------

UNMERGE_M04 = (
    "unmerged event 'm04' (1 link):\n"
    f"  {M04}: {UNMERGED}\n"
    "before:\n"
    "  bo@x.com: a-tablet, bo@x.com\n"
    "  u-42: a-laptop, a-phone, ann@x.com, u-42\n"
    "after:\n"
    "  bo@x.com: a-phone, a-tablet, bo@x.com\n"
    "  u-42: a-laptop, ann@x.com, u-42\n"
)
RESTORE_M04 = (
    "restored event 'm04' (1 link):\n"
    f"  {M04}: merged\n"
    "before:\n"
    "  bo@x.com: a-phone, a-tablet, bo@x.com\n"
    "  u-42: a-laptop, ann@x.com, u-42\n"
    "after:\n"
    "  bo@x.com: a-tablet, bo@x.com\n"
    "  u-42: a-laptop, a-phone, ann@x.com, u-42\n"
)
DRY_RUN = "dry run: nothing was written; this is what would happen\n"


def test_unmerge_dry_run_shows_the_split_and_writes_nothing(url: str) -> None:
    before = ok(invoke(url, "lookup", "a-phone"))
    assert before == ANN
    assert ok(invoke(url, "unmerge", "--message-id", "m04", "--dry-run")) == DRY_RUN + UNMERGE_M04
    assert ok(invoke(url, "lookup", "a-phone")) == before
    assert graph_of(url) == GRAPH
    assert ok(invoke(url, "history", "a-phone")).count(": merged\n") == 3
    # Nothing was stored: the real run still has the event to take out.
    assert ok(invoke(url, "unmerge", "--message-id", "m04")) == UNMERGE_M04


def test_unmerge_splits_the_profile_and_the_refused_link_now_merges(url: str) -> None:
    assert ok(invoke(url, "unmerge", "--message-id", "m04")) == UNMERGE_M04
    assert graph_of(url) == GRAPH_WITHOUT_M04
    assert ok(invoke(url, "lookup", "a-phone")) == "bo@x.com\na-phone\na-tablet\nbo@x.com *\n"
    assert ok(invoke(url, "lookup", "u-42")) == "u-42\na-laptop\nann@x.com\nu-42 *\n"
    assert ok(invoke(url, "history", "a-phone")) == f"{M04}: {UNMERGED}\n{M05}: merged\n{M06}: merged\n"
    assert ok(invoke(url, "explain", "a-phone", "a-tablet")) == (
        "a-phone and a-tablet are the same person (profile bo@x.com), joined by 2 links:\n"
        f"  {M05}\n"
        "  bo@x.com <- a-tablet: implicit link of identify event 'm06' at 2024-03-03T08:00:00+00:00\n"
    )


def test_unmerge_twice_is_an_error_and_changes_nothing(url: str) -> None:
    ok(invoke(url, "unmerge", "--message-id", "m04"))
    assert failed(invoke(url, "unmerge", "--message-id", "m04")) == (
        "Error: event 'm04' is already unmerged (undo restores it)\n")
    assert graph_of(url) == GRAPH_WITHOUT_M04


def test_an_unmerge_survives_reimporting_the_event(url: str, history_file: Path) -> None:
    ok(invoke(url, "unmerge", "--message-id", "m04"))
    summary = json.loads(ok(invoke(url, "import", "--quiet", "--json", history_file)))
    assert (summary["applied"], summary["duplicates"], summary["conflicts"]) == (0, 7, 0)
    assert graph_of(url) == GRAPH_WITHOUT_M04


def test_unmerge_undo_restores_the_merge(url: str) -> None:
    ok(invoke(url, "unmerge", "--message-id", "m04"))
    assert ok(invoke(url, "unmerge", "--message-id", "m04", "--undo", "--dry-run")) == DRY_RUN + RESTORE_M04
    assert graph_of(url) == GRAPH_WITHOUT_M04
    assert ok(invoke(url, "unmerge", "--message-id", "m04", "--undo")) == RESTORE_M04
    assert graph_of(url) == GRAPH
    assert ok(invoke(url, "lookup", "a-phone")) == ANN
    assert ok(invoke(url, "history", "u-42")) == f"{M02}: merged\n{M03}: merged\n{M04}: merged\n{M05}: {KNOWN_ID}\n"
    assert failed(invoke(url, "unmerge", "--message-id", "m04", "--undo")) == (
        "Error: event 'm04' is not unmerged: there is nothing to undo\n")


def test_unmerge_of_a_refused_link_changes_no_profile(url: str) -> None:
    assert ok(invoke(url, "unmerge", "--message-id", "m05")) == (
        f"unmerged event 'm05' (1 link):\n  {M05}: {UNMERGED}\nno profile changed\n")
    assert graph_of(url) == GRAPH


@pytest.mark.parametrize("dry_run", [True, False])
def test_unmerge_json(url: str, dry_run: bool) -> None:
    out = ok(invoke(url, "unmerge", "--message-id", "m04", "--json", *(["--dry-run"] if dry_run else [])))
    assert out.count("\n") == 1
    assert json.loads(out) == {
        "dry_run": dry_run,
        "links": [{"source": "a-phone", "target": "u-42", "kind": "implicit", "outcome": "unmerged",
                   "reason": None, "message_id": "m04", "type": "identify",
                   "timestamp": "2024-03-02T09:00:00+00:00", "reversed": False}],
        "before": [{"canonical": "bo@x.com", "ids": ["a-tablet", "bo@x.com"]},
                   {"canonical": "u-42", "ids": ["a-laptop", "a-phone", "ann@x.com", "u-42"]}],
        "after": [{"canonical": "bo@x.com", "ids": ["a-phone", "a-tablet", "bo@x.com"]},
                  {"canonical": "u-42", "ids": ["a-laptop", "ann@x.com", "u-42"]}],
    }
    assert graph_of(url) == (GRAPH if dry_run else GRAPH_WITHOUT_M04)


@pytest.mark.parametrize("flags", [[], ["--dry-run"], ["--undo"], ["--json"]])
def test_unmerge_of_an_unknown_message_id_exits_1_with_one_line(url: str, flags: list[str]) -> None:
    assert failed(invoke(url, "unmerge", "--message-id", "nope", *flags)) == (
        "Error: no event with messageId 'nope' in this graph\n")
    assert graph_of(url) == GRAPH


def test_unmerge_of_an_event_without_links_exits_1(url: str) -> None:
    assert failed(invoke(url, "unmerge", "--message-id", "m01")) == (
        "Error: event 'm01' linked no IDs: there is nothing to unmerge\n")


def test_unmerge_needs_a_message_id(url: str) -> None:
    assert "Missing option '--message-id'" in failed(invoke(url, "unmerge"), code=2)


# -- delete --------------------------------------------------------------------------------

DELETE_ANN = (
    "erased 'ann@x.com' (2 links removed):\n"
    f"  {M02}: (was merged)\n"
    f"  {M03}: (was merged)\n"
    "before:\n"
    "  u-42: a-laptop, a-phone, ann@x.com, u-42\n"
    "after:\n"
    "  a-laptop: a-laptop\n"
    "  u-42: a-phone, u-42\n"
)
GRAPH_WITHOUT_ANN = {
    ("u-42", frozenset({"a-phone", "u-42"})),
    ("a-laptop", frozenset({"a-laptop"})),
    ("bo@x.com", frozenset({"a-tablet", "bo@x.com"})),
    ("c-solo", frozenset({"c-solo"})),
}


def test_delete_dry_run_shows_the_result_and_writes_nothing(url: str) -> None:
    assert ok(invoke(url, "delete", "ann@x.com", "--dry-run")) == DRY_RUN + DELETE_ANN
    assert ok(invoke(url, "lookup", "ann@x.com")) == ANN
    assert graph_of(url) == GRAPH


def test_delete_erases_the_id_and_reimporting_does_not_bring_it_back(url: str, history_file: Path) -> None:
    assert ok(invoke(url, "delete", "ann@x.com")) == DELETE_ANN
    assert failed(invoke(url, "lookup", "ann@x.com")) == "Error: unknown ID 'ann@x.com'\n"
    assert ok(invoke(url, "lookup", "a-laptop")) == "a-laptop\na-laptop *\n"
    assert graph_of(url) == GRAPH_WITHOUT_ANN
    # The same file again: every event is a duplicate (not a conflict), nothing comes back.
    summary = json.loads(ok(invoke(url, "import", "--quiet", "--json", history_file)))
    assert (summary["applied"], summary["duplicates"], summary["conflicts"], summary["new_ids"]) == (0, 7, 0, 0)
    assert failed(invoke(url, "lookup", "ann@x.com")) == "Error: unknown ID 'ann@x.com'\n"
    assert graph_of(url) == GRAPH_WITHOUT_ANN
    # The same events re-sent under new messageIds: ann@x.com is dropped as if blocked.
    resent = history_file.with_name("resent.jsonl")
    resent.write_bytes(jsonl([dict(e, messageId="re-" + e["messageId"]) for e in HISTORY]))
    summary = json.loads(ok(invoke(url, "import", "--quiet", "--json", resent)))
    assert (summary["applied"], summary["new_ids"], summary["links_merged"]) == (7, 0, 0)
    assert failed(invoke(url, "lookup", "ann@x.com")) == "Error: unknown ID 'ann@x.com'\n"
    assert graph_of(url) == GRAPH_WITHOUT_ANN


def test_an_erased_id_is_unknown_to_every_command(url: str) -> None:
    ok(invoke(url, "delete", "ann@x.com"))
    unknown = "Error: unknown ID 'ann@x.com'\n"
    for args in (["explain", "ann@x.com", "u-42"], ["history", "ann@x.com"], ["show", "ann@x.com"],
                 ["lookup", "ann@x.com", "--as-of", "2024-03-01T10:06:00Z"]):
        assert failed(invoke(url, *args)) == unknown, args
    assert failed(invoke(url, "delete", "ann@x.com")) == "Error: 'ann@x.com' is already erased\n"
    # Not even the past remembers it.
    assert ok(invoke(url, "lookup", "u-42", "--as-of", "2024-03-01T10:06:00Z")) == "u-42\nu-42 *\n"
    assert ok(invoke(url, "history", "a-laptop")) == "(no links: a-laptop is alone in its profile)\n"


@pytest.mark.parametrize("dry_run", [True, False])
def test_delete_json(url: str, dry_run: bool) -> None:
    out = ok(invoke(url, "delete", "ann@x.com", "--json", *(["--dry-run"] if dry_run else [])))
    assert out.count("\n") == 1
    link = {"outcome": "merged", "reason": None, "reversed": False}
    assert json.loads(out) == {
        "dry_run": dry_run,
        "links": [
            {**link, "source": "a-laptop", "target": "ann@x.com", "kind": "implicit", "message_id": "m02",
             "type": "identify", "timestamp": "2024-03-01T10:05:00+00:00"},
            {**link, "source": "ann@x.com", "target": "u-42", "kind": "alias", "message_id": "m03",
             "type": "alias", "timestamp": "2024-03-01T10:06:00+00:00"},
        ],
        "before": [{"canonical": "u-42", "ids": ["a-laptop", "a-phone", "ann@x.com", "u-42"]}],
        "after": [{"canonical": "a-laptop", "ids": ["a-laptop"]}, {"canonical": "u-42", "ids": ["a-phone", "u-42"]}],
    }
    assert graph_of(url) == (GRAPH if dry_run else GRAPH_WITHOUT_ANN)


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_delete_of_an_unknown_id_exits_1(url: str, dry_run: list[str]) -> None:
    assert failed(invoke(url, "delete", "nobody", *dry_run)) == "Error: unknown ID 'nobody'\n"
    assert graph_of(url) == GRAPH


# -- lookup --as-of --------------------------------------------------------------------------


@pytest.mark.parametrize("when, expected", [
    ("2024-03-01T10:00:00Z", "a-laptop\na-laptop *\n"),  # its first event, inclusive
    ("2024-03-01T10:05:00", "ann@x.com\na-laptop\nann@x.com *\n"),  # no offset: UTC
    ("2024-03-01T10:05:59.999999Z", "ann@x.com\na-laptop\nann@x.com *\n"),
    ("2024-03-01T11:06:00+01:00", "u-42\na-laptop\nann@x.com\nu-42 *\n"),  # the alias, at 10:06 UTC
    ("2024-03-02", "u-42\na-laptop\nann@x.com\nu-42 *\n"),  # a date: its midnight, UTC
    ("2024-03-02T09:00:00Z", ANN),
    ("2030-01-01T00:00:00Z", ANN),
])
def test_lookup_as_of_is_the_profile_as_it_stood_then(url: str, when: str, expected: str) -> None:
    assert ok(invoke(url, "lookup", "a-laptop", "--as-of", when)) == expected


def test_lookup_as_of_json(url: str) -> None:
    assert json.loads(ok(invoke(url, "lookup", "u-42", "--as-of", "2024-03-01T10:06:00Z", "--json"))) == {
        "id": "u-42", "canonical": "u-42", "ids": ["a-laptop", "ann@x.com", "u-42"]}


def test_lookup_as_of_before_the_first_event_of_the_id_exits_1(url: str) -> None:
    assert failed(invoke(url, "lookup", "a-laptop", "--as-of", "2024-03-01T09:59:59Z")) == (
        "Error: 'a-laptop' had not been seen by 2024-03-01T09:59:59Z\n")
    # a-phone's first event is m04, at 09:00 UTC on the 2nd.
    assert failed(invoke(url, "lookup", "a-phone", "--as-of", "2024-03-02T08:59:59Z", "--json")) == (
        "Error: 'a-phone' had not been seen by 2024-03-02T08:59:59Z\n")
    assert failed(invoke(url, "lookup", "nobody", "--as-of", "2024-03-02T08:59:59Z")) == (
        "Error: unknown ID 'nobody'\n")


def test_lookup_as_of_sees_the_corrected_past(url: str) -> None:
    ok(invoke(url, "unmerge", "--message-id", "m04"))
    assert ok(invoke(url, "lookup", "a-phone", "--as-of", "2024-03-02T09:00:00Z")) == "a-phone\na-phone *\n"
    assert ok(invoke(url, "lookup", "a-phone", "--as-of", "2024-03-02T12:00:00Z")) == (
        "bo@x.com\na-phone\nbo@x.com *\n")


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "", "2024-03-01T25:00:00Z"])
def test_lookup_as_of_an_invalid_time_is_a_usage_error(url: str, value: str) -> None:
    err = failed(invoke(url, "lookup", "a-laptop", "--as-of", value), code=2)
    assert err == (
        "Usage: identity-graph lookup [OPTIONS] ID\n"
        "Try 'identity-graph lookup --help' for help.\n"
        "\n"
        f"Error: Invalid value for '--as-of': {value!r} is not an ISO-8601 date-time\n"
    )


# -- show ----------------------------------------------------------------------------------


def test_show_dot_is_the_checked_in_drawing(url: str) -> None:
    out = invoke(url, "show", "a-phone")
    assert ok(out).encode() == PROFILE_DOT.read_bytes()
    assert ok(invoke(url, "show", "u-42", "--format", "dot")) == ok(out)


def test_the_dot_fixture_draws_the_profile_as_documented() -> None:
    """What profile-small.dot says, line by line: boxes known, ellipses anonymous, the
    canonical bold and filled, Bo's ID grey and dashed outside, the refused link red dashed."""
    lines = PROFILE_DOT.read_text(encoding="utf-8").splitlines()
    assert lines[0] == 'digraph "profile u-42" {'
    assert '  "a-laptop" [shape=ellipse];' in lines
    assert '  "a-phone" [shape=ellipse];' in lines
    assert '  "ann@x.com" [shape=box];' in lines
    assert '  "u-42" [shape=box, style="bold,filled", fillcolor="#cfe2ff"];' in lines
    assert ('  "bo@x.com" [shape=box, color=grey50, fontcolor=grey50, style=dashed, xlabel="profile bo@x.com"];'
            in lines)
    assert ('  "a-phone" -> "bo@x.com" [label="implicit m05\\n2024-03-02T12:00:00+00:00\\nrefused: known_id",'
            ' style=dashed, color=red3, fontcolor=red3];' in lines)
    assert sum(" -> " in line for line in lines) == 4
    assert "a-tablet" not in PROFILE_DOT.read_text(encoding="utf-8")


def test_show_output_writes_the_file_and_nothing_to_stdout(url: str, tmp_path: Path) -> None:
    target = tmp_path / "out" / "profile.dot"
    target.parent.mkdir()
    assert ok(invoke(url, "show", "ann@x.com", "--output", target)) == ""
    assert target.read_bytes() == PROFILE_DOT.read_bytes()
    short = tmp_path / "short.json"
    assert ok(invoke(url, "show", "ann@x.com", "-o", short, "--format", "json")) == ""
    assert json.loads(short.read_text(encoding="utf-8"))["graph"] == {"canonical": "u-42"}


def test_show_draws_an_unmerged_link_dotted(url: str) -> None:
    ok(invoke(url, "unmerge", "--message-id", "m04"))
    lines = ok(invoke(url, "show", "u-42")).splitlines()
    assert '  "a-phone" [shape=ellipse, color=grey50, fontcolor=grey50, style=dashed, xlabel="profile bo@x.com"];' \
        in lines
    assert ('  "a-phone" -> "u-42" [label="implicit m04\\n2024-03-02T09:00:00+00:00\\nunmerged",'
            ' style=dotted, color=grey50];' in lines)


#: Ann's profile as data: node -> attributes, and (source, target, key) -> attributes.
NODES = {
    "a-laptop": {"known": False, "inside": True, "canonical": False},
    "a-phone": {"known": False, "inside": True, "canonical": False},
    "ann@x.com": {"known": True, "inside": True, "canonical": False},
    "u-42": {"known": True, "inside": True, "canonical": True},
    "bo@x.com": {"known": True, "inside": False, "canonical": False, "profile": "bo@x.com"},
}
EDGES = {
    ("a-laptop", "ann@x.com", "m02#1"): {"kind": "implicit", "outcome": "merged", "reason": "", "message_id": "m02",
                                         "event_type": "identify", "time": "2024-03-01T10:05:00+00:00"},
    ("ann@x.com", "u-42", "m03#0"): {"kind": "alias", "outcome": "merged", "reason": "", "message_id": "m03",
                                     "event_type": "alias", "time": "2024-03-01T10:06:00+00:00"},
    ("a-phone", "u-42", "m04#1"): {"kind": "implicit", "outcome": "merged", "reason": "", "message_id": "m04",
                                   "event_type": "identify", "time": "2024-03-02T09:00:00+00:00"},
    ("a-phone", "bo@x.com", "m05#1"): {"kind": "implicit", "outcome": "refused", "reason": "known_id",
                                       "message_id": "m05", "event_type": "identify",
                                       "time": "2024-03-02T12:00:00+00:00"},
}


def test_show_json_is_node_link_data_with_every_attribute(url: str) -> None:
    data = json.loads(ok(invoke(url, "show", "a-laptop", "--format", "json")))
    assert (data["directed"], data["multigraph"], data["graph"]) == (True, True, {"canonical": "u-42"})
    assert {n.pop("id"): n for n in data["nodes"]} == NODES
    assert {(e.pop("source"), e.pop("target"), e.pop("key")): e for e in data["edges"]} == EDGES


def test_show_graphml_reads_back_with_every_attribute(url: str, tmp_path: Path) -> None:
    out = ok(invoke(url, "show", "a-laptop", "--format", "graphml"))
    root = ET.fromstring(out)
    assert root.tag == "{http://graphml.graphdrawing.org/xmlns}graphml"
    path = tmp_path / "p.graphml"
    path.write_text(out, encoding="utf-8")
    g = nx.read_graphml(path, force_multigraph=True)
    assert g.is_directed() and g.is_multigraph()
    assert g.graph["canonical"] == "u-42"
    assert dict(g.nodes(data=True)) == NODES
    assert {(u, v, k): d for u, v, k, d in g.edges(keys=True, data=True)} == EDGES


def svg_texts(svg: bytes) -> set[str]:
    """Every piece of text an SVG drawing shows (its <text> elements), entities decoded."""
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return {el.text for el in root.iter("{http://www.w3.org/2000/svg}text") if el.text}


SVG_TEXTS = {
    "a-laptop", "a-phone", "ann@x.com", "u-42", "bo@x.com", "profile bo@x.com",
    "implicit m02", "alias m03", "implicit m04", "implicit m05", "refused: known_id",
    "2024-03-01T10:05:00+00:00", "2024-03-01T10:06:00+00:00", "2024-03-02T09:00:00+00:00",
    "2024-03-02T12:00:00+00:00",
}


def test_show_svg_draws_the_profile_or_says_how_to_install_graphviz(url: str, tmp_path: Path) -> None:
    result = invoke(url, "show", "a-phone", "--format", "svg")
    if shutil.which("dot") is not None:
        svg = ok(result)
        assert svg.startswith("<?xml")
        assert svg_texts(svg.encode()) == SVG_TEXTS
        target = tmp_path / "p.svg"
        assert ok(invoke(url, "show", "a-phone", "--format", "svg", "--output", target)) == ""
        assert svg_texts(target.read_bytes()) == SVG_TEXTS
        png = tmp_path / "p.png"
        assert ok(invoke(url, "show", "a-phone", "--format", "png", "--output", png)) == ""
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert failed(result) == f"Error: {GRAPHVIZ_HINT}\n"


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_show_without_graphviz_exits_1_with_the_install_hint(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` on this PATH, whatever the machine
    target = tmp_path / f"p.{fmt}"
    assert failed(invoke(url, "show", "a-phone", "--format", fmt, "--output", target)) == (
        "Error: Graphviz's `dot` program is needed to draw svg/png: install it (Debian/Ubuntu: apt-get install"
        " graphviz; macOS: brew install graphviz), or use --format dot and draw the file elsewhere\n")
    assert not target.exists()
    # The text formats need no Graphviz.
    assert ok(invoke(url, "show", "a-phone")).encode() == PROFILE_DOT.read_bytes()


@pytest.mark.parametrize("fmt", ["dot", "json", "graphml", "svg"])
def test_show_of_an_unknown_id_exits_1(url: str, fmt: str) -> None:
    assert failed(invoke(url, "show", "nobody", "--format", fmt)) == "Error: unknown ID 'nobody'\n"


def test_show_of_an_unknown_format_is_a_usage_error(url: str) -> None:
    assert "Invalid value for '--format'" in failed(invoke(url, "show", "u-42", "--format", "pdf"), code=2)


BIG_ANONS = [f"anon-{i:03d}" for i in range(300)]


@pytest.fixture
def big_url(graph_url: str, tmp_path: Path) -> str:
    """One user with 300 anonymous IDs, and a known ID (a userId first) aliased to it."""
    events = [{"type": "track", "event": "Signed Up", "userId": "big@x.com", "messageId": "b-known",
               "timestamp": "2024-03-31T00:00:00Z"}]
    events += [{"type": "identify", "userId": "big-user", "anonymousId": anon, "messageId": f"b{i:03d}",
               "timestamp": f"2024-04-01T00:{i // 60:02d}:{i % 60:02d}Z"} for i, anon in enumerate(BIG_ANONS)]
    events.append({"type": "alias", "previousId": "big@x.com", "userId": "big-user", "messageId": "b-alias",
                   "timestamp": "2024-04-02T00:00:00Z"})
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl(events))
    ok(invoke(graph_url, "import", "--quiet", path))
    return graph_url


def test_show_summarises_a_big_profiles_anonymous_leaves(big_url: str) -> None:
    assert ok(invoke(big_url, "show", "big@x.com")) == (
        'digraph "profile big-user" {\n'
        "  rankdir=LR;\n"
        "  nodesep=0.4; ranksep=1.2;\n"
        '  node [fontname="Helvetica", fontsize=10];\n'
        '  edge [fontname="Helvetica", fontsize=8];\n'
        '  "big-user" [shape=box, style="bold,filled", fillcolor="#cfe2ff"];\n'
        '  "big@x.com" [shape=box];\n'
        '  "300 anonymous IDs of big-user" [shape=note];\n'
        '  "big@x.com" -> "big-user" [label="alias b-alias\\n2024-04-02T00:00:00+00:00"];\n'
        '  "300 anonymous IDs of big-user" -> "big-user" [label="implicit 300 events"];\n'
        "}\n"
    )


def test_show_full_draws_every_id_of_a_big_profile(big_url: str) -> None:
    lines = ok(invoke(big_url, "show", "big@x.com", "--full")).splitlines()
    assert len(lines) == 5 + 302 + 301 + 1  # header, IDs, links, }
    for i, anon in enumerate(BIG_ANONS):
        assert f'  "{anon}" [shape=ellipse];' in lines
        assert (f'  "{anon}" -> "big-user" [label="implicit b{i:03d}\\n2024-04-01T00:{i // 60:02d}:{i % 60:02d}'
                '+00:00"];') in lines
    assert not any("anonymous IDs of" in line for line in lines)
    # The data formats are never summarised.
    data = json.loads(ok(invoke(big_url, "show", "big@x.com", "--format", "json")))
    assert (len(data["nodes"]), len(data["edges"])) == (302, 301)


# -- the README's "Why are these two IDs the same person?" is what the commands print --------

_VOLATILE = re.compile(r"in \d+\.\d s \([\d,]+ events/s\)")


def _readme_section_steps() -> list[tuple[str, str]]:
    """(command line, expected output) of every ``$ ...`` line in the console blocks of the
    README's section "Why are these two IDs the same person?"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Why are these two IDs the same person?\n", 1)[1].split("\n## ", 1)[0]
    return [step for block in re.findall(r"```console\n(.*?)```", section, flags=re.S) for step in console_steps(block)]


def test_the_readme_history_section_is_what_the_commands_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IDENTITY_GRAPH_DB", raising=False)
    steps = _readme_section_steps()
    ran = set()
    for command, expected in steps:
        words = shlex.split(command)
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            monkeypatch.setenv(name, value)
            continue
        assert words[0] == "identity-graph", command
        ran.add(words[1])
        if words[1:2] == ["show"] and "svg" in words and shutil.which("dot") is None:
            continue  # the picture needs Graphviz; the other test below checks it
        result = CliRunner().invoke(cli, words[1:], prog_name="identity-graph")
        assert _VOLATILE.sub("X", result.output) == _VOLATILE.sub("X", expected), command
        assert result.exit_code == (1 if expected.startswith("Error: ") else 0), command
    assert {"import", "explain", "history", "unmerge", "delete", "lookup", "show"} <= ran
    if shutil.which("dot") is not None:
        # The picture the README embeds is the one the command draws (compared by its texts:
        # coordinates may differ between Graphviz versions).
        drawn = svg_texts((tmp_path / "docs" / "profile.svg").read_bytes())
        assert drawn == svg_texts((REPO / "docs" / "profile.svg").read_bytes())


def test_the_readme_embeds_the_profile_picture() -> None:
    text = README.read_text(encoding="utf-8")
    assert re.search(r"!\[[^\]]+\]\(docs/profile\.svg\)", text)
    texts = svg_texts((REPO / "docs" / "profile.svg").read_bytes())
    for id_ in ("507f191e81", "jen@email.com", "anon-laptop-7f3a", "anon-phone-19c2", "anon-family-ipad",
                "bob@email.com", "refused: known_id", "profile 9001"):
        assert id_ in texts, id_


# -- IDs that XML cannot hold as they are -----------------------------------------------------

#: Characters an ID may hold (rule 1 rejects only NUL) that XML 1.0 forbids, even as
#: character references: C0 controls other than tab, LF and CR, and U+FFFE / U+FFFF.
XML_FORBIDDEN = ["\x01", "\x08", "\x0b", "\x1b", "\ufffe"]


@pytest.mark.parametrize("char", XML_FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_show_graphml_and_svg_stay_well_formed_xml_whatever_the_ids_hold(
    graph_url: str, tmp_path: Path, char: str
) -> None:
    """An anonymous ID with a terminal escape (``"\\x1b[31m..."``) is accepted like any
    other; the profile holding it must still export as GraphML that an XML parser, and
    networkx itself, read back, and draw as a well-formed SVG."""
    odd = f"anon{char}x"
    path = tmp_path / "odd.jsonl"
    path.write_bytes(jsonl([{"type": "identify", "userId": "u1", "anonymousId": odd, "messageId": "o1",
                             "timestamp": "2024-01-01T00:00:00Z"}]))
    ok(invoke(graph_url, "import", "--quiet", path))
    out = ok(invoke(graph_url, "show", "u1", "--format", "graphml"))
    graphml = tmp_path / "odd.graphml"
    graphml.write_text(out, encoding="utf-8")
    g = nx.read_graphml(graphml, force_multigraph=True)  # raises ParseError today
    assert len(g) == 2 and "u1" in g and g.number_of_edges() == 1
    if shutil.which("dot") is not None:
        svg = ok(invoke(graph_url, "show", "u1", "--format", "svg")).encode()
        assert "u1" in svg_texts(svg)  # ET.fromstring raises ParseError today
