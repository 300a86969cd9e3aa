"""Building model folders: the Qwen BPE tokenizer and random-weight Qwen3 checkpoints."""
