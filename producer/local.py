"""--local: the same plan/commit pipeline, in this process, with no broker."""

import logging
import time

from common import defaults
from common.errors import PermanentShardError
from common.io.store import OutputStore
from common.jobstate import read_state
from common.schemas import Plan, QuarantineRecord
from workers.engines.base import EngineSpec
from workers.engines.registry import create_engine
from workers.pipeline import run_shard

log = logging.getLogger(__name__)


def engine_spec_for(plan: Plan, device: str) -> EngineSpec:
    spec = plan.spec
    return EngineSpec(model=spec.model.source, task=spec.task, backend=spec.backend, dtype=spec.dtype,
                      device=device, seqlens=spec.seqlens)


def run_local(store: OutputStore, plan: Plan, device: str = defaults.DEFAULT_DEVICE,
              max_attempts: int = defaults.DEFAULT_MAX_ATTEMPTS, on_shard=lambda outcome: None,
              on_progress=lambda rows, tokens: None, engine=None) -> None:
    """Every pending shard, one after another, with the queued workers' policy: a failure is
    retried up to max_attempts, one that fails the same way every time (a changed input) is
    quarantined at once, and a cancel (`producer cancel OUT`) stops before the next shard."""
    pending = read_state(store, plan).pending
    if not pending:
        return  # a finished job submitted again: no model to load
    engine = engine or create_engine(engine_spec_for(plan, device))
    for shard_id in pending:
        if store.is_cancelled():
            return
        for attempt in range(1, max_attempts + 1):
            try:
                on_shard(run_shard(store, plan, shard_id, engine, worker="local", progress=on_progress))
                break
            except Exception as exc:  # one bad shard never kills the job
                log.exception("shard %s failed (attempt %d/%d)", shard_id, attempt, max_attempts)
                if attempt == max_attempts or isinstance(exc, PermanentShardError):
                    reason = str(exc) if isinstance(exc, PermanentShardError) else f"{type(exc).__name__}: {exc}"
                    store.quarantine(QuarantineRecord(shard_id=shard_id, attempts=attempt, reason=reason[:2000],
                                                      quarantined_at=time.time()))
                    on_shard(None)
                    break
