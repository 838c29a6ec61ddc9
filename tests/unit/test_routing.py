"""Unit tests for logbus.routing: RabbitMQ's topic and headers semantics, and the binding tables."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus import routing
from logbus.routing import (
    DirectTable,
    FanoutTable,
    HeadersTable,
    TopicTable,
    headers_match,
    table_for,
    topic_matches,
)

# -- a reference matcher, written for clarity rather than speed -----------------


def reference_topic_match(pattern: str, routing_key: str) -> bool:
    """Straight from the rules: split on dots ("" has no words), '#' = 0+ words, '*' = one."""

    def words(text: str) -> list[str]:
        return [] if text == "" else text.split(".")

    def match(pat: list[str], key: list[str]) -> bool:
        if not pat:
            return not key
        head, rest = pat[0], pat[1:]
        if head == "#":
            return any(match(rest, key[skip:]) for skip in range(len(key) + 1))
        if not key:
            return False
        return (head == "*" or head == key[0]) and match(rest, key[1:])

    return match(words(pattern), words(routing_key))


PATTERN_WORDS = st.sampled_from(["a", "b", "kern", "", "*", "#"])
KEY_WORDS = st.sampled_from(["a", "b", "kern", "", "c", "*", "#"])
patterns = st.lists(PATTERN_WORDS, min_size=0, max_size=6).map(".".join)
keys = st.lists(KEY_WORDS, min_size=0, max_size=6).map(".".join)


# -- topic_matches: the corners ---------------------------------------------------


def test_empty_pattern_matches_only_the_empty_key() -> None:
    """The empty pattern has zero words, so only the zero-word key matches it."""
    assert topic_matches("", "")
    assert not topic_matches("", ".")
    assert not topic_matches("", "a")


def test_hash_matches_everything_including_the_empty_key() -> None:
    """'#' alone matches any key, the empty one and all-empty-word ones included."""
    for key in ["", ".", "a", "a.b.c", "..", "*.#"]:
        assert topic_matches("#", key), key


def test_trailing_hash_matches_zero_words() -> None:
    """'kern.#' matches 'kern' itself, not only 'kern.<something>'."""
    assert topic_matches("kern.#", "kern")
    assert topic_matches("kern.#", "kern.a.b")
    assert not topic_matches("kern.#", "kernel")


def test_leading_hash_matches_zero_words() -> None:
    """'#.critical' matches 'critical' itself."""
    assert topic_matches("#.critical", "critical")
    assert topic_matches("#.critical", "a.b.critical")
    assert not topic_matches("#.critical", "critical.a")


def test_star_matches_exactly_one_word() -> None:
    """'kern.*' needs exactly one word after 'kern', never zero and never two."""
    assert topic_matches("kern.*", "kern.a")
    assert not topic_matches("kern.*", "kern")
    assert not topic_matches("kern.*", "kern.a.b")


def test_star_matches_the_empty_word() -> None:
    """'kern.*' matches 'kern.' because the second word is the empty word."""
    assert topic_matches("kern.*", "kern.")
    assert topic_matches("*", "") is False
    assert topic_matches("*.*", ".")


def test_empty_words_are_words() -> None:
    """'a..b' has three words, the middle one empty: '*' or an empty pattern word matches it."""
    assert topic_matches("a.*.b", "a..b")
    assert topic_matches("a..b", "a..b")
    assert not topic_matches("a.b", "a..b")
    assert not topic_matches("a..b", "a.b")


def test_star_never_spans_a_dot() -> None:
    """A star is one word: '*' does not match 'a.b'."""
    assert not topic_matches("*", "a.b")
    assert topic_matches("*.*", "a.b")


def test_hashes_in_a_row_can_all_match_nothing() -> None:
    """'#.#' and 'a.#.#.b' match when every '#' takes zero words."""
    assert topic_matches("#.#", "")
    assert topic_matches("a.#.#.b", "a.b")


def test_star_after_hash_still_needs_a_word() -> None:
    """'#.*' needs at least one word, so it refuses the empty key."""
    assert not topic_matches("#.*", "")
    assert topic_matches("#.*", "a.b.c")


def test_many_hashes_do_not_blow_up() -> None:
    """Forty '#' against a long key that fails at the end stays polynomial."""
    pattern = ".".join(["#"] * 40) + ".x"
    key = ".".join(["a"] * 60) + ".y"
    assert not topic_matches(pattern, key)
    table: TopicTable[str] = TopicTable()
    table.add(pattern, {}, "q")
    assert table.route(key) == set()
    assert table.route(key[:-1] + "x") == {"q"}


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, key=keys)
def test_topic_matches_agrees_with_reference(pattern: str, key: str) -> None:
    """topic_matches decides like the clear recursive reference matcher."""
    assert topic_matches(pattern, key) == reference_topic_match(pattern, key)


@settings(max_examples=200, deadline=None)
@given(bound=st.lists(patterns, min_size=0, max_size=25), probes=st.lists(keys, max_size=10))
def test_topic_table_route_agrees_with_topic_matches(bound: list[str], probes: list[str]) -> None:
    """TopicTable.route returns exactly the destinations whose pattern topic_matches the key."""
    table: TopicTable[int] = TopicTable()
    for index, pattern in enumerate(bound):
        table.add(pattern, {}, index)
    for key in [*probes, ""]:
        expected = {i for i, pattern in enumerate(bound) if topic_matches(pattern, key)}
        assert table.route(key) == expected, key


@settings(max_examples=100, deadline=None)
@given(
    bound=st.lists(st.tuples(patterns, st.integers(0, 4)), max_size=25, unique=True),
    drop=st.sets(st.integers(0, 24)),
    probes=st.lists(keys, max_size=8),
)
def test_topic_table_after_removals_equals_a_fresh_table(
    bound: list[tuple[str, int]], drop: set[int], probes: list[str]
) -> None:
    """Removing bindings (pruning trie nodes) leaves the same routes as never adding them."""
    table: TopicTable[int] = TopicTable()
    for pattern, dest in bound:
        table.add(pattern, {}, dest)
    for index in drop:
        if index < len(bound):
            table.remove(bound[index][0], {}, bound[index][1])
    fresh: TopicTable[int] = TopicTable()
    for index, (pattern, dest) in enumerate(bound):
        if index not in drop:
            fresh.add(pattern, {}, dest)
    for key in probes:
        assert table.route(key) == fresh.route(key), key
    assert sorted(table.bindings(), key=repr) == sorted(fresh.bindings(), key=repr)


# -- headers_match ----------------------------------------------------------------


def test_headers_default_is_all() -> None:
    """Without x-match every non-x argument must be present with an equal value."""
    args = {"host": "web1", "app": "nginx"}
    assert headers_match(args, {"host": "web1", "app": "nginx", "pid": 7})
    assert not headers_match(args, {"host": "web1"})
    assert not headers_match(args, {"host": "web1", "app": "apache"})


def test_headers_any_needs_one_equal_value() -> None:
    """x-match=any matches as soon as one argument is present and equal."""
    args = {"x-match": "any", "host": "web1", "app": "nginx"}
    assert headers_match(args, {"app": "nginx"})
    assert not headers_match(args, {"app": "apache", "pid": 1})
    assert not headers_match(args, {})


def test_headers_x_arguments_are_ignored_under_all_and_any() -> None:
    """x- binding arguments take no part in all/any matching."""
    assert headers_match({"x-match": "all", "x-foo": "1", "a": "1"}, {"a": "1"})
    assert not headers_match({"x-match": "any", "x-foo": "1"}, {"x-foo": "1"})


def test_headers_with_nothing_to_compare() -> None:
    """No non-x arguments: 'all' matches every message, 'any' matches none."""
    assert headers_match({}, {})
    assert headers_match({"x-match": "all"}, {"a": 1})
    assert not headers_match({"x-match": "any"}, {"a": 1})
    assert headers_match({"x-match": "all-with-x"}, {})
    assert not headers_match({"x-match": "any-with-x"}, {"a": 1})


def test_headers_with_x_modes_compare_x_arguments() -> None:
    """all-with-x / any-with-x compare x- arguments too, but never x-match itself."""
    assert not headers_match({"x-match": "all-with-x", "x-foo": "1"}, {})
    assert headers_match({"x-match": "all-with-x", "x-foo": "1"}, {"x-foo": "1"})
    assert headers_match({"x-match": "any-with-x", "x-foo": "1", "a": "2"}, {"x-foo": "1"})
    assert headers_match({"x-match": "all-with-x"}, {"x-match": "any"})


def test_headers_string_never_equals_integer() -> None:
    """'1' (a longstr) and 1 (an integer) differ, in either direction."""
    assert not headers_match({"k": "1"}, {"k": 1})
    assert not headers_match({"k": 1}, {"k": "1"})
    assert headers_match({"k": 1}, {"k": 1})


def test_headers_bool_never_equals_integer() -> None:
    """True decodes to the atom true, which is not the integer 1."""
    assert not headers_match({"k": True}, {"k": 1})
    assert not headers_match({"k": 1}, {"k": True})
    assert headers_match({"k": True}, {"k": True})


def test_headers_bytes_equal_string_with_the_same_bytes() -> None:
    """A byte array and a longstr are both binaries to the broker, so they compare equal."""
    assert headers_match({"k": b"abc"}, {"k": "abc"})
    assert headers_match({"k": "abc"}, {"k": b"abc"})


def test_headers_timestamp_equals_its_epoch_seconds() -> None:
    """A datetime travels as integer seconds, so it equals that integer."""
    when = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    assert headers_match({"k": when}, {"k": int(when.timestamp())})


def test_headers_decimals_compare_normalised() -> None:
    """Decimal('1.0') equals Decimal('1') after pika normalises both; neither equals 1."""
    assert headers_match({"k": decimal.Decimal("1.0")}, {"k": decimal.Decimal("1")})
    assert not headers_match({"k": decimal.Decimal("1")}, {"k": 1})


def test_headers_void_argument_means_present() -> None:
    """An argument whose value is None matches any value of that header, but not its absence."""
    assert headers_match({"k": None}, {"k": "anything"})
    assert headers_match({"k": None}, {"k": None})
    assert not headers_match({"k": None}, {"j": 1})
    assert not headers_match({"k": "a"}, {"k": None})


def test_headers_nested_tables_compare_typed_and_ordered() -> None:
    """Nested tables and arrays compare entry by entry, with their wire types and in order."""
    assert headers_match({"k": {"a": 1, "b": "x"}}, {"k": {"a": 1, "b": "x"}})
    assert not headers_match({"k": {"a": 1, "b": "x"}}, {"k": {"b": "x", "a": 1}})
    assert not headers_match({"k": [b"a"]}, {"k": ["a"]})
    assert headers_match({"k": [1, "a"]}, {"k": [1, "a"]})


def test_headers_names_are_case_sensitive() -> None:
    """'K' and 'k' are different headers."""
    assert not headers_match({"K": "a"}, {"k": "a"})


@pytest.mark.parametrize("mode", ["ALL", "some", b"all", 1])
def test_headers_invalid_x_match_is_refused(mode: Any) -> None:
    """An x-match the broker would refuse (PRECONDITION_FAILED) raises ValueError."""
    with pytest.raises(ValueError, match="x-match"):
        headers_match({"x-match": mode}, {})


# -- binding tables ---------------------------------------------------------------


def test_add_is_idempotent() -> None:
    """Adding the same (key, arguments, destination) twice keeps one binding."""
    table: TopicTable[str] = TopicTable()
    assert table.add("kern.*", {}, "q1")
    assert not table.add("kern.*", {}, "q1")
    assert len(table) == 1


def test_binding_identity_ignores_argument_order() -> None:
    """Arguments are an unordered table: the same pairs in another order are the same binding."""
    table: HeadersTable[str] = HeadersTable()
    assert table.add("", {"a": "1", "b": 2}, "q")
    assert not table.add("", {"b": 2, "a": "1"}, "q")


def test_binding_identity_is_type_sensitive() -> None:
    """Arguments '1' and 1 make two different bindings, as on the broker."""
    table: DirectTable[str] = DirectTable()
    assert table.add("k", {"a": "1"}, "q")
    assert table.add("k", {"a": 1}, "q")
    assert len(table) == 2


def test_route_returns_each_destination_once() -> None:
    """A destination bound by several matching patterns appears once."""
    table: TopicTable[str] = TopicTable()
    for pattern in ["#", "kern.*", "*.critical", "kern.critical"]:
        table.add(pattern, {}, "q")
    table.add("kern.critical", {"x-extra": 1}, "q")
    assert table.route("kern.critical") == {"q"}


def test_remove_reports_whether_the_binding_existed() -> None:
    """remove returns True once, then False; other bindings are untouched."""
    table: TopicTable[str] = TopicTable()
    table.add("kern.#", {}, "q1")
    table.add("kern.#", {}, "q2")
    assert table.remove("kern.#", {}, "q1")
    assert not table.remove("kern.#", {}, "q1")
    assert table.route("kern") == {"q2"}


def test_remove_one_of_two_bindings_keeps_the_route() -> None:
    """With the same key bound twice (different arguments), removing one keeps the destination."""
    table: DirectTable[str] = DirectTable()
    table.add("k", {}, "q")
    table.add("k", {"x-note": "second"}, "q")
    table.remove("k", {}, "q")
    assert table.route("k") == {"q"}
    table.remove("k", {"x-note": "second"}, "q")
    assert table.route("k") == set()


def test_remove_destination_drops_every_binding_to_it() -> None:
    """remove_destination removes all of a queue's bindings and counts them."""
    table: TopicTable[str] = TopicTable()
    table.add("a.#", {}, "gone")
    table.add("*.b", {}, "gone")
    table.add("a.b", {}, "kept")
    assert table.remove_destination("gone") == 2
    assert table.remove_destination("gone") == 0
    assert table.route("a.b") == {"kept"}
    assert table.bindings() == [("a.b", {}, "kept")]


def test_bindings_lists_key_arguments_destination_in_order() -> None:
    """bindings() returns copies of (key, arguments, destination), oldest first."""
    table: HeadersTable[str] = HeadersTable()
    table.add("", {"x-match": "any", "a": 1}, "q1")
    table.add("", {}, "q2")
    listed = table.bindings()
    assert listed == [("", {"x-match": "any", "a": 1}, "q1"), ("", {}, "q2")]
    listed[0][1]["a"] = 2
    assert table.bindings()[0][1] == {"x-match": "any", "a": 1}


def test_direct_table_matches_the_whole_key_only() -> None:
    """A direct exchange compares the key as one string: no wildcards, no words."""
    table: DirectTable[str] = DirectTable()
    table.add("kern.*", {}, "star")
    table.add("kern.critical", {}, "exact")
    assert table.route("kern.critical") == {"exact"}
    assert table.route("kern.*") == {"star"}
    assert table.route("") == set()


def test_fanout_table_routes_to_everything() -> None:
    """A fanout exchange ignores the key and headers."""
    table: FanoutTable[str] = FanoutTable()
    table.add("ignored", {}, "q1")
    table.add("", {}, "q2")
    assert table.route("whatever", {"a": 1}) == {"q1", "q2"}


def test_headers_table_ignores_the_key() -> None:
    """A headers exchange routes on headers only, whatever the binding and routing keys."""
    table: HeadersTable[str] = HeadersTable()
    table.add("kern.critical", {"host": "web1"}, "q")
    assert table.route("other", {"host": "web1"}) == {"q"}
    assert table.route("kern.critical", {"host": "web2"}) == set()
    assert table.route("kern.critical", None) == set()


def test_headers_table_refuses_an_invalid_x_match() -> None:
    """Adding a binding with a bad x-match raises ValueError and adds nothing."""
    table: HeadersTable[str] = HeadersTable()
    with pytest.raises(ValueError, match="x-match"):
        table.add("", {"x-match": "every"}, "q")
    assert len(table) == 0


header_values = st.sampled_from(["1", 1, "2", 2, "a", b"1", True, None])
header_sets = st.dictionaries(st.sampled_from(["h1", "h2", "x-h"]), header_values, max_size=3)
binding_sets = st.builds(
    lambda mode, args: args if mode is None else {"x-match": mode, **args},
    st.sampled_from([None, "all", "any", "all-with-x", "any-with-x"]),
    header_sets,
)


@settings(max_examples=200, deadline=None)
@given(bound=st.lists(binding_sets, max_size=12), probes=st.lists(header_sets, max_size=6))
def test_headers_table_route_agrees_with_headers_match(
    bound: list[dict[str, Any]], probes: list[dict[str, Any]]
) -> None:
    """HeadersTable.route returns exactly the destinations whose arguments headers_match."""
    table: HeadersTable[int] = HeadersTable()
    for index, args in enumerate(bound):
        table.add("", args, index)
    for headers in probes:
        expected = {i for i, args in enumerate(bound) if headers_match(args, headers)}
        assert table.route("", headers) == expected


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("topic", TopicTable),
        ("direct", DirectTable),
        ("fanout", FanoutTable),
        ("headers", HeadersTable),
    ],
)
def test_table_for_builds_the_table_of_each_type(kind: str, cls: type[object]) -> None:
    """table_for returns a new empty table of the right class for each exchange type."""
    table = table_for(kind)
    assert isinstance(table, cls)
    assert len(table) == 0
    assert table_for(kind) is not table


def test_table_for_refuses_unknown_types() -> None:
    """An exchange type logbus does not route (e.g. a plugin's) is a ValueError naming it."""
    with pytest.raises(ValueError, match="x-consistent-hash"):
        table_for("x-consistent-hash")


def test_all_names_exist() -> None:
    """Every name in __all__ is defined in the module."""
    for name in routing.__all__:
        assert hasattr(routing, name), name
