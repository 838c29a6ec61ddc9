"""The shared test helpers: a test that cannot run skips, except where it must run."""

from __future__ import annotations

import pytest

from tests.support import require_or_skip


def test_a_missing_tool_skips_a_local_run(monkeypatch):
    """Without LOGBUS_REQUIRE_BROKER, a missing rabbitmqctl skips with the reason."""
    monkeypatch.delenv("LOGBUS_REQUIRE_BROKER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="rabbitmqctl is not on PATH"):
        require_or_skip("rabbitmqctl is not on PATH")


def test_a_missing_tool_fails_under_logbus_require_broker(monkeypatch):
    """With LOGBUS_REQUIRE_BROKER=1 (CI), the same missing rabbitmqctl is a failure."""
    monkeypatch.setenv("LOGBUS_REQUIRE_BROKER", "1")
    with pytest.raises(
        pytest.fail.Exception, match="LOGBUS_REQUIRE_BROKER=1 but rabbitmqctl is not on PATH"
    ):
        require_or_skip("rabbitmqctl is not on PATH")


def test_another_required_variable_also_turns_the_skip_into_a_failure(monkeypatch):
    """A variable named by the caller (LOGBUS_REQUIRE_MANAGEMENT) fails the test too."""
    monkeypatch.delenv("LOGBUS_REQUIRE_BROKER", raising=False)
    monkeypatch.setenv("LOGBUS_REQUIRE_MANAGEMENT", "1")
    with pytest.raises(pytest.fail.Exception, match="LOGBUS_REQUIRE_MANAGEMENT=1 but no API"):
        require_or_skip("no API", "LOGBUS_REQUIRE_MANAGEMENT")
