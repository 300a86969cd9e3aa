"""Reaching the broker's Redis: one client factory, errors that say what is wrong (host down,
password refused, certificate rejected) and broker URLs that never show their password."""

import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

from common import defaults
from common.errors import Qwen3BatchError
from common.settings import ENV_PREFIX, Settings

CONNECT_TIMEOUT_S = 3
SOCKET_TIMEOUT_S = 10
WAIT_RETRY_S = 1.0
WAIT_REPORT_EVERY_S = 30.0


class BrokerError(Qwen3BatchError):
    """The broker cannot be used; the message names it without its password."""


class BrokerUnreachableError(BrokerError):
    """Nothing answers (yet): Redis is down, starting, or the host or port is wrong."""


class BrokerAuthError(BrokerError):
    """Redis answered and refused the credentials: waiting will not help."""


class BrokerTLSError(BrokerError):
    """The TLS handshake failed (certificate not trusted, wrong name, TLS vs plain port)."""


def redact_url(url: str) -> str:
    """scheme://host:port/db with any password replaced by ***, and the query (TLS file names)
    left out, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    where = f"{host}:{parts.port}" if parts.port else host
    user = parts.username or ""
    creds = f"{user}:***@" if parts.password is not None else (f"{user}@" if user else "")
    return f"{parts.scheme}://{creds}{where}{parts.path}"


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.broker_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                socket_timeout=SOCKET_TIMEOUT_S)


def check_broker(client: redis.Redis, settings: Settings) -> None:
    """One PING, with the failure translated into what the user has to fix."""
    where = redact_url(settings.broker_url)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        problem = "refused the password" if urlsplit(settings.broker_url).password else \
            f"requires a password and {ENV_PREFIX}BROKER_URL has none"
        raise BrokerAuthError(f"Redis at {where} {problem} ({exc}). Put the password Redis was started with "
                              f"(requirepass) into {ENV_PREFIX}BROKER_URL as redis://:PASSWORD@host:port/db") from exc
    except redis.ConnectionError as exc:
        if is_tls_failure(exc):
            raise BrokerTLSError(f"TLS with Redis at {where} failed ({exc}). Check {ENV_PREFIX}BROKER_TLS_CA_FILE "
                                 "(the CA that signed Redis's certificate), that the certificate names this host, "
                                 "and that the port is Redis's tls-port") from exc
        raise BrokerUnreachableError(f"no broker answers at {where} ({exc}). Start Redis (see README) or set "
                                     f"{ENV_PREFIX}BROKER_URL") from exc
    except redis.ResponseError as exc:  # e.g. a server that wants AUTH but got none on an old protocol
        raise BrokerAuthError(f"Redis at {where} refused the connection: {exc}") from exc


def check_eviction_policy(client: redis.Redis, settings: Settings) -> None:
    """Refuse a Redis that evicts keys when full: it would silently delete queued shards and
    heartbeats. INFO works where CONFIG is disabled (managed Redis services)."""
    policy = client.info("memory").get("maxmemory_policy", "")
    if policy and policy != defaults.BROKER_MAXMEMORY_POLICY:
        raise BrokerError(f"Redis at {redact_url(settings.broker_url)} runs with maxmemory-policy {policy}: when "
                          "full it deletes keys, queued shards included, without a word. Start it with "
                          f"--maxmemory-policy {defaults.BROKER_MAXMEMORY_POLICY} (or CONFIG SET maxmemory-policy "
                          f"{defaults.BROKER_MAXMEMORY_POLICY}); a full Redis then refuses writes instead")


def is_tls_failure(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLError) or "SSL" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def wait_for_broker(settings: Settings, on_wait: Callable[[str], None] = lambda message: None,
                    timeout_s: float | None = None) -> redis.Redis:
    """A client once Redis answers. An unreachable broker is waited for (a worker may start before
    Redis does, as in `docker compose up`); a refused password or certificate fails at once."""
    client = redis_client(settings)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    reported_at = None
    while True:
        try:
            check_broker(client, settings)
            return client
        except BrokerUnreachableError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if reported_at is None or time.monotonic() - reported_at >= WAIT_REPORT_EVERY_S:
                on_wait(f"waiting for the broker: {exc}")
                reported_at = time.monotonic()
            time.sleep(WAIT_RETRY_S)
