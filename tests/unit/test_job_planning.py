"""Planning: deterministic shards, duplicate ids, fingerprints, one job per output."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from common.io.corpus import InputError
from common.io.store import JobConflictError, OutputStore
from common.schemas import JobSpec, ModelRef
from producer.plan import plan_job

MODEL = ModelRef(source="/models/m", identity="0" * 64, tag="m-00000000")


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_same_inputs_give_the_same_plan_and_job_id(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": i, "text": "t"} for i in range(25)])
    spec = JobSpec(model=MODEL, shard_rows=10)
    first, made = plan_job(str(tmp_path / "a.jsonl"), spec, OutputStore(tmp_path / "o1"))
    second, _ = plan_job(str(tmp_path / "a.jsonl"), spec, OutputStore(tmp_path / "o2"))
    assert made
    assert first.fingerprint == second.fingerprint  # the same job ...
    assert first.job_id != second.job_id  # ... into two outputs: two ids, so `producer jobs` lists both
    assert [s.shard_id for s in first.iter_shards()] == [s.shard_id for s in second.iter_shards()] == [
        "00000000-000000000000", "00000000-000000000010", "00000000-000000000020"]
    assert first.rows_total == 25 and first.id_type == "int64"


def test_ids_seen_earlier_in_the_corpus_are_listed_with_their_first_occurrence(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": "x", "text": "t"}, {"id": "y", "text": "t"}])
    write(tmp_path / "b.jsonl", [{"id": "y", "text": "t"}, {"id": 7, "text": "t"}, {"id": "x", "text": "t"}])
    store = OutputStore(tmp_path / "out")
    plan, _ = plan_job(str(tmp_path / "*.jsonl"), JobSpec(model=MODEL), store)
    assert plan.duplicate_ids == 2 and plan.id_type == "string"
    dups = plan.duplicates_in(plan.shard("00000001-000000000000"))
    assert set(dups) == {0, 2}
    assert "'y' first seen in input file #0 row 1" in dups[0]


def test_a_different_job_into_the_same_output_is_an_error_and_the_same_job_resumes(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": 1, "text": "t"}])
    store = OutputStore(tmp_path / "out")
    plan, made = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)
    again, made_again = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)
    assert made and not made_again and again == plan
    with pytest.raises(JobConflictError, match=r"already holds job .*: --dim \(none\) -> 64"):
        plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL, dim=64), store)
    write(tmp_path / "a.jsonl", [{"id": 1, "text": "changed"}])
    with pytest.raises(JobConflictError, match=r"input .*a.jsonl changed \(23 -> 29 bytes"):
        plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)


def test_an_input_rewritten_with_the_same_bytes_is_the_same_job(tmp_path):
    rows = [{"id": i, "text": "t"} for i in range(5)]
    write(tmp_path / "a.jsonl", rows)
    store = OutputStore(tmp_path / "out")
    plan, _ = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)
    os.utime(tmp_path / "a.jsonl", (1, 1))  # another mtime, as a demo that rewrites its corpus gives
    write(tmp_path / "a.jsonl", rows)
    again, made = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)
    assert not made and again.job_id == plan.job_id


def test_a_jsonl_file_without_the_text_column_is_refused_before_planning(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": i, "body": "t"} for i in range(2000)])
    with pytest.raises(InputError, match=r"1,000 of the first 1,000 rows have no 'text' field .*\['body', 'id'\].*--text-column"):
        plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), OutputStore(tmp_path / "out"))
    assert not (tmp_path / "out" / "_plan.json").exists()


def test_keep_columns_must_exist_and_have_one_type_across_inputs(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": 1, "text": "t", "title": "x"}])
    with pytest.raises(InputError, match="'url' named in --keep-columns"):
        plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL, keep_columns=("url",)), OutputStore(tmp_path / "o1"))
    pq.write_table(pa.table({"id": [2], "text": ["t"], "title": [7]}), tmp_path / "b.parquet")
    with pytest.raises(ConfigError, match="--keep-columns title: it is string in .* but int64 in"):
        plan_job(str(tmp_path / "*.*"), JobSpec(model=MODEL, keep_columns=("title",)), OutputStore(tmp_path / "o2"))


@pytest.mark.parametrize("name", ["../x", "a/b", "-lead", "x" * 65, "x y"])
def test_job_names_that_could_escape_or_confuse_are_refused_before_any_scan(tmp_path, name):
    with pytest.raises(ConfigError, match="--name"):
        plan_job(str(tmp_path / "missing.jsonl"), JobSpec(model=MODEL), OutputStore(tmp_path / "out"), name=name)
    assert not (tmp_path / "out").exists()


def test_an_output_planned_by_the_earlier_version_is_refused_with_what_to_do(tmp_path):
    # Given an output whose _plan.json holds every shard (the earlier plan format)
    out = tmp_path / "out"
    out.mkdir()
    (out / "_plan.json").write_text(json.dumps({"job_id": "job-1", "shards": [{"shard_id": "00000-000000000000"}]}))
    # Then reading it says what happened and what to do, instead of a validation error
    from common.io.plans import OldPlanError, load_plan

    with pytest.raises(OldPlanError, match="earlier version of qwen3-batch .* submit it again to a new --out"):
        load_plan(OutputStore(out))
