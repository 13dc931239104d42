"""The blocked ID values the contenders drop, as the engine's ``rules.DEFAULT_BLOCKED_VALUES``.

A copy, not an import: the floor and the scripts are timed from interpreter start, and
importing the engine would add its start-up to theirs. ``bench_import.py`` checks that the
two sets are equal before it measures anything.
"""

BLOCKED = frozenset({"null", "undefined", "none", "nan", "0", "-1", "anonymous", "[object object]"})
