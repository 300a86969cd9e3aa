"""A queue message is input, not an order (issue 11). Each test plays someone who can write to
Redis: messages sent through a stock Celery client, plans planted in folders, symlinks planted in
an output. Real worker processes and a private redis-server; the worker must refuse, and nothing
may be read or written outside its roots."""

import os

import pytest

from common import keys
from common.dispatch import shard_message
from common.io.plans import load_plan
from common.io.store import OutputStore
from common.model_identity import model_ref
from common.schemas import JobSpec
from harness.outputs import commit_records
from producer.plan import plan_job
from tests.faults.conftest import SIM, send_through_plain_celery, submit, wait_for
from tests.integration.conftest import wait_until_finished, write_corpus

pytestmark = pytest.mark.slow


def plant_plan(model, corpus, out):
    """What an attacker with write access to some folder can do: put a valid plan there that names
    any file, and a shard message pointing at it."""
    spec = JobSpec(model=model_ref(str(model)), backend="simulated", dtype="fp32", shard_rows=100)
    plan, _ = plan_job(str(corpus), spec, OutputStore(out))
    message = shard_message(plan, str(OutputStore(out).root), plan.shard_at(0))
    return plan, message.model_dump()


def secret_corpus(tmp_path):
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    write_corpus(folder / "secret.jsonl", 50)
    return folder / "secret.jsonl"


def start_worker(c, model, **env):
    [worker] = c.start_workers(1, model, backend="simulated", env={**SIM, **env})
    return worker


def refused(c, worker, plan, expected: str) -> None:
    wait_for(lambda: "refused a shard message" in worker.log(), 60, "the refusal")
    assert expected in worker.log(), worker.log()[-3000:]
    reasons = c.redis.client().hgetall(keys.job_refused(plan.job_id))
    assert any(expected in v.decode() for v in reasons.values()), reasons


def test_a_worker_with_no_root_configured_writes_only_under_the_folder_it_started_in(local_cluster, tiny_embed_model,
                                                                                     tmp_path):
    # Given a worker started with the default configuration (no QWEN3B_OUTPUT_ROOT)
    worker = start_worker(local_cluster, tiny_embed_model, QWEN3B_OUTPUT_ROOT="", QWEN3B_INPUT_ROOTS="")
    assert "QWEN3B_OUTPUT_ROOT unset: the folder this worker started in" in worker.log()
    # When someone plants a plan naming a private file in a folder of theirs, and sends one message
    plan, message = plant_plan(tiny_embed_model, secret_corpus(tmp_path), tmp_path / "attacker")
    send_through_plain_celery(local_cluster.url, plan.queue, "embed.shard", message)
    # Then the worker refuses it, and nothing is written into the attacker's folder
    refused(local_cluster, worker, plan, "outside QWEN3B_OUTPUT_ROOT")
    assert not (tmp_path / "attacker" / "data").exists() and not (tmp_path / "attacker" / "_commits").exists()


def test_a_plan_inside_the_output_root_cannot_make_a_worker_read_outside_its_input_roots(local_cluster,
                                                                                         tiny_embed_model, tmp_path):
    # Given a worker whose roots are set, and a plan planted inside its output root naming a private file
    root, inputs = tmp_path / "root", tmp_path / "inputs"
    root.mkdir()
    inputs.mkdir()
    worker = start_worker(local_cluster, tiny_embed_model, QWEN3B_OUTPUT_ROOT=str(root), QWEN3B_INPUT_ROOTS=str(inputs))
    plan, message = plant_plan(tiny_embed_model, secret_corpus(tmp_path), root / "job")
    # When a message for it is sent
    send_through_plain_celery(local_cluster.url, plan.queue, "embed.shard", message)
    # Then the worker refuses to read the file
    refused(local_cluster, worker, plan, "outside QWEN3B_INPUT_ROOTS")
    assert not (root / "job" / "data").exists()


def test_a_symlink_planted_inside_the_output_cannot_lead_a_worker_outside_it(local_cluster, tiny_embed_model,
                                                                             tmp_path):
    # Given a legitimate job inside the root, whose data folder is replaced by a link to elsewhere
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    write_corpus(tmp_path / "c.jsonl", 200)
    env = {"QWEN3B_OUTPUT_ROOT": str(root), "QWEN3B_INPUT_ROOTS": str(tmp_path)}
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", root / "job", 100, env=env)
    os.symlink(elsewhere, root / "job" / "data")
    # When a worker runs it
    start_worker(local_cluster, tiny_embed_model, **env)
    state = wait_until_finished(root / "job")
    # Then nothing was written through the link: the shards are quarantined with the reason
    assert list(elsewhere.iterdir()) == []
    assert sorted(state.quarantined) == [s.shard_id for s in state.plan.iter_shards()]
    assert all("outside the output" in q.reason for q in state.quarantined.values())


@pytest.mark.parametrize("field, value, reason", [
    ("input_path", "/etc/passwd", "the plan"),  # disagrees with the plan
    ("row_end", 10_000, "the plan"),
    ("ordinal", 1, "the plan"),  # another shard's place: the message must name that shard's rows
    ("ordinal", 5_000, "not in the plan"),
    ("job_id", "../../etc", "String should match pattern"),
    ("shard_id", "../../../x", "String should match pattern"),
    ("row_start", "0", "valid integer"),  # no coercion of message fields
    ("extra", "field", "Extra inputs are not permitted"),
])
def test_a_message_that_disagrees_with_its_plan_or_its_schema_is_refused(local_cluster, tiny_embed_model, tmp_path,
                                                                         field, value, reason):
    # Given a real job (no worker yet) and a copy of one of its messages with one field changed
    write_corpus(tmp_path / "c.jsonl", 200)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 100)
    plan = load_plan(OutputStore(tmp_path / "out"))
    local_cluster.redis.client().delete(plan.queue)  # only the crafted message will be there
    message = dict(shard_message(plan, str(OutputStore(tmp_path / "out").root), plan.shard_at(0)).model_dump(),
                   **{field: value})
    # When it is sent to a worker of that queue
    worker = start_worker(local_cluster, tiny_embed_model, QWEN3B_RECONCILE_INTERVAL_S="3600")
    send_through_plain_celery(local_cluster.url, plan.queue, "embed.shard", message)
    # Then it is refused with the reason, and nothing ran
    wait_for(lambda: "refused a shard message" in worker.log(), 60, "the refusal")
    assert reason in worker.log(), worker.log()[-3000:]
    assert not commit_records(tmp_path / "out")
    assert "succeeded" in worker.log() and "'refused'" in worker.log()


def test_the_producer_refuses_a_job_that_the_live_workers_would_refuse(local_cluster, tiny_embed_model, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    start_worker(local_cluster, tiny_embed_model, QWEN3B_OUTPUT_ROOT=str(root), QWEN3B_INPUT_ROOTS=str(tmp_path))
    write_corpus(tmp_path / "c.jsonl", 100)
    result = local_cluster.producer("submit", tmp_path / "c.jsonl", "--model", tiny_embed_model, "--out",
                                    tmp_path / "elsewhere", "--backend", "simulated", "--dtype", "fp32",
                                    env={"QWEN3B_OUTPUT_ROOT": ""})
    assert result.returncode == 2, result.stderr
    assert f"write only under {root}" in result.stderr
    assert not local_cluster.redis.client().keys("embed.*")  # nothing was enqueued
