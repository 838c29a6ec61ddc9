"""What one publish can reach in a topology: the entities that must exist before publishing.

Re-exported by :mod:`logbus.topology` (and :mod:`logbus.emitter`); apart only to keep
that module small. A walk over names, without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logbus.topology import Topology

__all__ = ["reachable"]


def reachable(
    topology: Topology, exchanges: Iterable[str] = (), queues: Iterable[str] = ()
) -> Topology:
    """The part of ``topology`` that publishes to ``exchanges`` (or ``queues``) can reach.

    That is the entities a record may be routed to — through exchange-to-exchange
    bindings, queue bindings and dead-letter exchanges — and the bindings between
    them: what must exist before publishing so that no record is lost, and no
    more. Names the topology does not declare are left out; the result has no
    emit targets. A dead-letter route through the default exchange is not
    followed by name, so then the whole topology is returned.
    """
    names = _reachable_names(
        {e.name for e in topology.exchanges},
        {q.name: q.all_arguments().get("x-dead-letter-exchange") for q in topology.queues},
        [(b.source, b.destination_type, b.destination) for b in topology.bindings],
        exchanges,
        queues,
    )
    if names is None:
        return replace(topology, emit=())
    found_exchanges, found_queues = names
    return type(topology)(
        exchanges=tuple(e for e in topology.exchanges if e.name in found_exchanges),
        queues=tuple(q for q in topology.queues if q.name in found_queues),
        bindings=tuple(b for b in topology.bindings if b.source in found_exchanges),
    )


def _reachable_names(
    exchanges: set[str],
    dead_letters: Mapping[str, object],
    bindings: Iterable[tuple[str, str, str]],
    from_exchanges: Iterable[str],
    from_queues: Iterable[str],
) -> tuple[set[str], set[str]] | None:
    """The declared exchanges and queues reachable from ``from_*``: a walk over
    ``bindings`` (source, destination type, destination) and each queue's
    dead-letter exchange (``dead_letters``, None without one); None when a
    dead-letter route goes through the default exchange (anything may be reached)."""
    routes: dict[str, list[tuple[str, str]]] = {}
    for source, kind, destination in bindings:
        routes.setdefault(source, []).append((kind, destination))
    found: dict[str, set[str]] = {"exchange": set(), "queue": set()}
    todo = [("exchange", x) for x in from_exchanges] + [("queue", q) for q in from_queues]
    while todo:
        kind, name = todo.pop()
        known = exchanges if kind == "exchange" else dead_letters
        if name in found[kind] or name not in known:
            continue
        found[kind].add(name)
        if kind == "exchange":
            todo += routes.get(name, [])
            continue
        dlx = dead_letters[name]
        if dlx == "":
            return None
        if dlx is not None:
            todo.append(("exchange", str(dlx)))
    return found["exchange"], found["queue"]
