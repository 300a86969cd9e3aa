"""The artifact store's publish protocol, without compiling anything."""

import os
import time

from common.artifacts import ArtifactStore
from common.schemas import ArtifactKey, ArtifactManifest, ModelRef

KEY = ArtifactKey(model_identity="ab" * 32, model_tag="m-abababab", backend="onnx", task="embed", dtype="int8",
                  batch=8, seqlen=128)


def manifest(job: str) -> ArtifactManifest:
    return ArtifactManifest(key=KEY, model_source="/models/m", files=("model.onnx",), inputs=("input_ids",),
                            outputs=("vector",), validation=None, tool_versions={}, compile_seconds=1.0,
                            created_at="2026-11-29T00:00:00+00:00", job=job, host="h")


def stage(store: ArtifactStore, staged, text: str) -> None:
    (staged / "model.onnx").write_text(text)


def test_the_first_of_two_publishes_of_one_key_wins_and_the_second_changes_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.staging() as first, store.staging() as second:
        stage(store, first, "first")
        stage(store, second, "second")
        assert store.publish(first, manifest("job-1")) is True
        assert store.publish(second, manifest("job-2")) is False
    assert (store.folder(KEY) / "model.onnx").read_text() == "first"
    assert store.manifest(KEY).job == "job-1"
    assert list((tmp_path / ".staging").iterdir()) == []


def test_an_artifact_of_another_model_under_the_same_tag_is_not_found(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.staging() as staged:
        stage(store, staged, "x")
        store.publish(staged, manifest("job-1"))
    other = ModelRef(source="/models/m", identity="ab" * 4 + "cd" * 28, tag="m-abababab")
    assert store.find(other, "onnx", "embed", "int8") == []
    mine = ModelRef(source="/models/m", identity="ab" * 32, tag="m-abababab")
    assert [m.key for m in store.find(mine, "onnx", "embed", "int8")] == [KEY]


def test_staging_left_by_a_killed_compile_is_swept_once_it_is_old(tmp_path):
    store = ArtifactStore(tmp_path)
    old, fresh = tmp_path / ".staging" / "old", tmp_path / ".staging" / "fresh"
    old.mkdir(parents=True)
    fresh.mkdir()
    a_day_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (a_day_ago, a_day_ago))
    with store.staging():
        pass
    assert not old.exists() and fresh.exists()
