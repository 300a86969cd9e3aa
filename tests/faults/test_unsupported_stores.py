"""Stores and brokers that would strand a job are refused up front, with what to do (issue 11):
an output filesystem without hard links (a real FUSE mount that refuses link(2), as S3/GCS FUSE
mounts do), an NFS link reported as EEXIST after a retransmit, and a Redis that evicts keys."""

import os
from pathlib import Path

import pytest

from common.io.local_store import link_exclusive
from harness import cluster
from tests.faults.conftest import SIM, fuse_mount
from tests.integration.conftest import write_corpus

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def nolinks_mount(tmp_path):
    """A FUSE mount of a folder whose link(2) fails with EPERM (needs root, /dev/fuse and libfuse2,
    which `make test` installs)."""
    with fuse_mount("nolinks_fs.py", tmp_path / "backing", tmp_path / "mnt", what="link-less") as mount:
        yield mount


def test_a_submit_into_an_output_without_hard_links_says_what_to_do_and_enqueues_nothing(local_cluster,
                                                                                         tiny_embed_model, tmp_path,
                                                                                         nolinks_mount):
    write_corpus(tmp_path / "c.jsonl", 100)
    result = local_cluster.producer("submit", tmp_path / "c.jsonl", "--model", tiny_embed_model, "--out",
                                    nolinks_mount / "out", "--backend", "simulated", "--dtype", "fp32")
    assert result.returncode == 2, result.stderr
    assert "does not support hard links" in result.stderr and "Traceback" not in result.stderr
    assert not (nolinks_mount / "out" / "_plan.json").exists()
    assert not local_cluster.redis.client().keys("embed.*")


def test_a_worker_whose_output_root_has_no_hard_links_refuses_to_start(local_cluster, tiny_embed_model, nolinks_mount):
    [worker] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated", wait=False,
                                           env={**SIM, "QWEN3B_OUTPUT_ROOT": str(nolinks_mount)})
    assert worker.process.wait(60) == 2
    assert "does not support hard links" in worker.log() and "Traceback" not in worker.log()


def test_a_link_that_nfs_reports_as_existing_after_a_retransmit_is_recognised_as_ours(tmp_path):
    # Given a link that succeeded, as an NFS server's first LINK did before its reply was lost
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_bytes(b"record")
    os.link(ours, tmp_path / "commit.json")
    theirs.write_bytes(b"another record")
    # When the retransmitted LINK reports EEXIST, it is still a win; another file's EEXIST is a lost race
    assert link_exclusive(ours, tmp_path / "commit.json") is True
    assert link_exclusive(theirs, tmp_path / "commit.json") is False


def test_a_worker_refuses_a_redis_that_evicts_keys(tmp_path, tiny_embed_model):
    server = cluster.RedisServer(tmp_path / "redis", extra_args=["--maxmemory-policy", "allkeys-lru"]).start()
    try:
        worker = cluster.start_worker(server.url, str(tiny_embed_model), "w0", tmp_path / "logs", backend="simulated",
                                      env=SIM)
        assert worker.process.wait(60) == 2
        assert "maxmemory-policy allkeys-lru" in worker.log() and "noeviction" in worker.log()
    finally:
        server.stop()
