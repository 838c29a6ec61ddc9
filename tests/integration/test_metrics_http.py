"""The metrics endpoint over a real socket: /metrics, /healthz, 404, binding and closing.

No broker is needed: each test serves a :class:`~logbus.metrics.WorkerMetrics`
on a port the system picks and asks it with urllib, as a scraper would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message

import pytest

from logbus.errors import ConfigError
from logbus.metrics import CONTENT_TYPE, Health, MetricsServer, WorkerMetrics, serve_metrics

TIMEOUT = 5.0


def get(url: str) -> tuple[int, Message, str]:
    """GET ``url``: the status, the headers and the body, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read().decode()


@pytest.fixture
def metrics() -> WorkerMetrics:
    """Metrics of a worker on queue logbus.tasks writing to the console."""
    return WorkerMetrics("logbus.tasks", "console")


@pytest.fixture
def serve(metrics: WorkerMetrics) -> Iterator[Callable[..., MetricsServer]]:
    """``serve(health=...)``: a server for ``metrics`` on a free port, closed after the test."""
    servers: list[MetricsServer] = []

    def start(health: Health | None = None) -> MetricsServer:
        server = serve_metrics(metrics, 0, health=health)
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.close()


@pytest.fixture
def server(serve) -> MetricsServer:
    """A server for ``metrics`` with no health check."""
    return serve()


# --- /metrics -------------------------------------------------------------------------


def test_metrics_answers_200_in_the_text_format(server):
    """GET /metrics is 200 with Content-Type text/plain; version=0.0.4."""
    status, headers, _ = get(server.url + "metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_metrics_body_is_the_current_render(server, metrics):
    """The body is exactly what WorkerMetrics.render() gives at that moment (but for the
    process's own samples: its CPU time and memory move between the two calls)."""
    metrics.received(7)
    metrics.observe_batch(0.02, 7)
    _, _, body = get(server.url + "metrics")

    def worker_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("process_")]

    assert worker_lines(body) == worker_lines(metrics.render())
    assert 'logbus_worker_received_total{queue="logbus.tasks",sink="console"} 7.0\n' in body


def test_each_scrape_sees_the_counts_of_its_moment(server, metrics):
    """A second scrape after more writes shows the higher count."""
    metrics.written(1)
    _, _, first = get(server.url + "metrics")
    metrics.written(2)
    _, _, second = get(server.url + "metrics")
    line = 'logbus_worker_written_total{queue="logbus.tasks",sink="console"} '
    assert line + "1.0\n" in first
    assert line + "3.0\n" in second


def test_a_scraper_asking_for_openmetrics_gets_it(server, metrics):
    """Accept: application/openmetrics-text is answered in OpenMetrics, ending with # EOF."""
    metrics.written(2)
    request = urllib.request.Request(
        server.url + "metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        content_type, body = answer.headers["Content-Type"], answer.read().decode()
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert 'logbus_worker_written_total{queue="logbus.tasks",sink="console"} 2.0\n' in body


def test_the_worker_and_the_command_line_do_not_import_prometheus_client():
    """prometheus_client is imported only where metrics are turned on."""
    code = "import sys, logbus.worker, logbus.cli\nprint('prometheus_client' in sys.modules)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


def test_a_query_string_is_ignored(server):
    """GET /metrics?x=1 is still the metrics."""
    status, _, body = get(server.url + "metrics?x=1")
    assert status == 200
    assert "# TYPE logbus_worker_up gauge" in body


# --- /healthz -------------------------------------------------------------------------


def test_healthz_without_a_check_is_ok(server):
    """With no health callable, /healthz is 200 {"status": "ok"}."""
    status, headers, body = get(server.url + "healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}


def test_healthz_healthy_is_200_with_the_details(serve):
    """A healthy check answers 200 with status ok and its details."""
    server = serve(health=lambda: (True, {"connected": True, "threads": 4}))
    status, _, body = get(server.url + "healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "connected": True, "threads": 4}


def test_healthz_unhealthy_is_503_with_the_details(serve):
    """An unhealthy check answers 503 with status unhealthy and its details."""
    server = serve(health=lambda: (False, {"connected": False}))
    status, _, body = get(server.url + "healthz")
    assert status == 503
    assert json.loads(body) == {"status": "unhealthy", "connected": False}


def test_details_cannot_overrule_the_status(serve):
    """A "status" among the details does not turn an unhealthy answer into ok."""
    server = serve(health=lambda: (False, {"status": "ok"}))
    status, _, body = get(server.url + "healthz")
    assert status == 503
    assert json.loads(body) == {"status": "unhealthy"}


def test_details_that_are_not_json_are_shown_as_text(serve):
    """A detail JSON cannot encode (a set) is rendered with str(), not a failure."""
    server = serve(health=lambda: (True, {"queues": {"a"}}))
    status, _, body = get(server.url + "healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "queues": "{'a'}"}


def test_a_check_that_raises_is_unhealthy_without_a_traceback(serve, capfd):
    """health() raising is 503 unhealthy; neither the client nor stderr sees a traceback."""

    def health() -> tuple[bool, dict[str, object]]:
        raise RuntimeError("broker password is hunter2")

    server = serve(health=health)
    status, _, body = get(server.url + "healthz")
    assert status == 503
    assert json.loads(body)["status"] == "unhealthy"
    assert "Traceback" not in body
    assert "hunter2" not in body
    assert capfd.readouterr().err == ""


def test_a_check_that_returns_nonsense_is_unhealthy(serve):
    """health() returning something other than (bool, dict) is 503 unhealthy."""
    server = serve(health=lambda: "fine")  # type: ignore[arg-type, return-value]
    status, _, body = get(server.url + "healthz")
    assert status == 503
    assert json.loads(body)["status"] == "unhealthy"


# --- everything else ------------------------------------------------------------------


def test_other_paths_are_404(server):
    """GET / and GET /metricsx are 404."""
    assert get(server.url)[0] == 404
    assert get(server.url + "metricsx")[0] == 404


def test_requests_are_not_logged_to_stderr(server, capfd):
    """A scrape, a health check and a 404 write nothing to stderr."""
    get(server.url + "metrics")
    get(server.url + "healthz")
    get(server.url + "nope")
    assert capfd.readouterr().err == ""


def test_an_error_while_answering_leaves_no_traceback(metrics, capfd):
    """A scrape that fails inside the server is a 500 with no traceback, in the answer or
    on stderr."""

    class Broken:
        def collect(self) -> list[object]:
            raise RuntimeError("collect broke: password hunter2")

    metrics.registry.register(Broken())  # type: ignore[arg-type]
    with serve_metrics(metrics, 0) as server:
        status, _, body = get(server.url + "metrics")
    assert status == 500
    assert "Traceback" not in body
    assert "hunter2" not in body
    assert capfd.readouterr().err == ""


# --- binding and closing --------------------------------------------------------------


def test_it_binds_loopback_by_default(server):
    """Without a host, only 127.0.0.1 is listened on."""
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/"


def test_port_zero_picks_a_free_port(server):
    """Port 0 asks the system for a port, which .port reports."""
    assert server.port > 0
    assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200


def test_a_port_in_use_is_a_config_error(server, metrics):
    """Serving on a port already taken raises ConfigError naming the port and the option."""
    with pytest.raises(ConfigError) as caught:
        serve_metrics(metrics, server.port)
    assert str(caught.value) == (
        f"port {server.port} on 127.0.0.1 is in use; pick another --metrics-port"
    )


def test_a_port_out_of_range_is_a_config_error(metrics):
    """Port 70000 raises ConfigError before anything is bound."""
    with pytest.raises(ConfigError, match=r"0\.\.65535, not 70000"):
        serve_metrics(metrics, 70000)


def test_an_address_not_on_this_machine_is_a_config_error(metrics):
    """Binding 192.0.2.1 (TEST-NET-1, never local) raises ConfigError naming host and port."""
    with pytest.raises(ConfigError, match=r"cannot serve metrics on 192\.0\.2\.1 port 0: "):
        serve_metrics(metrics, 0, "192.0.2.1")


def test_close_frees_the_port(metrics):
    """After close() the same port can be served again."""
    first = serve_metrics(metrics, 0)
    port = first.port
    first.close()
    with serve_metrics(metrics, port) as second:
        assert get(second.url + "metrics")[0] == 200


def test_close_stops_answering(metrics):
    """After close() a connection to the port is refused."""
    server = serve_metrics(metrics, 0)
    server.close()
    with pytest.raises(urllib.error.URLError) as caught:
        get(server.url + "metrics")
    assert isinstance(caught.value.reason, ConnectionRefusedError)


def test_close_joins_the_serving_thread(metrics):
    """When close() returns, the server's thread has ended."""
    server = serve_metrics(metrics, 0)
    name = f"logbus-metrics:{server.port}"
    assert name in {thread.name for thread in threading.enumerate()}
    server.close()
    assert name not in {thread.name for thread in threading.enumerate()}


def test_close_twice_is_harmless(metrics):
    """A second close() returns at once and raises nothing."""
    server = serve_metrics(metrics, 0)
    server.close()
    server.close()


def test_the_context_manager_closes(metrics):
    """Leaving ``with serve_metrics(...)`` closes the server."""
    with serve_metrics(metrics, 0) as server:
        assert get(server.url + "metrics")[0] == 200
    with pytest.raises(urllib.error.URLError):
        get(server.url + "metrics")
