"""What the broker has, compared with what the topology says it should have.

:func:`diff` compares a :class:`~logbus.management.Snapshot` with a
:class:`~logbus.topology.Topology` without any I/O; :func:`apply` declares a
topology and says what was new; :func:`status` gathers what ``logbus status``
shows. Looking at the broker is :mod:`logbus.management`'s job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from logbus.topology import Topology, declare

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.transports.base import Transport

from logbus.management import (
    _NO_API,
    BindingState,
    BrokerInfo,
    ExchangeState,
    ManagementApi,
    ManagementUnavailable,
    QueueState,
    Snapshot,
    Via,
    is_amqp,
    passive_snapshot,
    server_info,
    vhost_of,
    where,
)

__all__ = ["Applied", "Difference", "Drift", "Status", "apply", "diff", "name_prefix", "status"]

Entity = Literal["exchange", "queue", "binding"]


# -- drift ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the broker disagrees with the config: an entity is missing (``prop`` None),
    or its property ``prop`` has another value."""

    entity: Entity
    name: str
    prop: str | None = None
    config: Any = None
    broker: Any = None
    binding: BindingState | None = None

    def __str__(self) -> str:
        what = (
            f"binding {self.name}" if self.entity == "binding" else f"{self.entity} '{self.name}'"
        )
        if self.prop is None:
            return f"{what} is missing on the broker"
        config, broker = (
            ("(none)" if v is None else json.dumps(v)) for v in (self.config, self.broker)
        )
        return f"{what}: {self.prop} differs: config has {config}, broker has {broker}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entity": self.entity, "name": self.name}
        if self.prop is not None:
            out |= {"property": self.prop, "config": self.config, "broker": self.broker}
        if self.binding is not None:
            out["binding"] = asdict(self.binding)
        return out


@dataclass(frozen=True, slots=True)
class Drift:
    """How the broker differs from the topology; no ``differences``: in sync.

    ``unchecked`` says what this way of looking could not compare; ``extra`` lists
    what the broker has that looks like the topology's but is not in it — worth a
    look, never drift.
    """

    via: Via
    vhost: str
    differences: tuple[Difference, ...]
    unchecked: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    note: str = ""

    @property
    def in_sync(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "via": self.via,
            "vhost": self.vhost,
            "missing": [d.to_dict() for d in self.differences if d.prop is None],
            "different": [d.to_dict() for d in self.differences if d.prop is not None],
            "unchecked": list(self.unchecked),
            "extra": list(self.extra),
            "note": self.note,
        }


def diff(topology: Topology, seen: Snapshot) -> Drift:
    """Compare ``topology`` with what the broker has, without I/O.

    A missing entity or binding, or a property with another value, is drift; a
    property the snapshot could not see (None) is not compared, and what the
    topology does not declare is never drift.
    """
    out: list[Difference] = []
    unchecked: list[str] = []
    for e in topology.exchanges:
        if (has := seen.exchanges.get(e.name)) is None:
            out.append(Difference("exchange", e.name))
            continue
        want = {p: getattr(e, p) for p in ("type", "durable", "auto_delete", "internal")}
        out += _compare("exchange", e.name, want, asdict(has))
        if has.arguments is not None:
            out += _compare("exchange", e.name, dict(e.arguments), has.arguments, every=True)
    for q in topology.queues:
        if q.exclusive:
            unchecked.append(f"queue '{q.name}': exclusive, it lives only with its connection")
            continue
        if (got := seen.queues.get(q.name)) is None:
            out.append(Difference("queue", q.name))
            continue
        args = q.amqp_arguments()
        want = {p: getattr(q, p) for p in ("durable", "exclusive", "auto_delete")}
        # The type shows as a property on the broker, and classic is what no type means.
        want["x-queue-type"] = args.pop("x-queue-type", "classic")
        out += _compare("queue", q.name, want, {**asdict(got), "x-queue-type": got.type})
        if got.arguments is not None:
            have = {k: v for k, v in got.arguments.items() if k != "x-queue-type"}
            out += _compare("queue", q.name, args, have, every=True)
    exclusive = {q.name for q in topology.queues if q.exclusive}
    wanted = [
        b
        for b in _bindings(topology)
        if not (b.destination_type == "queue" and b.destination in exclusive)
    ]
    if seen.bindings is None:
        if wanted:
            unchecked.append("bindings: AMQP cannot list them (the management API can)")
    else:
        have_keys = {b.key for b in seen.bindings}
        out += [Difference("binding", str(w), binding=w) for w in wanted if w.key not in have_keys]
    if seen.via == "amqp" and (topology.exchanges or topology.queues):
        unchecked.append(
            "properties (type, durable, arguments ...): a passive declare tells only "
            "whether an exchange or queue exists"
        )
    extra = _extra(topology, seen, {w.key for w in wanted})
    return Drift(seen.via, seen.vhost, tuple(out), tuple(unchecked), extra, seen.note)


def _bindings(topology: Topology) -> list[BindingState]:
    return [
        BindingState(b.source, b.destination, b.destination_type, b.routing_key, b.arguments)
        for b in topology.bindings
    ]


def _compare(
    entity: Entity,
    name: str,
    want: Mapping[str, Any],
    have: Mapping[str, Any],
    *,
    every: bool = False,
) -> list[Difference]:
    """The properties in ``want`` (with ``every``, in either) whose values differ; a property
    ``have`` holds as None is unknown unless ``every`` (arguments: None means absent)."""
    keys = sorted({*want, *have}) if every else list(want)
    return [
        Difference(entity, name, k, want.get(k), have.get(k))
        for k in keys
        if want.get(k) != have.get(k) and (every or have.get(k) is not None)
    ]


def _extra(topology: Topology, seen: Snapshot, wanted: set[tuple[str, ...]]) -> tuple[str, ...]:
    """Entities on the broker named like the topology's but not in it, and bindings between
    the topology's own entities that it does not declare."""
    if not seen.complete:
        return ()
    exchanges = {e.name for e in topology.exchanges}
    queues = {q.name for q in topology.queues}
    prefix = name_prefix(topology)
    out: list[str] = []
    for entity, names, declared in (
        ("exchange", seen.exchanges, exchanges),
        ("queue", seen.queues, queues),
    ):
        out += [
            f"{entity} '{n}' (on the broker, not in the config)"
            for n in sorted(names)
            if prefix and n.startswith(prefix) and n not in declared
        ]
    for b in seen.bindings or ():
        ours = exchanges if b.destination_type == "exchange" else queues
        if b.source in exchanges and b.destination in ours and b.key not in wanted:
            out.append(f"binding {b} (on the broker, not in the config)")
    return tuple(out)


def name_prefix(topology: Topology) -> str:
    """The name prefix all of the topology's exchanges and queues share, through its last
    separator (``"logbus."`` for the default), or ``""`` when they share none."""
    names = [e.name for e in topology.exchanges] + [q.name for q in topology.queues]
    common = os.path.commonprefix(names) if names else ""  # noqa: RUF071 - names, not paths
    return common[: max(common.rfind(sep) for sep in ".-_:/") + 1]


# -- apply and status --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """One entity :func:`apply` declared: ``created``, ``existed``, or ``bound`` (a binding,
    where AMQP cannot tell whether it was new)."""

    entity: Entity
    name: str
    state: Literal["created", "existed", "bound"]
    binding: BindingState | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"entity": self.entity, "name": self.name, "state": self.state}
        return out if self.binding is None else out | {"binding": asdict(self.binding)}


def apply(transport: Transport, topology: Topology) -> tuple[Applied, ...]:
    """Declare ``topology`` (idempotent) and report each entity.

    An entity that exists with other properties raises
    :class:`~logbus.errors.TopologyError` (see :func:`logbus.topology.declare`).
    """
    before = passive_snapshot(transport, topology)
    declare(transport, topology)
    out = [
        Applied("exchange", e.name, "existed" if e.name in before.exchanges else "created")
        for e in topology.exchanges
    ]
    out += [
        Applied("queue", q.name, "existed" if q.name in before.queues else "created")
        for q in topology.queues
    ]
    out += [Applied("binding", str(b), "bound", b) for b in _bindings(topology)]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Status:
    """What ``logbus status`` shows: the broker, queues, exchanges and bindings (None: unknown);
    ``missing`` names what was asked about and is not there. ``url`` is the URL with its
    password hidden, or a ``local://`` broker's socket path; ``vhost`` is None for
    logbus's own brokers, which have no vhosts."""

    url: str
    vhost: str | None
    via: Via
    broker: BrokerInfo
    queues: tuple[QueueState, ...]
    exchanges: tuple[ExchangeState, ...]
    bindings: tuple[BindingState, ...] | None
    missing: tuple[str, ...] = ()
    management: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(
    settings: Settings,
    topology: Topology,
    *,
    management: ManagementApi | None,
    queues: Sequence[str] = (),
    everything: bool = False,
) -> Status:
    """The broker's health and the state of ``queues`` (default: the topology's), of the
    topology's exchanges and of the bindings from them; with ``everything``, of every
    exchange, queue and binding not under ``amq.`` (the management API can list them).

    Raises :class:`~logbus.errors.BrokerUnavailable` when AMQP does not answer, even if
    the management API does: AMQP is what logbus itself needs.
    """
    from logbus.transports import connect

    names = list(dict.fromkeys(queues)) or [q.name for q in topology.queues]
    with connect(settings.url, settings=settings) as transport:
        amqp_info = server_info(transport)
        note, seen = _NO_API, None
        if management is not None:
            try:
                seen = _same_broker(
                    management, management.snapshot(vhost_of(settings.url)), amqp_info
                )
            except ManagementUnavailable as exc:
                note = str(exc)
        if seen is None:
            seen = passive_snapshot(transport, topology, names, note=note)
    own = {e.name for e in topology.exchanges}

    def also(name: str) -> bool:
        return everything and bool(name) and not name.startswith("amq.")

    shown = [n for n in names if n in seen.queues]
    if not queues:
        shown += sorted(n for n in seen.queues if also(n) and n not in names)
    bindings = None
    if seen.bindings is not None:
        bindings = tuple(b for b in seen.bindings if b.source in own or also(b.source))
    missing = [f"queue '{n}'" for n in names if n not in seen.queues]
    missing += [f"exchange '{n}'" for n in sorted(own - set(seen.exchanges))]
    return Status(
        url=where(settings.url),
        vhost=seen.vhost if is_amqp(settings.url) else None,
        via=seen.via,
        broker=seen.info.merged(amqp_info),
        queues=tuple(seen.queues[n] for n in shown),
        exchanges=tuple(x for n, x in sorted(seen.exchanges.items()) if n in own or also(n)),
        bindings=bindings,
        missing=tuple(missing),
        management=None if management is None else str(management),
        note=seen.note,
    )


def _same_broker(api: ManagementApi, seen: Snapshot, amqp: BrokerInfo) -> Snapshot:
    """``seen`` if the management API answered for the broker AMQP reached; else
    :class:`ManagementUnavailable` (two brokers on one host: the other's statistics
    would be shown as this one's)."""
    theirs, ours = seen.info.cluster_name, amqp.cluster_name
    if theirs and ours and theirs != ours:
        raise ManagementUnavailable(
            f"the management API at {api} answers for cluster {theirs!r}, but AMQP reached "
            f"cluster {ours!r}; give that broker's API with --management-url or "
            "LOGBUS_MANAGEMENT_URL"
        )
    return seen
