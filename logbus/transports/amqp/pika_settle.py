"""Settling deliveries on the pika transport: acks queued by any thread, sent by the I/O thread.

Like ``basic.ack`` on the wire, settling is fire-and-forget: :class:`Settlements`
queues what a user's thread settles and the I/O thread sends the queue in one
pass, so a consumer acking each record does not pay a thread round trip per
record. On the way, plain acks of one consumer fold into as few frames as say
the same thing (:func:`plan_acks`): a multiple ack where every delivery it covers
was acked, single acks for the rest. An ack that cannot join a multiple ack yet,
because a lower delivery is still held (another thread's batch, finishing a
moment later), waits up to ``_ACK_DELAY`` for the ack that lets it join.

What is settled (a consumer, or the ``basic.get`` channel slot) is anything with
the :class:`Settled` shape; the connection's side is a :class:`SettleHost`. This
module imports neither: the core hands both in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from logbus._log import get_logger
from logbus.errors import LogbusError, PreconditionFailed, TransportClosed
from logbus.transports.base import Settlement

__all__ = ["SettleHost", "Settled", "Settlements", "plan_acks"]

log = get_logger("logbus.transports.amqp")

# How long an ack that cannot join a multiple ack yet (a lower delivery is still held,
# by another thread, say) waits for the ack that lets it join; then it goes alone.
_ACK_DELAY = 0.02


class Settled(Protocol):
    """What deliveries are settled on: a consumer, or the ``basic.get`` channel slot."""

    channel: Any
    live_epoch: int | None
    unacked: set[int]

    def describe(self) -> str: ...

    def io_after_settle(self) -> None: ...


class SettleHost(Protocol):
    """The connection's side of settling: whether it still takes work, and its I/O loop."""

    @property
    def closing(self) -> bool: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def loop(self) -> Any: ...

    def submit_quietly(self, callback: Callable[[], None]) -> None: ...


#: A queued settlement: (consumer or channel slot, epoch, how, tags, multiple, requeue).
_Settle = tuple[Settled, int, Settlement, tuple[int, ...], bool, bool]

#: Acks held back for a consumer or channel slot: (it, epoch, tags).
_Held = tuple[Settled, int, set[int]]


class Settlements:
    """The settlements of one connection, queued from any thread, sent on its I/O thread."""

    def __init__(self, host: SettleHost) -> None:
        self._host = host
        self._queue: deque[_Settle] = deque()
        self._scheduled = False
        # Acks held back by _io_ack_all, per (consumer or slot, epoch), and their timer.
        self._held: dict[tuple[int, int], _Held] = {}
        self._held_timer: Any = None

    def settle(
        self,
        target: Settled,
        epoch: int,
        how: Settlement,
        tag: int,
        multiple: bool,
        requeue: bool,
    ) -> None:
        """Ack, nack or reject a delivery from any thread, without waiting.

        A stale or unknown tag is logged on the I/O thread (the Delivery already
        refuses a second settle of itself).
        """
        self._enqueue((target, epoch, how, (tag,), multiple, requeue))

    def settle_many(
        self, target: Settled, epoch: int, how: Settlement, tags: Sequence[int], requeue: bool
    ) -> None:
        """Settle several deliveries of ``target`` alike, from any thread, without waiting:
        one entry in the queue for all of them (see :meth:`settle`)."""
        self._enqueue((target, epoch, how, tuple(tags), False, requeue))

    def _enqueue(self, settlement: _Settle) -> None:
        host = self._host
        if host.closing or not host.accepting:
            raise TransportClosed("the transport is closed; its deliveries went back to the queue")
        self._queue.append(settlement)
        if not self._scheduled:
            self._scheduled = True
            host.submit_quietly(self.io_drain)

    def io_drain(self) -> None:
        """Send what was queued: the plain acks of each consumer folded together (see
        :func:`plan_acks`), everything else as it came, in order for its consumer."""
        self._scheduled = False
        pending = self._queue
        # Plain acks gathered per (consumer, epoch), sent when something else for that
        # consumer comes (a nack must not overtake an ack queued before it) or at the end.
        acks: dict[tuple[int, int], tuple[Settled, int, list[int]]] = {}
        while pending:
            try:
                target, epoch, how, tags, multiple, requeue = pending.popleft()
            except IndexError:
                break
            key = (id(target), epoch)
            if how is Settlement.ACK and not multiple:
                gathered = acks.get(key)
                if gathered is None:
                    acks[key] = (target, epoch, list(tags))
                else:
                    gathered[2].extend(tags)
                continue
            # What this consumer acked before goes first, held-back acks included.
            gathered = acks.pop(key, None)
            if gathered is not None or key in self._held:
                self._io_ack_all(target, epoch, gathered[2] if gathered else [], hold=False)
            for tag in tags:
                try:
                    self._io_settle(target, epoch, how, tag, multiple, requeue)
                except LogbusError as exc:
                    log.warning("amqp.settlement_refused", how=how.value, tag=tag, reason=str(exc))
        for gathered in acks.values():
            self._io_ack_all(*gathered)

    def io_release(self) -> None:
        """Send every held-back ack now (the transport is closing: the broker must hear
        of what the user acked)."""
        if self._held_timer is not None:
            self._host.loop.remove_timeout(self._held_timer)
            self._held_timer = None
        for target, epoch, _tags in list(self._held.values()):
            self._io_ack_all(target, epoch, [], hold=False)

    def _io_ack_all(
        self, target: Settled, epoch: int, tags: list[int], *, hold: bool = True
    ) -> None:
        """Ack exactly ``tags`` of ``target`` (and the acks held back for it) in as few
        frames as say the same thing; ``hold=False`` sends everything now."""
        key = (id(target), epoch)
        held = self._held.pop(key, None)
        if held is not None:
            tags = [*tags, *held[2]]
        if not tags or not self._can_settle(target, epoch, Settlement.ACK, tags):
            return
        unacked = target.unacked
        wanted = set(tags)
        known = wanted & unacked
        for tag in sorted(wanted - known):
            log.warning(
                "amqp.settlement_refused",
                how=Settlement.ACK.value,
                tag=tag,
                reason=f"PRECONDITION_FAILED - unknown delivery tag {tag} (already settled, "
                "maybe by an earlier multiple ack); settle each delivery once",
            )
        if not known:
            return
        channel = target.channel
        top, singles = plan_acks(unacked, known)
        if top is not None:
            channel.basic_ack(top, multiple=True)
        if singles and hold:
            singles = self._hold_back(target, epoch, singles, known)
        for tag in singles:
            channel.basic_ack(tag, multiple=False)
        unacked.difference_update(known)
        target.io_after_settle()

    def _hold_back(
        self, target: Settled, epoch: int, singles: list[int], known: set[int]
    ) -> list[int]:
        """Hold the acks above a delivery still unacked for it (up to ``_ACK_DELAY``): its
        ack then usually carries them in one multiple ack. Returns those to send now;
        the held ones leave ``known``."""
        unacked = target.unacked
        lowest_held = min((tag for tag in unacked if tag not in known), default=None)
        if lowest_held is None or singles[-1] < lowest_held:
            return singles
        self._held[(id(target), epoch)] = (
            target,
            epoch,
            {tag for tag in singles if tag > lowest_held},
        )
        known.difference_update(self._held[(id(target), epoch)][2])
        if self._held_timer is None:
            self._held_timer = self._host.loop.call_later(_ACK_DELAY, self._io_release_timer)
        return [tag for tag in singles if tag < lowest_held]

    def _io_release_timer(self) -> None:
        self._held_timer = None
        self.io_release()

    def _can_settle(
        self, target: Settled, epoch: int, how: Settlement, tags: Collection[int]
    ) -> bool:
        """Whether ``target``'s channel of ``epoch`` is still there to settle on; logs why not."""
        if self._host.closing:
            log.warning(
                "amqp.settlement_refused",
                how=how.value,
                tags=len(tags),
                reason="the transport is closed; its deliveries went back to the queue",
            )
            return False
        channel = target.channel
        if channel is None or epoch != target.live_epoch or not channel.is_open:
            log.info(
                "amqp.stale_settlement",
                how=how.value,
                tags=len(tags),
                first=min(tags),
                on=target.describe(),
                why="its channel is gone, so the broker requeued them and will deliver them again",
            )
            return False
        return True

    def _io_settle(
        self,
        target: Settled,
        epoch: int,
        how: Settlement,
        tag: int,
        multiple: bool,
        requeue: bool,
    ) -> None:
        if self._host.closing:
            raise TransportClosed("the transport is closed; its deliveries went back to the queue")
        if not self._can_settle(target, epoch, how, (tag,)):
            return
        if tag not in target.unacked:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - unknown delivery tag {tag} (already settled, maybe by "
                "an earlier multiple ack); settle each delivery once"
            )
        channel = target.channel
        if how is Settlement.ACK:
            channel.basic_ack(tag, multiple=multiple)
        elif how is Settlement.NACK:
            channel.basic_nack(tag, multiple=multiple, requeue=requeue)
        else:
            channel.basic_reject(tag, requeue=requeue)
        if multiple:
            target.unacked = {t for t in target.unacked if t > tag}
        else:
            target.unacked.discard(tag)
        target.io_after_settle()


def plan_acks(unacked: set[int], tags: Collection[int]) -> tuple[int | None, list[int]]:
    """How to ack exactly ``tags`` (distinct, each in ``unacked``) in the fewest frames.

    Returns ``(top, singles)``: ``basic.ack(top, multiple=True)`` (unless ``top`` is
    None) and one plain ``basic.ack`` per tag of ``singles``. A multiple ack settles
    every unacked tag up to its own, so ``top`` ends the longest run of the lowest
    unacked tags that are all in ``tags``; the tags above it, behind one still held
    (another thread's batch, a record still being written), go one by one.
    """
    ordered = sorted(tags)
    if len(ordered) == len(unacked):  # every delivery held is acked
        return (ordered[-1], []) if len(ordered) > 1 else (None, ordered)
    if ordered[0] != min(unacked):
        return None, ordered
    end = 1  # ordered[:end] are the lowest unacked tags, with no other unacked among them
    while end < len(ordered):
        below, tag = ordered[end - 1], ordered[end]
        if tag != below + 1 and _held_between(unacked, below, tag):
            break
        end += 1
    if end == 1:
        return None, ordered
    return ordered[end - 1], ordered[end:]


def _held_between(unacked: set[int], low: int, high: int) -> bool:
    """Whether some tag strictly between ``low`` and ``high`` is still unacked."""
    if high - low - 1 <= len(unacked):
        return any(tag in unacked for tag in range(low + 1, high))
    return any(low < tag < high for tag in unacked)
