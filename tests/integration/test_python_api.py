"""The Python API as a notebook user calls it (`import qwen3batch`), against a real redis-server and
real worker processes for the queued path (issue 12)."""

import numpy as np
import pytest

import qwen3batch as q3b
from common.settings import load_settings
from common.templates import format_query
from tests.integration.conftest import write_corpus

pytestmark = pytest.mark.slow


def test_a_local_job_runs_in_the_call_and_reads_back_as_a_table(tiny_embed_model, tmp_path):
    ids = write_corpus(tmp_path / "c.jsonl", 250)
    job = q3b.submit(tmp_path / "c.jsonl", model=tiny_embed_model, out=tmp_path / "out", local=True, shard_rows=100,
                     progress=False)
    status = job.status()
    assert (status.status, status.rows_out, status.shards_committed) == ("completed", 250, 3)
    table = job.read()
    assert sorted(table["id"].to_pylist()) == ids and table.schema.field("embedding").type.list_size == 64
    assert job.rejects().num_rows == 0
    assert q3b.open_job(tmp_path / "out").job_id == job.job_id


def test_a_queued_job_is_followed_cancelled_and_resumed_from_python(local_cluster, tiny_embed_model, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("QWEN3B_BROKER_URL", local_cluster.url)
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    job = q3b.submit(tmp_path / "c.jsonl", model=tiny_embed_model, out=tmp_path / "out", shard_rows=100,
                     progress=False, settings=load_settings())
    assert job.status().status == "queued"
    job.cancel()
    assert job.status().status == "cancelled"
    assert job.resume() == 0  # every shard still has its message waiting: nothing is published twice
    local_cluster.start_workers(1, tiny_embed_model)
    final = job.wait(progress=False, timeout_s=120)
    assert final.status == "completed" and final.rows_out == 400
    assert sorted(job.read(columns=["id"])["id"].to_pylist()) == ids


def test_embed_and_rerank_give_the_engines_outputs_for_small_batches(tiny_embed_model, tiny_rerank_model, tiny_engine):
    texts = ["A cat sits on the mat.", "Stock markets fell today."]
    vectors = q3b.embed(texts, model=tiny_embed_model, dtype="fp32")
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors, tiny_engine("embed", dtype="fp32").embed(texts).vectors, atol=1e-6)
    queries = q3b.embed(texts, model=tiny_embed_model, dtype="fp32", instruction="Find it", dim=32)
    expected = tiny_engine("embed", dtype="fp32").embed([format_query(t, "Find it") for t in texts], dim=32).vectors
    assert queries.shape == (2, 32) and np.allclose(queries, expected, atol=1e-6)
    scores = q3b.rerank(["what sits on the mat?"] * 2, texts, model=tiny_rerank_model, dtype="fp32")
    assert scores.shape == (2,) and np.allclose(scores, tiny_engine("rerank", dtype="fp32").rerank(
        ["what sits on the mat?"] * 2, texts).scores, atol=1e-6)


def test_the_api_refuses_what_the_cli_refuses_with_the_same_message(tiny_rerank_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 10)
    with pytest.raises(q3b.Qwen3BatchError, match="is a Qwen3-Reranker checkpoint"):
        q3b.submit(tmp_path / "c.jsonl", model=tiny_rerank_model, out=tmp_path / "out", local=True, progress=False)
    with pytest.raises(q3b.Qwen3BatchError, match="is a Qwen3-Reranker checkpoint"):
        q3b.embed(["x"], model=tiny_rerank_model)
