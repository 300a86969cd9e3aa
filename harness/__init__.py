"""Tooling around the runtime, never imported by it (tests/unit/test_layering.py): local clusters of
real processes for the tests, benchmarks and rehearsals (cluster.py, compose.py), real text for
demos and tests (corpora.py), and the model card's reranker written out as a reference (model_card.py)."""
