"""Seeded, reproducible generator of realistic Segment-spec event histories.

As a library::

    from benchmarks.generate import generate_events          # from the repository root
    for event in generate_events(10_000, seed=1):              # dicts, in export order
        ...

As a script (JSON lines, one event per line)::

    python benchmarks/generate.py --events 1000000 --seed 1 --output benchmarks/data/history.jsonl [--gzip]
    python benchmarks/generate.py --events 100000000 --part-events 1000000 --output FOLDER   # gzipped parts

What the history looks like
---------------------------
A simulated shop with a website (analytics.js), iOS and Android apps, a backend
(analytics-node) and an e-mail tool: about 27,000 events a day with a day/night cycle, so
1,000,000 events cover about five weeks:

* people: regulars who used the shop before the history starts (about half of them
  customers, most already logged in on the device they come back with, so their first
  events carry ``userId`` + ``anonymousId`` without any ``identify``), and a stream of
  first-time visitors of whom some sign up later; each person uses one to a few devices
  (every browser or app install has its own ``anonymousId``, a uuid4); clearing cookies or
  logging out (``analytics.reset()``) gives a browser a fresh ``anonymousId``;
* anonymous browsing (``page`` / ``screen`` / ``track`` with an ``anonymousId`` only) before
  the person logs in; ``identify`` (``userId`` + ``anonymousId``) on login and sign-up; after
  that the device's events carry both IDs;
* server-side ``track`` calls with a ``userId`` only (orders, renewals, invoices), and
  e-mail tool events keyed by e-mail address;
* e-mail-to-database-ID aliases as in Segment's spec: a lead first identified by e-mail
  (newsletter form, ``userId`` = e-mail), then ``{"type": "alias", "previousId":
  "jen@email.com", "userId": "507f191e810c19729de860ea"}`` from the backend at sign-up; and
  legacy customers whose old ``userId`` was their e-mail, aliased on their first login;
* shared devices: a family computer or tablet whose ``anonymousId`` is used by two
  logged-in people (the second ``identify`` joins an anonymousId already tied to another
  known user);
* junk IDs from buggy integrations: ``"null"``, ``"undefined"``, ``""``, ``"0"``,
  ``"anonymous"`` in ``userId`` or ``anonymousId`` (some events carry nothing else);
* retries: about 0.5 % of events are delivered again later with the same ``messageId``
  and an identical body;
* about 1 KB per event: ``context`` (ip, userAgent, library, page {path, url, referrer,
  title, search}, locale, timezone, campaign for tagged traffic; app/device/os/screen/network
  for mobile), ``properties`` / ``traits``, ``messageId`` (uuid4), ``timestamp`` /
  ``originalTimestamp`` / ``sentAt`` / ``receivedAt`` as ISO-8601 UTC with ``Z``.

Order: events come in *export order*, i.e. sorted by ``receivedAt``. Event time
(``timestamp``) is therefore *mostly* in order: web events arrive within a fraction of a
second; mobile apps flush in batches every 30 s; a few mobile sessions are offline and
arrive hours late (``late_sessions``); retries arrive seconds to minutes after the original.
``shuffle=True`` (``--shuffle``) yields the same events in a random order instead
(it holds them all in memory).

Determinism: the stream depends only on ``seed`` and ``start`` (and the two fractions), not
on ``n_events``: ``generate_events(n, seed=s)`` is a prefix of ``generate_events(m, seed=s)``
for ``n < m`` (unless shuffled). Only ``random.Random`` is used (no hashing, no set order),
so the output is byte-identical across runs and machines.

The dicts yielded are fresh objects (nothing is shared between events) and may be mutated.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import itertools
import os
import random
import shutil
import subprocess
import sys
import time as _time
from collections import Counter
from datetime import datetime, timezone
from math import log as _math_log, pi as _pi, sin as _sin
from typing import Any, Iterator

import orjson

__all__ = ["DEFAULT_START", "JUNK_IDS", "generate_events", "write_jsonl"]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: The junk values buggy integrations send as IDs.
JUNK_IDS = ("null", "undefined", "", "0", "anonymous")

# -- tunables (probabilities are per session unless said otherwise) -----------------------

MEAN_SESSION_GAP_MS = 20_000  # ~4,300 sessions / ~35,000 events a day
N_REGULARS = 40_000  # people who used the shop before the history starts (met lazily)
P_NEW_PERSON = 0.30  # a session is by a first-time visitor
P_REGULAR = 0.55  # ... else by a regular (popularity skewed), else by a visitor first seen in the history
P_REGULAR_CUSTOMER = 0.55  # a regular has an account
P_REGULAR_LOGGED_IN = 0.75  # ... and their first device in the history is already logged in
P_EXISTING_CUSTOMER = 0.08  # a first-time visitor (on this device) already has an account
P_LEGACY_EMAIL = 0.15  # a customer whose old userId was the e-mail address (aliased on next login)
P_WILL_SIGN_UP = 0.30  # a visitor without an account will sign up at some point
P_LEAD = 0.35  # ... and leaves their e-mail (newsletter form) before signing up
P_NEW_DEVICE = 0.12  # a returning person uses a device of theirs not seen before
P_SHARED_DEVICE = 0.05  # ... which is a device someone else is logged in on (family computer)
P_COOKIE_CLEAR = 0.03  # a browser's anonymousId is renewed before the session
P_RESET_ON_LOGOUT = 0.5  # logging out calls analytics.reset() (new anonymousId)
P_MOBILE = 0.35  # a new device is a phone/tablet app rather than a browser
P_SERVER_SESSION = 0.12  # a returning customer's "session" is backend/e-mail events only
P_OFFLINE = 0.06  # a mobile session is sent hours later (offline queue): late events
P_RETRY = 0.005  # per event: delivered twice (same messageId, identical body)
P_JUNK_ANON = 0.002  # per client event: anonymousId is a junk value
P_JUNK_USER = 0.004  # per client event of a logged-out device: userId is a junk value
P_GUEST_ORDER = 0.3  # an anonymous checkout is a guest order (server sends userId "0"/"null")

# -- static vocabulary ----------------------------------------------------------------------

_FIRST = (
    "Jen Ann Tom Ali Eva Ben Mia Leo Zoe Sam Ivy Max Amy Dan Eli Kai Lea Noa Raj Yui Omar Lena "
    "Sofia Lucas Emma Liam Olivia Noah Ava Ethan Chloe Mateo Aria Hugo Nina Paul Sara Igor Maya "
    "Jonas Clara Felix Ines Oscar Ruth Tariq Wei Yusuf Zara Priya Diego Hana Ravi Luca"
).split()
_LAST = (
    "Smith Jones Brown Garcia Miller Davis Lopez Wilson Moore Taylor Martin Lee Walker Hall Young "
    "King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips "
    "Evans Turner Torres Parker Collins Edwards Stewart Morris Murphy Cook Rogers Morgan Peterson "
    "Cooper Reed Bailey Bell Gomez Kelly Howard Ward Cox Diaz Richardson Wood Watson Brooks Kim"
).split()
_MAIL_DOMAINS = ("gmail.com",) * 6 + ("yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "proton.me", "gmx.de", "web.de", "orange.fr", "acme.io")
_LOCALES = (
    ("en-US", "America/New_York"), ("en-US", "America/Chicago"), ("en-US", "America/Los_Angeles"),
    ("en-US", "America/Denver"), ("en-US", "America/New_York"), ("en-US", "America/Los_Angeles"),
    ("en-GB", "Europe/London"), ("en-GB", "Europe/London"), ("de-DE", "Europe/Berlin"),
    ("fr-FR", "Europe/Paris"), ("es-ES", "Europe/Madrid"), ("pt-BR", "America/Sao_Paulo"),
    ("nl-NL", "Europe/Amsterdam"), ("ja-JP", "Asia/Tokyo"), ("en-AU", "Australia/Sydney"),
    ("en-CA", "America/Toronto"),
)
_DESKTOP_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
)
_MOBILE_WEB_UAS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.39 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.107 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
)
_IOS_MODELS = (("iPhone15,2", "iPhone", 390, 844, 3.0), ("iPhone16,1", "iPhone", 393, 852, 3.0),
               ("iPhone14,7", "iPhone", 390, 844, 3.0), ("iPad13,18", "iPad", 820, 1180, 2.0))
_ANDROID_MODELS = (("Pixel 8", "Google", 412, 915, 2.625), ("SM-S911B", "samsung", 360, 780, 3.0),
                   ("SM-A546B", "samsung", 412, 892, 2.625), ("2201116SG", "Xiaomi", 393, 873, 2.75))
_IOS_VERSIONS = ("18.1", "18.0.1", "17.6.1", "17.5.1")
_ANDROID_VERSIONS = ("14", "14", "13", "12")
_CARRIERS = ("T-Mobile", "Verizon", "AT&T", "Vodafone", "O2", "Orange", "")
_WEB_LIBRARY = ("analytics.js", "next-1.72.1")
_LIBRARIES = {
    "ios": ("analytics-ios", "4.1.8"),
    "android": ("analytics-android", "4.11.3"),
    "server": ("analytics-node", "2.1.2"),
    "email": ("analytics-python", "2.3.3"),
}
_APP = {"ios": ("5.12.0", "1482"), "android": ("5.12.0", "51200")}
_SITE = "https://www.northwind-outfitters.com"
_EXTERNAL_REFERRERS = (
    "", "", "", "https://www.google.com/", "https://www.google.com/", "https://www.google.com/",
    "https://duckduckgo.com/", "https://www.bing.com/", "https://www.facebook.com/", "https://t.co/",
    "https://www.instagram.com/", "https://www.reddit.com/r/BuyItForLife/",
)
_CAMPAIGNS = (
    ("winter_sale_2026", "google", "cpc", "hiking boots"),
    ("winter_sale_2026", "facebook", "paid_social", None),
    ("newsletter_w02", "newsletter", "email", None),
    ("retargeting_cart", "instagram", "paid_social", None),
    ("brand_search", "google", "cpc", "northwind outfitters"),
)
_CATEGORIES = ("Jackets", "Boots", "Backpacks", "Tents", "Base Layers", "Gloves", "Headlamps", "Sleeping Bags")
_BRANDS = ("Northwind", "Summit Co", "Trailhead", "Alpine Works", "Ridgeback")
_ADJECTIVES = ("Ultralight", "Storm", "Trail", "Alpine", "Everyday", "Expedition", "Merino", "Insulated", "Packable", "Classic")
_SEARCHES = ("rain jacket", "boots waterproof", "tent 2 person", "merino", "gift card", "headlamp", "sale", "gloves women")
_BLOG_SLUGS = ("how-to-layer-for-winter", "best-day-hikes-2026", "tent-care-guide", "choosing-hiking-boots", "packing-list-weekend-trip")
_STATIC_PAGES = (("/", "Northwind Outfitters – Gear for the Outdoors"), ("/pricing", "Membership – Northwind Outfitters"),
                 ("/stores", "Find a Store – Northwind Outfitters"), ("/help", "Help Center – Northwind Outfitters"))
_PLANS = ("free", "free", "free", "member", "member", "pro")
_INDUSTRIES = ("Retail", "Education", "Outdoor Guiding", "Hospitality", "Non-profit")


def _catalog(rng: random.Random) -> list[tuple]:
    products = []
    for n in range(400):
        cat = _CATEGORIES[n % len(_CATEGORIES)]
        name = f"{_ADJECTIVES[rng.randrange(len(_ADJECTIVES))]} {cat.rstrip('s')} {rng.randrange(1, 9)}"
        slug = name.lower().replace(" ", "-")
        pid = f"{rng.getrandbits(96):024x}"
        sku = f"NW-{rng.randrange(10000, 99999)}-{n:03d}"
        price = round(rng.uniform(9, 499), 0) - 0.01
        products.append((pid, sku, cat, name, _BRANDS[n % len(_BRANDS)], round(price, 2), slug))
    return products


# -- ISO-8601 formatting, fast ----------------------------------------------------------------

_SECOND_CACHE: dict[int, str] = {}


def _iso(ms: int) -> str:
    """Epoch milliseconds -> '2026-01-01T00:00:00.000Z' (cached by second)."""
    sec, milli = divmod(ms, 1000)
    base = _SECOND_CACHE.get(sec)
    if base is None:
        if len(_SECOND_CACHE) > 50_000:
            _SECOND_CACHE.clear()
        base = _SECOND_CACHE[sec] = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))
    return f"{base}.{milli:03d}Z"


_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


class _Device:
    __slots__ = ("kind", "anon", "ua", "ip", "locale", "tz", "user", "uid", "model", "os_version", "device_id", "carrier",
                 "installed")

    def __init__(self) -> None:
        self.user: _Person | None = None  # who is logged in on it
        self.uid: str | None = None  # the userId its events carry (None: logged out)


class _Person:
    __slots__ = ("index", "user_id", "email", "first", "last", "signed_up", "will_sign_up", "lead", "email_known",
                 "legacy_email", "devices", "plan", "created_at", "company")


class _Simulation:
    def __init__(self, seed: int, start_ms: int, late_sessions: float, retries: float) -> None:
        self.rng = rng = random.Random(seed)
        self.r = rng.random
        self.bits = rng.getrandbits
        self.clock = start_ms
        self.start_ms = start_ms
        self.p_offline = late_sessions
        self.p_retry = retries
        self.products = _catalog(rng)
        self.people: list[_Person] = []
        self.tickets: list[int] = []  # person index, repeated by activity: weighted choice
        self.regulars: dict[int, _Person] = {}
        self.shared_pool: list[_Device] = []  # browsers someone is logged in on
        # The same devices, for the membership test: the pool only grows (by ~1 per 1,000
        # events), and a list scan per page view made each million events slower than the
        # last (24 s for the first, 80 s for the eleventh). Devices hash by identity, as `in`
        # on the list compared them, so the stream is byte-identical.
        self.shared_set: set[_Device] = set()
        self.heap: list[tuple[int, int, dict]] = []
        self.seq = 0
        self.order_no = 100_000

    # -- small helpers --------------------------------------------------------------------

    def pick(self, seq: tuple | list) -> Any:
        return seq[int(self.r() * len(seq))]

    def uuid4(self) -> str:
        h = f"{(self.bits(128) & _V4_CLEAR) | _V4_SET:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def ip(self) -> str:
        b = self.bits(32)
        return f"{(b >> 24) % 200 + 24}.{(b >> 16) & 255}.{(b >> 8) & 255}.{b & 255 or 1}"

    def push(self, ev: dict, received: int) -> None:
        """Queue an event for export (by receivedAt); sometimes queue a retry too."""
        self.seq += 1
        heapq.heappush(self.heap, (received, self.seq, ev))
        if self.r() < self.p_retry:
            copy = orjson.loads(orjson.dumps(ev))  # identical body, separate object
            self.seq += 1
            heapq.heappush(self.heap, (received + 1_000 + int(self.r() * 120_000), self.seq, copy))

    # -- people and devices ---------------------------------------------------------------

    def new_person(self, regular: bool = False) -> _Person:
        r = self.r
        p = _Person()
        p.index = len(self.people)
        p.first, p.last = self.pick(_FIRST), self.pick(_LAST)
        p.email = f"{p.first.lower()}.{p.last.lower()}{p.index}@{self.pick(_MAIL_DOMAINS)}"
        p.signed_up = r() < (P_REGULAR_CUSTOMER if regular else P_EXISTING_CUSTOMER)
        # ObjectId-like database ID: creation second + random.
        created = self.clock // 1000 - (int(r() * 86400 * 700) if p.signed_up else 0)
        p.user_id = f"{created:08x}{self.bits(64):016x}"
        p.created_at = created * 1000
        p.legacy_email = p.signed_up and r() < P_LEGACY_EMAIL
        p.will_sign_up = not p.signed_up and r() < P_WILL_SIGN_UP
        p.lead = p.will_sign_up and r() < P_LEAD
        p.email_known = False  # some event carried userId = e-mail
        p.devices = []
        p.plan = self.pick(_PLANS)
        p.company = f"{self.bits(48):012x}" if r() < 0.08 else None
        self.people.append(p)
        if not regular:
            self.tickets.extend([p.index] * (1 + int(r() * r() * 12)))  # a few very active people
        return p

    def regular(self) -> _Person:
        """A regular, popularity-skewed (a few come very often); made on first sight."""
        r = self.r
        slot = int(N_REGULARS * r() * r())
        p = self.regulars.get(slot)
        if p is None:
            p = self.regulars[slot] = self.new_person(regular=True)
            # Their browser or app remembers them from before the history: already logged in.
            d = self.new_device(mobile=r() < P_MOBILE)
            if p.signed_up and r() < P_REGULAR_LOGGED_IN:
                d.user, d.uid = p, (p.email if p.legacy_email else p.user_id)
            d.installed = True
            p.devices.append(d)
        return p

    def new_device(self, mobile: bool) -> _Device:
        r = self.r
        d = _Device()
        d.anon = self.uuid4()
        d.ip = self.ip()
        d.locale, d.tz = self.pick(_LOCALES)
        if mobile:
            d.kind = "ios" if r() < 0.55 else "android"
            d.model = self.pick(_IOS_MODELS if d.kind == "ios" else _ANDROID_MODELS)
            d.os_version = self.pick(_IOS_VERSIONS if d.kind == "ios" else _ANDROID_VERSIONS)
            d.device_id = self.uuid4().upper() if d.kind == "ios" else f"{self.bits(64):016x}"
            d.carrier = self.pick(_CARRIERS)
            d.ua = None
            d.installed = False
        else:
            d.kind = "web"
            d.ua = self.pick(_DESKTOP_UAS) if r() < 0.6 else self.pick(_MOBILE_WEB_UAS)
            d.model = d.os_version = d.device_id = d.carrier = None
            d.installed = True
        return d

    # -- event bodies ---------------------------------------------------------------------

    def base(self, type_: str, d: _Device | None, t: int, sent: int, received: int, uid: str | None,
             anon: str | None, context: dict) -> dict:
        ts = _iso(t)
        ev: dict[str, Any] = {"type": type_, "messageId": self.uuid4()}
        if anon is not None:
            ev["anonymousId"] = anon
        if uid is not None:
            ev["userId"] = uid
        ev["channel"] = "client" if d is not None else "server"
        ev["context"] = context
        ev["integrations"] = {}
        ev["originalTimestamp"] = ts
        ev["timestamp"] = ts
        ev["sentAt"] = _iso(sent)
        ev["receivedAt"] = _iso(received)
        ev["version"] = 2
        return ev

    def web_context(self, d: _Device, page: dict, campaign: dict | None) -> dict:
        ctx = {
            "ip": d.ip,
            "library": {"name": _WEB_LIBRARY[0], "version": _WEB_LIBRARY[1]},
            "locale": d.locale,
            "page": dict(page),
            "timezone": d.tz,
            "userAgent": d.ua,
        }
        if campaign is not None:
            ctx["campaign"] = dict(campaign)
        return ctx

    def mobile_context(self, d: _Device, wifi: bool) -> dict:
        model, maker, w, h, density = d.model
        version, build = _APP[d.kind]
        lib = _LIBRARIES[d.kind]
        return {
            "app": {"build": build, "name": "Northwind", "namespace": "com.northwind.shop", "version": version},
            "device": {"id": d.device_id, "manufacturer": "Apple" if d.kind == "ios" else maker,
                       "model": model, "name": maker if d.kind == "ios" else model, "type": d.kind},
            "ip": d.ip,
            "library": {"name": lib[0], "version": lib[1]},
            "locale": d.locale,
            "network": {"carrier": d.carrier, "cellular": not wifi, "wifi": wifi},
            "os": {"name": "iOS" if d.kind == "ios" else "Android", "version": d.os_version},
            "screen": {"density": density, "height": h, "width": w},
            "timezone": d.tz,
            "traits": {},
        }

    def server_context(self, kind: str = "server") -> dict:
        lib = _LIBRARIES[kind]
        return {"library": {"name": lib[0], "version": lib[1]}}

    def traits(self, p: _Person, uid: str) -> dict:
        tr: dict[str, Any] = {"email": p.email}
        if uid != p.email:
            tr.update(firstName=p.first, lastName=p.last, name=f"{p.first} {p.last}", plan=p.plan,
                      createdAt=_iso(p.created_at), emailOptIn=p.lead or p.index % 3 == 0)
            if p.company:
                tr["company"] = {"id": p.company, "name": f"{p.last} {self.pick(_INDUSTRIES)}"}
        else:
            tr["newsletter"] = True
        return tr

    def product_props(self, prod: tuple, quantity: int | None = None) -> dict:
        pid, sku, cat, name, brand, price, slug = prod
        props = {"product_id": pid, "sku": sku, "category": cat, "name": name, "brand": brand,
                 "price": price, "currency": "USD", "url": f"{_SITE}/products/{slug}",
                 "image_url": f"https://cdn.northwind-outfitters.com/img/{sku.lower()}.jpg"}
        if quantity is not None:
            props["quantity"] = quantity
        return props

    # -- sessions -------------------------------------------------------------------------

    def step(self) -> None:
        """Start one session at the next arrival time and queue its events."""
        r = self.r
        hour = (self.clock // 3_600_000) % 24
        # Day/night cycle: twice as busy in the (US/EU) evening as at night.
        gap = MEAN_SESSION_GAP_MS / (0.55 + 0.45 * _DAY_SHAPE[hour])
        self.clock += int(-gap * _log(1.0 - r())) + 1
        x = r()
        if x < P_NEW_PERSON:
            person = self.new_person()
            returning = False
        elif x < P_NEW_PERSON + (1 - P_NEW_PERSON) * P_REGULAR or not self.tickets:
            person = self.regular()
            returning = True
        else:
            person = self.people[self.pick(self.tickets)]
            returning = True
        if returning and person.signed_up and r() < P_SERVER_SESSION:
            self.server_session(person, self.clock)
            return
        if not person.devices or (r() < P_NEW_DEVICE and len(person.devices) < 5):
            device = None
            if returning and person.signed_up and self.shared_pool and r() < P_SHARED_DEVICE:
                cand = self.pick(self.shared_pool)
                if cand.user is not None and cand.user is not person and cand not in person.devices:
                    device = cand  # the family computer: someone else is logged in on it
            if device is None:
                device = self.new_device(mobile=r() < P_MOBILE)
            person.devices.append(device)
        else:
            device = self.pick(person.devices)
        if device.kind == "web":
            self.web_session(person, device, self.clock)
        else:
            self.mobile_session(person, device, self.clock)

    def _login_plan(self, person: _Person, d: _Device, n: int) -> tuple[int, int, int]:
        """Steps (or -1) at which this session logs in, signs up, leaves an e-mail."""
        r = self.r
        login = signup = lead = -1
        # A legacy customer still logged in under their e-mail logs in again (and is aliased).
        logged_in_as_me = d.user is person and d.uid is not None and not (person.legacy_email and d.uid == person.email)
        if person.signed_up and not logged_in_as_me and r() < 0.65:
            login = int(r() * n)
        elif person.will_sign_up and not person.signed_up and r() < 0.3:
            signup = int(r() * n)
            if person.lead and not person.email_known and d.kind == "web" and r() < 0.5:
                lead = int(r() * (signup + 1))  # the same step is fine: the lead comes first
        elif person.lead and not person.email_known and d.kind == "web" and r() < 0.4:
            lead = int(r() * n)
        return login, signup, lead

    def identify_events(self, person: _Person, d: _Device, t: int, uid: str, ctx_fn, sent_fn, why: str) -> int:
        """identify (+ a track) on login/sign-up; the backend's alias when it applies. Returns t."""
        r = self.r
        sent, received = sent_fn(t)
        ev = self.base("identify", d, t, sent, received, uid, d.anon, ctx_fn())
        ev["traits"] = self.traits(person, uid)
        self.push(ev, received)
        t += 150 + int(r() * 400)
        event_name = {"login": "Signed In", "signup": "Signed Up", "lead": "Newsletter Subscribed"}[why]
        sent, received = sent_fn(t)
        ev = self.base("track", d, t, sent, received, uid, d.anon, ctx_fn())
        ev["event"] = event_name
        ev["properties"] = {"method": "email" if r() < 0.8 else "google", "source": d.kind}
        self.push(ev, received)
        aliased = (why == "signup" and person.email_known) or (why == "login" and person.legacy_email)
        if aliased:
            # The backend moves the person from their e-mail to the database ID (Segment spec).
            ta = t + 300 + int(r() * 1500)
            received = ta + 40 + int(r() * 80)
            ev = self.base("alias", None, ta, ta + 5, received, person.user_id, None, self.server_context())
            ev["previousId"] = person.email
            self.push(ev, received)
            person.legacy_email = False
            person.email_known = True
        if why == "signup" and person.company is not None:
            sent, received = sent_fn(t + 50)
            ev = self.base("group", d, t + 50, sent, received, uid, d.anon, ctx_fn())
            ev["groupId"] = person.company
            ev["traits"] = {"name": f"{person.last} {self.pick(_INDUSTRIES)}", "industry": self.pick(_INDUSTRIES),
                            "employees": int(5 + r() * 500), "plan": "team"}
            self.push(ev, received)
        return t

    def junk_ids(self, uid: str | None, anon: str) -> tuple[str | None, str | None]:
        r = self.r
        a: str | None = anon
        if r() < P_JUNK_ANON:
            a = self.pick(JUNK_IDS)
        if uid is None and r() < P_JUNK_USER:
            uid = self.pick(JUNK_IDS)
        return uid, a

    def web_session(self, person: _Person, d: _Device, t: int) -> None:
        r = self.r
        if r() < P_COOKIE_CLEAR:
            d.anon, d.user, d.uid = self.uuid4(), None, None
        # On a shared device the other person may still be logged in: our events carry their
        # userId until we log in ourselves (identify: one anonymousId, two known users).
        ref = self.pick(_EXTERNAL_REFERRERS)
        campaign = None
        search = ""
        if r() < 0.18:
            name, source, medium, term = self.pick(_CAMPAIGNS)
            campaign = {"name": name, "source": source, "medium": medium}
            if term:
                campaign["term"] = term
            search = f"?utm_source={source}&utm_medium={medium}&utm_campaign={name}"
        n = 1 + int(-4.5 * _log(1.0 - r()))  # page views, geometric-ish, mean ~5
        login, signup, lead = self._login_plan(person, d, n)
        page: dict[str, Any] = {}
        cart: list[tuple] = []

        def sent_fn(when: int) -> tuple[int, int]:
            s = when + 3 + int(r() * 40)
            return s, s + 20 + int(r() * 250)

        def ctx_fn() -> dict:
            return self.web_context(d, page, campaign)

        for i in range(n):
            path, title, prod = self.pick_page()
            url = f"{_SITE}{path}"
            page = {"path": path, "referrer": ref, "search": search if i == 0 else "", "title": title,
                    "url": url + (search if i == 0 else "")}
            uid, anon = self.junk_ids(d.uid, d.anon)
            sent, received = sent_fn(t)
            ev = self.base("page", d, t, sent, received, uid, anon, ctx_fn())
            ev["name"] = title.split(" – ")[0]
            ev["properties"] = {"path": path, "referrer": ref, "search": page["search"], "title": title, "url": page["url"]}
            self.push(ev, received)
            if prod is not None:
                t += 200 + int(r() * 2000)
                action = r()
                name = "Product Viewed" if action < 0.7 else "Product Added"
                if name == "Product Added":
                    cart.append(prod)
                sent, received = sent_fn(t)
                uid, anon = self.junk_ids(d.uid, d.anon)
                ev = self.base("track", d, t, sent, received, uid, anon, ctx_fn())
                ev["event"] = name
                ev["properties"] = self.product_props(prod, 1 if name == "Product Added" else None)
                self.push(ev, received)
            elif path.startswith("/search"):
                t += 100 + int(r() * 500)
                sent, received = sent_fn(t)
                ev = self.base("track", d, t, sent, received, d.uid, d.anon, ctx_fn())
                ev["event"] = "Products Searched"
                ev["properties"] = {"query": path.split("=", 1)[1].replace("+", " ")}
                self.push(ev, received)
            if i == lead:
                t = self.identify_events(person, d, t + 2000 + int(r() * 20000), person.email, ctx_fn, sent_fn, "lead")
                person.email_known = True
                d.user, d.uid = person, person.email
            if i == signup:
                t = self.identify_events(person, d, t + 5000 + int(r() * 60000), person.user_id, ctx_fn, sent_fn, "signup")
                person.signed_up = True
                person.created_at = t
                d.user, d.uid = person, person.user_id
            if i == login:
                t = self.identify_events(person, d, t + 3000 + int(r() * 30000), person.user_id, ctx_fn, sent_fn, "login")
                d.user, d.uid = person, person.user_id
            if d.user is not None and d.uid is not None and d not in self.shared_set and r() < 0.02:
                self.shared_pool.append(d)
                self.shared_set.add(d)
            ref = url
            t += 2000 + int(-25_000 * _log(1.0 - r()))
        if cart and r() < 0.45:
            self.checkout(person, d, t, cart, ctx_fn, sent_fn)
        if d.uid is not None and r() < 0.07:
            sent, received = sent_fn(t)
            ev = self.base("track", d, t, sent, received, d.uid, d.anon, ctx_fn())
            ev["event"] = "Signed Out"
            ev["properties"] = {}
            self.push(ev, received)
            d.user, d.uid = None, None
            if r() < P_RESET_ON_LOGOUT:
                d.anon = self.uuid4()

    def pick_page(self) -> tuple[str, str, tuple | None]:
        x = self.r()
        if x < 0.45:
            prod = self.pick(self.products)
            return f"/products/{prod[6]}", f"{prod[3]} – Northwind Outfitters", prod
        if x < 0.65:
            cat = self.pick(_CATEGORIES)
            return f"/collections/{cat.lower().replace(' ', '-')}", f"{cat} – Northwind Outfitters", None
        if x < 0.75:
            q = self.pick(_SEARCHES)
            return f"/search?q={q.replace(' ', '+')}", "Search results – Northwind Outfitters", None
        if x < 0.85:
            slug = self.pick(_BLOG_SLUGS)
            return f"/blog/{slug}", f"{slug.replace('-', ' ').capitalize()} – Northwind Journal", None
        path, title = self.pick(_STATIC_PAGES)
        return path, title, None

    def checkout(self, person: _Person, d: _Device, t: int, cart: list, ctx_fn, sent_fn) -> None:
        r = self.r
        self.order_no += 1 + int(r() * 3)
        order_id = f"NW-{self.order_no}"
        products = [self.product_props(p, 1 + int(r() * r() * 3)) for p in cart[:6]]
        subtotal = round(sum(p["price"] * p["quantity"] for p in products), 2)
        shipping = 0.0 if subtotal > 100 else 7.95
        tax = round(subtotal * 0.08, 2)
        t += 5000 + int(r() * 60000)
        sent, received = sent_fn(t)
        ev = self.base("track", d, t, sent, received, d.uid, d.anon, ctx_fn())
        ev["event"] = "Checkout Started"
        ev["properties"] = {"order_id": order_id, "value": subtotal, "revenue": subtotal, "currency": "USD",
                            "products": [dict(p) for p in products]}
        self.push(ev, received)
        t += 30_000 + int(r() * 240_000)
        uid, anon = d.uid, None
        if uid is None:
            if r() < P_GUEST_ORDER:
                uid = self.pick(("0", "null"))  # junk: the backend's guest user
            else:
                anon = d.anon  # the backend forwards the browser's anonymousId
        props = {"order_id": order_id, "checkout_id": self.uuid4(), "total": round(subtotal + shipping + tax, 2),
                 "subtotal": subtotal, "revenue": subtotal, "shipping": shipping, "tax": tax, "currency": "USD",
                 "payment_method": self.pick(("card", "card", "paypal", "apple_pay")), "products": products}
        received = t + 30 + int(r() * 60)
        ev = self.base("track", None, t, t + 2, received, uid, anon, self.server_context())
        ev["event"] = "Order Completed"
        ev["properties"] = props
        self.push(ev, received)

    def mobile_session(self, person: _Person, d: _Device, t: int) -> None:
        r = self.r
        session_start = t
        offline = r() < self.p_offline
        wifi = r() < 0.6
        if not wifi and r() < 0.5:
            d.ip = self.ip()  # cellular: a new IP
        n = 1 + int(-5.0 * _log(1.0 - r()))
        login, signup, _ = self._login_plan(person, d, n)
        # The app queues its events and flushes them in batches (below); meanwhile push()
        # only collects (event, event time), or (event, receivedAt) for the backend's alias.
        queued: list[tuple[int, dict]] = []

        def sent_fn(when: int) -> tuple[int, int]:
            return when, when  # sentAt / receivedAt are set at flush time

        def ctx_fn() -> dict:
            return self.mobile_context(d, wifi)

        def queue(ev: dict, when: int) -> None:
            queued.append((when, ev))

        self.push = queue  # type: ignore[method-assign]
        try:
            names = ("Application Opened",) if d.installed else ("Application Installed", "Application Opened")
            d.installed = True
            for name in names:
                ev = self.base("track", d, t, t, t, d.uid, d.anon, ctx_fn())
                ev["event"] = name
                ev["properties"] = {"from_background": False, "version": _APP[d.kind][0], "build": _APP[d.kind][1]}
                queue(ev, t)
                t += 10 + int(r() * 200)
            for i in range(n):
                prod = self.pick(self.products) if r() < 0.5 else None
                uid, anon = self.junk_ids(d.uid, d.anon)
                ev = self.base("screen", d, t, t, t, uid, anon, ctx_fn())
                ev["name"] = "Product Detail" if prod else self.pick(("Home", "Search", "Cart", "Account", "Category"))
                ev["properties"] = {"name": ev["name"], "product_id": prod[0]} if prod else {"name": ev["name"]}
                queue(ev, t)
                if prod is not None and r() < 0.4:
                    t += 500 + int(r() * 3000)
                    ev = self.base("track", d, t, t, t, d.uid, d.anon, ctx_fn())
                    ev["event"] = "Product Viewed"
                    ev["properties"] = self.product_props(prod)
                    queue(ev, t)
                if i == signup:
                    t = self.identify_events(person, d, t + 5000 + int(r() * 60000), person.user_id, ctx_fn, sent_fn, "signup")
                    person.signed_up = True
                    person.created_at = t
                    d.user, d.uid = person, person.user_id
                if i == login:
                    t = self.identify_events(person, d, t + 3000 + int(r() * 30000), person.user_id, ctx_fn, sent_fn, "login")
                    d.user, d.uid = person, person.user_id
                t += 1500 + int(-20_000 * _log(1.0 - r()))
        finally:
            del self.push  # back to the class's push
        # Flush every 30 s of app time; an offline session goes out hours later, all at once.
        late = session_start + int(-3 * 3_600_000 * _log(1.0 - r())) + 600_000 if offline else 0
        for when, ev in queued:
            if ev["channel"] == "server":  # the backend's alias is not queued on the phone
                self.push(ev, when)
                continue
            flush = max(late, when - (when - session_start) % 30_000 + 30_000)
            ev["sentAt"] = _iso(flush)
            received = flush + 40 + int(r() * 300)
            ev["receivedAt"] = _iso(received)
            self.push(ev, received)

    def server_session(self, person: _Person, t: int) -> None:
        """Backend and e-mail tool events for a customer: userId only, no anonymousId."""
        r = self.r
        for _ in range(1 + int(r() * 3)):
            received = t + 30 + int(r() * 200)
            if r() < 0.45:
                # The e-mail tool keys people by e-mail address when it learnt them that way.
                by_email = person.email_known or person.lead or person.legacy_email
                ev = self.base("track", None, t, t + 1, received, person.email if by_email else person.user_id,
                               None, self.server_context("email"))
                ev["event"] = self.pick(("Email Delivered", "Email Opened", "Email Opened", "Email Link Clicked"))
                ev["properties"] = {"campaign_id": f"cmp_{self.bits(32):08x}", "campaign_name": self.pick(_CAMPAIGNS)[0],
                                    "email_subject": "Your winter gear checklist", "email_id": self.uuid4()}
            else:
                ev = self.base("track", None, t, t + 1, received, person.user_id, None, self.server_context())
                name = self.pick(("Subscription Renewed", "Invoice Paid", "Order Shipped", "Order Delivered", "Review Submitted"))
                ev["event"] = name
                ev["properties"] = {"plan": person.plan, "amount": round(5 + r() * 100, 2), "currency": "USD",
                                    "invoice_id": f"in_{self.bits(64):016x}", "order_id": f"NW-{self.order_no - int(r() * 500)}"}
            self.push(ev, received)
            t += 60_000 + int(r() * 3_600_000)

    # -- the stream -----------------------------------------------------------------------

    def events(self) -> Iterator[dict]:
        heap = self.heap
        pop = heapq.heappop
        while True:
            self.step()
            # Every later session starts after self.clock, and every event is received after
            # its session starts: whatever is due before now can go out, in receivedAt order.
            now = self.clock
            while heap and heap[0][0] <= now:
                yield pop(heap)[2]


def _log(x: float) -> float:
    return _math_log(x) if x > 0 else -745.0

_DAY_SHAPE = tuple(0.5 + 0.5 * _sin((h - 9) / 24 * 2 * _pi) for h in range(24))  # peak ~15:00 UTC


def generate_events(
    n_events: int,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    *,
    shuffle: bool = False,
    late_sessions: float = P_OFFLINE,
    retries: float = P_RETRY,
) -> Iterator[dict]:
    """Yield ``n_events`` Segment events (dicts), in export (``receivedAt``) order.

    ``seed`` and ``start`` (an aware datetime; naive means UTC) fix the history.
    ``shuffle``: yield the same events in a seeded random order (holds them in memory).
    ``late_sessions``: the share of mobile sessions delivered hours late (offline).
    ``retries``: the share of events delivered a second time (same messageId and body).
    """
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    start_ms = int(start.timestamp() * 1000)
    sim = _Simulation(seed, start_ms, late_sessions, retries)
    stream = sim.events()
    if not shuffle:
        for _ in range(n_events):
            yield next(stream)
        return
    events = [next(stream) for _ in range(n_events)]
    random.Random(f"shuffle-{seed}").shuffle(events)
    yield from events


def write_jsonl(events: Iterator[dict], out: Any, chunk: int = 5000) -> tuple[int, int, Counter]:
    """Write events as JSON lines to a binary file; returns (events, bytes, count by type)."""
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    n = size = 0
    types: Counter = Counter()
    buf: list[bytes] = []
    for ev in events:
        line = dumps(ev, option=opt)
        buf.append(line)
        types[ev["type"]] += 1
        if len(buf) >= chunk:
            data = b"".join(buf)
            out.write(data)
            size += len(data)
            n += len(buf)
            buf = []
    if buf:
        data = b"".join(buf)
        out.write(data)
        size += len(data)
        n += len(buf)
    return n, size, types


def write_parts(events: Iterator[dict], folder: str, per_part: int) -> tuple[int, int, Counter]:
    """Write events as gzipped JSON-lines files of ``per_part`` events each into ``folder``.

    Each part is compressed by a ``gzip`` process when there is one, so that compression
    runs on the second core while this one generates (about 1.3x faster end to end)."""
    os.makedirs(folder, exist_ok=True)
    n = size = 0
    types: Counter = Counter()
    gzip_bin = shutil.which("gzip")
    for number in itertools.count():
        part = itertools.islice(events, per_part)
        first = next(part, None)
        if first is None:
            break
        path = os.path.join(folder, f"part-{number:06d}.jsonl.gz")
        part = itertools.chain([first], part)
        if gzip_bin:
            with open(path, "wb") as target:
                proc = subprocess.Popen([gzip_bin, "-3", "-c"], stdin=subprocess.PIPE, stdout=target)
                assert proc.stdin is not None
                got = write_jsonl(part, proc.stdin)
                proc.stdin.close()
                if proc.wait() != 0:
                    raise OSError(f"gzip failed writing {path}")
        else:
            with gzip.open(path, "wb", compresslevel=3) as out:
                got = write_jsonl(part, out)
        n += got[0]
        size += got[1]
        types.update(got[2])
    return n, size, types


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="number of events (default 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", default=DEFAULT_START.isoformat(), help="ISO-8601 start time (default %(default)s)")
    ap.add_argument("--output", "-o", default="-", help="output file ('-' = stdout; .gz implies --gzip)")
    ap.add_argument("--gzip", action="store_true", help="gzip the output")
    ap.add_argument("--part-events", type=int, metavar="N",
                    help="write a folder (--output) of gzipped files of N events each, part-000000.jsonl.gz, ..."
                         " as Segment's storage exports come")
    ap.add_argument("--shuffle", action="store_true", help="random order instead of export order (in memory)")
    ap.add_argument("--late-sessions", type=float, default=P_OFFLINE,
                    help="share of mobile sessions delivered hours late (default %(default)s)")
    ap.add_argument("--retries", type=float, default=P_RETRY,
                    help="share of events delivered twice (default %(default)s)")
    args = ap.parse_args(argv)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    events = generate_events(args.events, seed=args.seed, start=start, shuffle=args.shuffle,
                             late_sessions=args.late_sessions, retries=args.retries)
    use_gzip = args.gzip or args.output.endswith(".gz")
    began = _time.perf_counter()
    if args.part_events:
        if args.output == "-":
            ap.error("--part-events needs --output FOLDER")
        n, size, types = write_parts(events, args.output, args.part_events)
    elif args.output == "-":
        raw = sys.stdout.buffer
        out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3) if use_gzip else raw
        n, size, types = write_jsonl(events, out)
        if use_gzip:
            out.close()
        raw.flush()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        opener = (lambda p: gzip.open(p, "wb", compresslevel=3)) if use_gzip else (lambda p: open(p, "wb"))
        with opener(args.output) as out:
            n, size, types = write_jsonl(events, out)
    elapsed = _time.perf_counter() - began
    mix = ", ".join(f"{k} {v / max(n, 1):.1%}" for k, v in types.most_common())
    print(f"{n} events, {size / 1e6:.1f} MB uncompressed ({size / max(n, 1):.0f} B/event), "
          f"{elapsed:.1f} s ({n / elapsed:,.0f} events/s); {mix}", file=sys.stderr)


if __name__ == "__main__":
    main()
