"""A job in int8 on the torch backend (workers start --dtype int8 on a CPU) through a real worker
process: it lands on the int8 queue, its output says int8, and its vectors are the fp32 ones of the
same job run in-process (--local) within the int8 bound, and not equal to them (quantised)."""

import numpy as np
import pyarrow.dataset as ds
import pytest

from tests.equivalence.test_int8_engine import INT8_MIN_COSINE
from tests.integration.conftest import assert_every_id_exactly_once, write_corpus

pytestmark = pytest.mark.slow


def test_an_int8_job_through_an_int8_worker_stays_within_the_int8_bound_of_fp32(local_cluster, tiny_embed_model,
                                                                                tmp_path):
    # Given a corpus run once in-process in fp32
    ids = write_corpus(tmp_path / "corpus.jsonl", 300)
    common = ["--model", tiny_embed_model, "--shard-rows", 100]
    local = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--out", tmp_path / "a", "--local",
                                   "--dtype", "fp32", *common)
    assert local.returncode == 0, local.stderr
    # When the same corpus is submitted to a worker started with --dtype int8
    local_cluster.start_workers(1, tiny_embed_model, dtype="int8")
    queued = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--out", tmp_path / "b", "--wait",
                                    "--dtype", "int8", *common)
    assert queued.returncode == 0, queued.stderr + local_cluster.logs()
    assert ".int8.torch" in queued.stdout + queued.stderr  # the int8 queue of the torch backend
    # Then every id is there once, the output says int8, and the vectors are quantised fp32 ones
    assert_every_id_exactly_once(ids, tmp_path / "b")
    a = ds.dataset(tmp_path / "a" / "data").to_table().sort_by("id")
    b = ds.dataset(tmp_path / "b" / "data").to_table().sort_by("id")
    assert b.schema.metadata[b"qwen3batch.dtype"] == b"int8"
    va, vb = (np.array(t.column("embedding").to_pylist()) for t in (a, b))
    cosines = np.sum(va * vb, axis=1)
    assert cosines.min() >= INT8_MIN_COSINE and cosines.min() < 0.99999, cosines.min()
    assert "torchao" not in local_cluster.logs()  # its import warnings stay out of the worker's log
