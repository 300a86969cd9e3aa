"""Where an ONNX artifact spends its time: ONNX Runtime's profiler, summed by operator type.

    python scripts/onnx_profile.py ARTIFACT_FOLDER_OR_MODEL_ONNX [--runs 2] [--threads N]

Runs the artifact at its own compiled [batch, seqlen] on random token ids (one warm-up call, then
--runs profiled calls) and prints tokens/s and the share of each operator type, e.g. how much of an
int8 graph is its quantised GEMMs (MatMulIntegerToFloat, DynamicQuantizeMatMul).
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def model_path(target: Path) -> Path:
    return target / "model.onnx" if target.is_dir() else target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", type=Path, help="an artifact folder (holding model.onnx) or a .onnx file")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.log_severity_level = args.threads, 3
    session = ort.InferenceSession(str(model_path(args.artifact)), options, providers=["CPUExecutionProvider"])
    batch, seqlen = session.get_inputs()[0].shape
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 150_000, (batch, seqlen), dtype=np.int64),
             "attention_mask": np.ones((batch, seqlen), dtype=np.int64)}
    session.run(None, feeds)  # warm-up, not profiled
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model_path(args.artifact)), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    started = time.perf_counter()
    for _ in range(args.runs):
        session.run(None, feeds)
    seconds = (time.perf_counter() - started) / args.runs
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    print(f"{model_path(args.artifact)}: [{batch}, {seqlen}], {args.threads} threads: {seconds:.2f} s a call, "
          f"{batch * seqlen / seconds:,.0f} tokens/s (profiling on)")
    for op, micros in by_op.most_common(args.top):
        print(f"  {op:28s} {micros / 1e3 / (args.runs + 1):9.1f} ms a call  {100 * micros / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
