"""--reuse of an output in a bucket, on a real S3 API server on loopback (moto in server mode): the
source's input hashes and values are read through the same store code as any output, by a job
written to the bucket too, and a source missing an object is refused naming it."""

import json
import random

import numpy as np
import pytest

import qwen3batch as q3b
from common.errors import ConfigError
from common.io import fs
from harness import corpora
from harness.outputs import commit_records
from producer.reuse import ReuseRefused

pytestmark = pytest.mark.slow


def s3_env(server) -> dict:
    return {**server.env(), "QWEN3B_OUTPUT_ROOT": "", "QWEN3B_INPUT_ROOTS": ""}


def write_rows(path, texts, first_id=0):
    path.write_text("".join(json.dumps({"id": first_id + i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def read_embeddings(location: str) -> dict:
    """id -> embedding bytes, of an output's data in a bucket or a folder; asserts no id twice."""
    table = fs.arrow_dataset(f"{location}/data").to_table(columns=["id", "embedding"])
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return {i: v.tobytes() for i, v in zip(ids, flat)}


@pytest.fixture(scope="module")
def texts():
    return list(dict.fromkeys(corpora.sentences()[0]))


@pytest.fixture(scope="module")
def source_in_bucket(s3_server, tiny_embed_model, tiny_engine, tmp_path_factory, texts):
    """Job A, 400 distinct texts in four shards, written to s3://BUCKET/A: (its URL, its texts by id)."""
    folder = tmp_path_factory.mktemp("s3-source")
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/A"
    corpus = write_rows(folder / "a.jsonl", texts[:400])
    job = q3b.submit(corpus, model=tiny_embed_model, out=url, local=True, dtype="fp32", shard_rows=100,
                     progress=False, engine=tiny_engine("embed", dtype="fp32"))
    assert job.status().status == "completed"
    return url, bucket, dict(enumerate(texts[:400]))


def test_a_job_reuses_a_source_in_a_bucket_and_computes_only_the_rest(source_in_bucket, s3_server, local_cluster,
                                                                       tiny_embed_model, tiny_engine, tmp_path, texts):
    source, bucket, a_texts = source_in_bucket
    # Given corpus B: 300 of A's texts, and 100 rows of 80 texts A never held
    rng = random.Random(3)
    new = texts[1000:1080]
    b_texts = [a_texts[i] for i in range(100, 400)] + new + [rng.choice(new) for _ in range(20)]
    rng.shuffle(b_texts)
    corpus = write_rows(tmp_path / "b.jsonl", b_texts)
    # When B runs locally into the bucket with --reuse of A in the bucket
    out = f"s3://{bucket}/B"
    job = q3b.submit(corpus, model=tiny_embed_model, out=out, local=True, dtype="fp32", shard_rows=100,
                     progress=False, engine=tiny_engine("embed", dtype="fp32"), reuse=[source])
    assert job.status().status == "completed"
    # Then it computed only the 80 texts A never held, and says so in its status
    status = local_cluster.producer("status", out, "--json", env=s3_env(s3_server))
    report = json.loads(status.stdout)
    assert (report["rows_out"], report["rows_computed"], report["rows_deduplicated"], report["rows_reused"]) == (
        400, 80, 20, 300), status.stderr
    assert sum(r.rows_reused for r in commit_records(out).values()) == 300
    # and the values it copied are A's, bit for bit
    a_out, b_out = read_embeddings(source), read_embeddings(out)
    a_by_text = {a_texts[i]: v for i, v in a_out.items()}
    assert sorted(b_out) == list(range(400))
    assert sum(b_out[i] == a_by_text[t] for i, t in enumerate(b_texts) if t in a_by_text) == 300
    # and every vector is the one a fresh run of B computes
    fresh = q3b.submit(corpus, model=tiny_embed_model, out=tmp_path / "fresh", local=True, dtype="fp32",
                       shard_rows=100, progress=False, engine=tiny_engine("embed", dtype="fp32"), dedup=False)
    assert fresh.status().rows_computed == 400
    expected = read_embeddings(str(tmp_path / "fresh"))
    va = np.stack([np.frombuffer(b_out[i], dtype=np.float32) for i in range(400)]).astype(np.float64)
    vb = np.stack([np.frombuffer(expected[i], dtype=np.float32) for i in range(400)]).astype(np.float64)
    cos = np.sum(va * vb, axis=1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
    assert cos.min() >= 0.99999


def test_a_source_in_a_bucket_missing_a_data_object_is_refused_naming_it(source_in_bucket, s3_server,
                                                                         tiny_embed_model, tiny_engine, tmp_path):
    # Given a copy of A in the bucket with one committed data object deleted
    source, bucket, a_texts = source_in_bucket
    client = s3_server.client()
    for key in s3_server.keys(bucket, "A/"):
        client.copy_object(Bucket=bucket, Key="A2/" + key[2:], CopySource={"Bucket": bucket, "Key": key})
    record = sorted(commit_records(f"s3://{bucket}/A2").values(), key=lambda r: r.shard_id)[2]
    client.delete_object(Bucket=bucket, Key=f"A2/{record.data_file}")
    corpus = write_rows(tmp_path / "b.jsonl", list(a_texts.values()))
    # When a job names it with --reuse
    with pytest.raises(ReuseRefused) as refused:
        q3b.submit(corpus, model=tiny_embed_model, out=f"s3://{bucket}/C", local=True, dtype="fp32", shard_rows=100,
                   progress=False, engine=tiny_engine("embed", dtype="fp32"), reuse=[f"s3://{bucket}/A2"])
    # Then it is refused (exit 2 from the CLI: a ConfigError), naming the object, and nothing is
    # written under the new output
    assert isinstance(refused.value, ConfigError)
    assert f"s3://{bucket}/A2/{record.data_file}" in str(refused.value) and "is gone" in str(refused.value)
    assert not s3_server.keys(bucket, "C/")
