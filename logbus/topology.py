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
    overflow = "reject-publish"     # overflow, message_ttl (ms), dead_letter_exchange,
                                    # dead_letter_routing_key
    arguments = { "x-max-priority" = 10 }   # raw x-arguments, passed through

    [[bindings]]
    source = "logbus.topic"         # a declared exchange
    destination = "logbus.tasks"
    destination_type = "queue"      # or "exchange" (exchange-to-exchange)
    routing_key = "#"

    [[emit]]
    exchange = "logbus.topic"       # "" is the default exchange: key is then a queue name
    key = "{facility}.{severity}"   # placeholders: {facility} {severity} {host} {app}

Every problem is a one-line :class:`~logbus.errors.ConfigError`,
``<source>:<line>: <what is wrong> (<what to do>)``.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from logbus import _topology_toml
from logbus._topology_toml import FieldError, Loc, toml_value
from logbus.errors import ConfigError, PreconditionFailed, TopologyError

if TYPE_CHECKING:
    from logbus.transports.base import Transport

__all__ = [
    "FRIENDLY_ARGUMENTS",
    "PLACEHOLDERS",
    "Binding",
    "EmitTarget",
    "Exchange",
    "Queue",
    "Topology",
    "declare",
    "default",
    "dumps",
    "load",
    "loads",
    "mismatch",
    "no_emit_targets",
    "reachable",
]

PLACEHOLDERS = ("facility", "severity", "host", "app")
"""The names an emit target's key template may use."""

#: A queue's friendly fields and the x-arguments they stand for.
FRIENDLY_ARGUMENTS = {
    "queue_type": "x-queue-type",
    "max_length": "x-max-length",
    "overflow": "x-overflow",
    "message_ttl": "x-message-ttl",
    "dead_letter_exchange": "x-dead-letter-exchange",
    "dead_letter_routing_key": "x-dead-letter-routing-key",
}


def _entity_name(name: str) -> str:
    if not name:
        raise FieldError("the name is empty", 'give it one, like "logbus.audit"')
    if len(name.encode()) > 255:  # an AMQP short string
        raise FieldError(f"the name {name[:20]!r}... is over 255 bytes", "shorten it")
    if name.startswith("amq."):  # the broker refuses to declare these
        raise FieldError(f"the name {name!r} uses the reserved prefix amq.", "rename it")
    return name


Name = Annotated[StrictStr, AfterValidator(_entity_name)]
Arguments = dict[StrictStr, Any]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Exchange(_Model):
    """An exchange to declare; an ``internal`` one takes no publishes, only e2e bindings."""

    name: Name
    type: Literal["fanout", "direct", "topic", "headers"]
    durable: StrictBool = True
    auto_delete: StrictBool = False
    internal: StrictBool = False
    arguments: Arguments = Field(default_factory=dict)


class Queue(_Model):
    """A queue to declare; the optional friendly fields are its common x-arguments."""

    name: Name
    durable: StrictBool = True
    exclusive: StrictBool = False
    auto_delete: StrictBool = False
    arguments: Arguments = Field(default_factory=dict)
    queue_type: Literal["classic", "quorum"] | None = None
    max_length: StrictInt | None = Field(default=None, ge=0)
    overflow: Literal["drop-head", "reject-publish", "reject-publish-dlx"] | None = None
    message_ttl: StrictInt | None = Field(default=None, ge=0)
    dead_letter_exchange: StrictStr | None = None
    dead_letter_routing_key: StrictStr | None = None

    def amqp_arguments(self) -> dict[str, Any]:
        """The x-arguments to declare with: ``arguments`` plus the friendly fields that are set."""
        args = dict(self.arguments)
        friendly = FRIENDLY_ARGUMENTS.items()
        args.update((k, v) for f, k in friendly if (v := getattr(self, f)) is not None)
        return args

    @model_validator(mode="after")
    def _consistent(self) -> Queue:
        for field, key in FRIENDLY_ARGUMENTS.items():
            if getattr(self, field) is not None and key in self.arguments:
                what = f"{field} and arguments[{key!r}] are both set"
                raise FieldError(what, f"keep only {field}", (field,))
        args = self.amqp_arguments()
        for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
            if key in args and not isinstance(args[key], str):
                what = f"arguments[{key!r}] = {args[key]!r} is not a name"
                raise FieldError(what, "write a quoted string", ("arguments",))
        if args.get("x-queue-type") == "quorum":
            for flag, wanted in (("durable", True), ("exclusive", False), ("auto_delete", False)):
                if getattr(self, flag) is not wanted:
                    what = f"a quorum queue cannot have {flag} = {toml_value(not wanted)}"
                    hint = f'set {flag} = {toml_value(wanted)}, or queue_type = "classic"'
                    raise FieldError(what, hint, (flag,))
            if args.get("x-overflow") == "reject-publish-dlx":
                what = 'a quorum queue cannot have overflow = "reject-publish-dlx"'
                raise FieldError(what, 'use "reject-publish"', ("overflow",))
        if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
            what = "dead_letter_routing_key is set without dead_letter_exchange"
            hint = "set dead_letter_exchange too: the broker refuses the key alone"
            raise FieldError(what, hint, ("dead_letter_routing_key",))
        return self


class Binding(_Model):
    """Routes from exchange ``source`` to a queue, or (exchange-to-exchange) an exchange."""

    source: StrictStr
    destination: Name
    destination_type: Literal["queue", "exchange"] = "queue"
    routing_key: StrictStr = ""
    arguments: Arguments = Field(default_factory=dict)

    @field_validator("source")
    @classmethod
    def _bindable(cls, source: str) -> str:
        if not source:
            hint = "bind to a declared exchange; the default one routes by queue name already"
            raise FieldError("the default exchange cannot be bound", hint)
        return source


class EmitTarget(_Model):
    """Where an emitter publishes each record: an exchange and a routing-key template.

    ``exchange = ""`` is the default exchange, whose routing key is a queue name.
    """

    exchange: StrictStr
    key: StrictStr = "{facility}.{severity}"

    @field_validator("key")
    @classmethod
    def _template(cls, key: str) -> str:
        hint = "use {facility}, {severity}, {host} or {app}; {{ and }} for literal braces"
        try:
            parsed = list(string.Formatter().parse(key))
        except ValueError as exc:
            raise FieldError(f"key template {key!r} is malformed: {exc}", hint) from None
        for _text, name, spec, conversion in parsed:
            if name is not None and (name not in PLACEHOLDERS or spec or conversion):
                raise FieldError(f"key template {key!r} has unknown placeholder {{{name}}}", hint)
        return key

    def render(self, facility: str, severity: str, host: str, app: str) -> str:
        """The routing key for one record."""
        return self.key.format(facility=facility, severity=severity, host=host, app=app)


def _undeclared(what: str, name: str, known: Iterable[str], section: str, loc: Loc) -> FieldError:
    close = difflib.get_close_matches(name, sorted(known), 1)
    hint = f"did you mean {close[0]!r}?" if close else f"declare it under [[{section}]]"
    return FieldError(f"{what} {name!r} is not declared", hint, loc)


def _once(items: Sequence[object], section: str, field: str | None = None) -> None:
    for i, item in enumerate(items):
        if item in items[:i]:
            what = f"{item!r} is declared twice" if field else "this entry is declared twice"
            raise FieldError(what, "remove one", (section, i, field) if field else (section, i))


class Topology(_Model):
    """Everything a deployment declares, checked for consistency as a whole."""

    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()
    emit: tuple[EmitTarget, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Topology:
        _once([e.name for e in self.exchanges], "exchanges", "name")
        _once([q.name for q in self.queues], "queues", "name")
        _once(self.bindings, "bindings")
        _once(self.emit, "emit")
        exchanges = {e.name: e for e in self.exchanges}
        queues = {q.name for q in self.queues}
        for i, q in enumerate(self.queues):
            dlx = q.amqp_arguments().get("x-dead-letter-exchange")
            if dlx and dlx not in exchanges:  # "" is the default exchange: fine
                field = "arguments" if q.dead_letter_exchange is None else "dead_letter_exchange"
                where = ("queues", i, field)
                raise _undeclared("dead-letter exchange", dlx, exchanges, "exchanges", where)
        for i, b in enumerate(self.bindings):
            if b.source not in exchanges:
                where = ("bindings", i, "source")
                raise _undeclared("binding source", b.source, exchanges, "exchanges", where)
            kind = b.destination_type
            targets = exchanges.keys() if kind == "exchange" else queues
            if b.destination not in targets:
                where = ("bindings", i, "destination")
                raise _undeclared(f"destination {kind}", b.destination, targets, f"{kind}s", where)
        for i, t in enumerate(self.emit):
            where = ("emit", i, "exchange")
            if t.exchange and t.exchange not in exchanges:
                raise _undeclared("emit exchange", t.exchange, exchanges, "exchanges", where)
            if t.exchange and exchanges[t.exchange].internal:
                what = f"exchange {t.exchange!r} is internal and takes no publishes"
                raise FieldError(what, "emit to an exchange bound to it", where)
            if not t.exchange and "{" not in t.key and t.key not in queues:
                raise _undeclared("queue", t.key, queues, "queues", ("emit", i, "key"))
        return self

    def exchange(self, name: str) -> Exchange:
        """The declared exchange called ``name``; :class:`ConfigError` if there is none."""
        if found := {e.name: e for e in self.exchanges}.get(name):
            return found
        known = [e.name for e in self.exchanges]
        raise ConfigError(str(_undeclared("exchange", name, known, "exchanges", ())))

    def queue(self, name: str) -> Queue:
        """The declared queue called ``name``; :class:`ConfigError` if there is none."""
        if found := {q.name: q for q in self.queues}.get(name):
            return found
        known = [q.name for q in self.queues]
        raise ConfigError(str(_undeclared("queue", name, known, "queues", ())))


def default() -> Topology:
    """DESIGN.md's default topology: one topic exchange that feeds every other style."""
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
        queues=(Queue(name="logbus.tasks", max_length=100_000, overflow="reject-publish"),),
        bindings=(
            *e2e,
            Binding(source=topic, destination="logbus.tasks", routing_key="#"),
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


def reachable(
    topology: Topology, exchanges: Iterable[str] = (), queues: Iterable[str] = ()
) -> Topology:
    """The part of ``topology`` that publishes to ``exchanges`` (or ``queues``) can reach.

    That is the entities a record may be routed to — through exchange-to-exchange
    bindings, queue bindings and dead-letter exchanges — and the bindings between
    them: what must exist before publishing so that no record is lost, and no
    more. Names the topology does not declare are left out; the result has no
    emit targets. A dead-letter route through the default exchange is not
    followed by name, so then the whole topology is returned.
    """
    names = _reachable_names(
        {e.name for e in topology.exchanges},
        {q.name: q.amqp_arguments().get("x-dead-letter-exchange") for q in topology.queues},
        [(b.source, b.destination_type, b.destination) for b in topology.bindings],
        exchanges,
        queues,
    )
    if names is None:
        return topology.model_copy(update={"emit": ()})
    found_exchanges, found_queues = names
    return Topology(
        exchanges=tuple(e for e in topology.exchanges if e.name in found_exchanges),
        queues=tuple(q for q in topology.queues if q.name in found_queues),
        bindings=tuple(b for b in topology.bindings if b.source in found_exchanges),
    )


def _reachable_names(
    exchanges: set[str],
    dead_letters: Mapping[str, object],
    bindings: Iterable[tuple[str, str, str]],
    from_exchanges: Iterable[str],
    from_queues: Iterable[str],
) -> tuple[set[str], set[str]] | None:
    """The declared exchanges and queues reachable from ``from_*``: a walk over
    ``bindings`` (source, destination type, destination) and each queue's
    dead-letter exchange (``dead_letters``, None without one); None when a
    dead-letter route goes through the default exchange (anything may be reached)."""
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


def declare(transport: Transport, topology: Topology) -> None:
    """Declare every exchange, queue and binding of ``topology`` on ``transport``.

    Idempotent. An entity that exists with other properties (the broker's
    PRECONDITION_FAILED) raises :class:`~logbus.errors.TopologyError` naming the
    entity, the property, both values and the two ways out.
    """
    try:
        for e in topology.exchanges:
            transport.declare_exchange(e.name, e.type, **e.model_dump(exclude={"name", "type"}))
        for q in topology.queues:
            flags = q.model_dump(include={"durable", "exclusive", "auto_delete"})
            transport.declare_queue(q.name, arguments=q.amqp_arguments(), **flags)
    except PreconditionFailed as exc:
        raise mismatch(exc) from exc
    for b in topology.bindings:
        bind = transport.bind_exchange if b.destination_type == "exchange" else transport.bind_queue
        bind(b.destination, b.source, b.routing_key, b.arguments)


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<prop>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']*)'"
    r".*?received (?:the value )?(?P<want>'[^']*'|none)(?: of type '[^']*')?"
    r" but current is (?:the value )?(?P<have>'[^']*'|none)"
)


def mismatch(exc: PreconditionFailed) -> TopologyError:
    """Turn the broker's 'inequivalent arg' refusal into a TopologyError that says what to do."""
    found = _INEQUIVALENT.search(str(exc))
    if found is None:
        return TopologyError(f"the broker refused the topology: {exc}")
    kind, name, prop = found["kind"], found["name"], found["prop"]
    want, have = found["want"].strip("'"), found["have"].strip("'")
    how = (
        f"rabbitmqctl delete_queue {name}"
        if kind == "queue"
        else f"rabbitmqadmin delete exchange name={name}"
    )
    return TopologyError(
        f"{kind} '{name}' exists with other properties: {prop}: broker has {have}, "
        f"config has {want} (change the config to match, or delete the {kind} "
        f"— {how} — and declare again)"
    )


# -- reading and writing (the TOML itself is logbus._topology_toml's) ---------------------

_SECTIONS: dict[str, type[BaseModel]] = {
    "exchanges": Exchange,
    "queues": Queue,
    "bindings": Binding,
    "emit": EmitTarget,
}


def load(path: str | os.PathLike[str]) -> Topology:
    """Read a topology TOML file; every problem is a one-line :class:`ConfigError`."""
    name = os.fspath(path)
    return loads(_topology_toml.read(name), source=name)


def loads(text: str, *, source: str = "<string>") -> Topology:
    """Parse and validate topology TOML; ``source`` names it in error messages."""
    return _topology_toml.loads(Topology, _SECTIONS, text, source)


def dumps(topology: Topology) -> str:
    """TOML that :func:`loads` reads back to an equal topology."""
    return _topology_toml.dumps(topology, _SECTIONS)
