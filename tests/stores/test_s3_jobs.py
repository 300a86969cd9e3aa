"""Jobs whose corpus and output live in a bucket (issue 14), against a real S3 API server on loopback
(moto in server mode): the same commands, `--local` and queued, with real worker processes that
reach it through AWS_ENDPOINT_URL and the AWS_* variables, as they would reach AWS."""

import json
import signal

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.dispatch import shard_message
from common.io import fs
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness.s3 import IgnoresConditionalWrites, S3Proxy
from tests.faults.conftest import SIM, faults, send_through_plain_celery, wait_for
from tests.integration.conftest import write_corpus

pytestmark = pytest.mark.slow


def upload_corpus(server, tmp_path, bucket: str, rows: int) -> list[int]:
    """Half the rows as jsonl, half as Parquet, under s3://bucket/corpus/."""
    ids = write_corpus(tmp_path / "c.jsonl", rows)
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    half = rows // 2
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:half]) + "\n")
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in lines[half:]]), tmp_path / "b.parquet")
    client = server.client()
    client.upload_file(str(tmp_path / "a.jsonl"), bucket, "corpus/a.jsonl")
    client.upload_file(str(tmp_path / "b.parquet"), bucket, "corpus/b.parquet")
    return ids


def output_ids(url: str) -> list:
    return fs.arrow_dataset(f"{url}/data").to_table(columns=["id"]).column("id").to_pylist()


def s3_env(server) -> dict:
    return {**server.env(), "QWEN3B_OUTPUT_ROOT": "", "QWEN3B_INPUT_ROOTS": ""}


def test_a_local_job_reads_its_corpus_from_a_bucket_and_writes_its_output_there(local_cluster, s3_server,
                                                                               tiny_embed_model, tmp_path):
    # Given a corpus of jsonl and Parquet in a bucket
    bucket = s3_server.bucket()
    ids = upload_corpus(s3_server, tmp_path, bucket, 300)
    out = f"s3://{bucket}/emb"
    # When it is embedded with --local into the same bucket
    result = local_cluster.producer("submit", f"s3://{bucket}/corpus/", "--model", tiny_embed_model, "--out", out,
                                    "--local", "--shard-rows", 100, env=s3_env(s3_server))
    # Then every id is in OUT/data exactly once, the attempts are gone, and every reader reads it as it is
    assert result.returncode == 0, result.stderr
    assert sorted(output_ids(out)) == ids
    assert not s3_server.keys(bucket, "emb/_tmp/")
    assert OutputStore(out).load_success().rows_out == 300
    storage = {"endpoint_url": s3_server.endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
               "aws_region": "us-east-1"}
    assert sorted(pd.read_parquet(f"{out}/data")["id"]) == ids  # s3fs, from the environment
    assert sorted(pl.read_parquet(f"{out}/data/*.parquet", storage_options=storage)["id"].to_list()) == ids
    con = duckdb.connect()
    con.register_filesystem(fs.filesystem("s3"))  # DuckDB through fsspec: no httpfs extension to download
    assert con.sql(f"select count(*), count(distinct id) from '{out}/data/*.parquet'").fetchall() == [(300, 300)]


def test_a_queued_job_on_s3_survives_a_killed_worker_and_a_racing_duplicate(local_cluster, s3_server,
                                                                            tiny_embed_model, tmp_path, barrier):
    # Given a corpus and an output in a bucket, and a worker held just before committing a shard
    bucket = s3_server.bucket()
    ids = upload_corpus(s3_server, tmp_path, bucket, 600)
    out = f"s3://{bucket}/emb"
    env = {**s3_env(s3_server), **SIM, "QWEN3B_OUTPUT_ROOT": f"s3://{bucket}/", "QWEN3B_INPUT_ROOTS": f"s3://{bucket}/",
           "QWEN3B_HEARTBEAT_TTL_S": "6", "QWEN3B_RECONCILE_INTERVAL_S": "2"}
    [doomed] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated",
                                           env={**env, **faults(barrier, "before_commit:wait")})
    submitted = local_cluster.producer("submit", f"s3://{bucket}/corpus/", "--model", tiny_embed_model, "--out", out,
                                       "--backend", "simulated", "--dtype", "fp32", "--shard-rows", 100, env=env)
    assert submitted.returncode == 0, submitted.stderr
    [shard] = barrier.wait_reached("before_commit")
    # When a duplicate of its message, sent through a plain Celery client, races on the commit on
    # another worker, and the held worker is then SIGKILLed mid-shard
    plan = load_plan(OutputStore(out))
    duplicate = shard_message(plan, out, plan.shard(shard))
    send_through_plain_celery(local_cluster.url, plan.queue, "embed.shard", duplicate.model_dump())
    local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env=env)
    wait_for(lambda: OutputStore(out).load_commit(shard), 120, "the duplicate's commit")
    doomed.signal_all(signal.SIGKILL)
    # Then the job completes with every id exactly once in OUT/data, nothing left under _tmp
    wait_for(lambda: OutputStore(out).load_success(), 180, "the job's success marker")
    assert sorted(output_ids(out)) == ids
    assert not s3_server.keys(bucket, "emb/_tmp/")
    status = local_cluster.producer("status", out, "--json", env=env)
    assert json.loads(status.stdout)["status"] == "completed", status.stderr


def test_a_store_that_ignores_conditional_writes_is_refused_at_submit(local_cluster, s3_server, tiny_embed_model,
                                                                     tmp_path):
    # Given an S3 endpoint that accepts If-None-Match and ignores it
    proxy = IgnoresConditionalWrites(s3_server.port)
    try:
        bucket = s3_server.bucket()
        upload_corpus(s3_server, tmp_path, bucket, 20)
        result = local_cluster.producer("submit", f"s3://{bucket}/corpus/", "--model", tiny_embed_model, "--out",
                                        f"s3://{bucket}/emb", "--local",
                                        env={**s3_env(s3_server), "AWS_ENDPOINT_URL": proxy.endpoint})
        # Then the submit stops with what is wrong, before any plan is written
        assert result.returncode == 2, result.stderr
        assert "does not honour conditional creates" in result.stderr and "Traceback" not in result.stderr
        assert not s3_server.keys(bucket, "emb/_plan")
    finally:
        proxy.stop()


def test_a_worker_refuses_a_message_whose_bucket_output_is_outside_its_root(local_cluster, s3_server,
                                                                           tiny_embed_model, tmp_path):
    bucket, other = s3_server.bucket(), s3_server.bucket()
    upload_corpus(s3_server, tmp_path, bucket, 20)
    env = {**s3_env(s3_server), **SIM}
    planned = local_cluster.producer("submit", f"s3://{bucket}/corpus/", "--model", tiny_embed_model, "--out",
                                     f"s3://{other}/emb", "--backend", "simulated", "--dtype", "fp32", env=env)
    assert planned.returncode == 0, planned.stderr
    [worker] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated",
                                           env={**env, "QWEN3B_OUTPUT_ROOT": f"s3://{bucket}/",
                                                "QWEN3B_INPUT_ROOTS": f"s3://{bucket}/"})
    wait_for(lambda: "refused a shard message" in worker.log(), 60, "the refusal")
    assert f"outside QWEN3B_OUTPUT_ROOT (s3://{bucket})" in worker.log()
    assert not s3_server.keys(other, "emb/data/")


def test_a_400_shard_job_costs_at_most_10_s3_requests_per_shard_and_its_status_at_most_40(
        local_cluster, s3_server, tiny_embed_model, tmp_path):
    # Given a Parquet corpus in a bucket, cut into 400 shards, and two simulated workers that reach S3
    # only through a proxy that counts every request, as a bill would
    proxy = S3Proxy(s3_server.port)
    try:
        bucket = s3_server.bucket()
        ids = list(range(2000))
        pq.write_table(pa.table({"id": ids, "text": [f"sentence {i} of the corpus" for i in ids]}),
                       tmp_path / "c.parquet", row_group_size=500)
        s3_server.client().upload_file(str(tmp_path / "c.parquet"), bucket, "corpus/c.parquet")
        env = {**s3_env(s3_server), **SIM, "AWS_ENDPOINT_URL": proxy.endpoint,
               "QWEN3B_OUTPUT_ROOT": f"s3://{bucket}/", "QWEN3B_INPUT_ROOTS": f"s3://{bucket}/"}
        local_cluster.start_workers(2, tiny_embed_model, backend="simulated", env=env)
        proxy.take()
        # When the job is submitted and followed to its end (planning, the workers' shards, their
        # reconcilers' passes, the follower's, the end-of-job check: every request counts)
        out = f"s3://{bucket}/emb"
        result = local_cluster.producer("submit", f"s3://{bucket}/corpus/", "--model", tiny_embed_model, "--out", out,
                                        "--backend", "simulated", "--dtype", "fp32", "--shard-rows", 5, "--wait",
                                        env=env)
        assert result.returncode == 0, result.stderr + local_cluster.logs()
        job = proxy.take()
        # and a cold `producer status --json` reads the finished job
        status = local_cluster.producer("status", out, "--json", env=env)
        cold = proxy.take()
        # Then the whole job cost at most 10 requests per shard, and the status at most 40
        assert sorted(output_ids(out)) == ids
        assert sum(job.values()) <= 10 * 400, f"{sum(job.values()) / 400:.2f} requests per shard: {dict(job)}"
        assert json.loads(status.stdout)["status"] == "completed", status.stderr
        assert sum(cold.values()) <= 40, dict(cold)
    finally:
        proxy.stop()
