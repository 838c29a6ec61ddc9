"""redact_url: the one function that makes URLs and sink specs fit to show."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logbus._urls import redact_url
from logbus.metrics import WorkerMetrics

SLACK = "webhook:https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=QSECRET&body=array"


def test_a_webhook_spec_keeps_its_host_and_hides_its_path_and_query_values() -> None:
    """A Slack-style webhook spec shows scheme and host, never the path or query values."""
    assert redact_url(SLACK) == "webhook:https://hooks.slack.com/***?token=***&body=***"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "https://u:pw@hooks.example:8443/api/TOKEN#frag",
            "https://u:***@hooks.example:8443/***#***",
        ),
        ("https://hooks.example?TOKEN", "https://hooks.example?***"),
        ("https://hooks.example/", "https://hooks.example/"),
        (
            "postgres:postgresql://logbus:pw@db1:5432/logs?sslmode=require&password=pw",
            "postgres:postgresql://logbus:***@db1:5432/logs?sslmode=***&password=***",
        ),
        ("jsonl:/var/log/logbus.jsonl?rotate=daily", "jsonl:/var/log/logbus.jsonl?rotate=daily"),
        ("console", "console"),
        (
            "amqps://u:pw@mq1:5671/logs?cafile=/etc/ca.pem",
            "amqps://u:***@mq1:5671/logs?cafile=/etc/ca.pem",
        ),
        ("local:///run/logbus/broker.sock", "local:///run/logbus/broker.sock"),
    ],
)
def test_each_kind_of_text_is_shown_as_documented(text: str, shown: str) -> None:
    """Broker URLs keep their vhost and query; other URLs lose path and query values."""
    assert redact_url(text) == shown


@given(
    secret=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&=#"),
        min_size=4,
    ).filter(lambda s: s not in "webhook:https://user:***@hooks.example/services/hook?token=***"),
    where=st.sampled_from(["path", "query", "password", "fragment"]),
)
def test_no_secret_of_a_webhook_url_survives(secret: str, where: str) -> None:
    """Whatever a webhook URL's secret holds and wherever it sits, it is not shown."""
    url = {
        "path": f"https://hooks.example/services/{secret}",
        "query": f"https://hooks.example/hook?token={secret}",
        "password": f"https://user:{secret}@hooks.example/hook",
        "fragment": f"https://hooks.example/hook#{secret}",
    }[where]
    shown = redact_url(f"webhook:{url}")
    assert shown.startswith("webhook:https://")
    assert secret not in shown


def test_metrics_labels_carry_the_redacted_sink() -> None:
    """Every Prometheus sink label shows the redacted spec, never the token."""
    text = WorkerMetrics("q", SLACK).render()
    assert "SECRET" not in text
    assert 'sink="webhook:https://hooks.slack.com/***?token=***&body=***"' in text


def test_a_workers_repr_hides_the_webhook_token_of_its_spec() -> None:
    """A process-pool worker holds the spec as text; its repr and its pool's show it redacted."""
    from logbus.transports import connect
    from logbus.worker import Worker

    with connect("memory://redaction-repr") as transport:
        worker = Worker(transport, "q", SLACK, pool="process")
        shown = repr(worker) + repr(worker.pool)
    assert "SECRET" not in shown
    assert "webhook:https://hooks.slack.com/***" in shown
