"""Compile jobs from the producer: one request per compiled length, on the compile queue (or run
here with --local), followed until every artifact is published, found, or failed with a reason."""

import time
import uuid
from collections.abc import Callable

from common import defaults, keys
from common.artifacts import ArtifactStore
from common.compile_status import DONE, read_status, write_status
from common.errors import ConfigError
from common.schemas import ArtifactKey, CompileRequest, ModelRef
from common.options import validate_seqlens


def plan_compile(model: ModelRef, backend: str, task: str, dtype: str, seqlens, batch: int,
                 validation_texts: tuple[str, ...] = ()) -> list[CompileRequest]:
    if backend not in defaults.COMPILE_DTYPES:
        raise ConfigError(f"--backend {backend!r}: compile jobs build onnx or vacc artifacts")
    if dtype not in defaults.COMPILE_DTYPES[backend]:
        raise ConfigError(f"--dtype {dtype} is not compiled for {backend}; choose one of "
                          f"{', '.join(defaults.COMPILE_DTYPES[backend])}")
    if batch < 1:
        raise ConfigError(f"--batch {batch}: the compiled batch size must be >= 1")
    lengths = validate_seqlens(seqlens, multiple=defaults.SEQLEN_MULTIPLE)
    job = f"compile-{uuid.uuid4().hex[:12]}"
    return [CompileRequest(job=job, model=model, validation_texts=validation_texts,
                           key=ArtifactKey(model_identity=model.identity, model_tag=model.tag, backend=backend,
                                           task=task, dtype=dtype, batch=batch, seqlen=seqlen))
            for seqlen in lengths]


def enqueue_compile(settings, client, requests: list[CompileRequest]) -> None:
    from common.celery_app import PUBLISH_RETRY_POLICY, make_app, make_queue

    from kombu.exceptions import OperationalError

    from common.broker import BrokerUnreachableError, redact_url

    app = make_app(settings)
    queue = make_queue(keys.COMPILE_QUEUE)
    try:
        with app.producer_or_acquire() as producer:
            for request in requests:
                write_status(client, request.key.artifact_id, request.job, "queued")
                app.send_task(keys.TASK_COMPILE, kwargs=request.model_dump(mode="json"), queue=queue,
                              declare=[queue], producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except OperationalError as exc:
        raise BrokerUnreachableError(f"publishing compile jobs to {redact_url(settings.broker_url)} failed ({exc}); "
                                     "run the same producer compile again once the broker is back") from exc


def outcome(client, store: ArtifactStore, request: CompileRequest) -> dict | None:
    """This request's final state, or None while it is pending. A published artifact is done
    whichever job published it; a failure counts only when it is this job's."""
    status = read_status(client, request.key.artifact_id)
    if status is not None and status["state"] in DONE and status["job"] == request.job:
        return status
    if store.manifest(request.key) is not None:
        return {"artifact": request.key.artifact_id, "job": request.job, "state": "exists",
                "folder": str(store.folder(request.key)), "note": "published (by this or another job)"}
    return None


def wait_compile(client, store: ArtifactStore, requests: list[CompileRequest],
                 on_update: Callable[[dict, dict], None], poll_s: float = defaults.PROGRESS_REFRESH_S,
                 timeout_s: float | None = None) -> dict[str, dict]:
    """Poll until every request is done; on_update(finished, running) after each poll."""
    finished: dict[str, dict] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        running = {}
        for request in requests:
            artifact_id = request.key.artifact_id
            if artifact_id in finished:
                continue
            done = outcome(client, store, request)
            if done is not None:
                finished[artifact_id] = done
            else:
                running[artifact_id] = read_status(client, artifact_id) or {"state": "queued"}
        on_update(finished, running)
        if len(finished) == len(requests) or (deadline is not None and time.monotonic() > deadline):
            return finished
        time.sleep(poll_s)


def run_local(requests: list[CompileRequest], store: ArtifactStore, device: str,
              on_update: Callable[[str, str, dict], None]) -> dict[str, dict]:
    """Compile here, one length after another."""
    from workers.compile.job import run_compile

    results = {}
    for request in requests:
        artifact_id = request.key.artifact_id
        results[artifact_id] = run_compile(request, store, lambda state, **f: on_update(artifact_id, state, f),
                                           validate_device=device)
    return results
