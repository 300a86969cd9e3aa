"""What a producer command costs to start and to exit: the CLI as shipped against the same CLI
without its start-up savings, the same commands, alternating, in one run.

    python scripts/bench_cli_start.py [--rounds 7] [--rows 8192] [--out bench-results/cli-start-cpu.json]

The savings (common/cli_runner.main): pyarrow's pandas probe skipped, and the import-time objects
frozen out of the collector's passes (at exit above all). "without" runs the same typer app through
`cli_runner.run` alone, which is what `main` adds them to. Commands, against a private
redis-server with no worker:

  submit   `producer submit` of an --rows jsonl corpus in shards of 256 (the simulated backend, so no
           model check loads anything): start, imports, planning, enqueueing, exit
  status   `producer status --json` of that job: start, imports, reading the store, exit
  help     `producer --help`: start, imports, exit

Each figure is the wall time from spawning the process to its exit (the median of the rounds), and
the process's peak RSS (the largest of the rounds).
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAUNCHERS = {
    "as shipped": ["-m", "producer"],
    "without": ["-c", "import sys; from common.cli_runner import run; from producer.cli import app; "
                      "run(app, 'producer', sys.argv[1:])"],
}


# Times one command and reads its peak RSS (wait4's ru_maxrss), from a parent whose own start is not timed.
_MEASURE = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); wall = time.perf_counter() - t; "
            "print(json.dumps({'rc': done.returncode, 'wall_s': wall, 'out': done.stdout[-2000:] + done.stderr[-2000:], "
            "'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def measure(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds from spawn to exit, peak RSS MiB) of `python ARGV`; raises with its output when it fails."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"python {' '.join(argv)} exited {result['rc']}:\n{result['out']}")
    return result["wall_s"], result["maxrss_kib"] / 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/bench_cli_start.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "cli-start-cpu.json")
    args = ap.parse_args(argv)
    from common.provenance import confirm, provenance
    from harness import cluster
    from harness.corpora import write_corpus
    from workers.models.random_init import ensure_random_model

    origin = provenance("python scripts/bench_cli_start.py")
    model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
    work = Path(tempfile.mkdtemp(prefix="q3b-cli-start-"))
    corpus = work / "corpus.jsonl"
    write_corpus(corpus, args.rows)
    server = cluster.RedisServer(work / "redis").start()
    env = cluster.base_env(server.url)
    times = {launcher: {"submit": [], "status": [], "help": []} for launcher in LAUNCHERS}
    rss = {launcher: {"submit": [], "status": [], "help": []} for launcher in LAUNCHERS}
    try:
        for i in range(args.rounds):
            for launcher, prefix in (LAUNCHERS.items() if i % 2 == 0 else reversed(LAUNCHERS.items())):
                out = work / f"out-{i}-{launcher.replace(' ', '-')}"
                commands = {
                    "submit": ["submit", str(corpus), "--model", str(model), "--out", str(out), "--backend", "simulated",
                               "--dtype", "fp32", "--shard-rows", "256", "--name", out.name],
                    "status": ["status", "--json", str(out)],
                    "help": ["--help"],
                }
                for name, command in commands.items():
                    wall, peak = measure([*prefix, *command], env)
                    times[launcher][name].append(wall)
                    rss[launcher][name].append(peak)
            print(f"round {i + 1}/{args.rounds}: " + "; ".join(
                f"{launcher}: " + ", ".join(f"{name} {t[-1]:.2f}s" for name, t in times[launcher].items())
                for launcher in LAUNCHERS), flush=True)
    finally:
        server.stop()
    medians = {launcher: {name: statistics.median(t) for name, t in per.items()} for launcher, per in times.items()}
    peaks = {launcher: {name: max(r) for name, r in per.items()} for launcher, per in rss.items()}
    result = {"rows": args.rows, "rounds": args.rounds, "seconds": times, "median_s": medians,
              "saved_s": {name: medians["without"][name] - medians["as shipped"][name] for name in medians["without"]},
              "peak_rss_mib": peaks, "provenance": confirm(origin)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name in ("submit", "status", "help"):
        print(f"{name:>7}: {medians['without'][name]:.2f}s and {peaks['without'][name]:.0f} MiB without the savings, "
              f"{medians['as shipped'][name]:.2f}s and {peaks['as shipped'][name]:.0f} MiB as shipped "
              f"(median time of {args.rounds} rounds, largest peak RSS)")
    print(f"figures in {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
