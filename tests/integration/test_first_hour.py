"""The first hour of a real user, through the CLIs as they are typed (issue 12): mistakes fail before
anything is enqueued, workers that cannot serve refuse to start, the dtype trap is gone, progress
tells the truth, and the outputs say what made them. Real redis-server, real worker processes."""

import json
import shutil
import signal
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from common import keys
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import cluster
from harness.outputs import commit_records
from tests.faults.conftest import faults, wait_for
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow


def submit_args(corpus, model, out, *extra):
    return ("submit", corpus, "--model", model, "--out", out, "--shard-rows", 100, *extra)


def assert_refused_before_enqueueing(c, result, out, *phrases):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert not (out / "_plan.json").exists()
    assert not [k for k in c.redis.client().keys("*") if k.startswith((b"embed.", b"rerank."))]


# --- fail fast, before anything is enqueued ------------------------------------------------------
@pytest.mark.parametrize("model, phrase", [
    ("/no/such/models/Qwen3-Embedding-0.6B", "does not exist"),
    ("models/Qwen3-Embeding-0.6B", "is not a folder here, and fetching it as a Hugging Face hub id failed"),
    ("Qwen/Qwen3-Embedding-0.6B", "Offline?"),  # the tests run with HF_HUB_OFFLINE=1
])
def test_a_model_that_cannot_be_found_is_refused_before_planning(local_cluster, tmp_path, model, phrase):
    write_corpus(tmp_path / "c.jsonl", 50)
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", model, tmp_path / "out"))
    assert_refused_before_enqueueing(local_cluster, result, tmp_path / "out", phrase)


def test_a_reranker_given_as_an_embedding_model_is_refused(local_cluster, tiny_rerank_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 50)
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_rerank_model, tmp_path / "out"))
    assert_refused_before_enqueueing(local_cluster, result, tmp_path / "out", "is a Qwen3-Reranker checkpoint",
                                     "use --task rerank")


def test_a_dimension_above_the_hidden_size_is_refused(local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 50)
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out", "--dim", 65))
    assert_refused_before_enqueueing(local_cluster, result, tmp_path / "out", "--dim 65 is above the model's hidden size 64")


def test_a_jsonl_corpus_without_the_text_column_is_refused(local_cluster, tiny_embed_model, tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i, "body": "a sentence"}) + "\n" for i in range(2000)))
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out"))
    assert_refused_before_enqueueing(local_cluster, result, tmp_path / "out", "have no 'text' field",
                                     "['body', 'id']", "--text-column")


def test_a_job_whose_every_row_is_rejected_fails_loudly(local_cluster, tiny_embed_model, tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i, "text": ""}) + "\n" for i in range(300)))
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out", "--local"))
    assert result.returncode == 1, result.stderr
    assert "every one of the 300 rows was rejected" in result.stderr


# --- workers that cannot serve ---------------------------------------------------------------------
def test_a_worker_whose_model_does_not_match_its_task_refuses_to_start(local_cluster, tiny_rerank_model):
    [worker] = local_cluster.start_workers(1, tiny_rerank_model, task="embed", wait=False)
    assert worker.process.wait(60) == 2
    assert "is a Qwen3-Reranker checkpoint" in worker.log() and "Traceback" not in worker.log()


def test_a_worker_that_cannot_load_its_model_exits_with_the_reason(local_cluster, tiny_embed_model, tmp_path):
    # Given a checkpoint whose header and config read fine but whose weights are cut short
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_embed_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20_000])
    # When a worker starts on it, Then it exits non-zero naming the model and the error: no worker
    # that takes every message and fails each one
    [worker] = local_cluster.start_workers(1, broken, wait=False)
    assert worker.process.wait(120) == 3, worker.log()
    assert f"could not load {broken}" in worker.log()
    assert not local_cluster.redis.client().exists(keys.worker_heartbeat(worker.name))


# --- the dtype and queue trap ------------------------------------------------------------------------
def test_default_workers_and_a_default_submit_agree_on_the_queue(local_cluster, tiny_embed_model, tmp_path):
    # Given a worker and a submit that both leave --dtype at its default, the submit naming a copy of
    # the model in another folder (the queue follows the model's content, not its folder)
    ids = write_corpus(tmp_path / "c.jsonl", 300)
    copy = tmp_path / "copy-of-the-model"
    shutil.copytree(tiny_embed_model, copy)
    cluster_worker = cluster.start_cli(["workers", "start", "--model", str(tiny_embed_model), "--name", "w-default"],
                                       "w-default", local_cluster.url, local_cluster.logdir)
    local_cluster.workers.append(cluster_worker)
    cluster.wait_for_workers(local_cluster.redis.client(), [cluster_worker])
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", copy, tmp_path / "out", "--wait"))
    # Then the job runs on it to the end
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    assert_every_id_exactly_once(ids, tmp_path / "out")
    # and the worker's log said ready only once the model was loaded, the loading bar as information
    log = cluster_worker.log()
    assert "connected to the broker; loading the model" in log and "ready: model" in log
    assert "Loading weights" in log and not [line for line in log.splitlines()
                                             if "Loading weights" in line and "WARNING" in line]


def test_a_job_no_worker_serves_names_the_live_workers_of_its_model_and_gives_up_after_its_timeout(
        local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 100)
    local_cluster.start_workers(1, tiny_embed_model)  # fp32
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out", "--dtype",
                                                 "bf16", "--wait", "--timeout", "12"))
    assert result.returncode == 4, result.stderr
    assert "no live worker serves queue" in result.stderr
    assert "Live workers of this model serve other settings: embed-w0 (embed fp32 torch)" in result.stderr
    assert "no worker served queue" in result.stderr and "producer wait" in result.stderr


# --- progress that tells the truth ---------------------------------------------------------------------
def test_progress_moves_within_a_shard_and_the_workers_table_fits_80_columns(local_cluster, tiny_embed_model, tmp_path,
                                                                             barrier):
    # Given a worker held after computing its first shard, before committing it
    write_corpus(tmp_path / "c.jsonl", 300)
    [worker] = local_cluster.start_workers(1, tiny_embed_model, env=faults(barrier, "before_commit:wait"))
    local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out"))
    [shard] = barrier.wait_reached("before_commit")
    # Then its heartbeat reports the shard's rows as done although nothing is committed yet
    beat = wait_for(lambda: (b := cluster.heartbeat(local_cluster.redis.client(), worker.name))
                    and b.get("current_rows") == 100 and b, 30, "the in-shard rows in the heartbeat")
    assert beat["current_shard"] == shard and not commit_records(tmp_path / "out")
    # and its memory (resident and high-water mark, the loaded model included) and shards run so far
    assert 100 < beat["rss_mib"] <= beat["peak_rss_mib"] and beat["shards_done"] == 0
    table = local_cluster.producer("workers")
    assert f"{shard} +100" in table.stdout, table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    barrier.release("before_commit")
    wait_until_finished(tmp_path / "out")


def test_without_a_terminal_progress_is_whole_lines_and_ends_with_the_wall_time_and_rate(local_cluster,
                                                                                        tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 300)
    local_cluster.start_workers(1, tiny_embed_model)
    result = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out", "--wait"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("enqueued 3 shards of 3 on ") for line in lines), result.stderr
    assert any(line.startswith("job-") and "/300 rows" in line for line in lines), result.stderr
    assert any("300 rows in" in line and "rows/s on average" in line for line in lines), result.stderr
    assert not any(ch in result.stderr for ch in "━╸"), "a progress bar was drawn into a pipe"


def test_ctrl_c_while_waiting_says_the_job_goes_on_and_how_to_reattach(local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 100)
    producer = subprocess.Popen([sys.executable, "-m", "producer", *map(str, submit_args(
        tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out", "--wait"))], env=cluster.base_env(local_cluster.url),
        cwd=cluster.REPO_ROOT, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "out" / "_plan.json").exists(), 60, "the plan")
    wait_for(lambda: local_cluster.redis.client().llen(load_plan(OutputStore(tmp_path / "out")).queue), 60, "the enqueue")
    producer.send_signal(signal.SIGINT)
    _, err = producer.communicate(timeout=60)
    assert producer.returncode == 130, err
    job_id = load_plan(OutputStore(tmp_path / "out")).job_id
    assert "keeps running on the workers" in err and f"producer wait {job_id}" in err and "Traceback" not in err
    # and `producer wait` re-attaches
    local_cluster.start_workers(1, tiny_embed_model)
    waited = local_cluster.producer("wait", job_id)
    assert waited.returncode == 0, waited.stderr


# --- jobs, and scripts ------------------------------------------------------------------------------------
def test_status_jobs_and_workers_speak_json_for_scripts(local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 200)
    local_cluster.start_workers(1, tiny_embed_model)
    for out in ("out-a", "out-b"):  # the same options into two outputs: two jobs, both listed
        done = local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / out, "--wait"))
        assert done.returncode == 0, done.stderr
    status = json.loads(local_cluster.producer("status", tmp_path / "out-a", "--json").stdout)
    assert (status["status"], status["rows_out"], status["rejects"]) == ("completed", 200, None)
    jobs = json.loads(local_cluster.producer("jobs", "--json").stdout)
    assert sorted(j["output"] for j in jobs) == [str(tmp_path / "out-a"), str(tmp_path / "out-b")]
    assert len({j["job_id"] for j in jobs}) == 2
    workers = json.loads(local_cluster.producer("workers", "--json").stdout)
    assert [w["name"] for w in workers] == ["embed-w0"] and workers[0]["dtype"] == "fp32"


# --- the output ------------------------------------------------------------------------------------------
def test_every_data_file_says_what_made_it_and_kept_columns_ride_along(local_cluster, tiny_embed_model, tmp_path):
    # Given a jsonl and a Parquet input with a title and a URL
    rows = [{"id": i, "text": f"sentence number {i}", "title": f"t{i}", "url": f"https://x/{i}"} for i in range(150)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:100]))
    pq.write_table(pa.Table.from_pylist(rows[100:]), tmp_path / "in" / "b.parquet")
    # When it runs with --keep-columns
    result = local_cluster.producer(*submit_args(tmp_path / "in", tiny_embed_model, tmp_path / "out", "--local",
                                                 "--keep-columns", "title,url", "--instruction", "Find it"))
    assert result.returncode == 0, result.stderr
    # Then the output carries them next to the id, and every file names its model, task, options and job
    table = ds.dataset(tmp_path / "out" / "data").to_table()
    assert table.schema.names == ["id", "embedding", "n_tokens", "truncated", "input_hash", "title", "url"]
    assert sorted(zip(table["id"].to_pylist(), table["title"].to_pylist())) == [(i, f"t{i}") for i in range(150)]
    job_id = load_plan(OutputStore(tmp_path / "out")).job_id
    for path in (tmp_path / "out" / "data").glob("*.parquet"):
        meta = {k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()}
        assert meta["qwen3batch.job_id"] == job_id and meta["qwen3batch.task"] == "embed"
        assert meta["qwen3batch.instruction"] == "Find it" and meta["qwen3batch.dim"] == "64"
        assert meta["qwen3batch.model"] == str(tiny_embed_model.resolve()) and meta["qwen3batch.dtype"] == "fp32"


def test_duckdb_reads_the_embeddings_and_ranks_by_cosine_after_the_documented_cast(local_cluster, tiny_embed_model,
                                                                                  tmp_path):
    write_corpus(tmp_path / "c.jsonl", 200)
    assert local_cluster.producer(*submit_args(tmp_path / "c.jsonl", tiny_embed_model, tmp_path / "out",
                                               "--local")).returncode == 0
    data = f"'{tmp_path / 'out' / 'data'}/*.parquet'"
    con = duckdb.connect()
    assert con.sql(f"select typeof(embedding) from {data} limit 1").fetchall()[0][0] == "FLOAT[]"
    best = con.sql(f"select id, array_cosine_similarity(embedding::FLOAT[64], (select embedding::FLOAT[64] from "
                   f"{data} where id = 7)) as s from {data} order by s desc limit 1").fetchall()[0]
    assert best[0] == 7 and best[1] == pytest.approx(1.0, abs=1e-6)
