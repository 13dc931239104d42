"""One test per merge rule of the README, each with the exact expected profiles.

Every test runs on SQLite and on PostgreSQL (the ``graph`` fixture).
"""

from __future__ import annotations

import pytest

from helpers import P, alias, ev, identify, profiles
from identity_graph import IdentityGraph, MergeRules, RulesMismatch
from identity_graph.rules import DEFAULT_BLOCKED_VALUES


def test_readme_worked_example(graph: IdentityGraph) -> None:
    graph.identify(user_id="jen@email.com")
    result = graph.ingest({"type": "alias", "previousId": "jen@email.com", "userId": "507f191e81"})
    assert result.links[0].outcome == "merged"
    profile = graph.profile("jen@email.com")
    assert profile is not None
    assert profile.canonical == "507f191e81"
    assert profile.ids == {"jen@email.com", "507f191e81"}
    assert graph.resolve("507f191e81") == "507f191e81"
    assert graph.resolve("nobody") is None and graph.profile("nobody") is None


# Rule 1 -------------------------------------------------------------------------------

def test_rule1_integer_id_is_the_same_id_as_its_decimal_string(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user=42, anon="a1"))
    graph.ingest(alias(2, "m2", "42", "u-9"))
    assert profiles(graph) == {P("u-9", "42", "a1")}


def test_rule1_strings_are_taken_as_is(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user="Jen@Email.com", anon="a1"))
    graph.ingest(identify(2, "m2", user="jen@email.com ", anon="a2"))
    assert profiles(graph) == {P("Jen@Email.com", "a1"), P("jen@email.com ", "a2")}


def test_rule1_null_is_absent(graph: IdentityGraph) -> None:
    graph.ingest(ev("identify", 1, "m1", userId="u1", anonymousId=None))
    assert profiles(graph) == {P("u1")}


# Rule 2 -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", sorted(DEFAULT_BLOCKED_VALUES) + ["", "   ", "\t", "NULL", "Undefined", "[object Object]"])
def test_rule2_blocked_values_are_not_ids(graph: IdentityGraph, value: str) -> None:
    result = graph.ingest(identify(1, "m1", user="u1", anon=value))
    assert result.status == "applied" and result.links == ()
    assert profiles(graph) == {P("u1")}
    assert graph.resolve(value) is None


def test_rule2_alias_with_blocked_previous_id_is_valid_and_links_nothing(graph: IdentityGraph) -> None:
    result = graph.ingest(alias(1, "m1", "null", "u1"))
    assert result.status == "applied" and result.links == ()
    assert profiles(graph) == {P("u1")}


def test_rule2_event_with_only_blocked_ids_is_blocked_and_changes_nothing(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m0", user="u1"))
    result = graph.ingest(identify(2, "m1", user="undefined", anon="0"))
    assert result.status == "blocked"
    summary = graph.ingest_many([identify(3, "m2", user="anonymous", anon=" ")])
    assert (summary.blocked, summary.applied) == (1, 0)
    assert profiles(graph) == {P("u1")}


def test_rule2_blocked_values_are_configurable(make_graph) -> None:
    graph = make_graph(MergeRules(blocked_values=frozenset({"guest"})))
    graph.ingest(identify(1, "m1", user="u1", anon="GUEST"))
    graph.ingest(identify(2, "m2", user="u2", anon="null"))  # no longer blocked
    assert profiles(graph) == {P("u1"), P("u2", "null")}


# Rule 3 -------------------------------------------------------------------------------

def test_rule3_an_id_becomes_known_from_its_first_event_as_user_id(graph: IdentityGraph) -> None:
    # x is known from the track call at t=1, so its profile may not absorb y implicitly.
    graph.ingest(ev("track", 1, "m1", userId="x"))
    result = graph.ingest(identify(2, "m2", user="y", anon="x"))
    assert result.links[0].outcome == "refused" and result.links[0].reason == "known_id"
    assert profiles(graph) == {P("x"), P("y")}


def test_rule3_an_id_seen_only_as_anonymous_id_is_not_known(graph: IdentityGraph) -> None:
    graph.ingest(ev("page", 1, "m1", anonymousId="x"))
    graph.ingest(identify(2, "m2", user="y", anon="x"))
    assert profiles(graph) == {P("y", "x")}


# Rule 4 -------------------------------------------------------------------------------

def test_rule4_alias_asserts_an_explicit_link(graph: IdentityGraph) -> None:
    result = graph.ingest(alias(1, "m1", "jen@email.com", "507f191e81"))
    assert [(l.source, l.target, l.kind) for l in result.links] == [("jen@email.com", "507f191e81", "alias")]
    assert profiles(graph) == {P("507f191e81", "jen@email.com")}


@pytest.mark.parametrize("type_", ["identify", "track", "page", "screen", "group"])
def test_rule4_any_event_with_both_ids_asserts_an_implicit_link(graph: IdentityGraph, type_: str) -> None:
    result = graph.ingest(ev(type_, 1, "m1", userId="u1", anonymousId="a1"))
    assert [(l.source, l.target, l.kind) for l in result.links] == [("a1", "u1", "implicit")]
    assert profiles(graph) == {P("u1", "a1")}


def test_rule4_alias_applies_its_explicit_link_before_its_implicit_one(graph: IdentityGraph) -> None:
    # {a, p} holds the known p. Implicit-first would refuse a -> u; explicit-first merges
    # p (and with it a) into u, and the implicit link then finds them together.
    graph.ingest(identify(1, "m1", user="p", anon="a"))
    result = graph.ingest(alias(2, "m2", "p", "u", anonymousId="a"))
    assert [(l.kind, l.outcome) for l in result.links] == [("alias", "merged"), ("implicit", "together")]
    assert profiles(graph) == {P("u", "p", "a")}


# Rule 5 -------------------------------------------------------------------------------

def test_rule5_a_shared_device_never_fuses_two_known_users(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user="u1", anon="device"))
    result = graph.ingest(identify(2, "m2", user="u2", anon="device"))
    assert (result.links[0].outcome, result.links[0].reason) == ("refused", "known_id")
    assert profiles(graph) == {P("u1", "device"), P("u2")}


def test_rule5_explicit_alias_is_not_refused_by_protection(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user="u1", anon="device"))
    graph.ingest(identify(2, "m2", user="u2", anon="device"))
    result = graph.ingest(alias(3, "m3", "u1", "u2"))
    assert result.links[0].outcome == "merged"
    assert profiles(graph) == {P("u2", "u1", "device")}


def test_rule5_can_be_switched_off(make_graph) -> None:
    graph = make_graph(MergeRules(protect_known_ids=False))
    graph.ingest(identify(1, "m1", user="u1", anon="device"))
    graph.ingest(identify(2, "m2", user="u2", anon="device"))
    assert profiles(graph) == {P("u2", "u1", "device")}


# Rule 6 -------------------------------------------------------------------------------

def test_rule6_a_link_past_the_size_cap_is_refused_and_stored(make_graph) -> None:
    graph = make_graph(MergeRules(max_profile_ids=3))
    graph.ingest(identify(1, "m1", user="u1", anon="a1"))
    graph.ingest(alias(2, "m2", "a2", "u1"))
    result = graph.ingest(alias(3, "m3", "a3", "u1"))
    assert (result.links[0].outcome, result.links[0].reason) == ("refused", "size_cap")
    assert profiles(graph) == {P("u1", "a1", "a2"), P("a3")}
    stored = [(l.message_id, l.outcome, l.reason) for l in graph._store.all_links()]
    assert ("m3", "refused", "size_cap") in stored


def test_rule6_default_cap_is_1000(graph: IdentityGraph) -> None:
    assert graph.rules.max_profile_ids == 1000
    # u plus d0..d998 make 1,000 IDs; d999 would be the 1,001st.
    summary = graph.ingest_many(alias(i, f"m{i:05d}", f"d{i}", "u") for i in range(1000))
    assert summary.links_merged == 999 and summary.links_refused == {"size_cap": 1}
    assert graph.resolve("d999") == "d999"
    assert len(graph.profile("u").ids) == 1000  # type: ignore[union-attr]


# Rule 7 -------------------------------------------------------------------------------

def test_rule7_a_lone_id_is_its_own_canonical(graph: IdentityGraph) -> None:
    graph.ingest(ev("page", 1, "m1", anonymousId="a1"))
    assert graph.resolve("a1") == "a1"


def test_rule7_the_merged_canonical_is_the_targets_profiles_canonical(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user="u1", anon="d1"))
    graph.ingest(identify(2, "m2", user="u2", anon="d2"))
    graph.ingest(alias(3, "m3", "u2", "d1"))  # target d1's profile has canonical u1
    assert profiles(graph) == {P("u1", "d1", "u2", "d2")}


# Rule 8 -------------------------------------------------------------------------------

SHARED_DEVICE = [
    identify(1, "m1", user="u1", anon="device"),
    identify(2, "m2", user="u2", anon="device"),
    alias(3, "m3", "email", "u2"),
]


def test_rule8_arrival_order_does_not_matter(graph: IdentityGraph) -> None:
    for event in reversed(SHARED_DEVICE):
        graph.ingest(event)
    assert profiles(graph) == {P("u1", "device"), P("u2", "email")}


def test_rule8_ties_are_broken_by_message_id_as_plain_strings(graph: IdentityGraph) -> None:
    # Same instant; "M" < "m" in code-point order, so u2's identify applies first.
    graph.ingest(identify(5, "m", user="u1", anon="device"))
    graph.ingest(identify(5, "M", user="u2", anon="device"))
    assert profiles(graph) == {P("u2", "device"), P("u1")}


def test_rule8_offsets_are_compared_as_utc_instants(graph: IdentityGraph) -> None:
    early = {"type": "identify", "userId": "u1", "anonymousId": "d", "messageId": "z",
             "timestamp": "2024-01-01T01:00:00+02:00"}   # 23:00Z the day before
    late = {"type": "identify", "userId": "u2", "anonymousId": "d", "messageId": "a",
            "timestamp": "2024-01-01T00:00:00Z"}
    graph.ingest(late)
    graph.ingest(early)
    assert profiles(graph) == {P("u1", "d"), P("u2")}


def test_rule8_a_late_event_that_only_makes_an_id_known_replays(graph: IdentityGraph) -> None:
    graph.ingest(identify(2, "m2", user="y", anon="x"))
    assert profiles(graph) == {P("y", "x")}
    result = graph.ingest(ev("track", 1, "m1", userId="x"))  # x was known before m2
    assert result.replayed
    assert profiles(graph) == {P("x"), P("y")}


def test_rule8_a_late_alias_can_turn_a_refusal_into_a_merge(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user="u1", anon="device"))
    graph.ingest(identify(3, "m3", user="u2", anon="device"))   # refused: device holds u1
    assert profiles(graph) == {P("u1", "device"), P("u2")}
    graph.ingest(alias(2, "m2", "u1", "u2"))                     # late: u1 became u2 first
    assert profiles(graph) == {P("u2", "u1", "device")}
    outcomes = {l.message_id: l.outcome for l in graph._store.all_links()}
    assert outcomes == {"m1": "merged", "m2": "merged", "m3": "together"}


def test_rule8_replay_reads_only_the_touched_cluster(graph: IdentityGraph, monkeypatch) -> None:
    from identity_graph.store import WriteTx

    graph.ingest_many([identify(i, f"o{i}", user=f"other{i}", anon=f"dev{i}") for i in range(1, 6)])
    graph.ingest(identify(2, "m2", user="y", anon="x"))
    seen: list[str] = []
    select_in, many = WriteTx._select_in, WriteTx._many

    def spy_select(self, head, column, values):  # type: ignore[no-untyped-def]
        values = list(values)
        seen.append(repr(values))
        return select_in(self, head, column, values)

    def spy_many(self, sql, rows):  # type: ignore[no-untyped-def]
        seen.append(repr(rows))
        return many(self, sql, rows)

    monkeypatch.setattr(WriteTx, "_select_in", spy_select)
    monkeypatch.setattr(WriteTx, "_many", spy_many)
    assert graph.ingest(ev("track", 1, "m1", userId="x")).replayed
    assert any("'x'" in p for p in seen)
    assert not any("other" in p or "dev" in p for p in seen)
    assert P("other3", "dev3") in profiles(graph)


# Rule 9 -------------------------------------------------------------------------------

def test_rule9_a_seen_message_id_is_a_duplicate_and_changes_nothing(graph: IdentityGraph) -> None:
    graph.ingest(identify(1, "m1", user="u1", anon="a1"))
    # A retry may carry another time (no timestamp: the time it was read) or context.
    resent = graph.ingest({**identify(9, "m1", user="u1", anon="a1"), "context": {"retry": 2}})
    assert resent.status == "duplicate"
    assert profiles(graph) == {P("u1", "a1")}


@pytest.mark.parametrize("change", [
    {"userId": "u2"}, {"anonymousId": "a2"}, {"type": "page"}, {"userId": 7},
])
def test_rule9_a_seen_message_id_with_other_content_is_a_conflict_and_changes_nothing(
    graph: IdentityGraph, change: dict
) -> None:
    graph.ingest(identify(1, "m1", user="u1", anon="a1"))
    again = graph.ingest({**identify(1, "m1", user="u1", anon="a1"), **change})
    assert again.status == "conflict"
    assert profiles(graph) == {P("u1", "a1")}
    assert graph.stats().duplicates == 1


def test_rule9_a_conflict_inside_one_batch_keeps_the_first(graph: IdentityGraph) -> None:
    errors: list = []
    summary = graph.ingest_many(
        [identify(1, "m1", user="u1", anon="a1"), identify(2, "m1", user="u2", anon="a1"),
         identify(1, "m1", user="u1", anon="a1")],
        on_invalid=errors.append,
    )
    assert (summary.applied, summary.duplicates, summary.conflicts) == (1, 1, 1)
    assert [str(e) for e in errors] == [
        "event 1: messageId: duplicate of an earlier event with a different body (type or IDs);"
        " the first one was kept"
    ]
    assert profiles(graph) == {P("u1", "a1")}


def test_rule9_events_without_message_id_get_a_deterministic_one(graph: IdentityGraph) -> None:
    event = {"type": "identify", "userId": "u1", "anonymousId": "a1", "timestamp": "2024-01-01T00:00:00Z"}
    first = graph.ingest(event)
    second = graph.ingest(dict(reversed(list(event.items()))))
    assert first.status == "applied" and second.status == "duplicate"
    assert first.message_id == second.message_id


def test_rule9_reingesting_a_history_is_a_no_op(graph: IdentityGraph) -> None:
    history = SHARED_DEVICE + [identify(4, "m4", user="u3", anon="d3")]
    graph.ingest_many(history)
    before = profiles(graph)
    summary = graph.ingest_many(history)
    assert (summary.duplicates, summary.applied) == (4, 0)
    assert profiles(graph) == before


def test_rule9_duplicates_within_one_batch_keep_the_first(graph: IdentityGraph) -> None:
    summary = graph.ingest_many([identify(1, "m1", user="u1", anon="a"), identify(1, "m1", user="u1", anon="a")])
    assert (summary.applied, summary.duplicates, summary.conflicts) == (1, 1, 0)
    assert profiles(graph) == {P("u1", "a")}


# The rules are part of the graph ---------------------------------------------------------

def test_rules_are_stored_and_a_different_set_is_refused(make_graph) -> None:
    make_graph(MergeRules(max_profile_ids=50))
    assert make_graph().rules.max_profile_ids == 50
    with pytest.raises(RulesMismatch, match=r"max_profile_ids: 10 here, 50 in the graph"):
        make_graph(MergeRules(max_profile_ids=10))


# The rules object itself ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -3, 2.5, "10"])
def test_rules_refuse_a_size_cap_that_is_not_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_profile_ids must be a positive integer"):
        MergeRules(max_profile_ids=bad)  # type: ignore[arg-type]


def test_rules_differences_name_added_and_dropped_blocked_values() -> None:
    stored = MergeRules()
    mine = MergeRules(blocked_values=(stored.blocked_values - {"nan"}) | {"N/A", "guest"})
    assert mine.differences(stored) == ["blocked_values: adds ['guest', 'n/a'], drops ['nan']"]
    assert MergeRules(protect_known_ids=False).differences(stored) == [
        "protect_known_ids: False here, True in the graph"]
    assert stored.differences(MergeRules()) == []
