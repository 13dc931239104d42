"""identity-graph: exact, explainable identity resolution for Segment-spec events.

>>> from identity_graph import IdentityGraph
>>> with IdentityGraph("sqlite://") as g:
...     _ = g.alias("jen@email.com", "507f191e81")
...     g.resolve("jen@email.com")
'507f191e81'
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names load on first use (PEP 562): `identity-graph --version` or a lookup should not pay
# for the write path's imports. `from identity_graph import X` works as usual.
_EXPORTS = {
    "DatabaseUnavailable": "errors", "IdentityGraphError": "errors", "InvalidEvent": "errors",
    "NotSameProfile": "errors", "RulesMismatch": "errors", "StoreError": "errors", "UnknownEvent": "errors",
    "UnknownId": "errors",
    "Event": "events", "parse_event": "events",
    "IdentityGraph": "graph",
    "EditResult": "results", "GraphStats": "results", "IngestResult": "results", "Link": "results", "IngestSummary": "results",
    "InvalidInput": "results", "LinkResult": "results", "Profile": "results",
    "MergeRules": "rules",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'identity_graph' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


if TYPE_CHECKING:
    from .errors import (DatabaseUnavailable, IdentityGraphError, InvalidEvent, NotSameProfile, RulesMismatch,
                         StoreError, UnknownEvent, UnknownId)
    from .events import Event, parse_event
    from .graph import IdentityGraph
    from .results import EditResult, GraphStats, IngestResult, IngestSummary, InvalidInput, Link, LinkResult, Profile
    from .rules import MergeRules

__all__ = [
    "DatabaseUnavailable",
    "EditResult",
    "Event",
    "GraphStats",
    "IdentityGraph",
    "IdentityGraphError",
    "IngestResult",
    "IngestSummary",
    "InvalidEvent",
    "InvalidInput",
    "Link",
    "LinkResult",
    "MergeRules",
    "NotSameProfile",
    "Profile",
    "RulesMismatch",
    "StoreError",
    "UnknownEvent",
    "UnknownId",
    "__version__",
    "parse_event",
]
