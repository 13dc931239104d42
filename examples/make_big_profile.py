"""Write a history whose main profile holds exactly 1,000 IDs (the default size cap), as JSON lines.

Twelve e-mail logins with 70 devices each, all aliased into ``db-42``, and 150 web visitors
who log in as ``db-42``: the last three are refused by the size cap, and one of them is
refused later for another known user. It shows how ``identity-graph show`` keeps such a
profile readable (``docs/profile-1000.svg``):

    python examples/make_big_profile.py > big.jsonl
    identity-graph --db sqlite:///big.db import big.jsonl
    identity-graph --db sqlite:///big.db show db-42 --format svg --output docs/profile-1000.svg
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def events() -> Iterator[dict[str, Any]]:
    n = 0

    def event(type_: str, **ids: str) -> dict[str, Any]:
        nonlocal n
        n += 1
        when = (START + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")
        return {"type": type_, "messageId": f"m{n}", "timestamp": when, **ids}

    for person in range(12):
        mail = f"user{person}@mail.com"
        for device in range(70):
            yield event("identify", userId=mail, anonymousId=f"dev-{person}-{device}")
        yield event("alias", previousId=mail, userId="db-42")
    for visitor in range(150):
        yield event("identify", userId="db-42", anonymousId=f"web-{visitor}")
    yield event("identify", userId="other", anonymousId="web-3")


if __name__ == "__main__":
    for e in events():
        sys.stdout.write(json.dumps(e) + "\n")
