"""The records that travel and persist: job spec, plan, shard message, commit record."""

import re
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common import defaults

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEMANTICS_VERSION = 1  # bump when a change alters outputs; it is part of every job fingerprint


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(Frozen):
    source: str  # folder or hub id as given
    identity: str  # content hash (folders) or hub id + revision
    tag: str  # readable queue-safe name, see keys.model_tag


class JobSpec(Frozen):
    """What the user asked for. Everything here is part of the job fingerprint."""

    task: Literal["embed", "rerank"] = "embed"
    model: ModelRef
    backend: str = defaults.DEFAULT_BACKEND
    dtype: Literal["fp32", "bf16", "fp16", "int8"] = defaults.DEFAULT_DTYPE  # int8: onnx artifacts only
    seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS
    instruction: str | None = None  # embed: applied with the query template; rerank: the Instruct
    dim: int | None = None
    output_dtype: Literal["float32", "float16"] = "float32"
    id_column: str = defaults.DEFAULT_ID_COLUMN
    text_column: str = defaults.DEFAULT_TEXT_COLUMN
    query_column: str = defaults.DEFAULT_QUERY_COLUMN
    document_column: str = defaults.DEFAULT_DOCUMENT_COLUMN
    shard_rows: int = Field(default=defaults.DEFAULT_SHARD_ROWS, ge=1)

    @property
    def input_columns(self) -> tuple[str, ...]:
        return (self.text_column,) if self.task == "embed" else (self.query_column, self.document_column)


class InputFile(Frozen):
    path: str
    format: Literal["jsonl", "parquet"]
    size: int
    mtime_ns: int
    sample_sha256: str  # head and tail bytes: cheap identity for fingerprints
    rows: int  # jsonl: non-blank lines; parquet: rows


class ShardSpec(Frozen):
    shard_id: str
    file_index: int
    row_start: int  # 0-based row index within the file (jsonl: among non-blank lines)
    row_end: int
    byte_offset: int = 0  # jsonl: where row_start's line begins
    line_start: int = 0  # jsonl: lines (blank ones too) before byte_offset, for reject line numbers

    @property
    def rows(self) -> int:
        return self.row_end - self.row_start


class Plan(Frozen):
    job_id: str
    fingerprint: str
    spec: JobSpec
    inputs: tuple[InputFile, ...]
    shards: tuple[ShardSpec, ...]
    rows_total: int
    id_type: Literal["int64", "string"]
    duplicate_ids: int  # rows whose id was seen earlier in the corpus; they become rejects
    queue: str
    created_at: float
    code_version: str

    @cached_property
    def shards_by_id(self) -> dict[str, ShardSpec]:
        return {s.shard_id: s for s in self.shards}

    def shard(self, shard_id: str) -> ShardSpec:
        try:
            return self.shards_by_id[shard_id]
        except KeyError:
            raise KeyError(f"shard {shard_id} is not in the plan of job {self.job_id}") from None

    def row_id_base(self, file_index: int) -> int:
        """Corpus-wide index of a file's first row (ids for --id-column @row)."""
        return sum(f.rows for f in self.inputs[:file_index])

    @field_validator("job_id")
    @classmethod
    def _valid_job_id(cls, v: str) -> str:
        if not JOB_NAME.match(v):
            raise ValueError(f"job id {v!r} must match {JOB_NAME.pattern}")
        return v


class ShardMessage(Frozen):
    """What a shard task carries: references only, never texts or vectors."""

    job_id: str
    output: str
    shard_id: str
    input_path: str
    row_start: int
    row_end: int


class CommitRecord(Frozen):
    shard_id: str
    attempt: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    tokens: int
    data_file: str  # relative to the output root
    reject_file: str | None
    data_sha256: str
    worker: str
    seconds: float
    committed_at: float


class QuarantineRecord(Frozen):
    shard_id: str
    attempts: int
    reason: str
    quarantined_at: float


class SuccessMarker(Frozen):
    job_id: str
    status: Literal["completed", "completed_with_failures"]
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_in_quarantined_shards: int
    shards_committed: int
    shards_quarantined: tuple[str, ...]
    finished_at: float


# --- compiled artifacts ------------------------------------------------------------------------------
class ArtifactKey(Frozen):
    """What a compiled artifact is: one model (by content hash), backend, task, dtype and fixed shape."""

    model_identity: str
    model_tag: str
    backend: Literal["onnx", "vacc"]
    task: Literal["embed", "rerank"]
    dtype: Literal["fp32", "fp16", "int8"]
    batch: int = Field(ge=1)
    seqlen: int = Field(ge=16)

    @property
    def artifact_id(self) -> str:
        return f"{self.model_tag}.{self.backend}.{self.task}.{self.dtype}.b{self.batch}.s{self.seqlen}"

    @property
    def relative_dir(self) -> str:
        return f"{self.model_tag}/{self.backend}/{self.task}/{self.dtype}/b{self.batch}-s{self.seqlen}"


class CompileRequest(Frozen):
    """One compile task: a model at one fixed shape. `job` groups the requests of one command."""

    job: str
    model: ModelRef
    key: ArtifactKey
    validation_texts: tuple[str, ...] = ()  # empty: the built-in validation samples


class Validation(Frozen):
    metric: Literal["worst_cosine", "worst_score_diff"]
    worst: float
    mean: float
    bound: float
    samples: int
    passed: bool
    reference: str = "torch fp32 engine on the same checkpoint, same fixed shape"


class ArtifactManifest(Frozen):
    key: ArtifactKey
    model_source: str
    files: tuple[str, ...]  # relative to the artifact folder; the entry point first
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    validation: Validation | None  # None: not validated (VACC compiled where no card is present)
    validation_note: str = ""
    derived_from: str = ""  # fp16 / int8: the published fp32 artifact converted, if it was not re-exported
    tool_versions: dict[str, str]
    compile_seconds: float
    created_at: str
    job: str
    host: str
