"""Planning: deterministic shards, duplicate ids, fingerprints, one job per output."""

import json

import pytest

from common.errors import ConfigError
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
    assert first.job_id == second.job_id and first.fingerprint == second.fingerprint
    assert [s.shard_id for s in first.shards] == [s.shard_id for s in second.shards] == [
        "00000-000000000000", "00000-000000000010", "00000-000000000020"]
    assert first.rows_total == 25 and first.id_type == "int64"


def test_ids_seen_earlier_in_the_corpus_are_listed_with_their_first_occurrence(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": "x", "text": "t"}, {"id": "y", "text": "t"}])
    write(tmp_path / "b.jsonl", [{"id": "y", "text": "t"}, {"id": 7, "text": "t"}, {"id": "x", "text": "t"}])
    store = OutputStore(tmp_path / "out")
    plan, _ = plan_job(str(tmp_path / "*.jsonl"), JobSpec(model=MODEL), store)
    assert plan.duplicate_ids == 2 and plan.id_type == "string"
    from common.io.duplicates import load_duplicates

    dups = load_duplicates(store.duplicates_path, 1, 0, 3)
    assert set(dups) == {0, 2}
    assert "'y' first seen in input file #0 row 1" in dups[0]


def test_a_different_job_into_the_same_output_is_an_error_and_the_same_job_resumes(tmp_path):
    write(tmp_path / "a.jsonl", [{"id": 1, "text": "t"}])
    store = OutputStore(tmp_path / "out")
    plan, made = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)
    again, made_again = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)
    assert made and not made_again and again == plan
    with pytest.raises(JobConflictError, match="already holds job"):
        plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL, dim=64), store)
    write(tmp_path / "a.jsonl", [{"id": 1, "text": "changed"}])
    with pytest.raises(JobConflictError):
        plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL), store)


@pytest.mark.parametrize("name", ["../x", "a/b", "-lead", "x" * 65, "x y"])
def test_job_names_that_could_escape_or_confuse_are_refused_before_any_scan(tmp_path, name):
    with pytest.raises(ConfigError, match="job name"):
        plan_job(str(tmp_path / "missing.jsonl"), JobSpec(model=MODEL), OutputStore(tmp_path / "out"), name=name)
    assert not (tmp_path / "out").exists()
