"""Texts shared by the equivalence tests: every awkward case at once, across all buckets."""

import random

import pytest

_WORDS = ("retrieval embedding model query passage answer the of and in a to is river mountain "
          "北京 上海 中国 首都 🎉 🚀 42 1984 !? , .").split()


def _varied_texts(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 90))) for _ in range(n)]


EDGE_TEXTS = [
    "",
    "hello world",
    " leading space and trailing space ",
    "\nleading newline",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "emoji 🎉🚀👩‍👩‍👧 and flags 🇨🇳",
    "1234567890",
    "Cafe\u0301 (decomposed) vs Café",  # NFC normalisation
    "a text that is much too long for the largest bucket and must be truncated " * 20,
]

MIXED_TEXTS = EDGE_TEXTS + _varied_texts(24, seed=11)


@pytest.fixture(scope="session")
def mixed_texts():
    """Edge cases plus texts of every length from 1 token to past 128 tokens (buckets 16..128)."""
    return list(MIXED_TEXTS)
