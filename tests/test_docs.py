"""The documentation keeps up with the command line (in the style of sqlite-utils' test_docs).

Every command of the click group must be shown in README.md as it is typed (``identity-graph
[--db URL] <name> ...`` in a code block or an inline code span), must have help text, and its
help must carry an ``Example:`` section that runs that very command. A new command without
docs fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import shutil

import click
import pytest
from click.testing import CliRunner

from identity_graph.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
COMMANDS = sorted(cli.commands)


def _code_lines(markdown: str) -> list[str]:
    """Every line of the fenced code blocks, and every inline code span."""
    lines: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line)
        else:
            lines.extend(re.findall(r"`([^`\n]+)`", line))
    return lines


def _invoked_command(line: str) -> str | None:
    """The command name an ``identity-graph ...`` line runs, after the group's options."""
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:]
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    for start, word in enumerate(words):
        if word == "identity-graph" or word.endswith("/identity-graph"):
            break
    else:
        return None
    rest = iter(words[start + 1:])
    for word in rest:
        if word == "--db":
            next(rest, None)
        elif word.startswith("["):  # synopsis: identity-graph [--db URL] COMMAND
            while not word.endswith("]"):
                word = next(rest, "]")
        elif not word.startswith("-"):
            return word
    return None


def _documented_commands() -> set[str]:
    found = set()
    for line in _code_lines(README.read_text(encoding="utf-8")):
        for piece in re.split(r"[|;&]", line):  # `... | identity-graph ingest -`
            name = _invoked_command(piece)
            if name is not None:
                found.add(name)
    return found


def test_the_cli_has_commands() -> None:
    assert len(COMMANDS) >= 8, COMMANDS


def test_the_readme_parser_finds_invocations() -> None:
    assert _invoked_command("$ .venv/bin/identity-graph --db sqlite:///my.db ingest events.jsonl") == "ingest"
    assert _invoked_command("identity-graph --db=sqlite:///x.db -h") is None
    assert _invoked_command("tail -f e.jsonl") is None
    assert _invoked_command("identity-graph lookup 9001 --json  # comment") == "lookup"
    assert _invoked_command("identity-graph [--db URL] stats [--json]") == "stats"


def test_a_readme_without_a_command_would_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    stripped = "\n".join(line for line in text.splitlines() if not re.search(r"identity-graph[^`]*\brules\b", line))
    monkeypatch.setitem(globals(), "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text(stripped, encoding="utf-8")
    assert "rules" not in _documented_commands()
    assert "lookup" in _documented_commands()


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_documented_in_the_readme(command: str) -> None:
    documented = _documented_commands()
    assert command in documented, (
        f"README.md never shows `identity-graph {command} ...` (it shows: {', '.join(sorted(documented))})")


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help_text(command: str) -> None:
    cmd: click.Command = cli.commands[command]
    assert cmd.help and cmd.help.strip(), f"{command} has no help text"
    assert cmd.get_short_help_str().strip(), f"{command} has no short help for the command list"
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{command} {param.opts[0]} has no help text"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_an_example_of_itself(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], prog_name="identity-graph")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"{command} --help has no Example section"
    section = result.output.split("Example", 1)[1].split("Options:", 1)[0]
    examples = [line.strip() for line in section.splitlines()[1:] if line.strip()]
    assert examples, f"{command} --help has an empty Example section"
    ran = {name for line in examples for piece in line.split("|") if (name := _invoked_command(piece))}
    assert command in ran, f"the example of {command} does not run `identity-graph {command}`: {examples}"


def test_the_group_help_has_an_example() -> None:
    assert cli.help and "Example" in cli.help


# -- the README's session is what the commands print --------------------------------------

#: What changes from run to run: the import's timing and the time of events made "now".
_VOLATILE = [
    (re.compile(r"in \d+\.\d s \([\d,]+ events/s\)"), "in X s (X events/s)"),
    (re.compile(r"newest event: \d{4}-\d\d-\d\dT[\d:.]+\+00:00"), "newest event: NOW"),
]


def _normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def console_steps(block: str) -> list[tuple[str, str]]:
    """(command line, expected output) of each ``$ ...`` line of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return [(command, "".join(f"{line}\n" for line in out)) for command, out in steps]


def _session() -> list[tuple[str, str]]:
    """(command line, expected output) of each ``$ identity-graph ...`` in the README's session."""
    text = README.read_text(encoding="utf-8")
    return console_steps(text.split("## A session", 1)[1].split("```console\n", 1)[1].split("```", 1)[0])


def test_the_readme_session_is_what_the_commands_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(README.parent / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IDENTITY_GRAPH_DB", raising=False)
    session = _session()
    assert len(session) >= 8
    for command, expected in session:
        command, _, pipe = command.partition(" | ")
        words = shlex.split(command)
        assert words[0] == "identity-graph", command
        result = CliRunner().invoke(cli, words[1:], prog_name="identity-graph")
        output = result.output
        if pipe:
            assert pipe.startswith("head -"), pipe
            output = "".join(output.splitlines(keepends=True)[: int(pipe.split("-")[1])])
        assert _normalise(output) == _normalise(expected), command
        assert result.exit_code == (1 if expected.startswith("Error: ") else 0), command
