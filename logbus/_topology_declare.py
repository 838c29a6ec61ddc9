"""Declaring a topology on a broker, and the broker's refusal said as what to do.

:func:`declare` needs only the four declaring calls of a transport
(:class:`Declarer`), so that :mod:`logbus.topology`, which re-exports both, never
imports :mod:`logbus.transports`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from logbus.errors import PreconditionFailed, TopologyError

if TYPE_CHECKING:
    from logbus.topology import Topology

__all__ = ["Declarer", "declare", "delete_command", "mismatch"]


class Declarer(Protocol):
    """What :func:`declare` needs of a transport (every sync transport has it): the
    four declaring calls, typed here so that this module never imports transports."""

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> None: ...

    def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> object: ...

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None: ...

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None: ...


def declare(transport: Declarer, topology: Topology) -> None:
    """Declare every exchange, queue and binding of ``topology`` on ``transport``.

    Idempotent. An entity that exists with other properties (the broker's
    PRECONDITION_FAILED) raises :class:`~logbus.errors.TopologyError` naming the
    entity, the property, both values and the two ways out.
    """
    try:
        for e in topology.exchanges:
            transport.declare_exchange(
                e.name,
                e.type,
                durable=e.durable,
                auto_delete=e.auto_delete,
                internal=e.internal,
                arguments=e.arguments,
            )
        for q in topology.queues:
            transport.declare_queue(
                q.name,
                durable=q.durable,
                exclusive=q.exclusive,
                auto_delete=q.auto_delete,
                arguments=q.amqp_arguments(),
            )
    except PreconditionFailed as exc:
        raise mismatch(exc, getattr(transport, "url", None)) from exc
    for b in topology.bindings:
        bind = transport.bind_exchange if b.destination_type == "exchange" else transport.bind_queue
        bind(b.destination, b.source, b.routing_key, b.arguments)


# A pattern, compiled (and cached by re) only when the broker refuses a declaration.
_INEQUIVALENT = (
    r"inequivalent arg '(?P<prop>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']*)'"
    r".*?received (?:the value )?(?P<want>'[^']*'|none)(?: of type '[^']*')?"
    r" but current is (?:the value )?(?P<have>'[^']*'|none)"
)


def mismatch(exc: PreconditionFailed, url: str | None = None) -> TopologyError:
    """Turn the broker's 'inequivalent arg' refusal into a TopologyError that says what to do.

    ``url`` is the broker's (the transport's): the command the hint suggests names its
    vhost when that is not ``/``, since without ``-p`` it would act on ``/`` — possibly
    on another deployment's queue of the same name. The URL itself is never shown.
    """
    found = re.search(_INEQUIVALENT, str(exc))
    if found is None:
        return TopologyError(f"the broker refused the topology: {exc}")
    kind, name, prop = found["kind"], found["name"], found["prop"]
    want, have = found["want"].strip("'"), found["have"].strip("'")
    how = delete_command(kind, name, "/" if url is None else _vhost(url))
    return TopologyError(
        f"{kind} '{name}' exists with other properties: {prop}: broker has {have}, "
        f"config has {want} (change the config to match, or delete the {kind} "
        f"— {how} — and declare again)"
    )


def delete_command(kind: str, name: str, vhost: str = "/") -> str:
    """The command that deletes exchange or queue ``name`` of ``vhost``, quoted for a shell."""
    import shlex

    where = "" if vhost == "/" else f"-p {shlex.quote(vhost)} "
    if kind == "queue":
        return f"rabbitmqctl {where}delete_queue {shlex.quote(name)}"
    vhost_flag = "" if vhost == "/" else f"--vhost={shlex.quote(vhost)} "
    return f"rabbitmqadmin {vhost_flag}delete exchange name={shlex.quote(name)}"


def _vhost(url: str) -> str:
    """The vhost of ``url`` (imported here: only a refusal needs it)."""
    from logbus._urls import vhost_of

    return vhost_of(url)
