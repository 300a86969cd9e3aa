"""Pipeline benchmark (issue 3): what the job machinery costs on top of the engine, how workers
scale, and whether memory stays flat as the corpus grows. One run, one corpus, one model.

    python -m workers.bench.pipeline            # ~15 minutes on a 2-core machine
    python -m workers.bench.pipeline --phases b --workers 1,2  # a quick look at one phase

(a) throughput on the torch engine (--model, the tiny random-weight model by default; real sentences). The corpus
    is sized by the first in-process run: it embeds until --target-s (60s) have passed, at least
    --min-rows, and the other modes get exactly the rows it did (--rows N fixes the size instead),
    so fixed costs stay small whether the machine is idle or busy.
    in-process   engine.embed over the corpus in ENGINE_CHUNK_ROWS chunks, texts already in
                 memory, model loaded beforehand, each run in a fresh process; run first and after
                 every queued job, so drift of a shared machine hits both modes alike (fresh
                 processes of one engine can differ by 10% or more there; the reference is their mean)
    --local      `producer submit --local`, timed end to end: process start, torch import,
                 model load, planning, every shard's read/compute/write/commit, the job check
    queued       --rounds (3) jobs by `producer submit --wait` to ONE real worker (`workers start`,
                 started, ready and warmed up by a tiny job before the first), each timed from
                 submit to finished; plus the steady-state rate from the commit records (first
                 shard's start to last commit), which excludes worker start-up, planning and the
                 progress poll. The rounds combine over their summed times
    goals: queued >= 90% of in-process end to end (issue 3), >= 97% steady (issue 15). Rows per
    CPU-second (the engine process; the whole producer; the worker plus the producer) are shown
    too: on a shared machine they move far less than wall-clock rates, so they tell overhead from noise.
(b) worker scaling on the SIMULATED engine (workers/engines/simulated.py): each forward batch
    sleeps a fixed device time (QWEN3B_SIM_BATCH_S), so N workers do not compete for the cores
    the way N torch workers would. Rows/s for 1, 2, 4, 8 workers over the same corpus, from the
    commit records, and efficiency = rate_N / (N * rate_1); goal >= 90% at 8, steady and end to end (issue 15).
    Each count runs --scale-rounds (3) measured jobs and the median job stands for it: at 8 workers a
    job lasts about 9 s, of which the producer's start (imports, planning) takes about half a second, so
    one job's end-to-end figure moves by several points with the machine's other tenants.
    Defaults, and why: STS12 sentences all fall in the 64-token bucket, so a forward batch holds
    16384 / 64 = 256 rows; a 256-row shard is exactly one batch = 2.0s of device time at 2.0s per
    batch. The pipeline's own work per shard (read, parse, tokenise, hash, write, commit, Celery)
    is about 0.06 CPU-s here (~200 us per row) plus ~0.02s between tasks: 2-4% of a shard's time,
    so 8 busy workers need about a quarter of one core, and when the other tenants of a shared
    machine stretch that CPU work several times over (they do: load averages of 3-5 on 2 cores),
    a shard still grows by only a few percent. 32 shards (8,192 rows) give every worker the same 4
    at 8 workers, and the 1-worker run takes about 70s. Every worker count gets a warm-up job
    first (see warm_up_workers).
(d) one worker's memory as it runs a job of 200 small shards (the tiny model unless --worker-memory-model),
    per backend and dtype (torch fp32 and bf16, onnx fp32 and int8 by default; the onnx artifacts are
    compiled first): resident memory and its high-water mark from the worker's heartbeat after each
    shard (workers/memory.py; and the CUDA peak allocation on a GPU). Goal: nothing grows with the
    number of shards run (the end within 5% of the first tenth).
(c) peak memory while submitting (planning + enqueueing, no workers) a 100,000-row and a
    1,000,000-row corpus: the producer process's RSS high-water mark (wait4's ru_maxrss, VmHWM
    polled for the live display) and the private redis-server's used_memory_peak.

Everything runs against a private redis-server on a free port (harness.cluster), never the
shared one on 6379, and in a temporary folder that is deleted afterwards (--keep keeps it).
Results: a table on stdout and JSON (default bench-results/pipeline-cpu.json).
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.provenance import confirm, provenance
from harness import cluster, corpora
from workers.bench.errors import BenchError
from workers.bench.options import parse_ints

REPO_ROOT = cluster.REPO_ROOT
DEFAULT_MODEL = REPO_ROOT / ".cache" / "models" / "qwen3-embed-tiny-random-s1234"
PROGRESS_EVERY_S = 5.0
THROUGHPUT_GOAL = 0.90  # queued end to end vs in-process (issue 3)
STEADY_GOAL = 0.97  # queued steady state vs in-process (issue 15)
SCALING_GOAL = 0.90
FLAT_GOAL = 1.10  # "flat": a 10x larger corpus raises the peak by less than 10%
_T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def load_text() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


# --- corpora ----------------------------------------------------------------------------------------
def sentences() -> list[str]:
    """STS12's sentences where the file lies beside the checkout, else the standard library's docstrings."""
    return corpora.sentences()[0]


def write_corpus(path: Path, rows: int) -> Path:
    """{"id": n, "text": ...} rows cycling through real sentences (harness/corpora.py)."""
    encoded = [json.dumps(t, ensure_ascii=False) for t in sentences()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, rows, 100_000):
            f.write("".join(f'{{"id": {i}, "text": {encoded[i % len(encoded)]}}}\n'
                            for i in range(start, min(rows, start + 100_000))))
    return path


# --- processes --------------------------------------------------------------------------------------
def proc_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


# A tiny parent for each measured command: its own wait4 gives the command's CPU time and RSS
# high-water mark. Measured from this (large) process instead, ru_maxrss would report this
# process's size: Linux carries the pre-exec image's high-water mark across execve.
_LAUNCHER = """import json, os, sys, time
started, started_at = time.monotonic(), time.time()
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
ended, ended_at = time.monotonic(), time.time()
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime, "started": started,
               "ended": ended, "started_at": started_at, "ended_at": ended_at}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""
POLL_S = 0.05  # how often the launcher's exit is checked and VmHWM read (a cross-check of wait4's peak)


def child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(children[0]) if children else None


def run_monitored(args: list[str], env: dict, log_path: Path, tick, timeout_s: float = 900) -> dict:
    """Run `python ARGS` under the launcher, calling tick(elapsed, pid) every PROGRESS_EVERY_S.
    Returns the exit code, the wall time from the command's fork to its exit (the launcher's own
    start is not the command's), its CPU seconds and its peak RSS (wait4's ru_maxrss in the
    launcher; VmHWM polled as a cross-check)."""
    usage_path = log_path.with_suffix(".usage.json")
    with open(log_path, "ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(usage_path), *args], env=env, cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        next_tick, polled_hwm, pid = started + PROGRESS_EVERY_S, 0, None
        while True:
            try:
                proc.wait(POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.perf_counter()
            pid = pid or child_of(proc.pid)
            if pid:
                polled_hwm = max(polled_hwm, proc_kib(pid, "VmHWM"))
            if now - started > timeout_s:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{' '.join(args)} ran over {timeout_s}s; see {log_path}")
            if now >= next_tick and pid:
                tick(now - started, pid)
                next_tick = now + PROGRESS_EVERY_S
        wall = time.perf_counter() - started
    usage = json.loads(usage_path.read_text()) if usage_path.exists() else {"maxrss_kib": 0, "cpu_s": None}
    if "ended" in usage:
        wall = usage["ended"] - usage["started"]
    return {"rc": proc.returncode, "wall_s": wall, "started_at": usage.get("started_at"),
            "ended_at": usage.get("ended_at"), "cpu_s": usage["cpu_s"], "peak_rss_mib": usage["maxrss_kib"] / 1024,
            "polled_vmhwm_mib": polled_hwm / 1024, "load1_at_end": os.getloadavg()[0], "log": str(log_path)}


def job_ticker(label: str, out: Path, total_rows: int):
    def tick(elapsed: float, _pid: int) -> None:
        commits = list_commits(out)
        rows = sum(c["rows_in"] for c in commits)
        say(f"  {label}: {elapsed:5.0f}s, {len(commits)} shards / {rows:,} of {total_rows:,} rows committed"
            + (f", {rows / elapsed:,.0f} rows/s so far" if rows else "") + f" (load {load_text()})")
    return tick


def list_commits(out: Path) -> list[dict]:
    folder = out / "_commits"
    if not folder.is_dir():
        return []
    records = []
    for f in folder.glob("*.json"):
        if not f.name.startswith("."):
            try:
                records.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                pass  # being written
    return records


def commit_window(out: Path) -> dict:
    """The steady-state rate: rows over (last commit - first shard's start), from the commit records."""
    commits = list_commits(out)
    start = min(c["committed_at"] - c["seconds"] for c in commits)
    end = max(c["committed_at"] for c in commits)
    rows = sum(c["rows_in"] for c in commits)
    return {"rows": rows, "shards": len(commits), "window_s": end - start, "rows_per_s": rows / (end - start),
            "first_start_at": start, "last_commit_at": end,
            "shard_s_median": statistics.median(c["seconds"] for c in commits),
            "sha256": {c["shard_id"]: c["data_sha256"] for c in commits}}


def planning_seconds(log_path: Path) -> float | None:
    match = re.search(r"planned job .*\((\d+(?:\.\d+)?)s\)", Path(log_path).read_text(errors="replace"))
    return float(match.group(1)) if match else None


def job_status(out: Path) -> str:
    success = out / "_SUCCESS.json"
    return json.loads(success.read_text())["status"] if success.exists() else "not finished"


def submit_args(corpus: Path, model: Path, out: Path, name: str, backend: str, dtype: str, shard_rows: int,
                *extra: str) -> list[str]:
    return ["-m", "producer", "submit", str(corpus), "--model", str(model), "--out", str(out), "--name", name,
            "--backend", backend, "--dtype", dtype, "--shard-rows", str(shard_rows), *extra]


# Bench workers shut down at once when idle: the default soft-shutdown timeout (10s) is waited
# out even by an idle worker, on SIGTERM and SIGQUIT alike, which would only make the run longer.
WORKER_ENV = {"QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "0"}


def stop_workers(workers: list[cluster.Worker], timeout_s: float = 30) -> None:
    """SIGTERM to all at once, SIGKILL what lingers."""
    for w in workers:
        if w.alive():
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for w in workers:
        try:
            w.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.signal_all(signal.SIGKILL)
            w.process.wait(10)


def start_ready_workers(url: str, model: Path, names: list[str], logdir: Path, backend: str, dtype: str,
                        env: dict | None = None, device: str = "cpu") -> tuple[list[cluster.Worker], float]:
    started = time.perf_counter()
    workers = [cluster.start_worker(url, str(model), name, logdir, dtype=dtype, backend=backend,
                                    env=dict(WORKER_ENV, **(env or {})), device=device)
               for name in names]
    try:
        cluster.wait_for_workers(redis_client(url), workers, timeout_s=300)
    except Exception:
        stop_workers(workers)
        raise
    return workers, time.perf_counter() - started


def warm_up_workers(url: str, model: Path, workers: list[cluster.Worker], backend: str, dtype: str,
                    work: Path, label: str, env: dict | None = None) -> dict:
    """A tiny job of two 16-row shards per worker before the measured one. A fresh worker's first
    shard pays one-off costs (lazy imports, first calls into pyarrow and the tokenizer) that a
    long-lived worker pays once in its life, not once per job; measured on cold workers they would
    count as throughput. Returns what the first shards cost."""
    corpus = write_corpus(work / f"corpus-warmup-{label}.jsonl", 2 * 16 * len(workers))
    out = work / f"out-warmup-{label}"
    run = run_monitored(submit_args(corpus, model, out, f"bench-warmup-{label}", backend, dtype, 16, "--wait"),
                        cluster.base_env(url, env), work / f"warmup-{label}.log", lambda *_: None)
    if run["rc"] != 0:
        raise RuntimeError(f"the warm-up job failed (exit {run['rc']}); see {run['log']}")
    commits = list_commits(out)
    per_worker = {w.name: sum(1 for c in commits if c["worker"] == w.name) for w in workers}
    shard_s = sorted(c["seconds"] for c in commits)
    result = {"shards_per_worker": sorted(per_worker.values()), "cold_workers": [n for n, k in per_worker.items() if not k],
              "slowest_shard_s": shard_s[-1], "median_shard_s": statistics.median(shard_s), "wall_s": run["wall_s"]}
    say(f"  warm-up job: shards per worker {result['shards_per_worker']}; slowest (first) shard "
        f"{result['slowest_shard_s']:.2f}s vs median {result['median_shard_s']:.2f}s")
    return result


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2)


def worker_cpu(workers: list[cluster.Worker]) -> float:
    return cpu_seconds([pid for w in workers for pid in w.pids()])


# --- (a) in-process, --local, queued ----------------------------------------------------------------
def inprocess_child(model: str, corpus: str, dtype: str, result: str, stop_after_s: str = "0",
                    min_rows: str = "0", device: str = "cpu") -> None:
    """Runs in its own process (so torch's threads and memory are gone before the next mode).
    stop_after_s > 0: stop at the first chunk boundary past that time, once min_rows are done."""
    from common import defaults
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    started = time.perf_counter()
    engine = create_engine(EngineSpec(model=model, dtype=dtype, device=device))
    engine.embed(["warm up"])
    load_s = time.perf_counter() - started
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    chunk = defaults.ENGINE_CHUNK_ROWS
    started, last, cpu0 = time.perf_counter(), time.perf_counter(), time.process_time()
    tokens, done, stop_after_s, min_rows = 0, 0, float(stop_after_s), int(min_rows)
    for start in range(0, len(texts), chunk):
        tokens += int(engine.embed(texts[start:start + chunk]).n_tokens.sum())
        done = min(len(texts), start + chunk)
        if stop_after_s and done >= min_rows and time.perf_counter() - started >= stop_after_s:
            break
        if time.perf_counter() - last >= PROGRESS_EVERY_S:
            last = time.perf_counter()
            say(f"  in-process: {last - started:5.0f}s, {done:,} of {len(texts):,} rows, "
                f"{done / (last - started):,.0f} rows/s (load {load_text()})")
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu0
    Path(result).write_text(json.dumps({"rows": done, "tokens": tokens, "seconds": seconds, "cpu_s": cpu_s,
                                        "rows_per_s": done / seconds, "load_s": load_s,
                                        "torch_threads": __import__("torch").get_num_threads()}))


def run_inprocess(model: Path, corpus: Path, dtype: str, work: Path, label: str, stop_after_s: float = 0,
                  min_rows: int = 0, device: str = "cpu") -> dict:
    say(f"(a) in-process engine ({label}): loading the torch engine, then engine.embed over {corpus.name}"
        + (f" for about {stop_after_s:.0f}s (sizes the corpus of the other modes)" if stop_after_s else ""))
    result = work / f"inprocess-{label}.json"
    env = cluster.base_env("redis://unused")
    done = subprocess.run([sys.executable, "-m", "workers.bench.pipeline", "--child-inprocess",
                           str(model), str(corpus), dtype, str(result), str(stop_after_s), str(min_rows), device],
                          env=env, cwd=REPO_ROOT)
    if done.returncode:
        raise RuntimeError(f"the in-process run failed (exit {done.returncode})")
    out = json.loads(result.read_text())
    out["load1_at_end"] = os.getloadavg()[0]
    say(f"  in-process ({label}): {out['rows']:,} rows in {out['seconds']:.1f}s = {out['rows_per_s']:,.0f} rows/s "
        f"({out['torch_threads']} torch threads; model load {out['load_s']:.1f}s not counted)")
    return out


def phase_a(args, work: Path, url: str) -> dict:
    say(f"(a) model {args.model}, dtype {args.dtype}, device {args.device}, shards of {args.shard_rows:,} rows, "
        f"{args.rounds} queued rounds")
    if args.rows:
        corpus = write_corpus(work / "corpus-a.jsonl", args.rows)
        first = run_inprocess(args.model, corpus, args.dtype, work, "1", device=args.device)
    else:
        # The corpus is sized so each mode runs about --target-s on this machine as it is now:
        # big enough that fixed costs (process start, planning, the 1s progress poll) stay small.
        big = write_corpus(work / "corpus-a-max.jsonl", args.max_rows)
        first = run_inprocess(args.model, big, args.dtype, work, "1", args.target_s, args.min_rows, args.device)
        big.unlink()
        corpus = write_corpus(work / "corpus-a.jsonl", first["rows"])
    sized_by_time, args.rows = not args.rows, first["rows"]
    say(f"(a) corpus: {args.rows:,} STS12 rows -> {corpus} ({corpus.stat().st_size / 1e6:.1f} MB)")
    local = run_local(args, corpus, work, url)
    inprocess, queued_runs, warm, startup_s = [first], [], None, 0.0
    say(f"(a) queued: starting ONE torch worker (workers start), waiting for its heartbeat; then {args.rounds} rounds "
        "of a queued job and an in-process run, alternating, so drift of a shared machine hits both alike")
    workers, startup_s = start_ready_workers(url, args.model, ["bench-torch-1"], work / "logs", "torch", args.dtype,
                                             device=args.device)
    say(f"  worker ready after {startup_s:.1f}s (not counted); a warm-up job, then the measured ones with --wait")
    try:
        warm = warm_up_workers(url, args.model, workers, "torch", args.dtype, work, "torch")
        for k in range(1, args.rounds + 1):
            queued_runs.append(run_queued(args, corpus, work, url, workers, k))
            # The worker stays up, idle, while the engine runs alone: it is what a deployment has.
            inprocess.append(run_inprocess(args.model, corpus, args.dtype, work, str(k + 1), device=args.device))
    finally:
        stop_workers(workers)
    queued = combine_queued(queued_runs, startup_s, warm)
    reference = statistics.mean(r["rows_per_s"] for r in inprocess)
    for k, run in enumerate(queued_runs):  # each queued job against the in-process runs either side of it
        run["vs_neighbours"] = run["steady"]["rows_per_s"] / statistics.mean(
            r["rows_per_s"] for r in inprocess[k:k + 2])
    same_values = same_results(work / "out-local", work / "out-queued-1")
    for mode in (local, *queued_runs):
        mode["steady"].pop("sha256")
    rates = [r["rows_per_s"] for r in inprocess]
    return {
        "rows": args.rows, "rows_sized_by_time": sized_by_time, "target_s": args.target_s, "shard_rows": args.shard_rows,
        "dtype": args.dtype, "device": args.device, "model": str(args.model), "rounds": args.rounds,
        "inprocess_runs": inprocess, "inprocess_before": inprocess[0], "inprocess_after": inprocess[-1],
        "inprocess_rows_per_s": reference, "inprocess_spread": (max(rates) - min(rates)) / reference,
        "local": local, "queued": queued, "local_and_queued_outputs_identical": same_values,
        "rows_per_cpu_s": {"inprocess": sum(r["rows"] for r in inprocess) / sum(r["cpu_s"] for r in inprocess),
                           "local": args.rows / local["cpu_s"], "queued": queued["rows_per_cpu_s"]},
        "goals": {"queued_steady": STEADY_GOAL, "queued_end_to_end": THROUGHPUT_GOAL},
        "ratios": {"local_end_to_end": local["rows_per_s"] / reference,
                   "local_steady": local["steady"]["rows_per_s"] / reference,
                   "queued_end_to_end": queued["rows_per_s"] / reference,
                   "queued_steady": queued["steady"]["rows_per_s"] / reference},
    }


def same_results(out_a: Path, out_b: Path) -> bool:
    """Whether two jobs over the same rows wrote the same values. Not the same bytes: a file's own
    metadata names its job."""
    import pyarrow.parquet as pq

    a, b = (pq.read_table(out / "data").sort_by("id").replace_schema_metadata(None) for out in (out_a, out_b))
    return a.equals(b)


def run_local(args, corpus: Path, work: Path, url: str) -> dict:
    say("(a) --local: producer submit --local, timed end to end (process start, model load, planning, commits)")
    out = work / "out-local"
    local = run_monitored(submit_args(corpus, args.model, out, "bench-local", "torch", args.dtype, args.shard_rows,
                                      "--local", "--device", args.device),
                          cluster.base_env(url), work / "local.log", job_ticker("--local", out, args.rows))
    if local["rc"] != 0:
        raise RuntimeError(f"--local failed (exit {local['rc']}); see {local['log']}")
    local.update(rows_per_s=args.rows / local["wall_s"], planning_s=planning_seconds(work / "local.log"),
                 steady=commit_window(out), status=job_status(out))
    say(f"  --local: {local['wall_s']:.1f}s end to end = {local['rows_per_s']:,.0f} rows/s; steady state "
        f"{local['steady']['rows_per_s']:,.0f} rows/s; {local['status']}")
    return local


def run_queued(args, corpus: Path, work: Path, url: str, workers: list[cluster.Worker], k: int) -> dict:
    out, log = work / f"out-queued-{k}", work / f"queued-{k}.log"
    cpu0 = worker_cpu(workers)
    run = run_monitored(submit_args(corpus, args.model, out, f"bench-queued-{k}", "torch", args.dtype,
                                    args.shard_rows, "--wait"),
                        cluster.base_env(url), log, job_ticker(f"queued {k}", out, args.rows))
    run["worker_cpu_s"] = worker_cpu(workers) - cpu0
    if run["rc"] != 0:
        raise RuntimeError(f"queued job {k} failed (exit {run['rc']}); see {run['log']}")
    run["cpu_s"] = run["worker_cpu_s"] + run["cpu_s"]  # the worker's and the producer's
    run.update(rows=args.rows, rows_per_s=args.rows / run["wall_s"], planning_s=planning_seconds(log),
               steady=commit_window(out), status=job_status(out))
    say(f"  queued {k}: {run['wall_s']:.1f}s submit -> finished = {run['rows_per_s']:,.0f} rows/s; steady state "
        f"{run['steady']['rows_per_s']:,.0f} rows/s; {run['status']}")
    return run


def combine_queued(runs: list[dict], startup_s: float, warm: dict) -> dict:
    """The queued rounds as one: rates over their summed times, so each row counts once."""
    rows, window = sum(r["steady"]["rows"] for r in runs), sum(r["steady"]["window_s"] for r in runs)
    statuses = sorted({r["status"] for r in runs})
    return {"rounds": runs, "wall_s": sum(r["wall_s"] for r in runs), "rows_per_s": sum(r["rows"] for r in runs) /
            sum(r["wall_s"] for r in runs), "cpu_s": sum(r["cpu_s"] for r in runs),
            "worker_cpu_s": sum(r["worker_cpu_s"] for r in runs), "rows_per_cpu_s": rows / sum(r["cpu_s"] for r in runs),
            "load1_at_end": runs[-1]["load1_at_end"], "planning_s": max(r["planning_s"] or 0 for r in runs),
            "status": statuses[0] if len(statuses) == 1 else ", ".join(statuses),
            "steady": {"rows": rows, "shards": sum(r["steady"]["shards"] for r in runs), "window_s": window,
                       "rows_per_s": rows / window,
                       "shard_s_median": statistics.median(r["steady"]["shard_s_median"] for r in runs)},
            "worker_startup_s": startup_s, "warm_up": warm}


# --- (b) scaling on the simulated engine ------------------------------------------------------------
def device_batches(model: Path, corpus_rows: int, shard_rows: int) -> int:
    """Forward batches the whole job runs: the engine's own bucketing over the real token counts."""
    from common import defaults
    from workers import batching
    from workers.engines.simulated import JsonTokenizer

    texts = sentences()
    tokenizer = JsonTokenizer(model / "tokenizer.json")
    eot = tokenizer.token_id(defaults.ENDOFTEXT_TOKEN)
    lengths = [len(r.ids) for r in batching.tokenize_for_embedding(
        tokenizer, texts, max(defaults.DEFAULT_SEQLENS), eot, max(defaults.DEFAULT_SEQLENS) * 32)]
    total = 0
    for shard_start in range(0, corpus_rows, shard_rows):
        shard_end = min(corpus_rows, shard_start + shard_rows)
        for start in range(shard_start, shard_end, defaults.ENGINE_CHUNK_ROWS):
            chunk = [lengths[i % len(texts)] for i in range(start, min(shard_end, start + defaults.ENGINE_CHUNK_ROWS))]
            total += len(batching.plan_batches(chunk, defaults.DEFAULT_SEQLENS, defaults.DEFAULT_BATCH_TOKENS,
                                               defaults.DEFAULT_MAX_BATCH_ROWS, False))
    return total


def phase_b(args, work: Path, url: str) -> dict:
    corpus = write_corpus(work / "corpus-b.jsonl", args.scale_rows)
    batches = device_batches(args.model, args.scale_rows, args.scale_shard_rows)
    device_s = batches * args.sim_batch_s
    shards = -(-args.scale_rows // args.scale_shard_rows)
    say(f"(b) scaling on the simulated engine: {args.scale_rows:,} rows, {shards} shards of "
        f"{args.scale_shard_rows:,}, {batches} forward batches x {args.sim_batch_s}s = {device_s:.0f}s of device "
        f"time; workers {args.workers}, {args.scale_rounds} measured job(s) each")
    runs = []
    for n in args.workers:
        say(f"(b) {n} worker(s): starting (backend simulated, QWEN3B_SIM_BATCH_S={args.sim_batch_s})")
        workers, startup_s = start_ready_workers(
            url, args.model, [f"bench-sim{n}-{i}" for i in range(n)], work / "logs", "simulated", args.dtype,
            env={"QWEN3B_SIM_BATCH_S": str(args.sim_batch_s)})
        say(f"  {n} worker(s) ready after {startup_s:.1f}s (not counted); a warm-up job, then the measured ones")
        try:
            warm = warm_up_workers(url, args.model, workers, "simulated", args.dtype, work, f"sim{n}")
            rounds = [run_scale_job(args, corpus, work, url, workers, k) for k in range(1, args.scale_rounds + 1)]
        finally:
            stop_workers(workers)
        runs.append(combine_scale_rounds(rounds, n, startup_s, warm, args.scale_rows * n / device_s))
    base = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        if base:
            r["efficiency_steady"] = r["steady"]["rows_per_s"] / (r["workers"] * base["steady"]["rows_per_s"])
            r["efficiency_end_to_end"] = r["end_to_end_rows_per_s"] / (r["workers"] * base["end_to_end_rows_per_s"])
            r["efficiency_end_to_end_range"] = [
                min(k["end_to_end_rows_per_s"] for k in r["rounds"]) / (r["workers"] * base["end_to_end_rows_per_s"]),
                max(k["end_to_end_rows_per_s"] for k in r["rounds"]) / (r["workers"] * base["end_to_end_rows_per_s"])]
        r["of_device_bound"] = r["steady"]["rows_per_s"] / r["device_bound_rows_per_s"]
    return {"rows": args.scale_rows, "shard_rows": args.scale_shard_rows, "sim_batch_s": args.sim_batch_s,
            "forward_batches": batches, "device_s": device_s, "rounds": args.scale_rounds,
            "goals": {"efficiency_steady": SCALING_GOAL, "efficiency_end_to_end": SCALING_GOAL}, "runs": runs}


def run_scale_job(args, corpus: Path, work: Path, url: str, workers: list[cluster.Worker], k: int) -> dict:
    """One measured job over the ready workers: end to end from the producer's spawn to its exit,
    steady from the commit records."""
    n, out = len(workers), work / f"out-scale-{len(workers)}-{k}"
    cpu0 = worker_cpu(workers)
    run = run_monitored(submit_args(corpus, args.model, out, f"bench-scale-{n}-{k}", "simulated", args.dtype,
                                    args.scale_shard_rows, "--wait"),
                        cluster.base_env(url), work / f"scale-{n}-{k}.log", job_ticker(f"{n} worker(s)", out, args.scale_rows))
    worker_cpu_s = worker_cpu(workers) - cpu0
    if run["rc"] != 0:
        raise RuntimeError(f"the {n}-worker job failed (exit {run['rc']}); see {run['log']}")
    per_worker = {}
    for c in list_commits(out):
        per_worker[c["worker"]] = per_worker.get(c["worker"], 0) + 1
    steady = commit_window(out)
    steady.pop("sha256")
    record = {"end_to_end_s": run["wall_s"], "end_to_end_rows_per_s": args.scale_rows / run["wall_s"],
              "steady": steady, "status": job_status(out), "shards_per_worker": sorted(per_worker.values()),
              "load1_at_end": run["load1_at_end"], "worker_cpu_s": worker_cpu_s,
              "worker_cpu_cores": worker_cpu_s / steady["window_s"],
              # spawn -> first shard's start, last commit -> exit: the producer's fixed costs
              "head_s": steady["first_start_at"] - run["started_at"],
              "tail_s": run["ended_at"] - steady["last_commit_at"]}
    say(f"  {n} worker(s), job {k}: steady {steady['rows_per_s']:,.0f} rows/s over {steady['window_s']:.1f}s, end to "
        f"end {record['end_to_end_rows_per_s']:,.0f} rows/s (head {record['head_s']:.2f}s, tail "
        f"{record['tail_s']:.2f}s); shards per worker {record['shards_per_worker']}; workers used "
        f"{record['worker_cpu_cores']:.2f} cores")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return record


def combine_scale_rounds(rounds: list[dict], n: int, startup_s: float, warm: dict, device_bound: float) -> dict:
    """One worker count's jobs as one record: the median job by end-to-end rate stands for them (a
    job of a few seconds on a shared machine is one draw), and every job is kept."""
    median = sorted(rounds, key=lambda r: r["end_to_end_rows_per_s"])[(len(rounds) - 1) // 2]
    statuses = sorted({r["status"] for r in rounds})
    return {"workers": n, "startup_s": startup_s, "warm_up": warm, "rounds": rounds,
            "end_to_end_s": median["end_to_end_s"], "end_to_end_rows_per_s": median["end_to_end_rows_per_s"],
            "steady": median_steady(rounds), "status": statuses[0] if len(statuses) == 1 else ", ".join(statuses),
            "shards_per_worker": median["shards_per_worker"], "load1_at_end": median["load1_at_end"],
            "head_s": median["head_s"], "tail_s": median["tail_s"],
            "worker_cpu_cores": statistics.median(r["worker_cpu_cores"] for r in rounds),
            "device_bound_rows_per_s": device_bound}


def median_steady(rounds: list[dict]) -> dict:
    """The median job by steady rate, its figures as they were."""
    return dict(sorted((r["steady"] for r in rounds), key=lambda s: s["rows_per_s"])[(len(rounds) - 1) // 2])


# --- (d) one worker's memory over many shards -------------------------------------------------------
def phase_d(args, work: Path, url: str) -> dict:
    """Per backend and dtype, one real worker runs a job of --worker-memory-shards shards; its
    heartbeat (workers/memory.py) gives its resident memory and high-water mark after each shard.
    "Nothing grows": the resident memory after the last shard vs after the first tenth of them."""
    from common import heartbeats

    n_shards, shard_rows = args.worker_memory_shards, args.worker_memory_shard_rows
    model = args.worker_memory_model.resolve()
    corpus = write_corpus(work / "corpus-d.jsonl", n_shards * shard_rows)
    client, runs = redis_client(url), []
    for backend_dtype in args.worker_memory_engines:
        backend, dtype = backend_dtype.split(":")
        label = f"{backend}-{dtype}"
        env = compile_artifacts(model, backend, dtype, work) if backend in COMPILED_BACKENDS else {}
        say(f"(d) {label}: one worker, {n_shards} shards of {shard_rows} rows")
        workers, _ = start_ready_workers(url, model, [f"bench-mem-{label}"], work / "logs", backend, dtype, env=env)
        samples: dict[int, dict] = {}
        try:
            warm_up_workers(url, model, workers, backend, dtype, work, f"mem-{label}", env)
            base_done = None
            proc = subprocess.Popen([sys.executable, *submit_args(corpus, model, work / f"out-mem-{label}",
                                                                  f"bench-mem-{label}", backend, dtype, shard_rows,
                                                                  "--wait")],
                                    env=cluster.base_env(url, env), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
            while proc.poll() is None:
                for beat in heartbeats.live_workers(client):
                    if beat["name"] == workers[0].name and "rss_mib" in beat:
                        base_done = beat["shards_done"] if base_done is None else base_done
                        samples[beat["shards_done"] - base_done] = beat
                time.sleep(0.05)
            time.sleep(0.5)  # the last shard's end beat
            for beat in heartbeats.live_workers(client):
                if beat["name"] == workers[0].name and base_done is not None:
                    samples[beat["shards_done"] - base_done] = beat
        finally:
            stop_workers(workers)
        if proc.returncode != 0:
            raise RuntimeError(f"the (d) {label} job failed (exit {proc.returncode})")
        done = sorted(k for k in samples if k > 0)
        early = [samples[k]["rss_mib"] for k in done if k <= max(1, n_shards // 10)]
        late = samples[done[-1]]
        record = {"backend": backend, "dtype": dtype, "shards": done[-1], "samples": len(done),
                  "rss_mib_by_shard": {str(k): samples[k]["rss_mib"] for k in done},
                  "rss_mib_first_tenth": max(early), "rss_mib_at_end": late["rss_mib"],
                  "peak_rss_mib": late["peak_rss_mib"], "device_peak_mib": late.get("device_peak_mib"),
                  "growth": late["rss_mib"] / max(early)}
        runs.append(record)
        say(f"  {label}: resident {record['rss_mib_first_tenth']:.0f} MiB after the first tenth, "
            f"{record['rss_mib_at_end']:.0f} MiB after shard {record['shards']} ({record['growth']:.3f}x); "
            f"peak {record['peak_rss_mib']:.0f} MiB")
    return {"shards": n_shards, "shard_rows": shard_rows, "model": str(model), "runs": runs,
            "goal": "no growth: resident memory at the end within 5% of the first tenth's", "flat_goal": 1.05}


COMPILED_BACKENDS = ("onnx",)  # a worker of these serves artifacts: built here first, as a deployment would


def compile_artifacts(model: Path, backend: str, dtype: str, work: Path) -> dict:
    """`producer compile --local` of the job's default lengths into a store in the work folder;
    returns the environment that points a worker and the producer at it."""
    env = {"QWEN3B_ARTIFACT_STORE": str(work / "artifacts")}
    say(f"(d) {backend}-{dtype}: compiling the artifacts first (producer compile --local; not measured)")
    done = subprocess.run([sys.executable, "-m", "producer", "compile", "--model", str(model), "--backend", backend,
                           "--dtype", dtype, "--local"], env=cluster.base_env("redis://unused", env), cwd=REPO_ROOT,
                          stdout=open(work / f"compile-{backend}-{dtype}.log", "ab"), stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"producer compile --backend {backend} --dtype {dtype} failed (exit {done.returncode}); "
                           f"see {work / f'compile-{backend}-{dtype}.log'}")
    return env


# --- (c) memory while submitting ----------------------------------------------------------------------
def phase_c(args, work: Path) -> dict:
    results = []
    for rows in args.memory_rows:
        say(f"(c) {rows:,} rows: writing the corpus to {work}")
        corpus = write_corpus(work / f"corpus-mem-{rows}.jsonl", rows)
        server = cluster.RedisServer(work / f"redis-mem-{rows}").start()
        out = work / f"out-mem-{rows}"
        try:
            client = server.client()
            before = client.info("memory")
            say(f"  {corpus.stat().st_size / 1e6:.0f} MB; private redis-server on port {server.port} "
                f"(used_memory {before['used_memory'] / 1024:.0f} KiB); submitting without workers")

            def tick(elapsed: float, pid: int) -> None:
                say(f"  submit {rows:,} rows: {elapsed:5.0f}s, producer RSS {proc_kib(pid, 'VmRSS') / 1024:.0f} MiB, "
                    f"peak {proc_kib(pid, 'VmHWM') / 1024:.0f} MiB (load {load_text()})")

            run = run_monitored(submit_args(corpus, args.model, out, f"bench-mem-{rows}", "simulated", args.dtype,
                                            args.memory_shard_rows),
                                cluster.base_env(server.url), work / f"mem-{rows}.log", tick)
            if run["rc"] != 0:
                raise RuntimeError(f"submitting {rows:,} rows failed (exit {run['rc']}); see {run['log']}")
            info = client.info("memory")
            plan = json.loads((out / "_plan.json").read_text())
            queued = client.llen(plan["queue"])
            queue_bytes = client.memory_usage(plan["queue"]) or 0
        finally:
            server.stop()
            corpus.unlink(missing_ok=True)
            shutil.rmtree(out, ignore_errors=True)
        record = {"rows": rows, "shards": plan["shards_total"], "messages_queued": queued,
                  "submit_s": run["wall_s"], "planning_s": planning_seconds(work / f"mem-{rows}.log"),
                  "producer_peak_rss_mib": run["peak_rss_mib"], "producer_polled_vmhwm_mib": run["polled_vmhwm_mib"],
                  "producer_cpu_s": run["cpu_s"],
                  "redis_used_memory_before_kib": before["used_memory"] / 1024,
                  "redis_used_memory_peak_kib": info["used_memory_peak"] / 1024,
                  "redis_used_memory_after_kib": info["used_memory"] / 1024}
        record["redis_queue_bytes"] = queue_bytes
        record["redis_bytes_per_message"] = queue_bytes / queued if queued else None
        results.append(record)
        say(f"  {rows:,} rows: submitted in {run['wall_s']:.1f}s, producer peak RSS {run['peak_rss_mib']:.0f} MiB, "
            f"redis peak {record['redis_used_memory_peak_kib']:.0f} KiB, {queued} messages queued")
    out = {"shard_rows": args.memory_shard_rows, "runs": results}
    if len(results) >= 2:
        small, large = results[0], results[-1]
        out["producer_growth"] = large["producer_peak_rss_mib"] / small["producer_peak_rss_mib"]
        out["redis_growth"] = large["redis_used_memory_peak_kib"] / small["redis_used_memory_peak_kib"]
    return out


# --- the report -------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def table(results: dict) -> str:
    lines = []
    a = results.get("a")
    if a:
        ref, cpu_ref = a["inprocess_rows_per_s"], a["rows_per_cpu_s"]["inprocess"]

        def row(label, seconds, rate, cpu_s=None, load=None):
            cpu = f"{a['rows'] / cpu_s:>12,.0f}{a['rows'] / cpu_s / cpu_ref:>12.0%}" if cpu_s else f"{'':>24}"
            return f"    {label:<36}{seconds:>9.1f}{rate:>10,.0f}{rate / ref:>14.0%}{cpu}" + (f"{load:>7.1f}" if load else "")

        local, queued = a["local"], a["queued"]
        runs = a.get("inprocess_runs") or [a["inprocess_before"], a["inprocess_after"]]
        rounds = queued.get("rounds", [])
        lines += [f"(a) throughput, torch engine, {a['rows']:,} STS12 rows, model {Path(a['model']).name} (random weights), {a['dtype']} "
                  f"on {a.get('device', 'cpu')}, shards of {a['shard_rows']:,}",
                  f"    {'mode':<36}{'seconds':>9}{'rows/s':>10}{'vs in-proc.':>14}{'rows/CPU-s':>12}{'vs in-proc.':>12}"
                  f"{'load1':>7}",
                  *[row(f"in-process {i + 1}", r["seconds"], r["rows_per_s"], r["cpu_s"], r["load1_at_end"])
                    for i, r in enumerate(runs)],
                  f"    {'in-process reference (mean)':<36}{'':>9}{ref:>10,.0f}{1:>14.0%}{cpu_ref:>12,.0f}{1:>12.0%}",
                  row("--local, end to end", local["wall_s"], local["rows_per_s"], local["cpu_s"], local["load1_at_end"]),
                  row("--local, steady (commit records)", local["steady"]["window_s"], local["steady"]["rows_per_s"]),
                  *[row(f"queued {k + 1}, steady (commits)", r["steady"]["window_s"], r["steady"]["rows_per_s"],
                        r["cpu_s"], r["load1_at_end"]) for k, r in enumerate(rounds)],
                  row("queued, all rounds, submit->finished", queued["wall_s"], queued["rows_per_s"],
                      queued["cpu_s"] / max(1, len(rounds)), queued["load1_at_end"]),
                  row("queued, all rounds, steady (commits)", queued["steady"]["window_s"], queued["steady"]["rows_per_s"]),
                  "    CPU-s: in-process = the engine process; --local = the whole producer process; queued = the worker "
                  "during the job + the producer. load1: the machine's 1-minute load average as the mode ended",
                  f"    planning: --local {local['planning_s']}s, queued {queued['planning_s']}s; worker start-up "
                  f"{queued['worker_startup_s']:.1f}s and its first (cold) shard {queued['warm_up']['slowest_shard_s']:.1f}s "
                  f"vs {queued['warm_up']['median_shard_s']:.1f}s warm (warm-up job, excluded); "
                  f"in-process runs spread {a['inprocess_spread']:.0%} (max - min) / mean; "
                  f"--local and queued (round 1) wrote the same values: {a['local_and_queued_outputs_identical']}",
                  *(["    each queued job vs the in-process runs either side of it: "
                     + ", ".join(f"{r['vs_neighbours']:.1%}" for r in rounds)] if rounds else []),
                  f"    per row: the engine alone {1e6 / ref:.0f} us; queued steady adds "
                  f"{1e6 / queued['steady']['rows_per_s'] - 1e6 / ref:.0f} us, --local steady adds "
                  f"{1e6 / local['steady']['rows_per_s'] - 1e6 / ref:.0f} us",
                  f"    goals, queued vs in-process: end to end >= {THROUGHPUT_GOAL:.0%} "
                  f"{a['ratios']['queued_end_to_end']:.0%} {verdict(a['ratios']['queued_end_to_end'] >= THROUGHPUT_GOAL)}, "
                  f"steady >= {STEADY_GOAL:.0%} {a['ratios']['queued_steady']:.0%} "
                  f"{verdict(a['ratios']['queued_steady'] >= STEADY_GOAL)}",
                  ""]
    b = results.get("b")
    if b:
        lines += [f"(b) scaling, simulated engine ({b['sim_batch_s']}s per forward batch), {b['rows']:,} rows, shards of "
                  f"{b['shard_rows']:,}, {b['forward_batches']} batches = {b['device_s']:.0f}s device time",
                  f"    {'workers':>7}{'steady rows/s':>15}{'efficiency':>12}{'e2e rows/s':>12}{'e2e eff.':>10}"
                  f"{'jobs':>11}{'head s':>8}{'tail s':>8}{'window s':>10}{'of device-bound':>17}{'worker cores':>14}"
                  f"{'load1':>7}  shards/worker"]
        for r in b["runs"]:
            spread = "-".join(f"{e:.0%}" for e in r.get("efficiency_end_to_end_range", []))
            lines.append(f"    {r['workers']:>7}{r['steady']['rows_per_s']:>15,.0f}{r.get('efficiency_steady', 0):>12.0%}"
                         f"{r['end_to_end_rows_per_s']:>12,.0f}{r.get('efficiency_end_to_end', 0):>10.0%}{spread:>11}"
                         f"{r['head_s']:>8.2f}{r['tail_s']:>8.2f}"
                         f"{r['steady']['window_s']:>10.1f}{r['of_device_bound']:>17.0%}{r['worker_cpu_cores']:>14.2f}"
                         f"{r['load1_at_end']:>7.1f}  {r['shards_per_worker']}")
        cold = max(r["warm_up"]["slowest_shard_s"] for r in b["runs"])
        lines.append(f"    each count ran a warm-up job first (slowest first shard on a fresh worker {cold:.1f}s, "
                     f"vs {b['sim_batch_s']}s device time per batch); window = first shard start to last commit;")
        lines.append(f"    {b['rounds']} measured job(s) per count, the median shown; jobs: the end-to-end efficiency of "
                     "each; head = producer spawn to first shard start, tail = last commit to producer exit")
        top = max(b["runs"], key=lambda r: r["workers"])
        if "efficiency_steady" in top:
            lines.append(f"    goal >= {SCALING_GOAL:.0%} at {top['workers']} workers: steady {top['efficiency_steady']:.0%} "
                         f"{verdict(top['efficiency_steady'] >= SCALING_GOAL)}, end to end "
                         f"{top['efficiency_end_to_end']:.0%} {verdict(top['efficiency_end_to_end'] >= SCALING_GOAL)}")
        lines.append("")
    d = results.get("d")
    if d:
        lines += [f"(d) one worker's memory over {d['shards']} shards of {d['shard_rows']} rows (its heartbeat after each "
                  "shard)", f"    {'engine':>12}{'RSS MiB, first tenth':>22}{'RSS MiB, end':>14}{'growth':>8}"
                  f"{'peak RSS MiB':>14}{'device peak MiB':>17}"]
        for r in d["runs"]:
            dev = r["device_peak_mib"]
            lines.append(f"    {r['backend'] + ' ' + r['dtype']:>12}{r['rss_mib_first_tenth']:>22.0f}{r['rss_mib_at_end']:>14.0f}"
                         f"{r['growth']:>8.3f}{r['peak_rss_mib']:>14.0f}{'-' if dev is None else f'{dev:.0f}':>17}")
        worst = max(r["growth"] for r in d["runs"])
        lines += [f"    goal {d['goal']}: worst {worst:.3f}x {verdict(worst <= d['flat_goal'])}", ""]
    c = results.get("c")
    if c:
        lines += [f"(c) memory while submitting (planning + enqueueing, no workers), shards of {c['shard_rows']:,} rows",
                  f"    {'rows':>10}{'shards':>8}{'submit s':>10}{'planning s':>12}{'producer peak RSS MiB':>23}"
                  f"{'(polled VmHWM)':>16}{'redis used_memory_peak KiB':>28}{'queue B/message':>17}"]
        for r in c["runs"]:
            per = r["redis_bytes_per_message"]
            lines.append(f"    {r['rows']:>10,}{r['shards']:>8}{r['submit_s']:>10.1f}{r['planning_s'] or 0:>12.1f}"
                         f"{r['producer_peak_rss_mib']:>23.0f}{r['producer_polled_vmhwm_mib']:>16.0f}"
                         f"{r['redis_used_memory_peak_kib']:>28.0f}{per if per is None else round(per):>17}")
        if "producer_growth" in c:
            small, large = c["runs"][0], c["runs"][-1]
            extra_kib = large["redis_used_memory_peak_kib"] - small["redis_used_memory_peak_kib"]
            extra_messages = large["messages_queued"] - small["messages_queued"]
            lines += [f"    goal flat (peak x{FLAT_GOAL:.2f} or less for {large['rows'] // small['rows']}x the rows): "
                      f"producer x{c['producer_growth']:.3f} {verdict(c['producer_growth'] <= FLAT_GOAL)} "
                      f"(+{large['producer_peak_rss_mib'] - small['producer_peak_rss_mib']:.0f} MiB), "
                      f"redis x{c['redis_growth']:.3f} {verdict(c['redis_growth'] <= FLAT_GOAL)}",
                      f"    redis: +{extra_kib:.0f} KiB for +{extra_messages} queued shard messages "
                      f"(~{large['redis_bytes_per_message'] or 0:,.0f} B each): it grows with shards, not with rows"]
    return "\n".join(lines)


def int_list(option: str):
    """An argparse type: comma-separated integers (100_000 allowed), as workers bench reads them."""
    def parse(text: str) -> list[int]:
        try:
            return list(parse_ints(text, option))
        except BenchError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-inprocess"]:
        inprocess_child(*argv[1:8])
        return
    ap = argparse.ArgumentParser(prog="python -m workers.bench.pipeline",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="embedding model folder (default: tiny)")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--device", default="cpu", help="(a) where the in-process engine, --local and the worker run: "
                                                    "cpu or cuda:N (b, c and d run on the CPU)")
    ap.add_argument("--phases", default="a,b,c,d", help="which of a, b, c, d to run")
    ap.add_argument("--rows", type=int, default=0, help="(a) corpus rows; 0: sized by --target-s")
    ap.add_argument("--target-s", type=float, default=60, help="(a) seconds per mode the corpus is sized for")
    ap.add_argument("--min-rows", type=int, default=20_000, help="(a) smallest corpus when sized by time")
    ap.add_argument("--max-rows", type=int, default=200_000, help="(a) largest corpus when sized by time")
    ap.add_argument("--shard-rows", type=int, default=5_000, help="(a) rows per shard")
    ap.add_argument("--rounds", type=int, default=3, help="(a) queued jobs, each followed by an in-process run")
    ap.add_argument("--workers", type=int_list("--workers"), default=[1, 2, 4, 8], help="(b) worker counts")
    ap.add_argument("--scale-rows", type=int, default=8_192, help="(b) corpus rows")
    ap.add_argument("--scale-shard-rows", type=int, default=256, help="(b) rows per shard")
    ap.add_argument("--scale-rounds", type=int, default=3, help="(b) measured jobs per worker count (the median counts)")
    ap.add_argument("--sim-batch-s", type=float, default=2.0, help="(b) simulated device seconds per batch")
    ap.add_argument("--memory-rows", type=int_list("--memory-rows"), default=[100_000, 1_000_000], help="(c) corpus sizes")
    ap.add_argument("--memory-shard-rows", type=int, default=10_000, help="(c) rows per shard (the default)")
    ap.add_argument("--worker-memory-shards", type=int, default=200, help="(d) shards one worker runs")
    ap.add_argument("--worker-memory-shard-rows", type=int, default=20, help="(d) rows per shard")
    ap.add_argument("--worker-memory-model", type=Path, default=DEFAULT_MODEL,
                    help="(d) the model (default: tiny; growth is the pipeline's, and 200 shards of the 0.6B "
                         "shape take a quarter of an hour on 2 cores)")
    ap.add_argument("--worker-memory-engines", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                    default=["torch:fp32", "torch:bf16", "torch:int8", "onnx:fp32", "onnx:int8"],
                    help="(d) backend:dtype pairs, one worker each (onnx: its artifacts are compiled first)")
    ap.add_argument("--out", type=Path, default=Path("bench-results/pipeline-cpu.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (corpora, outputs, logs)")
    args = ap.parse_args(argv)
    started = provenance("python -m workers.bench.pipeline")
    args.model = args.model.resolve()
    phases = set(args.phases.replace(" ", "").split(","))
    for model in {args.model, args.worker_memory_model.resolve()}:
        if not (model / "config.json").is_file():
            say(f"building the tiny model into {model.parent}")
            subprocess.run([sys.executable, "-m", "workers", "build-model", "--task", "embed", "--shape", "tiny",
                            "--out", str(model.parent)], check=True, cwd=REPO_ROOT)
    work = Path(tempfile.mkdtemp(prefix="q3b-pipeline-bench-"))
    say(f"pipeline benchmark: phases {sorted(phases)}, {os.cpu_count()} CPUs, load {load_text()}; work folder {work}")
    results = {"started_at": time.time(), "cpus": os.cpu_count(), "load_at_start": os.getloadavg(),
               "python": sys.version.split()[0], "argv": argv}
    server = None
    ok = False
    try:
        if phases & {"a", "b", "d"}:
            server = cluster.RedisServer(work / "redis").start()
            say(f"private redis-server on port {server.port}")
        if "a" in phases:
            results["a"] = phase_a(args, work, server.url)
        if "b" in phases:
            results["b"] = phase_b(args, work, server.url)
        if "c" in phases:
            results["c"] = phase_c(args, work)
        if "d" in phases:
            results["d"] = phase_d(args, work, server.url)
        ok = True
    finally:
        if server:
            server.stop()
        if args.keep or not ok:
            say(f"kept {work} (logs, outputs)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["load_at_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - _T0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results["provenance"] = confirm(started)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print()
    print(table(results))
    print(f"\nload average at start {results['load_at_start']}, at end {results['load_at_end']}; "
          f"{results['seconds']:.0f}s in all; JSON: {args.out}")


if __name__ == "__main__":
    main()
