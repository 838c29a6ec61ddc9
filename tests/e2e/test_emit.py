"""``logbus emit`` end to end: real subprocesses against the real RabbitMQ.

Every test gets a topology of its own (the default one, renamed under a unique
prefix, written to a TOML file passed as ``--config``), declared before the
test and deleted after it, so tests never see each other's records.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pika
import pytest

from tests.e2e.support import DEAD_URL, connection_args, emit, one_error_line


def test_one_record_is_confirmed_and_lands_in_the_work_queue(amqp_url, deployment):
    """`logbus emit KEY MESSAGE` exits 0 and the record is in the work queue."""
    proc = emit(amqp_url, deployment, "kern.crit", "disk", "/dev/sda1", "failed", "--host", "w1")
    assert proc.returncode == 0, proc.stderr
    [(_props, body)] = deployment.drain()
    record = json.loads(body)
    assert record["message"] == "disk /dev/sda1 failed"
    assert (record["facility"], record["severity"], record["host"]) == ("kern", "critical", "w1")


def test_fields_are_strings_unless_given_as_json(amqp_url, deployment):
    """--field k=v stores the string v; --field k:=JSON stores the JSON value."""
    proc = emit(
        amqp_url,
        deployment,
        "auth.warning",
        "failed login",
        *("--field", "user=root", "--field", "tries:=3", "--field", "port=22"),
    )
    assert proc.returncode == 0, proc.stderr
    [(_props, body)] = deployment.drain()
    assert json.loads(body)["fields"] == {"user": "root", "tries": 3, "port": "22"}


def test_a_bad_routing_key_exits_65_and_sends_nothing(amqp_url, deployment):
    """A key that is not facility.severity is bad input: exit 65, one line, nothing sent."""
    proc = emit(amqp_url, deployment, "kern critical", "disk failed")
    assert proc.returncode == 65
    assert "routing key 'kern critical'" in one_error_line(proc.stderr)
    assert deployment.depth() == 0


def test_a_bad_json_line_exits_65_naming_its_line_and_sends_nothing(amqp_url, deployment):
    """A batch with a bad JSON line is refused whole; stderr names stdin's line 3."""
    lines = '{"message": "one"}\n{"message": "two"}\n{"message": oops}\n{"message": "four"}\n'
    proc = emit(amqp_url, deployment, "user.info", "--json", stdin=lines)
    assert proc.returncode == 65
    error = one_error_line(proc.stderr)
    assert "<stdin>:3: not valid JSON" in error
    assert error.endswith("nothing was sent")
    assert deployment.depth() == 0


def test_a_bad_line_after_the_first_chunk_sends_the_chunks_before_it(amqp_url, deployment):
    """In a batch over 5,000 lines, the chunks before a bad line are sent and said so."""
    lines = [json.dumps({"message": f"m{i}"}) for i in range(6000)]
    lines[5002] = "{oops"  # line 5003, in the second chunk (lines 5001-6000)
    proc = emit(amqp_url, deployment, "user.info", "--json", stdin="\n".join(lines) + "\n")
    assert proc.returncode == 65
    error = one_error_line(proc.stderr)
    assert "<stdin>:5003: not valid JSON" in error
    assert "the 5000 records before line 5001 were sent and confirmed" in error
    assert deployment.depth() == 5000


def test_json_lines_carry_their_own_keys_and_fall_back_to_the_positional_one(amqp_url, deployment):
    """--json lines may name facility/severity; others use KEY; unknown keys go to fields."""
    lines = (
        '{"facility": "mail", "severity": "err", "message": "bounce", "queue_id": "A1"}\n'
        '{"message": "plain", "fields": {"n": 2}}\n'
    )
    proc = emit(amqp_url, deployment, "user.notice", "--json", stdin=lines)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(body) for _props, body in deployment.drain()]
    assert [(r["facility"], r["severity"], r["message"], r["fields"]) for r in records] == [
        ("mail", "error", "bounce", {"queue_id": "A1"}),
        ("user", "notice", "plain", {"n": 2}),
    ]


def test_an_unreachable_broker_exits_69_naming_the_host_not_the_password(deployment):
    """A dead port is one line with the host and what to check; the password stays hidden."""
    proc = emit(DEAD_URL, deployment, "kern.critical", "disk failed")
    assert proc.returncode == 69
    error = one_error_line(proc.stderr)
    assert "127.0.0.1:1" in error
    assert "RabbitMQ is running" in error
    assert "not-this-s3cret" not in proc.stderr


def test_a_full_work_queue_exits_75_counting_the_unconfirmed_records(amqp_url, deploy):
    """At x-max-length with reject-publish the broker nacks: exit 75, '15 of 20 records'."""
    bounded = deploy(max_length=5)
    lines = "".join(f"line {i}\n" for i in range(20))
    proc = emit(amqp_url, bounded, "user.info", stdin=lines)
    assert proc.returncode == 75
    assert "15 of 20 records not confirmed" in one_error_line(proc.stderr)
    assert bounded.depth() == 5


def test_no_routing_key_is_a_usage_error(amqp_url, deployment):
    """Without FACILITY.SEVERITY (and without --json) emit exits 2 with one line naming --help."""
    proc = emit(amqp_url, deployment)
    assert proc.returncode == 2
    assert proc.stderr.startswith("logbus emit: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, naming --help
    assert "logbus emit --help" in proc.stderr
    assert "routing key" in proc.stderr


def test_a_stdin_batch_of_1000_lines_all_arrive(amqp_url, deployment):
    """1,000 stdin lines become 1,000 records in the work queue, each line once."""
    lines = [f"request {i} served in {i % 17}ms" for i in range(1000)]
    proc = emit(amqp_url, deployment, "local0.info", stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    messages = sorted(json.loads(body)["message"] for _props, body in deployment.drain())
    assert messages == sorted(lines)


def test_a_plain_pika_consumer_gets_the_documented_properties(amqp_url, deployment):
    """A tutorial-style consumer sees JSON, persistent, ids, timestamp, app_id, headers."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    channel.queue_bind(
        exchange=deployment.name("logbus.topic"), queue=queue_name, routing_key="kern.*"
    )
    received: list[tuple[Any, Any, bytes]] = []

    def callback(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        received.append((method, properties, body))

    channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)
    before = int(time.time())
    proc = emit(amqp_url, deployment, "kern.critical", "disk failed", "--app", "smartd")
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    connection.close()
    [(method, props, body)] = received
    record = json.loads(body)
    assert method.routing_key == "kern.critical"
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2
    assert props.message_id == record["id"]
    assert before - 1 <= props.timestamp <= time.time() + 1
    assert props.app_id == "logbus"
    assert props.headers == {
        "facility": "kern",
        "severity": "critical",
        "host": record["host"],
        "app": "smartd",
    }


def test_queue_publishes_to_a_durable_work_queue_like_new_task(amqp_url, deployment, admin):
    """--queue NAME declares NAME durable and a prefetch-1 tutorial worker gets the record."""
    name = deployment.name("task_queue")
    deployment.extra_queues.append(name)
    proc = emit(amqp_url, deployment, "user.info", "--queue", name, "resize photo 42")
    assert proc.returncode == 0, proc.stderr
    admin.queue_declare(queue=name, durable=True)  # refused (406) were it not durable
    admin.basic_qos(prefetch_count=1)
    method, props, body = admin.basic_get(queue=name)
    admin.basic_ack(delivery_tag=method.delivery_tag)
    assert json.loads(body)["message"] == "resize photo 42"
    assert props.delivery_mode == 2
    assert deployment.depth() == 0  # straight to NAME, not through the topic exchange


def test_an_exchange_that_does_not_exist_exits_78(amqp_url, deployment):
    """--exchange naming no exchange is a configuration error, said in one line."""
    proc = emit(amqp_url, deployment, "kern.info", "x", "--exchange", deployment.name("nope"))
    assert proc.returncode == 78
    assert "does not exist" in one_error_line(proc.stderr)


@pytest.mark.parametrize("command", ["emit", "subscribe"])
def test_help_starts_without_importing_pika_or_records(command):
    """`logbus emit|subscribe --help` import neither pika nor the record and transport modules."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "logbus", command, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    assert "Examples:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    heavy = {"pika", "logbus.record", "logbus.transports", "logbus.emitter", "logbus.subscriber"}
    assert not heavy & imported


# -- one record: one pipeline, light to start -----------------------------------------

#: Packages a one-record ``logbus emit`` has no use for (the async client, tables, the
#: settings library).
NOT_NEEDED = {"aio_pika", "aiormq", "rich", "gevent", "pydantic_settings"}


def run_emit(args: list[str], env: dict[str, str] | None = None) -> tuple[Any, set[str]]:
    """``logbus emit ARGS`` in a subprocess; the completed process (stderr without the
    import timings) and the top-level modules it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "logbus", "emit", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
        check=False,
    )  # fmt: skip
    timings = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in timings}
    proc.stderr = "".join(
        line
        for line in proc.stderr.splitlines(keepends=True)
        if not line.startswith("import time:")
    )
    return proc, imported


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{password}@{host}"


def test_importing_the_command_line_imports_no_typer() -> None:
    """`import logbus.cli` is cheap: the typer app is built only when it is needed."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import logbus.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "logbus.cli" in imported
    assert not {"typer", "pydantic", "pika"} & imported


def test_one_record_imports_nothing_it_does_not_need(amqp_url, deployment):
    """`logbus emit KEY MESSAGE` with plain options publishes once and leaves the async
    client, rich and gevent unimported."""
    args = ["kern.crit", "disk", "failed", "--host", "w1", "--pid", "7", "--field", "n:=[1]"]
    proc, imported = run_emit([*args, *connection_args(amqp_url, deployment)])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not NOT_NEEDED & imported
    records = [json.loads(body) for _props, body in deployment.drain()]
    fields = [(r["facility"], r["severity"], r["host"], r["pid"], r["message"], r["fields"])
              for r in records]  # fmt: skip
    assert fields == [("kern", "critical", "w1", 7, "disk failed", {"n": [1]})]


def test_one_record_reaches_every_emit_target(amqp_url, deployment, tmp_path, admin):
    """A second target (the tutorial's direct exchange keyed by severity) gets the record too."""
    severity = deployment.name("severity")
    critical = deployment.name("critical")
    deployment.extra_queues.append(critical)
    config = tmp_path / "two.toml"
    config.write_text(
        deployment.config.read_text()
        + f'\n[[exchanges]]\nname = "{severity}"\ntype = "direct"\ndurable = false\n'
        + f'auto_delete = true\n\n[[queues]]\nname = "{critical}"\ndurable = false\n\n'
        + f'[[bindings]]\nsource = "{severity}"\ndestination = "{critical}"\n'
        + 'routing_key = "critical"\n\n'
        + f'[[emit]]\nexchange = "{severity}"\nkey = "{{severity}}"\n'
    )
    try:
        proc, _imported = run_emit(
            ["kern.crit", "disk", "--url", amqp_url, "--config", str(config)]
        )
    finally:
        admin.exchange_delete(severity)
    assert (proc.returncode, proc.stderr) == (0, "")
    by_severity = [body for _props, body in deployment.drain(critical)]
    by_topic = [body for _props, body in deployment.drain()]
    assert len(by_severity) == 1 and by_severity == by_topic
    assert json.loads(by_topic[0])["message"] == "disk"


@pytest.mark.parametrize(
    "case", ["refused", "unresolved", "password", "vhost", "nack", "unroutable"]
)
def test_a_failed_publish_is_one_line_and_its_status(case, amqp_url, deploy, tmp_path, admin):
    """Unreachable, unknown host, refused login or vhost, nack, return: one line, no
    password, 69 / 77 / 75."""
    deployment = deploy(max_length=0) if case == "nack" else deploy()
    url = {
        "refused": DEAD_URL,
        "unresolved": "amqp://guest:guest@no-such-host.invalid:5672/%2F",
        "password": with_password(amqp_url, "not-this-s3cret"),
        "vhost": amqp_url.rsplit("/", 1)[0] + "/no-such-vhost",
    }.get(case, amqp_url)
    config = deployment.config
    if case == "unroutable":
        lonely = deployment.name("lonely")
        config = tmp_path / "lonely.toml"
        config.write_text(
            f'[[exchanges]]\nname = "{lonely}"\ntype = "topic"\ndurable = false\n'
            f'auto_delete = true\n\n[[emit]]\nexchange = "{lonely}"\n'
        )
    try:
        proc, _imported = run_emit(["kern.info", "x", "--url", url, "--config", str(config)])
    finally:
        if case == "unroutable":  # an auto-delete exchange that never had a binding stays
            admin.exchange_delete(deployment.name("lonely"))
    # A refused login or vhost is permission denied (77): trying later will not help.
    expected = {"nack": 75, "unroutable": 75, "password": 77, "vhost": 77}.get(case, 69)
    assert proc.returncode == expected
    one_error_line(proc.stderr)
    assert "not-this-s3cret" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["kern critical", "disk failed"], 65),
        (["kern.info", "x", "--timeout", "0"], 2),
        (["kern.info", "x", "--field", "nope"], 2),
        (["kern.info", "-5", "degrees"], 2),
        (["kern.info", "x", "--config", "/no/such/file.toml"], 78),
    ],
)
def test_bad_arguments_end_in_one_line_and_their_status(args, status, amqp_url, deployment):
    """A bad key (65), bad options (2), a missing config (78): one line, nothing sent."""
    config = [] if "--config" in args else ["--config", str(deployment.config)]
    proc, _imported = run_emit([*args, "--url", amqp_url, *config])
    assert proc.returncode == status
    one_error_line(proc.stderr)
    assert deployment.depth() == 0


def test_a_float_field_is_written_as_json(amqp_url, deployment):
    """--field f:=1.5 is the number 1.5 in the record's fields."""
    proc, _imported = run_emit(
        ["kern.info", "x", "--field", "f:=1.5", *connection_args(amqp_url, deployment)]
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    [(_props, body)] = deployment.drain()
    assert json.loads(body)["fields"] == {"f": 1.5}


def test_a_declaration_the_broker_refuses_exits_78_naming_it(amqp_url, deployment, tmp_path):
    """PRECONDITION_FAILED on a declaration: one line saying what differs, exit 78."""
    config = tmp_path / "clash.toml"
    config.write_text(deployment.config.read_text().replace('type = "topic"', 'type = "direct"', 1))
    proc, _imported = run_emit(["kern.info", "x", "--url", amqp_url, "--config", str(config)])
    assert proc.returncode == 78
    assert "exists with other properties" in one_error_line(proc.stderr)
    assert deployment.depth() == 0


class _Server:
    """A local TCP server whose accepted connections ``serve`` handles, one thread each."""

    def __init__(self, serve: Any) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            threading.Thread(target=self.serve, args=(conn, self.count), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("peer", ["hangs-up", "stalls"])
def test_a_peer_that_is_not_rabbitmq_exits_69_in_one_line(peer):
    """A peer closing at once or never answering the handshake: one line, exit 69."""

    def serve(conn: socket.socket, _count: int) -> None:
        conn.recv(8)
        if peer == "hangs-up":
            conn.close()
        else:
            time.sleep(5)

    server = _Server(serve)
    try:
        url = f"amqp://guest:guest@127.0.0.1:{server.port}/%2F"
        proc, _imported = run_emit(["kern.info", "x", "--url", url],
                                   env={"LOGBUS_CONNECT_TIMEOUT": "1"})  # fmt: skip
    finally:
        server.close()
    assert proc.returncode == 69
    one_error_line(proc.stderr)


def test_a_connection_cut_after_the_publish_is_sent_again(amqp_url, deployment):
    """The first connection dies as the record goes out; it is sent again on a new
    connection, and arrives once."""
    host, port = amqp_url.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)

    def serve(client: socket.socket, count: int) -> None:
        broker = socket.create_connection((host, int(port)))

        def pump(src: socket.socket, dst: socket.socket, cut: bool) -> None:
            # The other direction may close both sockets at any moment: that ends this one.
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    if cut and b"\x00\x3c\x00\x28" in data:  # basic.publish: cut, send nothing
                        client.close()
                        broker.close()
                        return
                    dst.sendall(data)
                dst.close()

        threading.Thread(target=pump, args=(broker, client, False), daemon=True).start()
        pump(client, broker, count == 1)

    proxy = _Server(serve)
    try:
        url = with_password(amqp_url, amqp_url.rsplit("@", 1)[0].rsplit(":", 1)[1])
        url = url.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
        proc, _imported = run_emit(["kern.info", "again", "--url", url,
                                    "--config", str(deployment.config)])  # fmt: skip
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr  # a warning says the connection was lost, no more
    assert proxy.count == 2
    [(_props, body)] = deployment.drain()
    assert json.loads(body)["message"] == "again"
