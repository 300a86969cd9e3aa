"""A job in int8 on the torch backend (workers start --dtype int8 on a CPU) through a real worker
process: it lands on the int8 queue, its output says int8, and it holds what the same job run
in-process (--local) holds, row by row."""

import numpy as np
import pyarrow.dataset as ds
import pytest

from tests.integration.conftest import assert_every_id_exactly_once, write_corpus

pytestmark = pytest.mark.slow


def test_an_int8_job_through_an_int8_worker_matches_the_same_job_run_locally(local_cluster, tiny_embed_model,
                                                                            tmp_path):
    # Given a corpus run once in-process in int8
    ids = write_corpus(tmp_path / "corpus.jsonl", 300)
    common = ["--model", tiny_embed_model, "--dtype", "int8", "--shard-rows", 100]
    local = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--out", tmp_path / "a", "--local", *common)
    assert local.returncode == 0, local.stderr
    # When the same corpus is submitted to a worker started with --dtype int8
    local_cluster.start_workers(1, tiny_embed_model, dtype="int8")
    queued = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--out", tmp_path / "b", "--wait", *common)
    assert queued.returncode == 0, queued.stderr + local_cluster.logs()
    assert ".int8.torch" in queued.stdout + queued.stderr  # the int8 queue of the torch backend
    # Then every id is there once, the output says int8, and the vectors are the in-process ones
    assert_every_id_exactly_once(ids, tmp_path / "b")
    a = ds.dataset(tmp_path / "a" / "data").to_table().sort_by("id")
    b = ds.dataset(tmp_path / "b" / "data").to_table().sort_by("id")
    assert b.schema.metadata[b"qwen3batch.dtype"] == b"int8"
    va, vb = (np.array(t.column("embedding").to_pylist()) for t in (a, b))
    assert np.min(np.sum(va * vb, axis=1)) >= 0.99999
    assert "torchao" not in local_cluster.logs()  # its import warnings stay out of the worker's log
