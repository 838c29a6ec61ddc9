"""Running the tutorial peers, rabbitmq-c's amqp-publish and the logbus command side by side.

A test asks :class:`Peers` for processes: consumers print one JSON line per delivery
(``--json``: exchange, routing key, body in base64) and say " [*] Waiting" once bound;
publishers take exact bodies (``--body-b64``). Every process writes to files under the
test's directory, so a test can wait on what a process printed (with a deadline) while
it runs, and read it all after. :data:`PUBLISH` says how each tutorial style publishes
one body under one key, so a new case is one more row of parameters in a test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from tests.support import require_or_skip, wait_until

TUTORIALS = Path(__file__).resolve().parent / "tutorials"
CONFIG = Path(__file__).resolve().parents[2] / "config" / "tutorial.toml"
LANGS = ("python", "node")

#: Tutorial style -> (publisher program, whether its first word is the routing key).
PUBLISH = {
    "fanout": ("emit_log", False),  # exchange logs; the key is ignored by the exchange
    "direct": ("emit_log_direct", True),  # exchange direct_logs; the key is a severity
    "topic": ("emit_log_topic", True),  # exchange topic_logs
    "work": ("new_task", False),  # the default exchange, queue task_queue
}
#: Tutorial style -> the exchange it publishes to ("" is the default exchange).
EXCHANGE = {"fanout": "logs", "direct": "direct_logs", "topic": "topic_logs", "work": ""}


def program(lang: str, name: str) -> list[str]:
    """The command line that runs tutorial program ``name`` in ``lang``."""
    if lang == "python":
        return [sys.executable, str(TUTORIALS / "python" / f"{name}.py")]
    require_node()
    return ["node", str(TUTORIALS / "node" / f"{name}.js")]


def require_node() -> None:
    """Skip (fail under LOGBUS_REQUIRE_BROKER=1) unless node and amqplib are installed."""
    if shutil.which("node") is None:
        require_or_skip("node is not installed (scripts/ensure-peers says how)")
    if not (TUTORIALS / "node" / "node_modules" / "amqplib").is_dir():
        require_or_skip("amqplib is not installed for the node peers: run scripts/ensure-peers")


@dataclass(frozen=True)
class Received:
    """One delivery as a tutorial consumer printed it."""

    exchange: str
    routing_key: str
    body: bytes
    redelivered: bool


class Running:
    """A process started in the background, its stdout and stderr going to files."""

    def __init__(self, argv: Sequence[str], directory: Path, name: str) -> None:
        self.name = name
        self.stdout = directory / f"{name}.out"
        self.stderr = directory / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for(self, text: str, *, stderr: bool = False, timeout: float = 30) -> None:
        """Wait until the process printed ``text``; fail (with its output) if it exits first."""

        def printed() -> bool:
            if text in (self.err() if stderr else self.out()):
                return True
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.process.returncode}: {self.err()}")
            return False

        wait_until(printed, timeout, f"{self.name} to print {text!r}")

    def received(self) -> list[Received]:
        """The deliveries printed so far (the ``--json`` lines of a tutorial consumer)."""
        out = []
        for line in self.out().splitlines():
            if line.startswith("{"):
                data = json.loads(line)
                body = base64.b64decode(data["body_b64"])
                out.append(
                    Received(data["exchange"], data["routing_key"], body, data["redelivered"])
                )
        return out

    def finish(self, timeout: float = 30) -> int:
        """Wait for the process to exit by itself; its exit status."""
        return self.process.wait(timeout)

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C (SIGINT), then wait for the exit; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Peers:
    """The processes of one test, on one broker URL (a throwaway vhost); all killed after."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self.running: list[Running] = []

    def start(self, argv: Sequence[str], name: str) -> Running:
        """Start ``argv`` in the background, as ``name`` (its output files' name)."""
        proc = Running(argv, self.directory, f"{len(self.running)}-{name}")
        self.running.append(proc)
        return proc

    def consumer(self, lang: str, name: str, *args: str, count: int | None = None) -> Running:
        """Start tutorial consumer ``name`` (``--json``, stopping after ``count`` messages
        or 60 s) and wait until it says it is bound."""
        limit = ["--count", str(count)] if count is not None else []
        argv = [*program(lang, name), "--url", self.url, "--json", "--timeout", "60", *limit]
        proc = self.start([*argv, *args], f"{lang}-{name}")
        proc.wait_for(" [*] Waiting")
        return proc

    def publish(
        self, lang: str, style: str, bodies: Sequence[bytes], key: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Publish ``bodies`` in order with tutorial ``style``'s publisher in ``lang``."""
        name, keyed = PUBLISH[style]
        encoded = [a for b in bodies for a in ("--body-b64", base64.b64encode(b).decode())]
        argv = [*program(lang, name), "--url", self.url, *encoded, *([key] if keyed else [])]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{name} ({lang}) exited {done.returncode}: {done.stderr}"
        return done

    def amqp_publish(self, style: str, body: bytes, key: str = "") -> None:
        """Publish one body with rabbitmq-c's amqp-publish, as the tutorial ``style`` does."""
        if shutil.which("amqp-publish") is None:
            require_or_skip("amqp-publish is not installed (scripts/ensure-packages)")
        routing_key = "task_queue" if style == "work" else key
        argv = ["amqp-publish", "--url", self.url, "-e", EXCHANGE[style], "-r", routing_key]
        argv += ["-p"] if style == "work" else []
        done = subprocess.run(argv, input=body, capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, f"amqp-publish exited {done.returncode}: {done.stderr!r}"

    def logbus(self, *args: str, name: str = "logbus") -> Running:
        """Start ``logbus ARGS --url URL --config config/tutorial.toml`` in the background."""
        argv = [sys.executable, "-m", "logbus", *args, "--url", self.url, "--config", str(CONFIG)]
        return self.start(argv, name)

    def run_logbus(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``logbus ARGS --url URL --config config/tutorial.toml`` to the end."""
        argv = [sys.executable, "-m", "logbus", *args, "--url", self.url, "--config", str(CONFIG)]
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    def close(self) -> None:
        for proc in reversed(self.running):
            proc.kill()


def lines_of(path: Path) -> Iterator[dict[str, object]]:
    """The JSON objects of a JSON-lines file (none if it does not exist yet)."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if line.strip():
            yield json.loads(line)


def throwaway_vhost(amqp_url: str, name: str) -> Iterator[str]:
    """A new vhost ``name`` on the broker of ``amqp_url`` (a URL to it is yielded), deleted
    after: the tutorials use fixed names (logs, task_queue), which must not meet other
    tests' or deployments' entities. Made with rabbitmqctl, so only on this machine's
    broker on 5672; elsewhere the test skips (fails under LOGBUS_REQUIRE_BROKER=1)."""
    parts = urlsplit(amqp_url)
    local = parts.hostname in ("127.0.0.1", "localhost") and (parts.port or 5672) == 5672
    if not local or shutil.which("rabbitmqctl") is None:
        require_or_skip("a throwaway vhost needs rabbitmqctl and the broker on 127.0.0.1:5672")
    user = unquote(parts.username or "guest")
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(name, safe="")))
    finally:
        _ctl("delete_vhost", name)


def _ctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}"
