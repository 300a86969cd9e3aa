"""The Celery app and its reliability settings (see ../shared/reference/reliability.md)."""

import ssl

from celery import Celery
from kombu import Exchange, Queue

from common import defaults
from common.broker_transport import use_guarded_transport
from common.errors import ConfigError
from common.settings import ENV_PREFIX, Settings


# Settings that must be equal on every consumer of one broker: each consumer re-queues unacked
# messages by ITS OWN visibility timeout, and a shard must be treated the same whichever host
# picks it up. Workers register them in Redis and refuse to start on a difference
# (common/cluster_settings.py).
CLUSTER_WIDE_SETTINGS = ("visibility_timeout", "task_time_limit", "task_soft_time_limit", "task_serializer",
                         "accept_content", "task_acks_late", "task_reject_on_worker_lost", "task_acks_on_timeout",
                         "worker_prefetch_multiplier")
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
    use_guarded_transport()  # anyone who can write to Redis can push anything onto our queues
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
        # Celery's default acks (drops) a message whose task hit the hard time limit: the shard would
        # be lost with no retry and no quarantine. Requeued instead, it counts as a failed attempt.
        task_acks_on_timeout=False,
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
        # A Redis blip must not kill the shards being computed (minutes of device time): a shard whose
        # ack is lost with the connection runs again later and finds itself committed.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout_s,
        worker_enable_soft_shutdown_on_idle=True,
        worker_send_task_events=True,  # visible in Flower
        task_send_sent_event=True,  # Flower shows queued shards, not only started ones
        worker_hijack_root_logger=False,
        worker_redirect_stdouts_level="INFO",  # the weight-loading bar and prints are progress, not warnings
        worker_consumer="common.celery_consumer:GuardedConsumer",  # a message Celery cannot read is dropped
    )
    configure_signing(app, settings)
    return app


# What stays decodable by kombu consumers that name no accepted content types, after
# setup_security: kombu's own default (json) plus the signed messages. With Celery's default
# (None) setup_security disables json as well, for every app of the process.
SIGNING_DECODABLE = ("application/json", "application/data")


def configure_signing(app: Celery, settings: Settings) -> None:
    """Celery's message signing (celery.security, the `auth` serializer), when QWEN3B_SIGNING_* are set.

    Task messages (shards, compile requests, retries, the reconciler's re-publishes) and remote-control
    commands and replies are signed with this process's key; a consumer accepts only bodies signed by a
    certificate of its cert store: anything else is dropped, never run. Only the message BODY (the task's
    arguments) is signed, not the headers (task name, id, retries, ETA, time limits); nothing stops a
    replay of a signed message. Events (Flower's view) stay unsigned JSON.

    setup_security is process-global: it registers ONE `auth` serializer in kombu's registry, so every
    signing app of a process signs and verifies with the identity configured last (every process of
    this project has one). What else it changes globally is undone or kept at kombu's defaults: json
    stays decodable (SIGNING_DECODABLE) and kombu's default serializer stays what it was, so apps
    without signing built in the same process keep working.
    """
    if not settings.signs_messages:
        return
    check_signing_files(settings)
    from kombu.serialization import registry

    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],  # unsigned (json) or wrongly signed task messages are refused
        result_accept_content=["json"],  # results are off (task_ignore_result); kept explicit
        security_key=settings.signing_key,
        security_certificate=settings.signing_cert,
        security_cert_store=settings.signing_cert_store,
        security_digest="sha256",
    )
    default = (registry._default_encode, registry._default_content_type, registry._default_content_encoding)
    try:
        app.setup_security(allowed_serializers=list(SIGNING_DECODABLE), digest="sha256", serializer="json")
    except Exception as exc:  # SecurityError, ImproperlyConfigured, OSError: a bad file in the settings
        raise ConfigError(f"message signing ({ENV_PREFIX}SIGNING_*): {exc}") from exc
    finally:
        # setup_security also makes `auth` kombu's default serializer for every publisher of the
        # process. Ours name theirs (task_serializer, event_serializer), so the default goes back.
        registry._default_encode, registry._default_content_type, registry._default_content_encoding = default


def check_signing_files(settings: Settings) -> None:
    """Clear errors for what Celery would only find out later, or report as a traceback: no
    cryptography, a key that is not RSA or does not belong to the certificate, an expired
    certificate, a cert store without certificates."""
    try:
        from celery.security.certificate import Certificate, FSCertStore
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except Exception as exc:  # ImproperlyConfigured (celery.security) or ImportError
        raise ConfigError(f"message signing ({ENV_PREFIX}SIGNING_*) needs the cryptography package: "
                          "pip install 'qwen3-batch[signing]' (or 'cryptography>=42')") from exc
    from celery.exceptions import SecurityError

    names = {"key": f"{ENV_PREFIX}SIGNING_KEY={settings.signing_key}",
             "cert": f"{ENV_PREFIX}SIGNING_CERT={settings.signing_cert}",
             "store": f"{ENV_PREFIX}SIGNING_CERT_STORE={settings.signing_cert_store}"}
    what = "key"
    try:
        with open(settings.signing_key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        what = "cert"
        with open(settings.signing_cert, encoding="ascii", errors="replace") as f:
            cert = Certificate(f.read())
        what = "store"
        store = FSCertStore(settings.signing_cert_store)
    except (OSError, ValueError, TypeError, SecurityError) as exc:
        raise ConfigError(f"{names[what]}: {exc} (message signing needs an unencrypted PEM RSA key, its PEM "
                          "certificate and a folder of PEM certificates only; scripts/make_tls_certs.sh "
                          "--signing makes them)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{names['key']}: not an RSA key (Celery's message signing supports RSA only)")
    if key.public_key().public_numbers() != cert.get_pubkey().public_numbers():
        raise ConfigError(f"{names['key']} does not belong to {names['cert']}: its messages would be refused")
    if cert.has_expired():
        raise ConfigError(f"{names['cert']}: the certificate has expired: its messages would be refused")
    if not list(store.itercerts()):
        raise ConfigError(f"{names['store']}: no certificates in it: every message would be refused")


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
