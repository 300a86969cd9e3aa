"""A model that cannot be loaded fails with ModelLoadError and a message that says what to do."""

import json
import os
import re

import pytest

from common.errors import ModelLoadError
from workers.engines.base import EngineSpec
from workers.engines.loading import inspect_model
from workers.engines.registry import create_engine


def load(model, task="embed"):
    return create_engine(EngineSpec(model=str(model), task=task, dtype="fp32"))


def test_the_test_session_is_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "huggingface_hub was imported before conftest switched the hub off"


def test_a_missing_folder_is_reported_as_missing(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError, match=rf"model folder {missing} does not exist"):
        load(missing)


def test_a_folder_without_config_json_is_not_a_checkpoint(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=rf"model folder {tmp_path} has no config.json"):
        load(tmp_path)


def test_a_file_instead_of_a_folder_asks_for_the_folder(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file; pass the checkpoint folder that holds config.json"):
        load(weights)


@pytest.mark.parametrize("task", ["embed", "rerank"])
def test_a_hub_id_while_offline_says_to_download_it_and_pass_model_dir(task):
    hub_id = "Qwen/Qwen3-Embedding-0.6B" if task == "embed" else "Qwen/Qwen3-Reranker-0.6B"
    with pytest.raises(ModelLoadError) as info:
        load(hub_id, task)
    message = str(info.value)
    assert hub_id in message
    assert "download" in message.lower()
    assert "--model DIR" in message


def test_a_folder_of_another_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="is a 'bert' model; this tool runs Qwen3"):
        load(tmp_path)


def test_the_tiny_model_loads_and_says_its_weights_are_random(tiny_engine, tiny_embed_model):
    engine = tiny_engine("embed", dtype="fp32")
    assert engine.info.random_weights is True
    assert engine.info.hidden_size == 64
    assert engine.info.source == str(tiny_embed_model)


def copy_without_tokenizer(model, folder):
    """The checkpoint's files (its weights linked, not copied) but its tokenizer.json."""
    folder.mkdir()
    for f in model.iterdir():
        if f.is_file() and f.name != "tokenizer.json":
            (folder / f.name).symlink_to(f)
    return folder


def test_the_submit_time_check_reads_a_folders_tokenizer(tiny_embed_model):
    assert inspect_model(str(tiny_embed_model), "embed").hidden_size == 64


def test_a_broken_tokenizer_json_is_refused_before_anything_is_enqueued(tmp_path, tiny_embed_model):
    folder = copy_without_tokenizer(tiny_embed_model, tmp_path / "model")
    (folder / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(ModelLoadError, match=re.escape(f"could not read {folder / 'tokenizer.json'}")):
        inspect_model(str(folder), "embed")


def test_a_tokenizer_without_qwen3s_end_of_text_token_is_refused(tmp_path, tiny_embed_model):
    folder = copy_without_tokenizer(tiny_embed_model, tmp_path / "model")
    tokenizer = json.loads((tiny_embed_model / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "<|endoftext|>"]
    tokenizer["model"]["vocab"].pop("<|endoftext|>", None)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelLoadError, match=re.escape("has no '<|endoftext|>' token")):
        inspect_model(str(folder), "embed")
