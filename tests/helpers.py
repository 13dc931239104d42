"""Small builders shared by the tests."""

from __future__ import annotations

import os
import random
import threading
from typing import Any

from identity_graph import IdentityGraph, pipe


def ev(type_: str, t: int, msg: str, **fields: Any) -> dict[str, Any]:
    """A Segment event at second ``t`` of 2024-01-01 (UTC) with messageId ``msg``."""
    event: dict[str, Any] = {"type": type_, "messageId": msg,
                             "timestamp": f"2024-01-01T00:{t // 60:02d}:{t % 60:02d}Z"}
    if type_ == "track":
        event.setdefault("event", "Clicked")
    if type_ == "group":
        event.setdefault("groupId", "g1")
    event.update(fields)
    return event


def identify(t: int, msg: str, user: Any = None, anon: Any = None) -> dict[str, Any]:
    fields = {}
    if user is not None:
        fields["userId"] = user
    if anon is not None:
        fields["anonymousId"] = anon
    return ev("identify", t, msg, **fields)


def alias(t: int, msg: str, previous: Any, user: Any, **more: Any) -> dict[str, Any]:
    return ev("alias", t, msg, previousId=previous, userId=user, **more)


def linked_history(n: int, seed: int, users: int = 40, devices: int = 60) -> list[dict[str, Any]]:
    """``n`` events (identify 60 %, alias 20 %, page 20 %) over few people and devices, so
    that links collide: messageIds ``m00000``, ``m00001``, ..."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        t, msg = rng.randrange(0, 3000), f"m{i:05d}"
        pick = rng.random()
        if pick < 0.6:
            out.append(identify(t, msg, user=f"u{rng.randrange(users)}", anon=f"d{rng.randrange(devices)}"))
        elif pick < 0.8:
            out.append(alias(t, msg, f"d{rng.randrange(devices)}", f"u{rng.randrange(users)}"))
        else:
            out.append(ev("page", t, msg, anonymousId=f"d{rng.randrange(devices)}"))
    return out


def profiles(graph: IdentityGraph) -> set[tuple[str, frozenset[str]]]:
    """The whole graph as a set of (canonical, members): order never matters."""
    groups: dict[str, set[str]] = {}
    for id_, canonical in graph.identities():
        groups.setdefault(canonical, set()).add(id_)
    return {(c, frozenset(ids)) for c, ids in groups.items()}


def P(canonical: str, *others: str) -> tuple[str, frozenset[str]]:
    return (canonical, frozenset((canonical, *others)))


def through_pipe(*messages: Any, close_after: bytes | None = None) -> list[Any]:
    """Send ``messages`` from a thread (a large one fills the pipe before it is read), then
    write ``close_after`` raw if given, close, and receive until the end."""
    r, w = os.pipe()

    def writer() -> None:
        try:
            for message in messages:
                pipe.send(w, message)
            if close_after is not None:
                os.write(w, close_after)
        finally:
            os.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    inbox = pipe.Inbox()
    got: list[Any] = []
    try:
        while True:
            try:
                got.append(inbox.receive(r))
            except EOFError as end:
                if end.args:  # not a plain end: the pipe closed in a message
                    raise
                return got
    finally:
        thread.join()
        os.close(r)
