"""--local: the same plan/commit pipeline, in this process, with no broker."""

import logging
import time
from collections.abc import Callable

from common import defaults
from common.errors import CommitBroken, PermanentShardError, describe, is_transient, store_backoff_s
from common.io.manifest import save_manifest
from common.io.plans import Plan
from common.io.store import OutputStore
from common.jobstate import CommitsWithdrawn, Event, JobCheckError, JobState, finalize, fold_and_save, read_state
from common.schemas import QuarantineRecord, ShardSpec
from workers.engines.base import EngineSpec
from workers.engines.registry import create_engine
from workers.pipeline import run_shard

log = logging.getLogger(__name__)

MAX_ROUNDS = 3  # end-of-job checks that may send withdrawn shards round again
FOLD_EVERY_S = 10.0  # the manifest is brought up to date this often (what `producer status` elsewhere reads)


def engine_spec_for(plan: Plan, device: str) -> EngineSpec:
    spec = plan.spec
    return EngineSpec(model=spec.model.source, task=spec.task, backend=spec.backend, dtype=spec.dtype,
                      device=device, seqlens=spec.seqlens)


class LocalRun:
    """Every pending shard, one after another, with the queued workers' policy: a failure is
    retried up to max_attempts, one that fails the same way every time (a changed input) is
    quarantined at once, and a cancel (`producer cancel OUT`) stops before the next shard. What it
    commits is folded into the store's manifest every few seconds and at the end, then the job is
    checked and marked done, as a reconciler pass does for a queued job."""

    def __init__(self, store: OutputStore, plan: Plan, device: str = defaults.DEFAULT_DEVICE,
                 max_attempts: int = defaults.DEFAULT_MAX_ATTEMPTS, engine=None):
        self.store, self.plan, self.device, self.max_attempts, self.engine = store, plan, device, max_attempts, engine
        self.state: JobState = read_state(store, plan)
        self.unfolded: list[Event] = []
        self.folded_at = time.monotonic()

    def run(self, on_shard: Callable[[], None] = lambda: None,
            on_progress: Callable[[int, int], None] = lambda rows, tokens: None) -> JobState:
        for _ in range(MAX_ROUNDS):
            self.run_pending(on_shard, on_progress)
            self.fold()
            if not self.state.manifest.finished:
                break  # cancelled
            try:
                finalize(self.store, self.plan, self.state.manifest)
            except CommitsWithdrawn as exc:  # data files gone or changed: those shards run again
                log.warning("%s", exc)
                self.state = read_state(self.store, self.plan)
                continue
            except JobCheckError as exc:
                self.state.manifest.problems.append(str(exc))
                save_manifest(self.store, self.state.manifest)
            break
        self.state = read_state(self.store, self.plan, known=self.state.manifest)
        return self.state

    def run_pending(self, on_shard, on_progress) -> None:
        if self.state.manifest.finished:
            return
        done = self.state.manifest.done_mask()
        for shard in self.plan.iter_shards():
            if done[shard.ordinal]:
                continue
            if self.store.is_cancelled():
                break
            self.note(self.run_one(shard, on_progress))
            on_shard()

    def run_one(self, shard: ShardSpec, on_progress) -> Event:
        committed = self.store.load_commit(shard.shard_id)  # by an earlier run that stopped before its fold
        if committed is not None:
            try:
                self.store.publish(committed)
                return self.event_of(committed, shard)
            except CommitBroken as exc:
                log.warning("shard %s: %s; its commit is withdrawn and the shard computed again", shard.shard_id, exc)
                self.store.withdraw_commit(committed)
        if self.engine is None:
            self.engine = create_engine(engine_spec_for(self.plan, self.device))
        attempt, waited = 0, 0
        while True:
            attempt += 1
            try:
                outcome = run_shard(self.store, self.plan, shard, self.engine, worker="local", progress=on_progress)
                return self.event_of(outcome.record, shard)
            except Exception as exc:  # one bad shard never kills the job
                if is_transient(exc):  # a full, read-only or unreachable store: wait for it, without a bound
                    attempt, waited = attempt - 1, waited + 1
                    delay = store_backoff_s(waited, 1)
                    log.warning("shard %s: the store fails (%s); retrying in %d s", shard.shard_id, describe(exc),
                                delay)
                    time.sleep(delay)
                    continue
                log.exception("shard %s failed (attempt %d/%d)", shard.shard_id, attempt, self.max_attempts)
                if attempt >= self.max_attempts or isinstance(exc, PermanentShardError):
                    reason = str(exc) if isinstance(exc, PermanentShardError) else f"{type(exc).__name__}: {exc}"
                    self.store.quarantine(QuarantineRecord(shard_id=shard.shard_id, attempts=attempt,
                                                           reason=reason[:2000], quarantined_at=time.time()))
                    return Event("q", shard.ordinal, shard.rows)

    @staticmethod
    def event_of(record, shard: ShardSpec) -> Event:
        return Event("c", shard.ordinal, record.rows_in, record.rows_out, record.rows_rejected, record.tokens,
                     record.rows_deduplicated, record.rows_reused)

    def note(self, event: Event) -> None:
        """A shard done: counted now (progress), folded into the store's manifest every few seconds."""
        self.unfolded.append(event)
        self.state = JobState(self.plan, self.state.manifest, False, None, list(self.unfolded))
        if time.monotonic() - self.folded_at > FOLD_EVERY_S:
            self.fold()

    def fold(self) -> None:
        manifest = fold_and_save(self.store, self.plan, self.unfolded, self.state.manifest)
        self.unfolded, self.folded_at = [], time.monotonic()
        self.state = JobState(self.plan, manifest, self.store.is_cancelled(), None)

