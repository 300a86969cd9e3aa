"""Corpus readers, the output store and its commit protocol, Parquet output."""
