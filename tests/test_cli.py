"""The command line: every command and option, exact output and exit codes, then the graph
checked through the library; and the installed script and ``python -m identity_graph`` run
as real processes.

Exit codes: 0 ok, 1 not found or bad input, 2 usage (click's).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import identity_graph
from helpers import P, alias, ev, identify, profiles
from identity_graph import IdentityGraph, MergeRules, __version__
from identity_graph.cli import cli

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample-history.jsonl"
SAMPLE_INVALID = "userId: must be a string or an integer, not a boolean"

#: The graph the sample history resolves to (see the README).
SAMPLE_GRAPH = {
    P("507f191e81", "jen@email.com", "anon-laptop-7f3a", "anon-phone-19c2", "anon-family-ipad"),
    P("9001", "bob@email.com", "anon-bob-desktop"),
    P("carol@email.com", "anon-carol-tablet"),
}
JEN = "507f191e81\n507f191e81 *\nanon-family-ipad\nanon-laptop-7f3a\nanon-phone-19c2\njen@email.com\n"
COMMANDS = ["alias", "delete", "explain", "export", "history", "identify", "import", "ingest", "lookup", "rules",
            "show", "stats", "unmerge"]
SAME_ID = "applied: no link (the two IDs are the same)\n"
BLOCKED_WHY = "is a blocked value, never an ID (a placeholder clients send; see `identity-graph rules`)"


def blocked_line(value: str) -> str:
    return f"{value!r} is blank, never an ID" if not value.strip() else f"{value!r} {BLOCKED_WHY}"
KNOWN_ID = "refused, the anonymous ID's profile already holds a known user ID (known_id)"
SIZE_CAP = "refused, the merged profile would hold more than max_profile_ids IDs (size_cap)"
UNREACHABLE = "postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/x?connect_timeout=2"
HISTOGRAM_LABELS = ["1", "2", "3-5", "6-10", "11-100", "101-1000", ">1000"]

#: IDs that break naive CSV writers and readers.
NASTY = [
    "plain", "a,b", ",leading-comma", 'say "hi"', '"', '""', "line\nfeed", "carriage\rreturn", "crlf\r\nend",
    "\r\nx", "tab\there", " padded ", "=1+2", "=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\t=cmd",
    "Jürgen", "例え", "😀 emoji", "back\\slash", "semi;colon", "'quote", "\u2028line-sep", "\x85next-line",
]


def invoke(url: str | None, *args: Any, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
    argv = (["--db", url] if url is not None else []) + [str(a) for a in args]
    return CliRunner().invoke(cli, argv, input=input, env=env, prog_name="identity-graph")


def seed(url: str, events: list[dict[str, Any]] | None = None, rules: MergeRules | None = None) -> None:
    with IdentityGraph(url, rules=rules) as g:
        if events is None:
            events = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines()]
        g.ingest_many(events)


def graph_of(url: str) -> set[tuple[str, frozenset[str]]]:
    with IdentityGraph(url) as g:
        return profiles(g)


def ok(result: Result) -> str:
    """The stdout of a command that must have succeeded without a word on stderr."""
    assert (result.exit_code, result.stderr) == (0, ""), (result.exit_code, result.output, result.exception)
    return result.stdout


def failed(result: Result, code: int = 1) -> str:
    """The stderr of a command that must have failed with ``code`` and printed nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


# -- the group: --db, IDENTITY_GRAPH_DB, the default file, --version, --help -----------------


@pytest.mark.parametrize("flag", ["--version"])
def test_version_prints_the_package_version(flag: str) -> None:
    result = invoke(None, flag)
    assert ok(result) == f"identity-graph, version {__version__}\n"
    assert __version__ == "0.1.0"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_group_help_lists_every_command_and_the_db_option(flag: str) -> None:
    out = ok(invoke(None, flag))
    assert out.startswith("Usage: identity-graph [OPTIONS] COMMAND [ARGS]...\n")
    assert "--db TEXT" in out and "IDENTITY_GRAPH_DB" in out and "--version" in out
    listed = out.split("Commands:\n", 1)[1]
    assert sorted(line.split()[0] for line in listed.splitlines() if line.strip()) == COMMANDS


def test_the_cli_has_exactly_the_commands_of_the_spec() -> None:
    assert sorted(cli.commands) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_with_an_example(command: str, flag: str) -> None:
    out = ok(invoke(None, command, flag))
    assert out.startswith(f"Usage: identity-graph {command} ")
    assert "Example:\n" in out
    example = out.split("Example:\n", 1)[1].splitlines()[0]
    assert "identity-graph " in example and f" {command}" in example, example


def test_db_option_selects_the_graph(graph_url: str) -> None:
    seed(graph_url)
    assert ok(invoke(graph_url, "lookup", "jen@email.com")) == JEN


def test_db_comes_from_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'env.db'}"
    seed(url)
    assert ok(invoke(None, "lookup", "jen@email.com", env={"IDENTITY_GRAPH_DB": url})) == JEN
    assert ok(invoke(None, "alias", "new-id", "jen@email.com", env={"IDENTITY_GRAPH_DB": url})) == (
        "new-id -> jen@email.com: merged into 507f191e81\n")
    with IdentityGraph(url) as g:
        assert g.resolve("new-id") == "507f191e81"
    assert not (tmp_path / "identity-graph.db").exists()


def test_db_option_wins_over_the_environment_variable(tmp_path: Path) -> None:
    used, ignored = f"sqlite:///{tmp_path / 'used.db'}", f"sqlite:///{tmp_path / 'ignored.db'}"
    seed(used)
    assert ok(invoke(used, "lookup", "jen@email.com", env={"IDENTITY_GRAPH_DB": ignored})) == JEN
    assert not (tmp_path / "ignored.db").exists()


def test_the_default_db_is_identity_graph_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDENTITY_GRAPH_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert "[default: sqlite:///identity-graph.db]" in ok(invoke(None, "--help"))
    assert ok(invoke(None, "identify", "u1", "a1", env={"IDENTITY_GRAPH_DB": None})) == (
        "a1 -> u1: merged into u1\n")
    assert (tmp_path / "identity-graph.db").is_file()
    with IdentityGraph(f"sqlite:///{tmp_path / 'identity-graph.db'}") as g:
        assert profiles(g) == {P("u1", "a1")}


def test_a_bad_database_url_exits_1_with_one_line(tmp_path: Path) -> None:
    err = failed(invoke("foo://x", "lookup", "a"))
    assert err.startswith("Error: cannot open 'foo://x': ")
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("args", [["lookup", "a"], ["alias", "a", "b"], ["identify", "u", "a"], ["stats"],
                                  ["rules"], ["export"], ["ingest", "-"]])
def test_an_unreachable_database_exits_1_with_one_line_and_hides_the_password(args: list[str]) -> None:
    err = failed(invoke(UNREACHABLE, *args, input=b""))
    assert err.startswith("Error: cannot connect to ")
    assert err.count("\n") == 1, err
    assert "s3cret-pw" not in err


@pytest.mark.parametrize("args", [["nope"], ["lookup"], ["lookup", "a", "b"], ["lookup", "a", "--yaml"],
                                  ["alias", "a"], ["identify", "u"], ["export", "--format", "xml"],
                                  ["stats", "--csv"], ["rules", "extra"], ["--db"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = invoke(f"sqlite:///{tmp_path / 'g.db'}", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Error: " in result.stderr and "Traceback" not in result.stderr


# -- lookup --------------------------------------------------------------------------------


def test_lookup_prints_the_canonical_then_every_id_sorted_with_the_canonical_marked(graph_url: str) -> None:
    seed(graph_url)
    for member in ("507f191e81", "jen@email.com", "anon-family-ipad"):
        assert ok(invoke(graph_url, "lookup", member)) == JEN
    assert ok(invoke(graph_url, "lookup", "bob@email.com")) == "9001\n9001 *\nanon-bob-desktop\nbob@email.com\n"
    # The canonical sorts last here: it is still printed first, and marked in its place.
    assert ok(invoke(graph_url, "lookup", "anon-carol-tablet")) == (
        "carol@email.com\nanon-carol-tablet\ncarol@email.com *\n")


def test_lookup_of_a_lone_id(graph_url: str) -> None:
    seed(graph_url, [ev("track", 1, "m1", userId="solo")])
    assert ok(invoke(graph_url, "lookup", "solo")) == "solo\nsolo *\n"
    assert ok(invoke(graph_url, "lookup", "solo", "--json")) == '{"id": "solo", "canonical": "solo", "ids": ["solo"]}\n'


def test_lookup_sorts_by_code_point_on_every_backend(graph_url: str) -> None:
    others = ["B", "a", "é", "Z", "10", "9", "_x", "-y", "中", "😀", "a b", "ß"]
    seed(graph_url, [alias(i, f"m{i}", other, "b") for i, other in enumerate(others)])
    ids = sorted(others + ["b"])
    assert ids[:4] == ["-y", "10", "9", "B"]
    assert ok(invoke(graph_url, "lookup", "中")) == "b\n" + "".join(f"{i} *\n" if i == "b" else f"{i}\n" for i in ids)
    assert json.loads(ok(invoke(graph_url, "lookup", "😀", "--json"))) == {"id": "😀", "canonical": "b", "ids": ids}


def test_lookup_json_is_one_line_with_the_id_asked_the_canonical_and_the_sorted_ids(graph_url: str) -> None:
    seed(graph_url)
    out = ok(invoke(graph_url, "lookup", "anon-bob-desktop", "--json"))
    assert out == (
        '{"id": "anon-bob-desktop", "canonical": "9001", "ids": ["9001", "anon-bob-desktop", "bob@email.com"]}\n')
    out = ok(invoke(graph_url, "lookup", "--json", "jen@email.com"))  # option before the argument
    jen_ids = JEN.replace(" *", "").split()[1:]
    assert json.loads(out) == {"id": "jen@email.com", "canonical": "507f191e81", "ids": jen_ids}


def test_lookup_json_keeps_non_ascii_as_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url, [alias(1, "m1", "Jürgen", "例え")])
    assert ok(invoke(url, "lookup", "Jürgen", "--json")) == (
        '{"id": "Jürgen", "canonical": "例え", "ids": ["Jürgen", "例え"]}\n')


def test_lookup_of_an_unknown_id_exits_1(graph_url: str) -> None:
    seed(graph_url)
    assert failed(invoke(graph_url, "lookup", "nobody")) == "Error: unknown ID 'nobody'\n"
    assert failed(invoke(graph_url, "lookup", "nobody", "--json")) == "Error: unknown ID 'nobody'\n"
    # IDs are taken as they are: no trimming, no case folding (rule 1).
    assert failed(invoke(graph_url, "lookup", "JEN@email.com")) == "Error: unknown ID 'JEN@email.com'\n"
    assert failed(invoke(graph_url, "lookup", " 9001")) == "Error: unknown ID ' 9001'\n"


def test_lookup_on_an_empty_graph_exits_1(graph_url: str) -> None:
    assert failed(invoke(graph_url, "lookup", "x")) == "Error: unknown ID 'x'\n"


@pytest.mark.parametrize("value", ["undefined", "NULL", "None", "[object Object]", "0", "-1", "", " ", "\t"])
def test_lookup_of_a_blocked_value_says_it_is_blocked(graph_url: str, value: str) -> None:
    seed(graph_url)
    # "--": "-1" would otherwise be read as an option.
    assert failed(invoke(graph_url, "lookup", "--", value)) == f"Error: {blocked_line(value)}\n"


def test_lookup_of_a_value_blocked_by_the_graphs_own_rules(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url, [identify(1, "m1", user="u1", anon="N/A")], rules=MergeRules(blocked_values=frozenset({"n/a"})))
    assert failed(invoke(url, "lookup", "n/A")) == f"Error: 'n/A' {BLOCKED_WHY}\n"
    # ... and a default blocked value is an ordinary ID in that graph.
    seed(url, [ev("track", 2, "m2", userId="undefined")])
    assert ok(invoke(url, "lookup", "undefined")) == "undefined\nundefined *\n"


def test_lookup_of_the_largest_allowed_profile(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url, [alias(0, f"m{i}", f"id{i:04d}", "id0000") for i in range(1, 1000)])
    out = ok(invoke(url, "lookup", "id0500"))
    lines = out.splitlines()
    assert len(lines) == 1001
    assert lines[:3] == ["id0000", "id0000 *", "id0001"] and lines[-1] == "id0999"


def test_lookup_does_not_change_the_graph(graph_url: str) -> None:
    seed(graph_url)
    with IdentityGraph(graph_url) as g:
        before = (dict(g.identities()), g.stats())
    for args in (["lookup", "jen@email.com"], ["lookup", "nobody"], ["lookup", "null", "--json"]):
        invoke(graph_url, *args)
    with IdentityGraph(graph_url) as g:
        assert (dict(g.identities()), g.stats()) == before


def test_lookup_usage_names_the_argument_id(tmp_path: Path) -> None:
    """The spec says ``lookup ID [--json]``; the usage line should not leak the Python name ``id_``."""
    out = ok(invoke(f"sqlite:///{tmp_path / 'g.db'}", "lookup", "--help"))
    assert out.splitlines()[0] == "Usage: identity-graph lookup [OPTIONS] ID"
    result = invoke(f"sqlite:///{tmp_path / 'g.db'}", "lookup")
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: Missing argument 'ID'.\n"), result.stderr


# -- alias and identify ----------------------------------------------------------------------


def test_alias_merges_and_says_into_which_canonical(graph_url: str) -> None:
    assert ok(invoke(graph_url, "alias", "jen@email.com", "507f191e81")) == (
        "jen@email.com -> 507f191e81: merged into 507f191e81\n")
    assert graph_of(graph_url) == {P("507f191e81", "jen@email.com")}


def test_alias_into_a_profile_keeps_that_profiles_canonical(graph_url: str) -> None:
    seed(graph_url)
    assert ok(invoke(graph_url, "alias", "jen-new@email.com", "anon-phone-19c2")) == (
        "jen-new@email.com -> anon-phone-19c2: merged into 507f191e81\n")
    # Explicit aliases are never refused by protection: two known users merge (rule 5).
    assert ok(invoke(graph_url, "alias", "carol@email.com", "9001")) == "carol@email.com -> 9001: merged into 9001\n"
    with IdentityGraph(graph_url) as g:
        assert g.resolve("jen-new@email.com") == "507f191e81"
        assert sorted(g.profile("anon-carol-tablet").ids) == [
            "9001", "anon-bob-desktop", "anon-carol-tablet", "bob@email.com", "carol@email.com"]


def test_alias_of_two_ids_already_together(graph_url: str) -> None:
    seed(graph_url)
    assert ok(invoke(graph_url, "alias", "anon-laptop-7f3a", "jen@email.com")) == (
        "anon-laptop-7f3a -> jen@email.com: already together in 507f191e81\n")
    assert graph_of(graph_url) == SAMPLE_GRAPH


def test_alias_refused_by_the_size_cap_says_why(graph_url: str) -> None:
    seed(graph_url, [alias(1, "m1", "a", "b")], rules=MergeRules(max_profile_ids=2))
    assert ok(invoke(graph_url, "alias", "c", "b")) == f"c -> b: {SIZE_CAP}\n"
    assert graph_of(graph_url) == {P("b", "a"), P("c")}
    with IdentityGraph(graph_url) as g:
        assert g.stats().links_refused == {"size_cap": 1}


def test_alias_events_are_timestamped_now_with_a_new_message_id_each(graph_url: str) -> None:
    before = datetime.now(timezone.utc)
    ok(invoke(graph_url, "alias", "a", "b"))
    ok(invoke(graph_url, "alias", "a", "b"))
    after = datetime.now(timezone.utc)
    with IdentityGraph(graph_url) as g:
        s = g.stats()
    assert (s.events, s.duplicates, s.links_merged, s.links_together) == (2, 0, 1, 1)
    assert before - timedelta(seconds=1) <= s.newest_event <= after + timedelta(seconds=1)


def test_alias_to_itself_or_with_a_blocked_value_links_nothing(graph_url: str) -> None:
    assert ok(invoke(graph_url, "alias", "a", "a")) == SAME_ID
    assert ok(invoke(graph_url, "alias", "undefined", "u1")) == f"applied: no link\n{blocked_line('undefined')}\n"
    assert ok(invoke(graph_url, "alias", "null", " ")) == (
        f"blocked: nothing changed\n{blocked_line('null')}\n{blocked_line(' ')}\n")
    with IdentityGraph(graph_url) as g:
        assert profiles(g) == {P("a"), P("u1")}
        assert g.stats().known_ids == 2


@pytest.mark.parametrize("command", ["alias", "identify"])
def test_an_invalid_id_exits_1_naming_the_field_and_changes_nothing(graph_url: str, command: str) -> None:
    long = "x" * 1025
    first, second = ("previousId", "userId") if command == "alias" else ("userId", "anonymousId")
    assert failed(invoke(graph_url, command, "ok", long)) == f"Error: {second}: is longer than 1024 characters (1025)\n"
    assert failed(invoke(graph_url, command, "a\0b", "ok")).startswith(f"Error: {first}: ")
    with IdentityGraph(graph_url) as g:
        assert (g.stats().ids, g.stats().events) == (0, 0)


def test_identify_links_the_device_to_the_user(graph_url: str) -> None:
    assert ok(invoke(graph_url, "identify", "u1", "a1")) == "a1 -> u1: merged into u1\n"
    assert ok(invoke(graph_url, "identify", "u1", "a1")) == "a1 -> u1: already together in u1\n"
    assert graph_of(graph_url) == {P("u1", "a1")}


def test_identify_on_a_shared_device_is_refused_and_says_why(graph_url: str) -> None:
    seed(graph_url)
    assert ok(invoke(graph_url, "identify", "dave@email.com", "anon-family-ipad")) == (
        f"anon-family-ipad -> dave@email.com: {KNOWN_ID}\n")
    assert graph_of(graph_url) == SAMPLE_GRAPH | {P("dave@email.com")}


def test_identify_into_an_existing_profile_names_its_canonical(graph_url: str) -> None:
    seed(graph_url)
    assert ok(invoke(graph_url, "identify", "jen@email.com", "anon-watch-01")) == (
        "anon-watch-01 -> jen@email.com: merged into 507f191e81\n")
    with IdentityGraph(graph_url) as g:
        assert g.resolve("anon-watch-01") == "507f191e81"


def test_identify_with_a_blocked_anonymous_id_only_makes_the_user_known(graph_url: str) -> None:
    assert ok(invoke(graph_url, "identify", "u1", "undefined")) == f"applied: no link\n{blocked_line('undefined')}\n"
    assert ok(invoke(graph_url, "identify", "null", "")) == (
        f"blocked: nothing changed\n{blocked_line('null')}\n{blocked_line('')}\n")
    with IdentityGraph(graph_url) as g:
        assert profiles(g) == {P("u1")}
        assert (g.stats().known_ids, g.stats().events) == (1, 2)


def test_identify_and_alias_give_the_library_graph(graph_url: str, tmp_path: Path) -> None:
    steps = [("identify", "u1", "a1"), ("identify", "u2", "a1"), ("alias", "u1", "u2"), ("identify", "u2", "a2"),
             ("alias", "e@x", "u1")]
    for step in steps:
        ok(invoke(graph_url, *step))
    with IdentityGraph(f"sqlite:///{tmp_path / 'lib.db'}") as lib:
        for name, *args in steps:
            getattr(lib, name)(*args)
        expected = profiles(lib)
    assert graph_of(graph_url) == expected == {P("u2", "u1", "a1", "a2", "e@x")}


# -- ingest ----------------------------------------------------------------------------------


def test_ingest_a_file_prints_the_counts(graph_url: str) -> None:
    result = invoke(graph_url, "ingest", SAMPLE)
    assert result.exit_code == 0
    assert result.stdout == "14 applied, 1 duplicate, 1 blocked, 1 invalid\n"
    assert result.stderr == f"{SAMPLE}:17: {SAMPLE_INVALID}\n"
    assert graph_of(graph_url) == SAMPLE_GRAPH


@pytest.mark.parametrize("args", [["-"], []])
def test_ingest_reads_stdin_for_a_dash_or_no_argument(graph_url: str, args: list[str]) -> None:
    result = invoke(graph_url, "ingest", *args, input=SAMPLE.read_bytes())
    assert result.exit_code == 0
    assert result.stdout == "14 applied, 1 duplicate, 1 blocked, 1 invalid\n"
    assert result.stderr == f"-:17: {SAMPLE_INVALID}\n"
    assert graph_of(graph_url) == SAMPLE_GRAPH


@pytest.mark.parametrize("flag", ["--verbose", "-v"])
def test_ingest_verbose_prints_one_result_line_per_event(tmp_path: Path, flag: str) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = invoke(url, "ingest", flag, "-", input=SAMPLE.read_bytes())
    assert result.exit_code == 0
    assert result.stdout == (
        "-:1: applied\n"
        "-:2: applied\n"
        "-:3: applied: anon-laptop-7f3a -> jen@email.com merged\n"
        "-:4: applied: jen@email.com -> 507f191e81 merged\n"
        "-:5: applied\n"
        "-:6: applied: anon-phone-19c2 -> 507f191e81 merged\n"
        "-:7: applied\n"
        "-:8: applied: anon-family-ipad -> 507f191e81 merged\n"
        "-:9: applied: anon-family-ipad -> bob@email.com refused (known_id)\n"
        "-:10: applied\n"
        "-:11: applied: anon-bob-desktop -> bob@email.com merged\n"
        "-:12: applied\n"
        "-:13: blocked\n"
        "-:14: duplicate\n"
        "-:15: applied: anon-carol-tablet -> carol@email.com merged\n"
        "-:16: applied: bob@email.com -> 9001 merged\n"
        "14 applied, 1 duplicate, 1 blocked, 1 invalid\n"
    )
    assert result.stderr == f"-:17: {SAMPLE_INVALID}\n"


def test_ingest_verbose_shows_together_and_size_cap_and_both_links_of_an_alias(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    IdentityGraph(url, rules=MergeRules(max_profile_ids=3)).close()
    events = [identify(1, "m1", user="u1", anon="a1"), identify(2, "m2", user="u1", anon="a1"),
              alias(3, "m3", "p1", "u1", anonymousId="a2"), identify(4, "m4", user="u1", anon="a3")]
    result = invoke(url, "ingest", "-v", input=jsonl(events))
    assert ok(result) == (
        "-:1: applied: a1 -> u1 merged\n"
        "-:2: applied: a1 -> u1 together\n"
        "-:3: applied: p1 -> u1 merged, a2 -> u1 refused (size_cap)\n"
        "-:4: applied: a3 -> u1 refused (size_cap)\n"
        "4 applied, 0 duplicate, 0 blocked, 0 invalid\n"
    )
    assert graph_of(url) == {P("u1", "a1", "p1"), P("a2"), P("a3")}


def test_ingest_again_is_a_no_op(graph_url: str) -> None:
    assert invoke(graph_url, "ingest", SAMPLE).exit_code == 0
    with IdentityGraph(graph_url) as g:
        before = (dict(g.identities()), g.stats().events)
    result = invoke(graph_url, "ingest", SAMPLE)
    assert result.stdout == "0 applied, 16 duplicate, 0 blocked, 1 invalid\n"
    with IdentityGraph(graph_url) as g:
        assert (dict(g.identities()), g.stats().events) == before


def test_ingest_reports_bad_lines_by_number_and_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    try:
        orjson.loads(b"{not json")
    except orjson.JSONDecodeError as exc:
        bad_json = f"invalid JSON ({exc})"
    data = (b'{not json\n\n   \n["identify"]\n' + jsonl([identify(1, "m1", user="u1", anon="a1")])
            + b'{"type":"identify"}\n' + b'{"type":"login","userId":"u"}\n' + b"42\n")
    result = invoke(url, "ingest", "-v", "-", input=data)
    assert result.exit_code == 0
    assert result.stdout == "-:5: applied: a1 -> u1 merged\n1 applied, 0 duplicate, 0 blocked, 5 invalid\n"
    assert result.stderr == (
        f"-:1: {bad_json}\n"
        "-:4: event: must be a JSON object, not an array\n"
        "-:6: userId: the event has neither a userId nor an anonymousId\n"
        "-:7: type: 'login' is not one of alias, group, identify, page, screen, track\n"
        "-:8: event: must be a JSON object, not an integer\n"
    )
    assert graph_of(url) == {P("u1", "a1")}


def test_ingest_decodes_lines_as_import_does(tmp_path: Path) -> None:
    # A BOM on any line (files joined with cat), a batch envelope, bytes that are not UTF-8.
    url = f"sqlite:///{tmp_path / 'g.db'}"
    envelope = {"batch": [identify(2, "m2", user="u2", anon="a2"), {"type": "identify"}]}
    data = (b"\xef\xbb\xbf" + jsonl([identify(1, "m1", user="u1", anon="a1")]) + jsonl([envelope])
            + b'{"type":"identify","userId":"\xff"}\n')
    result = invoke(url, "ingest", "-", input=data)
    assert (result.exit_code, result.stdout) == (0, "2 applied, 0 duplicate, 0 blocked, 2 invalid\n")
    assert result.stderr == (
        "-:2: batch[1]: userId: the event has neither a userId nor an anonymousId\n"
        "-:3: invalid JSON (not UTF-8: byte 0xff at column 30)\n"
    )
    assert graph_of(url) == {P("u1", "a1"), P("u2", "a2")}


def test_ingest_of_empty_input(graph_url: str) -> None:
    assert ok(invoke(graph_url, "ingest", "-", input=b"")) == "0 applied, 0 duplicate, 0 blocked, 0 invalid\n"


def test_ingest_and_import_give_the_same_graph(graph_url: str, tmp_path: Path) -> None:
    assert invoke(graph_url, "ingest", SAMPLE).exit_code == 0
    other = f"sqlite:///{tmp_path / 'imported.db'}"
    assert invoke(other, "import", "--quiet", SAMPLE).exit_code == 0
    with IdentityGraph(graph_url) as a, IdentityGraph(other) as b:
        assert list(a.identities()) == list(b.identities())


def test_ingest_of_a_missing_file_exits_1_like_import(tmp_path: Path) -> None:
    """Spec: exit 1 for "not found"; ``import`` of a missing path exits 1, ``ingest`` should too."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    missing = tmp_path / "nope.jsonl"
    assert invoke(url, "import", missing).exit_code == 1
    err = failed(invoke(url, "ingest", missing))
    assert err.startswith("Error: ") and str(missing) in err
    assert err.count("\n") == 1, err


# -- export ----------------------------------------------------------------------------------

SAMPLE_MAP = sorted((i, c) for c, ids in SAMPLE_GRAPH for i in ids)


def test_export_csv_is_the_sorted_map_with_a_header_and_crlf_line_ends(graph_url: str) -> None:
    seed(graph_url)
    for args in ([], ["--format", "csv"]):
        result = invoke(graph_url, "export", *args)
        assert (result.exit_code, result.stderr) == (0, "")
        assert result.stdout_bytes == b"id,canonical\r\n" + b"".join(f"{i},{c}\r\n".encode() for i, c in SAMPLE_MAP)


def test_export_jsonl_is_one_object_per_id_sorted(graph_url: str) -> None:
    seed(graph_url)
    out = ok(invoke(graph_url, "export", "--format", "jsonl"))
    assert out == "".join(f'{{"id": "{i}", "canonical": "{c}"}}\n' for i, c in SAMPLE_MAP)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("flag", ["--output", "-o"])
def test_export_output_writes_the_file_and_nothing_on_stdout(
    graph_url: str, tmp_path: Path, fmt: str, flag: str
) -> None:
    seed(graph_url)
    path = tmp_path / f"map.{fmt}"
    path.write_text("old content that must go\n" * 100)
    assert ok(invoke(graph_url, "export", "--format", fmt, flag, path)) == ""
    assert path.read_bytes() == invoke(graph_url, "export", "--format", fmt).stdout_bytes


def test_export_of_an_empty_graph(graph_url: str, tmp_path: Path) -> None:
    assert invoke(graph_url, "export").stdout_bytes == b"id,canonical\r\n"
    assert ok(invoke(graph_url, "export", "--format", "jsonl")) == ""


def _nasty_events() -> list[dict[str, Any]]:
    events = []
    for k, nasty in enumerate(NASTY):
        if k % 3 == 0:
            events.append(ev("track", k, f"t{k}", userId=nasty))  # its own canonical
        else:
            events.append(alias(k, f"a{k}", nasty, NASTY[k - 1] if k % 3 == 2 else f"plain-{k}"))
    return events


def test_export_csv_round_trips_nasty_ids_through_the_csv_reader(graph_url: str, tmp_path: Path) -> None:
    seed(graph_url, _nasty_events())
    with IdentityGraph(graph_url) as g:
        expected = list(g.identities())
    assert {i for i, _ in expected} >= set(NASTY)
    assert expected == sorted(expected)
    assert {c for _, c in expected} & set(NASTY) - {"plain"}  # nasty canonicals too

    stdout = invoke(graph_url, "export").stdout_bytes.decode("utf-8")
    rows = list(csv.reader(io.StringIO(stdout, newline="")))
    assert rows == [["id", "canonical"]] + [[i, c] for i, c in expected]

    path = tmp_path / "map.csv"
    assert ok(invoke(graph_url, "export", "--output", path)) == ""
    with open(path, newline="", encoding="utf-8") as f:
        assert list(csv.DictReader(f)) == [{"id": i, "canonical": c} for i, c in expected]
    assert path.read_bytes().decode("utf-8") == stdout


def test_export_csv_quotes_only_what_rfc_4180_needs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url, [ev("track", k, f"t{k}", userId=i) for k, i in enumerate(['a,b', 'say "hi"', "x\ny", "c\rd", "=1+2"])])
    assert invoke(url, "export").stdout_bytes.decode() == (
        'id,canonical\r\n=1+2,=1+2\r\n"a,b","a,b"\r\n"c\rd","c\rd"\r\n"say ""hi""","say ""hi"""\r\n"x\ny","x\ny"\r\n')


def test_export_jsonl_round_trips_nasty_ids(graph_url: str, tmp_path: Path) -> None:
    seed(graph_url, _nasty_events())
    with IdentityGraph(graph_url) as g:
        expected = list(g.identities())
    path = tmp_path / "map.jsonl"
    assert ok(invoke(graph_url, "export", "--format", "jsonl", "-o", path)) == ""
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == [{"id": i, "canonical": c} for i, c in expected]


def test_export_sorts_by_code_point_on_every_backend(graph_url: str) -> None:
    ids = ["b", "B", "a", "é", "Z", "10", "9", "_x", "-y", "中", "😀", "a b", "ß", "ab", "a-b"]
    seed(graph_url, [ev("track", k, f"t{k}", userId=i) for k, i in enumerate(ids)])
    out = ok(invoke(graph_url, "export", "--format", "jsonl"))
    assert [json.loads(line)["id"] for line in out.splitlines()] == sorted(ids)


# -- stats -----------------------------------------------------------------------------------

EMPTY_STATS = """\
IDs:          0 (0 known)
profiles:     0
events:       0 (duplicates seen: 0)
newest event: -
links:        0 merged, 0 together, 0 refused
profile sizes:
          1  0
          2  0
        3-5  0
       6-10  0
     11-100  0
   101-1000  0
      >1000  0
largest profiles:
"""


def test_stats_of_an_empty_graph(graph_url: str) -> None:
    assert ok(invoke(graph_url, "stats")) == EMPTY_STATS
    assert json.loads(ok(invoke(graph_url, "stats", "--json"))) == {
        "ids": 0, "known_ids": 0, "profiles": 0, "events": 0, "duplicates": 0, "newest_event": None,
        "size_histogram": dict.fromkeys(HISTOGRAM_LABELS, 0), "largest_profiles": [],
        "links": {"merged": 0, "together": 0, "refused": {}, "unmerged": 0},
    }


def test_stats_of_the_sample_history(graph_url: str) -> None:
    assert invoke(graph_url, "ingest", SAMPLE).exit_code == 0
    assert ok(invoke(graph_url, "stats")) == """\
IDs:          10 (5 known)
profiles:     3
events:       15 (duplicates seen: 1)
newest event: 2024-05-06T09:00:00+00:00
links:        7 merged, 0 together, 1 refused (known_id 1)
profile sizes:
          1  0
          2  1
        3-5  2
       6-10  0
     11-100  0
   101-1000  0
      >1000  0
largest profiles:
          5  507f191e81
          3  9001
          2  carol@email.com
"""


def test_stats_json_has_every_figure(graph_url: str) -> None:
    assert invoke(graph_url, "ingest", SAMPLE).exit_code == 0
    out = ok(invoke(graph_url, "stats", "--json"))
    assert json.loads(out) == {
        "ids": 10, "known_ids": 5, "profiles": 3, "events": 15, "duplicates": 1,
        "newest_event": "2024-05-06T09:00:00+00:00",
        "size_histogram": {"1": 0, "2": 1, "3-5": 2, "6-10": 0, "11-100": 0, "101-1000": 0, ">1000": 0},
        "largest_profiles": [{"canonical": "507f191e81", "size": 5}, {"canonical": "9001", "size": 3},
                             {"canonical": "carol@email.com", "size": 2}],
        "links": {"merged": 7, "together": 0, "refused": {"known_id": 1}, "unmerged": 0},
    }
    with IdentityGraph(graph_url) as g:
        assert json.loads(out) == g.stats().to_dict()


def test_stats_lists_the_ten_largest_profiles_ties_by_canonical(graph_url: str) -> None:
    # Profiles of sizes 1..12, plus "a" and "B" of size 3: the tenth place is a three-way tie
    # of size 3, broken by canonical in code-point order ("B" < "a" < "p03").
    events = []
    for size in range(1, 13):
        events.append(ev("track", size, f"t{size}", userId=f"p{size:02d}"))
        events += [alias(size, f"a{size}-{k}", f"p{size:02d}-{k}", f"p{size:02d}") for k in range(1, size)]
    for canonical in ("a", "B"):
        events += [alias(20, f"x{canonical}{k}", f"q{canonical}{k}", canonical) for k in (1, 2)]
    seed(graph_url, events)
    out = ok(invoke(graph_url, "stats"))
    head, largest = out.split("largest profiles:\n", 1)
    assert largest == "".join(f"  {size:>9}  p{size:02d}\n" for size in range(12, 3, -1)) + "          3  B\n"
    assert head == (
        "IDs:          84 (14 known)\n"
        "profiles:     14\n"
        "events:       82 (duplicates seen: 0)\n"
        "newest event: 2024-01-01T00:00:20+00:00\n"
        "links:        70 merged, 0 together, 0 refused\n"
        "profile sizes:\n"
        "          1  1\n"
        "          2  1\n"
        "        3-5  5\n"
        "       6-10  5\n"
        "     11-100  2\n"
        "   101-1000  0\n"
        "      >1000  0\n"
    )
    assert json.loads(ok(invoke(graph_url, "stats", "--json")))["largest_profiles"] == (
        [{"canonical": f"p{size:02d}", "size": size} for size in range(12, 3, -1)] + [{"canonical": "B", "size": 3}])


def test_stats_counts_refusals_by_reason(graph_url: str) -> None:
    seed(graph_url, [identify(1, "m1", user="u1", anon="a1"), identify(2, "m2", user="u1", anon="a2"),
                     identify(3, "m3", user="u2", anon="a1"), identify(4, "m4", user="u3", anon="a1"),
                     identify(5, "m5", user="u1", anon="a1"), identify(5, "m5", user="u1", anon="a1")],
         rules=MergeRules(max_profile_ids=2))
    out = ok(invoke(graph_url, "stats"))
    assert "links:        1 merged, 1 together, 3 refused (known_id 2, size_cap 1)\n" in out
    assert "events:       5 (duplicates seen: 1)\n" in out
    assert "newest event: 2024-01-01T00:00:05+00:00\n" in out
    assert json.loads(ok(invoke(graph_url, "stats", "--json")))["links"] == {
        "merged": 1, "together": 1, "refused": {"known_id": 2, "size_cap": 1}, "unmerged": 0}


# -- rules -----------------------------------------------------------------------------------


def test_rules_of_a_default_graph(graph_url: str) -> None:
    assert ok(invoke(graph_url, "rules")) == (
        "max_profile_ids:   1000\n"
        "protect_known_ids: true\n"
        "blocked_values:    '-1', '0', '[object object]', 'anonymous', 'nan', 'none', 'null', 'undefined',"
        " and blank strings\n"
    )


def test_rules_shows_the_rules_the_graph_was_built_with(graph_url: str) -> None:
    IdentityGraph(graph_url, rules=MergeRules(blocked_values=frozenset({"N/A", "guest"}), max_profile_ids=50,
                                              protect_known_ids=False)).close()
    assert ok(invoke(graph_url, "rules")) == (
        "max_profile_ids:   50\nprotect_known_ids: false\nblocked_values:    'guest', 'n/a', and blank strings\n")
    with IdentityGraph(graph_url) as g:  # the command did not change them
        assert g.rules == MergeRules(blocked_values=frozenset({"n/a", "guest"}), max_profile_ids=50,
                                     protect_known_ids=False)


def test_commands_work_on_a_graph_built_with_other_rules(graph_url: str) -> None:
    IdentityGraph(graph_url, rules=MergeRules(max_profile_ids=2, protect_known_ids=False)).close()
    assert ok(invoke(graph_url, "identify", "u1", "a1")) == "a1 -> u1: merged into u1\n"
    assert ok(invoke(graph_url, "identify", "u2", "a2")) == "a2 -> u2: merged into u2\n"
    assert ok(invoke(graph_url, "identify", "u2", "a1")) == f"a1 -> u2: {SIZE_CAP}\n"


# -- real processes: the installed script and python -m identity_graph ------------------------


def _process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IDENTITY_GRAPH_DB"}
    # The subprocess imports the very package these tests imported.
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(identity_graph.__file__)))
    return env


def _script() -> str:
    found = shutil.which("identity-graph", path=os.path.dirname(sys.executable))
    assert found is not None, f"identity-graph is not installed next to {sys.executable}"
    return found


RUNNERS = {
    "script": lambda: [_script()],
    "python -m": lambda: [sys.executable, "-m", "identity_graph"],
}


def run_process(kind: str, args: list[str], cwd: Path, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(RUNNERS[kind]() + args, cwd=cwd, env=_process_env(), input=input, capture_output=True,
                          timeout=60)


@pytest.mark.parametrize("kind", list(RUNNERS))
def test_process_version(kind: str, tmp_path: Path) -> None:
    proc = run_process(kind, ["--version"], tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"identity-graph, version {__version__}\n".encode(), b"")


@pytest.mark.parametrize("kind", list(RUNNERS))
def test_process_lookup(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url)
    proc = run_process(kind, ["--db", url, "lookup", "jen@email.com"], tmp_path)
    assert (proc.returncode, proc.stdout.decode(), proc.stderr) == (0, JEN, b"")
    proc = run_process(kind, ["--db", url, "lookup", "bob@email.com", "--json"], tmp_path)
    assert proc.stdout == (
        b'{"id": "bob@email.com", "canonical": "9001", "ids": ["9001", "anon-bob-desktop", "bob@email.com"]}\n')


@pytest.mark.parametrize("kind", list(RUNNERS))
def test_process_uses_the_default_file_in_its_working_directory(kind: str, tmp_path: Path) -> None:
    seed(f"sqlite:///{tmp_path / 'identity-graph.db'}")
    proc = run_process(kind, ["lookup", "anon-phone-19c2"], tmp_path)
    assert (proc.returncode, proc.stdout.decode(), proc.stderr) == (0, JEN, b"")


@pytest.mark.parametrize("kind", list(RUNNERS))
def test_process_exit_codes(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url)
    proc = run_process(kind, ["--db", url, "lookup", "nobody"], tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, b"", b"Error: unknown ID 'nobody'\n")
    proc = run_process(kind, ["--db", url, "lookup", "null"], tmp_path)
    assert (proc.returncode, proc.stderr) == (1, f"Error: 'null' {BLOCKED_WHY}\n".encode())
    proc = run_process(kind, ["--db", url, "lookup"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(b"Usage: identity-graph lookup ")


@pytest.mark.parametrize("kind", list(RUNNERS))
def test_process_help_names_the_program_identity_graph(kind: str, tmp_path: Path) -> None:
    proc = run_process(kind, ["--help"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"Usage: identity-graph [OPTIONS] COMMAND [ARGS]...\n")


def test_process_ingest_from_a_pipe_names_stdin_dash_like_import(tmp_path: Path) -> None:
    """``import -`` reports stdin as ``-:LINE:`` (and so does ``ingest`` under CliRunner); a real
    ``ingest -`` process should say the same, not ``<stdin>:LINE:``."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    data = b'{"type":"identify"}\n' + jsonl([identify(1, "m1", user="u1", anon="a1")])
    imported = run_process("script", ["--db", f"sqlite:///{tmp_path / 'i.db'}", "import", "-"], tmp_path, input=data)
    assert imported.stderr.decode() == "-:1: userId: the event has neither a userId nor an anonymousId\n"
    proc = run_process("script", ["--db", url, "ingest", "-v", "-"], tmp_path, input=data)
    assert proc.returncode == 0
    assert proc.stdout.decode() == "-:2: applied: a1 -> u1 merged\n1 applied, 0 duplicate, 0 blocked, 1 invalid\n"
    assert proc.stderr.decode() == "-:1: userId: the event has neither a userId nor an anonymousId\n"
    assert graph_of(url) == {P("u1", "a1")}


def test_process_export_round_trips_nasty_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    seed(url, _nasty_events())
    proc = run_process("script", ["--db", url, "export"], tmp_path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    rows = list(csv.reader(io.StringIO(proc.stdout.decode("utf-8"), newline="")))
    with IdentityGraph(url) as g:
        assert rows == [["id", "canonical"]] + [[i, c] for i, c in g.identities()]
