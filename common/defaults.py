"""Every default of the project, in one place, with its unit in the name."""

# --- model semantics (see ../shared/reference/qwen3.md) -------------------------------------
# The model card README's default; the reference evaluation class uses another sentence, so the
# project pins this one here and nowhere else.
DEFAULT_RETRIEVAL_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
# Symmetric tasks (STS, pair classification) put this instruction on both sides.
DEFAULT_SYMMETRIC_INSTRUCTION = "Retrieve semantically similar text"
DEFAULT_RERANK_INSTRUCTION = DEFAULT_RETRIEVAL_INSTRUCTION

ENDOFTEXT_TOKEN = "<|endoftext|>"  # id 151643 in the real vocabulary; NOT tokenizer.eos_token
RERANK_YES_TOKEN = "yes"
RERANK_NO_TOKEN = "no"

MIN_EMBEDDING_DIM = 32  # smallest MRL dimension the models were trained for

# --- batching ---------------------------------------------------------------------------------
DEFAULT_SEQLENS = (64, 128, 256, 512)  # length buckets, tokens
SEQLEN_MULTIPLE = 16  # compiled lengths are multiples of 16 (vamc)
MAX_SEQLEN = 32768  # the Qwen3-Embedding / Reranker context length, tokens
DEFAULT_BATCH_TOKENS = 16384  # padded tokens per forward pass; batch size = this // bucket
DEFAULT_MAX_BATCH_ROWS = 256
# A document is cut to this many characters per token of the largest bucket BEFORE tokenising,
# so a 200 MB document costs no more than a long one. The longest Qwen token spans 128 characters
# (runs of spaces, dashes, "="), so 160 per token never cuts text the model would have seen.
CHARS_PER_TOKEN_CAP = 160

# --- engines ------------------------------------------------------------------------------------
DEFAULT_BACKEND = "torch"
DEFAULT_DTYPE = "bf16"  # the engines' own default (EngineSpec); the CLIs default to "auto"
# --dtype auto for the torch engine: exact fp32 on CPUs (bf16 pays only where the CPU has AMX or
# avx512_bf16: ask for it), bf16 on CUDA cards.
DEVICE_DTYPES = {"cpu": "fp32", "cuda": "bf16", "vacc": "fp16"}
DEFAULT_DEVICE = "cpu"
DEFAULT_PADDING_SIDE = "right"  # right padding needs no padding mask under causal attention

# --- compiled backends (ONNX, VACC) --------------------------------------------------------------
DEFAULT_ARTIFACT_STORE = ".cache/artifacts"  # compiled artifacts, keyed by model hash/backend/shape/dtype
DEFAULT_ARTIFACT_CACHE = "~/.cache/qwen3batch/artifacts"  # local copies of a bucket store's artifacts
# torch.compile (workers start --torch-compile): off | inductor | cudagraphs (inductor plus CUDA graphs, CUDA only)
TORCH_COMPILE_MODES = ("off", "inductor", "cudagraphs")
DEFAULT_TORCH_COMPILE = "off"
DEFAULT_INDUCTOR_CACHE = "~/.cache/qwen3batch/inductor"  # compiled graphs, kept across worker restarts
DEFAULT_COMPILE_BATCH = 8  # rows per compiled batch (fixed shape)
# Agreement an artifact must reach with the fp32 torch engine on the validation texts before it is
# published: worst cosine of embeddings, worst |P(yes) difference| of reranker scores.
# fp32 is the same arithmetic; fp16 and dynamic int8 lose precision, and these bounds are what the
# tests measure on random-weight models with margin (real checkpoints agree better: see README).
ARTIFACT_MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.95}
ARTIFACT_MAX_SCORE_DIFF = {"fp32": 1e-4, "fp16": 0.01, "int8": 0.1}
COMPILE_DTYPES = {"onnx": ("fp32", "fp16", "int8"), "vacc": ("fp16",)}
STAGING_MAX_AGE_S = 24 * 3600  # a staged artifact untouched this long was left by a killed compile
COMPILE_STATUS_TTL_S = 7 * 24 * 3600  # how long a compile job's status stays readable in Redis
ERRORS_TTL_S = 24 * 3600  # a job's last error per shard (q3b:job:<id>:errors) expires a day after the last one

# --- tiny models --------------------------------------------------------------------------------
TINY_MODEL_SEED = 1234

# --- jobs and shards ------------------------------------------------------------------------------
DEFAULT_SHARD_ROWS = 10_000  # input rows per shard task
DEFAULT_ID_COLUMN = "id"
ROW_NUMBER_ID = "@row"  # --id-column @row numbers rows "<file>:<row>" when the corpus has no ids
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_QUERY_COLUMN = "query"
DEFAULT_DOCUMENT_COLUMN = "document"
ENGINE_CHUNK_ROWS = 2048  # rows handed to the engine at once inside a shard (bounds memory)
READ_BATCH_ROWS = 8192  # rows per Arrow batch while streaming an input file
# Planning reads the first rows of each jsonl file for the columns a job needs: a file where more
# than this fraction of them lacks the text column is refused (a wrong --text-column).
COLUMN_SAMPLE_ROWS = 1000
MISSING_COLUMN_FRACTION = 0.5
MAX_JSONL_LINE_BYTES = 256 * 1024 * 1024  # a longer line is rejected unparsed; a 200 MB document is not
SAMPLE_HASH_BYTES = 1 << 20  # bytes hashed at each end of an input or weight file for its identity

# --- broker and reliability (../shared/reference/reliability.md) ----------------------------------
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TASK_TIME_LIMIT_S = 1800
DEFAULT_TASK_SOFT_TIME_LIMIT_S = 1700
# Must exceed the task time limit (2x): a message unacked longer than this is delivered again.
DEFAULT_VISIBILITY_TIMEOUT_S = 2 * DEFAULT_TASK_TIME_LIMIT_S
DEFAULT_MAX_ATTEMPTS = 3  # deliveries of one shard before it is quarantined
DEFAULT_RETRY_COUNTDOWN_S = 2  # far below the visibility timeout: ETA tasks sit unacked in memory
DEFAULT_WORKER_PROC_ALIVE_TIMEOUT_S = 300  # a child that loads a model at start needs time
DEFAULT_SOFT_SHUTDOWN_TIMEOUT_S = 10  # SIGTERM: finish or requeue within seconds
PUBLISH_MAX_RETRIES = 5
PUBLISH_RETRY_INTERVAL_S = 0.5
WORKER_HEARTBEAT_TTL_S = 30  # a worker silent this long is gone (QWEN3B_HEARTBEAT_TTL_S); it beats every TTL/6
WORKER_HEARTBEAT_S = WORKER_HEARTBEAT_TTL_S / 6
WORKER_HEALTHY_WITHIN_S = 3 * WORKER_HEARTBEAT_S  # `workers health`: a later beat means a stuck worker
# The reconciler (common/reconcile.py) looks for shards that nothing will run (no commit, no
# quarantine, no queued message, no live worker holding it) this often, and publishes them again.
RECONCILE_INTERVAL_S = 10
# A queued or running record younger than this is not second-guessed: a message is taken, or a
# shard started, a moment before the worker's heartbeat says so.
RECONCILE_GRACE_S = 10
# The window (common/window.py): messages of a job waiting in its queue, per live worker of the
# queue and at least; the rest of the job waits in the store's plan, not in Redis.
WINDOW_PER_WORKER = 4
WINDOW_MIN = 32
# Commits and quarantines announced in Redis are folded into the store's manifest at every
# reconciler pass, this many at most per pass (more wait for the next).
FOLD_MAX_EVENTS = 20_000
BROKER_MAXMEMORY_POLICY = "noeviction"  # any evicting policy silently deletes queues
PROGRESS_REFRESH_S = 1.0
RATE_WINDOW_S = 20.0  # rows/s and tokens/s are over this many recent seconds, and so is the ETA
PLAIN_PROGRESS_EVERY_S = 10.0  # without a terminal (CI, logs): one progress line this often
