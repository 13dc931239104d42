"""identity-graph: exact, explainable identity resolution for Segment-spec events.

>>> from identity_graph import IdentityGraph
>>> with IdentityGraph("sqlite://") as g:
...     _ = g.alias("jen@email.com", "507f191e81")
...     g.resolve("jen@email.com")
'507f191e81'
"""

from .errors import DatabaseUnavailable, IdentityGraphError, InvalidEvent, RulesMismatch, StoreError
from .events import Event, parse_event
from .graph import IdentityGraph
from .results import GraphStats, IngestResult, IngestSummary, InvalidInput, LinkResult, Profile
from .rules import MergeRules

__version__ = "0.1.0"

__all__ = [
    "DatabaseUnavailable",
    "Event",
    "GraphStats",
    "IdentityGraph",
    "IdentityGraphError",
    "IngestResult",
    "IngestSummary",
    "InvalidEvent",
    "InvalidInput",
    "LinkResult",
    "MergeRules",
    "Profile",
    "RulesMismatch",
    "StoreError",
    "__version__",
    "parse_event",
]
