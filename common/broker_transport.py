"""kombu's Redis transport, reading every entry it takes from Redis as untrusted input.

Anyone who can write to Redis can push anything onto a queue a worker consumes, publish on the
remote-control channel it listens to, or plant an entry among the unacked messages it requeues.
Stock kombu decodes and reads all of these in the worker's main process without a check:
`LPUSH <queue> x` ends the worker (JSONDecodeError), `LPUSH <queue> []` too (TypeError), and an
envelope without a delivery_tag makes Celery reconnect and receive it again, forever. Here each
entry is checked before kombu reads it; one that kombu could not read as a message is dropped with
one log line and the worker goes on consuming. What Celery reads next from a well-formed envelope
(its headers, the body) is guarded by common/celery_consumer.py.
"""

import functools
import logging

import kombu.transport
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger(__name__)

# Of a dropped entry, its log line shows this much: enough to recognise it, never a flood.
SHOWN_CHARS = 200


def use_guarded_transport() -> None:
    """Every kombu connection of this process to a redis://, rediss:// or redis+socket:// URL uses
    this module's Transport. Registered under kombu's own aliases rather than as Celery's
    broker_transport: a redis+socket:// URL names its transport itself (kombu then ignores
    broker_transport), and kombu applies its rediss:// defaults only to a transport named so."""
    for scheme in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
        kombu.transport._transport_cache.pop(scheme, None)  # resolved before: look it up again


def entry_problem(entry: bytes | str) -> str | None:
    """Why kombu could not read this queue entry as a message; None when it can."""
    try:
        payload = loads(bytes_to_str(entry))
    except (ValueError, TypeError, RecursionError):  # not JSON, a kombu type tag with a bad value, nested too deep
        return "not JSON"
    return envelope_problem(payload)


def envelope_problem(payload) -> str | None:
    """The fields that kombu's Message, its ack emulation (QoS.append) and Celery read without a
    check, each of the type kombu itself writes."""
    if not isinstance(payload, dict):
        return "not a JSON object"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "no properties object"
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        return "no delivery_tag string"
    info = properties.get("delivery_info")
    if not (isinstance(info, dict) and isinstance(info.get("exchange"), str)
            and isinstance(info.get("routing_key"), str)):
        return "no delivery_info with an exchange and a routing_key"
    if not isinstance(payload.get("headers"), dict):
        return "no headers object"
    if not all(isinstance(payload.get(field), (str, type(None))) for field in ("content-type", "content-encoding")):
        return "a content-type or content-encoding that is not a string"
    return body_problem(payload.get("body"), properties.get("body_encoding"))


def body_problem(body, encoding) -> str | None:
    """kombu decodes a body by its body_encoding (Channel.decode_body): base64 as Celery sends it,
    or none (absent, or utf-8)."""
    if not isinstance(body, str):
        return "a body that is not a string"
    if not encoding or (isinstance(encoding, str) and encoding.lower() == "utf-8"):
        return None
    codec = Channel.codecs.get(encoding) if isinstance(encoding, str) else None
    if codec is None:
        return "an unknown body_encoding"
    try:
        codec.decode(body)
    except ValueError:  # binascii.Error
        return f"a body that is not {encoding}"
    return None


def drop(source: str, problem: str, entry) -> None:
    """One line: where the entry was, why it is no message, and its beginning (repr: an entry
    cannot forge log lines with newlines)."""
    text = bytes_to_str(entry) if isinstance(entry, (bytes, str)) else repr(entry)
    more = f"... ({len(text)} characters)" if len(text) > SHOWN_CHARS else ""
    log.error("dropped an entry of %s that is not a message (%s): %r%s", source, problem, text[:SHOWN_CHARS], more)


def keep(key: bytes | str, entry: bytes | str) -> bool:
    """Whether an entry popped off the Redis list `key` is a message; one that is not is dropped."""
    problem = entry_problem(entry)
    if problem:
        # kombu keeps a queue's priority steps in lists named <queue><sep><step>
        drop(f"queue {bytes_to_str(key).split(Channel.sep, 1)[0]!r}", problem, entry)
    return problem is None


class CheckedEntries:
    """Mixed into kombu's redis-py client: what BRPOP (how a worker consumes) and RPOP (kombu's
    basic_get) take off a queue is checked before kombu decodes it. For a dropped entry kombu is
    told that nothing came, as when a BRPOP times out: it simply asks again."""

    def parse_response(self, connection, command_name, **options):
        reply = super().parse_response(connection, command_name, **options)
        if command_name == "BRPOP" and reply and not keep(*reply):
            return None
        return reply

    def rpop(self, name, count=None):
        entry = super().rpop(name, count)
        if count is None and entry is not None and not keep(name, entry):
            return None
        return entry


@functools.cache
def with_entry_checks(client_class: type) -> type:
    return type(f"Checked{client_class.__name__}", (CheckedEntries, client_class), {"__module__": __name__})


class QoS(kombu_redis.QoS):
    def restore_by_tag(self, tag, client=None, leftmost=False):
        """kombu reads an unacked entry as [message, exchange, routing key] without a check, in the
        sweep that requeues the messages of lost workers (and at start): a planted entry would end
        the worker, or stop every sweep at it. It is dropped instead."""
        try:
            super().restore_by_tag(tag, client=client, leftmost=leftmost)
        except (ValueError, TypeError, RecursionError):  # raised only by kombu's reading of the entry
            with self.channel.conn_or_acquire(client) as redis_client:
                entry = redis_client.hget(self.unacked_key, tag)
            self._remove_from_indices(tag).execute()
            drop(f"the unacked messages (tag {bytes_to_str(tag)!r})", "not [message, exchange, routing key]",
                 entry if entry is not None else "")


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _get_client(self):
        client = super()._get_client()  # redis.Redis, or with a global_keyprefix a partial of kombu's client
        if isinstance(client, functools.partial):
            return functools.partial(with_entry_checks(client.func), *client.args, **client.keywords)
        return with_entry_checks(client)

    def _deliver_fanout_message(self, message, exchange):
        """Remote control (celery.pidbox) arrives by PUBLISH, which kombu decodes itself (and skips
        when it cannot): the envelope is checked here."""
        problem = envelope_problem(message)
        if problem:
            drop(f"the fanout exchange {exchange!r}", problem, message)
            return False
        return super()._deliver_fanout_message(message, exchange)


class Transport(kombu_redis.Transport):
    Channel = Channel
