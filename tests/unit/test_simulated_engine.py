"""The simulated backend: real tokenisation, fake device time, outputs that encode each row."""

import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, ModelLoadError
from common.templates import RERANK_PREFIX
from workers import batching
from workers.engines.base import EngineSpec, normalize_mrl
from workers.engines.registry import create_engine
from workers.engines.simulated import BATCH_SECONDS_ENV, SimulatedEngine, simulated_pooled

TEXTS = ["The cat sat on the mat.", "A dog barked at 3 o'clock!", "naïve café — ünïcödé", "1234567890",
         "<|endoftext|> inside a text", "short", "a somewhat longer sentence that needs more tokens " * 3,
         "<|im_start|>user\nhello<|im_end|>"]


@pytest.fixture
def sim(tiny_embed_model, tiny_rerank_model, monkeypatch):
    monkeypatch.setenv(BATCH_SECONDS_ENV, "0")
    folders = {"embed": tiny_embed_model, "rerank": tiny_rerank_model}

    def make(task="embed", **fields):
        return create_engine(EngineSpec(model=str(folders[task]), task=task, backend="simulated", **fields))

    return make


def expected_vector(engine, ids, dim=None):
    """What a row with these real ids must come out as, computed alone in a batch of one."""
    batch = batching.pad_rows([ids], np.array([0]), len(ids), engine.pad_id, "right")
    vectors, bad = normalize_mrl(simulated_pooled(batch, engine.info.hidden_size), dim or engine.info.hidden_size)
    assert not bad.any()
    return vectors[0]


def test_the_registry_serves_it_and_it_reads_the_real_tokenizer(sim, embed_tokenizer, rerank_tokenizer):
    """Given a model folder, when the simulated backend loads it, then it tokenises exactly like the
    transformers tokenizer of that folder and finds the real special-token ids."""
    engine = sim("embed")
    assert isinstance(engine, SimulatedEngine) and engine.simulated and engine.info.random_weights
    assert engine.info.hidden_size == 64
    ours = engine.tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    theirs = embed_tokenizer(TEXTS, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    assert ours == theirs
    assert engine.endoftext_id == engine.pad_id == 151643
    reranker = sim("rerank")
    assert (reranker.yes_id, reranker.no_id) == (9693, 2152)
    assert reranker.rerank_prompt_ids().prefix == rerank_tokenizer(
        [RERANK_PREFIX], add_special_tokens=False)["input_ids"][0]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_each_row_gets_its_own_vector_whatever_the_order_batching_or_padding(sim, padding_side):
    """Given texts of several lengths in small batches, when embedded in two different orders,
    then every row's vector is the one its own token ids give alone, and different texts differ."""
    engine = sim("embed", seqlens=(16, 32, 64), batch_tokens=64, padding_side=padding_side)
    texts = TEXTS * 2 + [f"row number {i}" for i in range(20)]
    out = engine.embed(texts)
    assert not any(out.errors)
    ids = batching.tokenize_for_embedding(engine.tokenizer, texts, 64, engine.endoftext_id, 10_000)
    for i, row in enumerate(ids):
        np.testing.assert_allclose(out.vectors[i], expected_vector(engine, row.ids), rtol=0, atol=1e-6)
        assert out.n_tokens[i] == len(row.ids)
    order = list(range(len(texts)))
    random.Random(7).shuffle(order)
    shuffled = engine.embed([texts[i] for i in order])
    np.testing.assert_array_equal(shuffled.vectors, out.vectors[order])
    distinct = {tuple(np.round(v, 6)) for v in out.vectors}
    assert len(distinct) == len(set(texts))


def test_mrl_dims_and_rerank_scores_are_deterministic(sim):
    engine = sim("embed")
    full, cut = engine.embed(TEXTS), engine.embed(TEXTS, dim=32)
    for i in range(len(TEXTS)):
        prefix = full.vectors[i][:32] / np.linalg.norm(full.vectors[i][:32])
        np.testing.assert_allclose(cut.vectors[i], prefix, atol=1e-6)
    reranker = sim("rerank")
    queries, documents = ["what is a cat"] * 3 + ["dogs"], ["a cat is an animal", "no", "maybe", "dogs bark"]
    first = reranker.rerank(queries, documents)
    again = reranker.rerank(queries[::-1], documents[::-1])
    np.testing.assert_array_equal(first.scores, again.scores[::-1])
    assert ((first.scores > 0) & (first.scores < 1)).all() and len(set(first.scores.tolist())) == 4


def test_each_batch_costs_the_configured_device_time(tiny_embed_model, monkeypatch):
    """Given QWEN3B_SIM_BATCH_S, when embedding, then every forward batch sleeps that long."""
    monkeypatch.setenv(BATCH_SECONDS_ENV, "0.05")
    engine = create_engine(EngineSpec(model=str(tiny_embed_model), backend="simulated", seqlens=(16, 32),
                                      batch_tokens=32))
    engine.embed(["warm up"])
    before, started = engine.batches_run, time.perf_counter()
    engine.embed([f"text {i}" for i in range(8)])  # 2 rows of 16 tokens per batch: 4 batches
    elapsed = time.perf_counter() - started
    assert engine.batches_run - before == 4
    assert elapsed >= 4 * 0.05


@pytest.mark.parametrize("raw", ["fast", "-1", "nan", "inf"])
def test_a_bad_device_time_is_refused(tiny_embed_model, monkeypatch, raw):
    monkeypatch.setenv(BATCH_SECONDS_ENV, raw)
    with pytest.raises(ConfigError, match=BATCH_SECONDS_ENV):
        create_engine(EngineSpec(model=str(tiny_embed_model), backend="simulated"))


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="local model folder"):
        create_engine(EngineSpec(model=str(tmp_path / "nope"), backend="simulated"))
    tmp_path.joinpath("config.json").write_text('{"model_type": "qwen3", "hidden_size": 8}')
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        create_engine(EngineSpec(model=str(tmp_path), backend="simulated"))


def test_it_never_imports_torch_or_transformers(tiny_embed_model):
    """A simulated worker starts fast and small: creating and running the engine loads neither."""
    code = (
        "import sys\n"
        "from workers.engines.base import EngineSpec\n"
        "from workers.engines.registry import create_engine\n"
        f"e = create_engine(EngineSpec(model={str(tiny_embed_model)!r}, backend='simulated'))\n"
        "e.embed(['hello world'])\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"QWEN3B_SIM_BATCH_S": "0", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_configured_keeps_the_engine_simulated(sim):
    engine = sim("embed")
    other = engine.configured((32, 64))
    assert isinstance(other, SimulatedEngine) and other.spec == replace(engine.spec, seqlens=(32, 64))
