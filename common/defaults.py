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
DEFAULT_BATCH_TOKENS = 16384  # padded tokens per forward pass; batch size = this // bucket
DEFAULT_MAX_BATCH_ROWS = 256
# A document is cut to this many characters per token of the largest bucket BEFORE tokenising,
# so a 200 MB document costs no more than a long one. 32 chars/token is far above what Qwen's
# BPE spans (about 4 for English), so the cut never decides which tokens survive truncation.
CHARS_PER_TOKEN_CAP = 32

# --- engines ------------------------------------------------------------------------------------
DEFAULT_BACKEND = "torch"
DEFAULT_DTYPE = "bf16"
DEFAULT_DEVICE = "cpu"
DEFAULT_PADDING_SIDE = "right"  # right padding needs no padding mask under causal attention

# --- tiny models --------------------------------------------------------------------------------
TINY_MODEL_SEED = 1234
