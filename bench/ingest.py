"""``logbus ingest`` against syslog-ng 3.38's ``amqp()`` with flow-control: lines/s, recovery.

Run as ``python bench/ingest.py [LINES ...] [--rounds=N] [--throughput-only | --costs]``
(default: 50,000 lines, then 200,000; 3 rounds each). One run, the same broker, the same load:
``loggen`` over TCP, 150-byte lines, as fast as the receiver lets it (both receivers
apply back-pressure: logbus by not reading while confirms lag, syslog-ng by
``flags(flow-control)``). 50,000 lines is a burst of about 3 s, a third of it the
confirm window's ramp-up; 200,000 is a sustained stream of about 15 s, over which
the queue (nobody consumes it) grows 200,000 deep, and the broker's cost of a
queued message shows: syslog-ng's ``amqp()`` sends its thirteen value-pairs as
headers, and RabbitMQ held 2.6 KB a message of its in a queue against logbus's
1.5 KB (``rabbitmqctl list_queues memory`` at 100,000), so its rate falls as the
queue grows.

  logbus      ``logbus ingest --tcp``, every line confirmed by RabbitMQ
  syslog-ng   ``network()`` -> ``amqp()`` with ``flags(flow-control)``; no confirms

Both receivers get the same receiving setup, so the ratio compares the two
gateways on identical broker work: one durable fanout exchange bound to one
durable queue, persistent messages (syslog-ng's ``amqp()`` as configured here;
for logbus a topology TOML with that exchange, that queue and one ``[[emit]]``
target). A third line, labelled as not comparable, is logbus on its default
topology (a topic exchange with exchange-to-exchange bindings to fanout, direct
and headers exchanges, and the work queue): what a deployment of the default
costs the broker more.

Throughput is the lines counted in the receiving queue over the time from the
first line sent. Each round runs logbus, syslog-ng and the broker limit (below)
one after the other; the shared broker's pace drifts by 10-20 % between runs, so
ratios are taken within a round and their median printed (target >= 1.0x).
``--throughput-only`` stops after those lines (no listener models, no recovery).
``--costs`` runs only a pricing of the broker limit's publisher: confirms, the
mandatory flag and the record's size left out one at a time.

The broker limit: the same 150-byte lines into the same setup, published by
``bench/_broker_limit.py`` (a bare connection, frames prebuilt, 5,000 confirms
in flight), on one connection and on two side by side: the most a confirmed
publisher gets from this broker (a second connection does not add to it: the
one queue is the broker's bottleneck). Printed with logbus's rate as a share of
it, and the best limit as a share of syslog-ng's unconfirmed rate: where that is
below 1.0, no confirmed gateway can reach 1.0x on that broker, and logbus / limit
is the figure left to the gateway. A third limit publishes the same way the bodies
logbus makes of those lines (its JSON records, about 380 bytes against loggen's 150:
the wire format's id, time, names and fields), the bound of any confirmed publisher
of logbus records: printed with logbus's share of it and its share of syslog-ng's
rate (where that is below 1.0, the target is out of reach on that broker).

Listener models (no broker: a stand-in that confirms at once, so only reading,
framing, parsing and the hand-over count): the gateway's asyncio listeners
against a thread per connection feeding the same publisher, 1 and 8 loggen
connections, as a ratio. This is why the listeners are asyncio.

Also printed: each receiver's CPU time per line (its process, all threads), the
figure that bounds it on a machine whose cores are all busy.

Recovery (only with a private node's environment, all six ``LOGBUS_PRIVATE_*``
variables; the shared broker is never restarted): the bench brings the node up
with ``scripts/private-rabbitmq`` (and down again after, if it was not up), a
steady 1,000 lines/s stream, the broker stopped and started, and the seconds
from its start until lines arrive again.
syslog-ng is skipped with a line saying so where it is not installed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from time import monotonic
from typing import TYPE_CHECKING, Any

import pika

if TYPE_CHECKING:
    from logbus.topology import Topology

ROOT = Path(__file__).resolve().parents[1]
SHARED = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The line counts run by default: a burst (about 3 s; the confirm window's ramp-up is
#: part of it) and a sustained stream (about 15 s; the queue grows 200,000 deep).
LINES = (50_000, 200_000)


def _channel(url: str) -> tuple[pika.BlockingConnection, object]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


class _Depth:
    """A queue's depth, polled over one connection kept open (a connection per poll, 50 a
    second, cost the broker more CPU than the publishes measured); reopened after a
    broker restart."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._open: tuple[pika.BlockingConnection, object] | None = None

    def __call__(self, queue: str) -> int:
        try:
            if self._open is None:
                self._open = _channel(self.url)
            _, channel = self._open
            return int(channel.queue_declare(queue, passive=True).method.message_count)  # type: ignore[attr-defined]
        except pika.exceptions.AMQPError:
            self.close()
            return -1

    def close(self) -> None:
        opened, self._open = self._open, None
        if opened is not None and opened[0].is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                opened[0].close()


def _wait_depth(depth_of: _Depth, queue: str, depth: int, timeout: float = 600.0) -> float:
    """Monotonic time at which ``queue`` first held ``depth`` messages."""
    deadline = monotonic() + timeout
    while depth_of(queue) < depth:
        if monotonic() > deadline:
            raise SystemExit(f"bench: {queue} never reached {depth} messages")
        threading.Event().wait(0.02)
    return monotonic()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loggen(port: int, lines: int, rate: int | None = None) -> subprocess.Popen[bytes]:
    rate_flags = ["-r", str(rate)] if rate else ["-r", "1000000"]
    return subprocess.Popen(
        ["loggen", "-S", "-s", "150", "-n", str(lines), "-I", "3600", "-Q", *rate_flags,
         "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int) -> None:
    import socket

    deadline = monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if monotonic() > deadline:
                raise SystemExit(f"bench: nothing listens on {port}") from None
            threading.Event().wait(0.05)


def _one_queue(name: str) -> Topology:
    """syslog-ng's receiving setup as a logbus topology: one durable fanout exchange bound
    to one durable queue, one [[emit]] target."""
    from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology

    return Topology(
        exchanges=(Exchange(name=name, type="fanout", durable=True),),
        queues=(Queue(name=name, durable=True),),
        bindings=(Binding(source=name, destination=name),),
        emit=(EmitTarget(exchange=name),),
    )


class Logbus:
    """``logbus ingest`` on a topology of its own: ``"one-queue"`` is syslog-ng's setup
    (:func:`_one_queue`), ``"default"`` the default topology under a prefix
    (``bench-ingest-<n>.``: a topic exchange bound to three more and the work queue)."""

    def __init__(self, url: str, work: Path, setup: str = "one-queue") -> None:
        from logbus.demo import demo_topology
        from logbus.topology import declare, dumps
        from logbus.transports import connect

        self.url = url
        if setup == "one-queue":
            self.topology = _one_queue(f"bench-logbus-{os.getpid()}")
            self.queue = self.topology.queues[0].name
        else:
            self.topology = demo_topology(f"bench-ingest-{os.getpid()}.")
            self.queue = next(q.name for q in self.topology.queues if q.name.endswith("tasks"))
        config = work / "topology.toml"
        config.write_text(dumps(self.topology))
        with connect(url) as transport:
            declare(transport, self.topology)
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "logbus", "ingest", "--config", str(config), "--url", url,
             "--tcp", f"127.0.0.1:{self.port}", "--max-size", "64k"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        connection, channel = _channel(self.url)
        for queue in self.topology.queues:
            channel.queue_delete(queue.name)  # type: ignore[attr-defined]
        for exchange in reversed(self.topology.exchanges):
            channel.exchange_delete(exchange.name)  # type: ignore[attr-defined]
        connection.close()


class SyslogNg:
    """syslog-ng in the foreground: ``network()`` -> ``amqp()``, ``flags(flow-control)``."""

    def __init__(self, url: str, work: Path) -> None:
        match = re.match(r"amqp://(\w+):(\w+)@([\w.]+):(\d+)/", url)
        assert match is not None
        user, password, host, amqp_port = match.groups()
        self.url = url
        self.exchange = self.queue = f"bench-syslog-ng-{os.getpid()}"
        connection, channel = _channel(url)
        channel.exchange_declare(self.exchange, "fanout", durable=True)  # type: ignore[attr-defined]
        channel.queue_declare(self.queue, durable=True)  # type: ignore[attr-defined]
        channel.queue_bind(self.queue, self.exchange)  # type: ignore[attr-defined]
        connection.close()
        self.port = _free_port()
        conf = work / "syslog-ng.conf"
        conf.write_text(
            "@version: 3.38\n"
            "options { stats_freq(0); };\n"
            f"source s {{ network(ip(127.0.0.1) port({self.port}) transport(tcp)"
            " log-iw-size(10000)); };\n"
            f'destination d {{ amqp(host("{host}") port({amqp_port}) vhost("/")'
            f' exchange("{self.exchange}") exchange-declare(no) routing-key("bench")'
            f' body("$MSG") persistent(yes) username("{user}") password("{password}")); }};\n'
            "log { source(s); destination(d); flags(flow-control); };\n"
        )
        self.process = subprocess.Popen(
            ["syslog-ng", "-F", "-f", str(conf), "-R", str(work / "persist"),
             "-p", str(work / "pid"), "-c", str(work / "ctl"), "--no-caps"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        connection, channel = _channel(self.url)
        channel.queue_delete(self.queue)  # type: ignore[attr-defined]
        channel.exchange_delete(self.exchange)  # type: ignore[attr-defined]
        connection.close()


def throughput(receiver: Logbus | SyslogNg, lines: int) -> tuple[float, float]:
    """Lines/s from the first line sent until the queue holds them all, and the receiver's
    CPU time per line (microseconds)."""
    depth_of = _Depth(receiver.url)
    try:
        cpu = _cpu_seconds(receiver.process.pid)
        start = monotonic()
        sender = _loggen(receiver.port, lines)
        done = _wait_depth(depth_of, receiver.queue, lines)
        cpu = _cpu_seconds(receiver.process.pid) - cpu
        sender.wait(60)
    finally:
        depth_of.close()
    return lines / (done - start), cpu / lines * 1e6


def recovery(receiver: Logbus | SyslogNg, private: Path) -> float:
    """Seconds from the broker's start, after a stop, until lines arrive again."""
    depth_of = _Depth(receiver.url)
    sender = _loggen(receiver.port, 10_000_000, rate=1000)
    try:
        _wait_depth(depth_of, receiver.queue, 2000)
        depth_of.close()
        subprocess.run([str(private), "stop"], check=True, capture_output=True)
        subprocess.run([str(private), "start"], check=True, capture_output=True)
        back = monotonic()
        before = max(0, depth_of(receiver.queue))
        _wait_depth(depth_of, receiver.queue, before + 100, timeout=300)
        return monotonic() - back
    finally:
        sender.kill()
        sender.wait()
        depth_of.close()


class _Instant:
    """A broker stand-in that confirms every batch at once."""

    connected = True

    def emit_many(self, records: object) -> int:
        return len(list(records))  # type: ignore[call-overload]

    def emit_stream(self, take: Any, progress: Any) -> int:
        count, more = 0, True
        while more:
            records, more = take(5000)
            count += len(records)
            if records:
                progress(len(records))
        return count

    def close(self) -> None:
        pass


def _loggen_all(port: int, lines: int, connections: int) -> None:
    subprocess.run(
        ["loggen", "-S", "-s", "150", "-n", str(lines // connections), "-I", "3600",
         "-r", "1000000", "--active-connections", str(connections), "-Q", "127.0.0.1", str(port)],
        check=True, capture_output=True,
    )  # fmt: skip


def _asyncio_listeners(lines: int, connections: int) -> float:
    from logbus.ingest.gateway import IngestPlan, Listen, Running, run

    box: list[Running] = []
    up = threading.Event()

    def ready(running: Running) -> None:
        box.append(running)
        up.set()

    plan = IngestPlan(listeners=(Listen.parse("tcp", "0"),))
    thread = threading.Thread(target=run, args=(plan,), kwargs={"ready": ready, "link": _Instant})
    thread.start()
    up.wait(30)
    [running] = box
    start = monotonic()
    _loggen_all(int(running.addresses[0].rpartition(":")[2]), lines, connections)
    while running.listeners[0].confirmed < lines // connections * connections:
        threading.Event().wait(0.005)
    took = monotonic() - start
    running.stop()
    thread.join(60)
    return lines / took


def _thread_listeners(lines: int, connections: int) -> float:
    import socketserver

    from logbus.ingest.framing import Framer
    from logbus.ingest.pipeline import Pending, Pipeline
    from logbus.ingest.syslog import parse_record

    done = [0]
    room = threading.Semaphore(20_000)

    def settle(items: list[Pending], _outcome: object) -> None:
        done[0] += len(items)
        for _ in items:
            room.release()

    pipeline = Pipeline(_Instant, settle)
    pipeline.start()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            host, port = self.client_address[:2]
            framer, peer = Framer(), f"{host}:{port}"
            while data := self.request.recv(65536):
                items = [Pending(parse_record(m, peer)) for m in framer.feed(data)]
                for _ in items:
                    room.acquire()
                pipeline.put(items)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start = monotonic()
    _loggen_all(server.server_address[1], lines, connections)
    while done[0] < lines // connections * connections:
        threading.Event().wait(0.005)
    took = monotonic() - start
    server.shutdown()
    pipeline.stop(monotonic() + 1)
    return lines / took


def listener_models(lines: int) -> None:
    print("# listener models, broker stand-in (reading, framing, parsing, hand-over only)")
    for connections in (1, 8):
        a = _asyncio_listeners(lines, connections)
        t = _thread_listeners(lines, connections)
        print(
            f"{connections} connection(s): asyncio {a:,.0f} lines/s, thread per connection "
            f"{t:,.0f} lines/s, ratio {a / t:.2f}x"
        )


def _measure(receiver: Logbus | SyslogNg, lines: int) -> tuple[float, float]:
    try:
        return throughput(receiver, lines)
    finally:
        receiver.close()


def _records(lines: int) -> str:
    """``lines`` records as ``logbus ingest`` publishes loggen's lines: the JSON bodies
    (about 380 bytes each) that ``parse_record`` and ``to_bytes`` make of them."""
    from logbus.ingest.syslog import parse_record

    pad = "PADD" * 10
    return "".join(
        parse_record(
            f"<38>2026-12-07T14:08:35 localhost prg00000[1234]: seq: {i:010d}, thread: 0000, "
            f"runid: 1796652515, stamp: 2026-12-07T14:08:35 {pad[:22]}".encode(),
            "127.0.0.1:40000",
        )
        .to_bytes()
        .decode()
        + "\n"
        for i in range(lines)
    )


def _bodies(work: Path, lines: int) -> dict[bool, Path]:
    """The bare publisher's bodies for ``lines`` lines, written once: loggen-sized 150-byte
    lines (``False``) and the records logbus makes of loggen's lines (``True``)."""
    paths = {False: work / f"bodies-lines-{lines}.txt", True: work / f"bodies-records-{lines}.txt"}
    paths[False].write_text("".join(f"{i:010d} " + "x" * 139 + "\n" for i in range(lines)))
    paths[True].write_text(_records(lines))
    return paths


@contextlib.contextmanager
def _fanout_queue(url: str, name: str) -> Iterator[None]:
    """The receivers' setup under ``name`` (one durable fanout exchange -> one durable
    queue) for the time of the block."""
    connection, channel = _channel(url)
    channel.exchange_declare(name, "fanout", durable=True)  # type: ignore[attr-defined]
    channel.queue_declare(name, durable=True)  # type: ignore[attr-defined]
    channel.queue_bind(name, name)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        channel.queue_delete(name)  # type: ignore[attr-defined]
        channel.exchange_delete(name)  # type: ignore[attr-defined]
        connection.close()


def _broker_limit(url: str, work: Path, bodies: Path, connections: int = 1) -> float:
    """The broker's confirmed limit for ``bodies`` (one per line; see :func:`_bodies`) into
    the receivers' setup: ``_broker_limit.BROKER``, on ``connections`` connections side
    by side."""
    from _broker_limit import broker_limit

    name = f"bench-limit-{os.getpid()}"
    with _fanout_queue(url, name):
        return broker_limit(url, name, "bench", bodies, work, connections)


#: What ``--costs`` prices: a name, logbus's records (else loggen's 150-byte lines) as
#: bodies, and ``_broker_limit.BROKER``'s flags.
_COSTS = (
    ("confirmed, mandatory, logbus's records", True, "confirm,mandatory"),
    ("  the same unconfirmed", True, "mandatory"),
    ("  the same not mandatory", True, "confirm"),
    ("  the same with 150-byte lines", False, "confirm,mandatory"),
)


def costs(url: str, work: Path, lines: int, rounds: int) -> None:
    """What a confirmed publisher of logbus records pays the broker, by the bare publisher
    of the broker limit with one thing left out at a time: confirms, the mandatory flag,
    the record's size. Each is timed from its first send until the queue holds every line
    (unconfirmed, the publisher is done long before the broker is), in interleaved rounds."""
    from _broker_limit import BROKER

    script = work / "costs.py"
    script.write_text(BROKER)
    bodies = _bodies(work, lines)
    name = f"bench-costs-{os.getpid()}"
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, records, flags in _COSTS:
            depth_of = _Depth(url)
            try:
                with _fanout_queue(url, name), bodies[records].open("rb") as source:
                    publisher = subprocess.Popen(
                        [sys.executable, str(script), url, name, "bench", flags],
                        stdin=source,
                        stdout=subprocess.PIPE,
                    )
                    assert publisher.stdout is not None
                    publisher.stdout.readline()  # connected, bodies read: the first send
                    start = monotonic()
                    done = _wait_depth(depth_of, name, lines)
                    publisher.communicate(timeout=60)
                rates.setdefault(label, []).append(lines / (done - start))
            finally:
                depth_of.close()
    print(f"# what the broker charges a bare publisher ({lines:,} lines, medians of {rounds})")
    base = median(rates[_COSTS[0][0]])
    for label, *_ in _COSTS:
        rate = median(rates[label])
        print(f"{label:<40} {rate:>8,.0f} lines/s  {rate / base:.2f} x")


def _rounds(lines: int, rounds: int, have_syslog_ng: bool, work: Path) -> dict[str, list[float]]:
    """``rounds`` rounds, each logbus, syslog-ng and the broker limit (1 and 2 connections)
    one after the other on the same broker: a round's figures share its moment, so the
    ratios are taken per round (the shared broker's pace drifts by 10-20 % between runs)."""
    bodies = _bodies(work, lines)
    runs: dict[str, list[float]] = {}
    for number in range(1, rounds + 1):
        rate, cpu = _measure(Logbus(SHARED, work), lines)
        found = {"logbus": rate, "logbus cpu": cpu}
        if have_syslog_ng:
            found["syslog-ng"], found["syslog-ng cpu"] = _measure(SyslogNg(SHARED, work), lines)
        found["limit"] = _broker_limit(SHARED, work, bodies[False])
        found["limit x2"] = _broker_limit(SHARED, work, bodies[False], connections=2)
        found["limit records"] = _broker_limit(SHARED, work, bodies[True])
        line = f"round {number}: logbus {rate:,.0f}"
        if have_syslog_ng:
            found["ratio"] = rate / found["syslog-ng"]
            found["bound"] = max(found["limit"], found["limit x2"]) / found["syslog-ng"]
            found["bound records"] = found["limit records"] / found["syslog-ng"]
            line += f", syslog-ng {found['syslog-ng']:,.0f} (ratio {found['ratio']:.2f} x)"
        line += (
            f", broker limit {found['limit']:,.0f} (2 connections {found['limit x2']:,.0f};"
            f" logbus's records {found['limit records']:,.0f}) lines/s"
        )
        print(line, flush=True)
        for name, value in found.items():
            runs.setdefault(name, []).append(value)
    return runs


def _summary(lines: int, runs: dict[str, list[float]], have_syslog_ng: bool) -> None:
    """The medians of one line count's rounds, and the target line."""
    logbus, limit = median(runs["logbus"]), median(runs["limit"])
    print(f"logbus ingest (confirmed)          {logbus:>10,.0f} lines/s (median of rounds)")
    if have_syslog_ng:
        syslog_ng, ratio = median(runs["syslog-ng"]), median(runs["ratio"])
        print(f"syslog-ng 3.38 amqp() flow-control {syslog_ng:>10,.0f} lines/s (median of rounds)")
        verdict = "met" if ratio >= 1.0 else "NOT met"
        print(
            f"{lines:,} lines: logbus ingest {logbus:,.0f} lines/s vs syslog-ng amqp() "
            f"{syslog_ng:,.0f} = {ratio:.2f} x (median of the rounds' ratios; target >= 1.0 x: "
            f"{verdict}; same broker work: one durable exchange -> one durable queue)"
        )
    print(
        f"broker limit, confirmed             {limit:>10,.0f} lines/s (the same lines on one "
        "bare connection, frames prebuilt, 5,000 confirms in flight; "
        f"on 2 connections {median(runs['limit x2']):,.0f})"
    )
    records = median(runs["limit records"])
    print(
        f"broker limit, logbus's records      {records:>10,.0f} lines/s (the same, with the "
        "JSON bodies logbus publishes for those lines, about 380 bytes)"
    )
    of_limit = median([a / b for a, b in zip(runs["logbus"], runs["limit"], strict=True)])
    of_records = median([a / b for a, b in zip(runs["logbus"], runs["limit records"], strict=True)])
    shares = (
        f"logbus ingest / broker limit = {of_limit:.2f} x; "
        f"/ broker limit for its records = {of_records:.2f} x"
    )
    if have_syslog_ng:
        bound = median(runs["bound"])
        bound_records = median(runs["bound records"])
        shares += (
            f"\nbest confirmed limit / syslog-ng amqp() (unconfirmed) = {bound:.2f} x; "
            f"for logbus's records = {bound_records:.2f} x"
        )
        if bound_records < 1.0:
            shares += (
                " (below 1.0: on this broker no confirmed publisher of these records"
                " reaches 1.0 x; this is the target's bound here)"
            )
    print(shares)
    cpu = f"receiver CPU per line: logbus {median(runs['logbus cpu']):,.0f} us"
    if have_syslog_ng:
        cpu += f", syslog-ng {median(runs['syslog-ng cpu']):,.0f} us"
    print(cpu)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only_throughput = "--throughput-only" in sys.argv[1:]
    rounds = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--rounds=")), 3)
    if "--costs" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            costs(SHARED, Path(tmp), int(args[0]) if args else LINES[0], rounds)
        return
    counts = [int(a) for a in args] or list(LINES)
    have_syslog_ng = shutil.which("syslog-ng") is not None
    if shutil.which("loggen") is None:
        raise SystemExit("bench: loggen is not installed (scripts/ensure-packages)")
    print("# same receiving setup for both: one durable fanout exchange -> one durable queue")
    if not have_syslog_ng:
        print("syslog-ng: not installed, skipped (scripts/ensure-packages installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for lines in counts:
            print(
                f"# syslog over TCP into RabbitMQ: loggen, {lines:,} lines of 150 bytes, "
                f"{rounds} rounds"
            )
            _summary(lines, _rounds(lines, rounds, have_syslog_ng, work), have_syslog_ng)
        _default_topology(counts[0], work)
        if only_throughput:
            return
        listener_models(min(counts[0], 40_000))
        _recoveries(have_syslog_ng, work)


def _default_topology(lines: int, work: Path) -> None:
    """logbus on the demo's copy of the default topology, once (not comparable); no more lines
    than its work queue holds (its bound refuses the rest, and they would never arrive)."""
    receiver = Logbus(SHARED, work, "default")
    bound = next(q.max_length for q in receiver.topology.queues if q.name == receiver.queue)
    lines = min(lines, bound or lines)
    rate, cpu = _measure(receiver, lines)
    print(
        f"logbus ingest, default topology    {rate:>10,.0f} lines/s, {cpu:,.0f} us CPU a line "
        f"({lines:,} lines; not comparable: topic exchange + 3 exchange-to-exchange bindings "
        "+ work queue, non-durable)"
    )


_PRIVATE_ENV = (
    "LOGBUS_PRIVATE_DIR",
    "LOGBUS_PRIVATE_NODE",
    "LOGBUS_PRIVATE_AMQP_PORT",
    "LOGBUS_PRIVATE_AMQPS_PORT",
    "LOGBUS_PRIVATE_MANAGEMENT_PORT",
    "LOGBUS_PRIVATE_DIST_PORT",
)


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def _recoveries(have_syslog_ng: bool, work: Path) -> None:
    """Recovery on a private node of this run's own (never the shared broker): the bench
    brings it up with scripts/private-rabbitmq, stops and starts it, and takes it down
    again if it was not up before."""
    missing = [name for name in _PRIVATE_ENV if not os.environ.get(name)]
    if missing:
        print(
            "recovery: skipped (it stops and starts a broker: set a private node of your own, "
            f"{', '.join(missing)}; see scripts/private-rabbitmq)"
        )
        return
    private = ROOT / "scripts" / "private-rabbitmq"
    port = int(os.environ["LOGBUS_PRIVATE_AMQP_PORT"])
    was_up = _answers(port)
    started = subprocess.run([str(private), "up"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        why = (started.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"recovery: skipped (scripts/private-rabbitmq up failed: {why})")
        return
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    print("# recovery after a broker stop/start (1,000 lines/s), seconds from its start")
    try:
        logbus = Logbus(url, work)
        try:
            print(f"logbus ingest      {recovery(logbus, private):6.1f} s")
        finally:
            logbus.close()
        if have_syslog_ng:
            syslog_ng = SyslogNg(url, work)
            try:
                print(f"syslog-ng amqp()   {recovery(syslog_ng, private):6.1f} s")
            finally:
                syslog_ng.close()
    finally:
        if not was_up:
            subprocess.run([str(private), "down"], capture_output=True, check=False)


if __name__ == "__main__":
    main()
