"""``logbus worker --pool``: what the command refuses before it connects."""

from __future__ import annotations

import subprocess
import sys


def test_logbus_worker_pool_gevent_refuses_a_process_url_with_status_78():
    """The command refuses before connecting: one line, exit 78 (configuration)."""
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "worker", "--pool", "gevent", "--url", "process://x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "logbus: error: the gevent pool cannot use process://: its connections block a "
        "monkey-patched process; use memory://, gevent:// or amqp://, or another pool"
    ]
