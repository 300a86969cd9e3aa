"""The output store's commit protocol: first committer wins, losers leave nothing behind."""

import os
import threading
import time

import pytest

from common.errors import ConfigError
from common.io.store import OutputStore, create_if_absent
from common.schemas import CommitRecord

SHARD = "00000-000000000000"


def stage_attempt(store: OutputStore, payload: bytes) -> tuple[CommitRecord, object]:
    attempt, attempt_dir = store.new_attempt_dir(SHARD)
    data = store.data_path(SHARD)
    store.staged(SHARD, attempt, data).write_bytes(payload)
    record = CommitRecord(shard_id=SHARD, attempt=attempt, rows_in=1, rows_out=1, rows_rejected=0, tokens=3,
                          data_file=store.relative(data), reject_file=None, data_sha256="x", worker="w",
                          seconds=0.0, committed_at=time.time())
    return record, attempt_dir


def test_only_one_of_two_duplicate_commits_wins_and_the_loser_leaves_nothing(tmp_path):
    # Given two attempts of the same shard with different bytes (accelerators need not be bit-identical)
    store = OutputStore(tmp_path)
    first, first_dir = stage_attempt(store, b"first")
    second, second_dir = stage_attempt(store, b"second")
    # When both commit
    assert store.commit(first, first_dir) is True
    assert store.commit(second, second_dir) is False
    # Then the first one's file is what readers see, and no trace of the second remains
    assert store.data_path(SHARD).read_bytes() == b"first"
    assert store.load_commit(SHARD).attempt == first.attempt
    assert not (tmp_path / "_tmp" / SHARD).exists()


def test_racing_committers_produce_exactly_one_commit(tmp_path):
    store = OutputStore(tmp_path)
    staged = [stage_attempt(store, f"attempt {i}".encode()) for i in range(16)]
    results = []
    barrier = threading.Barrier(len(staged))

    def go(record, attempt_dir):
        barrier.wait()
        results.append(store.commit(record, attempt_dir))

    threads = [threading.Thread(target=go, args=s) for s in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = store.load_commit(SHARD)
    assert store.data_path(SHARD).read_bytes() == f"attempt {[r.attempt for r, _ in staged].index(winner.attempt)}".encode()


def test_a_crash_between_commit_and_publish_is_finished_by_the_next_visitor(tmp_path):
    # Given a commit record whose file was never moved into data/ (the committer died)
    store = OutputStore(tmp_path)
    record, _ = stage_attempt(store, b"payload")
    assert create_if_absent(store.commit_path(SHARD), record.model_dump_json().encode())
    assert not store.data_path(SHARD).exists()
    # When anyone publishes the recorded commit
    store.publish(store.load_commit(SHARD))
    # Then the committed file appears, once
    assert store.data_path(SHARD).read_bytes() == b"payload"
    store.publish(store.load_commit(SHARD))
    assert store.data_path(SHARD).read_bytes() == b"payload"


def test_create_if_absent_never_exposes_a_partial_file(tmp_path):
    target = tmp_path / "record.json"
    assert create_if_absent(target, b"x" * 1_000_000)
    assert not create_if_absent(target, b"y")
    assert target.read_bytes() == b"x" * 1_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.mark.parametrize("bad", ["../escape", "00000-000000000000/../../x", "a" * 18, ""])
def test_shard_ids_that_could_escape_the_output_root_are_refused(tmp_path, bad):
    with pytest.raises(ConfigError):
        OutputStore(tmp_path).commit_path(bad)


def test_object_store_urls_get_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="mount the bucket"):
        OutputStore("s3://bucket/out")


def test_listing_commits_parses_each_record_once(tmp_path, monkeypatch):
    store = OutputStore(tmp_path)
    record, attempt_dir = stage_attempt(store, b"p")
    store.commit(record, attempt_dir)
    assert list(store.list_commits()) == [SHARD]
    os.chmod(store.commit_path(SHARD), 0)  # a second parse would now fail (unless root)
    if os.geteuid() != 0:
        assert list(store.list_commits()) == [SHARD]
