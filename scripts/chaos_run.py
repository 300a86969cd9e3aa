"""Chaos run: a large job across several workers while a killer SIGKILLs workers and restarts Redis.

    python scripts/chaos_run.py [--rows 200000] [--workers 4] [--fault-every-s 3]

Runs the same corpus twice on one machine, each time through real worker processes and a private
redis-server: once undisturbed (the baseline), once under faults chosen at random:
  - kill-worker  SIGKILL a worker's whole process tree (a lost node), start a replacement;
  - kill-child   SIGKILL only a worker's pool child (an OOM kill): Celery requeues its shard;
  - redis        restart Redis without persistence (every queue is lost), then `producer resume`.
Then an independent checker compares the input ids with the output + reject ids and prints what a
trusted system reports: rows in / out / rejected by reason, rows lost and duplicate ids (both must
be 0), faults injected and survived by kind, recovery time p50 / max (for a killed worker: until the
shard it was running is committed by someone; for a Redis restart: until the next commit), and throughput with faults vs without. Workers use the simulated backend (real
tokenisation, batching, Parquet writing and commits; a fixed sleep stands in for the device), so
the run measures the delivery machinery, not the model. The corpus mixes in 0.5% bad rows.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow.dataset as ds  # noqa: E402

from common.io.store import OutputStore  # noqa: E402
from common.jobstate import read_state  # noqa: E402
from workers import cluster  # noqa: E402
from workers.models.random_init import ensure_random_model  # noqa: E402

STS = REPO.parent / "shared" / "data" / "sts12-test.jsonl"
BAD_ROWS = ['{"id": %d, "text": null}', '{"id": %d}', '{"id": %d, "text": ""}', '{"id": %d, "text": 7}',
            '{"id": %d, "text": "broken']


def write_corpus(path: Path, rows: int, seed: int) -> tuple[list[int], int]:
    rng = random.Random(seed)
    texts = []
    for line in STS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            pair = json.loads(line)
            texts += [pair["sentence1"], pair["sentence2"]]
    bad = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if rng.random() < 0.005:
                f.write(rng.choice(BAD_ROWS) % i + "\n")
                bad += 1
            else:
                f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
    return list(range(rows)), bad


def check(ids: list[int], out: Path) -> dict:
    data = ds.dataset(out / "data").to_table(columns=["id"]).column("id").to_pylist()
    rejects = ds.dataset(out / "rejects").to_table(columns=["id", "row", "reason"]).to_pylist() if (
        out / "rejects").is_dir() else []
    # A reject whose line could not be parsed has no id; the corpus has one row per line with
    # id = line - 1, so the checker recovers it from the line number, independently of the system.
    seen = Counter([str(i) for i in data] + [r["id"] if r["id"] is not None else str(r["row"] - 1) for r in rejects])
    expected = {str(i) for i in ids}
    return {
        "rows_in": len(ids), "rows_out": len(data), "rows_rejected": len(rejects),
        "rejected_by_reason": dict(Counter(r["reason"].split(":")[0] for r in rejects)),
        "rows_lost": len(expected - set(seen)), "duplicate_ids": sum(1 for n in seen.values() if n > 1),
        "unexpected_ids": len(set(seen) - expected),
    }


class Run:
    def __init__(self, workdir: Path, model: Path, args, label: str):
        self.workdir, self.model, self.args, self.label = workdir, model, args, label
        self.redis = cluster.RedisServer(workdir / "redis").start()
        self.env = {"QWEN3B_SIM_BATCH_S": str(args.batch_s), "QWEN3B_VISIBILITY_TIMEOUT_S": "20",
                    "QWEN3B_TASK_TIME_LIMIT_S": "15", "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "12",
                    "QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "2", "QWEN3B_RETRY_COUNTDOWN_S": "1",
                    "QWEN3B_MAX_ATTEMPTS": "10"}
        self.workers: list[cluster.Worker] = []
        self.serial = 0
        self.out = workdir / "out"

    def start_worker(self) -> cluster.Worker:
        self.serial += 1
        w = cluster.start_worker(self.redis.url, str(self.model), f"w{self.serial}", self.workdir / "logs",
                                 backend="simulated", env=self.env, threads=1)
        self.workers.append(w)
        return w

    def producer(self, *args):
        return cluster.run_cli("producer", [str(a) for a in args], self.redis.url, 600, self.env)

    def submit(self, corpus: Path):
        result = self.producer("submit", corpus, "--model", self.model, "--out", self.out, "--backend", "simulated",
                               "--dtype", "fp32", "--shard-rows", self.args.shard_rows)
        if result.returncode != 0:
            raise SystemExit(f"submit failed: {result.stderr}")

    def live(self) -> list[cluster.Worker]:
        return [w for w in self.workers if w.alive()]

    def stop(self):
        for w in self.workers:
            w.signal_all(9)
        self.redis.stop()


def run_job(run: Run, corpus: Path, chaos: bool, rng: random.Random) -> dict:
    for _ in range(run.args.workers):
        run.start_worker()
    cluster.wait_for_workers(run.redis.client(), run.workers)
    started = time.time()
    run.submit(corpus)
    store = OutputStore(run.out)
    plan = store.load_plan()
    faults: list[tuple[str, float, str | None]] = []  # (kind, when, the victim's shard)
    next_fault = time.time() + rng.uniform(0.5, 1.5) * run.args.fault_every_s
    last_progress, last_done = time.time(), -1
    while True:
        state = read_state(store, plan)
        done = len(state.commits)
        print(f"\r[{run.label}] {done}/{len(plan.shards)} shards committed, {len(faults)} faults, "
              f"{len(run.live())} workers alive   ", end="", flush=True)
        if state.finished:
            break
        now = time.time()
        if done != last_done:
            last_done, last_progress = done, now
        if chaos and now >= next_fault:
            faults.append(_fault(inject(run, rng), now))
            next_fault = now + rng.uniform(0.5, 1.5) * run.args.fault_every_s
        elif now - last_progress > 45:
            # Nothing committed for a long while: what a person would do, and it is reported.
            run.producer("resume", run.out)
            faults.append(("stall-resume", now, None))
            last_progress = now
        time.sleep(0.2)
    elapsed = time.time() - started
    print()
    state = read_state(store, plan)
    if not state.success:
        run.producer("status", run.out)  # finalises and checks
    commits = OutputStore(run.out).list_commits()
    times = sorted(c.committed_at for c in commits.values())
    recovery = {}
    for kind, at, shard in faults:
        if shard and shard in commits:
            recovery.setdefault(kind, []).append(commits[shard].committed_at - at)
        elif not shard:
            after = [t for t in times if t > at]
            if after:
                recovery.setdefault(kind, []).append(after[0] - at)
    return {"seconds": elapsed, "rows_per_s": plan.rows_total / elapsed, "faults": faults, "recovery": recovery,
            "quarantined": sorted(state.quarantined)}


def _fault(result: tuple[str, str | None], at: float) -> tuple[str, float, str | None]:
    return result[0], at, result[1]


def inject(run: Run, rng: random.Random) -> tuple[str, str | None]:
    """Inject one fault; returns its kind and the shard the victim was running (if any)."""
    kind = rng.choices(["kill-worker", "kill-child", "redis"], weights=[4, 3, 2])[0]
    live = run.live()
    if kind == "redis" or not live:
        run.redis.restart()
        run.producer("resume", run.out)  # what Redis lost is recovered from the output store
        return "redis", None
    victim = rng.choice(live)
    beat = cluster.heartbeat(run.redis.client(), victim.name) or {}
    shard = beat.get("current_shard") or None
    if kind == "kill-worker":
        victim.signal_all(9)
        victim.process.wait(10)
        run.start_worker()
    else:
        children = victim.pids()[1:]
        if not children:
            return inject(run, rng)
        for pid in children:
            os.kill(pid, 9)
    return kind, shard


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--shard-rows", type=int, default=1000)
    ap.add_argument("--batch-s", type=float, default=0.03, help="simulated device time per batch")
    ap.add_argument("--fault-every-s", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=REPO / "bench-results" / "chaos.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="q3b-chaos-"))
    model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
    corpus = root / "corpus.jsonl"
    ids, bad = write_corpus(corpus, args.rows, args.seed)
    print(f"corpus: {args.rows:,} rows ({bad} bad on purpose) in {corpus}")
    results = {}
    for label, chaos in (("baseline", False), ("chaos", True)):
        run = Run(root / label, model, args, label)
        try:
            results[label] = run_job(run, corpus, chaos, rng)
            results[label]["check"] = check(ids, run.out)
        finally:
            run.stop()
    report(results, args)


def report(results: dict, args) -> None:
    base, chaos = results["baseline"], results["chaos"]
    c = chaos["check"]
    by_kind = Counter(kind for kind, _, _ in chaos["faults"])
    all_recovery = [s for v in chaos["recovery"].values() for s in v]
    print(f"\nchaos run: {args.rows:,} rows, {args.workers} workers, simulated device {args.batch_s}s/batch, "
          f"a fault every ~{args.fault_every_s}s")
    lines = [
        ("rows in", f"{c['rows_in']:,}"), ("rows out", f"{c['rows_out']:,}"),
        ("rows rejected", f"{c['rows_rejected']:,} {c['rejected_by_reason']}"),
        ("rows lost", f"{c['rows_lost']}  (must be 0)"), ("duplicate ids", f"{c['duplicate_ids']}  (must be 0)"),
        ("quarantined shards", str(len(chaos["quarantined"]))),
        ("faults injected (all survived)" if c["rows_lost"] == 0 and c["duplicate_ids"] == 0 else "faults injected",
         ", ".join(f"{k} x{n}" for k, n in sorted(by_kind.items()))),
        ("recovery p50 / max", f"{percentile(all_recovery, 0.5):.1f}s / {max(all_recovery):.1f}s"
         if all_recovery else "n/a"),
        *[(f"  recovery {k} p50 / max", f"{percentile(v, 0.5):.1f}s / {max(v):.1f}s")
          for k, v in sorted(chaos["recovery"].items())],
        ("throughput without faults", f"{base['rows_per_s']:,.0f} rows/s ({base['seconds']:.0f}s)"),
        ("throughput with faults", f"{chaos['rows_per_s']:,.0f} rows/s ({chaos['seconds']:.0f}s), "
                                   f"{chaos['rows_per_s'] / base['rows_per_s']:.2f}x"),
        ("baseline check", f"lost {base['check']['rows_lost']}, duplicates {base['check']['duplicate_ids']}"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "baseline": {k: v for k, v in base.items() if k != "faults"},
               "chaos": {**{k: v for k, v in chaos.items() if k != "faults"}, "faults_by_kind": dict(by_kind)}}
    args.json.write_text(json.dumps(summary, indent=1))
    print(f"figures saved to {args.json}")
    if c["rows_lost"] or c["duplicate_ids"] or c["unexpected_ids"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
