"""The exchanges, queues, bindings and emit targets a deployment declares.

A :class:`Topology` is frozen data validated as a whole: references resolve,
names are unique, and what RabbitMQ would refuse at declare time (an exclusive
quorum queue, a binding on the default exchange) is refused here first.
:func:`default` is DESIGN.md's default; :func:`load`/:func:`loads` read TOML,
:func:`dumps` writes it, :func:`declare` puts it on a broker.

The TOML format (``config/logbus.toml``) is four arrays of tables::

    [[exchanges]]
    name = "logbus.topic"
    type = "topic"                  # fanout | direct | topic | headers
    durable = true                  # also: auto_delete, internal, arguments

    [[queues]]
    name = "logbus.tasks"           # also: durable, exclusive, auto_delete
    max_length = 100000             # friendly keys for x-arguments: queue_type, max_length,
    overflow = "reject-publish"     # max_length_bytes, max_age ("7D": Y M D h m s, streams),
                                    # overflow, message_ttl (ms), dead_letter_exchange,
                                    # dead_letter_routing_key, dead_letter_strategy
    arguments = { "x-max-priority" = 10 }   # raw x-arguments, passed through
    bounds = "arguments"            # or "policy": bounds, dead-lettering and TTLs go into
                                    # a RabbitMQ policy (logbus topology apply), not x-arguments

    [[bindings]]
    source = "logbus.topic"         # a declared exchange
    destination = "logbus.tasks"
    destination_type = "queue"      # or "exchange" (exchange-to-exchange)
    routing_key = "#"

    [[emit]]
    exchange = "logbus.topic"       # "" is the default exchange: key is then a queue name
    key = "{facility}.{severity}"   # placeholders: {facility} {severity} {host} {app}
    mandatory = true                # false: a record no queue takes here is fine
    name = "all"                    # what `logbus emit --target` and errors call it
                                    # (default: the exchange, or the default exchange's key)

Every problem in a file is a one-line :class:`~logbus.errors.ConfigError`,
``<source>:<line>: <what is wrong> (<what to do>)``; a topology built in code that
breaks a rule raises :class:`~logbus.errors.InvalidTopology` (a ``ValueError`` too).

The entities are frozen dataclasses checked in ``__post_init__``, not pydantic
models: every ``logbus emit`` builds a topology, and importing pydantic and building
the models' schemas cost more than the rest of a one-record emit's start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from logbus import _topology_checks as checks
from logbus._topology_checks import PLACEHOLDERS, toml_value
from logbus._topology_declare import Declarer, declare, mismatch
from logbus._topology_policies import (
    POLICY_ARGUMENTS,
    POLICY_PREFIX,
    POLICY_PRIORITY,
    Policy,
    policies,
    with_policies,
)
from logbus._topology_reach import reachable
from logbus.errors import ConfigError, InvalidTopology

__all__ = [
    "FRIENDLY_ARGUMENTS",
    "HISTORY",
    "PLACEHOLDERS",
    "POLICY_ARGUMENTS",
    "POLICY_PREFIX",
    "POLICY_PRIORITY",
    "Binding",
    "Declarer",
    "EmitTarget",
    "Exchange",
    "Policy",
    "Queue",
    "Topology",
    "declare",
    "default",
    "dumps",
    "load",
    "loads",
    "mismatch",
    "no_emit_targets",
    "policies",
    "reachable",
    "toml_value",
    "with_policies",
]


#: A queue's friendly fields and the x-arguments they stand for.
FRIENDLY_ARGUMENTS = {
    "queue_type": "x-queue-type",
    "max_length": "x-max-length",
    "max_length_bytes": "x-max-length-bytes",
    "max_age": "x-max-age",
    "overflow": "x-overflow",
    "message_ttl": "x-message-ttl",
    "dead_letter_exchange": "x-dead-letter-exchange",
    "dead_letter_routing_key": "x-dead-letter-routing-key",
    "dead_letter_strategy": "x-dead-letter-strategy",
}

ExchangeType = Literal["fanout", "direct", "topic", "headers"]
QueueType = Literal["classic", "quorum", "stream"]
Bounds = Literal["arguments", "policy"]
Overflow = Literal["drop-head", "reject-publish", "reject-publish-dlx"]
DeadLetterStrategy = Literal["at-most-once", "at-least-once"]
DestinationType = Literal["queue", "exchange"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange to declare; an ``internal`` one takes no publishes, only e2e bindings."""

    name: str
    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)

    RULES: ClassVar[Mapping[str, Any]]

    def __post_init__(self) -> None:
        checks.check_fields(self, Exchange.RULES)
        checks.frozen_dict(self, "arguments")


Exchange.RULES = {
    "name": checks.name,
    "type": checks.one_of(ExchangeType),
    "durable": checks.flag,
    "auto_delete": checks.flag,
    "internal": checks.flag,
    "arguments": checks.arguments,
}


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue to declare; the optional friendly fields are its common x-arguments.

    ``bounds = "policy"`` moves the bounds, dead-lettering and TTLs
    (:data:`POLICY_ARGUMENTS`) out of the declare, into a RabbitMQ policy that
    ``logbus topology apply`` puts on the broker: other clients can then declare
    the queue with plain flags and no PRECONDITION_FAILED.
    """

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)
    queue_type: QueueType | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    max_age: str | None = None
    overflow: Overflow | None = None
    message_ttl: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    dead_letter_strategy: DeadLetterStrategy | None = None
    bounds: Bounds = "arguments"

    RULES: ClassVar[Mapping[str, Any]]

    def __post_init__(self) -> None:
        checks.check_fields(self, Queue.RULES)
        checks.frozen_dict(self, "arguments")
        self._consistent()

    def all_arguments(self) -> dict[str, Any]:
        """Every x-argument the queue has, declared or by policy: ``arguments`` plus the
        friendly fields that are set."""
        args = dict(self.arguments)
        friendly = FRIENDLY_ARGUMENTS.items()
        args.update((k, v) for f, k in friendly if (v := getattr(self, f)) is not None)
        return args

    def amqp_arguments(self) -> dict[str, Any]:
        """The x-arguments to declare with: :meth:`all_arguments`, less those a policy
        carries when ``bounds = "policy"``."""
        args = self.all_arguments()
        if self.bounds == "policy":
            return {k: v for k, v in args.items() if k not in POLICY_ARGUMENTS}
        return args

    def _consistent(self) -> None:
        for field_name, key in FRIENDLY_ARGUMENTS.items():
            if getattr(self, field_name) is not None and key in self.arguments:
                what = f"{field_name} and arguments[{key!r}] are both set"
                raise InvalidTopology(what, f"keep only {field_name}", (field_name,))
        args = self.all_arguments()
        for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
            if key in args and not isinstance(args[key], str):
                what = f"arguments[{key!r}] = {args[key]!r} is not a name"
                raise InvalidTopology(what, "write a quoted string", ("arguments",))
        kind = args.get("x-queue-type")
        if kind in ("quorum", "stream"):
            for flag, wanted in (("durable", True), ("exclusive", False), ("auto_delete", False)):
                if getattr(self, flag) is not wanted:
                    what = f"a {kind} queue cannot have {flag} = {toml_value(not wanted)}"
                    hint = f'set {flag} = {toml_value(wanted)}, or queue_type = "classic"'
                    raise InvalidTopology(what, hint, (flag,))
            if args.get("x-overflow") == "reject-publish-dlx":
                what = 'a quorum queue cannot have overflow = "reject-publish-dlx"'
                raise InvalidTopology(what, 'use "reject-publish"', ("overflow",))
        if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
            what = "dead_letter_routing_key is set without dead_letter_exchange"
            hint = "set dead_letter_exchange too: the broker refuses the key alone"
            raise InvalidTopology(what, hint, ("dead_letter_routing_key",))
        checks.dead_letter_strategy(args)
        checks.stream_arguments(args)


Queue.RULES = {
    "name": checks.name,
    "durable": checks.flag,
    "exclusive": checks.flag,
    "auto_delete": checks.flag,
    "arguments": checks.arguments,
    "queue_type": checks.one_of(QueueType, optional=True),
    "max_length": checks.count,
    "max_length_bytes": checks.count,
    "max_age": checks.max_age,
    "overflow": checks.one_of(Overflow, optional=True),
    "message_ttl": checks.count,
    "dead_letter_exchange": checks.optional_string,
    "dead_letter_routing_key": checks.optional_string,
    "dead_letter_strategy": checks.one_of(DeadLetterStrategy, optional=True),
    "bounds": checks.one_of(Bounds),
}


@dataclass(frozen=True, slots=True)
class Binding:
    """Routes from exchange ``source`` to a queue, or (exchange-to-exchange) an exchange."""

    source: str
    destination: str
    destination_type: DestinationType = "queue"
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)

    RULES: ClassVar[Mapping[str, Any]]

    def __post_init__(self) -> None:
        checks.check_fields(self, Binding.RULES)
        checks.frozen_dict(self, "arguments")


Binding.RULES = {
    "source": checks.bindable,
    "destination": checks.name,
    "destination_type": checks.one_of(DestinationType),
    "routing_key": checks.text,
    "arguments": checks.arguments,
}


@dataclass(frozen=True, slots=True)
class EmitTarget:
    """Where an emitter publishes each record: an exchange and a routing-key template.

    ``exchange = ""`` is the default exchange, whose routing key is a queue name.
    ``mandatory`` (the default) makes a record that no queue takes here an error
    (exit 75); ``false`` suits an exchange whose consumers may all be away, as
    the RabbitMQ tutorials' publishers treat theirs. ``name`` is what errors and
    ``logbus emit --target`` call the target (:attr:`label`).
    """

    exchange: str
    key: str = "{facility}.{severity}"
    mandatory: bool = True
    name: str | None = None

    RULES: ClassVar[Mapping[str, Any]]

    def __post_init__(self) -> None:
        checks.check_fields(self, EmitTarget.RULES)

    @property
    def label(self) -> str:
        """What to call the target: its ``name``, else its exchange, else (the default
        exchange) its key, the queue name."""
        return self.name or self.exchange or self.key

    def render(self, facility: str, severity: str, host: str, app: str) -> str:
        """The routing key for one record."""
        return self.key.format(facility=facility, severity=severity, host=host, app=app)


EmitTarget.RULES = {
    "exchange": checks.text,
    "key": checks.template,
    "mandatory": checks.flag,
    "name": checks.optional_label,
}


#: The arrays of tables a topology has, and the entity each holds.
SECTIONS: dict[str, type[Any]] = {
    "exchanges": Exchange,
    "queues": Queue,
    "bindings": Binding,
    "emit": EmitTarget,
}


@dataclass(frozen=True, slots=True)
class Topology:
    """Everything a deployment declares, checked for consistency as a whole."""

    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()
    emit: tuple[EmitTarget, ...] = ()

    def __post_init__(self) -> None:
        for section, kind in SECTIONS.items():
            items = getattr(self, section)
            if not isinstance(items, tuple | list):
                what = f"{section}: input should be a valid tuple"
                raise InvalidTopology(what, "write an array of tables", (section,))
            for i, item in enumerate(items):
                if not isinstance(item, kind):
                    what = f"[[{section}]] #{i + 1}: input should be a {kind.__name__}"
                    raise InvalidTopology(what, "write a table", (section, i))
            object.__setattr__(self, section, tuple(items))
        self._references()

    def _references(self) -> None:
        checks.once([e.name for e in self.exchanges], "exchanges", "name")
        checks.once([q.name for q in self.queues], "queues", "name")
        checks.once(self.bindings, "bindings")
        checks.once(self.emit, "emit")
        labels = [t.label for t in self.emit]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                what = f"two emit targets are both called {label!r}"
                hint = 'give each its own name = "...", which logbus emit --target takes'
                raise InvalidTopology(what, hint, ("emit", i, "name"))
        exchanges = {e.name: e for e in self.exchanges}
        queues = {q.name for q in self.queues}
        for i, q in enumerate(self.queues):
            dlx = q.all_arguments().get("x-dead-letter-exchange")
            if dlx and dlx not in exchanges:  # "" is the default exchange: fine
                field_name = (
                    "arguments" if q.dead_letter_exchange is None else "dead_letter_exchange"
                )
                where = ("queues", i, field_name)
                raise checks.undeclared("dead-letter exchange", dlx, exchanges, "exchanges", where)
        for i, b in enumerate(self.bindings):
            if b.source not in exchanges:
                where = ("bindings", i, "source")
                raise checks.undeclared("binding source", b.source, exchanges, "exchanges", where)
            kind = b.destination_type
            targets = exchanges.keys() if kind == "exchange" else queues
            if b.destination not in targets:
                where = ("bindings", i, "destination")
                raise checks.undeclared(
                    f"destination {kind}", b.destination, targets, f"{kind}s", where
                )
        for i, t in enumerate(self.emit):
            where = ("emit", i, "exchange")
            if t.exchange and t.exchange not in exchanges:
                raise checks.undeclared("emit exchange", t.exchange, exchanges, "exchanges", where)
            if t.exchange and exchanges[t.exchange].internal:
                what = f"exchange {t.exchange!r} is internal and takes no publishes"
                raise InvalidTopology(what, "emit to an exchange bound to it", where)
            if not t.exchange and "{" not in t.key and t.key not in queues:
                raise checks.undeclared("queue", t.key, queues, "queues", ("emit", i, "key"))

    def exchange(self, name: str) -> Exchange:
        """The declared exchange called ``name``; :class:`ConfigError` if there is none."""
        if found := {e.name: e for e in self.exchanges}.get(name):
            return found
        known = [e.name for e in self.exchanges]
        raise ConfigError(str(checks.undeclared("exchange", name, known, "exchanges", ())))

    def queue(self, name: str) -> Queue:
        """The declared queue called ``name``; :class:`ConfigError` if there is none."""
        if found := {q.name: q for q in self.queues}.get(name):
            return found
        known = [q.name for q in self.queues]
        raise ConfigError(str(checks.undeclared("queue", name, known, "queues", ())))

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The topology as JSON data: each section a list of tables, unset fields left out."""
        return {
            section: [
                {k: v for k, v in asdict(item).items() if v is not None}
                for item in getattr(self, section)
            ]
            for section in SECTIONS
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """A topology from data shaped as :meth:`to_dict` writes it (or TOML reads it);
        a problem raises :class:`InvalidTopology` saying where."""
        from logbus import _topology_toml

        return _topology_toml.build(cls, SECTIONS, data)


#: The default topology's history stream, and how much it keeps.
HISTORY = "logbus.history"
HISTORY_MAX_AGE = "7D"
HISTORY_MAX_BYTES = 1 << 30


def default() -> Topology:
    """DESIGN.md's default topology: one topic exchange that feeds every other style,
    the work queue, and the history stream."""
    topic = "logbus.topic"
    fed = ("logbus.fanout", "logbus.direct", "logbus.headers")
    # An e2e binding forwards the original key (kern.critical): `--exact` works.
    e2e = (
        Binding(source=topic, destination=x, destination_type="exchange", routing_key="#")
        for x in fed
    )
    return Topology(
        exchanges=(
            Exchange(name=topic, type="topic"),
            Exchange(name="logbus.fanout", type="fanout"),
            Exchange(name="logbus.direct", type="direct"),
            Exchange(name="logbus.headers", type="headers"),
        ),
        # Bounded, so a deployment without workers cannot fill the disk; at the bound new
        # records are refused (nacked) and emitters say so: back-pressure, never a drop.
        queues=(
            Queue(name="logbus.tasks", max_length=100_000, overflow="reject-publish"),
            # Every record, kept (not consumed away) for `logbus subscribe --since`.
            Queue(
                name=HISTORY,
                queue_type="stream",
                max_age=HISTORY_MAX_AGE,
                max_length_bytes=HISTORY_MAX_BYTES,
            ),
        ),
        bindings=(
            *e2e,
            Binding(source=topic, destination="logbus.tasks", routing_key="#"),
            Binding(source=topic, destination=HISTORY, routing_key="#"),
        ),
        emit=(EmitTarget(exchange=topic),),
    )


def no_emit_targets(config: object | None, *, api: bool = False) -> str:
    """Why a topology without ``[[emit]]`` tables cannot be emitted to, and the fix.

    Said alike by ``logbus emit`` and :class:`logbus.Emitter` (``api``): without a
    target a record would be published nowhere, and reported as sent.
    """
    where = "the topology" if config is None else f"the topology file {config}"
    instead = "targets=[EmitTarget(...)]" if api else "--exchange NAME or --queue NAME"
    return (
        f"{where} has no [[emit]] table, so records would be published nowhere; add one "
        f'([[emit]] with exchange = "logbus.topic"), or pass {instead}'
    )


# -- reading and writing (the TOML itself is logbus._topology_toml's) ---------------------


def load(path: str | os.PathLike[str]) -> Topology:
    """Read a topology TOML file; every problem is a one-line :class:`ConfigError`."""
    from logbus import _topology_toml

    name = os.fspath(path)
    return loads(_topology_toml.read(name), source=name)


def loads(text: str, *, source: str = "<string>") -> Topology:
    """Parse and validate topology TOML; ``source`` names it in error messages."""
    from logbus import _topology_toml

    return _topology_toml.loads(Topology, SECTIONS, text, source)


def dumps(topology: Topology) -> str:
    """TOML that :func:`loads` reads back to an equal topology."""
    from logbus import _topology_toml

    return _topology_toml.dumps(topology, SECTIONS)
