"""A worker's name is its identity: two workers started without --name on one host
get names of their own, so the reconciler never takes one's shard for the other's and runs it twice;
a name a live worker holds is refused at start; a name whose holder died is taken over at once."""

import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from common import keys
from common.defaults import RECONCILE_GRACE_S
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import cluster
from harness.outputs import commit_records
from tests.faults.conftest import QUICK_HEALING, SIM, faults, submit, wait_for
from tests.integration.conftest import FAST_RETRIES, assert_every_id_exactly_once, wait_until_finished, write_corpus
from workers.identity import NameTaken, check_name_free, default_name

HOST = socket.gethostname()
FIRST = "00000000-000000000000"


def start_unnamed(c, model, env: dict) -> cluster.Worker:
    worker = cluster.start_worker(c.url, str(model), "", c.logdir, backend="simulated", threads=1,
                                  env={**c.roots, **FAST_RETRIES, **SIM, **env})
    c.workers.append(worker)
    return cluster.named(worker)


def start_named(c, model, name: str, logdir, env: dict | None = None) -> cluster.Worker:
    worker = cluster.start_worker(c.url, str(model), name, logdir, backend="simulated", threads=1,
                                  env={**c.roots, **FAST_RETRIES, **SIM, **(env or {})})
    c.workers.append(worker)
    return worker


@pytest.mark.slow
def test_two_unnamed_workers_on_one_host_have_their_own_names_and_compute_each_shard_once(local_cluster,
                                                                                           tiny_embed_model, tmp_path,
                                                                                           barrier):
    # Given two workers started on one host without --name, with the quick self-healing settings,
    # the first delivery of shard 0 held before its commit (the other shards run meanwhile)
    env = {**QUICK_HEALING, **faults(barrier, f"before_commit:wait-once@{FIRST}")}
    workers = [start_unnamed(local_cluster, tiny_embed_model, env) for _ in range(2)]
    client = local_cluster.redis.client()
    cluster.wait_for_workers(client, workers)
    # Then each has a name, a personal queue and a heartbeat of its own
    names = [w.name for w in workers]
    assert len(set(names)) == 2, names
    for name in names:
        assert re.fullmatch(rf"embed-cpu-[0-9a-f]{{6}}@{re.escape(HOST)}", name), name
        assert keys.worker_queue(name) == f"worker.{name}"
    beats = [cluster.heartbeat(client, n) for n in names]
    assert beats[0]["pid"] != beats[1]["pid"]
    assert {b["main_pid"] for b in beats} == {w.process.pid for w in workers}
    # When a job of 8 shards runs on them, one worker holding shard 0 while the other does the
    # rest, for longer than the reconciler trusts a shard's "running" record (then only the holder's
    # heartbeat tells it apart from a shard nothing runs: under a shared name, the other worker's
    # beats hid it, and shard 0 was published again and computed twice)
    ids = write_corpus(tmp_path / "c.jsonl", 800)
    out = tmp_path / "out"
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 100, env=SIM)
    barrier.wait_reached("before_commit")
    holder = wait_for(lambda: next((n for n in names if (cluster.heartbeat(client, n) or {}).get("current_shard")
                                    == FIRST), None), 30, "the holder's heartbeat showing shard 0")
    wait_for(lambda: len(commit_records(out)) >= 7, 120, "the 7 other shards committed")
    time.sleep(RECONCILE_GRACE_S + 3 * float(QUICK_HEALING["QWEN3B_RECONCILE_INTERVAL_S"]))
    barrier.release("before_commit")
    state = wait_until_finished(out, timeout_s=120)
    # Then every shard was computed exactly once: the deliveries that ran a shard to its end add up to
    # the shards, no attempt lost a commit race, no shard was published again, and the holder
    # committed shard 0
    logs = local_cluster.logs()
    assert load_plan(OutputStore(out)).shards_total == len(state.commits) == 8
    assert {r.worker for r in state.commits.values()} <= set(names)
    assert state.commits[FIRST].worker == holder
    assert "again that nothing would run" not in logs, logs
    assert "'lost_race'" not in logs, logs
    assert sum(cluster.heartbeat(client, n)["shards_done"] for n in names) == 8, logs
    assert_every_id_exactly_once(ids, out)


@pytest.mark.slow
def test_a_worker_given_the_name_of_a_live_worker_is_refused_with_who_holds_it(local_cluster, tiny_embed_model,
                                                                              tmp_path):
    # Given a live worker named embed-w0
    [holder] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env=SIM)
    beat = cluster.heartbeat(local_cluster.redis.client(), holder.name)
    # When a second worker is started with the same name
    second = start_named(local_cluster, tiny_embed_model, holder.name, tmp_path / "logs-second")
    second.process.wait(60)
    # Then it is refused before Celery starts, saying which host and pid hold the name and what to do
    assert second.process.returncode == 2, second.log()
    [error] = [line for line in second.log().splitlines() if line.startswith("error:")]
    assert f"worker name '{holder.name}' is taken" in error
    assert f"host {HOST}, pid {holder.process.pid} (pool process {beat['pid']})" in error
    assert "Pass a different --name" in error
    assert ": queue " not in second.log()  # Celery never started
    # and the holder goes on, its heartbeat its own
    assert holder.alive()
    assert cluster.heartbeat(local_cluster.redis.client(), holder.name)["main_pid"] == holder.process.pid


@pytest.mark.slow
def test_a_worker_started_again_under_the_name_of_a_dead_one_takes_it_over_at_once(local_cluster, tiny_embed_model,
                                                                                   tmp_path):
    # Given a worker SIGKILLed with all its processes, its heartbeat still live (30 s TTL)
    [dead] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env=SIM)
    old = cluster.heartbeat(local_cluster.redis.client(), dead.name)
    dead.signal_all(signal.SIGKILL)
    dead.process.wait(10)
    killed_at = time.monotonic()
    assert local_cluster.redis.client().ttl(keys.worker_heartbeat(dead.name)) > 20
    # When it is started again under the same name (a container restarting)
    again = start_named(local_cluster, tiny_embed_model, dead.name, tmp_path / "logs-again")
    # Then it starts without waiting for the old heartbeat to expire: no restart loop, no wait
    wait_for(lambda: (cluster.heartbeat(local_cluster.redis.client(), dead.name) or {}).get("main_pid")
             == again.process.pid, 60, "the new worker's heartbeat")
    assert time.monotonic() - killed_at < 25
    assert again.alive()
    assert f"its last holder, host {HOST}, pid {old['main_pid']} (pool process {old['pid']}), is gone" in again.log()


# The check itself, against a real Redis, with heartbeats written the way workers write them.

def beat(client, name: str, host: str, pid: int, ttl_s: int, **extra) -> None:
    client.set(keys.worker_heartbeat(name), json.dumps(dict(host=host, pid=pid, seen_at=time.time(), **extra)),
               ex=ttl_s)


def test_a_holder_on_another_host_whose_heartbeat_is_renewed_is_alive(redis_server):
    client = redis_server.client()
    stop = threading.Event()

    def keep_beating():
        while not stop.is_set():
            beat(client, "w@elsewhere", "elsewhere", 4242, 30, main_pid=4240)
            stop.wait(0.3)

    thread = threading.Thread(target=keep_beating, daemon=True)
    thread.start()
    try:
        wait_for(lambda: client.exists(keys.worker_heartbeat("w@elsewhere")), 5, "the first beat")
        started = time.monotonic()
        with pytest.raises(NameTaken, match=r"host elsewhere, pid 4240 \(pool process 4242\).*--name"):
            check_name_free(client, "w@elsewhere", poll_s=0.05)
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        thread.join()


def test_a_holder_on_another_host_whose_heartbeat_expires_unrenewed_is_dead(redis_server):
    client = redis_server.client()
    beat(client, "w@elsewhere", "elsewhere", 4242, 2)
    said = []
    started = time.monotonic()
    check_name_free(client, "w@elsewhere", said.append, poll_s=0.05)  # returns: the name is free
    assert 1 < time.monotonic() - started < 5
    assert "expired; taking the name over" in said[-1]


def test_a_holder_on_this_host_whose_processes_are_gone_is_dead_at_once(redis_server):
    client = redis_server.client()
    done = subprocess.Popen(["true"])
    done.wait()
    beat(client, "w@here", HOST, done.pid, 30, main_pid=done.pid)
    started = time.monotonic()
    check_name_free(client, "w@here", poll_s=0.05)
    assert time.monotonic() - started < 1


def test_an_unnamed_worker_never_draws_a_name_whose_heartbeat_exists(redis_server, monkeypatch):
    client = redis_server.client()
    draws = iter(["aaaaaa", "bbbbbb"])
    monkeypatch.setattr("workers.identity.secrets.token_hex", lambda n: next(draws))
    beat(client, f"embed-cuda3-aaaaaa@{HOST}", HOST, 1, 30)
    assert default_name("embed", "cuda:3", client) == f"embed-cuda3-bbbbbb@{HOST}"
