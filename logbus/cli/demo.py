"""``logbus demo``: the main job end to end on the embedded broker."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from logbus.cli.common import fail, make_settings, wants_json
from logbus.errors import EX_TEMPFAIL

EPILOG = """Examples:

  logbus demo                       # in-process broker, no RabbitMQ needed

  logbus demo --json | jq .workers  # the report as JSON

  logbus demo --url amqp://guest:guest@localhost:5672/%2F --records 500
"""


def demo(
    url: Annotated[
        str | None,
        typer.Option(
            help="Transport URL. Default: $LOGBUS_URL (or the URL in the file "
            "$LOGBUS_URL_FILE), else a fresh in-process memory:// broker.",
            show_default=False,
        ),
    ] = None,
    records: Annotated[int, typer.Option(min=1, max=100_000, help="How many records.")] = 120,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable stream.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for deliveries.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Emit a mixed stream and show which subscriber and worker got what.

    Declares the default topology (under a private prefix), starts a fanout, a
    direct (kern.critical), two topic (kern.*, *.critical) and a headers
    (host=web1) subscriber plus two competing workers on the work queue, emits
    the records and prints who got what next to what RabbitMQ's routing rules
    say they should get.
    """
    from logbus.demo import run_demo  # imported here to keep `logbus --help` fast

    settings = make_settings(url)
    # The demo's own default is a fresh memory:// broker, not the settings' localhost:
    # it runs with no RabbitMQ. A URL given in any way (--url, LOGBUS_URL, a file) wins.
    named = {name.lower() for name, value in os.environ.items() if value}
    given = url is not None or bool(named & {"logbus_url", "logbus_url_file"})
    report = run_demo(
        settings.url if given else None,
        records=records,
        seed=seed,
        timeout=timeout,
        settings=settings,
    )
    if wants_json(as_json):
        typer.echo(json.dumps(report.to_dict()))
    else:
        _render(report)
    if not report.complete:
        raise fail("some records did not arrive in time (see the table)", EX_TEMPFAIL)


def _render(report: object) -> None:
    from logbus.demo import DemoReport

    assert isinstance(report, DemoReport)
    from logbus.settings import redact_url

    typer.secho(
        f"logbus demo: {report.emitted} records emitted once each on {redact_url(report.url)} "
        f"in {report.seconds:.2f}s",
        bold=True,
    )
    typer.echo("")
    header = f"{'subscriber':<22} {'exchange':<16} {'received':>8} {'expected':>8}  keys"
    typer.echo(header)
    typer.echo("-" * len(header))
    for p in report.subscribers:
        ok = p.count == p.expected
        keys = ", ".join(f"{k} x{n}" for k, n in p.received.most_common(4))
        more = len(p.received) - 4
        keys += f", +{more} more" if more > 0 else ""
        line = f"{p.name:<22} {p.exchange:<16} {p.count:>8} {p.expected:>8}  {keys}"
        typer.secho(line, fg=None if ok else typer.colors.RED)
    typer.echo("")
    total = sum(w.count for w in report.workers) or 1
    for w in report.workers:
        share = 100.0 * w.count / total
        typer.echo(f"{w.name:<22} {w.binding:<16} {w.count:>8}  ({share:.0f}% of the work)")
    verdict = (
        "every subscriber got exactly what routing promised"
        if report.complete
        else ("INCOMPLETE: some records did not arrive")
    )
    typer.secho(f"\n{verdict}", fg=typer.colors.GREEN if report.complete else typer.colors.RED)
