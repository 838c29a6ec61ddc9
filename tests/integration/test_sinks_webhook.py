"""The webhook sink against a real HTTP server on 127.0.0.1: retries, give-ups and bodies."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from logbus.errors import SinkError
from logbus.record import LogRecord
from logbus.sinks import is_recoverable, load_sink
from logbus.sinks.webhook import WebhookSink
from tests.e2e.support import free_port


@dataclass
class Request:
    """What the server received."""

    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


@dataclass
class Script:
    """The answers the server gives, in order (the last repeats), and what it was sent."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Request) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append(request)
            index = min(len(self.requests), len(self.answers)) - 1
            return self.answers[index]


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    """A local HTTP server answering as its Script says; (base URL, script)."""
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers = script.answer(
                Request(self.path, dict(self.headers), body, self.client_address)
            )
            text = b"bad record" if status == 400 else b"ok"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads the script, not the log."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def record(message: str = "disk failed") -> LogRecord:
    """A kern.critical record."""
    return LogRecord.from_key("kern.critical", message, host="web1")


def sink_for(url: str, pauses: list[float], **options: object) -> WebhookSink:
    """An opened webhook sink that records its pauses instead of sleeping."""
    sink = WebhookSink(url, sleep=pauses.append, **options)  # type: ignore[arg-type]
    sink.open()
    return sink


def test_a_500_then_200_is_retried_and_stored(server):
    """One 500 costs one more request, after the first back-off pause; then stored."""
    base, script = server
    script.answers = [(500, {}), (200, {})]
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses)
    assert sink.write([record()]) == [None]
    sink.close()
    assert len(script.requests) == 2
    assert pauses == [0.5]
    assert json.loads(script.requests[1].body)["message"] == "disk failed"


def test_a_429_waits_as_long_as_retry_after_says(server):
    """429 with Retry-After: 3 pauses 3 s (not the back-off), then the 200 stores it."""
    base, script = server
    script.answers = [(429, {"Retry-After": "3"}), (200, {})]
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses)
    assert sink.write([record()]) == [None]
    sink.close()
    assert len(script.requests) == 2
    assert pauses == [3.0]


def test_a_400_is_not_retried_and_fails_for_good(server):
    """A 4xx gets one request and a non-recoverable error carrying the answer."""
    base, script = server
    script.answers = [(400, {})]
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses)
    [result] = sink.write([record()])
    sink.close()
    assert len(script.requests) == 1
    assert pauses == []
    assert isinstance(result, SinkError)
    assert not is_recoverable(result)
    assert "400" in str(result) and "bad record" in str(result)


def test_5xx_every_time_gives_up_after_the_tries_recoverably(server):
    """Four 503s (tries=4) end in a recoverable error: the worker's delay queues take over."""
    base, script = server
    script.answers = [(503, {})]
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses, tries=4)
    [result] = sink.write([record()])
    sink.close()
    assert len(script.requests) == 4
    assert pauses == [0.5, 1.0, 2.0]
    assert isinstance(result, SinkError) and is_recoverable(result)


def test_a_retry_after_longer_than_the_cap_gives_up_at_once(server):
    """Retry-After: 3600 with max_retry_wait 30 ends the tries, recoverably, without waiting."""
    base, script = server
    script.answers = [(503, {"Retry-After": "3600"}), (200, {})]
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses, max_retry_wait=30.0)
    [result] = sink.write([record()])
    sink.close()
    assert len(script.requests) == 1
    assert pauses == []
    assert isinstance(result, SinkError) and is_recoverable(result)


def test_record_mode_sends_one_request_per_record(server):
    """body=record: three records are three requests, each one record's JSON."""
    base, script = server
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses)
    batch = [record("a"), record("b"), record("c")]
    assert sink.write(batch) == [None, None, None]
    sink.close()
    assert [json.loads(r.body)["message"] for r in script.requests] == ["a", "b", "c"]
    assert script.requests[0].headers["Content-Type"] == "application/json"


def test_record_mode_stops_the_batch_at_a_failing_endpoint(server):
    """Once a record fails recoverably, the rest of the batch is kept for later, unsent."""
    base, script = server
    script.answers = [(503, {})]
    pauses: list[float] = []
    sink = sink_for(f"{base}/hook", pauses, tries=2)
    results = sink.write([record("a"), record("b"), record("c")])
    sink.close()
    assert len(script.requests) == 2
    assert all(isinstance(r, SinkError) and is_recoverable(r) for r in results)


def test_array_mode_sends_the_batch_as_one_json_array(server):
    """body=array: one request whose body is the list of the batch's records."""
    base, script = server
    sink = load_sink(f"webhook:{base}/hook?body=array")
    sink.open()
    batch = [record("a"), record("b"), record("c")]
    assert sink.write(batch) == [None, None, None]
    sink.close()
    assert len(script.requests) == 1
    assert [r["id"] for r in json.loads(script.requests[0].body)] == [r.id for r in batch]


def test_array_mode_fails_every_record_of_a_rejected_batch(server):
    """A 400 for an array fails each of its records, not recoverably."""
    base, script = server
    script.answers = [(400, {})]
    sink = sink_for(f"{base}/hook", [], body="array")
    results = sink.write([record("a"), record("b")])
    sink.close()
    assert len(script.requests) == 1
    assert all(isinstance(r, SinkError) and not is_recoverable(r) for r in results)


def test_the_endpoints_query_and_path_are_sent(server):
    """webhook:URL?token=...&body=array posts to the path with the token, not the option."""
    base, script = server
    sink = load_sink(f"webhook:{base}/in/abc?token=s3cr3t&body=array")
    sink.open()
    sink.write([record()])
    sink.close()
    assert script.requests[0].path == "/in/abc?token=s3cr3t"


def test_credentials_in_the_url_become_basic_auth_and_are_never_shown(server):
    """user:pass@ is sent as Authorization: Basic; errors and repr show neither nor the token."""
    base, script = server
    script.answers = [(400, {})]
    url = base.replace("http://", "http://alice:pa55word@") + "/in/T0KEN?key=s3cr3t"
    sink = sink_for(url, [])
    [result] = sink.write([record()])
    sink.close()
    sent = script.requests[0].headers["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"alice:pa55word"
    for shown in (str(result), repr(sink)):
        for secret in ("alice", "pa55word", "T0KEN", "s3cr3t"):
            assert secret not in shown


def test_extra_headers_are_sent(server):
    """headers from a [sink] table go with every request."""
    base, script = server
    sink = sink_for(f"{base}/hook", [], headers={"Authorization": "Bearer xyz"})
    sink.write([record()])
    sink.close()
    assert script.requests[0].headers["Authorization"] == "Bearer xyz"


def test_a_refused_connection_is_retried_then_recoverable():
    """Nothing listening: each try fails to connect; the result is recoverable."""
    pauses: list[float] = []
    sink = sink_for(f"http://127.0.0.1:{free_port()}/hook", pauses, tries=2)
    [result] = sink.write([record()])
    sink.close()
    assert pauses == [0.5]
    assert isinstance(result, SinkError) and is_recoverable(result)


def test_a_kept_alive_connection_serves_several_writes(server):
    """Consecutive writes on one thread reuse one connection: the server sees one peer."""
    base, script = server
    sink = sink_for(f"{base}/hook", [])
    for message in ("a", "b", "c"):
        assert sink.write([record(message)]) == [None]
    sink.close()
    assert len(script.requests) == 3
    assert len({r.peer for r in script.requests}) == 1


# -- what lets the endpoint drop duplicates ---------------------------------------------


def test_record_mode_sends_each_records_id_as_its_idempotency_key(server):
    """body=record: every request carries Idempotency-Key: <the record's id>."""
    base, script = server
    sink = sink_for(f"{base}/hook", [])
    batch = [record("a"), record("b")]
    sink.write(batch)
    sink.close()
    assert [r.headers["Idempotency-Key"] for r in script.requests] == [r.id for r in batch]


def test_a_retried_request_repeats_its_idempotency_key(server):
    """The try after a 503 has the same key as the first, so the endpoint can tell."""
    base, script = server
    script.answers = [(503, {}), (200, {})]
    sink = sink_for(f"{base}/hook", [])
    one = record()
    sink.write([one])
    sink.close()
    assert [r.headers["Idempotency-Key"] for r in script.requests] == [one.id, one.id]


def test_array_mode_lists_the_ids_and_keys_the_request_by_their_digest(server):
    """body=array: X-Logbus-Ids is the ids in order; Idempotency-Key the SHA-256 of that list."""
    base, script = server
    sink = sink_for(f"{base}/hook", [], body="array")
    batch = [record("a"), record("b"), record("c")]
    sink.write(batch)
    sink.close()
    [request] = script.requests
    listed = request.headers["X-Logbus-Ids"]
    assert listed.split(",") == [r.id for r in batch]
    assert request.headers["Idempotency-Key"] == hashlib.sha256(listed.encode()).hexdigest()


def test_an_id_that_is_not_plain_ascii_is_percent_encoded(server):
    """An id from a plain publisher with a comma, a space or non-ASCII is sent percent-encoded."""
    base, script = server
    sink = sink_for(f"{base}/hook", [])
    sink.write([LogRecord.from_key("kern.info", "x", id="job 7,ü")])
    sink.close()
    assert script.requests[0].headers["Idempotency-Key"] == "job%207%2C%C3%BC"
