"""The reconciler: publishes again every shard that nothing would ever run otherwise.

Celery on Redis loses or parks messages in known ways: a Redis restart without persistence loses
every queue; a dead host's unacked message waits for the visibility timeout (an hour by default);
a message popped by a worker that dies before recording it is gone. The output store knows which
shards are done; Redis records (common/dispatch.py, workers/runner.py) say which are queued or
running; heartbeats say which workers are alive and what each holds. A pending shard (no commit,
no quarantine) that has no waiting message and no live holder is an orphan, and is published
again. First committer wins, so a shard that then runs twice costs time, never correctness.

Where it runs: a thread in every worker (for the jobs in Redis's active set that lie in its
output root, and the jobs it has worked on, which it registers again after a Redis restart),
and the producer's `--wait` / `status --watch` loop for the job it follows. A per-job lock in
Redis lets one pass per job run at a time, cluster-wide, whoever holds it; no process is special,
so losing any one of them loses nothing.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from common import defaults, dispatch, heartbeats, job_registry, keys
from common.errors import Qwen3BatchError
from common.io.store import PLAN, OutputStore
from common.jobstate import JobCheckError, JobState, finalize, read_state
from common.paths import is_within
from common.schemas import Plan

log = logging.getLogger(__name__)

Publish = Callable[[Plan, str, list[str]], int]  # (plan, output, shard ids) -> messages sent


@dataclass
class Deliveries:
    """What Redis says about one job's shards right now."""

    queued: dict[str, float]  # shard -> when its message was published
    running: dict[str, dict]  # shard -> {"worker", "since"}
    holders: dict[tuple[str, str], str]  # (job, shard) -> live worker holding it, per the heartbeats
    live: set[str]  # live worker names
    waiting: int  # messages waiting in the job's queue


def read_deliveries(client: redis.Redis, plan: Plan) -> Deliveries:
    workers = heartbeats.live_workers(client)
    queued = {k.decode(): float(v) for k, v in client.hgetall(keys.job_queued(plan.job_id)).items()}
    running = {}
    for k, v in client.hgetall(keys.job_running(plan.job_id)).items():
        try:
            running[k.decode()] = json.loads(v)
        except ValueError:
            continue
    return Deliveries(queued, running, heartbeats.holders(workers), {w["name"] for w in workers},
                      dispatch.waiting_messages(client, plan.queue))


def find_orphans(state: JobState, seen: Deliveries, now: float, grace_s: float) -> list[str]:
    """Pending shards that nothing will run: no live worker holds them, and no message waits for them.

    A queued record whose message must have been taken (the queue is empty) but that no worker
    holds is stale: the message was lost (a crash between pop and ack bookkeeping, an acked
    timeout). Records younger than `grace_s` are trusted: a worker takes a message a moment
    before its heartbeat shows it."""
    orphans = []
    for shard_id in state.pending:
        if (state.plan.job_id, shard_id) in seen.holders:
            continue
        taken = seen.running.get(shard_id)
        if taken and taken.get("worker") in seen.live and now - float(taken.get("since", 0)) < grace_s:
            continue
        published = seen.queued.get(shard_id)
        if published is not None and (seen.waiting > 0 or now - published < grace_s):
            continue
        orphans.append(shard_id)
    return orphans


class OutputGone(Qwen3BatchError):
    """A watched job's output holds no plan any more: someone deleted it. It is not recomputed."""


@dataclass
class Outcome:
    job_id: str
    republished: list[str] = field(default_factory=list)
    finished: bool = False
    skipped: str = ""  # why this pass did nothing (another process holds the lock, ...)


def reconcile_job(client: redis.Redis, publish: Publish, store: OutputStore, plan: Plan,
                  grace_s: float = defaults.RECONCILE_GRACE_S, lock_s: float | None = None) -> Outcome:
    """One pass over one job. lock_s: hold the job's reconcile lock this long (None: no lock, for
    an explicit `resume`, which may overlap a pass: duplicates are harmless)."""
    outcome = Outcome(plan.job_id)
    if lock_s is not None and not client.set(keys.job_reconcile_lock(plan.job_id), "1", nx=True,
                                             px=int(lock_s * 1000)):
        outcome.skipped = "another process reconciles this job"
        return outcome
    state = read_state(store, plan)
    if state.finished:
        finish(client, store, state)
        outcome.finished = True
        return outcome
    if state.cancelled:
        client.srem(keys.active_jobs(), plan.job_id)  # `resume` registers it again
        outcome.skipped = "cancelled"
        return outcome
    orphans = find_orphans(state, read_deliveries(client, plan), time.time(), grace_s)
    if orphans:
        publish(plan, store.url, orphans)
        outcome.republished = orphans
    return outcome


def finish(client: redis.Redis, store: OutputStore, state: JobState) -> None:
    """A job whose every shard is committed or quarantined: make sure its marker describes it (the
    process that committed the last shard may have died before writing it), then stop watching."""
    try:
        finalize(store, state)
    except JobCheckError as exc:
        log.error("job %s is finished but its output does not check out, so it is not marked done: %s",
                  state.plan.job_id, exc)
        return
    dispatch.forget_job(client, state.plan.job_id)


class Reconciler:
    """The worker-side loop: every interval, each watched job gets one pass (if no other process
    is passing over it). It watches the jobs of its output root only (`root`), from three sources:
    Redis's active set, the root's job registry (common/job_registry.py, which outlives Redis and
    this process) and the jobs this process worked on."""

    def __init__(self, client: redis.Redis, publish: Publish, root: str,
                 interval_s: float = defaults.RECONCILE_INTERVAL_S, grace_s: float = defaults.RECONCILE_GRACE_S):
        self.client, self.publish, self.root = client, publish, root
        self.interval_s, self.grace_s = interval_s, grace_s
        self.known: dict[str, str] = {}  # job -> output of the jobs this worker has worked on
        self.stores: dict[str, tuple[OutputStore, Plan]] = {}  # parsed once per output, commit cache kept

    def remember(self, job_id: str, output: str) -> None:
        """A job this worker took a message of: watched from now on, whatever Redis forgets."""
        if job_id not in self.known:
            self.known[job_id] = output
            job_registry.register(self.root, job_id, output)

    def accepts(self, output: str) -> bool:
        return is_within(output, self.root)

    def watched(self) -> dict[str, str]:
        """Jobs in Redis's active set or the root's registry, plus the ones this worker knows, which it
        registers again in Redis (a restart without persistence forgets them, and their queues)."""
        active = {raw.decode() for raw in self.client.smembers(keys.active_jobs())}
        jobs = dict(job_registry.registered(self.root))
        for job_id in active:
            output = dispatch.job_output(self.client, job_id)
            if output:
                jobs[job_id] = output
        for job_id, output in list(self.known.items()):
            jobs.setdefault(job_id, output)
        watched = {}
        for job_id, output in jobs.items():
            if not self.accepts(output):
                continue
            if job_id not in active:  # Redis forgot it: register it again (unless it is finished or gone)
                try:
                    store, plan = self.store_for(output)
                except (Qwen3BatchError, OSError, ValueError):
                    self.known.pop(job_id, None)
                    job_registry.forget(self.root, job_id)  # its output was deleted
                    continue
                if read_state(store, plan).finished:
                    self.known.pop(job_id, None)
                    job_registry.forget(self.root, job_id)
                    continue
                dispatch.register_job(self.client, plan, output)
            watched[job_id] = output
        return watched

    def store_for(self, output: str) -> tuple[OutputStore, Plan]:
        """The output's store and plan, parsed once, the plan's presence checked on every pass: an
        output deleted after a pass parsed it (a finished job's, by its user) would otherwise read as
        a job with no shard done, and be computed again into the folder the user just deleted."""
        cached = self.stores.get(output)
        store = cached[0] if cached else OutputStore(output)
        if not store.has_plan():
            self.stores.pop(output, None)
            raise OutputGone(f"{output} holds no job any more (its {PLAN} is gone)")
        if cached is None:
            cached = self.stores[output] = (store, store.load_plan())
        return cached

    def run_once(self) -> list[Outcome]:
        outcomes = []
        for job_id, output in sorted(self.watched().items()):
            try:
                store, plan = self.store_for(output)
                if plan.job_id != job_id:
                    continue
                outcome = reconcile_job(self.client, self.publish, store, plan, self.grace_s, lock_s=self.interval_s)
            except OutputGone as exc:
                log.warning("reconciler: job %s: %s: no longer watched, nothing published again", job_id, exc)
                self.known.pop(job_id, None)
                job_registry.forget(self.root, job_id)
                dispatch.forget_job(self.client, job_id)
                continue
            except (Qwen3BatchError, OSError, ValueError) as exc:
                log.warning("reconciler: job %s at %s: %s", job_id, output, exc)
                continue
            if outcome.republished:
                log.warning("reconciler: published %d shards of %s again that nothing would run: %s",
                            len(outcome.republished), job_id, ", ".join(outcome.republished[:8]))
            if outcome.finished:
                self.known.pop(job_id, None)
                self.stores.pop(output, None)
                job_registry.forget(self.root, job_id)
            outcomes.append(outcome)
        return outcomes

    def start(self) -> threading.Thread:
        def loop():
            while True:
                time.sleep(self.interval_s)
                try:
                    self.run_once()
                except redis.RedisError as exc:  # Redis down or restarting: the next pass tries again
                    log.info("reconciler: broker unavailable (%s)", exc)
                except Exception:  # a reconciler that dies silently strands jobs: log and go on
                    log.exception("reconciler pass failed")

        thread = threading.Thread(target=loop, name="reconciler", daemon=True)
        thread.start()
        return thread
