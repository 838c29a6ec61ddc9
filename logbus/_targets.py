"""Publishing one record to several emit targets, and saying which of them took it.

:class:`PartlyRouted` is what an emitter raises when some targets did not take a
record; :func:`pick_targets` picks targets by name for a retry to those only.
Records are encoded once (:func:`encode`) and become one message per target
(:func:`message_for`). Used by :mod:`logbus.emitter`, which re-exports the public
names; apart to keep that module small.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice

from logbus.errors import ConfigError, NotConfirmed
from logbus.message import Message, Properties
from logbus.record import LogRecord
from logbus.topology import EmitTarget
from logbus.transports.amqp.errors import RABBITMQ_MAX_MESSAGE_SIZE, record_too_large

__all__ = ["PartlyRouted", "check_routed", "chunks", "encode", "message_for", "pick_targets"]

#: A module global, so that tests can lower it.
MAX_MESSAGE_SIZE = RABBITMQ_MAX_MESSAGE_SIZE

#: Records published to one target before the next, when there are several targets.
_CHUNK = 5000

#: A record ready to publish: itself, its body and its properties (encoded once).
_Encoded = tuple[LogRecord, bytes, Properties]


class PartlyRouted(NotConfirmed):
    """Of several emit targets, some did not take the record (or a batch's records).

    ``taken`` and ``missed`` are the targets, in the topology's order; ``errors``
    says why each missed one did not (by its label). Each target is published and
    confirmed on its own, so ``taken`` holds: send again to ``missed`` only —
    ``Emitter(targets=exc.missed)``, ``logbus emit --target NAME`` — and the
    others get no duplicate. ``records`` is how many records were in the batch
    concerned, ``sent`` how many earlier ones every target took. Exit status 75.
    """

    def __init__(
        self,
        taken: Sequence[EmitTarget],
        errors: Mapping[EmitTarget, NotConfirmed],
        *,
        records: int = 1,
        sent: int = 0,
    ) -> None:
        self.taken = tuple(taken)
        self.missed = tuple(errors)
        self.errors = {t.label: e for t, e in errors.items()}
        self.records = records
        self.sent = sent
        what = "the record was" if records == 1 else f"{records} records were"
        if sent:
            what = f"after {sent} records every target took, {what}"
        took = ", ".join(t.label for t in self.taken) or "none"
        why = "; ".join(f"{label}: {e}" for label, e in self.errors.items())
        super().__init__(
            f"{what} not taken by every emit target: taken by {took}; not by "
            f"{', '.join(t.label for t in self.missed)} ({why})",
            unconfirmed=sum(e.unconfirmed for e in errors.values()),
        )


def pick_targets(targets: Sequence[EmitTarget], names: Iterable[str]) -> tuple[EmitTarget, ...]:
    """The targets called ``names`` (their :attr:`~logbus.topology.EmitTarget.label`), in
    ``targets``' order; an unknown name is a :class:`ConfigError` listing the known ones."""
    wanted = list(dict.fromkeys(names))
    known = {t.label: t for t in targets}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        listed = ", ".join(known) or "none"
        raise ConfigError(
            f"no emit target called {', '.join(map(repr, unknown))} (the targets are: {listed})"
        )
    return tuple(t for t in targets if t.label in wanted)


def encode(record: LogRecord) -> _Encoded:
    """A record with its body and properties, encoded once for every target.

    A record no RabbitMQ would take raises :class:`~logbus.errors.RecordTooLarge`.
    """
    body = record.to_bytes()
    if len(body) > MAX_MESSAGE_SIZE:
        raise record_too_large(len(body), MAX_MESSAGE_SIZE)
    return record, body, record.to_properties()


def message_for(encoded: _Encoded, target: EmitTarget) -> Message:
    """The message an encoded record becomes for ``target``: its exchange, its key."""
    record, body, properties = encoded
    key = target.render(record.facility, str(record.severity), record.host, record.app)
    return Message(body, properties, target.exchange, key)


def chunks(records: Iterable[LogRecord]) -> Iterator[list[_Encoded]]:
    """``records`` encoded, :data:`_CHUNK` at a time (the last chunk may be shorter)."""
    it = iter(records)
    while chunk := [encode(r) for r in islice(it, _CHUNK)]:
        yield chunk


def check_routed(
    targets: Sequence[EmitTarget],
    errors: Mapping[EmitTarget, NotConfirmed],
    records: int,
    sent: int,
) -> None:
    """Raise :class:`PartlyRouted` when some target did not take a chunk of ``records``."""
    if errors:
        taken = [t for t in targets if t not in errors]
        raise PartlyRouted(taken, errors, records=records, sent=sent)
