"""Texts every artifact is validated on: several languages, scripts, digits and code, short and
long, one long enough to be truncated at any compiled length (so the last-token and truncation
paths are checked too). Fixed, so two compiles of one key are validated alike."""

SHORT = (
    "What is the capital of China?",
    "The capital of China is Beijing.",
    "Explain gravity",
    "Gravity is a force that attracts two bodies towards each other.",
    "中国的首都是哪里？",
    "北京是中华人民共和国的首都。",
    "Wie spät ist es in Tokio?",
    "def add(a, b):\n    return a + b",
    "Pi is approximately 3.14159265358979 and e is 2.71828182845904.",
    "A man is playing a guitar on stage.",
    "Une femme lit un livre dans le parc.",
    "¿Dónde está la biblioteca?",
)
LONG = " ".join(
    f"Sentence {i} of a long document about batch inference on accelerator cards, fixed shapes, "
    f"padding and the last real token." for i in range(120)
)
TEXTS = SHORT + (LONG,)


def rerank_pairs(texts: tuple[str, ...] = TEXTS) -> tuple[list[str], list[str]]:
    """(queries, documents): each text against its neighbour, and the long one as a document."""
    queries = [texts[i] for i in range(len(texts) - 1)]
    documents = [texts[i + 1] for i in range(len(texts) - 1)]
    return queries, documents
