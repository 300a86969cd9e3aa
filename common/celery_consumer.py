"""Celery's worker consumer, dropping a task message that Celery itself cannot read instead of
stopping the worker.

common/broker_transport.py lets through only envelopes that kombu can read. What Celery reads
next, in the worker's main process, it reads without a check: a body that is not [args, kwargs,
options], a task name that is a list or an `id` that is an object end the worker; a message
without an `id` header makes it reconnect and receive that message again, forever (kombu counts
KeyError among the connection errors); a time limit that is not two numbers leaves it idle for
good. Celery's own answers to an unknown task, an undecodable body or refused content (a log line,
the message dropped) stay as they are; every other failure gets the same answer here.
"""

import logging
import math

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)

SHOWN_CHARS = 200


class GuardedConsumer(Consumer):
    def create_task_handler(self, *args, **kwargs):
        handle = super().create_task_handler(*args, **kwargs)
        # Errors of the broker connection still reach Celery, which reconnects. kombu counts KeyError
        # among them (a stale socket), but in a message's handling it is a header the message lacks.
        broker_errors = tuple(e for e in (*self.connection_errors, *self.channel_errors) if e is not KeyError)

        def on_task_received(message):
            problem = headers_problem(message.headers)
            if problem:
                return drop(message, problem)
            try:
                return handle(message)
            except broker_errors:
                raise
            except Exception as exc:
                drop(message, " ".join(f"{type(exc).__name__}: {exc}".split()))  # one line, whatever it holds

        return on_task_received


def headers_problem(headers) -> str | None:
    """What must hold BEFORE Celery takes a message: its failures after it has reserved a pool slot
    (a time limit that is not two numbers) would leave the slot taken and the worker idle for good.
    Every message of ours is of Celery's protocol 2 (a `task` header): protocol 1, which carries
    these fields in the body, is not accepted."""
    if not isinstance(headers, dict) or not isinstance(headers.get("task"), str):
        return "no task header string: not a Celery task message"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "no id header string"
    limits = headers.get("timelimit")
    if limits is not None and not (isinstance(limits, list) and len(limits) == 2 and all(map(is_time_limit, limits))):
        return "a timelimit header that is not [hard, soft] seconds"
    return None


def is_time_limit(value) -> bool:
    return value is None or (type(value) in (int, float) and math.isfinite(value) and value >= 0)


def drop(message, problem: str) -> None:
    headers = message.headers if isinstance(message.headers, dict) else {}
    log.error("dropped a task message that Celery cannot read (%s): routing key %r, task %r, id %r",
              problem[:SHOWN_CHARS], shown((message.delivery_info or {}).get("routing_key")),
              shown(headers.get("task")), shown(headers.get("id")))
    if not message.acknowledged:
        message.reject(requeue=False)


def shown(value) -> str:
    return str(value)[:SHOWN_CHARS]
