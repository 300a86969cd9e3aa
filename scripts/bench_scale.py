"""What the control plane costs as a job grows: 1e3, 1e4, 1e5 (and 5e5) shards, simulated engine.

    python scripts/bench_scale.py [--sizes 1000,10000,100000] [--rows-per-shard 10] [--shards-run 200]
                                  [--s3] [--out bench-results/scale-cpu.json]

For each size, a Parquet corpus of size x rows-per-shard rows (a tenth of them copies of a row of another
shard, so deduplication costs what it does), a private redis-server, and a job
planned into `size` shards (the simulated backend, no device time, so what is measured is the
control plane):
  submit         `producer submit` as a process: wall time, peak RSS, the Redis memory it added
  status         a cold `producer status --json` as a process: wall time, peak RSS
  start          the first shards delivered in this process as a worker delivers a message
                 (workers/runner.handle_message: admit, take, run, commit, announce, top up): the
                 per-commit overhead is its time minus run_shard's own (median); a reconciler pass
                 (median of 5); then a real worker and a follower (`producer wait`) over the next
                 shards, for their resident memory
  end            the shards before the last ones committed as a worker commits them (data file,
                 commit record, the manifest folding them), then the same at 99% done, the real
                 worker and follower finishing the job, and the one-time end-of-job check the
                 last commit triggers (its time, from the success marker)
--s3 also plans each size into a bucket on a local S3 server (moto) and counts the requests of
the submit and of a cold status. --before PATH runs the same submit and status with the code of
another checkout (a `git worktree` of an older revision), beside this one's, in the same run. Every figure is printed per size, with its growth from the
smallest to the largest size and the fitted exponent (figure ~ size^b). The goal: every figure
flat (at most 1.5x from 1e3 to 1e5 shards) except the submit's time and the end-of-job check.
"""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAT_GOAL = 1.5  # the figure at 1e5 shards over the figure at 1e3, for the figures that must be flat
FLAT_UP_TO = 100_000  # the goal's sizes; larger ones are printed, and fitted, beside it
LINEAR_OK = ("submit_s", "end_check_s")  # these may grow with the job
COPY_FRACTION = 0.1  # of the corpus's rows: copies of a row of another shard


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/bench_scale.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="shards per job, comma-separated")
    ap.add_argument("--plan-only-sizes", default="",
                    help="larger sizes measured for submit, status and Redis only (no workers): 500000")
    ap.add_argument("--rows-per-shard", type=int, default=10)
    ap.add_argument("--shards-run", type=int, default=200, help="shards the worker runs at the start and at the end")
    ap.add_argument("--s3", action="store_true", help="also count S3 requests of submit and status (moto)")
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout of older code: its submit and status are measured too, for comparison")
    ap.add_argument("--work", type=Path, default=None, help="where corpora and outputs go (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "scale-cpu.json")
    args = ap.parse_args(argv)
    from common.provenance import confirm, git_revision, provenance
    from workers.models.random_init import ensure_random_model

    origin = provenance("python scripts/bench_scale.py")
    model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
    work = args.work or Path(tempfile.mkdtemp(prefix="q3b-scale-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    plan_only = [int(s) for s in args.plan_only_sizes.split(",") if s]
    results = []
    for size in sizes + plan_only:
        print(f"--- {size:,} shards ({size * args.rows_per_shard:,} rows)", flush=True)
        figures = measure(size, args, model, work / f"n{size}", workers=size not in plan_only)
        if args.before and size not in plan_only:
            figures.update(measure_before(size, args, model, work / f"before-{size}"))
        if args.s3:
            figures.update(measure_s3(size, args, model, work / f"s3-{size}"))
        results.append(figures)
        print(json.dumps(figures, indent=1), flush=True)
    growth = fit_growth(results)
    report = {"what": "control-plane cost against the number of shards (simulated engine)",
              "rows_per_shard": args.rows_per_shard, "copy_fraction": COPY_FRACTION, "shards_run": args.shards_run,
              "sizes": results,
              "growth": growth, "flat_goal": FLAT_GOAL, "linear_ok": list(LINEAR_OK)}
    if args.before:
        report["before_revision"] = git_revision(args.before)[0]
    if args.s3:
        report["s3_job"] = measure_s3_job(model, work / "s3-job")
        print(json.dumps(report["s3_job"], indent=1), flush=True)
    report["provenance"] = confirm(origin)
    print_table(results, growth)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


# --- one size ----------------------------------------------------------------------------------------------
def measure(size: int, args, model: Path, work: Path, workers: bool = True) -> dict:
    from harness.cluster import RedisServer

    work.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(work / "corpus.parquet", size * args.rows_per_shard)
    redis = RedisServer(work / "redis").start()
    out = work / "out"
    env = {"QWEN3B_BROKER_URL": redis.url, "QWEN3B_OUTPUT_ROOT": str(work), "QWEN3B_INPUT_ROOTS": str(work),
           "QWEN3B_SIM_BATCH_S": "0", "QWEN3B_RECONCILE_INTERVAL_S": "10"}
    figures = {"shards": size, "rows": size * args.rows_per_shard}
    k = args.shards_run
    try:
        before = redis_memory(redis)
        run = timed_cli(["producer", "submit", str(corpus), "--model", str(model), "--out", str(out), "--backend",
                         "simulated", "--dtype", "fp32", "--shard-rows", str(args.rows_per_shard)], env)
        figures.update(submit_s=run["wall_s"], submit_rss_mib=run["rss_mib"],
                       submit_redis_mib=(redis_memory(redis) - before) / 2**20)
        run = timed_cli(["producer", "status", str(out), "--json"], env)
        figures.update(status_s=run["wall_s"], status_rss_mib=run["rss_mib"])
        figures["start_pass_ms"] = reconcile_pass_ms(redis, out)
        if not workers:
            return figures
        figures["start_commit_overhead_ms"] = commit_overhead_ms(range(0, k), model, out, redis, env)
        figures.update(prefixed("start", run_workers(k, model, out, env, work / "start", redis)))
        prefill(out, redis, size - 2 * k, work)
        figures["end_pass_ms"] = reconcile_pass_ms(redis, out)
        figures["end_commit_overhead_ms"] = commit_overhead_ms(range(size - 2 * k, size - k), model, out, redis, env)
        figures.update(prefixed("end", run_workers(k, model, out, env, work / "end", redis, until_done=True)))
    finally:
        redis.stop()
    return figures


def prefixed(prefix: str, figures: dict) -> dict:
    return {f"{prefix}_{k}" if k != "end_check_s" else k: v for k, v in figures.items()}


def write_corpus(path: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        ids = pa.array(range(rows), pa.int64())
        # every tenth row repeats the text of a row far away (another shard): dedup's costs are measured too
        every = round(1 / COPY_FRACTION)
        # a copy's text is that of row (i * 7919 + 1) % rows, which ends in 1: never itself a copy
        texts = pa.array([f"passage {i if i % every else (i * 7919 + 1) % rows} of a corpus planned into many small "
                          "shards" for i in range(rows)])
        pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=65536)
    return path


def measure_before(size: int, args, model: Path, work: Path) -> dict:
    """Submit and a cold status with the code of another checkout (same corpus, a fresh Redis)."""
    from harness.cluster import RedisServer

    work.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(work.parent / f"n{size}" / "corpus.parquet", size * args.rows_per_shard)
    redis = RedisServer(work / "redis").start()
    env = {"QWEN3B_BROKER_URL": redis.url, "QWEN3B_OUTPUT_ROOT": str(work.parent), "QWEN3B_INPUT_ROOTS": str(work.parent)}
    try:
        before = redis_memory(redis)
        run = timed_cli(["producer", "submit", str(corpus), "--model", str(model), "--out", str(work / "out"),
                         "--backend", "simulated", "--dtype", "fp32", "--shard-rows", str(args.rows_per_shard)],
                        env, cwd=args.before)
        figures = {"before_submit_s": run["wall_s"], "before_submit_rss_mib": run["rss_mib"],
                   "before_submit_redis_mib": (redis_memory(redis) - before) / 2**20}
        run = timed_cli(["producer", "status", str(work / "out"), "--json"], env, cwd=args.before)
        figures.update(before_status_s=run["wall_s"], before_status_rss_mib=run["rss_mib"])
    finally:
        redis.stop()
    return figures


def timed_cli(args: list[str], env: dict, cwd: Path = REPO) -> dict:
    """Wall time and peak RSS of one of our commands, as its own process. The peak is its VmHWM,
    polled (a child's rusage would count the pages of this process it was forked from)."""
    from harness.cluster import base_env

    merged = base_env(env["QWEN3B_BROKER_URL"], env)
    if cwd != REPO:  # another checkout's code first on the path
        merged["PYTHONPATH"] = os.pathsep.join([str(cwd.resolve()), merged["PYTHONPATH"]])
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", *args], env=merged, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, proc_status_mib(process.pid, "VmHWM"))
        time.sleep(0.02)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} exited {process.returncode}:\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 3), "rss_mib": round(peak, 1)}


def redis_memory(redis) -> int:
    return int(redis.client().info("memory")["used_memory"])


def run_workers(shards: int, model: Path, out: Path, env: dict, logdir: Path, redis, until_done: bool = False) -> dict:
    """One simulated worker and a follower over `shards` shards (or until the job is done)."""
    from common import keys
    from common.io.plans import load_plan
    from common.io.store import OutputStore
    from harness import cluster

    plan = load_plan(OutputStore(out))
    client = redis.client()
    done_before = client.bitcount(keys.job_done(plan.job_id))
    worker = cluster.start_worker(redis.url, str(model), "scale-w0", logdir, backend="simulated", env=env)
    follower = subprocess.Popen([sys.executable, "-m", "producer", "wait", str(out)], cwd=REPO,
                                env=cluster.base_env(redis.url, env), stdout=subprocess.DEVNULL,
                                stderr=open(logdir / "follower.log", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        peak = {"worker": 0.0, "follower": 0.0}
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log()[-3000:]}")
            done = (OutputStore(out).load_success() is not None) if until_done else \
                client.bitcount(keys.job_done(plan.job_id)) - done_before >= shards
            for name, pids in (("worker", worker.pids()[1:]), ("follower", [follower.pid])):
                peak[name] = max([peak[name], *(proc_status_mib(pid, "VmRSS") for pid in pids)])
            if done:
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"the worker did not get through {shards} shards:\n{worker.log()[-3000:]}")
    finally:
        worker.stop(timeout_s=10)
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(10)
        except subprocess.TimeoutExpired:
            follower.kill()
    figures = {"worker_rss_mib": round(peak["worker"], 1), "follower_rss_mib": round(peak["follower"], 1)}
    if until_done:
        figures["end_check_s"] = OutputStore(out).load_success().check_seconds
    return figures


def proc_status_mib(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def commit_overhead_ms(ordinals, model: Path, out: Path, redis, env: dict) -> float:
    """These shards delivered in this process as a worker delivers each message (the whole of
    workers/runner.handle_message: admit, take, run, commit, announce, top up), each timed, and
    run_shard within it timed too: the median of the differences is what the control plane adds to
    a shard."""
    from celery import Celery

    import workers.runner as runner
    from common import dispatch
    from common.dispatch import shard_message
    from common.io.plans import load_plan
    from common.io.store import OutputStore
    from common.settings import load_settings
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    store = OutputStore(out)
    plan = load_plan(store)
    os.environ["QWEN3B_SIM_BATCH_S"] = "0"
    engine = create_engine(EngineSpec(model=str(model), backend="simulated", dtype="fp32"))
    client = redis.client()
    ctx = runner.WorkerContext(name="bench", engine=engine, settings=load_settings(env), redis=client,
                               description={"queue": plan.queue}, output_root=env["QWEN3B_OUTPUT_ROOT"],
                               input_roots=(env["QWEN3B_INPUT_ROOTS"],))
    ctx.publisher = dispatch.Publisher(Celery(broker=redis.url), client)
    inner, overheads = [], []
    run_shard = runner.run_shard

    def timed_run_shard(*a, **kw):
        started = time.perf_counter()
        try:
            return run_shard(*a, **kw)
        finally:
            inner.append(time.perf_counter() - started)

    runner.run_shard = timed_run_shard
    try:
        for ordinal in ordinals:
            message = shard_message(plan, store.url, plan.shard_at(ordinal)).model_dump()
            started = time.perf_counter()
            outcome = runner.handle_message(ctx, message)
            total = time.perf_counter() - started
            if outcome != "committed":
                raise RuntimeError(f"shard #{ordinal}: {outcome}")
            overheads.append(total - inner[-1])
    finally:
        runner.run_shard = run_shard
    return round(1000 * statistics.median(overheads), 3)


def reconcile_pass_ms(redis, out: Path) -> float:
    """A reconciler pass over the job, as a worker's thread runs it (lock, fold, orphans, top-up),
    in this process: the median of 5."""
    from celery import Celery

    from common import dispatch
    from common.io.plans import load_plan
    from common.io.store import OutputStore
    from common.reconcile import reconcile_job

    store = OutputStore(out)
    plan = load_plan(store)
    app = Celery(broker=redis.url)
    publisher = dispatch.Publisher(app, redis.client())
    times, known = [], None
    for _ in range(5):
        started = time.perf_counter()
        outcome = reconcile_job(redis.client(), publisher, store, plan, lock_s=10, known=known)
        times.append(1000 * (time.perf_counter() - started))
        known = outcome.manifest
    return round(statistics.median(times), 2)


def prefill(out: Path, redis, upto: int, work: Path) -> None:
    """Every shard below `upto` committed, as a worker commits it: its data file (the rows' real ids),
    its commit record, the manifest that folds them, the done bits in Redis, and the window's cursor
    there. What a job that got this far would hold, written directly so that the end of a 1e5-shard
    job can be measured without running 1e5 shards first."""
    import numpy as np
    import pyarrow.parquet as pq

    from common import keys, window
    from common.io import output
    from common.io.manifest import load_manifest, save_manifest
    from common.io.plans import load_plan
    from common.io.store import OutputStore
    from common.schemas import CommitRecord
    from harness.outputs import commit_records

    store = OutputStore(out)
    plan = load_plan(store)
    have = commit_records(store)
    schema = output.result_schema("embed", "int64", 64, "float32")
    manifest = load_manifest(store, plan.shards_total)
    started = time.perf_counter()
    for shard in plan.iter_shards():
        if shard.ordinal >= upto:
            break
        record = have.get(shard.shard_id)
        if record is None:
            ids = list(range(shard.row_start, shard.row_end))
            table = output.result_table(schema, ids, np.zeros((len(ids), 64), "float32"), np.ones(len(ids), "int32"),
                                        np.zeros(len(ids), bool), bytes(16 * len(ids)))
            path = out / store.data_key(shard.shard_id)
            path.parent.mkdir(exist_ok=True)
            pq.write_table(table, path)
            record = CommitRecord(shard_id=shard.shard_id, attempt="prefill", rows_in=shard.rows,
                                  rows_out=shard.rows, rows_rejected=0, tokens=10 * shard.rows,
                                  data_file=store.data_key(shard.shard_id), reject_file=None, data_sha256="",
                                  data_bytes=path.stat().st_size, worker="prefill", seconds=0.0,
                                  committed_at=time.time(), simulated=True, random_weights=True)
            store.create_if_absent(store.commit_key(shard.shard_id), record.model_dump_json().encode())
        manifest.add_commit(shard.ordinal, record, shard.rows)
    assert save_manifest(store, manifest)
    client = redis.client()
    client.delete(keys.job_cursor(plan.job_id), keys.job_queued(plan.job_id), keys.job_log(plan.job_id))
    window.open_window(client, plan, manifest)
    client.set(keys.job_cursor(plan.job_id), upto)
    for name in keys.queue_lists(plan.queue):
        client.delete(name)
    print(f"prefilled {upto:,} shards in {time.perf_counter() - started:.0f}s", flush=True)


# --- S3 request counts ---------------------------------------------------------------------------------------
def measure_s3(size: int, args, model: Path, work: Path) -> dict:
    from harness.cluster import RedisServer
    from harness.s3 import S3Proxy, S3Server

    work.mkdir(parents=True, exist_ok=True)
    server = S3Server(work / "moto").start()
    proxy = S3Proxy(server.port)
    redis = RedisServer(work / "redis").start()
    try:
        bucket = server.bucket()
        corpus = write_corpus(work.parent / f"n{size}" / "corpus.parquet", size * args.rows_per_shard)
        server.client().upload_file(str(corpus), bucket, "corpus/corpus.parquet")
        env = {**server.env(proxy.endpoint), "QWEN3B_BROKER_URL": redis.url, "QWEN3B_OUTPUT_ROOT": f"s3://{bucket}/",
               "QWEN3B_INPUT_ROOTS": f"s3://{bucket}/"}
        out = f"s3://{bucket}/out"
        proxy.take()
        timed_cli(["producer", "submit", f"s3://{bucket}/corpus/", "--model", str(model), "--out", out, "--backend",
                   "simulated", "--dtype", "fp32", "--shard-rows", str(args.rows_per_shard)], env)
        submit = proxy.take()
        timed_cli(["producer", "status", out, "--json"], env)
        status = proxy.take()
    finally:
        redis.stop()
        proxy.stop()
        server.stop()
    return {"s3_submit_requests": sum(submit.values()), "s3_status_requests": sum(status.values()),
            "s3_status_by_kind": dict(status)}


def measure_s3_job(model: Path, work: Path, shards: int = 400, workers: int = 2) -> dict:
    """A whole job in a bucket: 400 shards through 2 simulated workers, every S3 request counted
    (planning, the shards, every reconciler pass, the follower, the end-of-job check), and then a cold
    status of the finished job."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness import cluster
    from harness.s3 import S3Proxy, S3Server

    work.mkdir(parents=True, exist_ok=True)
    server = S3Server(work / "moto").start()
    proxy = S3Proxy(server.port, keep_paths=True)
    redis = cluster.RedisServer(work / "redis").start()
    started = []
    try:
        bucket = server.bucket()
        ids = list(range(shards * 5))
        every = round(1 / COPY_FRACTION)  # copies of a row of another shard, as in the scaled corpora
        pq.write_table(pa.table({"id": ids, "text": [f"sentence {i if i % every else (i * 7919 + 1) % len(ids)} of "
                                                     "the corpus" for i in ids]}), work / "c.parquet", row_group_size=500)
        server.client().upload_file(str(work / "c.parquet"), bucket, "corpus/c.parquet")
        env = {**server.env(proxy.endpoint), "QWEN3B_OUTPUT_ROOT": f"s3://{bucket}/",
               "QWEN3B_INPUT_ROOTS": f"s3://{bucket}/", "QWEN3B_SIM_BATCH_S": "0"}
        started = [cluster.start_worker(redis.url, str(model), f"s3-w{i}", work / "logs", backend="simulated",
                                        env=env) for i in range(workers)]
        cluster.wait_for_workers(redis.client(), started)
        proxy.take()
        out = f"s3://{bucket}/emb"
        began = time.perf_counter()
        run = cluster.run_cli("producer", ["submit", f"s3://{bucket}/corpus/", "--model", str(model), "--out", out,
                                           "--backend", "simulated", "--dtype", "fp32", "--shard-rows", "5", "--wait"],
                              redis.url, env=env)
        wall = time.perf_counter() - began
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-3000:])
        job = proxy.take()
        (work / "requests.txt").write_text("".join(f"{kind} {path}\n" for kind, path in proxy.paths))
        cluster.run_cli("producer", ["status", out, "--json"], redis.url, env=env)
        status = proxy.take()
    finally:
        for w in started:
            w.stop(timeout_s=10)
        redis.stop()
        proxy.stop()
        server.stop()
    return {"shards": shards, "workers": workers, "wall_s": round(wall, 1), "requests": sum(job.values()),
            "requests_per_shard": round(sum(job.values()) / shards, 2), "by_kind": dict(job),
            "status_requests": sum(status.values()), "status_by_kind": dict(status),
            "goal_per_shard": 10, "goal_status": 40}


# --- the report -------------------------------------------------------------------------------------------------
def fit_growth(results: list[dict]) -> dict:
    """Per figure: its value at the largest size up to FLAT_UP_TO over the smallest's, and the
    least-squares exponent b of value ~ shards^b over every size measured."""
    growth = {}
    names = list(dict.fromkeys(k for r in results for k, v in r.items()
                               if isinstance(v, (int, float)) and k not in ("shards", "rows")))
    for name in names:
        points = [(r["shards"], r.get(name)) for r in results if isinstance(r.get(name), (int, float)) and r[name] > 0]
        if len(points) < 2:
            continue
        xs, ys = [math.log(p[0]) for p in points], [math.log(p[1]) for p in points]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        within = [p for p in points if p[0] <= FLAT_UP_TO] or points
        ratio = within[-1][1] / within[0][1]
        growth[name] = {"ratio": round(ratio, 3), "exponent": round(slope, 3),
                        "flat": ratio <= FLAT_GOAL, "may_grow": name in LINEAR_OK}
    return growth


def print_table(results: list[dict], growth: dict) -> None:
    sizes = [r["shards"] for r in results]
    print("\n" + f"{'figure':28}" + "".join(f"{s:>12,}" for s in sizes) + f"{'growth':>10}{'size^b':>8}  verdict")
    for name, g in growth.items():
        cells = "".join(f"{r.get(name, float('nan')):>12.4g}" if isinstance(r.get(name), (int, float)) else f"{'-':>12}"
                        for r in results)
        verdict = "may grow" if g["may_grow"] else ("flat" if g["flat"] else "GROWS")
        print(f"{name:28}{cells}{g['ratio']:>9.2f}x{g['exponent']:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
