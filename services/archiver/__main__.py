"""``python -m services.archiver --config config/services/archiver.toml``."""

from __future__ import annotations

import sys

from logbus.cli.service import service_main

EPILOG = """Example:

\b
  python -m services.archiver --config config/services/archiver.toml
  logbus query --archive sqlite:/var/lib/logbus/archive.db --since 1h --min-severity error

The file names the queue (bound to logbus.topic with '#': everything), the sink
(sqlite or postgres), the retry policy and the metrics port. Records are
de-duplicated by id, so a batch redelivered after a crash is stored once.
"""


def main() -> int:
    """Run the archiver until SIGTERM or Ctrl-C."""
    return service_main(
        "archiver",
        "Store every record in the archive, exactly once, until told to stop.",
        epilog=EPILOG,
    )


if __name__ == "__main__":
    sys.exit(main())
