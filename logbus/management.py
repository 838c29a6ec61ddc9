"""What the broker has: RabbitMQ's management HTTP API, or AMQP when that does not answer.

Two ways to look: the management API (every exchange, queue and binding of a
vhost with their properties, message rates, alarms), and, when that does not
answer, AMQP itself — a passive declare tells whether an exchange or queue
exists and, for a queue, its ready messages and consumers; the connection's
server properties name the product and version. A :class:`Snapshot` records
what was seen and how.

The management API is found next to the AMQP URL (same host and credentials,
``http://`` on port 15672, ``https://`` on 15671 for ``amqps://``) unless given;
its password is never part of a ``str``, ``repr`` or error message.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, unquote

from logbus._urls import is_amqp, parse_url, redact_url, split_urls, vhost_of
from logbus.errors import BrokerUnavailable, NotFound, ResourceLocked
from logbus.topology import Topology

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.transports.base import Transport

__all__ = [
    "BindingState",
    "BrokerInfo",
    "ExchangeState",
    "ManagementApi",
    "ManagementUnavailable",
    "QueueState",
    "Snapshot",
    "is_amqp",
    "management_api",
    "passive_snapshot",
    "server_info",
    "snapshot",
    "snapshot_from_management",
    "vhost_of",
    "where",
]

Via = Literal["management", "amqp"]
Entity = Literal["exchange", "queue", "binding"]
T = TypeVar("T")

#: What ``--management-url`` / ``LOGBUS_MANAGEMENT_URL`` may say to use AMQP only.
OFF = frozenset({"off", "none", "no", "false", "0"})
_NO_API = "no management API to ask"
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
    #: Set when ``base`` was derived from an AMQP URL (a guess): the AMQP port the
    #: broker behind the API must listen on, else the API is another broker's.
    amqp_port: int | None = None

    def __str__(self) -> str:
        scheme, _, rest = self.base.partition("://")
        return f"{scheme}://{quote(self.user, safe='')}:***@{rest}"

    def __repr__(self) -> str:
        return f"ManagementApi({str(self)!r})"

    def get(self, path: str) -> Any:
        """The JSON at ``path`` (``/api/overview`` ...); :class:`ManagementUnavailable` if not."""
        return self.call("GET", path)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """``method`` on ``path`` with JSON ``body``; the JSON answer (None when empty).

        Any failure is :class:`ManagementUnavailable`, saying what answered or why nothing did.
        """
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        # Reached directly, like the AMQP port: a proxy from the environment would take
        # a request for 127.0.0.1 somewhere else.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                answer = response.read()
                return json.loads(answer) if answer.strip() else None
        except urllib.error.HTTPError as exc:
            asked = path if method == "GET" else f"{method} {path}"
            why = f"answered HTTP {exc.code} {exc.reason} for {asked}"
            if exc.code in (401, 403):
                why = f"refused user {self.user!r} (HTTP {exc.code}; it needs a management tag)"
            raise ManagementUnavailable(f"the management API at {self} {why}") from None
        except urllib.error.URLError as exc:
            why = _reason(exc.reason)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            why = _reason(exc)
        raise ManagementUnavailable(
            f"the management API at {self} does not answer ({why}){self._guess_hint()}"
        )

    def _guess_hint(self) -> str:
        """What to do when a guessed address does not answer for a broker on other ports."""
        if self.amqp_port is None or self.amqp_port in (5672, 5671):
            return ""
        return (
            f"; it was guessed, and AMQP is on port {self.amqp_port}: name the management "
            "API with --management-url or LOGBUS_MANAGEMENT_URL"
        )

    def snapshot(self, vhost: str) -> Snapshot:
        """Everything the vhost has, with queue statistics and the cluster's alarms."""
        v = quote(vhost, safe="")
        overview = self.get("/api/overview")
        self._check_guess(overview)
        exchanges, queues = self.get(f"/api/exchanges/{v}"), self.get(f"/api/queues/{v}")
        bindings = self.get(f"/api/bindings/{v}")
        try:
            nodes = self.get("/api/nodes")  # needs the monitoring tag; else alarms are unknown
        except ManagementUnavailable:
            nodes = None
        return snapshot_from_management(vhost, exchanges, queues, bindings, overview, nodes)

    def _check_guess(self, overview: Any) -> None:
        """A derived API that belongs to a broker not listening on the AMQP port is
        another broker's (two nodes on one host): its statistics would mislead."""
        if self.amqp_port is None or not isinstance(overview, Mapping):
            return
        listeners = overview.get("listeners")
        if not isinstance(listeners, list):
            return
        found: set[int] = set()
        for listener in listeners:
            if isinstance(listener, Mapping) and str(listener.get("protocol")).startswith("amqp"):
                port = listener.get("port")
                if isinstance(port, int):
                    found.add(port)
        ports = sorted(found)
        if ports and self.amqp_port not in ports:
            raise ManagementUnavailable(
                f"the management API at {self} belongs to a broker listening for AMQP on "
                f"{', '.join(map(str, ports))}, not {self.amqp_port}; name this broker's "
                "with --management-url or LOGBUS_MANAGEMENT_URL"
            )


def _reason(exc: object) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _first_url(url: str) -> str:
    return split_urls(url)[0].strip()


def where(url: str) -> str:
    """How to name the broker at ``url`` to an operator: a ``local://`` broker as its
    socket path, any other as its URL with the password hidden."""
    first = _first_url(url)
    if first.partition("://")[0].strip().lower() == "local":
        return unquote(first.partition("://")[2].partition("?")[0]) or first
    return redact_url(url)


def management_api(
    url: str, override: str | None = None, *, timeout: float = 5.0
) -> ManagementApi | None:
    """The management API next to AMQP ``url``, or at ``override`` (``"off"``: None).

    Derived: the AMQP URL's host (the first of a failover list) and credentials,
    ``http://`` on port 15672 (``https://`` on 15671 for ``amqps://``); None for a
    URL that is not AMQP (``memory://``). An override without credentials borrows
    the AMQP URL's.
    """
    amqp = parse_url(_first_url(url))
    user = unquote(amqp.username) if amqp.username is not None else "guest"  # pika's default
    password = unquote(amqp.password) if amqp.password is not None else "guest"
    override = (override or "").strip()
    if override.lower() in OFF:
        return None
    if override:
        given = parse_url(
            override if "://" in override else f"http://{override}",
            fix="--management-url or LOGBUS_MANAGEMENT_URL",
        )
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
    tls = amqp.scheme.lower() == "amqps"
    web = "https://{}:15671" if tls else "http://{}:15672"
    port = amqp.port or (5671 if tls else 5672)
    return ManagementApi(web.format(host), user, password, timeout, amqp_port=port)


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
    #: The policy that governs the queue (the management API's ``policy``), if any.
    policy: str | None = None


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
