"""The thin Celery task of the compile queue: decode, delegate to job.run_delivery, report."""

import logging

import pydantic
from celery import Celery, signals

from common import keys
from common.artifacts import ArtifactStore
from common.compile_status import write_status
from common.errors import RefusedMessage
from common.schemas import CompileRequest
from workers.bootstrap import boot_compile_worker
from workers.celery_request import SettingsOnlyRequest, drop_workflow
from workers.compile.job import admit, run_delivery
from workers.runner import WorkerContext
from workers.spec import WorkerSpec

log = logging.getLogger(__name__)
_context: WorkerContext | None = None


def register_compile_task(app: Celery, pool: str) -> None:
    app.task(name=keys.TASK_COMPILE, bind=True, acks_late=True, Request=SettingsOnlyRequest)(run_compile_task)
    (signals.worker_process_init if pool == "prefork" else signals.worker_init).connect(boot, weak=False)


def boot(**_) -> None:
    global _context
    _context = boot_compile_worker(WorkerSpec.from_env())


def run_compile_task(self, **message):
    drop_workflow(self.request)
    ctx = _context
    try:
        request = CompileRequest.model_validate(message)
    except pydantic.ValidationError as exc:
        log.error("refused a compile message: %s", exc)  # not ours, or crafted: dropped, never run
        return "refused"
    artifact_id = request.key.artifact_id

    def report(state: str, **fields) -> None:
        write_status(ctx.redis, artifact_id, request.job, state, **fields)
        log.info("compile %s: %s %s", artifact_id, state, fields.get("reason", ""))

    try:
        admit(request, ctx.input_roots)
    except RefusedMessage as exc:
        report("failed", reason=f"refused: {exc}")
        return "refused"
    ctx.current_shard = artifact_id
    try:
        return run_delivery(request, ArtifactStore(ctx.settings.artifact_store, ctx.settings.artifact_cache), ctx.redis, report,
                            ctx.settings.max_attempts, validate_device=ctx.description["device"])["state"]
    finally:
        ctx.current_shard = None
