"""Copies across shards and from a --reuse source in a queued job, with a worker SIGKILLed mid-job:
a real redis-server, two real worker processes on the simulated backend (whose outputs are hashes
of each row's own tokens, so a value copied to the wrong row shows), a barrier, no sleeps.

In queued mode a copy whose first occurrence's shard is not committed yet when its shard starts
is computed instead (common/io/content.py): the rows computed are at least the distinct inputs
the source does not hold, never fewer, and every row is there exactly once."""

import json
import random
import signal

import numpy as np
import pyarrow.dataset as ds
import pytest

import qwen3batch as q3b
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import corpora
from harness.outputs import commit_records
from tests.faults.conftest import QUICK_HEALING, SIM, faults, start, submit
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished

pytestmark = pytest.mark.slow


def write_rows(path, texts, first_id=0):
    path.write_text("".join(json.dumps({"id": first_id + i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def embeddings(out) -> dict:
    table = ds.dataset(out / "data", format="parquet").to_table(columns=["id", "embedding"])
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return dict(zip(table.column("id").to_pylist(), flat.astype(np.float64)))


def run_simulated_here(corpus, out, model, **options):
    job = q3b.submit(corpus, model=model, out=out, local=True, backend="simulated", dtype="fp32", shard_rows=200,
                     progress=False, **options)
    assert job.status().status == "completed"
    return job


def test_a_queued_job_with_copies_and_a_reuse_source_survives_a_killed_worker(local_cluster, tiny_embed_model,
                                                                             tmp_path, barrier, monkeypatch):
    monkeypatch.setenv("QWEN3B_SIM_BATCH_S", SIM["QWEN3B_SIM_BATCH_S"])
    texts = list(dict.fromkeys(corpora.sentences()[0]))
    rng = random.Random(8)
    # Given a finished source A over 600 texts (simulated backend, fp32, like the workers)
    run_simulated_here(write_rows(tmp_path / "a.jsonl", texts[:600]), tmp_path / "A", tiny_embed_model)
    # and corpus B of 1,200 rows in six shards: 300 rows of texts A holds, 600 new texts, and 300
    # rows repeating new texts (in other shards and in their own)
    held = [rng.choice(texts[:600]) for _ in range(300)]
    new = texts[1000:1600]
    b_texts = held + new + [rng.choice(new) for _ in range(300)]
    rng.shuffle(b_texts)
    corpus = write_rows(tmp_path / "b.jsonl", b_texts)
    ids = list(range(len(b_texts)))
    # and two workers, one of which will be held before committing its first shard
    [doomed] = start(local_cluster, 1, tiny_embed_model, env={**QUICK_HEALING, **faults(barrier, "before_commit:wait")})
    [survivor] = start(local_cluster, 1, tiny_embed_model, env=QUICK_HEALING)
    # When B is submitted with --reuse A, and the held worker is SIGKILLed (every process of it)
    out = tmp_path / "B"
    submit(local_cluster, tiny_embed_model, corpus, out, 200, "--reuse", tmp_path / "A")
    plan = load_plan(OutputStore(out))
    assert plan.header.reusable == 300 and plan.header.copies == 300
    [killed_shard] = barrier.wait_reached("before_commit")
    doomed.signal_all(signal.SIGKILL)
    # Then the job completes by itself, with every row exactly once
    state = wait_until_finished(out, timeout_s=180)
    assert state.success.status == "completed", local_cluster.logs()
    assert_every_id_exactly_once(ids, out)
    assert state.commits[killed_shard].worker == survivor.name
    # and the counts add up: every row A held copied from A, every other distinct text computed
    # at least once, and copies inside the job made where their first occurrence was committed
    marker = state.success
    assert marker.rows_out == 1200
    assert marker.rows_computed + marker.rows_deduplicated + marker.rows_reused == marker.rows_out
    assert marker.rows_reused == plan.header.reusable == 300
    assert marker.rows_computed >= 600 and marker.rows_deduplicated > 0
    a_texts = set(texts[:600])
    for record in commit_records(out).values():
        shard = plan.shard(record.shard_id)
        assert record.rows_reused == sum(t in a_texts for t in b_texts[shard.row_start:shard.row_end]), record.shard_id
    status = local_cluster.producer("status", out, "--json")
    report = json.loads(status.stdout)
    assert (report["rows_computed"], report["rows_deduplicated"], report["rows_reused"]) == (
        marker.rows_computed, marker.rows_deduplicated, marker.rows_reused), status.stderr
    # and every vector is the one a fresh local run computes for its row
    run_simulated_here(corpus, tmp_path / "fresh", tiny_embed_model, dedup=False)
    got, fresh = embeddings(out), embeddings(tmp_path / "fresh")
    assert sorted(got) == sorted(fresh) == ids
    va, vb = np.stack([got[i] for i in ids]), np.stack([fresh[i] for i in ids])
    cos = np.sum(va * vb, axis=1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
    assert cos.min() >= 0.99999, f"row {int(cos.argmin())}: cosine {cos.min()}"
