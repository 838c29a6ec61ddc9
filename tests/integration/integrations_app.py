"""A plain Python program that logs through ``LogbusHandler``: the application of the fault tests.

``python integrations_app.py URL TOPOLOGY POLICY BUFFER`` configures the root logger
with ``logging.config.dictConfig`` (the handler as a ``class`` entry) and logs
``line <n>`` for n in 0..99,999 in three phases, talking to the test on stdin/stdout
so that the test can stop the broker between them:

1. lines 0..9,999, then prints ``ready`` and waits for a line on stdin;
2. lines 10,000..69,999 (the test stopped the broker before answering), then
   prints ``logged`` and waits for a line on stdin (the broker is back by then);
3. waits until the handler's backlog is sent (``flush``), logs the last 30,000
   lines and closes the handler, which sends what is left.

The last line it prints is a JSON object of the handler's counters (``sent``,
``dropped``, ``failed``).
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys

PHASES = ((0, 10_000), (10_000, 70_000), (70_000, 100_000))


def main(url: str, topology: str, policy: str, buffer_size: int) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "handlers": {
                "bus": {
                    "class": "logbus.integrations.LogbusHandler",
                    "url": url,
                    "facility": "local1",
                    "policy": policy,
                    "buffer_size": buffer_size,
                    "block_timeout": 300,
                    "flush_timeout": 120,
                    "topology": topology,
                }
            },
            "root": {"handlers": ["bus"], "level": "INFO"},
        }
    )
    (handler,) = logging.getLogger().handlers
    log = logging.getLogger("app.fault")
    for phase, (start, end) in enumerate(PHASES):
        if phase == 2:
            handler.flush()  # the backlog from the outage, with the broker back
        for n in range(start, end):
            log.info("line %d", n)
        if phase < 2:
            print("ready" if phase == 0 else "logged", flush=True)
            sys.stdin.readline()
    handler.close()
    counters = {name: getattr(handler, name) for name in ("sent", "dropped", "failed")}
    print(json.dumps(counters), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
