"""Benchmarks: the `workers bench` command (latency and throughput of one engine on its device(s):
cli, options, instances, inputs, driver, runner, stats, report, plots) and two scripts, never timed
tests: `python -m workers.bench.engine` (our engines against sentence-transformers, the model card
and the matmul peak) and `python -m workers.bench.pipeline` (the whole queue, producer to commits)."""
