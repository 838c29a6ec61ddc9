"""A sync face on the async aio-pika transport, for the contract suite only.

The contract suite is written once against the sync ``Transport`` Protocol; this
adapter runs it against :class:`~logbus.transports.aio.AioTransport`, whose
behaviour (routing, prefetch, acks, redelivery, confirms) it is there to check.
It is not a product: sync code uses the pika transport (``connect("amqp://...")``),
which confirms about twice as fast (bench/amqp.py), and async code uses
``AioTransport`` directly.

The face is not written method by method: :class:`SyncFace` reads the method and
attribute names a Protocol declares and makes, for each, a sync relay that hands
the async twin's coroutine to an event loop in a private thread and waits. A
method's name, docstring and signature are the Protocol's, so they are written
once, in :mod:`logbus.transports.base`; only what a relay cannot do (closing the
loop, wrapping a consumer) is written here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from logbus.errors import ConnectionLost, TransportClosed
from logbus.settings import redact_url
from logbus.transports.aio import AioConsumer, AioTransport
from logbus.transports.base import Consumer, Delivery, Transport

__all__ = [
    "BlockingAioConsumer",
    "BlockingAioTransport",
    "LoopThread",
    "SyncFace",
    "protocol_attributes",
    "protocol_methods",
]

T = TypeVar("T")


def protocol_methods(protocol: type) -> dict[str, Callable[..., Any]]:
    """The public methods ``protocol`` itself declares, by name (dunders are not relayed)."""
    return {
        name: value
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def protocol_attributes(protocol: type) -> list[str]:
    """The data members ``protocol`` itself declares (``url``, ``queue``, ``tag``)."""
    return [name for name in vars(protocol).get("__annotations__", {}) if not name.startswith("_")]


class LoopThread:
    """An asyncio event loop running in a daemon thread, and the one way to call into it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="logbus-aio-loop", daemon=True
        )
        self._thread.start()
        #: How long a bounded call may wait; None until the transport knows its own bounds.
        self.timeout: float | None = None

    @property
    def running(self) -> bool:
        return self._loop.is_running()

    def call(self, coro: Coroutine[Any, Any, T], *, bounded: bool = True) -> T:
        """Run ``coro`` on the loop and wait for its result (up to ``timeout`` if bounded)."""
        if not self._loop.is_running():
            coro.close()
            raise TransportClosed("the transport is closed; open a new one")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        wait = self.timeout if bounded else None
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ConnectionLost(f"no answer from the broker within {wait:g} s") from None
        except BaseException:
            future.cancel()  # interrupted (KeyboardInterrupt ...): stop the work too
            raise

    def stop(self) -> None:
        """Stop the loop and its thread; later calls raise ``TransportClosed``."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


def _relay(name: str, declared: Callable[..., Any], *, bounded: bool) -> Callable[..., Any]:
    """A sync method that awaits the twin's ``name`` on the loop; named, documented and
    signed as ``declared`` (the Protocol's method)."""

    def method(self: SyncFace, *args: Any, **kwargs: Any) -> Any:
        # An iterator is read here, on the caller's thread: a generator may touch the
        # caller's state, which the loop's thread must not.
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        kwargs = {k: list(v) if isinstance(v, Iterator) else v for k, v in kwargs.items()}
        coro = getattr(self._twin, name)(*args, **kwargs)
        result = self._loop_thread.call(coro, bounded=bounded)
        wrap = self._results.get(name)
        return result if wrap is None else wrap(self, result)

    return functools.update_wrapper(method, declared)


def _attribute(name: str) -> property:
    """A data member read from the twin, so a change there (a renamed queue) shows here."""
    return property(lambda self: getattr(self._twin, name), doc=f"The twin's ``{name}``.")


class SyncFace:
    """The sync face of an async object (the twin) for the Protocol a subclass names.

    ``class F(SyncFace, protocol=Transport, unbounded={"publish_many"})`` gets one
    relay per public method of ``Transport`` that it does not write itself, and a
    read-only property per data member. A relay's call is bounded by the loop's
    ``timeout`` unless its name is in ``unbounded``; ``_results`` maps a method name
    to what turns the twin's result into the face's (a consumer into its face).
    """

    _twin: Any
    _loop_thread: LoopThread
    _results: ClassVar[Mapping[str, Callable[[Any, Any], Any]]] = {}

    def __init_subclass__(
        cls, *, protocol: type, unbounded: frozenset[str] = frozenset(), **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        for name, declared in protocol_methods(protocol).items():
            if name not in vars(cls):
                setattr(cls, name, _relay(name, declared, bounded=name not in unbounded))
        for name in protocol_attributes(protocol):
            if name not in vars(cls):
                setattr(cls, name, _attribute(name))

    if TYPE_CHECKING:  # the relays are made when a subclass is: mypy cannot see them

        def __getattr__(self, name: str) -> Any: ...


class BlockingAioConsumer(SyncFace, protocol=Consumer, unbounded=frozenset({"get"})):
    """The sync :class:`~logbus.transports.base.Consumer` face of an :class:`AioConsumer`."""

    def __init__(self, loop_thread: LoopThread, consumer: AioConsumer) -> None:
        self._loop_thread = loop_thread
        self._twin = consumer

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    @property
    def ended(self) -> bool:
        return bool(self._twin.ended)


class BlockingAioTransport(SyncFace, protocol=Transport, unbounded=frozenset({"publish_many"})):
    """The sync :class:`~logbus.transports.base.Transport` over :class:`AioTransport`.

    An event loop runs in a private daemon thread; every call is handed to it
    and waited for. Deliveries settle from the calling thread (see
    :mod:`logbus.transports.aio`). Arguments are those of :class:`AioTransport`.
    """

    _results: ClassVar[Mapping[str, Callable[[Any, Any], Any]]] = {
        "consume": lambda face, consumer: BlockingAioConsumer(face._loop_thread, consumer),
    }

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._loop_thread = LoopThread()  # connecting is bounded by its own options
        try:
            self._twin: AioTransport = self._loop_thread.call(_build(url, options))
        except BaseException:
            self._loop_thread.stop()
            raise
        self.connection_name = self._twin.connection_name
        bounds = self._twin.options
        self._loop_thread.timeout = bounds.confirm_timeout + bounds.connect_timeout

    @property
    def aio(self) -> AioTransport:
        """The async transport underneath (use it only from its loop's thread)."""
        return self._twin

    def wait_reconnected(self, count: int = 1, timeout: float | None = None) -> None:
        """Wait until the connection has been restored ``count`` times in all, consumers too."""
        self._loop_thread.call(self._twin.wait_reconnected(count, timeout), bounded=False)

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        if not self._loop_thread.running:
            return
        try:
            self._loop_thread.call(self._twin.close())
        finally:
            self._loop_thread.stop()

    def __enter__(self) -> BlockingAioTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BlockingAioTransport {redact_url(self.url)} name={self.connection_name!r}>"


async def _build(url: str | None, options: dict[str, Any]) -> AioTransport:
    # Built on the loop's thread, so its asyncio objects belong to that loop.
    return await AioTransport(url, **options).connect()


if TYPE_CHECKING:  # mypy proves each class can stand where its Protocol is asked for

    def _implements(b: BlockingAioTransport, d: BlockingAioConsumer) -> tuple[Transport, Consumer]:
        return b, d
