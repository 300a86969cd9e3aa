"""Multi-host rehearsal: three hosts in network namespaces on this machine, a job across them, and
one worker host cut off mid-job. Needs root (ip netns, veth, bridge).

    sudo .venv/bin/python scripts/multihost_rehearsal.py [--rows 3000] [--json result.json]

The hosts, joined by one bridge (a switch), each with its own network stack and address:
    store   10.213.N.1  Redis, started with docker-compose.yml's own redis command line (password,
                        append-only, noeviction)
    host1   10.213.N.2  two workers (`workers start ...`, cpu0 and cpu1)
    host2   10.213.N.3  two workers
    this machine        10.213.N.254 on the bridge: the operator, running the producer, `producer
                        workers` and `producer status`, as from any machine of the network
The output store is one folder on this machine's filesystem, which every namespace sees: the stand-in
for an NFS mount shared by all hosts (network namespaces separate networks, not filesystems).
Workers run the simulated backend (real tokenising, batching, Parquet writes and commits; a fixed
sleep for the device) with a short visibility timeout, so a lost host's shards come back in seconds.

Mid-job, once host1 runs shards, host1 loses power: its link goes down and every process in it is
SIGKILLed. Its in-flight shards stay unacked in Redis until the visibility timeout, then host2's
workers take them. An independent checker then compares input ids with output + reject ids.
Exit status 0 only if the job completed with every row exactly once.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds

from common.faults import Barrier
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import cluster, compose, corpora
from harness.outputs import commit_records, read_records
from workers.models.random_init import ensure_random_model

REPO = Path(__file__).resolve().parents[1]

WORKERS_PER_HOST = 2
# The cluster's reliability settings, the same on every worker (they register them in Redis).
# A short visibility timeout so the rehearsal takes seconds; a real cluster sizes it from its
# longest shard (README "Running on a cluster").
SETTINGS = {"QWEN3B_VISIBILITY_TIMEOUT_S": "8", "QWEN3B_TASK_TIME_LIMIT_S": "4",
            "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "3", "QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "2",
            "QWEN3B_RETRY_COUNTDOWN_S": "1"}


class NeedsRootError(Exception):
    """The rehearsal cannot build its hosts on this machine; the message says why."""


def run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


class Network:
    """Namespaces joined by a bridge: `ip netns` hosts, veth cables, one switch."""

    def __init__(self, tag: str, subnet: str):
        self.tag, self.subnet = tag, subnet  # subnet: "10.213.N"
        self.bridge = f"q3b{tag}br"
        self.hosts: dict[str, str] = {}  # host -> namespace
        self.cables: list[str] = []  # the bridge ends of the veth pairs

    def create(self) -> "Network":
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        return self

    def add_host(self, host: str, last_octet: int) -> str:
        ns, cable = f"q3b-{self.tag}-{host}", f"q3b{self.tag}{host[-2:]}"
        run("ip", "netns", "add", ns)
        self.hosts[host] = ns
        run("ip", "link", "add", cable, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.cables.append(cable)
        run("ip", "link", "set", cable, "master", self.bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{self.subnet}.{last_octet}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        return f"{self.subnet}.{last_octet}"

    def launcher(self, host: str) -> tuple[str, ...]:
        """Run a command on `host`: in its network namespace, with its own host name (worker
        heartbeats and default worker names carry it)."""
        return ("ip", "netns", "exec", self.hosts[host], "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', host)

    def pids(self, host: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.hosts[host]], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def power_off(self, host: str) -> None:
        """The link goes down, then every process of the host dies at once."""
        run("ip", "-n", self.hosts[host], "link", "set", "eth0", "down")
        for pid in self.pids(host):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        for host in list(self.hosts):
            for pid in self.pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", self.hosts.pop(host)], capture_output=True)
        # A namespace outlives its name while the kernel still holds its sockets: the cables go explicitly.
        for cable in self.cables:
            subprocess.run(["ip", "link", "del", cable], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def require_root() -> None:
    missing = [tool for tool in ("ip", "unshare", "redis-server") if not shutil.which(tool)]
    if missing:
        raise NeedsRootError(f"multi-host rehearsal: {', '.join(missing)} not installed (apt-get install iproute2 "
                             "util-linux redis-server)")
    if os.geteuid() != 0:
        raise NeedsRootError("multi-host rehearsal: needs root (network namespaces, veth pairs and a bridge): "
                             "run it with sudo")
    probe = f"q3b-probe-{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if result.returncode != 0:
        raise NeedsRootError(f"multi-host rehearsal: cannot create network namespaces here ({result.stderr.strip()}); "
                             "a container needs CAP_SYS_ADMIN and CAP_NET_ADMIN")


def free_subnet() -> str:
    """A 10.213.N.0/24 that no route of this machine uses (the operator joins the bridge)."""
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    for n in random.sample(range(1, 250), 249):
        if f"10.213.{n}." not in routes:
            return f"10.213.{n}"
    raise RuntimeError("no free 10.213.N.0/24 subnet")


def write_corpus(path: Path, rows: int) -> list[int]:
    return corpora.write_corpus(path, rows)


def check(ids: list[int], out: Path) -> dict:
    """Independent of the system: input ids against output + reject ids."""
    data = ds.dataset(out / "data").to_table(columns=["id"]).column("id").to_pylist()
    rejects = ds.dataset(out / "rejects").to_table(columns=["id"]).column("id").to_pylist() if (
        out / "rejects").is_dir() else []
    seen = Counter(str(i) for i in data + rejects)
    expected = {str(i) for i in ids}
    return {"rows_in": len(ids), "rows_out": len(data), "rows_rejected": len(rejects),
            "rows_lost": len(expected - set(seen)), "duplicate_ids": sum(1 for n in seen.values() if n > 1),
            "unexpected_ids": len(set(seen) - expected)}


class Rehearsal:
    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.net = Network(f"{os.getpid() % 100000}", free_subnet())
        self.workers: list[cluster.Worker] = []
        self.redis: compose.ComposeRedis | None = None
        self.out = workdir / "shared" / "out"
        self.barrier = Barrier(workdir / "faults")
        self.barrier.folder.mkdir(parents=True, exist_ok=True)
        self.log: list[str] = []

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log.append(line)
        print(line, flush=True)

    def build_hosts(self) -> str:
        self.net.create()
        addresses = {host: self.net.add_host(host, octet) for host, octet in (("store", 1), ("host1", 2), ("host2", 3))}
        self.say(f"hosts: store {addresses['store']}, host1 {addresses['host1']}, host2 {addresses['host2']}, "
                 f"operator {self.net.subnet}.254 (bridge {self.net.bridge})")
        return addresses["store"]

    def start_redis(self, address: str) -> str:
        env = {"QWEN3B_REDIS_PASSWORD": os.urandom(16).hex(), "QWEN3B_FLOWER_AUTH": "unused:unused"}
        argv = compose.command(compose.load_compose(env=env), "redis")
        self.redis = compose.ComposeRedis(argv, self.workdir / "store" / "redis", host=address, port=6379,
                                          launcher=self.net.launcher("store")).start()
        self.say(f"store: redis-server with docker-compose.yml's command line on {address}:6379 "
                 f"(appendonly, noeviction, requirepass)")
        return self.redis.url

    def start_workers(self, url: str, model: Path) -> None:
        env = {**SETTINGS, "QWEN3B_SIM_BATCH_S": str(self.args.batch_s), "QWEN3B_OUTPUT_ROOT": str(self.out.parent),
               "OMP_NUM_THREADS": "1"}
        # host1's workers stop before committing their first shard (a fault point that waits): when
        # the host is cut, shards are provably in flight on it, whatever the timing
        held = {"QWEN3B_FAULTS": "before_commit:wait", "QWEN3B_FAULT_STATE": str(self.barrier.folder)}
        for host in ("host1", "host2"):
            for card in range(WORKERS_PER_HOST):
                name = f"embed-cpu{card}@{host}"
                argv = ["workers", "start", "--model", str(model), "--backend", "simulated", "--dtype", "fp32",
                        "--name", name]
                self.workers.append(cluster.start_cli(argv, name, url, self.workdir / host / "logs",
                                                      {**env, **(held if host == "host1" else {})},
                                                      launcher=self.net.launcher(host)))
        cluster.wait_for_workers(self.redis.client(), self.workers)
        self.say(f"host1, host2: {len(self.workers)} workers up: {', '.join(w.name for w in self.workers)}")

    def operator(self, url: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return cluster.run_cli("producer", list(args), url, timeout_s, {**SETTINGS, "COLUMNS": "160"})

    def wait_for_commits(self, count: int, timeout_s: float = 60) -> None:
        store, deadline = OutputStore(self.out), time.monotonic() + timeout_s
        while len(commit_records(store)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} shards committed after {timeout_s:.0f}s")
            time.sleep(0.1)

    def wait_until_finished(self, timeout_s: float) -> None:
        store, deadline = OutputStore(self.out), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if read_records(store).finished:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the job did not finish within {timeout_s:.0f}s")

    def stop(self) -> None:
        for w in self.workers:
            w.signal_all(signal.SIGKILL)
        if self.redis:
            self.redis.stop()
        self.net.destroy()


def rehearse(args, workdir: Path) -> dict:
    r = Rehearsal(args, workdir)
    try:
        model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
        corpus = workdir / "shared" / "in" / "corpus.jsonl"
        corpus.parent.mkdir(parents=True)
        ids = write_corpus(corpus, args.rows)
        url = r.start_redis(r.build_hosts())
        r.start_workers(url, model)
        started = time.time()
        submitted = r.operator(url, "submit", str(corpus), "--model", str(model), "--out", str(r.out), "--backend",
                               "simulated", "--dtype", "fp32", "--shard-rows", str(args.shard_rows))
        if submitted.returncode != 0:
            raise RuntimeError(f"submit failed: {submitted.stderr}")
        shards = load_plan(OutputStore(r.out)).shards_total
        r.say(f"operator: submitted {args.rows:,} rows in {shards} shards of {args.shard_rows}")
        r.wait_for_commits(shards // 6)
        held = r.barrier.wait_reached("before_commit", count=WORKERS_PER_HOST)  # host1's shards, mid-commit
        listing = r.operator(url, "workers").stdout  # what anyone sees just before the cut
        r.net.power_off("host1")
        cut_at = time.time()
        committed = set(commit_records(r.out))
        in_flight = [s for s in held if s not in committed]
        r.say(f"host1: link down and every process SIGKILLed with {len(committed)}/{shards} shards committed; "
              f"in flight on host1 (its workers' last heartbeats): {', '.join(in_flight) or 'none'}")
        r.wait_until_finished(args.timeout_s)
        finished_at = time.time()
        status = r.operator(url, "status", str(r.out))
        commits = commit_records(r.out)
        recovered = {s: commits[s] for s in in_flight if s in commits}
        result = {
            "rows": args.rows, "shards": shards, "workers": [w.name for w in r.workers],
            "cut_host": "host1", "committed_at_cut": len(committed), "in_flight_on_cut_host": in_flight,
            "in_flight_committed_by": {s: c.worker for s, c in recovered.items()},
            "recovery_s": {s: round(c.committed_at - cut_at, 1) for s, c in recovered.items()},
            "job_seconds": round(finished_at - started, 1),
            "commits_by_host": dict(Counter(c.worker.split("@")[1] for c in commits.values())),
            "status_exit_code": status.returncode, "success_marker": (r.out / "_SUCCESS.json").exists(),
            **check(ids, r.out),
        }
        r.say(f"job finished {result['job_seconds']}s after submit; host1's shards committed by "
              f"{result['in_flight_committed_by']} {result['recovery_s']} s after the cut")
        result["ok"] = (result["rows_lost"] == 0 and result["duplicate_ids"] == 0 and result["unexpected_ids"] == 0
                        and result["success_marker"] and status.returncode == 0 and in_flight
                        and len(recovered) == len(in_flight)
                        and all(w.endswith("@host2") for w in result["in_flight_committed_by"].values()))
        result["log"] = r.log
        result["workers_before_cut"] = listing
        result["status_after"] = status.stderr
        return result
    finally:
        r.stop()


def report(result: dict) -> None:
    print("\nproducer workers (from the operator, just before the cut):")
    print(result["workers_before_cut"].rstrip())
    print("\nproducer status (from the operator, at the end):")
    print(result["status_after"].rstrip())
    print(f"\nrows in / out / rejected: {result['rows_in']:,} / {result['rows_out']:,} / {result['rows_rejected']:,}")
    print(f"rows lost: {result['rows_lost']}   duplicate ids: {result['duplicate_ids']}   "
          f"unexpected ids: {result['unexpected_ids']}")
    print(f"shards committed per host: {result['commits_by_host']}")
    print("REHEARSAL PASSED" if result["ok"] else "REHEARSAL FAILED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--shard-rows", type=int, default=100)
    ap.add_argument("--batch-s", type=float, default=0.5, help="simulated device seconds per batch")
    ap.add_argument("--timeout-s", type=float, default=120, help="give up if the job is not done by then")
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, output)")
    args = ap.parse_args()
    try:
        require_root()
    except NeedsRootError as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    workdir = Path(tempfile.mkdtemp(prefix="q3b-multihost-"))
    try:
        result = rehearse(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
