"""The same `--local` job with its corpus and output on a local disk and in a bucket, side by side.

    python scripts/bench_stores.py [--rows 400] [--shape 0.6b] [--dtype fp32] [--rounds 2]
                                   [--out bench-results/stores-cpu.json]

The bucket is a real S3 API server on loopback (moto in server mode, harness/s3.py): the figures
measure this project's object-store path (ranged reads, uploads, conditional commits, server-side
copies) against the same job on disk, not a real network. Rounds alternate disk and bucket, so load
on a shared machine falls on both; the ratio is of the medians. Each run is the job from the plan
to the success marker, in one process, with the model loaded once for all runs.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common.provenance import confirm, provenance
from harness.corpora import write_corpus
from harness.outputs import commit_records
from harness.s3 import S3Server

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/bench_stores.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--shard-rows", type=int, default=100)
    ap.add_argument("--shape", default="0.6b", choices=("tiny", "0.6b"))
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "stores-cpu.json")
    args = ap.parse_args(argv)
    started = provenance("python scripts/bench_stores.py")
    work = Path(tempfile.mkdtemp(prefix="q3b-stores-bench-"))
    server = S3Server(work / "moto").start()
    try:
        result = run(args, work, server)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["provenance"] = confirm(started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"disk {result['disk_rows_per_s']:.1f} rows/s, bucket {result['bucket_rows_per_s']:.1f} rows/s: "
          f"{result['ratio']:.1%} of disk (goal >= 90%); figures in {args.out}")


def run(args, work: Path, server: S3Server) -> dict:
    import os

    os.environ.update(server.env())  # this process reaches the bucket as any client would
    from common.settings import load_settings
    from producer import api
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine
    from workers.models.random_init import ensure_random_model

    model = ensure_random_model(REPO / ".cache" / "models", "embed", args.shape)
    corpus = work / "corpus.jsonl"
    write_corpus(corpus, args.rows)
    bucket = server.bucket()
    server.client().upload_file(str(corpus), bucket, "corpus/corpus.jsonl")
    settings = load_settings({})
    engine = create_engine(EngineSpec(model=str(model.resolve()), task="embed", dtype=args.dtype))
    runs = {"disk": [], "bucket": []}
    for round_ in range(args.rounds):
        for kind in ("disk", "bucket"):
            source = str(corpus) if kind == "disk" else f"s3://{bucket}/corpus/corpus.jsonl"
            out = str(work / f"out-{round_}") if kind == "disk" else f"s3://{bucket}/out-{round_}"
            started = time.perf_counter()
            job = api.submit(source, model=str(model), out=out, local=True, dtype=args.dtype,
                             shard_rows=args.shard_rows, progress=False, settings=settings, engine=engine)
            wall = time.perf_counter() - started
            assert job.status().rows_out == args.rows
            commits = commit_records(out).values()
            runs[kind].append({"wall_s": round(wall, 2), "rows": args.rows,
                               "rows_per_s": args.rows / wall,
                               "shard_seconds": round(sum(c.seconds for c in commits), 2)})
            print(f"round {round_ + 1} {kind}: {wall:.1f}s, {args.rows / wall:.1f} rows/s", flush=True)
    disk = statistics.median(r["rows_per_s"] for r in runs["disk"])
    bucket_rate = statistics.median(r["rows_per_s"] for r in runs["bucket"])
    return {"rows": args.rows, "shard_rows": args.shard_rows, "shape": args.shape, "dtype": args.dtype,
            "rounds": args.rounds, "runs": runs, "disk_rows_per_s": disk, "bucket_rows_per_s": bucket_rate,
            "ratio": bucket_rate / disk, "goal": 0.9, "store": "moto server on loopback (harness/s3.py)"}


if __name__ == "__main__":
    main()
