"""The records that travel and persist: job spec, plan, shard message, commit record."""

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from common import defaults, options

# Every id and tag that travels in a message, or becomes part of a path or a Redis key, has a pattern.
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# <input file index>-<first row>: eight digits of file index (a job of up to 1e8 input files), twelve of row
SHARD_ID = re.compile(r"^[0-9]{8}-[0-9]{12}$")
MODEL_TAG = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,39}-[0-9a-f]{8}$")  # see keys.model_tag
IDENTITY = re.compile(r"^[0-9a-f]{64}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
MAX_PATH_CHARS = 4096
SEMANTICS_VERSION = 3  # bump when a change alters outputs or their layout; it is part of every job fingerprint
MAX_ORDINAL = 10**9  # shards per job, far above any real job (5e5 shards is 1e9 rows of 2,000)


def _absolute_path(value: str) -> str:
    if "\x00" in value or not value.startswith("/"):
        raise ValueError("must be an absolute path without NUL bytes")
    return value


OBJECT_URL = re.compile(r"^(s3|gs)://[a-z0-9][a-z0-9._-]{1,62}(/[^\x00]*)?$")


def _location(value: str) -> str:
    """An absolute path, or a bucket URL without `.`/`..` segments (keys are literal, but a
    filesystem layer may resolve them; the roots check must see what will be written)."""
    if "://" not in value:
        return _absolute_path(value)
    if not OBJECT_URL.match(value) or any(part in (".", "..") for part in value.split("://", 1)[1].split("/")):
        raise ValueError("must be an s3:// or gs:// URL with a valid bucket name and no '.' or '..' segments")
    return value


def _model_source(value: str) -> str:
    if HUB_ID.match(value):
        return value
    return _absolute_path(value)


JobId = Annotated[str, StringConstraints(pattern=JOB_NAME.pattern)]
ShardId = Annotated[str, StringConstraints(pattern=SHARD_ID.pattern)]
ModelTag = Annotated[str, StringConstraints(pattern=MODEL_TAG.pattern)]
Identity = Annotated[str, StringConstraints(pattern=IDENTITY.pattern)]
Location = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_location)]
ModelSource = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_model_source)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(BaseModel):
    """What arrives from the queue: untrusted. Exact types (no coercion), no unknown fields, every
    string bounded by a pattern or a length; paths are checked against the roots by the worker."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ModelRef(Frozen):
    source: ModelSource  # an absolute folder, or a hub id
    identity: Identity  # content hash (folders) or hub id + revision
    tag: ModelTag  # readable queue-safe name, see keys.model_tag

    @model_validator(mode="after")
    def _tag_names_identity(self):
        if not self.tag.endswith("-" + self.identity[:8]):
            raise ValueError(f"model tag {self.tag!r} does not end with its identity's first 8 hex digits")
        return self


class JobSpec(Frozen):
    """What the user asked for. Everything here is part of the job fingerprint. It checks itself
    when it is built (common/options.py), so a bad spec is refused before planning, naming the
    option; the dimension's upper bound (the model's hidden size) is checked once the model's
    config is read (producer/checks.py)."""

    task: Literal["embed", "rerank"] = "embed"
    model: ModelRef
    backend: str = defaults.DEFAULT_BACKEND
    dtype: Literal["fp32", "bf16", "fp16", "int8"] = defaults.DEFAULT_DTYPE  # int8: onnx artifacts, or torch on a CPU
    seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS
    instruction: str | None = None  # embed: applied with the query template; rerank: the Instruct
    dim: int | None = None
    output_dtype: Literal["float32", "float16"] = "float32"
    id_column: str = defaults.DEFAULT_ID_COLUMN
    text_column: str = defaults.DEFAULT_TEXT_COLUMN
    query_column: str = defaults.DEFAULT_QUERY_COLUMN
    document_column: str = defaults.DEFAULT_DOCUMENT_COLUMN
    keep_columns: tuple[str, ...] = ()  # input columns copied into the output next to the id
    shard_rows: int = Field(default=defaults.DEFAULT_SHARD_ROWS, ge=1)
    dedup: bool = True  # rows of identical input get their value from one computation (common/io/content.py)
    reuse: tuple[Location, ...] = ()  # earlier outputs whose values are copied for the inputs they hold

    @model_validator(mode="after")
    def _valid_options(self):
        options.check_backend(self.backend)
        options.check_dtype(self.dtype, self.backend)
        multiple = defaults.SEQLEN_MULTIPLE if self.backend in options.COMPILED_BACKENDS else 1
        object.__setattr__(self, "seqlens", options.validate_seqlens(self.seqlens, multiple))
        options.check_dim(self.dim)
        if self.dim is not None and self.task != "embed":
            raise ValueError("--dim applies to embeddings only (--task embed)")
        clash = set(self.keep_columns) & {"id", "embedding", "score", "n_tokens", "truncated", "input_hash"}
        if clash:
            raise ValueError(f"--keep-columns {', '.join(sorted(clash))}: the output has columns of that name")
        return self

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
    row_base: int = 0  # corpus-wide index of the file's first row (ids for --id-column @row)
    footer_sha256: str = ""  # parquet: of the footer, checked when a shard opens the file


class ShardSpec(Frozen):
    shard_id: ShardId
    ordinal: int = 0  # its place in the plan (0 .. shards_total - 1): how Redis and the manifest name it
    file_index: int
    row_start: int  # 0-based row index within the file (jsonl: among non-blank lines)
    row_end: int
    byte_offset: int = 0  # jsonl: where row_start's line begins
    line_start: int = 0  # jsonl: lines (blank ones too) before byte_offset, for reject line numbers
    byte_end: int = 0  # jsonl: where the next shard's first line begins (the file's size for the last)
    sha256: str = ""  # jsonl: of the bytes [byte_offset, byte_end), checked as the shard reads them

    @property
    def rows(self) -> int:
        return self.row_end - self.row_start


class PlanHeader(Frozen):
    """`_plan.json`: what a job is, in a few hundred bytes whatever its size. The shards and the
    inputs are tables beside it (`tables`, common/io/plans.py), read a row group at a time."""

    format: Literal[2] = 2
    job_id: str
    fingerprint: str
    spec: JobSpec
    rows_total: int
    shards_total: int
    files_total: int
    id_type: Literal["int64", "string"]
    duplicate_ids: int  # rows whose id was seen earlier in the corpus; they become rejects
    copies: int = 0  # rows whose input occurs earlier in the corpus: copied from that row, not computed
    reusable: int = 0  # rows whose input a --reuse source holds: copied from it
    reuse_fingerprints: tuple[str, ...] = ()  # of the --reuse sources' jobs, as planned
    queue: str
    tables: str  # the folder of the shard, input and duplicate-id tables, under the output
    tables_bytes: dict[str, int] = {}  # each table's size: a bucket reads it with no HEAD request first
    keep_schema: str = ""  # the --keep-columns' output types, one per column across every input (base64 Arrow)
    created_at: float
    code_version: str

    @field_validator("job_id")
    @classmethod
    def _valid_job_id(cls, v: str) -> str:
        if not JOB_NAME.match(v):
            raise ValueError(f"job id {v!r} must match {JOB_NAME.pattern}")
        return v


class ShardMessage(Message):
    """What a shard task carries: references only, never texts or vectors. The worker checks that
    every field agrees with the plan stored in `output`, which must lie inside its output root."""

    job_id: JobId
    output: Location
    shard_id: ShardId
    ordinal: int = Field(ge=0, lt=MAX_ORDINAL)
    input_path: Location
    row_start: int = Field(ge=0)
    row_end: int = Field(ge=0)


class CommitRecord(Frozen):
    shard_id: str
    attempt: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    tokens: int
    data_file: str  # relative to the output root
    reject_file: str | None
    data_sha256: str  # of the file as written, before any upload
    data_bytes: int = 0
    # Of rows_out: copied from a row of identical input in this job, or from a --reuse source (the
    # rest, rows computed, a model produced)
    rows_deduplicated: int = 0
    rows_reused: int = 0
    worker: str
    seconds: float
    committed_at: float
    # What made the data file, as its own metadata says: the end-of-job check reads it from here,
    # not from every file
    simulated: bool = False
    random_weights: bool = False


class QuarantineRecord(Frozen):
    shard_id: str
    attempts: int
    reason: str
    quarantined_at: float


class AttemptNote(Frozen):
    """A worker's own account, in the store, of one delivery of a shard that did not commit. Only
    these count towards a quarantine (never a counter in Redis, which anyone can write): one with
    an error failed with it; one without was started and never reported back, so its worker was
    lost (killed, out of memory, the hard time limit, a lost host)."""

    shard_id: str
    worker: str
    started_at: float
    error: str = ""


class SuccessMarker(Frozen):
    job_id: str
    status: Literal["completed", "completed_with_failures"]
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_in_quarantined_shards: int
    rows_computed: int = 0  # of rows_out: produced by the model; the rest were copied
    rows_deduplicated: int = 0
    rows_reused: int = 0
    shards_committed: int
    shards_quarantined: tuple[str, ...]
    finished_at: float
    check_seconds: float = 0.0  # how long the end-of-job check took (it reads every data file's ids)
    # Whether the outputs are meaningless: run on the simulated backend, or on a random-weight model
    simulated: bool = False
    random_weights: bool = False


# --- compiled artifacts ------------------------------------------------------------------------------
class ArtifactKey(Message):
    """What a compiled artifact is: one model (by content hash), backend, task, dtype and fixed shape.
    It names a folder of the artifact store, so every field is a pattern or a bounded number."""

    model_identity: Identity
    model_tag: ModelTag
    backend: Literal["onnx", "vacc"]
    task: Literal["embed", "rerank"]
    dtype: Literal["fp32", "fp16", "int8"]
    batch: int = Field(ge=1, le=4096)
    seqlen: int = Field(ge=16, le=32768)

    @model_validator(mode="after")
    def _tag_names_identity(self):
        if not self.model_tag.endswith("-" + self.model_identity[:8]):
            raise ValueError(f"model tag {self.model_tag!r} does not end with its identity's first 8 hex digits")
        return self

    @property
    def artifact_id(self) -> str:
        return f"{self.model_tag}.{self.backend}.{self.task}.{self.dtype}.b{self.batch}.s{self.seqlen}"

    @property
    def relative_dir(self) -> str:
        return f"{self.model_tag}/{self.backend}/{self.task}/{self.dtype}/b{self.batch}-s{self.seqlen}"


class CompileRequest(Message):
    """One compile task: a model at one fixed shape. `job` groups the requests of one command.
    The compile worker recomputes the identity of `model.source` and refuses a request whose
    source is not the model its key names."""

    job: JobId
    model: ModelRef
    key: ArtifactKey
    # empty: the built-in validation samples
    validation_texts: tuple[Annotated[str, StringConstraints(max_length=100_000)], ...] = Field(
        default=(), max_length=1024, strict=False)  # a JSON array arrives as a list

    @model_validator(mode="after")
    def _key_names_model(self):
        if (self.key.model_identity, self.key.model_tag) != (self.model.identity, self.model.tag):
            raise ValueError("the key's model identity and tag differ from the request's model")
        return self


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
    # The identity the compile worker recomputed from the checkpoint it exported (equal to the key's,
    # or nothing was published); an engine refuses an artifact whose identity is not its model's.
    model_identity: str = ""
    files: tuple[str, ...]  # relative to the artifact folder; the entry point first
    files_sha256: dict[str, str] = {}  # checked when an engine loads the artifact
    upload: str = ""  # in a bucket: the prefix (under the key's folder) the files were uploaded to
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
