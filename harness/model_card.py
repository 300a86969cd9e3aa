"""The Qwen3-Reranker model card's algorithm, written out with plain transformers: the reference
our reranker is held to (tests/equivalence) and measured against (python -m workers.bench.engine).

The card's code: the full causal LM (AutoModelForCausalLM), left padding, prefix and suffix
tokenised apart, the body truncated with truncation='longest_first' to what is left of
max_length, padding to the longest row of the batch, full logits at the last position, softmax
over [no, yes]. None of it uses our engine, batching or templates module: the strings are spelled
out again here, so a mistake there cannot hide in the reference.
"""

import numpy as np

CARD_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
               "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
CARD_MAX_LENGTH = 8192


class ModelCardReranker:
    """`scores` returns P(yes) and the real token count of each pair, in the caller's order.

    The card cuts the pairs into batches in the order given; `sort_by_length=True` sorts them by
    length first (the benchmark does, to credit the card with the same little padding our
    batching has); the scores do not depend on it beyond rounding.
    """

    def __init__(self, folder: str, max_length: int = CARD_MAX_LENGTH, dtype=None, device: str = "cpu",
                 attn_implementation: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32, **extra).eval()
        self.model.to(device)
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        self.prefix_tokens = self.tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction: str, query: str, doc: str) -> str:
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def token_ids(self, pairs: list[str]) -> list[list[int]]:
        """prefix + the body cut to what is left of max_length + suffix, per pair (unpadded)."""
        body = self.tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                              max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens))
        return [self.prefix_tokens + ids + self.suffix_tokens for ids in body["input_ids"]]

    def scores(self, queries, documents, instruction: str = CARD_INSTRUCTION, batch_size: int = 64,
               sort_by_length: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(P(yes) per pair, real tokens per pair), in the caller's order."""
        torch = self.torch
        ids = self.token_ids([self.format_instruction(instruction, q, d) for q, d in zip(queries, documents)])
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(ids))
        out = np.zeros(len(ids), dtype=np.float64)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            inputs = self.tokenizer.pad({"input_ids": [ids[r] for r in rows]}, padding="longest",
                                        return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model(**inputs).logits[:, -1, :]
            pair = torch.stack([logits[:, self.token_false_id], logits[:, self.token_true_id]], dim=1)
            out[rows] = torch.nn.functional.log_softmax(pair.float(), dim=1)[:, 1].exp().cpu().numpy()
        return out, lengths
