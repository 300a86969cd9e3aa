"""What deduplication and --reuse save, whole process against whole process, side by side.

    python scripts/bench_dedup.py [--rows 2400] [--copies 0.25] [--shape 0.6b] [--dtype fp32]
                                  [--repeats 2] [--plan-rows 1000000] [--out bench-results/dedup-cpu.json]
    python scripts/bench_dedup.py --planning-only 1000000,10000000 [--out bench-results/dedup-planning-cpu.json]

1. Corpus A: `rows` rows of real sentences, a `copies` fraction of them repeating a sentence of
   another row (spread over the shards). `producer submit --local` with --no-dedup and with the
   default dedup, alternated: rows computed and wall time of each.
2. Corpus B: A with 10% of its texts changed, 5% of its rows removed and 5% added. A fresh full
   run of B against `--reuse` of A's output, alternated: rows computed, wall time, and the worst
   cosine between the two runs' vectors of each id.
3. Planning alone (`plan_job`, the simulated backend, no model) over a Parquet corpus of
   `plan-rows` rows with 10% copies, with and without dedup: wall time and peak RSS.
   --planning-only runs this part alone, at each size given, to show how it grows.
Every run is its own process, on a random-weight model of the real shape (its compute cost is
the real model's); nothing here is a quality figure.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "plan":
        return plan_only(sys.argv[2:])
    ap = argparse.ArgumentParser(prog="python scripts/bench_dedup.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2400)
    ap.add_argument("--copies", type=float, default=0.25, help="fraction of corpus A's rows repeating another row")
    ap.add_argument("--shape", default="0.6b", help="random-weight model shape: 0.6b (real cost) or tiny")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--plan-rows", type=int, default=1_000_000)
    ap.add_argument("--planning-only", default="", metavar="SIZES", help="only part 3, at these row counts")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "dedup-cpu.json")
    args = ap.parse_args(argv)
    from common.provenance import provenance
    from harness.corpora import sentences
    from workers.models.random_init import ensure_random_model

    origin = provenance("python scripts/bench_dedup.py")
    work = args.work or Path(tempfile.mkdtemp(prefix="q3b-dedup-"))
    texts, source = sentences()
    if args.planning_only:
        sizes = [int(s) for s in args.planning_only.split(",")]
        report = {"what": "planning alone with and without dedup, against the corpus's size",
                  "planning_sizes": [plan_memory(work / str(n), n, texts) for n in sizes], "cpu": cpu_name()}
        return write_report(report, origin, args, work)
    model = ensure_random_model(REPO / ".cache" / "models", "embed", args.shape)
    a_rows, b_rows, facts = make_corpora(texts, args.rows, args.copies)
    corpus_a, corpus_b = write_jsonl(work / "a.jsonl", a_rows), write_jsonl(work / "b.jsonl", b_rows)
    shard_rows = max(1, args.rows // 8)
    base = ["--model", str(model), "--local", "--dtype", args.dtype, "--shard-rows", str(shard_rows)]
    runs: dict[str, list[dict]] = {"a_no_dedup": [], "a_dedup": [], "b_full": [], "b_reuse": []}
    cosines = []
    for r in range(args.repeats):
        runs["a_no_dedup"].append(submit(corpus_a, work / f"a-nodedup-{r}", base + ["--no-dedup"]))
        runs["a_dedup"].append(submit(corpus_a, work / f"a-dedup-{r}", base))
        runs["b_full"].append(submit(corpus_b, work / f"b-full-{r}", base))
        runs["b_reuse"].append(submit(corpus_b, work / f"b-reuse-{r}", base + ["--reuse", str(work / f"a-dedup-{r}")]))
        cosines.append(worst_cosine(work / f"b-full-{r}", work / f"b-reuse-{r}"))
        for name, got in runs.items():
            print(f"repeat {r}: {name:10s} {got[-1]['wall_s']:7.1f} s  computed {got[-1]['rows_computed']:,}  "
                  f"deduplicated {got[-1]['rows_deduplicated']:,}  reused {got[-1]['rows_reused']:,}", flush=True)
    medians = {name: statistics.median(g["wall_s"] for g in got) for name, got in runs.items()}
    planning = plan_memory(work, args.plan_rows, texts)
    report = {
        "what": "rows computed and whole-process time with and without dedup, and of --reuse against a full run",
        "model": f"{args.shape} random weights", "dtype": args.dtype, "texts": source, "corpus": facts,
        "shard_rows": shard_rows, "runs": runs, "median_wall_s": medians,
        "dedup_over_no_dedup": round(medians["a_dedup"] / medians["a_no_dedup"], 3),
        "reuse_over_full": round(medians["b_reuse"] / medians["b_full"], 3),
        "reuse_worst_cosine": min(cosines), "planning": planning, "cpu": cpu_name(),
    }
    write_report(report, origin, args, work)


def write_report(report: dict, origin: dict, args, work: Path) -> None:
    from common.provenance import confirm

    report["provenance"] = confirm(origin)
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def make_corpora(texts: list[str], rows: int, copies: float, seed: int = 7) -> tuple[list, list, dict]:
    """Corpus A (rows, a `copies` share repeating another row) and B (A edited), and their facts."""
    rng = random.Random(seed)
    distinct = rows - int(rows * copies)
    pool = list(dict.fromkeys(texts))
    if len(pool) < distinct + rows // 5:
        raise SystemExit(f"only {len(pool)} distinct sentences: ask for fewer --rows")
    a_texts = pool[:distinct] + [pool[rng.randrange(distinct)] for _ in range(rows - distinct)]
    rng.shuffle(a_texts)
    a = [{"id": i, "text": t} for i, t in enumerate(a_texts)]
    b = [dict(row) for row in a]
    for row in rng.sample(b, rows // 10):
        row["text"] = row["text"] + " (revised)"
    b = [row for row in b if rng.random() >= 0.05]
    fresh = pool[distinct:distinct + rows // 20]
    b += [{"id": rows + i, "text": t} for i, t in enumerate(fresh)]
    held = {row["text"] for row in a}
    facts = {"a_rows": len(a), "a_distinct": len({r["text"] for r in a}), "b_rows": len(b),
             "b_distinct": len({r["text"] for r in b}),
             "b_distinct_not_in_a": len({r["text"] for r in b} - held)}
    return a, b, facts


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def submit(corpus: Path, out: Path, options: list[str]) -> dict:
    """One `producer submit --local` as its own process: wall time and the success marker's counts."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "producer", "submit", str(corpus), "--out", str(out), *options],
                          cwd=REPO, capture_output=True, text=True, env=dict(os.environ, QWEN3B_OUTPUT_ROOT=""))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"producer submit {corpus} exited {done.returncode}:\n{done.stderr[-3000:]}")
    marker = json.loads((out / "_SUCCESS.json").read_text())
    return {"wall_s": round(wall, 2), **{k: marker[k] for k in ("rows_out", "rows_computed", "rows_deduplicated",
                                                                 "rows_reused")}}


def worst_cosine(a: Path, b: Path) -> float:
    import numpy as np
    import pyarrow.dataset as ds

    x = ds.dataset(a / "data").to_table(columns=["id", "embedding"]).sort_by("id")
    y = ds.dataset(b / "data").to_table(columns=["id", "embedding"]).sort_by("id")
    if not x.column("id").equals(y.column("id")):
        raise SystemExit(f"{a} and {b} hold other ids")
    u, v = (np.stack(t.column("embedding").to_numpy(zero_copy_only=False)) for t in (x, y))
    return float(((u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)).min())


# --- planning alone --------------------------------------------------------------------------------------
def plan_memory(work: Path, rows: int, texts: list[str]) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "plan.parquet"
    rng = random.Random(3)
    distinct = rows - rows // 10
    column = [f"{texts[i % len(texts)]} #{i}" for i in range(distinct)]
    column += [column[rng.randrange(distinct)] for _ in range(rows - distinct)]
    rng.shuffle(column)
    pq.write_table(pa.table({"id": pa.array(range(rows), pa.int64()), "text": column}), corpus, row_group_size=65_536)
    del column
    out = {"rows": rows, "copies": rows // 10, "corpus_bytes": corpus.stat().st_size}
    for label, extra in (("no_dedup", ["--no-dedup"]), ("dedup", [])):
        out[label] = peak_of([sys.executable, str(Path(__file__).resolve()), "plan", str(corpus),
                              str(work / f"plan-{label}"), *extra])
        print(f"planning {rows:,} rows, {label}: {out[label]}", flush=True)
    return out


def peak_of(command: list[str]) -> dict:
    """Wall time and peak RSS (VmHWM, polled) of a process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-3000:]}")
    return {"wall_s": round(time.perf_counter() - started, 2), "peak_rss_mib": round(peak, 1), **json.loads(stdout)}


def plan_only(argv: list[str]) -> None:
    """`bench_dedup.py plan CORPUS OUT [--no-dedup]`: plan a job (simulated backend), print its counts."""
    from common.io.store import OutputStore
    from common.model_identity import model_ref
    from common.schemas import JobSpec
    from producer.plan import plan_job
    from workers.models.random_init import ensure_random_model

    corpus, out, dedup = argv[0], argv[1], "--no-dedup" not in argv
    model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
    spec = JobSpec(model=model_ref(str(model)), backend="simulated", dtype="fp32", shard_rows=10_000, dedup=dedup)
    plan, _ = plan_job(corpus, spec, OutputStore(out))
    print(json.dumps({"copies_found": plan.header.copies, "shards": plan.shards_total}))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
