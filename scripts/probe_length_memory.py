"""What a torch worker's memory grows with: forward passes over many sequence lengths vs many row
counts, on the tiny random-weight model, each sweep in a fresh process.

    python scripts/probe_length_memory.py [--dtype bf16] [--passes 300]

Sweeps (one forward pass each, right-padded rows of one token id):
  lengths exact     16 rows, lengths 1..300 at random: what CPU passes ran at before CPU_LENGTH_STEP
  lengths stepped   the same lengths rounded up to CPU_LENGTH_STEP, as trim_padding now cuts them
  rows              1..40 rows at random, one length (128)
Prints the resident memory (VmRSS) every 50 passes and each sweep's growth over its first 50.
Set ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 in the environment to take oneDNN's primitive cache out.
"""

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SWEEPS = ("lengths-exact", "lengths-stepped", "rows")


def shape(sweep: str, rng: random.Random) -> tuple[int, int]:
    from workers.engines.torch_engine import CPU_LENGTH_STEP

    if sweep == "rows":
        return rng.randint(1, 40), 128
    length = rng.randint(1, 300)
    if sweep == "lengths-stepped":
        length = -(-length // CPU_LENGTH_STEP) * CPU_LENGTH_STEP
    return 16, length


def sweep(name: str, dtype: str, passes: int) -> None:
    """Runs in its own process; prints one JSON line of {pass: rss_mib}."""
    import numpy as np
    import torch

    from workers.engines.base import EngineSpec
    from workers.engines.torch_engine import TorchEngine
    from workers.memory import process_memory
    from workers.models.random_init import ensure_random_model

    model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
    engine = TorchEngine(EngineSpec(model=str(model), task="embed", dtype=dtype))
    rng, rss = random.Random(0), {}
    torch.set_num_threads(2)
    for i in range(1, passes + 1):
        rows, length = shape(name, rng)
        ids = np.full((rows, length), 100, dtype=np.int64)
        engine.forward_rows(ids, np.full(rows, length, dtype=np.int64), "right")
        if i % 50 == 0:
            rss[i] = process_memory()["rss_mib"]
    print(json.dumps(rss))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--passes", type=int, default=300)
    ap.add_argument("--sweep", choices=SWEEPS, help=argparse.SUPPRESS)  # the child process's
    args = ap.parse_args()
    if args.sweep:
        return sweep(args.sweep, args.dtype, args.passes)
    for name in SWEEPS:
        out = subprocess.run([sys.executable, __file__, "--sweep", name, "--dtype", args.dtype,
                              "--passes", str(args.passes)], capture_output=True, text=True, check=True)
        rss = {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
        first, last = rss[min(rss)], rss[max(rss)]
        print(f"{name:>16} ({args.dtype}): RSS MiB " + ", ".join(f"{k}: {v:.0f}" for k, v in rss.items()) +
              f"; growth after pass 50: {last / first:.3f}x", flush=True)


if __name__ == "__main__":
    main()
