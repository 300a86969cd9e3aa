"""A worker's name is its identity in the cluster: its heartbeat key, its personal queue, the worker
that the reconciler (common/reconcile.py) sees holding a shard. Two live workers under one name share
one heartbeat, each overwriting the other's current shard, and the reconciler then publishes again
the shards the other one is still running: duplicate computations, for as long as both live.

So a worker started without --name gets a name of its own (`<task>-<device>-<6 hex>@<host>`), and
one started with a name that a live worker holds is refused before Celery starts. A worker started
again under the name of a process that died (a crash, a container restart) must start, or a
container would restart in a loop: the holder counts as alive only when its heartbeat is renewed."""

import json
import os
import secrets
import socket
import time
from collections.abc import Callable

import redis

from common import keys
from common.errors import ConfigError

POLL_S = 0.25


class NameTaken(ConfigError):
    """A live worker already runs under the name this one was given."""


def default_name(prefix: str, device: str, client: redis.Redis | None = None) -> str:
    """`embed-cpu-3fa9c1@host`: unique per process (two workers of one device on one host, or two
    containers sharing the host's name, never share it), readable, and a valid queue name
    (`worker.<name>`). With a client, a name whose heartbeat key exists is not chosen."""
    for _ in range(8):
        name = f"{prefix}-{device.replace(':', '')}-{secrets.token_hex(3)}@{socket.gethostname()}"
        if client is None or not client.exists(keys.worker_heartbeat(name)):
            return name
    return name  # 8 draws of 24 bits taken: the check below says so


def check_name_free(client: redis.Redis, name: str, say: Callable[[str], None] = lambda line: None,
                    poll_s: float = POLL_S) -> None:
    """Return when no live process holds worker NAME; NameTaken naming the holder otherwise.

    A heartbeat with no renewal is not proof of life: its holder may have died a moment ago. A holder
    on this host whose processes are gone is dead at once. Any other (another host, or a pid alive
    here, which may be another process in another pid namespace) is alive only if its heartbeat is
    renewed (every QWEN3B_HEARTBEAT_TTL_S / 6 s) before it expires; this waits at most that long."""
    key = keys.worker_heartbeat(name)
    raw = client.get(key)
    holder = _parse(raw)
    if holder is None:
        return
    if _gone_from_this_host(holder):
        say(f"worker name {name}: its last holder, {describe(holder)}, is gone; taking the name over")
        return
    ttl_s = client.ttl(key)
    if ttl_s < 0:
        return  # a key without a TTL is no heartbeat of ours: the first beat replaces it
    say(f"worker name {name}: {describe(holder)} holds it; waiting up to {ttl_s}s for its next heartbeat to see "
        "whether it is alive")
    deadline = time.monotonic() + ttl_s + 1
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        now = client.get(key)
        if now is None:
            say(f"worker name {name}: the heartbeat of {describe(holder)} expired; taking the name over")
            return
        if now != raw:
            renewed = _parse(now) or holder
            raise NameTaken(
                f"worker name {name!r} is taken: a live worker holds it, {describe(renewed)}, whose heartbeat was "
                "just renewed. Two workers under one name share one heartbeat, and the reconciler then runs their "
                "shards twice. Pass a different --name (or none: each worker then gets a name of its own), or stop "
                "that worker first")
    # never renewed and never expired (someone keeps resetting a TTL without beating): not a worker of ours


def describe(holder: dict) -> str:
    main = holder.get("main_pid")
    pid = holder.get("pid")
    pids = f"pid {main} (pool process {pid})" if main and main != pid else f"pid {pid}"
    return f"host {holder.get('host', '?')}, {pids}"


def _parse(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        holder = json.loads(raw)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _gone_from_this_host(holder: dict) -> bool:
    """The holder ran on this host and none of its processes runs any more."""
    if holder.get("host") != socket.gethostname():
        return False
    pids = [p for p in (holder.get("pid"), holder.get("main_pid")) if isinstance(p, int) and p > 0]
    return bool(pids) and not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # the holder's pid is ours now: it is gone (a container restarted: pids start over)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a zombie (killed, not yet reaped: no init to reap it in some containers) is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
