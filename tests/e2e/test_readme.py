"""Every code block of README.md runs as written, and prints what the README says it prints.

The README is split into its fenced blocks, and each kind is held to what it shows:

- ``python``: run as a script in a subprocess, once on ``memory://`` and once on the
  shared RabbitMQ, chosen only through ``LOGBUS_URL`` (the snippets name no URL and
  read it through logbus's default settings). The async twins run on RabbitMQ only
  (aio-pika has no in-process transport, as the README says), so on ``memory://``
  they must refuse with that reason. A ``text`` block right after a ``python`` block
  is what the snippet prints, compared line by line.
- ``sh``: every line runs for real, in the order written, in a scratch directory
  (:class:`Shell`), against the shared RabbitMQ. A command that runs until stopped
  (:data:`LONG_RUNNING`) is started and must say it is up; a subscriber must print a
  probe record emitted to it; all of them are stopped with SIGTERM at the end of the
  block, like the terminals of the README's walk-through, and must exit 0. Every
  other line must exit 0 within its timeout.
- ``text`` starting with ``$ logbus ...``: a terminal transcript. The command runs on
  a pseudo-terminal and its screen must match the lines below it, where ``…`` stands
  for whatever changes from run to run.

The two set-up commands at the top (``python3 -m venv .venv && ...``) are the only
lines that do not run: they create the virtualenv this test runs in, and one of them
runs ``scripts/test``, which runs this test. The test checks there are exactly two,
first.

Substitutions (:data:`SUBSTITUTIONS`, the whole table; nothing else in a line changes):

- system directories (``/tmp/``, ``/var/``, ``/etc/``, ``/run/``) are re-rooted under
  the test's directory, where the directories every Linux system has (``/tmp``,
  ``/var/log``, ``/var/lib``, ``/etc``, ``/run``) exist and nothing else does: a test
  may not write to the machine's, and runs of it must not collide;
- the default URL ``amqp://guest:guest@localhost:5672/%2F`` is the test's broker;
- queue names (``--queue NAME``, and ``logbus.*`` entity names in the service files)
  get this test's unique prefix, and ``LOGBUS_CONFIG`` names the default topology under
  that prefix: the shared broker serves other tests at the same time;
- metrics ports are free ports, for the same reason;
- ``journalctl -o cat`` is two fixed lines of text: the test machine's journal may be
  empty, or huge.

The service files the ``sh`` lines name (``config/services/*.toml``) are read through
the same table, and ``events.jsonl`` (which ``logbus emit --json`` reads) is a two-line
file in the scratch directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from logbus.demo import demo_topology
from logbus.durations import parse_duration
from logbus.emitter import Emitter
from logbus.errors import NotFound
from logbus.settings import Settings
from logbus.topology import Binding, Queue, dumps
from logbus.transports import connect
from logbus.worker.retry import RetryPolicy, retry_queues
from tests.e2e.support import Scratch, free_port, on_tty, remove
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's: ``logbus`` and ``python`` are its own

#: The set-up commands that create the venv this test runs in (not run, see above).
SETUP_PREFIX = "python3 -m venv .venv && .venv/bin/pip install -e "

#: Commands that run until stopped, and the line on stderr that says each is up.
LONG_RUNNING = {
    ("logbus", "subscribe"): "logbus: subscribed",
    ("logbus", "worker"): "consuming",
    ("logbus", "broker"): "listening on",
    ("python", "-m"): "consuming",  # python -m services.NAME
}

#: What a subscriber under test is sent, and must print: ``kern.critical`` from host
#: web1, app api matches the selectors the README shows (kern.*, *.critical, --severity
#: critical, --exact kern.critical, --header host=web1 --header app=api, --all); each
#: of the subscriber's own binding keys gets a record too (:func:`probe_keys`).
PROBE = "readme probe"
PROBE_FIELDS = {"host": "web1", "app": "api"}
#: subscribe's options that take no value (every other option is followed by one).
FLAGS = frozenset({"--all", "--json", "--durable", "--no-durable", "--debug", "--from-start"})

JOURNAL = "printf '%s\\n' 'sshd[812]: Accepted publickey for ada' 'CRON[901]: session opened'"
EVENTS = (
    '{"facility": "user", "severity": "info", "message": "signed up", "user": "ada"}\n'
    '{"facility": "auth", "severity": "warning", "message": "failed login", "tries": 3}\n'
)
SYSTEM_DIRS = ("tmp", "var/log", "var/lib", "etc", "run")
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
ENTITIES = "topic|fanout|direct|headers|tasks|archive|alerts"

#: The whole substitution table (what each becomes: :func:`substitute`), applied in one pass.
SUBSTITUTIONS = {
    "dir": r"(?<![\w.-])/(?P<dir>tmp|var|etc|run)/",
    "url": re.escape(DEFAULT_URL),
    "queue": r"(?<=--queue )(?P<queue>[\w.-]+)",
    "entity": rf"(?<![\w.-])(?P<entity>logbus\.(?:{ENTITIES}))(?![\w-])",
    "port": r"(?:(?<=--metrics-port )|(?<=^port = ))\d+",
    "journal": re.escape("journalctl -o cat"),
}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text, and the line of its opening fence."""

    lang: str
    text: str
    line: int

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)", lines[i])
        if opening is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        out.append(Block(opening.group(1), "\n".join(lines[i + 1 : end]) + "\n", i + 1))
        i = end + 1
    return out


BLOCKS = blocks(README.read_text(encoding="utf-8"))
SETUP, RUNNABLE = BLOCKS[:2], BLOCKS[2:]
PYTHON = [b for b in RUNNABLE if b.lang == "python"]
SH = [b for b in RUNNABLE if b.lang == "sh"]
TRANSCRIPTS = [b for b in RUNNABLE if b.lang == "text" and b.text.startswith("$ ")]


def printed_by(block: Block) -> str | None:
    """The output the README shows for a python block: the text block right after it."""
    following = BLOCKS[BLOCKS.index(block) + 1 :]
    if following and following[0].lang == "text" and not following[0].text.startswith("$ "):
        return following[0].text
    return None


def clean_env(**more: str) -> dict[str, str]:
    """This process's environment without LOGBUS_* settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGBUS_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **more}


def substitute(text: str, root: Path, prefix: str, url: str) -> str:
    """``text`` with the substitution table applied (see the module docstring)."""
    pattern = "|".join(f"(?P<_{name}>{regex})" for name, regex in SUBSTITUTIONS.items())

    def replace(m: re.Match[str]) -> str:
        kind = next(name[1:] for name, value in m.groupdict().items() if name[0] == "_" and value)
        if kind == "dir":
            return f"{root}/{m.group('dir')}/"
        if kind == "url":
            return url
        if kind == "queue":
            return prefix + m.group("queue")
        if kind == "entity":
            return prefix + m.group("entity")
        if kind == "port":
            return str(free_port())
        return JOURNAL

    return re.sub(pattern, replace, text, flags=re.MULTILINE)


def test_the_two_setup_commands_come_first_and_are_the_only_ones() -> None:
    """The README opens with exactly two set-up commands, one line each, and no more."""
    assert [b.lang for b in SETUP] == ["sh", "sh"]
    for block in SETUP:
        assert block.text.count("\n") == 1
        assert block.text.startswith(SETUP_PREFIX)
    assert not [b.id for b in RUNNABLE if "python3 -m venv" in b.text]


def test_every_block_says_what_it_is() -> None:
    """Every block is python, sh or text, and every text block is a transcript or the
    output of the python block before it: none escapes this test unrun."""
    for block in RUNNABLE:
        assert block.lang in ("python", "sh", "text"), f"README line {block.line}: ```{block.lang}"
        if block.lang == "text" and block not in TRANSCRIPTS:
            previous = BLOCKS[BLOCKS.index(block) - 1]
            assert previous.lang == "python", f"README line {block.line}: whose output is this?"


@pytest.fixture
def scratch(amqp_url: str, tmp_path: Path, unique_name: str) -> Iterator[Scratch]:
    """The default topology under this test's prefix, its history stream included (the
    README's History section reads it; the e2e conftest's scratch has none); removed after."""
    prefix = f"{unique_name}-"
    base = demo_topology(prefix)
    history = Queue(name=f"{prefix}logbus.history", queue_type="stream", max_age="1D")
    feed = Binding(source=f"{prefix}logbus.topic", destination=history.name, routing_key="#")
    topology = dataclasses.replace(
        base, queues=(*base.queues, history), bindings=(*base.bindings, feed)
    )
    path = tmp_path / "logbus.toml"
    path.write_text(dumps(topology))
    yield Scratch(path, topology, {"LOGBUS_URL": amqp_url, "LOGBUS_CONFIG": str(path)})
    remove(amqp_url, topology)


@pytest.fixture(params=["memory", "rabbitmq"])
def python_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a python block runs in: LOGBUS_URL on memory:// or on RabbitMQ
    (with this test's own topology, so that the shared broker's other users see nothing)."""
    if request.param == "memory":
        return clean_env(LOGBUS_URL="memory://")
    scratch: Scratch = request.getfixturevalue("scratch")
    return clean_env(**scratch.env)


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs_and_prints_what_the_readme_shows(
    block: Block, python_env: dict[str, str], tmp_path: Path
) -> None:
    """A python snippet exits 0 and prints the README's output (async ones need RabbitMQ)."""
    script = tmp_path / "example.py"
    script.write_text(block.text)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=python_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if "Async" in block.text and python_env["LOGBUS_URL"] == "memory://":
        assert done.returncode == 1
        assert "needs amqp:// or amqps:// URLs, not 'memory://'" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    expected = printed_by(block)
    assert expected is not None, f"README line {block.line}: show what the snippet prints"
    assert done.stdout == expected


def matches(sample: str, screen: str) -> bool:
    """Whether a screen's lines are the sample's, ``…`` standing for any text in a line."""
    want = sample.rstrip("\n").splitlines()
    got = re.sub(r"\x1b\[[0-9;]*m|\r", "", screen).rstrip("\n").splitlines()
    if len(want) != len(got):
        return False
    for pattern, line in zip(want, got, strict=True):
        regex = ".*?".join(re.escape(part) for part in pattern.rstrip().split("…"))
        if re.fullmatch(regex, line.rstrip()) is None:
            return False
    return True


@pytest.mark.parametrize("block", TRANSCRIPTS, ids=[b.id for b in TRANSCRIPTS])
def test_transcript_shows_what_the_command_prints_on_a_terminal(
    block: Block, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``$ logbus ...`` transcript is what that command prints on a terminal."""
    for name in [n for n in os.environ if n.startswith("LOGBUS_")]:
        monkeypatch.delenv(name)  # the transcript shows the defaults
    command, _, sample = block.text.partition("\n")
    args = shlex.split(command.removeprefix("$ "))
    assert args[0] == "logbus", "transcripts show logbus commands"
    code, screen = on_tty(args[1:], clean_env())
    assert code == 0
    assert matches(sample, screen), f"README line {block.line} shows:\n{sample}\ngot:\n{screen}"


class Background:
    """A long-running command of a block: its output collected line by line."""

    def __init__(self, line: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.line = line
        self.proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()
        self.marker = LONG_RUNNING[(argv[0], argv[1])]
        self.subscriber = argv[:2] == ["logbus", "subscribe"]
        self.ends_by_itself = self.subscriber and "--count" in argv

    @staticmethod
    def _collect(stream: IO[str], lines: list[str]) -> None:
        for text in stream:
            lines.append(text.rstrip("\n"))

    def up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.line!r} exited {self.proc.returncode}: {self.err}")
        return any(self.marker in text for text in self.err)

    def printed(self, text: str) -> bool:
        return any(text in out for out in self.out)

    def stop(self) -> None:
        """SIGTERM to the command (the head of a pipeline: the rest then sees its end)."""
        if self.proc.poll() is None:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            os.kill(int(pids[0]) if pids else self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


@dataclass
class Shell:
    """Runs a block's lines as an operator would in a terminal session: in a scratch
    directory laid out like the checkout (``services/`` linked, ``config/`` read
    through the substitution table), with LOGBUS_URL and LOGBUS_CONFIG set, and
    ``export NAME=VALUE`` lines kept for the lines after them."""

    root: Path
    prefix: str
    url: str
    env: dict[str, str]
    background: list[Background] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    @property
    def cwd(self) -> Path:
        return self.root / "work"

    def prepare(self) -> None:
        for name in SYSTEM_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir()
        (self.cwd / "services").symlink_to(ROOT / "services")
        (self.cwd / "events.jsonl").write_text(EVENTS)
        for source in (ROOT / "config").rglob("*.toml"):
            target = self.cwd / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(substitute(source.read_text(), self.root, self.prefix, self.url))

    def run(self, written: str) -> None:
        line = substitute(written, self.root, self.prefix, self.url)
        words = shlex.split(line, comments=True)
        assignments = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            assignments[name] = value
        if not words:
            return
        if words[0] == "export":
            for word in words[1:]:
                name, _, value = word.partition("=")
                self.env[name] = value
            return
        env = {**self.env, **assignments}
        for program in programs(words):
            if shutil.which(program, path=env["PATH"]) is None:
                pytest.fail(f"{program} is not installed: README line {written!r} needs it")
        self._remember_queues(words)
        if tuple(words[:2]) in LONG_RUNNING:
            self._start(written, line, words, env)
            return
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{written!r} exited {done.returncode}: {done.stderr}"

    def _start(self, written: str, line: str, words: list[str], env: dict[str, str]) -> None:
        running = Background(line, words, env, self.cwd)
        self.background.append(running)
        wait_until(running.up, 30, f"{written!r} to say {running.marker!r} ({running.err})")
        if running.subscriber:
            with Emitter(env["LOGBUS_URL"], settings=Settings(**settings_of(env))) as emitter:
                for key in probe_keys(words):
                    emitter.emit(key, PROBE, **PROBE_FIELDS)
        if running.ends_by_itself:
            assert running.proc.wait(30) == 0, f"{written!r}: {running.err}"
            assert running.printed(PROBE), f"{written!r} printed {running.out}"

    def _remember_queues(self, words: list[str]) -> None:
        """Queues the line may make that the scratch topology does not hold, to delete."""
        named = words[words.index("--queue") + 1] if "--queue" in words else None
        if named is not None:
            self.queues.append(named)
        if words[:2] == ["logbus", "worker"]:  # its delay and dead-letter queues
            queue = named or self.prefix + "logbus.tasks"
            self.queues += retry_queues(queue, RetryPolicy())
        if words[:2] == ["python", "-m"] and "--config" in words:
            config = self.cwd / words[words.index("--config") + 1]
            service = tomllib.loads(config.read_text())
            queue, retry = service["queue"]["name"], service.get("retry", {})
            default = RetryPolicy()
            policy = RetryPolicy(
                max_attempts=retry.get("max_attempts", default.max_attempts),
                delay=parse_duration(retry.get("delay", "1s"), what="delay"),
                backoff=retry.get("backoff", default.backoff),
                max_delay=parse_duration(retry.get("max_delay", "5m"), what="max_delay"),
            )
            self.queues += [queue, *retry_queues(queue, policy)]

    def close(self) -> None:
        """Stop what still runs, last started first; each must exit 0 (subscribers having
        printed the probe)."""
        problems = []
        for running in reversed(self.background):
            running.stop()
            if running.proc.returncode != 0:
                problems.append(f"{running.line!r} exited {running.proc.returncode}")
            elif running.subscriber and not running.printed(PROBE):
                problems.append(f"{running.line!r} did not print the probe: {running.out}")
        assert not problems, problems


def programs(words: list[str]) -> list[str]:
    """The programs a line runs: its first word and the first after each ``|``."""
    return [words[0], *(words[i + 1] for i, w in enumerate(words[:-1]) if w == "|")]


def probe_keys(words: list[str]) -> list[str]:
    """``kern.critical``, and a key each of a subscribe command's binding keys matches
    (``*`` and ``#`` made words: ``auth.#`` gets ``auth.critical``)."""
    keys = ["kern.critical"]
    args = iter(words[2:])
    for word in args:
        if word in ("|", "&&", "||", ";", "<", ">"):  # the rest of a pipeline or list
            break
        if word.startswith("-"):
            if word not in FLAGS and "=" not in word:
                next(args, None)  # the option's value
            continue
        parts = word.split(".")
        wild = [("kern" if i == 0 else "critical") for i in range(len(parts))]
        keys.append(".".join(w if p in ("*", "#") else p for p, w in zip(parts, wild, strict=True)))
    return list(dict.fromkeys(keys))


def settings_of(env: dict[str, str]) -> dict[str, Any]:
    """Settings from an environment's LOGBUS_URL and LOGBUS_CONFIG."""
    return {"url": env["LOGBUS_URL"], "config": env.get("LOGBUS_CONFIG")}


@pytest.fixture
def shell(tmp_path: Path, scratch: Scratch, amqp_url: str) -> Iterator[Shell]:
    """A shell for one block; afterwards what it left running is killed and what it
    declared outside the scratch topology is deleted."""
    prefix = scratch.topology.queues[0].name.removesuffix("logbus.tasks")
    sh = Shell(tmp_path, prefix, amqp_url, clean_env(**scratch.env))
    sh.prepare()
    yield sh
    for running in sh.background:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(30)
    with connect(amqp_url) as transport:
        for queue in sh.queues:
            with contextlib.suppress(NotFound):
                transport.delete_queue(queue)


@pytest.mark.parametrize("block", SH, ids=[b.id for b in SH])
def test_sh_block_runs_as_written(block: Block, shell: Shell) -> None:
    """Every line of a sh block runs: short commands exit 0, long-running ones come up
    (subscribers print what is emitted to them) and stop with exit 0 on SIGTERM."""
    for line in block.text.splitlines():
        shell.run(line)
    shell.close()
