"""One settings object, read from environment variables with the prefix QWEN3B_.

`.env.example` lists every variable with its meaning; docker-compose.yml hands the same ones to
every service, so a producer, a worker and Flower on any host agree on the broker and the limits.
"""

import os
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from common import defaults
from common.errors import ConfigError
from common.io.fs import is_object_url, join
from common.paths import is_within, real

ENV_PREFIX = "QWEN3B_"
BROKER_SCHEMES = ("redis", "rediss")
# Our TLS settings -> the query parameters that kombu (the workers' broker connection) and
# redis-py (heartbeats, attempts, the producer) both read from a rediss:// URL.
TLS_URL_PARAMS = {"broker_tls_ca_file": "ssl_ca_certs", "broker_tls_cert_file": "ssl_certfile",
                  "broker_tls_key_file": "ssl_keyfile"}


@dataclass(frozen=True)
class Settings:
    # redis://[:password@]host:port/db, or rediss:// for TLS. After loading it also carries the TLS
    # options below as query parameters, so every client that is handed this URL uses them.
    broker_url: str = defaults.DEFAULT_BROKER_URL
    broker_tls_ca_file: str = ""  # PEM of the CA that signed Redis's certificate
    broker_tls_cert_file: str = ""  # a client certificate, when Redis checks clients (tls-auth-clients yes)
    broker_tls_key_file: str = ""
    # The shared output store every host mounts at the same path. When set, a relative --out is
    # placed under it. A worker writes nowhere else: it refuses shard messages whose output is
    # outside it. Unset, a worker writes only under the folder it was started in (and says so).
    output_root: str = ""
    # Comma-separated folders a worker may read corpora and (compile workers) checkpoints from;
    # unset: the folder it was started in. Plans naming inputs elsewhere are refused.
    input_roots: str = ""
    # Compiled fixed-shape models (ONNX, VACC): a folder every compile worker and worker mounts.
    artifact_store: str = defaults.DEFAULT_ARTIFACT_STORE
    # Where a worker keeps local copies of a bucket store's artifacts, one folder per content hash.
    artifact_cache: str = defaults.DEFAULT_ARTIFACT_CACHE
    task_time_limit_s: int = defaults.DEFAULT_TASK_TIME_LIMIT_S
    task_soft_time_limit_s: int = defaults.DEFAULT_TASK_SOFT_TIME_LIMIT_S
    visibility_timeout_s: int = defaults.DEFAULT_VISIBILITY_TIMEOUT_S
    max_attempts: int = defaults.DEFAULT_MAX_ATTEMPTS
    retry_countdown_s: int = defaults.DEFAULT_RETRY_COUNTDOWN_S
    soft_shutdown_timeout_s: int = defaults.DEFAULT_SOFT_SHUTDOWN_TIMEOUT_S
    # A worker whose heartbeat is older than this is gone: its shard is published again at once.
    heartbeat_ttl_s: int = defaults.WORKER_HEARTBEAT_TTL_S
    reconcile_interval_s: int = defaults.RECONCILE_INTERVAL_S
    # 1: serve compiled artifacts published without validation (a VACC compile on a host without a card)
    allow_unvalidated_artifacts: int = 0
    model_cache: str = ".cache/models"
    signing_key: str = ""  # PEM RSA private key that signs the messages this process sends (message signing)
    signing_cert: str = ""  # PEM certificate of signing_key; other processes need it in their cert store
    signing_cert_store: str = ""  # a folder of PEM certificates: only messages signed by one of them are accepted

    def __post_init__(self):
        if self.visibility_timeout_s < 2 * self.task_time_limit_s:
            raise ConfigError(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must be at least twice "
                f"{ENV_PREFIX}TASK_TIME_LIMIT_S ({self.task_time_limit_s}), or long shards run twice in parallel")
        if self.heartbeat_ttl_s < 3:
            raise ConfigError(f"{ENV_PREFIX}HEARTBEAT_TTL_S must be >= 3 (workers beat every TTL/6 s)")
        if self.reconcile_interval_s < 1:
            raise ConfigError(f"{ENV_PREFIX}RECONCILE_INTERVAL_S must be >= 1")
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ConfigError(f"{ENV_PREFIX}TASK_SOFT_TIME_LIMIT_S must be below {ENV_PREFIX}TASK_TIME_LIMIT_S")
        if self.max_attempts < 1:
            raise ConfigError(f"{ENV_PREFIX}MAX_ATTEMPTS must be >= 1")
        object.__setattr__(self, "broker_url", broker_url_with_tls(self))
        check_signing(self)

    @property
    def signs_messages(self) -> bool:
        """Whether this process signs its task messages and accepts only signed ones (common/celery_app.py)."""
        return bool(self.signing_key and self.signing_cert and self.signing_cert_store)

    @property
    def broker_uses_tls(self) -> bool:
        return urlsplit(self.broker_url).scheme == "rediss"

    def tls_options(self) -> dict:
        """The ssl_* options of a rediss:// broker URL (empty for redis://), for Celery's broker_use_ssl."""
        if not self.broker_uses_tls:
            return {}
        return {k: v for k, v in parse_qsl(urlsplit(self.broker_url).query) if k.startswith("ssl_")}

    def output_location(self, out: str) -> str:
        """Where an --out argument points: under output_root when it is relative; an error when it
        is outside output_root (workers would refuse its shards)."""
        if not self.output_root:
            return out
        absolute = is_object_url(out) or Path(out).is_absolute()
        path = out if absolute else join(self.output_root, out)
        if not self.output_allowed(str(path)):
            raise ConfigError(f"output {out} is outside {ENV_PREFIX}OUTPUT_ROOT={self.output_root}; workers only "
                              "write under it. Pass a path inside it (or a relative one)")
        return str(path)

    def reuse_location(self, source: str) -> str:
        """Where a --reuse argument points: under output_root when it is relative. Workers read it
        only inside their output root or input roots: elsewhere, an error naming both settings."""
        if not self.output_root:
            return source
        absolute = is_object_url(source) or Path(source).is_absolute()
        path = str(source if absolute else join(self.output_root, source))
        roots = (self.output_root, *[r.strip() for r in self.input_roots.split(",") if r.strip()])
        if not any(is_within(path, root) for root in roots):
            raise ConfigError(f"--reuse {source}: workers read it only inside {ENV_PREFIX}OUTPUT_ROOT or "
                              f"{ENV_PREFIX}INPUT_ROOTS ({', '.join(roots)}); pass a source inside one of them")
        return path

    def output_allowed(self, out: str) -> bool:
        """Whether the producer's own --out passes its QWEN3B_OUTPUT_ROOT (any, when unset)."""
        return not self.output_root or (is_within(out, self.output_root) and real(out) != real(self.output_root))

    # --- what a worker accepts from messages (the defaults are safe: the start folder only) ----------
    @property
    def worker_output_root(self) -> str:
        return real(self.output_root or os.getcwd())

    @property
    def worker_input_roots(self) -> tuple[str, ...]:
        roots = [r.strip() for r in self.input_roots.split(",") if r.strip()]
        return tuple(real(r) for r in roots) or (real(os.getcwd()),)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_ttl_s / 6


def broker_url_with_tls(settings: Settings) -> str:
    """The broker URL with the TLS settings folded in, and certificate checks on by default: kombu
    alone would accept any certificate for a bare rediss:// URL. Idempotent."""
    parts = urlsplit(settings.broker_url)
    if parts.scheme not in BROKER_SCHEMES:
        raise ConfigError(f"{ENV_PREFIX}BROKER_URL must start with redis:// or rediss:// (TLS), "
                          f"not {parts.scheme or 'nothing'}://")
    given = {name: getattr(settings, name) for name in TLS_URL_PARAMS if getattr(settings, name)}
    if parts.scheme != "rediss":
        if given:
            names = ", ".join(ENV_PREFIX + n.upper() for n in given)
            raise ConfigError(f"{names}: TLS options need a rediss:// broker URL, and {ENV_PREFIX}BROKER_URL "
                              "starts with redis://")
        return settings.broker_url
    for name, path in given.items():
        if not os.path.isfile(path):
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}={path}: no such file")
    query = dict(parse_qsl(parts.query))
    query.setdefault("ssl_cert_reqs", "required")
    query.update({TLS_URL_PARAMS[name]: path for name, path in given.items()})
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def check_signing(settings: Settings) -> None:
    """Message signing is all three settings or none; each one names something that exists."""
    names = {"signing_key": "file", "signing_cert": "file", "signing_cert_store": "folder"}
    given = {name for name in names if getattr(settings, name)}
    if not given:
        return
    if given != set(names):
        missing = ", ".join(ENV_PREFIX + n.upper() for n in names if n not in given)
        present = ", ".join(ENV_PREFIX + n.upper() for n in names if n in given)
        raise ConfigError(f"message signing needs {ENV_PREFIX}SIGNING_KEY, {ENV_PREFIX}SIGNING_CERT and "
                          f"{ENV_PREFIX}SIGNING_CERT_STORE together: {present} set, {missing} not set "
                          "(set all three to sign messages, or none)")
    for name, kind in names.items():
        path = getattr(settings, name)
        if not (os.path.isdir(path) if kind == "folder" else os.path.isfile(path)):
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}={path}: no such {kind}")


def load_settings(environ: dict | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values = {}
    for f in fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None or raw == "":  # docker compose passes an unset ${VAR:-} as ""
            continue
        try:
            values[f.name] = int(raw) if f.type in (int, "int") else raw
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not an integer") from None
    return Settings(**values)
