"""A profile's graph (see :func:`identity_graph.analysis.profile_graph`) written out as DOT,
GraphML or JSON, or drawn as SVG/PNG by Graphviz.

DOT is written here rather than through pydot or pygraphviz: the text is a few lines of
quoting, and those packages would add two dependencies (one a C build) for it.
GraphML and JSON come from networkx itself.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import networkx as nx

from .errors import IdentityGraphError

FORMATS = ("dot", "graphml", "json", "svg", "png")
GRAPHVIZ_HINT = (
    "Graphviz's `dot` program is needed to draw svg/png: install it (Debian/Ubuntu: apt-get install graphviz;"
    " macOS: brew install graphviz), or use --format dot and draw the file elsewhere"
)


class GraphvizMissing(IdentityGraphError):
    """``dot`` is not installed, so a picture cannot be drawn."""


#: Characters an ID may hold (only NUL is refused) that XML 1.0 cannot, not even as a
#: character reference: C0 controls but tab, LF and CR, and U+FFFE / U+FFFF.
_NOT_XML = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_safe(text: str) -> str:
    r"""``text`` with the characters XML cannot hold written as ``\\xNN`` / ``\\uNNNN``
    (GraphML and the SVG that Graphviz draws are XML).

    >>> xml_safe("anon\x1b[31m")
    'anon\\x1b[31m'
    """
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text)


def _quote(text: str) -> str:
    # DOT double-quoted strings: only the quote and the backslash need escaping; newlines
    # are kept out of labels (an ID may hold one) by escaping them as \n.
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + xml_safe(text) + '"'


def to_dot(graph: nx.MultiDiGraph) -> str:
    """The graph in Graphviz DOT: known IDs as boxes, anonymous IDs as ellipses, the
    canonical in bold, IDs of other profiles grey; merged links solid, refused dashed
    (labelled with the reason), unmerged dotted, already-together thin grey.

    >>> g = nx.MultiDiGraph(canonical="u1")
    >>> g.add_node("u1", known=True, inside=True, canonical=True)
    >>> g.add_node("a1", known=False, inside=True, canonical=False)
    >>> _ = g.add_edge("a1", "u1", kind="implicit", outcome="merged", reason="", message_id="m1", time="t")
    >>> print(to_dot(g))  # doctest: +NORMALIZE_WHITESPACE
    digraph "profile u1" {
      rankdir=LR;
      nodesep=0.4; ranksep=1.2;
      node [fontname="Helvetica", fontsize=10];
      edge [fontname="Helvetica", fontsize=8];
      "u1" [shape=box, style="bold,filled", fillcolor="#cfe2ff"];
      "a1" [shape=ellipse];
      "a1" -> "u1" [label="implicit m1\\nt"];
    }
    """
    lines = [f"digraph {_quote('profile ' + graph.graph.get('canonical', ''))} {{", "  rankdir=LR;",
             "  nodesep=0.4; ranksep=1.2;",
             '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=8];']
    for node, data in graph.nodes(data=True):
        attrs = ["shape=box" if data.get("known") else ("shape=note" if data.get("summary") else "shape=ellipse")]
        if data.get("canonical"):
            attrs.append('style="bold,filled", fillcolor="#cfe2ff"')
        elif not data.get("inside"):
            other = data.get("profile")
            attrs.append('color=grey50, fontcolor=grey50, style=dashed')
            if other:
                attrs.append(f"xlabel={_quote('profile ' + other)}")
        lines.append(f"  {_quote(node)} [{', '.join(attrs)}];")
    for u, v, data in graph.edges(data=True):
        outcome = data.get("outcome")
        label = f"{data.get('kind', '')} {data.get('message_id', '')}"
        if data.get("time"):
            label += f"\n{data['time']}"
        attrs = []
        if outcome == "refused":
            label += f"\nrefused: {data.get('reason', '')}"
            attrs.append("style=dashed, color=red3, fontcolor=red3")
        elif outcome == "unmerged":
            label += "\nunmerged"
            attrs.append("style=dotted, color=grey50")
        elif outcome == "together":
            attrs.append("color=grey70")
        lines.append(f"  {_quote(u)} -> {_quote(v)} [{', '.join([f'label={_quote(label)}', *attrs])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_graphml(graph: nx.MultiDiGraph) -> str:
    """The graph as GraphML (networkx's writer), every node and edge attribute kept;
    characters XML cannot hold are escaped (see :func:`xml_safe`)."""
    def safe(value: object) -> object:
        return xml_safe(value) if isinstance(value, str) else value

    clean = nx.MultiDiGraph(**{k: safe(v) for k, v in graph.graph.items()})
    clean.add_nodes_from((safe(n), {k: safe(v) for k, v in d.items()}) for n, d in graph.nodes(data=True))
    clean.add_edges_from(
        (safe(u), safe(v), safe(key), {k: safe(x) for k, x in d.items()}) for u, v, key, d in graph.edges(keys=True, data=True)
    )
    # Written whole, not joined from generate_graphml's lines: those are split with
    # str.splitlines(), which also splits at \x1c-\x1e and \x85 inside an ID.
    buffer = io.BytesIO()
    nx.write_graphml(clean, buffer, encoding="utf-8")
    return buffer.getvalue().decode("utf-8")


def to_json(graph: nx.MultiDiGraph) -> str:
    """The graph as networkx node-link JSON: ``{"nodes": [...], "edges": [...]}``."""
    data = nx.node_link_data(graph, edges="edges")
    return json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"


def render(dot_text: str, fmt: str) -> bytes:
    """Draw DOT text as ``svg`` or ``png`` with Graphviz's ``dot`` program."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing(GRAPHVIZ_HINT)
    done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        raise IdentityGraphError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
