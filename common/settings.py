"""One settings object, read from environment variables with the prefix QWEN3B_."""

import os
from dataclasses import dataclass, fields

from common import defaults
from common.errors import ConfigError

ENV_PREFIX = "QWEN3B_"


@dataclass(frozen=True)
class Settings:
    broker_url: str = defaults.DEFAULT_BROKER_URL
    task_time_limit_s: int = defaults.DEFAULT_TASK_TIME_LIMIT_S
    task_soft_time_limit_s: int = defaults.DEFAULT_TASK_SOFT_TIME_LIMIT_S
    visibility_timeout_s: int = defaults.DEFAULT_VISIBILITY_TIMEOUT_S
    max_attempts: int = defaults.DEFAULT_MAX_ATTEMPTS
    retry_countdown_s: int = defaults.DEFAULT_RETRY_COUNTDOWN_S
    soft_shutdown_timeout_s: int = defaults.DEFAULT_SOFT_SHUTDOWN_TIMEOUT_S
    model_cache: str = ".cache/models"

    def __post_init__(self):
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ConfigError(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed "
                f"{ENV_PREFIX}TASK_TIME_LIMIT_S ({self.task_time_limit_s}), or long shards run twice in parallel")
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ConfigError(f"{ENV_PREFIX}TASK_SOFT_TIME_LIMIT_S must be below {ENV_PREFIX}TASK_TIME_LIMIT_S")
        if self.max_attempts < 1:
            raise ConfigError(f"{ENV_PREFIX}MAX_ATTEMPTS must be >= 1")


def load_settings(environ: dict | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values = {}
    for f in fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        try:
            values[f.name] = int(raw) if f.type in (int, "int") else raw
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not an integer") from None
    return Settings(**values)


def parse_seqlens(text: str) -> tuple[int, ...]:
    """"64,128,256,512" -> (64, 128, 256, 512), for the --seqlens options."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--seqlens {text!r}: expected comma-separated integers like 64,128,256,512") from None
