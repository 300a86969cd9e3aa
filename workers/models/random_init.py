"""Deterministic random-weight Qwen3 checkpoints, saved as ordinary transformers folders.

`tiny`  : a few layers and a small hidden size, for tests and the demo (seconds on a CPU).
`0.6b`  : the exact shape of Qwen3-Embedding-0.6B / Qwen3-Reranker-0.6B. Its compute cost is
          identical to the real model's, so it stands in for it in performance work.

Every folder carries RANDOM_WEIGHTS.json, and engines report `random_weights=True` when they load
one, so no figure made with these weights can be mistaken for a real model's accuracy.
"""

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from common.defaults import DEFAULT_RETRIEVAL_INSTRUCTION, TINY_MODEL_SEED
from common.errors import ConfigError
from common.templates import query_prompt
from workers.models.vocab import QWEN3_VOCAB_SIZE, build_qwen3_tokenizer

RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.json"
TASKS = ("embed", "rerank")


@dataclass(frozen=True)
class Shape:
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    # Tiny models use a larger init than the real 0.02 so that their outputs depend strongly
    # on the whole input: with 0.02 every embedding is dominated by the final <|endoftext|> and
    # all vectors point the same way, which would let an equivalence test pass on broken code.
    initializer_range: float


SHAPES = {
    "tiny": Shape(2, 64, 4, 2, 16, 128, initializer_range=0.25),
    "0.6b": Shape(28, 1024, 16, 8, 128, 3072, initializer_range=0.02),
}


def qwen3_config(shape_name: str, task: str):
    from transformers import Qwen3Config

    shape = _shape(shape_name)
    return Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        bos_token_id=151643,
        eos_token_id=151643 if task == "embed" else 151645,
        architectures=["Qwen3Model" if task == "embed" else "Qwen3ForCausalLM"],
        **{k: v for k, v in asdict(shape).items()},
    )


def build_random_model(out_dir: str | Path, task: str, shape_name: str = "tiny", seed: int = TINY_MODEL_SEED,
                       dtype: str = "fp32") -> Path:
    """Write a random-weight Qwen3 embedding or reranker checkpoint to out_dir and return it.

    Deterministic: the same (task, shape, seed) gives the same weights.
    """
    import torch
    from transformers import Qwen3ForCausalLM, Qwen3Model

    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = qwen3_config(shape_name, task)
    torch.manual_seed(seed)
    model = Qwen3Model(config) if task == "embed" else Qwen3ForCausalLM(config)
    if task == "rerank":
        model.tie_weights()
    model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    model.save_pretrained(out)
    build_qwen3_tokenizer(append_endoftext=task == "embed").save_pretrained(out)
    if task == "embed":
        _write_sentence_transformers_files(out, config.hidden_size)
    (out / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(
        {"random_weights": True, "task": task, "shape": shape_name, "seed": seed,
         "note": "random weights: outputs are meaningless, only their agreement and cost are"},
        indent=2))
    return out


def is_random_weights(model_dir: str | Path) -> bool:
    return (Path(model_dir) / RANDOM_WEIGHTS_MARKER).is_file()


def ensure_random_model(cache_root: str | Path, task: str, shape_name: str = "tiny",
                        seed: int = TINY_MODEL_SEED) -> Path:
    """Build the model once under cache_root and reuse it afterwards. Processes building it at once
    (parallel test runs) each build their own copy, and the first to rename it into place wins."""
    out = Path(cache_root) / f"qwen3-{task}-{shape_name}-random-s{seed}"
    if not (out / RANDOM_WEIGHTS_MARKER).is_file():
        tmp = out.with_name(f"{out.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        build_random_model(tmp, task, shape_name, seed)
        try:
            tmp.rename(out)
        except OSError:  # another process put its copy there first: the same seed, the same weights
            if not (out / RANDOM_WEIGHTS_MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _shape(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ConfigError(f"unknown model shape {name!r}; choose one of {sorted(SHAPES)}") from None


def _write_sentence_transformers_files(out: Path, hidden: int) -> None:
    """The module files the published Qwen3-Embedding folders carry: last-token pooling, L2."""
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_lasttoken": True, "include_prompt": True}, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192, "do_lower_case": False}))
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": query_prompt(DEFAULT_RETRIEVAL_INSTRUCTION), "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }, indent=2))
