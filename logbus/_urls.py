"""URLs and sink specs as they may be shown: :func:`redact_url`, the one redaction function.

Everything logbus prints, logs or labels that may hold a secret goes through
:func:`redact_url`: broker URLs (a password), sink specs and the URLs in them
(a webhook's token in its path or query, a database password in a query).

It lives apart from :mod:`logbus.settings` (which re-exports it) so that code
which only shows URLs, such as error messages on the fast ``logbus emit`` path,
does not import pydantic.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

__all__ = [
    "AMQP_PORTS",
    "HIDDEN",
    "address",
    "parse_url",
    "query",
    "redact_url",
    "split_urls",
    "user_and_vhost",
]

#: What stands where a secret was.
HIDDEN = "***"

# A comma starts a new URL only where a scheme follows, so a raw comma inside a
# password stays inside its URL (and gets redacted with it).
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
# `NAME:ARG` of a sink spec whose ARG is a URL (`webhook:https://...`); a URL's own
# scheme cannot be followed by a second `:` before its `//`, so the two never mix.
_SPEC = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*):(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\Z")
# Schemes whose URLs carry nothing secret but a password: their paths (vhosts,
# socket paths) and queries (cafile=, heartbeat=) are what an operator needs to see.
_BROKER_SCHEMES = frozenset({"amqp", "amqps", "memory", "gevent", "process", "local"})
# Schemes whose path is a database's name, worth showing; any other URL's path may
# itself be the secret (Slack's /services/T000/B000/XXXX, Discord's
# /api/webhooks/ID/TOKEN, any "secret URL" webhook) and is hidden.
_DATABASE_SCHEMES = frozenset({"postgres", "postgresql"})


def split_urls(url: str) -> list[str]:
    """A comma-separated failover list as its URLs (a comma in a password stays put)."""
    return _NEXT_URL.split(url)


def redact_url(text: str) -> str:
    """``text`` (a URL, a comma-separated list of them, or a sink spec) fit to show.

    * every password is replaced by ``***``:
      ``amqp://guest:guest@host:5672/%2F`` → ``amqp://guest:***@host:5672/%2F``;
    * broker URLs (``amqp``, ``amqps``, ``memory``, ``gevent``, ``process``,
      ``local``) keep the rest: host, port, vhost and query say where, not how to get in;
    * any other URL keeps its scheme, host and port, and the names of its query's
      keys but not their values (``?token=***``); its path is hidden too
      (``https://hooks.slack.com/***``), since webhooks put their token there,
      except a database's name (``postgresql://logbus:***@db1:5432/logs``);
    * a sink spec ``NAME:URL`` keeps its name and redacts its URL
      (``webhook:https://hooks.slack.com/***?body=***``); other specs
      (``jsonl:/var/log/x.jsonl``, ``console``) are shown as they are.

    When in doubt it hides more, never less.
    """
    spec = _SPEC.match(text)
    if spec is not None:
        return text[: spec.end()] + redact_url(text[spec.end() :])
    return ",".join(_redact_one(part) for part in _NEXT_URL.split(text))


def _redact_one(url: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    found = _SCHEME.search(head)
    scheme = found.group(0).lower() if found else ""
    # The credentials end at the *last* "@": a password with a raw "@", "/", "?" or
    # "#" in it is then still hidden whole. The price, an "@" in a vhost or query,
    # is that more than the password is hidden; never less.
    userinfo, at, after = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    prefix = ""
    if at and colon and password:
        prefix, rest = f"{user}:{HIDDEN}@", after
    if scheme in _BROKER_SCHEMES:
        return f"{head}{sep}{prefix}{rest}"
    return f"{head}{sep}{prefix}{_hide_location(rest, scheme not in _DATABASE_SCHEMES)}"


def _hide_location(rest: str, hide_path: bool) -> str:
    """``[user@]host[:port][/path][?query][#fragment]`` with query values, the
    fragment and (``hide_path``) the path hidden."""
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]  # RFC 3986: the authority ends at / ? or #
    path, _, query = tail.partition("#")[0].partition("?")
    fragment = "#" + HIDDEN if "#" in tail else ""
    if hide_path and path not in ("", "/"):
        path = "/" + HIDDEN
    if query:  # a key without "=" may be the secret itself (`?s3cr3t`): hidden whole
        pairs = (pair.partition("=") for pair in query.split("&") if pair)
        query = "?" + "&".join(f"{k}={HIDDEN}" if eq else HIDDEN for k, eq, _ in pairs)
    return f"{authority}{path}{query}{fragment}"


# -- reading a URL: the one parser --------------------------------------------------------


def parse_url(url: str, *, fix: str = "--url or LOGBUS_URL") -> SplitResult:
    """One URL (not a list) split as :func:`urllib.parse.urlsplit` splits it, port checked.

    Every URL logbus reads goes through here, so that a malformed one (an unclosed
    ``[``, a port that is not a number from 0 to 65535, a host whose characters
    change under Unicode normalisation) is a :class:`~logbus.errors.ConfigError`
    naming the URL, password hidden, and ``fix`` (where it came from) — never
    urllib's ``ValueError``, which would escape the command line as a traceback.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        from logbus.errors import ConfigError  # here: the redaction side stays import-free

        raise ConfigError(
            f"malformed URL {redact_url(url)!r}: {_malformed(str(exc))}; fix {fix}"
        ) from None
    return parts


def _malformed(reason: str) -> str:
    """urllib's reason in an operator's words (urllib's own may quote the password)."""
    if "IPv4 or IPv6" in reason:
        return "the host between '[' and ']' is not an IP address"
    if "IPv6" in reason:
        return "a host opened with '[' is not closed with ']'"
    if "Port" in reason:
        return "the port is not a number from 0 to 65535"
    if "NFKC" in reason:
        return "the host or user has characters that change under Unicode normalisation (NFKC)"
    return "it cannot be split into scheme, host, port and path"


# -- what a broker URL says: for both AMQP drivers ------------------------------------------

#: The port of each AMQP scheme when its URL names none.
AMQP_PORTS = {"amqp": 5672, "amqps": 5671}


def address(parts: SplitResult) -> str:
    """``host:port`` of a split broker URL: what messages and logs name, never credentials."""
    try:
        port = parts.port
    except ValueError:  # parse_url refuses such a URL; shown anyway, never raised here
        port = None
    return f"{parts.hostname or 'localhost'}:{port or AMQP_PORTS.get(parts.scheme.lower(), 5672)}"


def user_and_vhost(parts: SplitResult) -> tuple[str, str]:
    """The user (``guest`` when none) and the virtual host (``/`` for an empty path)."""
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return unquote(parts.username or "guest"), vhost


def query(parts: SplitResult) -> dict[str, str]:
    """A split URL's query as a mapping (a key given twice: the last wins, blanks kept)."""
    return dict(parse_qsl(parts.query, keep_blank_values=True))


def is_amqp(url: str) -> bool:
    """Whether ``url`` (its first, for a failover list) is ``amqp://`` or ``amqps://``."""
    return split_urls(url)[0].strip().partition("://")[0].strip().lower() in ("amqp", "amqps")


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (its first, for a failover list), read as pika reads it;
    ``/`` for logbus's own brokers (``local://``, ``memory://`` ...), which have only that one."""
    if not is_amqp(url):
        return "/"
    segments = parse_url(split_urls(url)[0].strip()).path.split("/")
    return unquote(segments[1]) if len(segments) > 1 and segments[1] else "/"
