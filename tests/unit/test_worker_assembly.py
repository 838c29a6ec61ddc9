"""One place assembles a running worker: ``logbus worker`` and the services both call it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import logbus.worker.assembly as assembly
from logbus._log import JsonLines
from logbus.cli import typer_main
from logbus.service import loads_service, run_service
from logbus.worker import WorkerSummary, run

SERVICE = """
[service]
name = "archiver"
[queue]
name = "svc.q"
[worker]
concurrency = 3
[metrics]
port = 9999
[sink]
type = "console"
"""


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[assembly.WorkerPlan]:
    """Replaces :func:`logbus.worker.assembly.run` by one that records the plan it was given."""
    seen: list[assembly.WorkerPlan] = []

    def fake_run(plan: assembly.WorkerPlan, **_options: Any) -> WorkerSummary:
        seen.append(plan)
        return WorkerSummary(plan.queue, 0, 0, 0, 0, 0.0)

    monkeypatch.setattr(assembly, "run", fake_run)
    return seen


def test_the_worker_package_exports_run():
    """``logbus.worker.run`` is the assembly function itself."""
    assert run is assembly.run


def test_a_service_runs_its_worker_through_the_one_assembly(plans):
    """run_service hands its queue, pool options and metrics port to worker.assembly.run."""
    run_service(loads_service(SERVICE, source="svc.toml"), url="memory://", stop_signals=False)
    [plan] = plans
    assert (plan.queue, plan.concurrency, plan.metrics_port, plan.metrics_label) == (
        "svc.q",
        3,
        9999,
        "archiver",
    )


def test_the_worker_command_runs_its_worker_through_the_one_assembly(plans):
    """``logbus worker`` hands its queue, sink spec and options to worker.assembly.run."""
    status = typer_main(
        ["worker", "--url", "memory://", "--queue", "q1", "--concurrency", "2", "--no-retry"]
    )
    assert status == 0
    [plan] = plans
    assert (plan.queue, plan.concurrency, plan.retry.max_attempts, plan.metrics_label) == (
        "q1",
        2,
        1,
        "console",
    )


def test_the_json_lines_formatter_writes_an_event_s_own_keys():
    """logbus._log.JsonLines writes one JSON object: the event's keys, its level and logger."""
    record = logging.LogRecord("logbus.worker", logging.INFO, __file__, 1, "x", None, None)
    record.logbus_event = {"event": "worker.started", "queue": "q"}
    line = json.loads(JsonLines().format(record))
    assert (line["event"], line["queue"], line["level"], line["logger"]) == (
        "worker.started",
        "q",
        "info",
        "logbus.worker",
    )
