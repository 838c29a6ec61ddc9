"""Opening aio-pika robust connections: options, TLS, failover with backoff and jitter;
the plain channels a transport keeps on them (:class:`ChannelSlot`).

Pauses and failover order come from the reconnect policy the pika transport
uses too (:mod:`logbus.transports.amqp.reconnect`); URLs are read by
:mod:`logbus._urls` and TLS contexts built by :mod:`logbus.transports.amqp.tls`.
The initial connect tries each comma-separated URL in turn, for a few rounds,
sleeping the policy's backoff between rounds. Once connected, aio-pika's
:class:`~aio_pika.RobustConnection` reconnects by itself every
``reconnect_interval`` (spread by the policy once per connection so a fleet does
not reconnect in lockstep); with several URLs, :class:`Failover` moves it on to
the next URL of the policy's order whenever one interval passes without a
successful reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq.abc
from yarl import URL

from logbus._log import Repeats, get_logger
from logbus._urls import address, parse_url, query, user_and_vhost
from logbus.errors import AccessRefused, BrokerUnavailable, ConfigError, LogbusError
from logbus.settings import Settings, redact_url
from logbus.transports.aio.errors import connect_refusal, reply_text
from logbus.transports.amqp.errors import tls_refused
from logbus.transports.amqp.reconnect import ReconnectPolicy
from logbus.transports.amqp.tls import TLS_REFUSED, client_context, verify_failure
from logbus.transports.amqp.urls import broker_urls
from logbus.transports.amqp.window import BUDGET

__all__ = [
    "ChannelSlot",
    "Failover",
    "Options",
    "endpoint",
    "open_robust",
    "split_urls",
    "tls_contexts",
]

log = get_logger("logbus.transports.aio")
# A broker down for minutes fails every round: a line per window, then a count.
_repeats = Repeats(log)

# The initial connect makes only a few rounds: their pauses stay short.
_INITIAL_CAP = 5.0


def split_urls(url: str) -> list[str]:
    """The URLs of a comma-separated failover list; each must be amqp:// or amqps://,
    and readable by yarl, which aio-pika reads it with."""
    urls = broker_urls(url, "aio-pika")
    for one in urls:
        try:
            URL(one)  # aio-pika reads it with yarl, which may refuse what urllib splits
        except (ValueError, TypeError):  # its words may quote the password: not shown
            raise ConfigError(
                f"malformed URL {redact_url(one)!r}: aio-pika cannot read it; fix the URL"
            ) from None
    return urls


def endpoint(url: str) -> str:
    """``host:port`` of one URL: what messages and logs name, never the credentials."""
    return address(parse_url(url))


@dataclass(frozen=True)
class Options:
    """How an :class:`~logbus.transports.aio.AioTransport` connects and publishes.

    ``connection_name`` is the ``connection_name`` client property (shown by
    ``rabbitmqctl list_connections client_properties`` and the management UI);
    ``connection_attempts`` is how many rounds over the URL list the initial
    connect makes; ``reconnect_interval`` is the pause between reconnection
    attempts after a drop; ``publish_window`` bounds the unconfirmed publishes
    ``publish_many`` keeps in flight, and ``publish_budget`` to that many seconds of
    the broker's pace (``amqp.window``); ``ssl_context`` replaces the default,
    certificate-verifying TLS context of amqps:// URLs.
    """

    connection_name: str
    connect_timeout: float
    confirm_timeout: float
    heartbeat: int
    connection_attempts: int = 3
    reconnect_interval: float = 1.0
    publish_window: int = 1000
    publish_budget: float = BUDGET
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def build(cls, settings: Settings, default_name: str, options: dict[str, Any]) -> Options:
        """Options from settings plus keyword options; an unknown keyword is a ``ConfigError``."""
        known = {"connection_name", "connection_attempts", "reconnect_interval"}
        known |= {"publish_window", "publish_budget", "ssl_context"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown aio transport option(s) {', '.join(unknown)}; "
                f"known: settings, {', '.join(sorted(known))}"
            )
        built = cls(
            connection_name=options.get("connection_name") or default_name,
            connect_timeout=settings.connect_timeout,
            confirm_timeout=settings.confirm_timeout,
            heartbeat=settings.heartbeat,
            **{k: v for k, v in options.items() if k != "connection_name"},
        )
        if built.connection_attempts < 1 or built.publish_window < 1:
            raise ConfigError("connection_attempts and publish_window must be at least 1")
        if built.reconnect_interval <= 0 or not built.publish_budget > 0:
            raise ConfigError("reconnect_interval and publish_budget must be more than 0 seconds")
        return built


def tls_contexts(urls: list[str], options: Options) -> list[ssl.SSLContext | None]:
    """The TLS context of each URL (None for amqp://), built before any connect.

    Built by logbus rather than aiormq so that verification cannot be switched off
    by a URL parameter: amqps:// always checks the certificate and the host name.
    A TLS file that cannot be loaded is a ConfigError now, as on the pika path,
    not a connect failure retried for rounds.
    """
    contexts: list[ssl.SSLContext | None] = []
    for url in urls:
        split = parse_url(url)
        if split.scheme.lower() != "amqps":
            contexts.append(None)
        elif options.ssl_context is not None:
            contexts.append(options.ssl_context)
        else:
            contexts.append(client_context(query(split), redact_url(url)))
    return contexts


def _broker_url(url: str, options: Options) -> URL:
    parsed = URL(url)
    if "heartbeat" not in parsed.query:
        parsed = parsed.update_query(heartbeat=options.heartbeat)
    return parsed


async def _connect_one(
    url: str, options: Options, context: ssl.SSLContext | None, policy: ReconnectPolicy
) -> aio_pika.RobustConnection:
    broker_url = _broker_url(url, options)
    interval = policy.spread(options.reconnect_interval)
    return await aio_pika.connect_robust(
        broker_url,
        timeout=options.connect_timeout,
        ssl_context=context,
        client_properties={"connection_name": options.connection_name},
        reconnect_interval=interval,
    )


def _refusal(exc: BaseException, url: str) -> AccessRefused | None:
    """The AccessRefused an initial-connect failure means, if it is a refusal."""
    user, vhost = user_and_vhost(parse_url(url))
    return connect_refusal(exc, endpoint(url), user, vhost)


async def open_robust(urls: list[str], options: Options) -> tuple[aio_pika.RobustConnection, int]:
    """Connect to the first URL that answers; returns the connection and that URL's index.

    Raises :class:`AccessRefused` when every URL refused the credentials or the
    virtual host, else :class:`BrokerUnavailable` naming each ``host:port`` tried.
    """
    contexts = tls_contexts(urls, options)
    policy = ReconnectPolicy(cap=_INITIAL_CAP)
    attempts = policy.attempts(len(urls))
    problems: dict[str, str] = {}
    refused: AccessRefused | None = None
    delay = 0.0  # the backoff that came before this round, reported with its failures
    for round_ in range(options.connection_attempts):
        if round_:
            delay = attempts.next_delay()
            await asyncio.sleep(delay)
        refusals = 0
        for index in attempts.round():
            url = urls[index]
            where = endpoint(url)
            try:
                connection = await _connect_one(url, options, contexts[index], policy)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = _refusal(exc, url)
                if why is not None:
                    refused, refusals = why, refusals + 1
                problems[where] = str(why) if why is not None else _why(exc)
                _repeats.warning(
                    "connect failed",
                    key=(where,),
                    endpoint=where,
                    reason=problems[where],
                    round=round_ + 1,
                    backoff=round(delay, 3),
                )
                continue
            log.info("connected", endpoint=where, name=options.connection_name)
            return connection, index
        if refusals == len(urls):
            break  # every broker said no: asking again will not change its mind
        if all(problems.get(endpoint(u), "").startswith(TLS_REFUSED) for u in urls):
            break  # nor will a certificate that does not verify
    if refused is not None:
        raise refused
    tried = "; ".join(f"{where}: {why}" for where, why in problems.items())
    if problems and all(why.startswith(TLS_REFUSED) for why in problems.values()):
        raise tls_refused(tried)  # in the pika transport's words
    raise BrokerUnavailable(
        f"cannot reach any broker after {options.connection_attempts} round(s) ({tried}); "
        "check the host and port, and that RabbitMQ runs"
    )


def _why(exc: BaseException) -> str:
    refused = verify_failure(exc)
    if refused is not None:
        return refused
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, LogbusError):
        return str(exc)
    return reply_text(exc)


class Failover:
    """Moves a dropped robust connection on to the next URL when its current one stays down."""

    def __init__(
        self,
        connection: aio_pika.RobustConnection,
        urls: list[str],
        current: int,
        options: Options,
    ) -> None:
        self._connection = connection
        self._urls = [_broker_url(u, options) for u in urls]
        self._current = current
        self._task: asyncio.Task[None] | None = None
        connection.close_callbacks.add(self._on_close)

    def _on_close(self, _sender: object, _exc: BaseException | None) -> None:
        connection = self._connection
        if connection.close_called or connection.is_closed or len(self._urls) < 2:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        connection = self._connection
        interval = float(connection.reconnect_interval)
        while not connection.close_called and not connection.is_closed:
            try:
                async with asyncio.timeout(interval * 1.5):
                    await connection.connected.wait()
                return
            except TimeoutError:
                # The next URL in the policy's order after the one that stayed down.
                self._current = ReconnectPolicy.order(len(self._urls), self._current)[1]
                # aio-pika reads .url on every attempt; the query (heartbeat, name)
                # of the new URL applies, the connection's kwargs stay.
                connection.url = self._urls[self._current]
                log.warning("failing over", endpoint=endpoint(str(connection.url)))

    async def stop(self) -> None:
        """Stop watching (the connection is being closed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ChannelSlot:
    """One plain aio-pika channel, replaced by a fresh one once the broker closed it.

    ``ready`` gives the transport's connection once it is up (connecting, or waiting
    for a reconnect, as the transport does for every call).
    """

    def __init__(
        self, ready: Callable[[], Awaitable[aio_pika.RobustConnection]], *, confirms: bool
    ) -> None:
        self._ready = ready
        self._confirms = confirms
        self._channel: aio_pika.Channel | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> aio_pika.Channel:
        """The channel, opened (again) if there is none or the broker closed it."""
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                connection = await self._ready()
                channel = aio_pika.Channel(
                    connection, publisher_confirms=self._confirms, on_return_raises=self._confirms
                )
                await channel.initialize()
                self._channel = channel
            return channel

    async def underlay(self) -> aiormq.abc.AbstractChannel:
        """The channel's aiormq channel, for what logbus does at that level."""
        return await (await self.get()).get_underlay_channel()

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._channel = None
