"""A store that fails for a while is waited out, never quarantined: a disk that fills and is freed,
a folder read-only for a while (a real FUSE mount whose writes fail on demand), and a committed
data file deleted under a running job. Each job completes by itself, with no operator command,
every row exactly once. Real workers, a private redis-server."""

import json
import time

import pytest

from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import cluster
from harness.outputs import commit_records
from tests.faults.conftest import QUICK_HEALING, faults, fuse_mount, start, submit, wait_for
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow


@pytest.fixture
def faulty_mount(tmp_path):
    """(mount, control): a FUSE mount of a folder whose writes fail with the errno named in the
    control file while it names one (needs root, /dev/fuse and libfuse2, which `make test` installs)."""
    control = tmp_path / "fault"
    with fuse_mount("faulty_fs.py", tmp_path / "backing", tmp_path / "mnt", str(control), what="faulty") as mount:
        yield mount, control


@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_an_output_disk_that_fails_for_a_while_is_waited_out_and_the_job_completes_by_itself(
        local_cluster, tiny_embed_model, tmp_path, faulty_mount, fault):
    mount, control = faulty_mount
    out = mount / "out"
    # Given a job submitted into the mount, whose disk then fills up (or turns read-only)
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 100)
    control.write_text(fault)
    # When a worker takes its shards
    [worker] = start(local_cluster, 1, tiny_embed_model)
    # Then it waits, saying why, in its heartbeat and in the job's status
    client = local_cluster.redis.client()
    wait_for(lambda: fault in (cluster.heartbeat(client, worker.name) or {}).get("stalled", ""), 60,
             f"the worker reporting {fault}")
    status = json.loads(local_cluster.producer("status", out, "--json").stdout)
    assert any(fault in why for why in status["stalled"].values()), status
    assert status["shards_quarantined"] == 0
    # and once the disk has room again (or is writable), the job completes with no command
    time.sleep(2)  # more failed deliveries: none may count towards a quarantine
    control.write_text("")
    state = wait_until_finished(out, timeout_s=180)
    assert state.success.status == "completed" and not state.quarantined
    assert_every_id_exactly_once(ids, out)
    assert (cluster.heartbeat(client, worker.name) or {}).get("stalled", "") == ""


def test_a_committed_data_file_deleted_mid_job_is_computed_again_once_and_the_job_completes(local_cluster,
                                                                                           tiny_embed_model, tmp_path,
                                                                                           barrier):
    # Given a job whose shards are held before they commit
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    out = tmp_path / "out"
    start(local_cluster, 1, tiny_embed_model, env={**QUICK_HEALING, **faults(barrier, "before_commit:wait")})
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 100)
    [first] = barrier.wait_reached("before_commit")
    barrier.release("before_commit", first)
    wait_for(lambda: first in commit_records(out) and (out / commit_records(out)[first].data_file).exists(), 60,
             "the first shard committed")
    # When its data file is deleted while the job runs
    (out / commit_records(out)[first].data_file).unlink()
    barrier.release("before_commit")
    # Then the end-of-job check withdraws that commit, the shard is computed again, and the job
    # completes by itself with every row exactly once
    state = wait_until_finished(out, timeout_s=180)
    assert state.success.status == "completed" and not state.quarantined
    assert_every_id_exactly_once(ids, out)
    assert (out / state.commits[first].data_file).exists()
    assert load_plan(OutputStore(out)).shards_total == len(state.commits)


def test_a_local_job_waits_out_a_full_disk_and_completes(local_cluster, tiny_embed_model, tmp_path, faulty_mount):
    mount, control = faulty_mount
    out = mount / "out"
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    # Given a --local job whose output disk fills up once planning is done
    job = cluster.start_cli(["producer", "submit", str(tmp_path / "c.jsonl"), "--model", str(tiny_embed_model),
                             "--out", str(out), "--dtype", "fp32", "--backend", "simulated", "--shard-rows", "100",
                             "--local"], "local", local_cluster.url, tmp_path / "logs",
                            {**local_cluster.roots, "QWEN3B_SIM_BATCH_S": "0.2"})
    wait_for(lambda: (out / "_plan.json").exists(), 60, "the plan written")
    control.write_text("ENOSPC")
    # When the disk has room again after a few failed writes
    wait_for(lambda: "the store fails" in job.log(), 60, "the local job noticing the full disk")
    control.write_text("")
    # Then the job completes with nothing quarantined and every row once, and exits 0
    assert job.process.wait(180) == 0, job.log()[-3000:]
    state = wait_until_finished(out, timeout_s=30)
    assert state.success.status == "completed" and not state.quarantined
    assert_every_id_exactly_once(ids, out)
