"""The commit protocol, the same on a folder and in a bucket: the first committer wins, losers
leave nothing behind, readers never see a loser's or a half-written attempt's rows."""

import threading
import time

import pytest

from common.errors import ConfigError
from common.io.manifest import load_manifest, save_manifest, stored_versions
from common.io.store import OutputStore
from common.schemas import CommitRecord

SHARD = "00000000-000000000000"


def stage_attempt(store: OutputStore, payload: bytes):
    """An attempt whose data file holds `payload`, and the record that would commit it."""
    attempt = store.new_attempt(SHARD)
    attempt.path(store.data_key(SHARD)).write_bytes(payload)
    record = CommitRecord(shard_id=SHARD, attempt=attempt.id, rows_in=1, rows_out=1, rows_rejected=0, tokens=3,
                          data_file=store.data_key(SHARD), reject_file=None, data_sha256="x",
                          data_bytes=len(payload), worker="w", seconds=0.0, committed_at=time.time())
    return record, attempt


def read_data(store: OutputStore) -> bytes:
    with store.open_read(store.data_key(SHARD)) as f:
        return f.read()


def test_only_one_of_two_duplicate_commits_wins_and_the_loser_leaves_nothing(store_url):
    # Given two attempts of the same shard with different bytes (accelerators need not be bit-identical)
    store = OutputStore(store_url)
    first, first_attempt = stage_attempt(store, b"first")
    second, second_attempt = stage_attempt(store, b"second")
    # When both commit
    assert store.commit(first, first_attempt) is True
    assert store.commit(second, second_attempt) is False
    # Then the first one's file is what readers see, and no trace of either attempt remains
    assert read_data(store) == b"first"
    assert store.load_commit(SHARD).attempt == first.attempt
    assert store.names("_tmp") == [] or store.names(f"_tmp/{SHARD}") == []
    assert store.names("data") == [f"part-{SHARD}.parquet"]


def test_racing_committers_produce_exactly_one_commit(store_url):
    store = OutputStore(store_url)
    staged = [stage_attempt(store, f"attempt {i}".encode()) for i in range(8)]
    results = []
    barrier = threading.Barrier(len(staged))

    def go(record, attempt):
        barrier.wait()
        results.append(store.commit(record, attempt))

    threads = [threading.Thread(target=go, args=s) for s in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = store.load_commit(SHARD)
    assert read_data(store) == f"attempt {[r.attempt for r, _ in staged].index(winner.attempt)}".encode()


def test_a_crash_between_commit_and_publish_is_finished_by_the_next_visitor(store_url):
    # Given a commit record whose files were uploaded but never published (the committer died)
    store = OutputStore(store_url)
    record, attempt = stage_attempt(store, b"payload")
    store.upload_attempt(attempt, [record.data_file])
    assert store.create_if_absent(store.commit_key(SHARD), record.model_dump_json().encode())
    assert not store.exists(store.data_key(SHARD))
    # When anyone publishes the recorded commit
    store.publish(store.load_commit(SHARD))
    # Then the committed file appears, once, and publishing again changes nothing
    assert read_data(store) == b"payload"
    store.publish(store.load_commit(SHARD))
    assert read_data(store) == b"payload" and store.names("data") == [f"part-{SHARD}.parquet"]


def test_create_if_absent_keeps_the_first_body_and_leaves_nothing_else(store_url):
    store = OutputStore(store_url)
    assert store.create_if_absent("_commits/record.json", b"x" * 1_000_000)
    assert not store.create_if_absent("_commits/record.json", b"y")
    assert store.read_bytes("_commits/record.json") == b"x" * 1_000_000
    assert [n for n in store.names("_commits")] == ["record.json"]


def test_the_store_supports_what_commits_need(store_url):
    OutputStore(store_url).check_commits_supported()  # hard links, or conditional creates: no error


@pytest.mark.parametrize("bad", ["../escape", "00000000-000000000000/../../x", "a" * 18, ""])
def test_shard_ids_that_could_escape_the_output_are_refused(store_url, bad):
    with pytest.raises(ConfigError):
        OutputStore(store_url).commit_key(bad)


def test_publishing_a_committed_shard_again_leaves_its_bytes_as_they_were(store_url):
    # Given a committed shard whose files were published
    store = OutputStore(store_url)
    record, attempt = stage_attempt(store, b"payload")
    assert store.commit(record, attempt)
    # When another visitor publishes it again (it found the commit, not knowing it was published)
    store.publish(record)
    # Then readers see the same bytes, and no attempt file is left
    assert read_data(store) == b"payload"
    assert not store.names(f"_tmp/{SHARD}/{record.attempt}/data")


def test_ranges_and_tails_read_the_bytes_asked_for(store_url):
    store = OutputStore(store_url)
    store.put("blob", bytes(range(200)))
    assert store.read_range("blob", 10, 20) == bytes(range(10, 20))
    assert store.read_range("blob", -5, 0) == bytes(range(195, 200))
    assert store.read_range("blob", -500, 0) == bytes(range(200))  # a tail longer than the object: all of it


def test_two_folders_storing_the_same_manifest_version_leave_the_first_and_the_second_folds_again(store_url):
    # Given two processes that read the same manifest (its lock was lost with Redis)
    store = OutputStore(store_url)
    first, second = load_manifest(store, 4), load_manifest(store, 4)
    first.committed[0] = second.committed[1] = True
    # When both store the next version
    assert save_manifest(store, first) is True
    assert save_manifest(store, second) is False
    # Then the newest version is the first's, and the second folds onto it
    newest = load_manifest(store, 4)
    assert newest.version == 1 and newest.committed.tolist() == [True, False, False, False]
    newest.committed[1] = True
    assert save_manifest(store, newest) and load_manifest(store, 4).shards_committed == 2


def test_old_manifest_versions_are_pruned_and_the_newest_is_read(store_url):
    store = OutputStore(store_url)
    manifest = load_manifest(store, 10)
    for ordinal in range(6):
        manifest.committed[ordinal] = True
        assert save_manifest(store, manifest)
    assert stored_versions(store) == [4, 5, 6]
    assert load_manifest(store, 10).shards_committed == 6
