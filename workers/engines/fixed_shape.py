"""What every compiled backend shares: artifacts found in the store, one per compiled sequence
length at one batch size, exactly those lengths as buckets, and every batch padded to the
compiled [batch, seqlen] (rows past the real ones are a lone pad token, and are dropped).

Pre- and post-processing stay in the base Engine, so a compiled backend tokenises, truncates,
pools and scores exactly like the torch one; a subclass only loads an artifact and runs it.
"""

import logging
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import defaults
from common.artifacts import ArtifactStore, missing_artifacts_message, verify_artifact
from common.defaults import ENDOFTEXT_TOKEN, RERANK_NO_TOKEN, RERANK_YES_TOKEN
from common.errors import ConfigError, ModelLoadError
from common.model_identity import model_ref
from common.schemas import ArtifactManifest
from common.settings import load_settings
from workers.batching import Batch
from workers.engines.base import Engine, EngineSpec, ModelInfo
from workers.engines.loading import load_tokenizer_and_config

log = logging.getLogger(__name__)


class FixedShapeEngine(Engine):
    backend: str  # "onnx" | "vacc"

    def __init__(self, spec: EngineSpec, artifacts: dict[int, Path] | None = None, batch: int | None = None):
        """artifacts: {seqlen: entry file} to load instead of the store's (validation of a staged
        artifact); batch: their compiled batch size."""
        self.tokenizer, config, random_weights = load_tokenizer_and_config(spec.model)
        if artifacts is None:
            manifests = find_artifacts(spec)
            artifacts, batch = {m.key.seqlen: path for m, path in manifests}, manifests[0][0].key.batch
        self.batch_rows = int(batch)
        self.compiled = tuple(sorted(artifacts))
        self.spec = fixed_shape_spec(spec, self.compiled, self.batch_rows)
        self.endoftext_id = self.pad_id = self.tokenizer.convert_tokens_to_ids(ENDOFTEXT_TOKEN)
        if spec.task == "rerank":
            self.yes_id = self.tokenizer.convert_tokens_to_ids(RERANK_YES_TOKEN)
            self.no_id = self.tokenizer.convert_tokens_to_ids(RERANK_NO_TOKEN)
        self.info = ModelInfo(config.hidden_size, random_weights, spec.model)
        self.load_artifacts({seqlen: Path(path) for seqlen, path in artifacts.items()})
        if random_weights:
            log.warning("%s holds RANDOM WEIGHTS: outputs are meaningless, only cost and agreement are", spec.model)

    # --- what a compiled backend implements -------------------------------------------------------
    @abstractmethod
    def load_artifacts(self, artifacts: dict[int, Path]) -> None:
        """Load one compiled model per sequence length."""

    @abstractmethod
    def run_fixed(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One compiled [batch, seqlen] call: right-padded int ids, every row's real length (>= 1).
        embed: [batch, hidden] float32 at the last real token; rerank: [batch] logit(yes) - logit(no)."""

    # --- shared --------------------------------------------------------------------------------------
    def forward_embed(self, batch: Batch) -> np.ndarray:
        return self.run_padded(batch)

    def forward_rerank(self, batch: Batch) -> np.ndarray:
        return self.run_padded(batch)

    def run_padded(self, batch: Batch) -> np.ndarray:
        """Run a planned batch as compiled calls of exactly batch_rows rows each."""
        if batch.seqlen not in self.compiled:
            raise ConfigError(f"no compiled {self.backend} artifact for seqlen {batch.seqlen}; compiled: {self.compiled}")
        if batch.padding_side != "right":
            raise ConfigError(f"compiled {self.backend} artifacts take right-padded rows")
        outputs = []
        for start in range(0, len(batch.lengths), self.batch_rows):
            ids, lengths = batch.input_ids[start:start + self.batch_rows], batch.lengths[start:start + self.batch_rows]
            n = len(lengths)
            full_ids = np.full((self.batch_rows, batch.seqlen), self.pad_id, dtype=np.int64)
            full_ids[:n] = ids
            full_lengths = np.ones(self.batch_rows, dtype=np.int64)  # filler rows: one pad token
            full_lengths[:n] = lengths
            outputs.append(self.run_fixed(full_ids, full_lengths)[:n])
        return np.concatenate(outputs)

    def configured(self, seqlens: tuple[int, ...]) -> "Engine":
        """A job's buckets on compiled shapes: its longest length (where it truncates) must be a
        compiled one; its buckets are then the compiled lengths up to that."""
        longest = max(seqlens)
        if longest not in self.compiled:
            raise ConfigError(
                f"the job truncates at {longest} tokens but the {self.backend} artifacts of {self.spec.model} are "
                f"compiled for {list(self.compiled)}: submit with --seqlens "
                f"{','.join(map(str, self.compiled))}, or compile {longest}")
        return super().configured(tuple(s for s in self.compiled if s <= longest))


def fixed_shape_spec(spec: EngineSpec, compiled: tuple[int, ...], batch_rows: int) -> EngineSpec:
    """The compiled lengths as buckets, every batch padded to one of them, at most batch_rows rows
    a call, and enough token budget that a planned batch holds several calls' worth of rows."""
    return replace(spec, seqlens=compiled, pad_to_bucket=True, padding_side="right",
                   max_batch_rows=max(batch_rows, spec.max_batch_rows // batch_rows * batch_rows),
                   batch_tokens=max(spec.batch_tokens, batch_rows * compiled[-1]))


def find_artifacts(spec: EngineSpec, store: ArtifactStore | None = None) -> list[tuple[ArtifactManifest, Path]]:
    """The store's artifacts for this engine at one batch size (the one with the most compiled
    lengths, then the largest), each with its entry file; a clear error naming the compile
    command when there are none."""
    settings = load_settings()
    store = store or ArtifactStore(settings.artifact_store, settings.artifact_cache)
    model = model_ref(spec.model)
    found = store.find(model, spec.backend, spec.task, spec.dtype)
    if not found:
        raise ModelLoadError(missing_artifacts_message(store, spec.model, spec.backend, spec.task, spec.dtype,
                                                       spec.seqlens, defaults.DEFAULT_COMPILE_BATCH))
    by_batch: dict[int, list[ArtifactManifest]] = {}
    for manifest in found:
        by_batch.setdefault(manifest.key.batch, []).append(manifest)
    batch = max(by_batch, key=lambda b: (len(by_batch[b]), b))
    return [(m, verify_artifact(store, m, model, bool(settings.allow_unvalidated_artifacts))) for m in by_batch[batch]]
