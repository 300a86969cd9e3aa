"""The shard pipeline against the bare engine, in ONE process with ONE loaded engine, alternating.

    python scripts/bench_shard_overhead.py [--rows 512] [--rounds 3] [--shape 0.6b] [--dtype bf16]
                                           [--out bench-results/shard-overhead-cpu.json]

`engine.embed(texts)` (texts already in memory) vs a `--local` job over the same rows as one shard
(read the jsonl, validate, tokenise on the reader thread, the engine, write and hash the Parquet
file on the writer thread, commit, the success marker). Separate processes (python -m
workers.bench.pipeline) also differ in what the process and the machine do around them; here the
only difference is the pipeline. Ratio = engine seconds / job seconds, the median of the rounds.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/bench_shard_overhead.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", default="0.6b", choices=("tiny", "0.6b"))
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "shard-overhead-cpu.json")
    args = ap.parse_args(argv)
    from common.provenance import confirm, provenance

    origin = provenance("python scripts/bench_shard_overhead.py")
    from common.settings import load_settings
    from harness.corpora import write_corpus
    from producer import api
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine
    from workers.models.random_init import ensure_random_model

    model = ensure_random_model(REPO / ".cache" / "models", "embed", args.shape)
    work = Path(tempfile.mkdtemp(prefix="q3b-shard-overhead-"))
    corpus = work / "corpus.jsonl"
    write_corpus(corpus, args.rows)
    texts = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    engine = create_engine(EngineSpec(model=str(model), dtype=args.dtype))
    engine.embed(texts[:4])  # first-call costs, for both sides
    settings, rounds = load_settings({}), []
    for i in range(args.rounds):
        started = time.perf_counter()
        engine.embed(texts)
        bare = time.perf_counter() - started
        started = time.perf_counter()
        api.submit(str(corpus), model=str(model), out=str(work / f"out-{i}"), local=True, dtype=args.dtype,
                   shard_rows=args.rows, progress=False, settings=settings, engine=engine)
        job = time.perf_counter() - started
        rounds.append({"engine_s": bare, "job_s": job, "ratio": bare / job})
        print(f"round {i + 1}: engine.embed {bare:.1f}s, one-shard --local job {job:.1f}s: the job runs at "
              f"{bare / job:.1%} of the engine", flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    out = {"rows": args.rows, "shape": args.shape, "dtype": args.dtype, "rounds": rounds, "ratio": ratio,
           "goal": 0.97, "label": "RANDOM WEIGHTS", "provenance": confirm(origin)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"median: the shard pipeline runs at {ratio:.1%} of the bare engine (goal >= 97%); figures in {args.out}")


if __name__ == "__main__":
    main()
