"""The Celery app and its reliability settings (see ../shared/reference/reliability.md)."""

import ssl

from celery import Celery
from kombu import Exchange, Queue

from common import defaults
from common.settings import Settings


# Settings that must be equal on every consumer of one broker: each consumer re-queues unacked
# messages by ITS OWN visibility timeout, and a shard must be treated the same whichever host
# picks it up. Workers register them in Redis and refuse to start on a difference
# (common/cluster_settings.py).
CLUSTER_WIDE_SETTINGS = ("visibility_timeout", "task_time_limit", "task_soft_time_limit", "task_serializer",
                         "accept_content", "task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


# Publishing while Redis is down fails after bounded retries instead of hanging the producer.
PUBLISH_RETRY_POLICY = {"max_retries": defaults.PUBLISH_MAX_RETRIES, "interval_start": 0,
                        "interval_step": defaults.PUBLISH_RETRY_INTERVAL_S, "interval_max": 2}


def make_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def make_app(settings: Settings, queues: list[str] = ()) -> Celery:
    """queues: what this process consumes. The producer passes none and names a queue per send."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # A publish while Redis is down must fail after bounded retries, not hang.
        "max_retries": defaults.PUBLISH_MAX_RETRIES,
        "interval_start": 0, "interval_step": defaults.PUBLISH_RETRY_INTERVAL_S, "interval_max": 2,
        # kombu scans for unacked messages past the visibility timeout only every interval x
        # throttle seconds (10 x 10 by default): a lost node's shard would wait 100 s more.
        # One ZRANGE per worker every few seconds is cheap.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
    }
    app = Celery("qwen3batch", broker=settings.broker_url, set_as_current=False)
    declared = [make_queue(q) for q in queues] or [make_queue("unused")]
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # pickle would let anyone who can write to Redis run code
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,  # the producer reads commit records, never results
        task_acks_late=True,  # an early ack loses the shard when the worker dies mid-task
        task_reject_on_worker_lost=True,  # a SIGKILLed child requeues instead of acking
        worker_prefetch_multiplier=1,  # no hoarding of long shards by one process
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        visibility_timeout=settings.visibility_timeout_s,
        worker_proc_alive_timeout=defaults.DEFAULT_WORKER_PROC_ALIVE_TIMEOUT_S,
        task_create_missing_queues=False,  # a typo in a queue name fails loudly
        task_queues=declared,
        task_default_queue=declared[0].name,
        broker_use_ssl=broker_ssl(settings),
        broker_connection_retry_on_startup=True,  # wait for Redis instead of exiting
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout_s,
        worker_enable_soft_shutdown_on_idle=True,
        worker_send_task_events=True,  # visible in Flower
        task_send_sent_event=True,  # Flower shows queued shards, not only started ones
        worker_hijack_root_logger=False,
    )
    return app


def broker_ssl(settings: Settings) -> dict | None:
    """TLS options for kombu, certificate checks on unless the URL says otherwise."""
    options = settings.tls_options()
    if not options:
        return None
    wanted = options.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    return dict(options, ssl_cert_reqs=CERT_REQS.get(wanted, ssl.CERT_REQUIRED))


def cluster_wide_settings(app: Celery) -> dict:
    conf = app.conf
    values = {name: conf[name] for name in CLUSTER_WIDE_SETTINGS if name != "visibility_timeout"}
    return {"visibility_timeout": conf.broker_transport_options["visibility_timeout"], **values}
