"""RabbitMQ's routing semantics, for the in-process broker.

Two matchers and four binding tables, each agreeing exactly with RabbitMQ 3.10
(the parity test in ``tests/integration/test_routing_parity.py`` proves it
against a live broker):

* **topic** — keys and patterns are split on ``.`` into words; ``a..b`` has
  three words (the middle one empty) and the empty key has *zero* words.
  ``*`` matches exactly one word (possibly the empty word), ``#`` matches zero
  or more: ``kern.#`` matches ``kern``, ``#.critical`` matches ``critical``,
  ``#`` matches everything including ``""``; the empty pattern matches only
  the empty key.
* **headers** — ``x-match`` is ``all`` (the default), ``any``, ``all-with-x``
  or ``any-with-x``; any other value is refused, as the broker refuses the
  binding. ``x-match`` itself never takes part; other ``x-`` arguments take
  part only in the ``-with-x`` modes. A binding with nothing left to compare
  matches every message under ``all`` and none under ``any``. An argument
  whose value is ``None`` (AMQP void) asks only that the header be present.
  Values compare the way Erlang's ``==`` compares the decoded field values:
  ``"1"`` never equals ``1``, ``True`` never equals ``1``, but ``"a"`` equals
  ``b"a"`` (both binaries), a ``datetime`` equals its integer epoch seconds,
  and ``Decimal("1.0")`` equals ``Decimal("1")`` (pika normalises them);
  nested tables and arrays compare with their wire types and in order.
* **direct** and **fanout** — a hash lookup on the whole key, and everything.

The tables are generic over the destination (any hashable: a queue name, an
exchange name, a ``(kind, name)`` pair). They are *not* thread-safe: the
broker that owns them holds its lock around every call.
"""

from __future__ import annotations

import calendar
import decimal
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

__all__ = [
    "BindingTable",
    "DirectTable",
    "FanoutTable",
    "HeadersTable",
    "TopicTable",
    "headers_match",
    "split_words",
    "table_for",
    "topic_matches",
]

D = TypeVar("D", bound=Hashable)

_X_MATCH = "x-match"
_X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")
_INT32 = range(-(2**31), 2**31)
_WILDCARDS = frozenset(("*", "#"))


# -- topic -----------------------------------------------------------------------


def split_words(key: str) -> list[str]:
    """Split a routing key or binding pattern into words: ``""`` has none, ``"a."`` two."""
    return key.split(".") if key else []


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding ``pattern`` matches ``routing_key``, exactly as RabbitMQ decides.

    Runs in O(pattern words x key words): the set of key positions reachable
    after each pattern word is tracked, so many ``#`` words never backtrack.
    """
    words = split_words(routing_key)
    n = len(words)
    positions = {0}
    for token in split_words(pattern):
        if token == "#":
            positions = set(range(min(positions), n + 1))
        elif token == "*":
            positions = {p + 1 for p in positions if p < n}
        else:
            positions = {p + 1 for p in positions if p < n and words[p] == token}
        if not positions:
            return False
    return n in positions


# -- headers ---------------------------------------------------------------------


def _wire(value: Any) -> tuple[str, Any]:
    """``(wire type, comparable value)`` of a field value, as pika encodes it.

    The comparable value mirrors what RabbitMQ decodes the field into, so
    that two values are ``==`` here exactly when they are ``==`` in Erlang.
    """
    if value is None:
        return "V", None
    if isinstance(value, bool):
        return "t", value
    if isinstance(value, int):
        return ("I" if value in _INT32 else "l"), value
    if isinstance(value, float):
        return "d", value
    if isinstance(value, str):
        return "S", value.encode()
    if isinstance(value, bytes | bytearray):
        return "x", bytes(value)
    if isinstance(value, decimal.Decimal):
        normal = value.normalize()
        exponent = normal.as_tuple().exponent
        scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        return "D", (scale, int(normal.scaleb(scale)))
    if isinstance(value, datetime):
        return "T", calendar.timegm(value.utctimetuple())
    if isinstance(value, Mapping):
        # A nested table stays a list of typed entries, in wire order.
        return "F", tuple((str(k), *_wire(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return "A", tuple(_wire(v) for v in value)
    raise TypeError(f"cannot carry a {type(value).__name__} in an AMQP field table")


def _comparable(value: Any) -> Any:
    """The value RabbitMQ compares for a top-level header: its type tag is ignored.

    Booleans decode to the atoms ``true``/``false``, which equal no number.
    """
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    return _wire(value)[1]


_PRESENT = object()  # a void binding argument: the header need only be present
_ABSENT = object()
_TRUE = object()
_FALSE = object()


def _match_mode(arguments: Mapping[str, Any]) -> str:
    mode = arguments.get(_X_MATCH, "all")
    if not isinstance(mode, str):
        raise ValueError(
            f"invalid x-match field type {type(mode).__name__} (value {mode!r}); expected a string"
        )
    if mode not in _X_MATCH_MODES:
        raise ValueError(
            f"invalid x-match field value {mode!r}; expected all, any, all-with-x, or any-with-x"
        )
    return mode


class _HeadersSpec:
    """A headers binding compiled once: its mode and the (name, wanted value) pairs."""

    __slots__ = ("match_all", "wanted")

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        mode = _match_mode(arguments)
        with_x = mode.endswith("-with-x")
        self.match_all = mode.startswith("all")
        self.wanted: tuple[tuple[str, Any], ...] = tuple(
            (name, _PRESENT if value is None else _comparable(value))
            for name, value in arguments.items()
            if name != _X_MATCH and (with_x or not name.startswith("x-"))
        )

    def matches(self, headers: Mapping[str, Any]) -> bool:
        """``headers`` maps names to comparable values (see :func:`_comparable`)."""
        if self.match_all:
            for name, want in self.wanted:
                got = headers.get(name, _ABSENT)
                if got is _ABSENT or (want is not _PRESENT and got != want):
                    return False
            return True
        for name, want in self.wanted:
            got = headers.get(name, _ABSENT)
            if got is not _ABSENT and (want is _PRESENT or got == want):
                return True
        return False


def _comparable_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    return {name: _comparable(value) for name, value in (headers or {}).items()}


def headers_match(binding_arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """Whether a headers-exchange binding with these arguments takes a message with ``headers``.

    Raises ``ValueError`` for an ``x-match`` the broker would refuse, and
    ``TypeError`` for a value no AMQP field table can carry.
    """
    return _HeadersSpec(binding_arguments).matches(_comparable_headers(headers))


# -- binding tables --------------------------------------------------------------

_BindingId = tuple[str, tuple[tuple[str, str, Any], ...], D]


def _freeze(arguments: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...]:
    """A hashable identity for binding arguments: order-free, type-sensitive, as the broker's."""
    return tuple(sorted((name, *_wire(value)) for name, value in arguments.items()))


def _count_up(counts: dict[D, int], destination: D) -> None:
    counts[destination] = counts.get(destination, 0) + 1


def _count_down(counts: dict[D, int], destination: D) -> None:
    left = counts[destination] - 1
    if left:
        counts[destination] = left
    else:
        del counts[destination]


class BindingTable(ABC, Generic[D]):
    """The bindings of one exchange and how it routes, for one exchange type.

    A binding is identified by its key, its arguments (compared as the broker
    compares them: order-free, type-sensitive) and its destination; adding it
    twice is a no-op. ``route`` returns each destination at most once, however
    many of its bindings match. Not thread-safe: the caller holds a lock.
    """

    exchange_type: ClassVar[str]

    def __init__(self) -> None:
        self._bindings: dict[_BindingId[D], dict[str, Any]] = {}
        self._by_destination: dict[D, set[_BindingId[D]]] = {}

    def add(self, binding_key: str, arguments: Mapping[str, Any] | None, destination: D) -> bool:
        """Add a binding; False if that exact binding already existed."""
        args = dict(arguments or {})
        binding = (binding_key, _freeze(args), destination)
        if binding in self._bindings:
            return False
        self._attach(binding, args)
        self._bindings[binding] = args
        self._by_destination.setdefault(destination, set()).add(binding)
        return True

    def remove(self, binding_key: str, arguments: Mapping[str, Any] | None, destination: D) -> bool:
        """Remove a binding; False if there was no such binding."""
        binding = (binding_key, _freeze(dict(arguments or {})), destination)
        if binding not in self._bindings:
            return False
        self._drop(binding)
        return True

    def remove_destination(self, destination: D) -> int:
        """Remove every binding to ``destination`` (a deleted queue); how many there were."""
        bindings = self._by_destination.get(destination, set())
        count = len(bindings)
        for binding in list(bindings):
            self._drop(binding)
        return count

    def bindings(self) -> list[tuple[str, dict[str, Any], D]]:
        """Every binding as ``(key, arguments, destination)``, in the order they were added."""
        return [(key, dict(args), dest) for (key, _, dest), args in self._bindings.items()]

    def __len__(self) -> int:
        return len(self._bindings)

    @abstractmethod
    def route(self, routing_key: str, headers: Mapping[str, Any] | None = None) -> set[D]:
        """The destinations a message with this key and these headers goes to."""

    @abstractmethod
    def _attach(self, binding: _BindingId[D], arguments: dict[str, Any]) -> None:
        """Index a new binding for routing."""

    @abstractmethod
    def _detach(self, binding: _BindingId[D]) -> None:
        """Forget an existing binding's routing index entry."""

    def _drop(self, binding: _BindingId[D]) -> None:
        self._detach(binding)
        del self._bindings[binding]
        destination = binding[2]
        remaining = self._by_destination[destination]
        remaining.discard(binding)
        if not remaining:
            del self._by_destination[destination]


class _Node(Generic[D]):
    """A trie node: children by word (``*`` and ``#`` included) and the bindings ending here."""

    __slots__ = ("children", "destinations", "is_hash", "parent", "under_hash", "word")

    def __init__(self, parent: _Node[D] | None = None, word: str = "") -> None:
        self.parent = parent
        self.word = word
        self.children: dict[str, _Node[D]] = {}
        self.destinations: dict[D, int] = {}
        self.is_hash = word == "#" and parent is not None
        # Only below a '#' can two paths reach the same (node, position) state.
        self.under_hash: bool = self.is_hash or (parent is not None and parent.under_hash)


class TopicTable(BindingTable[D]):
    """A topic exchange's bindings, in a trie over words with ``*`` and ``#`` children.

    Routing walks the trie once per key, visiting each (node, key position)
    state at most once, so its cost depends on the bindings that can match,
    not on how many there are, and never grows exponentially with ``#``.
    """

    exchange_type = "topic"

    def __init__(self) -> None:
        super().__init__()
        self._root: _Node[D] = _Node()

    def _attach(self, binding: _BindingId[D], arguments: dict[str, Any]) -> None:
        node = self._root
        for word in split_words(binding[0]):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _Node(node, word)
            node = child
        _count_up(node.destinations, binding[2])

    def _detach(self, binding: _BindingId[D]) -> None:
        node = self._root
        for word in split_words(binding[0]):
            node = node.children[word]
        _count_down(node.destinations, binding[2])
        while node.parent is not None and not node.children and not node.destinations:
            del node.parent.children[node.word]
            node = node.parent

    def route(self, routing_key: str, headers: Mapping[str, Any] | None = None) -> set[D]:
        """The destinations whose patterns match ``routing_key``; headers are ignored."""
        words = split_words(routing_key)
        end = len(words)
        found: set[D] = set()
        seen: set[tuple[_Node[D], int]] = set()
        stack: list[tuple[_Node[D], int]] = [(self._root, 0)]
        while stack:
            state = stack.pop()
            node, at = state
            if node.under_hash:
                if state in seen:
                    continue
                seen.add(state)
            if at == end:
                if node.destinations:
                    found.update(node.destinations)
                hashed = node.children.get("#")
                if hashed is not None:
                    stack.append((hashed, end))
                continue
            if node.is_hash:  # this '#' swallows one more word
                stack.append((node, at + 1))
            children = node.children
            if not children:
                continue
            word = words[at]
            # A literal '*' or '#' word in a key is reached through the wildcard edges below.
            if word not in _WILDCARDS:
                child = children.get(word)
                if child is not None:
                    stack.append((child, at + 1))
            child = children.get("*")
            if child is not None:
                stack.append((child, at + 1))
            child = children.get("#")
            if child is not None:
                stack.append((child, at))
        return found


class DirectTable(BindingTable[D]):
    """A direct exchange's bindings: a dict from the whole key to its destinations."""

    exchange_type = "direct"

    def __init__(self) -> None:
        super().__init__()
        self._by_key: dict[str, dict[D, int]] = {}

    def _attach(self, binding: _BindingId[D], arguments: dict[str, Any]) -> None:
        _count_up(self._by_key.setdefault(binding[0], {}), binding[2])

    def _detach(self, binding: _BindingId[D]) -> None:
        destinations = self._by_key[binding[0]]
        _count_down(destinations, binding[2])
        if not destinations:
            del self._by_key[binding[0]]

    def route(self, routing_key: str, headers: Mapping[str, Any] | None = None) -> set[D]:
        """The destinations bound with exactly ``routing_key``."""
        return set(self._by_key.get(routing_key, ()))


class FanoutTable(BindingTable[D]):
    """A fanout exchange's bindings: every destination, whatever the key or headers."""

    exchange_type = "fanout"

    def __init__(self) -> None:
        super().__init__()
        self._destinations: dict[D, int] = {}

    def _attach(self, binding: _BindingId[D], arguments: dict[str, Any]) -> None:
        _count_up(self._destinations, binding[2])

    def _detach(self, binding: _BindingId[D]) -> None:
        _count_down(self._destinations, binding[2])

    def route(self, routing_key: str, headers: Mapping[str, Any] | None = None) -> set[D]:
        """Every bound destination."""
        return set(self._destinations)


class HeadersTable(BindingTable[D]):
    """A headers exchange's bindings: each binding's arguments against the message headers.

    The key is ignored. Adding a binding with an ``x-match`` the broker would
    refuse raises ``ValueError`` and leaves the table unchanged.
    """

    exchange_type = "headers"

    def __init__(self) -> None:
        super().__init__()
        self._specs: dict[_BindingId[D], _HeadersSpec] = {}

    def _attach(self, binding: _BindingId[D], arguments: dict[str, Any]) -> None:
        self._specs[binding] = _HeadersSpec(arguments)

    def _detach(self, binding: _BindingId[D]) -> None:
        del self._specs[binding]

    def route(self, routing_key: str, headers: Mapping[str, Any] | None = None) -> set[D]:
        """The destinations with at least one binding that ``headers`` satisfy."""
        comparable = _comparable_headers(headers)
        found: set[D] = set()
        for (_, _, destination), spec in self._specs.items():
            if destination not in found and spec.matches(comparable):
                found.add(destination)
        return found


_TABLES: dict[str, type[BindingTable[Any]]] = {
    cls.exchange_type: cls for cls in (TopicTable, DirectTable, FanoutTable, HeadersTable)
}


def table_for(exchange_type: str) -> BindingTable[Any]:
    """A new, empty binding table for ``topic``, ``direct``, ``fanout`` or ``headers``."""
    try:
        cls = _TABLES[exchange_type]
    except KeyError:
        known = ", ".join(sorted(_TABLES))
        raise ValueError(
            f"unknown exchange type {exchange_type!r}; expected one of {known}"
        ) from None
    return cls()
