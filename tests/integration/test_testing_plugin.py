"""logbus.testing's pytest plugin, as a user meets it: a small project's tests run by pytest.

Each test writes an example project (a module that emits records, and tests that
use the fixtures) into ``pytester``'s directory and runs pytest on it in a
subprocess, where the plugin arrives through the installed ``pytest11`` entry
point exactly as it does for logbus's users. The shared broker is handed over
through ``LOGBUS_TEST_URL``, so the inner session uses the one this suite uses.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from logbus.errors import NotFound
from logbus.testing import Capture
from logbus.transports import connect

README = Path(__file__).resolve().parents[2] / "README.md"

#: The example project's code under test: it emits through whatever LOGBUS_URL names.
SIGNUP = """
from logbus import Emitter


def sign_up(user, *, plan="free"):
    with Emitter() as emitter:
        emitter.emit("auth.info", "signed up", user=user, plan=plan)
        if plan == "trial":
            emitter.emit("billing.warning", "trial without card", user=user)
"""

#: Its tests' imports.
IMPORTS = """
import re

from logbus import Emitter, Subscriber
from logbus.testing import Capture

from signup import sign_up
"""

#: A test of the capture fixture.
CAPTURE_TEST = """

def test_the_capture_sees_what_the_code_emitted(logbus_capture):
    sign_up("ada", plan="trial")
    assert logbus_capture.find(key="auth.*", message="signed up").fields["user"] == "ada"
    assert logbus_capture.find(severity="warning", user="ada").routing_key == "billing.warning"
    assert [r.message for r in logbus_capture.records] == ["signed up", "trial without card"]
    assert logbus_capture.select(message=re.compile("card")) != []
    assert logbus_capture.select(key="kern.#") == []
"""

#: Tests of the broker URL and of the in-process broker.
BROKER_TESTS = """

def test_the_broker_url_is_a_rabbitmq(logbus_broker_url):
    assert logbus_broker_url.startswith("amqp")
    with Capture(logbus_broker_url) as capture, capture.emitter() as emitter:
        emitter.emit("kern.critical", "disk failed", host="web1")
        assert capture.find(key="kern.critical", host="web1").message == "disk failed"


def test_the_inprocess_broker_routes(logbus_inprocess_url):
    with Subscriber(logbus_inprocess_url, keys=["kern.*"]) as sub:
        with Emitter(logbus_inprocess_url) as emitter:
            emitter.emit("kern.info", "eth0 up")
            emitter.emit("user.info", "not for kern.*")
        assert sub.get(timeout=5).message == "eth0 up"
        assert sub.get(timeout=0.2) is None
"""

#: What code logs through logbus.integrations' handler lands in the capture too.
LOGGING_TESTS = """

import logging

from logbus.integrations import LogbusHandler


def logged(handler, level, message, *args, **extra):
    log = logging.getLogger("example")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.log(level, message, *args, extra=extra)
    finally:
        log.removeHandler(handler)


def test_the_capture_sees_what_the_code_logged(logbus_capture):
    handler = logbus_capture.handler(facility="auth")
    try:
        logged(handler, logging.WARNING, "password reset for %s", "ada", user="ada")
        record = logbus_capture.find(key="auth.warning", user="ada")
    finally:
        handler.close()
    assert record.message == "password reset for ada"


def test_a_handler_built_from_the_environment_lands_in_the_capture(logbus_capture):
    handler = LogbusHandler(facility="daemon")  # LOGBUS_URL and LOGBUS_CONFIG: the capture's
    try:
        logged(handler, logging.ERROR, "disk full")
        assert logbus_capture.find(key="daemon.error").message == "disk full"
    finally:
        handler.close()
"""

#: One test per fixture, all expected to pass.
PASSING = IMPORTS + CAPTURE_TEST + BROKER_TESTS

#: On RabbitMQ: the names a capture declares are the test's own.
PREFIX_TEST = """

def test_the_names_are_the_tests_own(logbus_capture):
    assert logbus_capture.url.startswith("amqp")
    assert logbus_capture.prefix.startswith("logbus-test-test_the_names_are_the_tests_own-")
    with open("prefix.txt", "w") as out:
        out.write(logbus_capture.prefix)
"""

#: A test that asserts a record the code never emitted.
FAILING = """
from signup import sign_up


def test_a_record_that_was_never_emitted(logbus_capture):
    sign_up("bob")
    logbus_capture.find(key="auth.error", message="signed up", timeout=0.2)
"""

#: Captures on RabbitMQ, the way the README says to switch.
ON_RABBITMQ = """
import pytest


@pytest.fixture
def logbus_capture_url(logbus_broker_url):
    return logbus_broker_url
"""


@pytest.fixture
def project(pytester: pytest.Pytester, amqp_url: str, monkeypatch: pytest.MonkeyPatch):
    """The example project, its inner pytest pointed at this suite's broker."""
    monkeypatch.setenv("LOGBUS_TEST_URL", amqp_url)
    monkeypatch.delenv("LOGBUS_URL", raising=False)
    monkeypatch.delenv("LOGBUS_CONFIG", raising=False)
    pytester.makepyfile(signup=SIGNUP)
    return pytester


def closed_port_url() -> str:
    """An AMQP URL on a local port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


def test_an_example_projects_tests_pass_with_each_fixture(project: pytest.Pytester):
    """A capture, the broker URL and the in-process broker each work in a user's tests."""
    project.makepyfile(test_signup=PASSING)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_capture_sees_what_code_logs_through_the_logging_handler(project: pytest.Pytester):
    """A handler from the capture, or one built from the environment, is captured."""
    project.makepyfile(test_logging=LOGGING_TESTS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_asserting_a_record_never_emitted_fails_listing_what_was(project: pytest.Pytester):
    """The failure names what was asked for and lists what the code did emit."""
    project.makepyfile(test_signup=FAILING)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: expected 1 record(s) matching key='auth.error', "
            "message='signed up', found 0 (waited 0.2s); 1 record(s) captured:",
            "*auth.info host=* app=logbus 'signed up' {*'user': 'bob'*}",
        ]
    )


def test_the_capture_runs_on_rabbitmq_when_its_url_is_overridden(
    project: pytest.Pytester, amqp_url: str
):
    """Overriding logbus_capture_url puts the capture on RabbitMQ under a prefix of its own."""
    project.makeconftest(ON_RABBITMQ)
    project.makepyfile(test_signup=IMPORTS + CAPTURE_TEST + LOGGING_TESTS + PREFIX_TEST)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    prefix = (project.path / "prefix.txt").read_text()
    with connect(amqp_url) as transport, pytest.raises(NotFound):
        transport.declare_exchange(f"{prefix}logbus.topic", "topic", passive=True)


def test_a_closed_test_url_skips_with_the_reason(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    """LOGBUS_TEST_URL on a closed port skips a broker test, naming the URL and why."""
    url = closed_port_url()
    monkeypatch.setenv("LOGBUS_TEST_URL", url)
    monkeypatch.delenv("LOGBUS_REQUIRE_BROKER", raising=False)
    project.makepyfile(test_signup=PASSING)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    port = url.rsplit(":", 1)[1].split("/")[0]
    result.stdout.fnmatch_lines(
        [f"SKIPPED*no RabbitMQ to test against: LOGBUS_TEST_URL=*:{port}/* does not answer*"]
    )
    assert "guest:guest" not in result.stdout.str()  # the password is never shown


def test_a_closed_test_url_fails_when_a_broker_is_required(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    """Under LOGBUS_REQUIRE_BROKER=1 the same missing broker is an error, not a skip."""
    monkeypatch.setenv("LOGBUS_TEST_URL", closed_port_url())
    monkeypatch.setenv("LOGBUS_REQUIRE_BROKER", "1")
    project.makepyfile(test_signup=PASSING)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*LOGBUS_REQUIRE_BROKER=1 but no RabbitMQ: LOGBUS_TEST_URL=*"])


def test_the_readme_example_passes_under_pytest(project: pytest.Pytester):
    """The README's test file, run by pytest as a user would run it: both its tests pass."""
    section = README.read_text(encoding="utf-8").split("## Testing your service with logbus")[1]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None
    project.makepyfile(test_readme_example=example.group(1))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_two_captures_on_one_broker_never_see_each_other(amqp_url: str):
    """Captures on a shared broker each get their own names: one's records stay its own."""
    with Capture(amqp_url) as first, Capture(amqp_url) as second:
        assert first.prefix != second.prefix
        with first.emitter() as emitter:
            emitter.emit("kern.info", "for the first")
        first.find(message="for the first")
        with second.emitter() as emitter:
            emitter.emit("kern.info", "for the second")
        assert second.find(key="kern.info").message == "for the second"
        assert [r.message for r in first.records] == ["for the first"]
        assert [r.message for r in second.records] == ["for the second"]


def test_loading_the_plugin_imports_no_broker_client():
    """The plugin loads in every pytest run: it imports neither pika, aio-pika nor Docker."""
    heavy = ("pika", "aio_pika", "aiormq", "testcontainers", "docker", "ssl", "pydantic")
    code = (
        "import sys, logbus.testing.plugin; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
