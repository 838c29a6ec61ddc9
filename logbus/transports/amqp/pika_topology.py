"""What an AMQP transport declared, kept in order so a new connection can declare it again.

RabbitMQ forgets exclusive queues (and auto-delete ones whose consumers went)
when a connection drops; someone may also have deleted an entity meanwhile.
After reconnecting, the transport replays this record before it lets anything
else through. Deleting or unbinding through the transport removes entries, so
the record follows what the transport last asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["Declaration", "Declared"]

Kind = Literal["exchange", "queue", "bind_queue", "bind_exchange"]


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an AMQP table or list (for de-duplicating bindings)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class Declaration:
    """One successful declaration: an exchange, a queue, or a binding.

    ``name`` is the exchange or queue declared, or a binding's destination;
    ``source`` is a binding's source exchange; ``options`` are the keywords of the
    pika call (declarations) or the binding arguments (bindings).
    """

    kind: Kind
    name: str
    source: str = ""
    routing_key: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    server_named: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        if self.kind in ("exchange", "queue"):
            return (self.kind, self.name)
        return (self.kind, self.name, self.source, self.routing_key, _freeze(self.options))

    def describe(self) -> str:
        if self.kind == "bind_queue":
            return f"binding of queue {self.name!r} to {self.source!r} ({self.routing_key!r})"
        if self.kind == "bind_exchange":
            return f"binding of exchange {self.name!r} to {self.source!r} ({self.routing_key!r})"
        return f"{self.kind} {self.name!r}"

    def following(self, resolve: Callable[[str], str]) -> Declaration:
        """This declaration with its queue's current name: a reconnect renames a
        server-named queue, after the restore steps for its bindings were made."""
        if self.kind in ("queue", "bind_queue"):
            name = resolve(self.name)
            if name != self.name:
                return replace(self, name=name)
        return self

    def run(self, channel: Any, done: Callable[[Any], None]) -> None:
        """Issue this declaration on ``channel``; ``done(frame.method)`` on success."""

        def ok(frame: Any) -> None:
            done(frame.method)

        arguments = dict(self.options) or None
        if self.kind == "exchange":
            channel.exchange_declare(self.name, callback=ok, **self.options)
        elif self.kind == "queue":
            name = "" if self.server_named else self.name
            channel.queue_declare(name, callback=ok, **self.options)
        elif self.kind == "bind_queue":
            channel.queue_bind(
                self.name, self.source, self.routing_key, arguments=arguments, callback=ok
            )
        else:
            channel.exchange_bind(
                self.name, self.source, self.routing_key, arguments=arguments, callback=ok
            )


class Declared:
    """The ordered record of a transport's successful declarations (I/O thread only)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], Declaration] = {}

    def __iter__(self) -> Iterator[Declaration]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, declaration: Declaration) -> None:
        """Remember a declaration (a repeat keeps its first place)."""
        self._entries[declaration.key] = declaration

    def discard(self, declaration: Declaration) -> None:
        """Forget one declaration (it can no longer be made)."""
        self._entries.pop(declaration.key, None)

    def auto_delete(self, queue: str) -> bool:
        """Whether ``queue`` was declared here as auto-delete."""
        declaration = self._entries.get(("queue", queue))
        return bool(declaration and declaration.options.get("auto_delete"))

    def forget_queue(self, name: str) -> None:
        """The queue was deleted: forget it and its bindings."""
        self._keep(lambda d: not (d.kind in ("queue", "bind_queue") and d.name == name))

    def forget_exchange(self, name: str) -> None:
        """The exchange was deleted: forget it and every binding from or to it."""
        self._keep(
            lambda d: (
                not (
                    (d.kind == "exchange" and d.name == name)
                    or (d.kind in ("bind_queue", "bind_exchange") and d.source == name)
                    or (d.kind == "bind_exchange" and d.name == name)
                )
            )
        )

    def rename_queue(self, old: str, new: str) -> None:
        """A server-named queue came back under a new name: follow it."""
        entries = {}
        for d in self._entries.values():
            renamed = d.kind in ("queue", "bind_queue") and d.name == old
            kept = replace(d, name=new) if renamed else d
            entries[kept.key] = kept
        self._entries = entries

    def _keep(self, wanted: Callable[[Declaration], bool]) -> None:
        self._entries = {k: d for k, d in self._entries.items() if wanted(d)}
