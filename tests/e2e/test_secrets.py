"""No password or token in anything the command line shows, and credentials kept out of argv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from logbus._urls import redact_url

TOKEN = "XXXXSECRETPATH"
QUERY = "QSECRET"
WORKER = [sys.executable, "-m", "logbus", "worker"]
WEBHOOK = f"webhook:https://hooks.example.invalid/services/T000/B000/{TOKEN}?token={QUERY}"


def _with_password(amqp_url: str, password: str) -> str:
    """The shared broker's URL with ``password`` instead of its own."""
    head, _, host = amqp_url.rpartition("@")
    user = head.partition("://")[2].partition(":")[0]
    return f"amqp://{user}:{password}@{host}"


def test_demo_json_does_not_print_the_password(logbus, amqp_url: str) -> None:
    """`logbus demo --url amqp://user:pass@... --json` shows the URL with *** for the password."""
    password = amqp_url.rpartition("@")[0].rpartition(":")[2]
    proc = logbus("demo", "--url", amqp_url, "--json", "--records", "20")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["url"].startswith("amqp://") and ":***@" in report["url"]
    assert f":{password}@" not in proc.stdout + proc.stderr


def test_demo_uses_logbus_url(logbus, amqp_url: str) -> None:
    """Without --url, the demo runs on $LOGBUS_URL rather than its memory:// default."""
    proc = logbus("demo", "--json", "--records", "20", env={"LOGBUS_URL": amqp_url})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["url"].startswith("amqp://")


def test_worker_banner_and_metrics_labels_hide_a_webhook_token(tmp_path: Path) -> None:
    """The worker's start line and every /metrics sink label show the webhook redacted."""
    worker = subprocess.Popen(
        [*WORKER, "--url", "memory://", "--metrics-port", "0", "--sink", WEBHOOK],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert worker.stderr is not None
        banner = worker.stderr.readline()
        assert "consuming" in banner, banner
        assert "webhook:https://hooks.example.invalid/***?token=***" in banner
        metrics_url = banner.rpartition("metrics on ")[2].strip()
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            metrics = response.read().decode()
        assert 'sink="webhook:https://hooks.example.invalid/***?token=***"' in metrics
    finally:
        worker.terminate()
        rest = worker.communicate(timeout=30)[1]
    shown = banner + metrics + rest
    assert TOKEN not in shown and QUERY not in shown


def test_a_bad_webhook_spec_is_reported_without_its_token(logbus, tmp_path: Path) -> None:
    """A sink spec the worker refuses is one error line, its path and token hidden."""
    spec = f"webhook:ftp://hooks.example.invalid/services/{TOKEN}?token={QUERY}"
    proc = logbus("worker", "--url", "memory://", "--sink", spec, cwd=tmp_path)
    assert proc.returncode == 78, proc.stderr
    assert "ftp://hooks.example.invalid" in proc.stderr
    assert TOKEN not in proc.stderr and QUERY not in proc.stderr


def test_an_unreachable_broker_error_hides_the_password(logbus) -> None:
    """A connection error names the broker with *** for its password."""
    proc = logbus("emit", "user.info", "x", "--url", "amqp://guest:s3cr3t-pw@127.0.0.1:1/%2F")
    assert proc.returncode == 69, proc.stderr
    assert "127.0.0.1" in proc.stderr and "s3cr3t-pw" not in proc.stderr


def _without_logbus_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("LOGBUS_")}


def test_status_takes_the_url_from_a_file(amqp_url: str, tmp_path: Path) -> None:
    """LOGBUS_URL_FILE names a file holding the URL: nothing secret in argv or environment."""
    url_file = tmp_path / "url"
    url_file.write_text(amqp_url + "\n")
    env = {**_without_logbus_variables(), "LOGBUS_URL_FILE": str(url_file)}
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "status", "--json", "--management-url", "off"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["url"] == redact_url(amqp_url)


def test_emit_takes_the_url_from_a_file(tmp_path: Path) -> None:
    """A one-record emit sends to the URL in LOGBUS_URL_FILE."""
    url_file = tmp_path / "url"
    url_file.write_text("amqp://guest:s3cr3t-pw@127.0.0.1:1/%2F\n")
    env = {**_without_logbus_variables(), "LOGBUS_URL_FILE": str(url_file)}
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "emit", "user.info", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 69, proc.stderr
    assert "127.0.0.1:1" in proc.stderr and "s3cr3t-pw" not in proc.stderr


def test_a_password_file_replaces_the_urls_password(logbus, amqp_url: str, tmp_path: Path) -> None:
    """LOGBUS_PASSWORD_FILE's content is the password, whatever the URL says."""
    password = amqp_url.rpartition("@")[0].rpartition(":")[2]
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    wrong = _with_password(amqp_url, "not-the-password")
    proc = logbus("emit", "user.info", "x", env={"LOGBUS_URL": wrong})
    assert proc.returncode in (69, 77), proc.stderr  # refused without the file
    proc = logbus(
        "emit", "user.info", "x", env={"LOGBUS_URL": wrong, "LOGBUS_PASSWORD_FILE": str(secret)}
    )
    assert proc.returncode == 0, proc.stderr


def test_an_unreadable_credentials_file_is_a_config_error(logbus, tmp_path: Path) -> None:
    """A credentials file that cannot be read is one line naming it, exit 78."""
    missing = tmp_path / "no-such-file"
    proc = logbus("emit", "user.info", "x", env={"LOGBUS_PASSWORD_FILE": str(missing)})
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "LOGBUS_PASSWORD_FILE" in proc.stderr and str(missing) in proc.stderr


def test_the_help_documents_the_credential_files(logbus) -> None:
    """`--help` says how to give the URL and password without argv."""
    proc = logbus("emit", "--help", env={"COLUMNS": "200"})
    assert "LOGBUS_URL_FILE" in proc.stdout and "LOGBUS_PASSWORD_FILE" in proc.stdout
