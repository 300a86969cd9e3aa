"""The SIMULATED backend ("simulated"): real tokenisation and batching, a fake device.

What it is for: measuring the pipeline (planning, queueing, shard reads, commits, worker
scaling) without a model's compute competing for the CPU. It loads only `config.json` and
`tokenizer.json` from a model folder, through the `tokenizers` library (no transformers, no
torch: a worker starts in about a second and needs little memory), so token counts, truncation,
bucketing and padding are exactly the real ones. Its "forward pass" sleeps a fixed time per
batch, like an accelerator the host waits on, and returns outputs that encode the input:

    QWEN3B_SIM_BATCH_S   seconds of simulated device time per forward batch (default 0.05,
                         any float >= 0). Read when the engine is created, so a worker's
                         environment sets it for that worker.

Outputs are NOT embeddings or relevance scores. Like infinity's debug engine, a row's pooled
vector is a deterministic hash of its real token ids (splitmix64 of id and position, expanded
over the hidden size), so two different rows get unrelated vectors, the same row always gets the
same one whatever batch, padding side or padded length it ran in, and any mix-up of rows
(ordering, bucketing, padding) shows in the output. The rerank "logit gap" is the same hash
mapped into [-5, 5). A job run with it says so: its plan's backend and queue name are
"simulated", its ModelInfo has `random_weights=True` (outputs meaningless) and the engine logs a
warning when it is created. See `simulated_pooled` / `simulated_gap` for the exact functions.
"""

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from common.defaults import ENDOFTEXT_TOKEN, RERANK_NO_TOKEN, RERANK_YES_TOKEN
from common.errors import ConfigError, ModelLoadError
from workers.batching import Batch
from workers.engines.base import Engine, EngineSpec, ModelInfo

log = logging.getLogger(__name__)

BATCH_SECONDS_ENV = "QWEN3B_SIM_BATCH_S"
DEFAULT_BATCH_SECONDS = 0.05

_ID_MULT = np.uint64(0x9E3779B97F4A7C15)
_POS_MULT = np.uint64(0xC2B2AE3D27D4EB4F)
_COL_MULT = np.uint64(0x165667B19E3779F9)


class SimulatedEngine(Engine):
    """Tokeniser and config of a real model folder; a sleeping, hashing fake of the model itself."""

    simulated = True  # callers (benchmarks, reports) can tell these outputs apart

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.batch_seconds = batch_seconds_from_env()
        folder = model_folder(spec.model)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "qwen3":
            raise ModelLoadError(f"{folder} is a {config.get('model_type')!r} model; the simulated backend reads "
                                 "Qwen3-Embedding / Qwen3-Reranker folders")
        self.tokenizer = JsonTokenizer(folder / "tokenizer.json")
        self.endoftext_id = self.tokenizer.token_id(ENDOFTEXT_TOKEN)
        self.pad_id = self.endoftext_id
        if spec.task == "rerank":
            self.yes_id = self.tokenizer.token_id(RERANK_YES_TOKEN)
            self.no_id = self.tokenizer.token_id(RERANK_NO_TOKEN)
        self.info = ModelInfo(int(config["hidden_size"]), random_weights=True, source=spec.model)
        self.batches_run = 0
        log.warning("SIMULATED engine for %s: outputs are hashes of the token ids, not embeddings or scores; "
                    "%.3fs of simulated device time per batch (%s)", spec.model, self.batch_seconds,
                    BATCH_SECONDS_ENV)

    def forward_embed(self, batch: Batch) -> np.ndarray:
        self._device_time()
        return simulated_pooled(batch, self.info.hidden_size)

    def forward_rerank(self, batch: Batch) -> np.ndarray:
        self._device_time()
        return simulated_gap(batch)

    def _device_time(self) -> None:
        self.batches_run += 1
        if self.batch_seconds > 0:
            time.sleep(self.batch_seconds)


def batch_seconds_from_env(environ=None) -> float:
    raw = (os.environ if environ is None else environ).get(BATCH_SECONDS_ENV)
    if raw is None or raw == "":
        return DEFAULT_BATCH_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{BATCH_SECONDS_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{BATCH_SECONDS_ENV}={raw!r}: expected a finite number of seconds >= 0")
    return value


def model_folder(model: str) -> Path:
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"the simulated backend needs a local model folder (config.json + tokenizer.json); "
                             f"{model} is not a folder")
    for name in ("config.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise ModelLoadError(f"model folder {path} has no {name}; the simulated backend reads only "
                                 "config.json and tokenizer.json")
    return path


class JsonTokenizer:
    """A folder's tokenizer.json through the `tokenizers` library alone: the same ids as the
    transformers fast tokenizer built from that file, for the calls batching.py makes."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception
            raise ModelLoadError(f"could not read {path}: {exc}") from exc
        self.unk_token_id = None

    def __call__(self, texts, add_special_tokens: bool = True, return_attention_mask: bool = False, **_):
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings]}

    def convert_tokens_to_ids(self, tokens):
        return [self._tokenizer.token_to_id(t) for t in tokens]

    def token_id(self, token: str) -> int:
        tid = self._tokenizer.token_to_id(token)
        if tid is None:
            raise ModelLoadError(f"the tokenizer has no {token!r} token: not a Qwen3 tokenizer?")
        return int(tid)


# --- the simulated model's outputs ----------------------------------------------------------------
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_hashes(batch: Batch) -> np.ndarray:
    """[b] uint64: a hash of each row's real token ids and their positions (from the first real
    token), so it depends on the row alone, not on its padding or neighbours."""
    ids = batch.input_ids.astype(np.uint64)
    lengths = batch.lengths.astype(np.int64)
    seqlen = ids.shape[1]
    pos = np.arange(seqlen, dtype=np.int64)[None, :]
    rel = pos if batch.padding_side == "right" else pos - (seqlen - lengths)[:, None]
    real = (rel >= 0) & (rel < lengths[:, None])
    with np.errstate(over="ignore"):
        terms = _mix(ids * _ID_MULT + (np.where(real, rel, 0).astype(np.uint64) + np.uint64(1)) * _POS_MULT)
        h = np.where(real, terms, np.uint64(0)).sum(axis=1, dtype=np.uint64)
        return _mix(h ^ lengths.astype(np.uint64))


def _unit_floats(x: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in [0, 1)."""
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def simulated_pooled(batch: Batch, hidden: int) -> np.ndarray:
    """[b, hidden] float32 in [-1, 1): the simulated "last hidden state" of each row."""
    h = row_hashes(batch)
    cols = (np.arange(hidden, dtype=np.uint64) + np.uint64(1)) * _COL_MULT
    with np.errstate(over="ignore"):
        x = _mix(h[:, None] ^ cols[None, :])
    return (_unit_floats(x) * 2.0 - 1.0).astype(np.float32)


def simulated_gap(batch: Batch) -> np.ndarray:
    """[b] float32 in [-5, 5): the simulated yes-no logit gap of each row."""
    return (_unit_floats(row_hashes(batch)) * 10.0 - 5.0).astype(np.float32)
