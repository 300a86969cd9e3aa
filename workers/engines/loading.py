"""Loading real Qwen3 checkpoints from a local folder or a Hugging Face hub id."""

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from common import checkpoints, defaults
from common.errors import ModelLoadError
from workers.models.random_init import is_random_weights

# int8 loads in fp32: the torch engine quantises its linear layers after loading (torch_engine.py).
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "float32"}


@contextlib.contextmanager
def quiet_torchao_import():
    """Only errors while torchao may be imported. When it is installed (the int8 extra), transformers'
    model classes import it, whatever the dtype, and the import warns about the CUDA kernels
    (.so files, Triton) a CPU build cannot load and about torch deprecations it triggers: noise in
    every worker's log, not something a user can act on."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def resolve_source(model: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json: is it a transformers checkpoint folder?")
        return str(path), True
    if path.exists():
        raise ModelLoadError(f"--model {model} is a file; pass the checkpoint folder that holds config.json")
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {model} does not exist (and it is not a hub id like Qwen/Qwen3-Embedding-0.6B)")
    return model, False


@dataclass(frozen=True)
class ModelCheck:
    """What can be known of a checkpoint without its weights, for failing fast (producer, worker start)."""

    source: str
    hidden_size: int
    local: bool
    warning: str | None  # the embedding/reranker kind could not be told: --task decides


def inspect_model(model: str, task: str, revision: str | None = None, tokenizer: bool = True) -> ModelCheck:
    """Read the config (and load the tokenizer) of a folder or hub id, and check it can serve `task`;
    ModelLoadError saying what is wrong otherwise: a missing folder, an offline hub id, a
    non-Qwen3 model, a reranker given as an embedding model or the reverse, a broken tokenizer."""
    source, local = resolve_source(model)
    if local:
        found = checkpoints.inspect_folder(source)
        warning, hidden = checkpoints.check_task(found, task), found.hidden_size
    else:
        config = _hub_config(source, revision)
        warning, hidden = f"{source} is a hub id: whether it is an embedding or a reranker checkpoint was not checked", \
            config.hidden_size
    if tokenizer:
        check_tokenizer(source, revision, local, task)
    return ModelCheck(source, hidden, local, warning)


def check_tokenizer(source: str, revision: str | None, local: bool, task: str) -> None:
    """ModelLoadError unless the tokenizer loads and knows the tokens the task needs. A folder's
    tokenizer.json is read by the `tokenizers` library alone (0.5 s for Qwen's 151k-token vocabulary):
    through transformers, and the torch it imports, the check cost `producer submit` 3 s and 500 MB
    before its first message went out."""
    file = Path(source) / "tokenizer.json"
    if local and file.is_file():
        from workers.engines.simulated import JsonTokenizer

        found = JsonTokenizer(file)
        needed = (defaults.ENDOFTEXT_TOKEN,) + ((defaults.RERANK_YES_TOKEN, defaults.RERANK_NO_TOKEN) if task == "rerank" else ())
        for token in needed:
            found.token_id(token)
        return
    try:
        load_tokenizer(source, revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the tokenizer of {source}: {exc}") from exc


def _hub_config(source: str, revision: str | None):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except OSError as exc:
        raise ModelLoadError(
            f"{source!r} is not a folder here, and fetching it as a Hugging Face hub id failed "
            f"({type(exc).__name__}). Offline? Download it on a machine with network "
            f"(huggingface-cli download {source} --local-dir DIR) and pass --model DIR") from exc
    if config.model_type != "qwen3":
        raise ModelLoadError(f"{source} is a {config.model_type!r} model; this tool runs Qwen3-Embedding and Qwen3-Reranker")
    return config


def load_pretrained(model: str, task: str, dtype: str, revision: str | None = None, attention: str = "sdpa"):
    """(tokenizer, model) for Qwen3-Embedding (Qwen3Model) or Qwen3-Reranker (Qwen3ForCausalLM).
    attention: the transformers attention implementation (sdpa for the engines; eager for ONNX export)."""
    import torch

    with quiet_torchao_import():  # the model classes import transformers' quantizers
        from transformers import AutoConfig, Qwen3ForCausalLM, Qwen3Model

    source, local = resolve_source(model)
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except OSError as exc:
        if local:
            raise ModelLoadError(f"could not read the config of {source}: {exc}") from exc
        raise ModelLoadError(
            f"{source!r} is not a folder here, and fetching it as a Hugging Face hub id failed "
            f"({type(exc).__name__}). Offline? Download it on a machine with network "
            f"(huggingface-cli download {source} --local-dir DIR) and pass --model DIR"
        ) from exc
    if config.model_type != "qwen3":
        raise ModelLoadError(f"{source} is a {config.model_type!r} model; this tool runs Qwen3-Embedding and Qwen3-Reranker")
    cls = Qwen3Model if task == "embed" else Qwen3ForCausalLM
    try:
        tokenizer = load_tokenizer(source, revision)
        net = cls.from_pretrained(source, revision=revision, dtype=getattr(torch, TORCH_DTYPES[dtype]),
                                  attn_implementation=attention)
    except OSError as exc:
        raise ModelLoadError(f"could not load the {task} model from {source}: {exc}") from exc
    return tokenizer, net.eval(), (local and is_random_weights(source))


def load_tokenizer_and_config(model: str, revision: str | None = None):
    """(tokenizer, config, random_weights) without the weights: what a compiled backend needs
    beside its artifact (the artifact holds the network, the checkpoint folder the tokenizer)."""
    from transformers import AutoConfig

    source, local = resolve_source(model)
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
        tokenizer = load_tokenizer(source, revision)
    except OSError as exc:
        raise ModelLoadError(f"could not read the tokenizer and config of {source}: {exc}") from exc
    if config.model_type != "qwen3":
        raise ModelLoadError(f"{source} is a {config.model_type!r} model; this tool runs Qwen3-Embedding and Qwen3-Reranker")
    return tokenizer, config, (local and is_random_weights(source))


def load_tokenizer(source: str, revision: str | None = None):
    """The checkpoint's tokenizer, loaded once per process: building the 151k-token BPE costs
    seconds, and a compile job or a benchmark builds several engines on one checkpoint. The
    engines only call it; none changes its settings. Keyed by the files' mtimes, so a folder
    rewritten in place is read again."""
    return _cached_tokenizer(source, revision, _tokenizer_stamp(source))


def _tokenizer_stamp(source: str) -> tuple:
    folder = Path(source)
    if not folder.is_dir():
        return ()
    return tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("tokenizer*")))


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(source: str, revision: str | None, stamp: tuple):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, revision=revision)
