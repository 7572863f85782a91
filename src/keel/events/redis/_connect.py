"""Open a redis-py asyncio client for the Redis Streams engine from a URL.

- ``redis://[user:password@]host:port[/db]``, ``rediss://`` (TLS) and
  ``unix://``: one server, through redis-py's own URL parser.
- ``redis+cluster://host:port[,host:port...]`` and ``rediss+cluster://``: a
  Redis Cluster; the hosts listed are the startup nodes, the rest of the
  cluster is discovered from them.
- ``prefix=<key prefix>`` in the query sets the engine's key prefix and
  ``max_len=<n>`` trims each partition to about n entries on append (neither
  is passed on to redis-py).

The client is checked with a ``PING`` (a cluster client also loads the slot
map), so a wrong address fails here, as :class:`StoreUnavailableError`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError

from keel.errors import InvalidURLError
from keel.events.redis._scripts import Client, translate
from keel.store import redact_url

__all__ = ["OWN_OPTIONS", "SCHEMES", "Options", "block_cap", "open_client"]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
OWN_OPTIONS = ("prefix", "max_len")
BLOCK_MARGIN = 0.5
"""A blocking read waits at most this fraction of the client's socket timeout."""
DEFAULT_BLOCK_CAP_S = 2.5


@dataclass(frozen=True, slots=True)
class Options:
    """The engine's own options found in a URL's query (not passed on to redis-py).

    Attributes:
        prefix: ``prefix=``: the key prefix.
        max_len: ``max_len=``: trim each partition to about this many entries on append.
    """

    prefix: str | None = None
    max_len: int | None = None


async def open_client(url: str) -> tuple[Client, Options]:
    """A connected client for ``url`` and the engine's options in its query.

    Raises:
        InvalidURLError: not a Redis URL (or a malformed one).
        StoreUnavailableError: Redis did not answer the first ``PING``.
    """
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise InvalidURLError(f"{redact_url(str(url))!r} is not a URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise InvalidURLError(
            f"{redact_url(url)!r} is not a Redis URL: use redis://host:port, rediss://host:port "
            f"or redis+cluster://host:port,host:port"
        )
    options = _options(dict(query), url)
    rest = urlencode([(k, v) for k, v in query if k not in OWN_OPTIONS])
    client: Client
    try:
        if parts.scheme.endswith("+cluster"):
            client = _cluster(parts.scheme == "rediss+cluster", parts.netloc, url)
        else:
            client = Redis.from_url(urlunsplit(parts._replace(query=rest)))
    except ValueError as exc:
        raise InvalidURLError(f"{redact_url(url)!r} is not a valid Redis URL: {exc}") from exc
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()
        await client.ping()
    except RedisError as exc:
        await _close_quietly(client)
        raise translate(exc, f"connecting to {redact_url(url)}") from exc
    return client, options


def _options(query: dict[str, str], url: str) -> Options:
    max_len = query.get("max_len")
    if max_len is not None and not (max_len.isdigit() and int(max_len) >= 1):
        raise InvalidURLError(f"{redact_url(url)!r}: max_len={max_len!r} is not a count >= 1")
    return Options(query.get("prefix"), None if max_len is None else int(max_len))


def _cluster(tls: bool, netloc: str, url: str) -> RedisCluster:
    user = password = None
    hosts = netloc
    if "@" in netloc:
        auth, hosts = netloc.rsplit("@", 1)
        user, _, password = auth.partition(":")
        user, password = unquote(user) or None, unquote(password) or None
    nodes = []
    for host_port in hosts.split(","):
        host, sep, port = host_port.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidURLError(
                f"{redact_url(url)!r}: {host_port!r} is not host:port "
                f"(use redis+cluster://host:port,host:port)"
            )
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    return RedisCluster(startup_nodes=nodes, username=user, password=password, ssl=tls)


async def _close_quietly(client: Client) -> None:
    with contextlib.suppress(RedisError):
        await client.aclose()


def block_cap(client: Client) -> float:
    """The longest a blocking read may wait on ``client``: below its socket timeout."""
    if isinstance(client, RedisCluster):
        timeout = client.connection_kwargs.get("socket_timeout")
    else:
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return DEFAULT_BLOCK_CAP_S
    return max(0.001, float(timeout) * BLOCK_MARGIN)
