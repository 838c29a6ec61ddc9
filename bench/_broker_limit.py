"""The broker's own limit for confirmed persistent publishes, shared by the benches.

``BROKER`` is a script (run as ``python broker.py URL EXCHANGE KEY [FLAGS] < bodies``;
FLAGS default to ``confirm,mandatory``, and ``bench/ingest.py --costs`` leaves either
out to price it): one connection on a bare socket, the frames built with the least
work there is (the properties encoded once around a fresh message id, written many
to a send), and pipelined confirms (5,000 in flight). No client library or
per-message work beyond that, so no confirmed publisher on one connection does
better against the same broker: ``bench/cli.py`` (part a) and ``bench/ingest.py``
print their figures as a share of it. It imports pamqp (aiormq's, installed with
aio-pika) only to encode the handshake and the one header.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BROKER", "broker_limit"]

BROKER = """
import socket, struct, sys, time, uuid, pika
from pamqp import commands, exceptions, frame, header
url, exchange, key = sys.argv[1:4]
flags = set((sys.argv[4] if len(sys.argv) > 4 else "confirm,mandatory").split(","))
confirm = "confirm" in flags
bodies = [line.rstrip(b"\\n") for line in sys.stdin.buffer]
params = pika.URLParameters(url)
sock = socket.create_connection((params.host, params.port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buffer = bytearray()

def receive():
    while True:
        try:
            used, _channel, value = frame.unmarshal(bytes(buffer))
        except exceptions.UnmarshalingException:
            buffer.extend(sock.recv(1 << 20))
            continue
        del buffer[:used]
        return value

def send(channel, value):
    sock.sendall(frame.marshal(value, channel))

sock.sendall(header.ProtocolHeader().marshal())
receive()  # connection.start
user, password = params.credentials.username, params.credentials.password
send(0, commands.Connection.StartOk(client_properties={"product": "bench"},
                                    response=f"\\0{user}\\0{password}"))
tune = receive()
frame_max = tune.frame_max
send(0, commands.Connection.TuneOk(tune.channel_max, frame_max, 0))
send(0, commands.Connection.Open(params.virtual_host))
receive()  # connection.open-ok
send(1, commands.Channel.Open())
receive()
if confirm:
    send(1, commands.Confirm.Select())
    receive()
headers = {"facility": "user", "severity": "info", "host": "bench", "app": "logbus"}
publish = frame.marshal(
    commands.Basic.Publish(exchange=exchange, routing_key=key,
                           mandatory="mandatory" in flags), 1)
# One content header encoded once; per message only its id and body size change.
template = frame.marshal(header.ContentHeader(0, 0, commands.Basic.Properties(
    content_type="application/json", delivery_mode=2, message_id="0" * 32,
    timestamp=time.gmtime(), app_id="logbus", headers=headers)), 1)
pack_frame, pack_size = struct.Struct(">BHI").pack, struct.Struct(">Q").pack

def frames(body):
    head = template.replace(b"0" * 32, uuid.uuid4().hex.encode())
    return (publish + head[:11] + pack_size(len(body)) + head[19:]
            + pack_frame(3, 1, len(body)) + body + b"\\xce")

print("sending", flush=True)  # connected, bodies read: the clock starts here
sent = acked = 0
while acked < len(bodies):
    if sent < len(bodies) and sent - acked < 5000:
        upto = min(len(bodies), acked + 5000)
        sock.sendall(b"".join(frames(body) for body in bodies[sent:upto]))
        sent = upto
    if not confirm:
        acked = sent
        continue
    value = receive()
    if isinstance(value, commands.Basic.Ack | commands.Basic.Nack):
        acked = max(acked, value.delivery_tag)
send(0, commands.Connection.Close(200, "bye", 0, 0))
receive()
sock.close()
"""


def broker_limit(
    url: str, exchange: str, key: str, bodies: Path, workdir: Path, connections: int = 1
) -> float:
    """Messages per second the broker confirmed of ``bodies`` (one per line) through
    ``BROKER``, timed from its first send (connected, bodies read: as the gateways it is
    set beside are timed, up and connected before their first line); with
    ``connections`` > 1, that many publishers side by side, each its share of the lines,
    from the first one's first send."""
    script = workdir / "broker_limit.py"
    script.write_text(BROKER)
    lines = bodies.read_bytes().splitlines(keepends=True)
    shares = [workdir / f"limit-share-{n}.txt" for n in range(connections)]
    for n, share in enumerate(shares):
        share.write_bytes(b"".join(lines[n::connections]))
    failures = []
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(share.open("rb")) for share in shares]
        publishers = [
            subprocess.Popen(
                [sys.executable, str(script), url, exchange, key],
                stdin=source,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for source in sources
        ]
        assert publishers[0].stdout is not None
        publishers[0].stdout.readline()  # "sending" (or nothing, if it failed first)
        started = time.perf_counter()
        for publisher in publishers:
            _out, err = publisher.communicate()
            if publisher.returncode != 0:
                failures.append(f"exited {publisher.returncode}: {err!r}")
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"bench: the broker-limit publisher {failures[0]}")
    return len(lines) / elapsed
