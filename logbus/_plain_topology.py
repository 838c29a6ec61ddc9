"""A topology as plain data, for the fast ``logbus emit`` path: no pydantic.

:func:`plain_topology` checks TOML data the way :class:`logbus.topology.Topology`
validates it, and gives the same values as ``Topology.model_dump()`` — every
default filled in — or ``None``. ``None`` does not say the data is wrong, only
that the light check will not vouch for it: a value of an unusual type, an
argument that is not a string, integer or boolean, anything the models would
refuse. The caller then takes the full path, whose error messages (with file
and line) are the ones an operator sees. A test holds the two in agreement.

:data:`DEFAULT` is :func:`logbus.topology.default` as such data, and
:func:`declarations` lists, in the order :func:`logbus.topology.declare` makes
them, the exchanges, queues and bindings that ``logbus emit`` declares before
publishing to the emit targets.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT",
    "FRIENDLY_ARGUMENTS",
    "PlainTopology",
    "declarations",
    "no_emit_targets",
    "plain_topology",
    "reachable_names",
    "render_key",
]

Item = dict[str, Any]

_EXCHANGE = {"durable": True, "auto_delete": False, "internal": False, "arguments": None}
_QUEUE = {
    "durable": True,
    "exclusive": False,
    "auto_delete": False,
    "arguments": None,
    "queue_type": None,
    "max_length": None,
    "overflow": None,
    "message_ttl": None,
    "dead_letter_exchange": None,
    "dead_letter_routing_key": None,
}
_BINDING = {"destination_type": "queue", "routing_key": "", "arguments": None}
_EMIT = {"key": "{facility}.{severity}"}
_EXCHANGE_TYPES = ("fanout", "direct", "topic", "headers")
_QUEUE_TYPES = ("classic", "quorum")
_OVERFLOWS = ("drop-head", "reject-publish", "reject-publish-dlx")
#: A queue's friendly fields and the x-arguments they stand for.
FRIENDLY_ARGUMENTS = {
    "queue_type": "x-queue-type",
    "max_length": "x-max-length",
    "overflow": "x-overflow",
    "message_ttl": "x-message-ttl",
    "dead_letter_exchange": "x-dead-letter-exchange",
    "dead_letter_routing_key": "x-dead-letter-routing-key",
}
_PLACEHOLDERS = ("facility", "severity", "host", "app")
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class PlainTopology:
    """Exchanges, queues, bindings and emit targets as dicts of ``model_dump()`` shape."""

    exchanges: tuple[Item, ...] = ()
    queues: tuple[Item, ...] = ()
    bindings: tuple[Item, ...] = ()
    emit: tuple[Item, ...] = ()


def amqp_arguments(queue: Mapping[str, Any]) -> dict[str, Any]:
    """A queue's x-arguments: ``arguments`` plus the friendly fields that are set."""
    args = dict(queue["arguments"])
    args.update((key, queue[f]) for f, key in FRIENDLY_ARGUMENTS.items() if queue[f] is not None)
    return args


def no_emit_targets(config: object | None, *, api: bool = False) -> str:
    """Why a topology without ``[[emit]]`` tables cannot be emitted to, and the fix.

    Said alike by ``logbus emit`` (both paths) and :class:`logbus.Emitter` (``api``):
    without a target a record would be published nowhere, and reported as sent.
    """
    where = "the topology" if config is None else f"the topology file {config}"
    instead = "targets=[EmitTarget(...)]" if api else "--exchange NAME or --queue NAME"
    return (
        f"{where} has no [[emit]] table, so records would be published nowhere; add one "
        f'([[emit]] with exchange = "logbus.topic"), or pass {instead}'
    )


def render_key(target: Mapping[str, Any], facility: str, severity: str, host: str, app: str) -> str:
    """An emit target's routing key for one record."""
    key: str = target["key"]
    return key.format(facility=facility, severity=severity, host=host, app=app)


# -- checking ------------------------------------------------------------------------


class _Unsure(Exception):
    """The light check will not vouch for this data."""


def _require(condition: bool) -> None:
    if not condition:
        raise _Unsure


def plain_topology(data: Any) -> PlainTopology | None:
    """Topology TOML data, checked and with defaults filled in, or ``None`` (see above)."""
    try:
        _require(type(data) is dict and set(data) <= {"exchanges", "queues", "bindings", "emit"})
        topology = PlainTopology(
            exchanges=tuple(_exchange(item) for item in _section(data, "exchanges")),
            queues=tuple(_queue(item) for item in _section(data, "queues")),
            bindings=tuple(_binding(item) for item in _section(data, "bindings")),
            emit=tuple(_emit(item) for item in _section(data, "emit")),
        )
        _references(topology)
    except _Unsure:
        return None
    return topology


def _section(data: dict[str, Any], name: str) -> list[Any]:
    items = data.get(name, [])
    _require(type(items) is list)
    return items  # type: ignore[no-any-return]


def _fields(item: Any, required: tuple[str, ...], defaults: Mapping[str, Any]) -> Item:
    _require(type(item) is dict and set(required) <= set(item) <= {*required, *defaults})
    out = {**defaults, **item}
    if "arguments" in defaults:
        out["arguments"] = _arguments(item.get("arguments", {}))
    return out


def _arguments(value: Any) -> dict[str, Any]:
    _require(type(value) is dict)
    for key, item in value.items():
        _require(type(key) is str and _short(key))
        _require(type(item) in (str, bool) or (type(item) is int and -_INT64 <= item < _INT64))
    return dict(value)


def _short(text: str) -> bool:
    return len(text.encode()) <= 255


def _name(value: Any) -> None:
    _require(type(value) is str and bool(value) and _short(value))
    _require(not value.startswith("amq."))


def _flags(item: Item, *names: str) -> None:
    for name in names:
        _require(type(item[name]) is bool)


def _optional(value: Any, kind: type, choices: tuple[str, ...] = ()) -> None:
    if value is None:
        return
    _require(type(value) is kind)
    if choices:
        _require(value in choices)
    if kind is int:
        _require(0 <= value < _INT64)


def _exchange(raw: Any) -> Item:
    item = _fields(raw, ("name", "type"), _EXCHANGE)
    _name(item["name"])
    _require(type(item["type"]) is str and item["type"] in _EXCHANGE_TYPES)
    _flags(item, "durable", "auto_delete", "internal")
    return {k: item[k] for k in ("name", "type", *_EXCHANGE)}


def _queue(raw: Any) -> Item:
    item = _fields(raw, ("name",), _QUEUE)
    _name(item["name"])
    _flags(item, "durable", "exclusive", "auto_delete")
    _optional(item["queue_type"], str, _QUEUE_TYPES)
    _optional(item["max_length"], int)
    _optional(item["overflow"], str, _OVERFLOWS)
    _optional(item["message_ttl"], int)
    _optional(item["dead_letter_exchange"], str)
    _optional(item["dead_letter_routing_key"], str)
    for field, key in FRIENDLY_ARGUMENTS.items():
        _require(item[field] is None or key not in item["arguments"])
    args = amqp_arguments(item)
    if args.get("x-queue-type") == "quorum":
        _require(item["durable"] and not item["exclusive"] and not item["auto_delete"])
        _require(args.get("x-overflow") != "reject-publish-dlx")
    _require("x-dead-letter-routing-key" not in args or "x-dead-letter-exchange" in args)
    for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
        _require(key not in args or type(args[key]) is str)  # Queue refuses other values
    return {k: item[k] for k in ("name", *_QUEUE)}


def _binding(raw: Any) -> Item:
    item = _fields(raw, ("source", "destination"), _BINDING)
    _require(type(item["source"]) is str and bool(item["source"]))
    _name(item["destination"])
    _require(type(item["destination_type"]) is str)
    _require(item["destination_type"] in ("queue", "exchange"))
    _require(type(item["routing_key"]) is str)
    return {k: item[k] for k in ("source", "destination", *_BINDING)}


def _emit(raw: Any) -> Item:
    item = _fields(raw, ("exchange",), _EMIT)
    _require(type(item["exchange"]) is str and type(item["key"]) is str)
    try:
        parsed = list(string.Formatter().parse(item["key"]))
    except ValueError:
        raise _Unsure from None
    for _text, name, spec, conversion in parsed:
        _require(name is None or (name in _PLACEHOLDERS and not spec and not conversion))
    return {"exchange": item["exchange"], "key": item["key"]}


def _once(items: Iterable[object]) -> None:
    seen: list[object] = []
    for item in items:
        _require(item not in seen)
        seen.append(item)


def _references(topology: PlainTopology) -> None:
    _once(e["name"] for e in topology.exchanges)
    _once(q["name"] for q in topology.queues)
    _once(topology.bindings)
    _once(topology.emit)
    exchanges = {e["name"]: e for e in topology.exchanges}
    queues = {q["name"] for q in topology.queues}
    for q in topology.queues:
        dlx = amqp_arguments(q).get("x-dead-letter-exchange")
        _require(not dlx or dlx in exchanges)
    for b in topology.bindings:
        _require(b["source"] in exchanges)
        targets = exchanges if b["destination_type"] == "exchange" else queues
        _require(b["destination"] in targets)
    for t in topology.emit:
        if t["exchange"]:
            _require(t["exchange"] in exchanges and not exchanges[t["exchange"]]["internal"])
        else:
            _require("{" in t["key"] or t["key"] in queues)


# -- what to declare ---------------------------------------------------------------


def declarations(topology: PlainTopology) -> list[tuple[str, Item]]:
    """What ``logbus emit`` declares before publishing to ``topology.emit``, in order:
    ``("exchange", e)``, ``("queue", q)``, ``("bind_exchange" | "bind_queue", b)``,
    each with the ``arguments`` to send (a queue's are its x-arguments).

    That is the part of the topology the emit targets can reach (as
    :func:`logbus.emitter.reachable` finds it), or all of it when a target names
    its queue per record.
    """
    targets = topology.emit
    if any(not t["exchange"] and "{" in t["key"] for t in targets):
        needed = topology
    else:
        needed = _reachable(
            topology,
            [t["exchange"] for t in targets if t["exchange"]],
            [t["key"] for t in targets if not t["exchange"]],
        )
    return [
        *(("exchange", e) for e in needed.exchanges),
        *(("queue", {**q, "arguments": amqp_arguments(q)}) for q in needed.queues),
        *(("bind_" + b["destination_type"], b) for b in needed.bindings),
    ]


def _reachable(
    topology: PlainTopology, exchanges: Iterable[str], queues: Iterable[str]
) -> PlainTopology:
    names = reachable_names(
        {e["name"] for e in topology.exchanges},
        {q["name"]: amqp_arguments(q).get("x-dead-letter-exchange") for q in topology.queues},
        [(b["source"], b["destination_type"], b["destination"]) for b in topology.bindings],
        exchanges,
        queues,
    )
    if names is None:
        return topology
    found_exchanges, found_queues = names
    return PlainTopology(
        exchanges=tuple(e for e in topology.exchanges if e["name"] in found_exchanges),
        queues=tuple(q for q in topology.queues if q["name"] in found_queues),
        bindings=tuple(b for b in topology.bindings if b["source"] in found_exchanges),
    )


def reachable_names(
    exchanges: Collection[str],
    dead_letters: Mapping[str, object],
    bindings: Iterable[tuple[str, str, str]],
    from_exchanges: Iterable[str],
    from_queues: Iterable[str],
) -> tuple[set[str], set[str]] | None:
    """The exchanges and queues that publishing to ``from_exchanges`` (or ``from_queues``)
    can reach, of those declared: ``exchanges`` by name, ``dead_letters`` mapping each
    queue to its ``x-dead-letter-exchange`` (None without one), ``bindings`` as
    (source, destination type, destination). None when a dead-letter route goes
    through the default exchange, which is not followed by name: anything may be reached.
    """
    routes: dict[str, list[tuple[str, str]]] = {}
    for source, kind, destination in bindings:
        routes.setdefault(source, []).append((kind, destination))
    found: dict[str, set[str]] = {"exchange": set(), "queue": set()}
    todo = [("exchange", x) for x in from_exchanges] + [("queue", q) for q in from_queues]
    while todo:
        kind, name = todo.pop()
        known = exchanges if kind == "exchange" else dead_letters
        if name in found[kind] or name not in known:
            continue
        found[kind].add(name)
        if kind == "exchange":
            todo += routes.get(name, [])
            continue
        dlx = dead_letters[name]
        if dlx == "":
            return None
        if dlx is not None:
            todo.append(("exchange", str(dlx)))
    return found["exchange"], found["queue"]


def _default() -> PlainTopology:
    topic = "logbus.topic"
    fed = ("logbus.fanout", "logbus.direct", "logbus.headers")
    data = {
        "exchanges": [
            {"name": topic, "type": "topic"},
            {"name": "logbus.fanout", "type": "fanout"},
            {"name": "logbus.direct", "type": "direct"},
            {"name": "logbus.headers", "type": "headers"},
        ],
        "queues": [{"name": "logbus.tasks", "max_length": 100_000, "overflow": "reject-publish"}],
        "bindings": [
            *(
                {
                    "source": topic,
                    "destination": x,
                    "destination_type": "exchange",
                    "routing_key": "#",
                }
                for x in fed
            ),
            {"source": topic, "destination": "logbus.tasks", "routing_key": "#"},
        ],
        "emit": [{"exchange": topic}],
    }
    topology = plain_topology(data)
    assert topology is not None
    return topology


#: :func:`logbus.topology.default`, as plain data.
DEFAULT = _default()
