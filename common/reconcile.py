"""The reconciler: folds a job's progress into its store, finishes it, and publishes again every
shard that nothing would ever run otherwise.

Celery on Redis loses or parks messages in known ways: a Redis restart without persistence loses
every queue; a dead host's unacked message waits for the visibility timeout (an hour by default);
a message popped by a worker that dies before recording it is gone. The store knows which shards
are done; Redis records (common/dispatch.py) say which are queued or running; heartbeats say
which workers are alive and what each holds. A pass over a job:

1. folds the commits and quarantines announced since the last pass into the store's manifest
   (common/jobstate.fold: each record read from the store, never trusted from Redis);
2. once every shard is done, runs the end-of-job check and writes the success marker;
3. sets the window up from the store if Redis lost it (common/window.open_window);
4. publishes again the shards in flight that nothing holds any more (a dead worker's, a lost
   message's) and any shard below the cursor that no record accounts for;
5. tops the window up.
Every step costs what changed since the last pass, or the window, or the workers; none reads
every record or every shard (the done bits are one bit per shard, compared in numpy).

Where it runs: a thread in every worker (for the jobs in Redis's active set that lie in its
output root, and the jobs it has worked on, which it registers again after a Redis restart),
and the producer's `--wait` / `status --watch` loop for the job it follows. A per-job lock in
Redis lets one pass per job run at a time, cluster-wide, whoever holds it; no process is special,
so losing any one of them loses nothing. A cancelled job leaves every reconciler after one pass.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import redis
from redis.lock import Lock

from common import defaults, dispatch, heartbeats, job_registry, keys, window
from common.errors import Qwen3BatchError
from common.io.manifest import Manifest, save_manifest
from common.io.plans import Plan, load_plan
from common.io.store import PLAN, OutputStore
from common.jobstate import CommitsWithdrawn, Event, JobCheckError, finalize, fold_and_save
from common.paths import is_within

log = logging.getLogger(__name__)


@dataclass
class Deliveries:
    """What Redis says about one job's shards in flight right now."""

    queued: dict[str, tuple[float, int]]  # shard -> (when its message was published, ordinal)
    running: dict[str, dict]  # shard -> {"worker", "since", "ordinal"}
    holders: dict[tuple[str, str], str]  # (job, shard) -> live worker holding it, per the heartbeats
    live: set[str]  # live worker names
    waiting: int  # messages waiting in the job's queue
    cursor: int = 0  # shards below it have been published at least once
    held: set[int] = field(default_factory=set)  # ordinals the live workers of this job hold


def read_deliveries(client: redis.Redis, plan: Plan) -> Deliveries:
    """Read in this order: the cursor first, so that every shard below it already has the record
    that the same transaction as the cursor wrote (common/window.top_up)."""
    cursor = int(client.get(keys.job_cursor(plan.job_id)) or 0)
    workers = heartbeats.live_workers(client)
    queued = {}
    for k, v in client.hgetall(keys.job_queued(plan.job_id)).items():
        try:
            published, ordinal = v.decode().split()
            queued[k.decode()] = (float(published), int(ordinal))
        except ValueError:
            continue  # not ours: the shard is found as a gap if nothing else accounts for it
    running = {}
    for k, v in client.hgetall(keys.job_running(plan.job_id)).items():
        try:
            running[k.decode()] = json.loads(v)
        except ValueError:
            continue
    held = {int(w["current_ordinal"]) for w in workers
            if w.get("current_job") == plan.job_id and str(w.get("current_ordinal", "")).isdigit()}
    return Deliveries(queued, running, heartbeats.holders(workers), {w["name"] for w in workers},
                      dispatch.waiting_messages(client, plan.queue), cursor, held)


def find_orphans(job_id: str, done: np.ndarray, seen: Deliveries, now: float, grace_s: float) -> list[int]:
    """Ordinals of pending shards that nothing will run: in flight but held by no live worker and
    waiting in no queue, or below the cursor with no record at all.

    A queued record whose message must have been taken (the queue is empty) but that no worker
    holds is stale: the message was lost (a crash between pop and ack bookkeeping, an acked
    timeout). Records younger than `grace_s` are trusted: a worker takes a message a moment
    before its heartbeat shows it."""
    orphans, accounted = set(), set(seen.held)
    for shard_id in seen.queued.keys() | seen.running.keys():
        taken, queued = seen.running.get(shard_id), seen.queued.get(shard_id)
        ordinal = _ordinal(queued[1] if queued else taken.get("ordinal"), done)
        if ordinal is None or done[ordinal]:
            continue
        accounted.add(ordinal)
        if (job_id, shard_id) in seen.holders:
            continue
        if taken and taken.get("worker") in seen.live and now - float(taken.get("since", 0)) < grace_s:
            continue
        if queued is not None and (seen.waiting > 0 or now - queued[0] < grace_s):
            continue
        orphans.add(ordinal)
    below = np.flatnonzero(~done[:seen.cursor])
    orphans.update(o for o in below.tolist() if o not in accounted)
    return sorted(orphans - seen.held)


def _ordinal(value, done: np.ndarray) -> int | None:
    return value if isinstance(value, int) and 0 <= value < len(done) else None


class OutputGone(Qwen3BatchError):
    """A watched job's output holds no plan any more: someone deleted it. It is not recomputed."""


@dataclass
class Outcome:
    job_id: str
    republished: list[int] = field(default_factory=list)  # ordinals published again
    topped_up: int = 0
    finished: bool = False
    skipped: str = ""  # why this pass did nothing (another process holds the lock, cancelled, ...)
    manifest: Manifest | None = None


def fold_log(client: redis.Redis, store: OutputStore, plan: Plan, known: Manifest | None = None) -> Manifest:
    """Fold what workers announced since the last fold into the store's manifest; then drop it from
    the log (after the manifest is stored: a pass that dies in between is repeated harmlessly)."""
    raw = dispatch.read_log(client, plan.job_id, defaults.FOLD_MAX_EVENTS)
    events = [e for e in map(Event.decode, raw) if e is not None]
    manifest = fold_and_save(store, plan, events, known)
    dispatch.trim_log(client, plan.job_id, len(raw))
    return manifest


def recent_events(client: redis.Redis, job_id: str) -> list[Event]:
    raw = dispatch.read_log(client, job_id, defaults.FOLD_MAX_EVENTS)
    return [e for e in map(Event.decode, raw) if e is not None]


def reconcile_job(client: redis.Redis, publisher: dispatch.Publisher, store: OutputStore, plan: Plan,
                  grace_s: float = defaults.RECONCILE_GRACE_S, lock_s: float | None = None,
                  known: Manifest | None = None) -> Outcome:
    """One pass over one job. lock_s: hold the job's reconcile lock for the pass, renewed this often
    while the end-of-job check runs (None: no lock, for an explicit `resume`, which may overlap a
    pass: everything it does is harmless twice)."""
    outcome = Outcome(plan.job_id)
    lease = None
    if lock_s is not None:
        lease = Lock(client, keys.job_reconcile_lock(plan.job_id), timeout=lock_s, blocking=False)
        if not lease.acquire():
            outcome.skipped = "another process reconciles this job"
            return outcome
    try:
        if store.is_cancelled():
            client.srem(keys.active_jobs(), plan.job_id)  # `resume` registers it again
            outcome.skipped = "cancelled"
            return outcome
        manifest = outcome.manifest = fold_log(client, store, plan, known)
        if manifest.finished:
            outcome.finished = finish(client, store, plan, manifest, lease)
            return outcome
        window.open_window(client, plan, manifest)
        seen = read_deliveries(client, plan)
        done = manifest.done_mask()
        for event in recent_events(client, plan.job_id):
            if event.ordinal < len(done):
                done[event.ordinal] = True
        room = window.window_size(window.serving(client, plan.queue))
        orphans = find_orphans(plan.job_id, done, seen, time.time(), grace_s)[:room]
        if orphans:
            publisher.publish(plan, store.url, [plan.shard_at(o) for o in orphans])
            outcome.republished = orphans
        outcome.topped_up = window.top_up(client, publisher, plan, store.url)
        return outcome
    finally:
        if lease is not None:
            try:
                lease.release()
            except redis.exceptions.LockError:
                pass  # it expired: another process may hold it now, which is harmless


def finish(client: redis.Redis, store: OutputStore, plan: Plan, manifest: Manifest, lease: Lock | None) -> bool:
    """A job whose every shard is committed or quarantined: check it and write its marker (the
    check reads each data file's ids once, so its failure is recorded in the manifest, not
    repeated every pass), then stop watching it, unless something was announced since this pass
    folded (a late commit after a quarantine, racing this pass): the next pass folds that in and
    writes the marker anew. True when the job is done."""
    started = time.time()
    try:
        marker = finalize(store, plan, manifest, keep_alive=lease.reacquire if lease is not None else lambda: None)
    except CommitsWithdrawn as exc:
        log.warning("job %s: %s", plan.job_id, exc)
        dispatch.reopen(client, plan, exc.ordinals)  # the next pass finds them below the cursor with no record
        return False
    except JobCheckError as exc:
        log.error("job %s is finished but its output does not check out, so it is not marked done: %s",
                  plan.job_id, exc)
        if str(exc) not in manifest.problems:
            manifest.problems.append(str(exc))
            save_manifest(store, manifest)
        return False
    if marker.finished_at >= started:
        log.info("job %s %s: %d shards checked and the success marker written in %.2f s", plan.job_id,
                 marker.status, plan.shards_total, marker.check_seconds)
    if client.llen(keys.job_log(plan.job_id)):
        return False
    dispatch.forget_job(client, plan.job_id)
    return True


class Reconciler:
    """The worker-side loop: every interval, or at once when poked (the worker that commits a job's
    last shard), each watched job gets one pass, if no other process is passing over it. It
    watches the jobs of its output root only (`root`), from three sources: Redis's active set, the
    root's job registry (common/job_registry.py, which outlives Redis and this process) and the jobs
    this process worked on."""

    def __init__(self, client: redis.Redis, publisher: dispatch.Publisher, root: str,
                 interval_s: float = defaults.RECONCILE_INTERVAL_S, grace_s: float = defaults.RECONCILE_GRACE_S):
        self.client, self.publisher, self.root = client, publisher, root
        self.interval_s, self.grace_s = interval_s, grace_s
        self.known: dict[str, str] = {}  # job -> output of the jobs this worker has worked on
        self.stores: dict[str, tuple[OutputStore, Plan]] = {}  # parsed once per output
        self.manifests: dict[str, Manifest] = {}  # the newest manifest this process read, per job
        self.registry: dict = {}  # the registry records this process read (they never change)
        self.wake = threading.Event()
        self.poked: dict[str, str] = {}  # job -> output: pass over these at the next run, whatever else says

    def remember(self, job_id: str, output: str) -> None:
        """A job this worker took a message of: watched from now on, whatever Redis forgets."""
        if job_id not in self.known:
            try:
                job_registry.register(self.root, job_id, output)
            except OSError as exc:  # a full or read-only root: the next delivery of the job tries again
                log.warning("could not register job %s under %s: %s", job_id, self.root, exc)
                return
            self.known[job_id] = output

    def forget(self, job_id: str) -> None:
        self.known.pop(job_id, None)
        self.manifests.pop(job_id, None)
        self.registry.pop(f"{job_id}.json", None)
        job_registry.forget(self.root, job_id)

    def poke(self, job_id: str, output: str) -> None:
        """Run a pass over this job now (its last shard was just committed here). Its next run
        watches the job even if a pass that ran meanwhile finished and forgot it: a late commit
        announced during that pass is folded by the next."""
        self.poked[job_id] = output
        self.wake.set()

    def accepts(self, output: str) -> bool:
        return is_within(output, self.root)

    def watched(self) -> dict[str, str]:
        """Jobs in Redis's active set or the root's registry, plus the ones this worker knows, which it
        registers again in Redis (a restart without persistence forgets them, and their queues)."""
        active = {raw.decode() for raw in self.client.smembers(keys.active_jobs())}
        jobs = dict(job_registry.registered(self.root, self.registry))
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
            if job_id not in active:  # Redis forgot it, or it is cancelled or finished: the pass decides
                try:
                    _, plan = self.store_for(output)
                except (Qwen3BatchError, OSError, ValueError):
                    self.forget(job_id)  # its output was deleted
                    continue
                dispatch.register_job(self.client, plan, output)
            watched[job_id] = output
        return watched

    def store_for(self, output: str) -> tuple[OutputStore, Plan]:
        """The output's store and plan, read once, the plan's presence checked on every pass: an
        output deleted after a pass read it (a finished job's, by its user) would otherwise read as
        a job with no shard done, and be computed again into the folder the user just deleted."""
        cached = self.stores.get(output)
        store = cached[0] if cached else OutputStore(output)
        if not store.has_plan():
            self.stores.pop(output, None)
            raise OutputGone(f"{output} holds no job any more (its {PLAN} is gone)")
        if cached is None:
            cached = self.stores[output] = (store, load_plan(store))
        return cached

    def run_once(self) -> list[Outcome]:
        outcomes = []
        while self.poked:
            self.remember(*self.poked.popitem())
        for job_id, output in sorted(self.watched().items()):
            try:
                store, plan = self.store_for(output)
                if plan.job_id != job_id:
                    continue
                outcome = reconcile_job(self.client, self.publisher, store, plan, self.grace_s,
                                        lock_s=self.interval_s, known=self.manifests.get(job_id))
            except OutputGone as exc:
                log.warning("reconciler: job %s: %s: no longer watched, nothing published again", job_id, exc)
                self.forget(job_id)
                dispatch.forget_job(self.client, job_id)
                continue
            except (Qwen3BatchError, OSError, ValueError) as exc:
                log.warning("reconciler: job %s at %s: %s", job_id, output, exc)
                continue
            if outcome.manifest is not None:
                self.manifests[job_id] = outcome.manifest
            if outcome.republished:
                log.warning("reconciler: published %d shards of %s again that nothing would run: %s",
                            len(outcome.republished), job_id,
                            ", ".join(plan.shard_at(o).shard_id for o in outcome.republished[:8]))
            if outcome.finished or outcome.skipped == "cancelled":
                self.forget(job_id)
                self.stores.pop(output, None)
            outcomes.append(outcome)
        return outcomes

    def start(self) -> threading.Thread:
        def loop():
            while True:
                self.wake.wait(self.interval_s)
                self.wake.clear()
                try:
                    self.run_once()
                except redis.RedisError as exc:  # Redis down or restarting: the next pass tries again
                    log.info("reconciler: broker unavailable (%s)", exc)
                except Exception:  # a reconciler that dies silently strands jobs: log and go on
                    log.exception("reconciler pass failed")

        thread = threading.Thread(target=loop, name="reconciler", daemon=True)
        thread.start()
        return thread
