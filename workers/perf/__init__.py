"""Latency and throughput measurement of an engine on its device(s) (`workers bench`)."""
