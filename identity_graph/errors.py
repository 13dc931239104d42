"""The exceptions of identity-graph: one base class, each subclass named after its condition."""

from __future__ import annotations


class IdentityGraphError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidEvent(IdentityGraphError, ValueError):
    """An event was rejected; nothing was changed.

    ``field`` names the offending field (``"event"`` when the whole value is wrong) and
    ``reason`` says what is wrong with it.

    >>> str(InvalidEvent("userId", "must be a string or an integer, not a boolean"))
    'userId: must be a string or an integer, not a boolean'
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownId(IdentityGraphError, KeyError):
    """No event has mentioned this ID (or it was erased)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownEvent(IdentityGraphError, KeyError):
    """No event with this messageId is in the graph."""

    def __str__(self) -> str:
        return str(self.args[0])


class NotSameProfile(IdentityGraphError):
    """Two IDs asked to be explained are in different profiles; the message says why."""


class RulesMismatch(IdentityGraphError):
    """The graph was built with other merge rules than the ones it was opened with."""


class DatabaseUnavailable(IdentityGraphError):
    """The database URL cannot be opened (bad URL, missing driver, server down)."""


class StoreError(IdentityGraphError):
    """The database failed for a reason retrying cannot fix (disk full, read-only, I/O error...).

    The transaction was rolled back: the graph is as it was before the call. ``detail`` is
    the driver's message, in one line.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail if detail is not None else message
