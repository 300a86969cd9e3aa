"""One compile job for one artifact key, as a plain function: the Celery task and `--local`
both call run_compile.

    already published -> "exists" (nothing is compiled)
    compile into a staging folder -> validate against the fp32 torch engine -> publish
    validation failed -> "failed" with the figures; nothing is published
    another job published the key meanwhile -> "exists"; ours is discarded

Publishing is an atomic rename (see common/artifacts.py), so a crash at any point leaves either
no artifact or a whole one, and a redelivered or duplicated job is harmless.
"""

import logging
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from common.artifacts import ArtifactStore
from common.errors import Qwen3BatchError
from common.io.output import sha256_file
from common.model_identity import model_ref
from common.paths import check_within
from common.schemas import HUB_ID
from common.settings import ENV_PREFIX
from common.schemas import ArtifactManifest, CompileRequest, Validation
from workers.compile.validate import ValidationFailed, validate

log = logging.getLogger(__name__)

Report = Callable[..., None]  # report(state, **fields)


def run_compile(request: CompileRequest, store: ArtifactStore, report: Report = lambda state, **f: None,
                validate_device: str = "cpu") -> dict:
    """Compile, validate and publish one artifact; returns the final status fields."""
    key = request.key
    if store.manifest(key) is not None:
        return finish(report, "exists", folder=str(store.folder(key)), note="already published")
    report("running", host=socket.gethostname())
    started = time.perf_counter()
    try:
        identity = verify_model(request)
        source = published_fp32_graph(store, key) if key.backend == "onnx" else None
        with store.staging() as staged, tempfile.TemporaryDirectory(prefix="compile-") as work:
            files, inputs, outputs, versions = build(request, source, staged, Path(work))
            validation, note = check(request, staged, files, validate_device)
            if validation is not None and not validation.passed:
                return finish(report, "failed", reason=rejection(validation), validation=validation.model_dump())
            manifest = ArtifactManifest(
                key=key, model_source=request.model.source, model_identity=identity, files=tuple(files),
                files_sha256={name: sha256_file(staged / name) for name in files if (staged / name).is_file()}, inputs=inputs, outputs=outputs,
                validation=validation, validation_note=note, tool_versions=versions,
                derived_from=str(source.parent) if source else "",
                compile_seconds=round(time.perf_counter() - started, 2),
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), job=request.job,
                host=socket.gethostname())
            if not store.publish(staged, manifest):
                return finish(report, "exists", folder=str(store.folder(key)),
                              note="another job published this key while this one compiled; its artifact is kept")
    except (Qwen3BatchError, ValidationFailed) as exc:
        return finish(report, "failed", reason=str(exc))
    except Exception as exc:  # an exporter or runtime crash: the job must end, not stay "running"
        log.exception("compile %s crashed", key.artifact_id)
        return finish(report, "failed", reason=f"{type(exc).__name__}: {exc}")
    return finish(report, "published", folder=str(store.folder(key)), seconds=manifest.compile_seconds,
                  validation=validation.model_dump() if validation else None, note=note)


def admit(request: CompileRequest, input_roots: tuple[str, ...]) -> None:
    """A queued request's checkpoint folder must lie inside the compile worker's input roots
    (a hub id names no path); RefusedMessage otherwise."""
    if not HUB_ID.match(request.model.source):
        check_within(request.model.source, input_roots, "model", f"{ENV_PREFIX}INPUT_ROOTS")


def verify_model(request: CompileRequest) -> str:
    """The identity of the checkpoint this job would load, recomputed from its files. A message whose
    source is not the model its key names (model B under model A's key) would publish B's graph for
    A's workers: a silent model swap. It is refused instead."""
    found = model_ref(request.model.source)
    if found.identity != request.key.model_identity:
        raise Qwen3BatchError(
            f"refused: {request.model.source} has identity {found.identity[:12]}, but the job's key names model "
            f"{request.key.model_tag} ({request.key.model_identity[:12]}); nothing was compiled")
    return found.identity


def run_delivery(request: CompileRequest, store: ArtifactStore, client, report: Report, max_attempts: int,
                 validate_device: str = "cpu") -> dict:
    """One delivery of a queued compile job. Deliveries are counted: a compile that kills its worker
    (out of memory, a crashing exporter) is redelivered, and past max_attempts it fails instead of
    taking the compile worker down again and again."""
    from common import defaults, faults, keys

    counter = keys.compile_attempts(request.job)
    attempt = client.hincrby(counter, request.key.artifact_id, 1)
    client.expire(counter, defaults.COMPILE_STATUS_TTL_S)
    if attempt > max_attempts:
        return finish(report, "failed", reason=f"the compile worker was lost {attempt - 1} times on this artifact "
                                               f"(out of memory? see the compile worker's log); not retried")
    faults.inject("compile", request.key.artifact_id)
    return run_compile(request, store, report, validate_device)


def finish(report: Report, state: str, **fields) -> dict:
    report(state, **fields)
    return {"state": state, **fields}


def rejection(v: Validation) -> str:
    relation = ">=" if v.metric == "worst_cosine" else "<="
    return (f"validation failed: {v.metric} {v.worst:.6g} against the fp32 torch engine (mean {v.mean:.6g}, "
            f"{v.samples} samples); the bound for this dtype is {relation} {v.bound}. Not published.")


def build(request: CompileRequest, fp32_graph: Path | None, staged: Path,
          work: Path) -> tuple[list[str], tuple, tuple, dict]:
    key = request.key
    if key.backend == "onnx":
        from workers.compile import onnx_export

        onnx_export.require_onnx()
        files = onnx_export.export(request.model.source, key.task, key.batch, key.seqlen, key.dtype, staged,
                                   fp32_graph)
        return files, onnx_export.INPUTS, onnx_export.OUTPUTS[key.task], onnx_export.tool_versions(key.dtype)
    from workers.compile import vacc
    from workers.engines.vacc_engine import INPUT_ORDER, OUTPUT

    files = vacc.compile_vacc(request.model.source, key.model_tag, key.task, key.seqlen, key.dtype, staged, work)
    return files, INPUT_ORDER[key.task], (OUTPUT[key.task],), {"vamc": vacc.vamc_version(vacc.find_vamc())}


def published_fp32_graph(store: ArtifactStore, key) -> Path | None:
    """The fp32 graph of the same model and shape, if it is published: fp16 and int8 start from it."""
    if key.dtype == "fp32":
        return None
    fp32 = key.model_copy(update={"dtype": "fp32"})
    manifest = store.manifest(fp32)
    return store.local_copy(manifest) / manifest.files[0] if manifest is not None else None


def check(request: CompileRequest, staged: Path, files: list[str], device: str) -> tuple[Validation | None, str]:
    """Validate the staged artifact through its own engine. A VACC artifact can only run on a
    card: where the runtime is absent it is published unvalidated, and says so."""
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine_from_artifacts

    key = request.key
    if key.backend == "vacc":
        from workers.engines.vacc_engine import vaststreamx_available

        if not vaststreamx_available():
            return None, "not validated: the vaststreamx runtime is not on the compile host"
    spec = EngineSpec(model=request.model.source, task=key.task, backend=key.backend, dtype=key.dtype,
                      device=device if key.backend == "onnx" else request_vacc_device(device),
                      seqlens=(key.seqlen,))
    candidate = create_engine_from_artifacts(spec, {key.seqlen: staged / files[0]}, key.batch)
    return validate(request, candidate), ""


def request_vacc_device(device: str) -> str:
    return device if device.startswith("vacc") else "vacc:0"
