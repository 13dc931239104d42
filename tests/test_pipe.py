"""The parse workers' messages through a real pipe (identity_graph.pipe): framing, the
reused buffer, and the two ways a pipe ends."""

from __future__ import annotations

import os

import pytest

from helpers import through_pipe
from identity_graph import pipe


def test_messages_of_any_size_arrive_whole_and_in_order() -> None:
    """Larger than the inbox's first buffer and than the pipe's capacity, then smaller
    again: the reused buffer holds no bytes of the message before."""
    big = ("chunk", [("m%d" % n, n, "x" * (n % 50)) for n in range(60_000)])
    messages = [("unit", 3), big, ("chunk", ["short"]), ("done", None), big]
    assert through_pipe(*messages) == messages


def test_a_pipe_closed_between_messages_ends_them() -> None:
    assert through_pipe() == []
    assert through_pipe(("done", None)) == [("done", None)]


def test_a_pipe_closed_in_the_middle_of_a_message_ends_it_with_a_reason() -> None:
    """A worker killed while it writes: the writer's EOFError says so (through_pipe ends
    quietly only on a plain EOFError)."""
    cut = bytes(pipe.frame(("chunk", list(range(1000)))))[:500]
    with pytest.raises(EOFError, match="^the pipe closed in the middle of a message$"):
        through_pipe(("unit", 1), close_after=cut)
    with pytest.raises(EOFError, match="^the pipe closed in the middle of a message$"):
        through_pipe(close_after=cut[:3])  # inside the length itself


def test_writing_to_a_pipe_nobody_reads_any_more_is_a_broken_pipe() -> None:
    """What tells a parse worker that the writer has stopped (see _worker_main)."""
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(BrokenPipeError):
            pipe.send(w, ("chunk", [1, 2, 3]))
    finally:
        os.close(w)
