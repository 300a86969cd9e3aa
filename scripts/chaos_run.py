"""Chaos run: a large job across several workers while a killer injects faults, with no operator.

    python scripts/chaos_run.py [--rows 200000] [--workers 4] [--fault-every-s 2.5] [--faults 12]

Runs the same corpus twice on one machine, each time through real worker processes
(`workers start`, the simulated backend: real tokenisation, batching, Parquet writing and commits;
a fixed sleep stands in for the device) and a private redis-server: once undisturbed (the
baseline), once under faults. Nobody runs `producer resume` or any other command after the submit:
the cluster must heal itself (common/reconcile.py). Fault kinds, each at least twice (--min-each):
  - kill-child   SIGKILL only a worker's pool child (an OOM kill): Celery requeues its shard;
  - kill-host    SIGKILL a worker's whole process group (a host gone); a worker of the same name
                 starts 3-10 s later (the host coming back), not at once;
  - pause        SIGSTOP a worker's whole process group for TTL + 2..6 s (alive but silent), then
                 SIGCONT: its shard is run elsewhere once its heartbeat expires, and its late
                 commit must lose the race (or win it, first committer wins) harmlessly;
  - stall        shards picked at random before the run hang once in C after writing their file
                 (QWEN3B_FAULTS=after_write:stall=600-once@SHARD, a shared QWEN3B_FAULT_STATE):
                 only the hard time limit (QWEN3B_TASK_TIME_LIMIT_S) ends them; they must run again;
  - redis        restart redis-server without persistence: every queue and record is lost;
  - swap         someone with access to Redis sends a shard message of another model's job (a decoy
                 planned with the tiny reranker's checkpoint) to this job's queue, through a stock
                 Celery client: it must be refused, and nothing of it committed;
  - garbage      entries no Celery client would write (`x`, `[]`, `{}`, envelopes without their
                 fields) pushed onto the job's queue and a worker's personal queue: dropped, and
                 every worker keeps consuming;
  - enospc       the output's disk fills up for 3-6 s (the output lies on a FUSE mount whose writes
                 fail with ENOSPC on demand, tests/fakes/faulty_fs.py; both runs use it): workers wait
                 and retry, nothing is quarantined.
Kinds, times and victims are drawn at random (--seed); the first faults give every kind its
--min-each turns in a shuffled order, all of them by half the job (faults come sooner when the
job runs ahead of them); the stall shards lie between 55% and 80% of the plan, after them.
Victims are busy workers (so that each fault hits a shard);
the killer keeps at least one healthy worker consuming, and while a stall is in progress it
neither touches the stalling worker nor restarts Redis (Celery terminates acks_late tasks on a lost
broker connection, which would end the stall before the hard time limit does).
The settings are NOT the defaults, so that healing takes seconds: heartbeat TTL 6 s, reconciler
every 2 s, hard time limit 15 s (soft 12), visibility timeout 30 s (both runs; the report says so).
Operator commands: the script runs none after the submit. It counts one as NEEDED (and fails) when
no shard is committed for --stuck-s seconds (a person would run `producer resume`), or when every
shard is done and no success marker appears (a person would run `producer status`).

Recovery time, per kind (p50 and max over the faults that hit a shard):
  - kill-child, kill-host, pause: from the signal to the commit (`committed_at` of its commit
    record) of the shard the victim was running (its heartbeat's `current_shard`, read right
    after the signal, when the victim can no longer change it). A fault whose victim ran nothing,
    or whose shard was already committed, hit no shard and has no recovery time.
  - stall: from the moment the stall began (the -once marker file's mtime) to the shard's commit.
  - redis: from the restart until BOTH (a) a shard that started after the restart was committed
    (committed_at - seconds > restart), and (b) every shard published and still pending at the
    restart (below the window's cursor; the rest waited in the plan, not in Redis) had been seen,
    at some poll after it, committed or named by a message in the restarted broker (waiting in the
    queue or delivered, unacked, to a worker); the broker is read directly, not via our records.
Besides, for the faults that hit a shard, "re-dispatched": from the fault until the shard was
available again: a message naming it waited in the queue, or a process other than the victim's
ran it (heartbeat), or it was committed. The commit time adds the wait behind the queue's backlog.

The independent checker compares the input ids with the output + reject ids (rows lost and
duplicate ids must be 0). The script exits non-zero if rows are lost or duplicated, a shard is
quarantined, an operator command was needed (no commit for --stuck-s seconds, or no success marker
once every shard is done), a fault kind happened fewer than --min-each times, or the run passed
its --deadline-s; then it prints every worker's log tail and the broker's state instead of hanging.
"""

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import redis
from celery import Celery
from kombu import Exchange, Queue

from common import heartbeats, keys
from common.dispatch import shard_message
from common.io.plans import load_plan
from common.io.store import OutputStore
from common.model_identity import model_ref
from common.provenance import confirm, provenance
from common.schemas import JobSpec
from harness import cluster
from harness.outputs import commit_records, read_records
from producer.plan import plan_job
from workers.bench.stats import percentile
from workers.models.random_init import ensure_random_model

REPO = Path(__file__).resolve().parents[1]
FAULTY_FS = REPO / "tests" / "fakes" / "faulty_fs.py"

STS = REPO.parent / "shared" / "data" / "sts12-test.jsonl"
BAD_ROWS = ['{"id": %d, "text": null}', '{"id": %d}', '{"id": %d, "text": ""}', '{"id": %d, "text": 7}',
            '{"id": %d, "text": "broken']
# Injected by the killer during the run, with their weights once each has had its --min-each turns.
SIGNAL_KINDS = {"kill-child": 3, "kill-host": 3, "pause": 3, "redis": 2, "swap": 1, "garbage": 1, "enospc": 1}
ATTACKS = ("swap", "garbage", "enospc")  # faults that hit no one shard: judged by what they must not do
GARBAGE = [b"x", b"[]", b"{}", b'"a string"', b'{"body": "e30=", "content-type": "application/json"}',
           b'{"properties": [], "headers": 7, "body": 1}']
FULL_DISK_S = (3, 6)
ALL_KINDS = (*SIGNAL_KINDS, "stall")  # stall: set up before the run, fired by the workers themselves
STALL_POINT = "after_write"
POLL_S = 0.25


class RunFailed(Exception):
    """The run could not be completed without an operator, or overran its deadline."""

    faults: tuple | list = ()  # the faults injected so far, as summarise() describes them


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


def cluster_settings(args) -> dict:
    """The environment of every worker of both runs (and of the producer)."""
    return {"QWEN3B_SIM_BATCH_S": str(args.batch_s),
            "QWEN3B_HEARTBEAT_TTL_S": str(args.heartbeat_ttl_s),
            "QWEN3B_RECONCILE_INTERVAL_S": str(args.reconcile_interval_s),
            "QWEN3B_TASK_TIME_LIMIT_S": str(args.time_limit_s),
            "QWEN3B_TASK_SOFT_TIME_LIMIT_S": str(args.time_limit_s - 3),
            "QWEN3B_VISIBILITY_TIMEOUT_S": str(2 * args.time_limit_s),
            "QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "2", "QWEN3B_RETRY_COUNTDOWN_S": "1",
            "QWEN3B_MAX_ATTEMPTS": "10"}


def shard_of(raw: bytes | dict) -> str | None:
    """The shard id named by a kombu message as Redis stores it (a JSON envelope, base64 body)."""
    try:
        payload = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        return kwargs.get("shard_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def broker_shards(client: redis.Redis, queue: str) -> tuple[list, list]:
    """The shards named by the messages waiting in the queue (in pop order, next first), and by
    those delivered to a worker and not yet acked (kombu's `unacked` hash: [payload, exchange, key])."""
    waiting = [shard_of(m) for q in keys.queue_lists(queue) for m in reversed(client.lrange(q, 0, -1))]
    delivered = []
    for v in client.hvals("unacked"):
        try:
            delivered.append(shard_of(json.loads(v)[0]))
        except (ValueError, IndexError, TypeError):
            delivered.append(None)
    return waiting, delivered


class Run:
    def __init__(self, workdir: Path, model: Path, args, label: str, env: dict, deadline: float):
        self.workdir, self.model, self.args, self.label, self.deadline = workdir, model, args, label, deadline
        self.redis = cluster.RedisServer(workdir / "redis").start()
        self.env = env
        self.workers: list[cluster.Worker] = []
        self.serial = 0
        self.disk, self.control = self.mount(workdir) if "enospc" in args.kinds else (None, None)
        self.out = (self.disk or workdir) / "out"
        self.full: dict | None = None  # the enospc fault in progress
        self.killed: set[int] = set()  # pids of the worker processes the killer ended on purpose
        self.decoy = None  # (plan, output) of the model-B job whose messages the swap fault sends
        self.queue = ""
        self.paused: dict[str, float] = {}  # worker name -> when to SIGCONT it
        self.returning: list[tuple[float, str]] = []  # (when, name): killed hosts that come back
        self.operator_commands = 0

    # --- the output's disk, and the decoy job -------------------------------------------------------
    def mount(self, workdir: Path) -> tuple[Path, Path]:
        """The output's folder on a FUSE mount whose writes fail with the errno in `control`."""
        backing, disk, control = workdir / "backing", workdir / "disk", workdir / "disk-fault"
        backing.mkdir(parents=True)
        disk.mkdir()
        self.fs = subprocess.Popen([sys.executable, str(FAULTY_FS), str(backing), str(disk), str(control)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.ismount(disk):
            if self.fs.poll() is not None or time.time() > deadline:
                raise SystemExit("enospc: could not mount tests/fakes/faulty_fs.py (root, /dev/fuse and libfuse2 "
                                 "needed; `make redis` installs libfuse2), or leave it out with --kinds")
            time.sleep(0.05)
        return disk, control

    def decoy_message(self, model_b: Path, index: int) -> dict:
        """A shard message of a job planned for another model (the tiny reranker's checkpoint as an
        embedding model: another identity, another queue), as anyone could plan and send one."""
        if self.decoy is None:
            corpus, out = self.workdir / "decoy.jsonl", self.workdir / "decoy"
            corpus.write_text("".join(json.dumps({"id": i, "text": f"decoy {i}"}) + "\n" for i in range(100)))
            spec = JobSpec(model=model_ref(str(model_b)), backend="simulated", dtype="fp32", shard_rows=10)
            self.decoy = (plan_job(str(corpus), spec, OutputStore(out))[0], out)
        plan, out = self.decoy
        return shard_message(plan, str(OutputStore(out).root), plan.shard_at(index % plan.shards_total)).model_dump()

    # --- workers ----------------------------------------------------------------------------------
    def start_worker(self, name: str | None = None) -> cluster.Worker:
        if name is None:
            self.serial += 1
            name = f"w{self.serial}"
        log_path = self.workdir / "logs" / f"worker-{name}.log"
        if log_path.exists():
            with open(log_path, "a") as f:
                f.write(f"\n===== chaos_run: {name} starts again at {time.time():.3f} (its host came back) =====\n")
        w = cluster.start_worker(self.redis.url, str(self.model), name, self.workdir / "logs",
                                 backend="simulated", env=self.env, threads=1)
        self.workers.append(w)
        return w

    def live(self) -> list[cluster.Worker]:
        return [w for w in self.workers if w.alive()]

    def healthy(self) -> list[cluster.Worker]:
        return [w for w in self.live() if w.name not in self.paused]

    def worker(self, name: str) -> cluster.Worker:
        return [w for w in self.workers if w.name == name][-1]

    def submit(self, corpus: Path):
        result = cluster.run_cli("producer", ["submit", str(corpus), "--model", str(self.model), "--out", str(self.out),
                                              "--backend", "simulated", "--dtype", "fp32", "--shard-rows",
                                              str(self.args.shard_rows)], self.redis.url, 600, self.env)
        if result.returncode != 0:
            raise SystemExit(f"submit failed: {result.stderr}")

    def tick(self, now: float) -> None:
        """SIGCONT the paused workers whose time has come; bring back the hosts whose time has come;
        free the disk when its time has come."""
        if self.full and now >= self.full["until"]:
            self.control.write_text("")
            self.full["freed_at"] = time.time()
            self.full = None
        for name, when in list(self.paused.items()):
            if now >= when:
                os.killpg(self.worker(name).process.pid, signal.SIGCONT)
                del self.paused[name]
        for when, name in list(self.returning):
            if now >= when:
                self.start_worker(name)
                self.returning.remove((when, name))

    def stop(self):
        for w in self.workers:
            if w.alive():
                try:
                    os.killpg(w.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                w.process.wait(10)
        self.redis.stop()
        if self.disk is not None:
            subprocess.run(["umount", str(self.disk)], capture_output=True)
            self.fs.terminate()
            self.fs.wait(10)
            if os.path.ismount(self.disk):
                subprocess.run(["umount", "-l", str(self.disk)], capture_output=True)

    def crashed(self) -> list[str]:
        """Workers that exited without the killer ending them (a garbage entry must not do that)."""
        return sorted(w.name for w in self.workers if not w.alive() and w.process.pid not in self.killed)

    def diagnostics(self, plan=None) -> str:
        """Everything a person needs to see why a run did not finish: pending shards, the broker's
        view, each worker's heartbeat and log tail."""
        lines = []
        try:
            plan = plan or load_plan(OutputStore(self.out))
            state = read_records(OutputStore(self.out))
            lines.append(f"pending shards ({len(state.pending)}): {state.pending[:20]}")
            lines.append(f"quarantined: {sorted(state.quarantined)}")
            client = self.redis.client()
            waiting, unacked = broker_shards(client, plan.queue)
            lines.append(f"broker: {len(waiting)} waiting, next {waiting[:10]}; unacked: {unacked[:20]}")
            for name in ("queued", "running", "attempts", "errors", "refused"):
                h = client.hgetall(getattr(keys, f"job_{name}")(plan.job_id))
                lines.append(f"redis job_{name}: " + json.dumps({k.decode(): v.decode()[:200] for k, v in h.items()})[:1500])
            lines.append(f"active jobs: {client.smembers(keys.active_jobs())}")
            for beat in heartbeats.live_workers(client):
                lines.append(f"heartbeat {beat['name']}: pid {beat.get('pid')} shard {beat.get('current_shard')!r}")
        except Exception as exc:  # diagnostics must never hide the failure itself
            lines.append(f"(could not read the job or broker state: {exc!r})")
        for w in self.workers:
            state = "alive" if w.alive() else f"exited {w.process.returncode}"
            state += ", paused" if w.name in self.paused else ""
            lines.append(f"----- worker {w.name} (pid {w.process.pid}, {state}), last lines of {w.log_path}:")
            lines.extend(w.log().splitlines()[-25:])
        return "\n".join(lines)


def child_of(pid, parent: int) -> bool:
    """Whether pid is a live (not zombie) child of parent: a killed pool child not reaped yet keeps
    its pid, and its heartbeat lives on until it expires."""
    try:
        state, ppid = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError, TypeError):
        return False
    return state != "Z" and int(ppid) == parent


class Killer:
    """Chooses when, what and whom; keeps at least one healthy worker consuming.

    Faults come every --fault-every-s x U(0.5, 1.5) seconds; besides, every kind's --min-each
    turns are due in proportion to the job's progress, all of them by MIN_DONE_BY of it (a second
    apart at least), so a run that goes faster than expected still has every kind."""

    MIN_DONE_BY = 0.5

    def __init__(self, run: Run, rng: random.Random, stall_shards: set[str], fault_state: Path | None):
        self.run, self.rng = run, rng
        args = run.args
        kinds = [k for k in SIGNAL_KINDS if k in args.kinds]
        self.deck = [k for k in kinds for _ in range(args.min_each)]
        rng.shuffle(self.deck)
        if kinds:
            self.deck += rng.choices(kinds, weights=[SIGNAL_KINDS[k] for k in kinds],
                                     k=max(0, args.faults - len(self.deck)))
        self.need = Counter({k: args.min_each for k in kinds})  # turns each kind still must have
        self.total_need = sum(self.need.values())
        self.next_at = time.time() + rng.uniform(0.5, 1.5) * args.fault_every_s
        self.last_at = 0.0
        self.stall_shards, self.fault_state = stall_shards, fault_state
        self.model_b = ensure_random_model(REPO / ".cache" / "models", "rerank", "tiny") if "swap" in kinds else None

    def due(self, now: float, progress: float) -> bool:
        if not self.deck or now < self.last_at + 1:
            return False
        allowed_left = self.total_need * (1 - min(1.0, progress / self.MIN_DONE_BY))
        return now >= self.next_at or sum(self.need.values()) > allowed_left

    def stalling(self, client) -> set[str]:
        """Workers now stuck in a stall: left alone, so that only the hard time limit ends it."""
        names = set()
        for beat in heartbeats.live_workers(client):
            shard = beat.get("current_shard")
            if shard in self.stall_shards and (self.fault_state / f"{STALL_POINT}.{shard}").exists():
                names.add(beat["name"])
        return names

    def inject(self, state) -> dict | None:
        """One fault: the first kind in the deck that may be injected now, or None (all postponed a
        second). A worker fault needs a busy victim and leaves at least one other worker consuming
        (a stalling or paused worker does not count); a stalling worker is left to the hard time
        limit; Redis is not restarted during a stall (Celery terminates acks_late tasks on a lost
        connection, which would end the stall before the hard time limit does)."""
        run, now = self.run, time.time()
        try:
            client = run.redis.client()
            stalling = self.stalling(client) if self.stall_shards else set()
            beats = {b["name"]: b for b in heartbeats.live_workers(client)}
        except redis.RedisError:
            self.next_at = now + 1
            return None
        # Each kind once, the kinds that still need turns first, else in deck order.
        for kind in sorted(dict.fromkeys(self.deck), key=lambda k: self.need[k] == 0):
            if kind in ATTACKS:
                fault = self.attack(kind, client, beats)
            else:
                fault = self.restart_redis(state) if kind == "redis" and not stalling else (
                    self.hit_worker(kind, client, beats, stalling) if kind != "redis" else None)
            if fault:
                # A worker fault that hit no running shard does not count towards --min-each.
                if fault.get("hit", True) or not self.need[kind]:
                    self.deck.remove(kind)
                    self.need[kind] = max(0, self.need[kind] - 1)
                self.last_at = time.time()
                self.next_at = self.last_at + self.rng.uniform(0.5, 1.5) * run.args.fault_every_s
                return fault
        self.next_at = now + 1
        return None

    def attack(self, kind: str, client, beats: dict) -> dict | None:
        run, now = self.run, time.time()
        if kind == "swap":
            message = run.decoy_message(self.model_b, self.rng.randrange(1000))
            app = Celery(broker=run.redis.url)
            target = Queue(run.queue, Exchange(run.queue, type="direct"), routing_key=run.queue)
            app.send_task("embed.shard", kwargs=message, queue=target, declare=[target])
            app.close()
            return {"kind": kind, "at": now, "decoy_shard": message["shard_id"]}
        if kind == "garbage":
            names = sorted(beats) or [w.name for w in run.live()]
            personal = keys.worker_queue(self.rng.choice(names))
            for queue in (run.queue, personal):
                client.lpush(queue, *GARBAGE)
            return {"kind": kind, "at": now, "entries": 2 * len(GARBAGE), "queues": [run.queue, personal]}
        if run.full is not None or run.control is None:  # enospc: one window at a time
            return None
        run.control.write_text("ENOSPC")
        run.full = {"kind": kind, "at": now, "until": now + self.rng.uniform(*FULL_DISK_S)}
        run.full["full_for_s"] = round(run.full["until"] - now, 1)
        return run.full

    def restart_redis(self, state) -> dict:
        """Only the shards published before the restart (below the window's cursor) must be covered
        again: the others were waiting in the plan, not in Redis, and the window reaches them later."""
        records = read_records(OutputStore(self.run.out))
        try:
            cursor = int(self.run.redis.client().get(keys.job_cursor(records.plan.job_id)) or 0)
        except redis.RedisError:
            cursor = records.plan.shards_total
        pending = {s for s in records.pending if records.plan.shard(s).ordinal < cursor}
        fault = {"kind": "redis", "pending": pending, "in_flight_at_restart": len(pending), "at": time.time()}
        self.run.redis.restart()
        fault["restarted_in_s"] = round(time.time() - fault["at"], 3)
        return fault

    def hit_worker(self, kind: str, client, beats: dict, stalling: set[str]) -> dict | None:
        """Signal a busy worker, quickly: the victim's pool child is the pid of its heartbeat, so
        nothing slow (no pgrep) runs between choosing it and signalling it, and its shard is still
        running when the signal lands."""
        run = self.run
        consuming = [w for w in run.healthy() if w.name not in stalling]
        # Victims are busy workers (their own live pool child beats with a shard): a fault on an
        # idle worker, or on one still loading its model, tests nothing. Not on a stall shard either
        # (a stall is its own fault: killing it first would leave two copies of it queued).
        candidates = [w for w in consuming if beats.get(w.name, {}).get("current_shard")
                      and beats[w.name]["current_shard"] not in self.stall_shards
                      and child_of(beats[w.name].get("pid"), w.process.pid)]
        if len(consuming) < 2 or not candidates:
            return None
        victim = self.rng.choice(candidates)
        child = beats[victim.name]["pid"]
        fault = {"kind": kind, "victim": victim.name, "pids": [victim.process.pid, child], "at": time.time()}
        if kind == "kill-child":
            os.kill(child, signal.SIGKILL)
            fault["pids"] = [child]
        elif kind == "kill-host":
            os.killpg(victim.process.pid, signal.SIGKILL)
            run.killed.add(victim.process.pid)
            victim.process.wait(10)
            back = fault["at"] + self.rng.uniform(3, 10)
            run.returning.append((back, victim.name))
            fault["comes_back_after_s"] = round(back - fault["at"], 1)
        else:  # pause
            os.killpg(victim.process.pid, signal.SIGSTOP)
            ttl = run.args.heartbeat_ttl_s
            resume = fault["at"] + self.rng.uniform(ttl + 2, ttl + 6)
            run.paused[victim.name] = resume
            fault["paused_for_s"] = round(resume - fault["at"], 1)
        # Read after the signal: a dead or stopped victim can no longer change its heartbeat. Only a
        # beat from the victim's child counts (a host that came back under the same name has not
        # beaten yet while its predecessor's beat lives on until it expires); a shard whose commit
        # record exists now was committed before the signal: the fault hit nothing.
        try:
            beat = cluster.heartbeat(client, victim.name) or {}
        except redis.RedisError:
            beat = {}
        shard = (beat.get("current_shard") or None) if beat.get("pid") in fault["pids"] else None
        fault["shard"] = shard
        fault["hit"] = bool(shard) and OutputStore(run.out).load_commit(shard) is None
        return fault


class Watcher:
    """Polls the broker directly while some fault is not yet healed: when each victim shard is
    available again, and when every shard pending at a Redis restart is queued or committed."""

    def __init__(self, run: Run, plan, stall_shards: set[str], fault_state: Path | None):
        self.run, self.plan, self.stall_shards, self.fault_state = run, plan, stall_shards, fault_state
        self.faults: list[dict] = []

    def add(self, fault: dict) -> None:
        self.faults.append(fault)

    def stalls(self) -> None:
        """A stall begins when its -once marker appears (its mtime is the moment); its victim is
        the process that holds the shard then (filled in by poll, from the heartbeats)."""
        known = {f["shard"] for f in self.faults if f["kind"] == "stall"}
        for shard in self.stall_shards - known:
            marker = self.fault_state / f"{STALL_POINT}.{shard}"
            if marker.exists():
                self.faults.append({"kind": "stall", "at": marker.stat().st_mtime, "shard": shard,
                                    "pids": None, "victim": None})

    def poll(self, state) -> None:
        self.stalls()
        now = time.time()
        for f in self.faults:  # a commit covers everything
            if f["kind"] == "redis":
                f["pending"] = {s for s in f["pending"] if s not in state.commits}
                if not f["pending"] and "covered_at" not in f:
                    f["covered_at"] = now
            elif f.get("shard") in state.commits and "redispatched_at" not in f:
                f["redispatched_at"] = min(now, state.commits[f["shard"]].committed_at)
        todo = [f for f in self.faults if (f["kind"] == "redis" and "covered_at" not in f) or (
            f["kind"] != "redis" and f.get("shard") and "redispatched_at" not in f)]
        if not todo:
            return
        try:
            client = self.run.redis.client()
            waiting, delivered = map(set, broker_shards(client, self.plan.queue))
            beats = heartbeats.live_workers(client)
        except redis.RedisError:
            return
        for f in todo:
            if f["kind"] == "redis":
                f["pending"] -= waiting | delivered
                if not f["pending"]:
                    f["covered_at"] = now
                continue
            if f["pids"] is None:  # a stall just seen: its victim is whoever holds the shard
                holders = [b for b in beats if b.get("current_shard") == f["shard"]]
                f["pids"] = [b.get("pid") for b in holders]
                f["victim"] = holders[0]["name"] if holders else None
                if holders:
                    continue
            others = {b.get("current_shard") for b in beats if b.get("pid") not in f["pids"]}
            if f["shard"] in waiting or f["shard"] in others:
                f["redispatched_at"] = now


def run_job(run: Run, corpus: Path, chaos: bool, rng: random.Random, stall_shards: set[str] = frozenset(),
            fault_state: Path | None = None) -> dict:
    for _ in range(run.args.workers):
        run.start_worker()
    cluster.wait_for_workers(run.redis.client(), run.workers)
    started = time.time()
    run.submit(corpus)
    store = OutputStore(run.out)
    plan = load_plan(store)
    run.queue = plan.queue
    missing = stall_shards - {s.shard_id for s in plan.iter_shards()}
    if missing:
        raise SystemExit(f"stall shards {sorted(missing)} are not in the plan")
    killer = Killer(run, rng, stall_shards, fault_state) if chaos else None
    watcher = Watcher(run, plan, stall_shards, fault_state)
    try:
        last_progress, last_done = time.time(), -1
        while True:
            state = read_records(store)
            now = time.time()
            done = len(state.commits) + len(state.quarantined)
            print(f"\r[{run.label}] {done}/{plan.shards_total} shards done, {len(watcher.faults)} faults, "
                  f"{len(run.healthy())} workers healthy ({len(run.paused)} paused)   ", end="", flush=True)
            if state.finished:
                break
            if done != last_done:
                last_done, last_progress = done, now
            run.tick(now)
            if killer and killer.due(now, done / plan.shards_total):
                fault = killer.inject(state)
                if fault:
                    watcher.add(fault)
            watcher.poll(state)
            if now - last_progress > run.args.stuck_s:
                # Nothing committed for far longer than any recovery should take: a person would now
                # run `producer resume`. That is a failure of self-healing, not something to paper over.
                run.operator_commands += 1
                raise RunFailed(f"[{run.label}] no shard committed for {run.args.stuck_s:.0f} s with "
                                f"{len(state.pending)} pending: an operator command would be needed")
            if now > run.deadline:
                raise RunFailed(f"[{run.label}] the run passed its deadline (--deadline-s {run.args.deadline_s:.0f}) "
                                f"with {len(state.pending)} shards pending")
            time.sleep(POLL_S)
        elapsed = time.time() - started
        print()
        watcher.poll(state)
        # Paused workers still stopped: let them go on, and their late commits lose the race.
        for name in list(run.paused):
            run.paused[name] = 0
        if run.full is not None:
            run.full["until"] = 0
        run.tick(time.time())
        # The success marker is written by the worker that commits the last shard or by a reconciler
        # pass; nobody runs `producer status` for it.
        wait_until = time.time() + run.args.heartbeat_ttl_s + 3 * run.args.reconcile_interval_s + 10
        while store.load_success() is None:
            if time.time() > wait_until:
                run.operator_commands += 1
                raise RunFailed(f"[{run.label}] every shard is done but no success marker was written: "
                                "`producer status` would be needed to finalise the job")
            time.sleep(POLL_S)
    except RunFailed as exc:
        commits = commit_records(store)
        exc.faults = [summarise(f, commits) for f in watcher.faults]
        raise
    settle(run)
    state = read_records(store)
    commits = commit_records(store)
    decoy_commits = len(commit_records(run.decoy[1])) if run.decoy else 0
    return {"seconds": elapsed, "rows_per_s": plan.rows_total / elapsed, "shards": plan.shards_total,
            "decoy_commits": decoy_commits, "crashed_workers": run.crashed(),
            "shard_seconds_p50": statistics.median(c.seconds for c in commits.values()),
            "faults": [summarise(f, commits) for f in watcher.faults],
            "quarantined": sorted(state.quarantined), "success_marker": store.load_success().status,
            "operator_commands": run.operator_commands, "logs": log_counts(run)}


def settle(run: Run, timeout_s: float = 20) -> None:
    """Until no live worker holds a shard any more (a late commit has happened), or timeout_s."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if not any(b.get("current_shard") for b in heartbeats.live_workers(run.redis.client())):
                return
        except redis.RedisError:
            pass
        time.sleep(POLL_S)


def log_counts(run: Run) -> dict:
    text = "\n".join({w.log_path: w.log() for w in run.workers}.values())
    return {"hard_time_limit_kills": text.count("Hard time limit"), "lost_race": text.count("'lost_race'"),
            "already_committed": text.count("'already_committed'"),
            "reconciler_passes_that_published": text.count("reconciler: published"),
            "reconciler_shards_published": sum(int(n) for n in re.findall(r"reconciler: published (\d+) shards", text)),
            "quarantined": text.count("quarantined after"), "tracebacks": text.count("Traceback"),
            "refused_other_model": text.count("is not what this worker computes"),
            "garbage_dropped": text.count("dropped a"), "store_waits": text.count("the store fails:")}


def summarise(f: dict, commits: dict) -> dict:
    """One fault as it goes in the JSON, with its recovery figures."""
    out = {k: v for k, v in f.items() if k not in ("pending", "pids", "hit")}
    at = f["at"]
    if f["kind"] == "redis":
        started_after = [c.committed_at for c in commits.values() if c.committed_at - c.seconds > at]
        first = min(started_after) if started_after else None
        out["first_commit_started_after_s"] = first - at if first else None
        # A worker that never commits again after a restart has stopped consuming.
        out["workers_committing_after"] = sorted({c.worker for c in commits.values() if c.committed_at - c.seconds > at})
        out["pending_covered_after_s"] = f["covered_at"] - at if "covered_at" in f else None
        if first and "covered_at" in f:
            out["recovery_s"] = max(first, f["covered_at"]) - at
        return out
    if f["kind"] in ATTACKS:
        freed = f.get("freed_at")
        after = [c.committed_at for c in commits.values() if freed and c.committed_at > freed]
        if f["kind"] == "enospc":
            out.pop("until", None)
            out["recovery_s"] = min(after) - freed if after else None
        return out
    shard = f.get("shard")
    record = commits.get(shard) if shard else None
    if not shard or (record is not None and record.committed_at < at):
        out["hit_shard"] = False  # the victim ran nothing, or its shard was already committed
        return out
    if record is None:  # never committed (quarantined, or the run failed first)
        out.update(hit_shard=True, committed=False)
        return out
    out.update(hit_shard=True, committed_by=record.worker, recovery_s=record.committed_at - at,
               redispatched_s=f["redispatched_at"] - at if "redispatched_at" in f else None)
    return out


def p50(values: list[float]) -> float | None:
    """The median (linear interpolation, as `workers bench` and numpy take it), None for no values."""
    return percentile(values, 50) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--shard-rows", type=int, default=1000)
    ap.add_argument("--batch-s", type=float, default=0.03, help="simulated device time per batch")
    ap.add_argument("--fault-every-s", type=float, default=2.5, help="mean time between injected faults")
    ap.add_argument("--faults", type=int, default=16, help="injected faults in all (redis, kills, pauses, attacks)")
    ap.add_argument("--min-each", type=int, default=2, help="each fault kind at least this often, or the run fails")
    ap.add_argument("--stalls", type=int, default=3, help="shards that hang once until the hard time limit")
    ap.add_argument("--heartbeat-ttl-s", type=int, default=6, help="QWEN3B_HEARTBEAT_TTL_S (default 30)")
    ap.add_argument("--reconcile-interval-s", type=int, default=2, help="QWEN3B_RECONCILE_INTERVAL_S (default 10)")
    ap.add_argument("--time-limit-s", type=int, default=15, help="QWEN3B_TASK_TIME_LIMIT_S; soft = this - 3, "
                                                                 "visibility timeout = 2x this")
    ap.add_argument("--kinds", default=",".join(ALL_KINDS),
                    help="fault kinds to inject (default: all; anything less is not the chaos run the report promises)")
    ap.add_argument("--stuck-s", type=float, default=60,
                    help="no commit this long (more than any designed recovery: visibility timeout + TTL + interval + "
                         "a shard): an operator would be needed")
    ap.add_argument("--deadline-s", type=float, default=780, help="the whole script, both runs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=REPO / "bench-results" / "chaos.json")
    args = ap.parse_args()
    args.provenance = provenance("python scripts/chaos_run.py")  # the code that runs, confirmed at the end
    args.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(args.kinds) - set(ALL_KINDS)
    if unknown:
        raise SystemExit(f"--kinds: unknown {sorted(unknown)}; known: {', '.join(ALL_KINDS)}")
    if "stall" not in args.kinds:
        args.stalls = 0
    elif args.stalls < args.min_each:
        raise SystemExit(f"--stalls must be at least --min-each ({args.min_each})")
    script_started = time.time()
    deadline = script_started + args.deadline_s
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="q3b-chaos-"))
    model = ensure_random_model(REPO / ".cache" / "models", "embed", "tiny")
    corpus = root / "corpus.jsonl"
    ids, bad = write_corpus(corpus, args.rows, args.seed)
    env = cluster_settings(args)
    print(f"corpus: {args.rows:,} rows ({bad} bad on purpose) in {corpus}")
    print("settings (both runs, NOT the defaults): " + " ".join(f"{k}={v}" for k, v in env.items()))
    results, failure = {}, None
    fault_state = root / "chaos" / "faults"
    stall_shards: set[str] = set()
    baseline_shards: list[str] = []  # in plan order, read before the baseline's output goes
    for label, chaos in (("baseline", False), ("chaos", True)):
        run_env = dict(env)
        if chaos:
            # Shards from one random band between 55% and 80% of the plan (consumed roughly in order):
            # after every kind's --min-each turns (due by half the job, Killer.MIN_DONE_BY), since
            # while a stall is in progress Redis is not restarted; and close together, since one
            # window of stalls blocks less than three.
            ids_in_order = baseline_shards
            n = len(ids_in_order)
            width = max(args.stalls, 4 * args.workers)
            first = rng.randrange(n * 55 // 100, max(n * 55 // 100 + 1, n * 80 // 100 - width))
            band = ids_in_order[first: first + width] or ids_in_order
            stall_shards = set(rng.sample(band, min(args.stalls, len(band))))
            run_env["QWEN3B_FAULTS"] = ",".join(f"{STALL_POINT}:stall=600-once@{s}" for s in sorted(stall_shards))
            run_env["QWEN3B_FAULT_STATE"] = str(fault_state)
            print(f"stall shards (hang once in C after writing, until the hard limit): {sorted(stall_shards)}")
        run = Run(root / label, model, args, label, run_env, deadline)
        try:
            results[label] = run_job(run, corpus, chaos, rng, stall_shards, fault_state)
            results[label]["check"] = check(ids, run.out)
            baseline_shards = [s.shard_id for s in load_plan(OutputStore(run.out)).iter_shards()]
        except RunFailed as exc:
            diagnostics = run.diagnostics()
            print(f"\n\nFAILED: {exc}\nfaults so far:", file=sys.stderr)
            for f in exc.faults:
                print(f"  {f}", file=sys.stderr)
            print(diagnostics, file=sys.stderr)
            failure = {"label": label, "reason": str(exc), "operator_commands": run.operator_commands,
                       "faults_so_far": exc.faults, "diagnostics": diagnostics.splitlines()}
            break
        finally:
            run.stop()
    wall = time.time() - script_started
    if failure:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"passed": False, "failure": failure, "settings": env,
                                         "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                         "wall_s": wall}, indent=1))
        print(f"FAILED ({failure['reason']}); workdir kept at {root}; see {args.json}")
        raise SystemExit(1)
    try:
        report(results, args, env, stall_shards, wall)
    except SystemExit:
        print(f"workdir kept at {root}")
        raise
    # A passed run keeps its worker and Redis logs (small) for a post-mortem, not its ~100 MB of data.
    for label in results:
        shutil.rmtree(root / label / "out", ignore_errors=True)
        shutil.rmtree(root / label / "backing", ignore_errors=True)
    corpus.unlink(missing_ok=True)
    print(f"worker logs kept in {root}/*/logs")


def stats(values: list[float]) -> str:
    return f"{p50(values):5.1f}s / {max(values):5.1f}s" if values else "   n/a"


def report(results: dict, args, env: dict, stall_shards: set[str], wall: float) -> None:
    base, chaos = results["baseline"], results["chaos"]
    c = chaos["check"]
    faults = chaos["faults"]
    by_kind = Counter(f["kind"] for f in faults)
    shard_s = base["shard_seconds_p50"]
    ttl, interval, limit = args.heartbeat_ttl_s, args.reconcile_interval_s, args.time_limit_s
    # How soon a hit shard should be available again, by design (plus one poll of slack).
    # A killed pool child is noticed by its Celery parent (billiard) within a few seconds, which then requeues.
    # enospc: from the disk freed to the next commit: a worker may sleep its backoff's longest step first
    bound = {"kill-child": 4 + POLL_S, "kill-host": ttl + interval + 1 + POLL_S, "pause": ttl + interval + 1 + POLL_S,
             "stall": limit + 1 + POLL_S, "redis": interval + shard_s + 2 + POLL_S, "enospc": 20.0, "swap": 0.0,
             "garbage": 0.0}
    table, problems = {}, []
    for kind in args.kinds:
        mine = [f for f in faults if f["kind"] == kind]
        hit = [f for f in mine if f["kind"] in ("redis", "enospc") or f.get("hit_shard")]
        rec = [f["recovery_s"] for f in hit if f.get("recovery_s") is not None]
        red = [f["redispatched_s"] for f in hit if f.get("redispatched_s") is not None]
        if kind == "redis":
            red = [f["pending_covered_after_s"] for f in hit if f.get("pending_covered_after_s") is not None]
        if kind == "enospc":
            red = rec
        slow = [round(r, 1) for r in red if r > bound[kind]]
        table[kind] = {"count": len(mine), "hit_shard": len(hit), "recovery_p50_s": p50(rec),
                       "recovery_max_s": max(rec) if rec else None, "redispatched_p50_s": p50(red),
                       "redispatched_max_s": max(red) if red else None, "redispatch_bound_s": round(bound[kind], 1),
                       "redispatched_slower_than_bound": slow}
        if len(mine) < args.min_each:
            problems.append(f"{kind} happened {len(mine)} times, fewer than --min-each {args.min_each}")
        if kind not in ("redis", *ATTACKS) and len(hit) < min(args.min_each, len(mine)):
            problems.append(f"{kind} hit a running shard only {len(hit)} times of {len(mine)}")
        if len(rec) < len(hit):
            problems.append(f"{kind}: {len(hit) - len(rec)} faults have no recovery time")
    if chaos["logs"]["hard_time_limit_kills"] < len(stall_shards):
        problems.append(f"only {chaos['logs']['hard_time_limit_kills']} hard time limit kills for "
                        f"{len(stall_shards)} stalls")
    for label, r in results.items():
        ck = r["check"]
        if ck["rows_lost"] or ck["duplicate_ids"] or ck["unexpected_ids"]:
            problems.append(f"{label}: {ck['rows_lost']} rows lost, {ck['duplicate_ids']} duplicate ids, "
                            f"{ck['unexpected_ids']} unexpected ids")
        if r["quarantined"]:
            problems.append(f"{label}: quarantined shards {r['quarantined']}")
        if r["operator_commands"]:
            problems.append(f"{label}: {r['operator_commands']} operator commands needed")
        if r["decoy_commits"]:
            problems.append(f"{label}: {r['decoy_commits']} shards of the other model's job were committed")
        if r["crashed_workers"]:
            problems.append(f"{label}: workers exited that nothing killed: {r['crashed_workers']}")
    if "swap" in args.kinds and not chaos["logs"]["refused_other_model"]:  # a Redis restart may lose one
        problems.append(f"{by_kind['swap']} model-swap messages sent, none reached a worker: the fault tested nothing")
    all_recovery = [f["recovery_s"] for f in faults if f.get("recovery_s") is not None]
    print(f"\nchaos run: {args.rows:,} rows in {base['shards']} shards, {args.workers} workers, simulated device "
          f"{args.batch_s}s/batch, a fault every ~{args.fault_every_s}s ({args.faults} injected + {len(stall_shards)} "
          f"stalls)")
    print(f"settings (NOT the defaults): heartbeat TTL {ttl}s (default 30), reconciler every {interval}s (default 10), "
          f"hard time limit {limit}s (soft {limit - 3}s), visibility timeout {2 * limit}s, max attempts "
          f"{env['QWEN3B_MAX_ATTEMPTS']}")
    lines = [
        ("rows in", f"{c['rows_in']:,}"), ("rows out", f"{c['rows_out']:,}"),
        ("rows rejected", f"{c['rows_rejected']:,} {c['rejected_by_reason']}"),
        ("rows lost", f"{c['rows_lost']}  (must be 0)"), ("duplicate ids", f"{c['duplicate_ids']}  (must be 0)"),
        ("operator commands", f"{chaos['operator_commands']}  (must be 0: no resume, no status, nothing)"),
        ("quarantined shards", str(len(chaos["quarantined"]))),
        ("other-model shards", f"{chaos['logs']['refused_other_model']} refused, {chaos['decoy_commits']} committed "
                               "(must be 0)"),
        ("garbage entries", f"{by_kind['garbage'] * 2 * len(GARBAGE)} pushed, {chaos['logs']['garbage_dropped']} "
                            f"dropped; workers that exited unkilled: {chaos['crashed_workers'] or 'none'}"),
        ("store waits", f"{chaos['logs']['store_waits']} deliveries waited for the full disk"),
        ("success marker", chaos["success_marker"]),
        ("faults injected", ", ".join(f"{k} x{by_kind[k]}" for k in args.kinds)
         + ("" if set(args.kinds) == set(ALL_KINDS) else "  (--kinds: NOT every kind)")),
        ("hard time limit kills", f"{chaos['logs']['hard_time_limit_kills']} (for {len(stall_shards)} stalls)"),
        ("late commits that lost", f"{chaos['logs']['lost_race']} ('lost_race' in the worker logs)"),
        ("reconciler re-publishes", (f"{chaos['logs']['reconciler_shards_published']} shards in "
                                     f"{chaos['logs']['reconciler_passes_that_published']} passes (baseline: "
                                     f"{base['logs']['reconciler_shards_published']})")),
        ("runs of committed shards", (f"{chaos['logs']['already_committed']} deliveries found their shard already "
                                      f"committed (baseline: {base['logs']['already_committed']}): duplicate messages")),
        ("recovery p50 / max (all)", stats(all_recovery)),
        ("throughput without faults", f"{base['rows_per_s']:,.0f} rows/s ({base['seconds']:.0f}s)"),
        ("throughput with faults", (f"{chaos['rows_per_s']:,.0f} rows/s ({chaos['seconds']:.0f}s), "
                                    f"{chaos['rows_per_s'] / base['rows_per_s']:.2f}x")),
        ("baseline check", (f"lost {base['check']['rows_lost']}, duplicates {base['check']['duplicate_ids']}, "
                            f"operator commands {base['operator_commands']}")),
        ("wall time (both runs)", f"{wall:.0f}s"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    print(f"\nrecovery by fault kind (one shard takes ~{shard_s:.2f}s undisturbed):")
    print(f"{'kind':<11} {'n':>2} {'hit':>3}  {'to commit p50 / max':>20}  {'re-dispatched p50 / max':>23}  "
          f"{'bound':>6}  over bound")
    for kind, row in table.items():
        hit = [f for f in faults if f["kind"] == kind and (kind == "redis" or f.get("hit_shard"))]
        rec = [f["recovery_s"] for f in hit if f.get("recovery_s") is not None]
        red = [f["redispatched_s"] if kind != "redis" else f["pending_covered_after_s"] for f in hit]
        red = [r for r in red if r is not None]
        print(f"{kind:<11} {row['count']:>2} {row['hit_shard']:>3}  {stats(rec):>20}  {stats(red):>23}  "
              f"{row['redispatch_bound_s']:>5}s  {row['redispatched_slower_than_bound'] or ''}")
    print("  to commit: fault -> commit of the shard it hit (redis: -> commits again AND every shard published and "
          "pending at the restart queued or committed)\n  re-dispatched: fault -> the shard available again (a message waits for it, "
          "another process runs it, or it is committed; redis: every pending shard queued or committed)\n  bound: "
          "what the design promises for re-dispatch (TTL + interval for a dead or paused worker, the hard limit for "
          "a stall, Celery's requeue once billiard notices a killed child)")
    print("\nfaults in order:")
    t0 = min(f["at"] for f in faults) if faults else 0
    for f in sorted(faults, key=lambda f: f["at"]):
        extra = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in f.items()
                 if k not in ("kind", "at", "covered_at", "redispatched_at")}
        print(f"  +{f['at'] - t0:6.1f}s {f['kind']:<10} {extra}")
    passed = not problems
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {"passed": passed, "problems": problems,
               "settings": {**env, "note": "heartbeat TTL and reconcile interval are NOT the defaults (30 s, 10 s)"},
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "stall_shards": sorted(stall_shards), "wall_s": wall,
               "recovery_definition": {
                   "kill-child/kill-host/pause": "signal -> committed_at of the victim's heartbeat current_shard",
                   "stall": "stall start (-once marker mtime) -> committed_at of the shard",
                   "redis": "restart -> max(first commit of a shard started after the restart, every shard published "
                            "(below the cursor) and pending at the restart seen committed or named by a message in "
                            "the restarted broker)",
                   "redispatched": "fault -> a message for the shard waits in the queue, or a process other than the "
                                   "victim's runs it, or it is committed"},
               "recovery_by_kind": table,
               "operator_commands": chaos["operator_commands"] + base["operator_commands"],
               "throughput_ratio": chaos["rows_per_s"] / base["rows_per_s"],
               "baseline": {k: v for k, v in base.items() if k != "faults"},
               "chaos": {**chaos, "faults_by_kind": dict(by_kind)}}
    summary["provenance"] = confirm(args.provenance)
    args.json.write_text(json.dumps(summary, indent=1, default=sorted))
    print(f"\nfigures saved to {args.json}")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print("PASSED")


if __name__ == "__main__":
    main()
