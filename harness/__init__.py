"""Tooling around the runtime, never imported by it: local clusters for the tests, benchmarks and
rehearsals, test and demo corpora, and small statistics helpers."""
