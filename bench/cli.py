"""The ``logbus`` command line against plain pika, measured in one run on one broker.

Run as ``python bench/cli.py [URL] [--part=abc]`` (default: the local broker, every
part; ``--part=a`` runs only (a), ``--part=bc`` (b) and (c)). Every case is
a real subprocess started with this same Python, so start-up counts for both
sides, and every figure is printed next to its baseline as a ratio:

(a) batch: ``logbus emit`` of 50,000 stdin lines (confirmed, persistent) against
    a plain pika loop publishing the same bodies (the lines as JSON records),
    persistent, without confirms — and against the ceiling: raw pika
    SelectConnection publishing the very messages logbus sends (bodies,
    properties, headers), persistent, with pipelined confirms (window 5,000),
    the most pika gets confirmed of them; and against the broker's own limit: the
    same messages as pre-encoded AMQP frames on a bare socket (no client library,
    no per-message work beyond a fresh message id; pamqp encodes the handshake and
    one header), pipelined confirms (window 5,000). No confirmed publisher beats
    the broker, so broker / pika bounds the first ratio and logbus / broker is the
    honest figure. Medians of 3 rounds.
(b) one record: wall time of ``logbus emit kern.critical ...`` against a minimal
    pika script (connect, publish one persistent message, close), medians of 10
    runs each, with where logbus's time goes.
(c) workers: ``logbus worker --concurrency N --sink jsonl:PATH`` draining 50,000
    records against the tutorial's worker (prefetch 1, ack each, one line
    written and flushed per message). Skipped if ``logbus worker`` is missing.

Each case gets its own durable topology (the default one, renamed under a
random prefix) and deletes it afterwards, with the delay and dead-letter queues
the logbus worker declared for it.

logbus's modules are compiled to bytecode first, as pip compiles pika's (and
logbus's own, in a regular install): an editable install run with
``PYTHONDONTWRITEBYTECODE`` set would otherwise compile logbus from source in
every subprocess, a cost the baselines do not pay.
"""

from __future__ import annotations

import compileall
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pika
from _broker_limit import BROKER

import logbus
from logbus.record import LogRecord
from logbus.testing import prefixed
from logbus.topology import default, dumps
from logbus.worker.retry import RetryPolicy, retry_queues

ARGS = [arg for arg in sys.argv[1:] if not arg.startswith("--part=")]
PARTS = "".join(arg.removeprefix("--part=") for arg in sys.argv[1:] if arg not in ARGS) or "abc"
URL = ARGS[0] if ARGS else "amqp://guest:guest@127.0.0.1:5672/%2F"
COUNT = 50_000
RUNS = 10
ROUNDS = 3
CONCURRENCY = 2
KEY = "user.info"
PY = sys.executable

PLAIN_PIKA = """
import sys, pika
url, exchange, key = sys.argv[1:4]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
props = pika.BasicProperties(delivery_mode=2)
for line in sys.stdin.buffer:
    channel.basic_publish(exchange, key, line.rstrip(b"\\n"), props)
connection.close()
"""

# The same messages logbus sends: the record bodies, with logbus's properties and headers.
CEILING = """
import sys, time, uuid, pika
from pika.adapters.select_connection import SelectConnection
url, exchange, key = sys.argv[1:4]
bodies = [line.rstrip(b"\\n") for line in sys.stdin.buffer]
window, state = 5000, {"sent": 0, "acked": 0}
headers = {"facility": "user", "severity": "info", "host": "bench", "app": "logbus"}

def pump(channel):
    while state["sent"] < len(bodies) and state["sent"] - state["acked"] < window:
        props = pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex,
            timestamp=int(time.time()), app_id="logbus", headers=headers,
        )
        channel.basic_publish(exchange, key, bodies[state["sent"]], props, mandatory=True)
        state["sent"] += 1

def on_confirm(frame):
    state["acked"] = max(state["acked"], frame.method.delivery_tag)
    if state["acked"] >= len(bodies):
        connection.close()
    else:
        pump(channels[0])

channels = []

def on_channel(channel):
    channels.append(channel)
    channel.confirm_delivery(on_confirm, callback=lambda _frame: pump(channel))

connection = SelectConnection(
    pika.URLParameters(url),
    on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
    on_close_callback=lambda c, _reason: c.ioloop.stop(),
)
connection.ioloop.start()
"""

ONE_PIKA = """
import sys, pika
url, exchange, key = sys.argv[1:4]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
props = pika.BasicProperties(delivery_mode=2)
channel.basic_publish(exchange, key, b"disk /dev/sda1 failed", props)
connection.close()
"""

# What a one-record `logbus emit` imports: the command line, settings, topology, the
# emitter and the pika transport.
IMPORTS = """
import os
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as the logbus command sets it
from logbus.cli import build_app
build_app()
import logbus.emitter, logbus.settings, logbus.topology, logbus.transports.amqp.pika_transport
"""

TUTORIAL_WORKER = """
import sys, pika
url, queue, path = sys.argv[1:4]
out = open(path, "ab")
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.basic_qos(prefetch_count=1)

def callback(ch, method, properties, body):
    out.write(body + b"\\n")
    out.flush()
    ch.basic_ack(delivery_tag=method.delivery_tag)

channel.basic_consume(queue=queue, on_message_callback=callback)
try:
    channel.start_consuming()
except KeyboardInterrupt:
    pass
"""


class Case:
    """One case's own topology: written to a TOML file, declared, and deleted at the end."""

    def __init__(self, workdir: Path, channel: pika.adapters.blocking_connection.BlockingChannel):
        self.prefix = f"bench-{secrets.token_hex(4)}."
        self.topology = prefixed(default(), self.prefix)
        self.config = workdir / f"{self.prefix}toml"
        self.config.write_text(dumps(self.topology))
        self.channel = channel
        for e in self.topology.exchanges:
            channel.exchange_declare(e.name, e.type, durable=True)
        for q in self.topology.queues:
            channel.queue_declare(q.name, durable=True, arguments=q.amqp_arguments())
        for b in self.topology.bindings:
            if b.destination_type == "exchange":
                channel.exchange_bind(b.destination, b.source, b.routing_key)
            else:
                channel.queue_bind(b.destination, b.source, b.routing_key)

    @property
    def exchange(self) -> str:
        return self.topology.emit[0].exchange

    @property
    def queue(self) -> str:
        return self.topology.queues[0].name

    def depth(self) -> int:
        """How many records the work queue holds."""
        return int(self.channel.queue_declare(self.queue, passive=True).method.message_count)

    def remove(self) -> None:
        for q in self.topology.queues:
            self.channel.queue_delete(q.name)
            for name in retry_queues(q.name, RetryPolicy()):  # declared by logbus worker
                self.channel.queue_delete(name)
        for e in self.topology.exchanges:
            self.channel.exchange_delete(e.name)


def run(args: Sequence[str], stdin: Path | None = None) -> float:
    """Seconds the command took, start-up included; it must exit 0."""
    started = time.perf_counter()
    with open(stdin or os.devnull, "rb") as source:
        proc = subprocess.run(args, stdin=source, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}... exited {proc.returncode}: {proc.stderr!r}")
    return elapsed


def script(workdir: Path, name: str, text: str) -> str:
    path = workdir / name
    path.write_text(text)
    return str(path)


def batch(workdir: Path, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """(a) 50,000 stdin lines: logbus emit against plain pika and the ceiling."""
    lines = workdir / "lines.txt"
    lines.write_text("".join(f"GET /api/items/{i} 200 {i % 997}ms\n" for i in range(COUNT)))
    # The baselines publish the very bodies logbus publishes: the lines as JSON records.
    bodies = workdir / "bodies.jsonl"
    bodies.write_bytes(
        b"".join(
            LogRecord(facility="user", severity="info", host="bench", message=line).to_bytes()
            + b"\n"
            for line in lines.read_text().splitlines()
        )
    )
    plain = script(workdir, "plain.py", PLAIN_PIKA)
    ceiling = script(workdir, "ceiling.py", CEILING)
    bare = script(workdir, "broker.py", BROKER)
    rates: dict[str, list[float]] = {"pika": [], "ceiling": [], "broker": [], "logbus emit": []}
    stored: dict[str, int] = {}

    def measure(name: str, command: Callable[[Case], list[str]], stdin: Path) -> None:
        case = Case(workdir, channel)
        try:
            rates[name].append(COUNT / run(command(case), stdin=stdin))
            stored[name] = min(stored.get(name, COUNT), case.depth())
        finally:
            case.remove()

    logbus = [PY, "-m", "logbus", "emit", KEY, "--host", "bench", "--url", URL, "--config"]
    for _ in range(ROUNDS):  # interleaved, so drift on the machine hits every case alike
        measure("pika", lambda c: [PY, plain, URL, c.exchange, KEY], bodies)
        measure("ceiling", lambda c: [PY, ceiling, URL, c.exchange, KEY], bodies)
        measure("broker", lambda c: [PY, bare, URL, c.exchange, KEY], bodies)
        measure("logbus emit", lambda c: [*logbus, str(c.config)], lines)
    results = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"# (a) {COUNT:,} stdin lines, persistent, to a durable queue "
        f"(whole process timed, median of {ROUNDS})"
    )
    for name, rate in results.items():
        print(
            f"{name:<12} {rate:>8,.0f} records/s   (at least {stored[name]:,} in the queue after)"
        )
    mine, pika_rate = results["logbus emit"], results["pika"]
    top, limit = results["ceiling"], results["broker"]
    print(
        f"logbus emit / pika (no confirms) = {mine / pika_rate:.2f}x (target >= 0.8x); "
        f"logbus emit / pika ceiling = {mine / top:.2f}x; logbus emit / broker = "
        f"{mine / limit:.2f}x"
    )
    print(
        f"  bound: the broker confirms these persistent messages at {limit / pika_rate:.2f}x "
        "of what pika sends without confirms (bare frames, no client work): no confirmed "
        "publisher does better here; logbus emit / broker is the share of that logbus gets"
    )


def single(workdir: Path, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """(b) one record: logbus emit against a minimal pika script, with a breakdown."""
    one = script(workdir, "one.py", ONE_PIKA)
    case = Case(workdir, channel)
    commands = {
        "logbus emit": [
            *(PY, "-m", "logbus", "emit", "kern.critical", "disk /dev/sda1 failed"),
            *("--url", URL, "--config", str(case.config)),
        ],
        "pika": [PY, one, URL, case.exchange, "kern.critical"],
        "python": [PY, "-c", "pass"],
        "import pika": [PY, "-c", "import pika"],
        "emit --help": [PY, "-m", "logbus", "emit", "--help"],
        # Every module a one-record `logbus emit` imports: all but the broker work.
        "emit imports": [PY, "-c", IMPORTS],
    }
    timings: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for _ in range(RUNS):  # interleaved, so drift on the machine hits every case alike
            for name, command in commands.items():
                timings[name].append(run(command))
    finally:
        case.remove()
    ms = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    print(f"# (b) one record, wall time of the whole process (median of {RUNS})")
    print(f"logbus emit  {ms['logbus emit']:6.0f} ms")
    print(f"pika         {ms['pika']:6.0f} ms")
    print(f"logbus emit / pika = {ms['logbus emit'] / ms['pika']:.2f}x (target <= 1.5x)")
    python, help_, imports = ms["python"], ms["emit --help"], ms["emit imports"]
    print(
        f"  logbus emit = python {python:.0f} + importing what a one-record emit needs "
        f"(typer, settings, topology, emitter, pika) {imports - python:.0f} + connect, "
        f"declare, publish, confirm, close {ms['logbus emit'] - imports:.0f} ms; "
        f"`logbus emit --help` starts in {help_:.0f} ms"
    )
    print(
        f"  pika = python {python:.0f} + import pika {ms['import pika'] - python:.0f} + "
        f"connect, publish, close {ms['pika'] - ms['import pika']:.0f} ms: imports, not the "
        "broker, bound the ratio"
    )


def workers(workdir: Path, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """(c) draining 50,000 records: logbus worker against the tutorial's worker."""
    probe = subprocess.run(
        [PY, "-m", "logbus", "worker", "--help"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        print("# (c) skipped: `logbus worker --help` failed — the worker command is not there yet")
        return
    tutorial = script(workdir, "worker.py", TUTORIAL_WORKER)
    results: dict[str, float] = {}

    def measure(name: str, command: Callable[[Case, Path], list[str]], processes: int = 1) -> None:
        case = Case(workdir, channel)
        outs = [workdir / f"{case.prefix}{i}.jsonl" for i in range(processes)]
        try:
            fill(case)
            started = time.perf_counter()
            procs = [
                subprocess.Popen(
                    command(case, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                for out in outs
            ]
            try:
                results[name] = drained(outs, procs) - started
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait(30)
        finally:
            case.remove()

    def logbus_worker(c: Case, out: Path) -> list[str]:
        return [
            *(PY, "-m", "logbus", "worker", "--queue", c.queue, "--sink", f"jsonl:{out}"),
            *("--concurrency", str(CONCURRENCY), "--url", URL, "--config", str(c.config)),
        ]

    measure("tutorial", lambda c, out: [PY, tutorial, URL, c.queue, str(out)])
    measure("logbus worker", logbus_worker)
    measure("2 logbus workers", logbus_worker, processes=2)
    print(f"# (c) draining {COUNT:,} records into a JSON-lines file (whole process timed)")
    for name, seconds in results.items():
        print(f"{name:<14} {COUNT / seconds:>8,.0f} records/s")
    for mine in ("logbus worker", "2 logbus workers"):
        print(
            f"{mine} (--concurrency {CONCURRENCY}) / tutorial worker (prefetch 1) = "
            f"{results['tutorial'] / results[mine]:.1f}x (target >= 5x)"
        )


def fill(case: Case) -> None:
    """Put COUNT records in the case's work queue through logbus emit (not timed)."""
    lines = b"".join(b"job %d done\n" % i for i in range(COUNT))
    subprocess.run(
        [PY, "-m", "logbus", "emit", KEY, "--url", URL, "--config", str(case.config)],
        input=lines,
        check=True,
        capture_output=True,
    )


def drained(outs: list[Path], procs: list[subprocess.Popen[bytes]]) -> float:
    """When the files together first held COUNT lines (polled every 10 ms, reading only
    what is new)."""
    deadline = time.monotonic() + 300
    lines, offsets = 0, dict.fromkeys(outs, 0)
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a worker exited {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        for out in outs:
            if out.exists():
                with out.open("rb") as f:
                    f.seek(offsets[out])
                    chunk = f.read()
                offsets[out] += len(chunk)
                lines += chunk.count(b"\n")
        if lines >= COUNT:
            return time.perf_counter()
        time.sleep(0.01)
    raise SystemExit(f"{outs} did not reach {COUNT} lines in 300s")


def main() -> None:
    """Run the parts asked for (all three by default) and print their ratios."""
    compileall.compile_dir(Path(logbus.__file__).parent, quiet=1)
    parameters = pika.URLParameters(URL)
    # This control connection sits idle while each subprocess runs, so it never answers
    # heartbeats: without them off, the broker closed it in the middle of part (c).
    parameters.heartbeat = 0
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    try:
        with tempfile.TemporaryDirectory(prefix="logbus-bench-") as tmp:
            workdir = Path(tmp)
            parts = {"a": batch, "b": single, "c": workers}
            for index, part in enumerate(p for p in parts if p in PARTS):
                if index:
                    print()
                parts[part](workdir, channel)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
