"""What the broker has, compared with what the topology says it should have.

Two ways to look: RabbitMQ's management HTTP API (every exchange, queue and
binding of a vhost with their properties, message rates, alarms), and, when
that does not answer, AMQP itself — a passive declare tells whether an exchange
or queue exists and, for a queue, its ready messages and consumers; the
connection's server properties name the product and version. A
:class:`Snapshot` records what was seen and how; :func:`diff` compares it with a
:class:`~logbus.topology.Topology` without any I/O; :func:`apply` declares a
topology and says what was new; :func:`status` gathers what ``logbus status``
shows.

The management API is found next to the AMQP URL (same host and credentials,
``http://`` on port 15672, ``https://`` on 15671 for ``amqps://``) unless given;
its password is never part of a ``str``, ``repr`` or error message.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit

from logbus.errors import BrokerUnavailable, NotFound, ResourceLocked
from logbus.topology import Topology, declare

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.transports.base import Transport

__all__ = [
    "Applied",
    "BindingState",
    "BrokerInfo",
    "Difference",
    "Drift",
    "ExchangeState",
    "ManagementApi",
    "ManagementUnavailable",
    "QueueState",
    "Snapshot",
    "Status",
    "apply",
    "diff",
    "management_api",
    "name_prefix",
    "passive_snapshot",
    "server_info",
    "snapshot",
    "snapshot_from_management",
    "status",
    "vhost_of",
]

Via = Literal["management", "amqp"]
Entity = Literal["exchange", "queue", "binding"]
T = TypeVar("T")

#: What ``--management-url`` / ``LOGBUS_MANAGEMENT_URL`` may say to use AMQP only.
OFF = frozenset({"off", "none", "no", "false", "0"})
_NO_API = "no management API to ask"
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")  # as in logbus.settings
_ALARMS = (("memory", "mem_alarm"), ("disk", "disk_free_alarm"))


class ManagementUnavailable(BrokerUnavailable):
    """The management API did not answer, or refused; AMQP may still tell what it can."""


# -- the management API ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagementApi:
    """Where RabbitMQ's management HTTP API is and whom to log in as; ``str`` hides the password.

    ``base`` is ``scheme://host:port`` plus any path prefix, without credentials.
    """

    base: str
    user: str
    password: str = field(repr=False)
    timeout: float = 5.0

    def __str__(self) -> str:
        scheme, _, rest = self.base.partition("://")
        return f"{scheme}://{quote(self.user, safe='')}:***@{rest}"

    def __repr__(self) -> str:
        return f"ManagementApi({str(self)!r})"

    def get(self, path: str) -> Any:
        """The JSON at ``path`` (``/api/overview`` ...); :class:`ManagementUnavailable` if not."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        request = urllib.request.Request(
            self.base + path,
            headers={"Authorization": f"Basic {token}", "Accept": "application/json"},
        )
        # Reached directly, like the AMQP port: a proxy from the environment would take
        # a request for 127.0.0.1 somewhere else.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            why = f"answered HTTP {exc.code} {exc.reason} for {path}"
            if exc.code in (401, 403):
                why = f"refused user {self.user!r} (HTTP {exc.code}; it needs a management tag)"
            raise ManagementUnavailable(f"the management API at {self} {why}") from None
        except urllib.error.URLError as exc:
            why = _reason(exc.reason)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            why = _reason(exc)
        raise ManagementUnavailable(f"the management API at {self} does not answer ({why})")

    def snapshot(self, vhost: str) -> Snapshot:
        """Everything the vhost has, with queue statistics and the cluster's alarms."""
        v = quote(vhost, safe="")
        overview = self.get("/api/overview")
        exchanges, queues = self.get(f"/api/exchanges/{v}"), self.get(f"/api/queues/{v}")
        bindings = self.get(f"/api/bindings/{v}")
        try:
            nodes = self.get("/api/nodes")  # needs the monitoring tag; else alarms are unknown
        except ManagementUnavailable:
            nodes = None
        return snapshot_from_management(vhost, exchanges, queues, bindings, overview, nodes)


def _reason(exc: object) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _first_url(url: str) -> str:
    return _NEXT_URL.split(url, 1)[0].strip()


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (its first, for a failover list), read as pika reads it."""
    path = urlsplit(_first_url(url)).path
    return unquote(path.split("/")[1]) if len(path) > 1 else "/"


def management_api(
    url: str, override: str | None = None, *, timeout: float = 5.0
) -> ManagementApi | None:
    """The management API next to AMQP ``url``, or at ``override`` (``"off"``: None).

    Derived: the AMQP URL's host (the first of a failover list) and credentials,
    ``http://`` on port 15672 (``https://`` on 15671 for ``amqps://``); None for a
    URL that is not AMQP (``memory://``). An override without credentials borrows
    the AMQP URL's.
    """
    amqp = urlsplit(_first_url(url))
    user = unquote(amqp.username) if amqp.username is not None else "guest"  # pika's default
    password = unquote(amqp.password) if amqp.password is not None else "guest"
    override = (override or "").strip()
    if override.lower() in OFF:
        return None
    if override:
        given = urlsplit(override if "://" in override else f"http://{override}")
        if given.username is not None:
            user, password = unquote(given.username), unquote(given.password or "")
        netloc = given.netloc.rpartition("@")[2]
        return ManagementApi(
            f"{given.scheme}://{netloc}{given.path.rstrip('/')}", user, password, timeout
        )
    if amqp.scheme.lower() not in ("amqp", "amqps"):
        return None
    host = amqp.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    web = "https://{}:15671" if amqp.scheme.lower() == "amqps" else "http://{}:15672"
    return ManagementApi(web.format(host), user, password, timeout)


# -- what the broker has ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeState:
    """An exchange on the broker; a property is None where the way of looking cannot tell."""

    name: str
    type: str | None = None
    durable: bool | None = None
    auto_delete: bool | None = None
    internal: bool | None = None
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue on the broker, its counts and rates (messages per second); None: unknown."""

    name: str
    durable: bool | None = None
    exclusive: bool | None = None
    auto_delete: bool | None = None
    type: str | None = None
    arguments: Mapping[str, Any] | None = None
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    publish_rate: float | None = None
    deliver_rate: float | None = None


@dataclass(frozen=True, slots=True)
class BindingState:
    """A binding: exchange ``source`` routes to ``destination`` (a queue or an exchange)."""

    source: str
    destination: str
    destination_type: str = "queue"
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        """What makes two bindings the same binding."""
        args = json.dumps(dict(self.arguments), sort_keys=True, default=str)
        return (self.source, self.destination, self.destination_type, self.routing_key, args)

    def __str__(self) -> str:
        args = f" {json.dumps(dict(self.arguments), sort_keys=True)}" if self.arguments else ""
        return (
            f"'{self.source}' -> {self.destination_type} '{self.destination}' "
            f"key '{self.routing_key}'{args}"
        )


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Who answered: product, version, cluster and node; ``alarms`` None when unknown."""

    product: str | None = None
    version: str | None = None
    cluster_name: str | None = None
    node: str | None = None
    alarms: tuple[str, ...] | None = None

    def merged(self, other: BrokerInfo) -> BrokerInfo:
        """This, with what it does not know taken from ``other``."""
        theirs = asdict(other)
        return BrokerInfo(**{k: theirs[k] if v is None else v for k, v in asdict(self).items()})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one look at a vhost saw and how (``via``); ``complete`` when it saw everything.

    A passive-declare snapshot holds only those of the topology's exchanges and
    queues that exist, without properties, and ``bindings`` None; ``note`` says
    why the management API was not used.
    """

    via: Via
    vhost: str
    exchanges: Mapping[str, ExchangeState]
    queues: Mapping[str, QueueState]
    bindings: tuple[BindingState, ...] | None
    complete: bool
    info: BrokerInfo = BrokerInfo()
    note: str = ""


def _pick(cls: type[T], data: Mapping[str, Any], **more: Any) -> T:
    """``cls`` from the keys of ``data`` named like its fields (the API's names are ours)."""
    names = {f.name for f in dataclasses.fields(cls)} - set(more)  # type: ignore[arg-type]
    return cls(**{k: data[k] for k in names if k in data}, **more)


def snapshot_from_management(
    vhost: str,
    exchanges: Sequence[Mapping[str, Any]],
    queues: Sequence[Mapping[str, Any]],
    bindings: Sequence[Mapping[str, Any]],
    overview: Mapping[str, Any] | None = None,
    nodes: Sequence[Mapping[str, Any]] | None = None,
) -> Snapshot:
    """A :class:`Snapshot` from the management API's JSON for one vhost."""

    def rate(q: Mapping[str, Any], stat: str) -> float | None:
        value = (q.get("message_stats") or {}).get(f"{stat}_details", {}).get("rate")
        return float(value) if isinstance(value, int | float) else None

    alarms: list[str] | None = None
    if nodes is not None:
        alarms = [f"node {n.get('name')} is down" for n in nodes if n.get("running") is False]
        alarms += [
            f"{what} alarm on {n.get('name')}" for n in nodes for what, k in _ALARMS if n.get(k)
        ]
    overview = overview or {}
    return Snapshot(
        via="management",
        vhost=vhost,
        exchanges={e["name"]: _pick(ExchangeState, e) for e in exchanges},
        queues={
            q["name"]: _pick(
                QueueState,
                q,
                type=q.get("type", "classic"),
                ready=q.get("messages_ready"),
                unacked=q.get("messages_unacknowledged"),
                publish_rate=rate(q, "publish"),
                deliver_rate=rate(q, "deliver_get"),
            )
            for q in queues
        },
        bindings=tuple(_pick(BindingState, b) for b in bindings),
        complete=True,
        info=BrokerInfo(
            overview.get("product_name"),
            overview.get("product_version") or overview.get("rabbitmq_version"),
            overview.get("cluster_name"),
            overview.get("node"),
            None if alarms is None else tuple(alarms),
        ),
    )


def passive_snapshot(
    transport: Transport, topology: Topology, queues: Iterable[str] = (), *, note: str = ""
) -> Snapshot:
    """Which of the topology's exchanges and queues (and of ``queues``) exist, through AMQP."""
    exchanges: dict[str, ExchangeState] = {}
    for e in topology.exchanges:
        try:
            transport.declare_exchange(e.name, e.type, passive=True)
        except NotFound:
            continue
        exchanges[e.name] = ExchangeState(e.name)
    found: dict[str, QueueState] = {}
    for name in dict.fromkeys([*(q.name for q in topology.queues), *queues]):
        try:
            info = transport.declare_queue(name, passive=True)
        except NotFound:
            continue
        except ResourceLocked:  # exclusive to another connection: it exists
            found[name] = QueueState(name, exclusive=True)
            continue
        found[name] = QueueState(name, ready=info.message_count, consumers=info.consumer_count)
    vhost = vhost_of(transport.url)
    return Snapshot("amqp", vhost, exchanges, found, None, False, server_info(transport), note)


def server_info(transport: Transport) -> BrokerInfo:
    """Product, version and cluster name from the AMQP connection's server properties."""
    props = getattr(transport, "server_properties", None)
    if props is None:  # the pika transport does not publish them yet: its connection has them
        connection = getattr(getattr(transport, "_core", None), "connection", None)
        props = getattr(connection, "server_properties", None)
    if not isinstance(props, Mapping):
        return BrokerInfo()

    def text(key: str) -> str | None:
        value = props.get(key)
        return value.decode(errors="replace") if isinstance(value, bytes) else value

    return BrokerInfo(text("product"), text("version"), text("cluster_name"))


def snapshot(
    settings: Settings,
    topology: Topology,
    *,
    management: ManagementApi | None,
    queues: Iterable[str] = (),
) -> Snapshot:
    """A look at the broker: the management API when it answers, else passive declares.

    Raises :class:`~logbus.errors.BrokerUnavailable` when neither answers.
    """
    from logbus.transports import connect

    note = _NO_API
    if management is not None:
        try:
            return management.snapshot(vhost_of(settings.url))
        except ManagementUnavailable as exc:
            note = str(exc)
    with connect(settings.url, settings=settings) as transport:
        return passive_snapshot(transport, topology, queues, note=note)


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
    ``missing`` names what was asked about and is not there."""

    url: str
    vhost: str
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
    from logbus.settings import redact_url
    from logbus.transports import connect

    names = list(dict.fromkeys(queues)) or [q.name for q in topology.queues]
    with connect(settings.url, settings=settings) as transport:
        amqp_info = server_info(transport)
        note, seen = _NO_API, None
        if management is not None:
            try:
                seen = management.snapshot(vhost_of(settings.url))
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
        url=redact_url(settings.url),
        vhost=seen.vhost,
        via=seen.via,
        broker=seen.info.merged(amqp_info),
        queues=tuple(seen.queues[n] for n in shown),
        exchanges=tuple(x for n, x in sorted(seen.exchanges.items()) if n in own or also(n)),
        bindings=bindings,
        missing=tuple(missing),
        management=None if management is None else str(management),
        note=seen.note,
    )
