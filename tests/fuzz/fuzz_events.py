"""atheris (libFuzzer) harness for the event parser and the readers: run it, not pytest.

Each input is a file's bytes. They go (1) through ``orjson.loads`` and
:func:`identity_graph.events.parse_event`, then :func:`identity_graph.batch.plan_event`,
and through the import's fast path (:func:`identity_graph.events.event_from_line`), which
must give the same Event or hand the line back, and (2) through the readers' format
detection (JSON lines, array, document, envelope) and the parser again, item by item. Anything but ``orjson.JSONDecodeError`` or
:class:`InvalidEvent` escaping, a multi-line message, or an accepted event that breaks
an invariant the database relies on, is a crash. See README.md here for how to run it.

atheris is not a test dependency: it is imported only when run, so pytest's doctest
collection can import this file without it.
"""

from __future__ import annotations

import io
import sys
from typing import Any


def check_event(value: Any) -> None:
    """Parse one decoded value: an Event that keeps the invariants, or InvalidEvent."""
    from identity_graph.batch import plan_event
    from identity_graph.errors import InvalidEvent
    from identity_graph.events import MAX_ID_LENGTH, MAX_MESSAGE_ID_LENGTH, parse_event
    from identity_graph.rules import MergeRules

    try:
        event = parse_event(value, now=0)
    except InvalidEvent as exc:
        assert exc.field and exc.reason and "\n" not in str(exc), repr(str(exc))
        return
    assert isinstance(event.time, int)
    assert isinstance(event.message_id, str) and 0 < len(event.message_id) <= MAX_MESSAGE_ID_LENGTH
    event.message_id.encode("utf-8")  # storable: no lone surrogate
    assert "\x00" not in event.message_id
    for id_ in (event.user_id, event.anonymous_id, event.previous_id):
        if id_ is not None:
            assert type(id_) is str and len(id_) <= MAX_ID_LENGTH and "\x00" not in id_
            id_.encode("utf-8")
    event.timestamp  # noqa: B018 -- shown in stats and reports: must not overflow
    plan_event(event, MergeRules())


def check_bytes(data: bytes) -> None:
    """One fuzz input, as a JSON value and as a file."""
    import orjson

    from identity_graph import readers

    from identity_graph.errors import InvalidEvent
    from identity_graph.events import event_from_line, parse_event

    fast = event_from_line(data)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        # The one documented difference: a number beyond a double in a field not read.
        assert fast is None or b"e" in data.lower() or len(data) > 300, data
    else:
        check_event(value)
        if fast is not None:
            try:
                assert fast == parse_event(value, now=0), data
            except InvalidEvent:
                raise AssertionError(f"the fast path took what parse_event refuses: {data!r}") from None
    if data[:2] == b"\x1f\x8b":
        return  # gzip: its own library's business, and a corrupt stream is a SourceError
    counted = readers._Counted(io.BytesIO(data))
    stream = io.BufferedReader(counted)
    for item in readers._read_stream("fuzz", stream, counted, None):
        assert str(item.location).startswith("fuzz")
        readers.raw_text(item)
        if item.error is not None:
            assert "\n" not in item.error, repr(item.error)
        else:
            check_event(item.value)


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["identity_graph"]):
        import identity_graph.batch  # noqa: F401 -- instrumented for coverage feedback
        import identity_graph.events  # noqa: F401
        import identity_graph.readers  # noqa: F401
    atheris.Setup(sys.argv, check_bytes)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
