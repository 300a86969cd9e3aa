"""Accuracy evaluation: STS, reranking and backend agreement (`workers eval`)."""
