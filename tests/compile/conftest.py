"""Compile tests: artifacts built once per session (through a real compile worker where the
test is about the queue), a private Redis, the tiny models."""

import sys
from pathlib import Path

import pytest

from harness.corpora import sts_rows
from common.artifacts import ArtifactStore
from common.model_identity import model_ref
from common.schemas import ArtifactKey, CompileRequest
from harness import cluster

FAKES = Path(__file__).resolve().parents[1] / "fakes"
QUEUE_SEQLENS = (64, 128)  # compiled through the queue, then served by an onnx worker
BATCH = 4


def sts_sentences(n: int) -> list[str]:
    """2n real sentences of varied lengths (STS12 pairs where the file exists: harness/corpora.py)."""
    rows, _ = sts_rows(n)
    return [r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]


def request_for(model: Path, task: str, dtype: str, seqlen: int, backend: str = "onnx", batch: int = BATCH):
    ref = model_ref(str(model))
    key = ArtifactKey(model_identity=ref.identity, model_tag=ref.tag, backend=backend, task=task, dtype=dtype,
                      batch=batch, seqlen=seqlen)
    return CompileRequest(job="test", model=ref, key=key)


@pytest.fixture(scope="session")
def queued_compile(tiny_embed_model, tmp_path_factory):
    """`producer compile --wait` of the tiny embedding model (fp32, 64 and 128) through a real
    compile worker and a private Redis: (the producer's completed process, the store's folder)."""
    root = tmp_path_factory.mktemp("queued-compile")
    server = cluster.RedisServer(root / "redis").start()
    env = {"QWEN3B_ARTIFACT_STORE": str(root / "artifacts")}
    worker = cluster.start_compile_worker(server.url, "compile-w0", root / "logs", env=env)
    try:
        cluster.wait_for_workers(server.client(), [worker])
        done = cluster.run_cli("producer", ["compile", "--model", str(tiny_embed_model), "--backend", "onnx",
                                            "--task", "embed", "--dtype", "fp32", "--batch", str(BATCH),
                                            "--seqlens", ",".join(map(str, QUEUE_SEQLENS)), "--wait"],
                               server.url, timeout_s=600, env=env)
        yield done, root / "artifacts", worker.log()
    finally:
        worker.stop(timeout_s=5)
        server.stop()


@pytest.fixture(scope="session")
def local_artifacts(tiny_embed_model, tiny_rerank_model, tmp_path_factory):
    """compile(model, task, dtype, seqlen) -> run_compile's result, each key compiled once a session."""
    from workers.compile.job import run_compile

    store = ArtifactStore(tmp_path_factory.mktemp("local-artifacts"))
    done: dict = {}

    def compile_(task: str, dtype: str, seqlen: int = 128) -> dict:
        model = tiny_embed_model if task == "embed" else tiny_rerank_model
        request = request_for(model, task, dtype, seqlen)
        if request.key not in done:
            done[request.key] = run_compile(request, store)
        return done[request.key]

    compile_.store = store
    return compile_


@pytest.fixture
def fake_vendor_tools(tmp_path, monkeypatch):
    """A fake `vamc` on QWEN3B_VAMC and a fake `vaststreamx` importable; returns the vamc call log."""
    vamc = tmp_path / "bin" / "vamc"
    vamc.parent.mkdir()
    vamc.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES / 'fake_vamc.py'} \"$@\"\n")
    vamc.chmod(0o755)
    log = tmp_path / "vamc-calls.jsonl"
    monkeypatch.setenv("QWEN3B_VAMC", str(vamc))
    monkeypatch.setenv("FAKE_VAMC_LOG", str(log))
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("vaststreamx", None)
    import vaststreamx

    vaststreamx.CALLS.clear()
    yield log
    sys.modules.pop("vaststreamx", None)



from tests.integration.conftest import local_cluster, redis_server  # noqa: E402,F401  (fixtures)
