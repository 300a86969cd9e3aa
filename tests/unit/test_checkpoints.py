"""Telling an embedding checkpoint from a reranker without loading it (common/checkpoints.py), on
folders laid out like the published Qwen3-Embedding and Qwen3-Reranker repos."""

import json
import struct

import pytest

from common.checkpoints import EMBED, RERANK, UNKNOWN, check_task, inspect_folder
from common.errors import ModelLoadError

CONFIG = {"model_type": "qwen3", "hidden_size": 1024, "architectures": ["Qwen3ForCausalLM"]}
LAYER_NAMES = ["embed_tokens.weight", "layers.0.mlp.up_proj.weight", "norm.weight"]


def write_safetensors_header(path, names):
    header = json.dumps({n: {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]} for n in names}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")


def checkpoint(folder, prefixed: bool, st_files: bool, sharded: bool = False):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))  # both say Qwen3ForCausalLM, as published ones may
    names = [("model." + n if prefixed else n) for n in LAYER_NAMES]
    if sharded:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: "a" for n in names}}))
        (folder / "a.safetensors").write_bytes(b"")
    else:
        write_safetensors_header(folder / "model.safetensors", names)
    if st_files:
        (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Transformer"},
                                                         {"type": "sentence_transformers.models.Pooling"}]))
        (folder / "config_sentence_transformers.json").write_text("{}")
    return folder


@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "sharded"])
def test_the_published_layouts_are_told_apart_although_their_configs_name_the_same_architecture(tmp_path, sharded):
    embed = inspect_folder(checkpoint(tmp_path / "Qwen3-Embedding-0.6B", prefixed=False, st_files=True, sharded=sharded))
    rerank = inspect_folder(checkpoint(tmp_path / "Qwen3-Reranker-0.6B", prefixed=True, st_files=False, sharded=sharded))
    assert (embed.kind, rerank.kind) == (EMBED, RERANK)
    assert check_task(embed, "embed") is None and check_task(rerank, "rerank") is None


def test_a_clear_contradiction_with_the_task_is_refused_with_what_to_do(tmp_path):
    rerank = inspect_folder(checkpoint(tmp_path / "r", prefixed=True, st_files=False))
    with pytest.raises(ModelLoadError, match="is a Qwen3-Reranker checkpoint .* use --task rerank"):
        check_task(rerank, "embed")
    embed = inspect_folder(checkpoint(tmp_path / "e", prefixed=False, st_files=True))
    with pytest.raises(ModelLoadError, match="is a Qwen3-Embedding checkpoint .* use --task embed"):
        check_task(embed, "rerank")


def test_signals_that_disagree_leave_the_task_to_decide_with_a_warning(tmp_path):
    # an embedding model saved without its sentence-transformers files
    bare = inspect_folder(checkpoint(tmp_path / "bare", prefixed=False, st_files=False))
    assert bare.kind == UNKNOWN
    assert "could not tell" in check_task(bare, "embed") and "could not tell" in check_task(bare, "rerank")


def test_the_random_weight_models_this_project_builds_are_recognised(tiny_embed_model, tiny_rerank_model):
    assert inspect_folder(tiny_embed_model).kind == EMBED and inspect_folder(tiny_rerank_model).kind == RERANK


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "has no config.json"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')), "'llama'"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "qwen3", "hidden_size": 8}')), "no weights"),
])
def test_a_folder_that_is_not_a_qwen3_checkpoint_is_a_clear_error(tmp_path, setup, message):
    setup(tmp_path / "m")
    with pytest.raises(ModelLoadError, match=message):
        inspect_folder(tmp_path / "m")
