"""Fixtures shared by every test folder (unit, equivalence, integration).

The tiny random-weight Qwen3 checkpoints are built once per machine into a cache folder
($QWEN3_BATCH_CACHE, else <repo>/.cache/models, which git ignores) and reused by every session.
Nothing here reaches the network: the hub is switched off before transformers is imported.
"""

import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub / transformers / tokenizers: they read these at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the project is run from the checkout, not installed
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402


def model_cache_root() -> Path:
    return Path(os.environ.get("QWEN3_BATCH_CACHE") or REPO_ROOT / ".cache" / "models")


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    root = model_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_embed_model(model_cache_dir) -> Path:
    """A folder holding the tiny random-weight Qwen3-Embedding checkpoint (+ sentence-transformers files)."""
    from workers.models.random_init import ensure_random_model

    return ensure_random_model(model_cache_dir, "embed", "tiny")


@pytest.fixture(scope="session")
def tiny_rerank_model(model_cache_dir) -> Path:
    """A folder holding the tiny random-weight Qwen3-Reranker checkpoint."""
    from workers.models.random_init import ensure_random_model

    return ensure_random_model(model_cache_dir, "rerank", "tiny")


@pytest.fixture(scope="session")
def embed_tokenizer(tiny_embed_model):
    """The embedding model's tokenizer as saved in its folder (appends <|endoftext|>)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_embed_model))


@pytest.fixture(scope="session")
def rerank_tokenizer(tiny_rerank_model):
    """The reranker's tokenizer as saved in its folder (no post-processor), left padding like the model card."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_rerank_model), padding_side="left")


# EngineSpec fields that only the shared pre-processing (Engine.batches / tokenize_*) reads.
BATCHING_FIELDS = frozenset({"seqlens", "batch_tokens", "max_batch_rows", "padding_side", "pad_to_bucket",
                             "chars_per_token_cap"})


@pytest.fixture(scope="session")
def tiny_engine(tiny_embed_model, tiny_rerank_model):
    """make(task, **spec_fields) -> a torch engine over the tiny model, cached for the session.

    Loading (mostly the 150k-token tokenizer) costs seconds, so the model is loaded once per
    (task, dtype, other loading fields) with create_engine, and engines that differ only in
    batching fields share it: a shallow copy with its own EngineSpec.
    """
    import copy
    import dataclasses

    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    loaded, derived = {}, {}
    folders = {"embed": tiny_embed_model, "rerank": tiny_rerank_model}

    def make(task: str, **fields):
        key = (task, tuple(sorted(fields.items())))
        if key not in derived:
            load_fields = {k: v for k, v in fields.items() if k not in BATCHING_FIELDS}
            load_key = (task, tuple(sorted(load_fields.items())))
            if load_key not in loaded:
                loaded[load_key] = create_engine(EngineSpec(model=str(folders[task]), task=task, **load_fields))
            engine = copy.copy(loaded[load_key])
            engine.spec = dataclasses.replace(engine.spec, **fields)
            engine.__dict__.pop("_rerank_prompt_ids", None)
            derived[key] = engine
        return derived[key]

    return make


@pytest.fixture
def barrier(tmp_path):
    """Fault points that hold a shard at a step until the test releases it (common/faults.py): the
    tests synchronise on them, never on sleeps."""
    from common.faults import Barrier

    folder = tmp_path / "faults"
    folder.mkdir()
    return Barrier(folder)
