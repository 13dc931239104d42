"""How a parse worker's messages cross the pipe to the writer.

A message is pickled without the memo (:func:`frame`) and framed by its length, written
to and read from the pipe's file descriptor directly. ``multiprocessing``'s own
``send_bytes``/``recv_bytes`` would frame it too, but its reader collects every message
of ~12 MB from 64 KB reads into a growing ``BytesIO``: fresh memory for every message,
on the writer, whose time is the import's. :class:`Inbox` reads each message into one
buffer it keeps for all the workers' pipes (measured, 11 messages of 12 MB: 0.27-0.51 s
and ~57,000 page faults against 0.04 s and ~2,900).

Both ends use only the descriptor of a ``multiprocessing`` connection (``fileno()``), so
the pipe is handed to a spawned worker as usual; the reader uses ``os.readv`` (POSIX).

>>> import os
>>> r, w = os.pipe()
>>> send(w, ("chunk", [1, "two"]))
>>> os.close(w)
>>> inbox = Inbox()
>>> inbox.receive(r)
('chunk', [1, 'two'])
>>> inbox.receive(r)
Traceback (most recent call last):
...
EOFError
>>> os.close(r)
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from typing import Any

_HEADER = struct.Struct("!Q")  # the message's length in bytes


def frame(message: Any) -> memoryview:
    """``message`` as it crosses the pipe: its length, then its pickle without the memo.

    No memo: ~35 % faster for a chunk's hundreds of thousands of small tuples (measured
    per 100k events: 130 -> 85 ms, and 58 -> 47 ms to load), at ~7 % more bytes, since
    nothing in a message is shared or cyclic that matters (a repeated string is written
    again; equal is all the writer needs)."""
    out = io.BytesIO()
    out.write(bytes(_HEADER.size))  # the length, filled in below: one buffer, no copy
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo; safe: a message holds no reference cycle
    pickler.dump(message)
    framed = out.getbuffer()
    _HEADER.pack_into(framed, 0, len(framed) - _HEADER.size)
    return framed


def pickled(message: Any) -> memoryview:
    """``message``'s pickle without the memo, as :func:`frame` makes it, for ``pickle.loads``:
    for an object kept as bytes for a while (~0.6 us an event of a chunk, against ~1 us with
    the memo)."""
    return frame(message)[_HEADER.size:]


def send(fd: int, message: Any) -> None:
    """Write ``message`` to the pipe ``fd``, whole (a pipe takes a large write in parts).
    Raises ``BrokenPipeError`` once the reader has closed its end."""
    data = frame(message)
    out = io.FileIO(fd, "wb", closefd=False)
    while data:
        data = data[out.write(data):]


class Inbox:
    """Receives messages from pipes into one buffer it keeps between them (the writer
    reads its workers' pipes in turn, one message at a time)."""

    def __init__(self) -> None:
        self._buffer = bytearray(1 << 20)

    def receive(self, fd: int) -> Any:
        """The next message on the pipe ``fd``; ``EOFError`` once the writing end is closed
        (a worker killed while writing leaves half a message: EOFError too, with a reason)."""
        size = _HEADER.unpack(self._read(fd, _HEADER.size, at_start=True))[0]
        if size > len(self._buffer):
            self._buffer = bytearray(size + (size >> 3))  # some room, for the next, larger one
        # pickle copies out what it builds: the buffer is free again once loads returns.
        return pickle.loads(self._read(fd, size))

    def _read(self, fd: int, size: int, at_start: bool = False) -> memoryview:
        view = memoryview(self._buffer)[:size]
        got = 0
        while got < size:
            n = os.readv(fd, [view[got:]])
            if not n:
                if at_start and got == 0:
                    raise EOFError
                raise EOFError("the pipe closed in the middle of a message")
            got += n
        return view
