"""``python -m services.alerter --config config/services/alerter.toml``."""

from __future__ import annotations

import sys
from collections.abc import Callable

from logbus.cli.service import service_main
from logbus.service import ServiceConfig
from logbus.sinks import Sink
from services.alerter.alerts import AlertGate, alert_settings

EPILOG = """Example:

\b
  python -m services.alerter --config config/services/alerter.toml

The file's queue is bound to logbus.topic with *.critical, *.alert and
*.emergency. [alerts] sets the de-duplication window (identical alerts from one
host and app go out once per window) and the rate limit; what is held back is
counted in the next alert's fields.
"""


def gate(config: ServiceConfig) -> Callable[[Sink], Sink]:
    """Put the [alerts] gate in front of the service's sinks."""
    settings = alert_settings(config.extra.get("alerts", {}), source=config.source)
    return lambda sink: AlertGate(sink, settings)


def main() -> int:
    """Run the alerter until SIGTERM or Ctrl-C."""
    return service_main(
        "alerter",
        "Send critical-and-worse records to the console and a webhook, once per window.",
        extra_sections=("alerts",),
        wrap=gate,
        epilog=EPILOG,
    )


if __name__ == "__main__":
    sys.exit(main())
