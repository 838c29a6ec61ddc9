"""The application thread's ``logger.info`` through ``LogbusHandler`` while the broker restarts.

Run as ``python bench/handler.py`` with the private node's environment
(``LOGBUS_PRIVATE_*``, see ``scripts/private-rabbitmq``): the outage is a real
stop and start of that node, never of the shared broker.

A plain Python program (below, run in a subprocess per case) logs 100,000 lines in
three phases and times every ``logger.info`` call with ``perf_counter_ns``: 10,000
lines, then 60,000 during which the broker is stopped and started again, then
30,000 with the broker back (the fault test's scenario, tests/integration/
test_integrations_faults.py). Cases, all in this run, on this machine:

  null          baseline: logging.NullHandler (the cost of a logging call that goes nowhere)
  stream        baseline: logging.StreamHandler writing to /dev/null (formats, writes)
  logbus-drop   LogbusHandler, policy "drop" (default buffer), through the restart
  logbus-block  LogbusHandler, policy "block" (default buffer), through the restart: the
                caller waits while the buffer is full, by design, so its tail is the outage

Printed: p50/p99/max per case, over every call and over the outage phase alone, and
the ratios of logbus-drop to the baselines. Target: logbus-drop's p99 <= 1 ms.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "private-rabbitmq"

PROGRAM = r"""
import json, logging, os, sys, time
from array import array

case, out, url, topology = sys.argv[1:5]
PHASES = ((0, 10_000), (10_000, 70_000), (70_000, 100_000))
if case == "null":
    handler = logging.NullHandler()
elif case == "stream":
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
else:
    from logbus.integrations import LogbusHandler
    policy = case.split("-")[1]
    handler = LogbusHandler(
        url, topology=topology, policy=policy, block_timeout=300, flush_timeout=120
    )
root = logging.getLogger()
root.addHandler(handler)
root.setLevel(logging.INFO)
log = logging.getLogger("bench.app")
clock = time.perf_counter_ns
took = array("q")
log.info("warm-up")
for phase, (start, end) in enumerate(PHASES):
    for n in range(start, end):
        t0 = clock()
        log.info("line %d of the bench", n, extra={"n": n})
        took.append(clock() - t0)
    if phase < 2:
        print("phase", phase, flush=True)
        sys.stdin.readline()
with open(out, "wb") as f:
    took.tofile(f)
handler.close()
print(json.dumps({k: getattr(handler, k, None) for k in ("sent", "dropped", "failed")}), flush=True)
"""


def script(*args: str) -> str:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=True)
    return done.stdout


def percentile(sorted_ns: list[int], q: float) -> float:
    """The q-quantile of sorted nanoseconds, in milliseconds (nearest rank)."""
    index = min(len(sorted_ns) - 1, max(0, round(q * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1e6


def run_case(case: str, url: str, topology: Path, outage: bool) -> tuple[array[int], str]:
    """Run the program for ``case``; its per-call nanoseconds and its last line."""
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as out:
        out_path = Path(out.name)
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, case, str(out_path), url, str(topology)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("phase 0")
        if outage:
            script("stop")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if outage:
            script("start")
        assert proc.stdout.readline().startswith("phase 1")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        last = proc.stdout.readline().strip()
        proc.wait(300)
        took: array[int] = array("q")
        took.frombytes(out_path.read_bytes())
        return took, last
    finally:
        if proc.poll() is None:
            proc.kill()
        out_path.unlink(missing_ok=True)
        if outage:
            script("start")


def main() -> None:
    """Run the baselines and the handler through a restart; print figures and ratios."""
    from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, dumps

    if "LOGBUS_PRIVATE_AMQP_PORT" not in os.environ:
        sys.exit("set the private node's LOGBUS_PRIVATE_* variables (scripts/private-rabbitmq)")
    script("up")
    env = dict(line.split("=", 1) for line in script("env").splitlines() if "=" in line)
    url = env["LOGBUS_PRIVATE_URL"]
    name = f"bench-handler-{secrets.token_hex(4)}"
    topology = Path(tempfile.mkdtemp()) / "topology.toml"
    exchange = f"{name}.topic"
    own = Topology(
        exchanges=(Exchange(name=exchange, type="topic"),),
        queues=(Queue(name=name),),
        bindings=(Binding(source=exchange, destination=name, routing_key="#"),),
        emit=(EmitTarget(exchange=exchange),),
    )
    topology.write_text(dumps(own))
    figures: dict[str, tuple[float, float, float, float]] = {}
    print("# logger.info latency (ms): 100,000 calls, 60,000 of them while the broker restarts")
    try:
        for case, outage in (
            ("null", False),
            ("stream", False),
            ("logbus-drop", True),
            ("logbus-block", True),
        ):
            took, last = run_case(case, url, topology, outage)
            every = sorted(took)
            during = sorted(took[10_000:70_000])
            figures[case] = (
                percentile(every, 0.50),
                percentile(every, 0.99),
                every[-1] / 1e6,
                percentile(during, 0.99),
            )
            p50, p99, top, p99_out = figures[case]
            print(
                f"{case:<13} p50 {p50:8.4f}  p99 {p99:8.4f}  max {top:9.2f}  "
                f"p99 during the outage {p99_out:8.4f}  {last}"
            )
    finally:
        _delete(url, name)
    drop = figures["logbus-drop"]
    for base in ("null", "stream"):
        b = figures[base]
        print(
            f"logbus-drop / {base}: p50 {drop[0] / b[0]:.1f}x, p99 {drop[1] / b[1]:.1f}x, "
            f"p99 during the outage {drop[3] / b[3]:.1f}x"
        )
    verdict = "met" if drop[1] <= 1.0 else "NOT met"
    print(f"logbus-drop p99 = {drop[1]:.4f} ms (target <= 1 ms: {verdict})")


def _delete(url: str, name: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(f"{name}.topic")
    finally:
        connection.close()


if __name__ == "__main__":
    main()
