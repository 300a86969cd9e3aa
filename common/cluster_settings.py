"""The reliability settings every worker of one cluster must share, registered once in Redis.

kombu re-queues an unacked message as soon as it is older than the visibility timeout of ANY
consumer of the broker (../shared/reference/reliability.md): one worker started with a shorter
timeout redelivers every long shard of the cluster while it still runs. Time limits, serializers,
late acks and the attempt cap must agree as well, or a shard is treated differently depending on
which host picked it up. So the first worker to start registers its settings under
keys.cluster_settings(); every later one compares its own and refuses to start on a difference.
Changing them is deliberate: stop the workers, `producer cluster-settings --reset`, restart.
"""

import json
import time

import redis

from common import keys
from common.celery_app import cluster_wide_settings, make_app
from common.errors import Qwen3BatchError
from common.settings import ENV_PREFIX, Settings

# Where a setting comes from, so the error says what to change. The rest are fixed in the code:
# a difference there means the hosts run different versions of it.
SETTING_SOURCES = {
    "visibility_timeout": f"{ENV_PREFIX}VISIBILITY_TIMEOUT_S",
    "task_time_limit": f"{ENV_PREFIX}TASK_TIME_LIMIT_S",
    "task_soft_time_limit": f"{ENV_PREFIX}TASK_SOFT_TIME_LIMIT_S",
    "max_attempts": f"{ENV_PREFIX}MAX_ATTEMPTS",
    # message signing switches the serializer: "auth" with the QWEN3B_SIGNING_* files, "json" without
    "task_serializer": f"{ENV_PREFIX}SIGNING_KEY / _CERT / _CERT_STORE (message signing)",
    "accept_content": f"{ENV_PREFIX}SIGNING_KEY / _CERT / _CERT_STORE (message signing)",
}
RESET_HINT = ("To change them for the whole cluster: stop every worker, run `producer cluster-settings --reset`, "
              "then start the workers with the new settings.")


class ClusterSettingsMismatch(Qwen3BatchError):
    """This process's reliability settings differ from the ones registered for the cluster."""


def shared_settings(settings: Settings) -> dict:
    """What this process would run with, as JSON values (so it compares equal after a round trip)."""
    values = dict(cluster_wide_settings(make_app(settings)), max_attempts=settings.max_attempts)
    return json.loads(json.dumps(values))


def registered_settings(client: redis.Redis) -> dict | None:
    """{"settings": {...}, "registered_by": name, "registered_at": unix time}, or None."""
    raw = client.get(keys.cluster_settings())
    return json.loads(raw) if raw else None


def register_or_check(client: redis.Redis, settings: Settings, registrant: str) -> dict:
    """Register this process's settings if none are, else compare; returns the registered record."""
    mine = shared_settings(settings)
    record = {"settings": mine, "registered_by": registrant, "registered_at": time.time()}
    while True:
        # SET NX: of two workers starting at once with different settings, exactly one registers.
        if client.set(keys.cluster_settings(), json.dumps(record), nx=True):
            return record
        registered = registered_settings(client)
        if registered is not None:  # else it was reset between the two calls: try to register again
            break
    problems = differences(mine, registered["settings"])
    if problems:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(registered["registered_at"]))
        raise ClusterSettingsMismatch(
            f"{registrant} refuses to start: its reliability settings differ from the ones registered for this "
            f"cluster (by {registered['registered_by']} at {when}):\n  " + "\n  ".join(problems) + f"\n{RESET_HINT}")
    return registered


def differences(mine: dict, registered: dict) -> list[str]:
    lines = []
    for name in sorted(set(mine) | set(registered)):
        here, there = mine.get(name, "(not set)"), registered.get(name, "(not set)")
        if here != there:
            source = SETTING_SOURCES.get(name, "fixed in the code: the hosts run different versions")
            lines.append(f"{name}: this process {here!r}, cluster {there!r} ({source})")
    return lines


def reset(client: redis.Redis) -> bool:
    """Forget the registered settings; the next worker to start registers its own."""
    return bool(client.delete(keys.cluster_settings()))
