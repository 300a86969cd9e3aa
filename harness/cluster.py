"""A whole cluster on one machine: a private redis-server and worker processes.

Used by the integration tests, the pipeline benchmark and the chaos run, so all of them start
Redis and workers exactly the way a user would (`workers start ...`), as real processes.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from common import keys

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """redis-server on a free port, configured as a broker should be (noeviction)."""

    workdir: Path
    port: int = 0
    appendonly: bool = False
    extra_args: list = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (make redis installs it)")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
             "--maxmemory-policy", "noeviction", "--dir", str(self.workdir), *self.extra_args],
            stdout=open(self.workdir / f"redis-{self.port}.log", "ab"), stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 10) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.workdir}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        """Same port, same data dir: keeps what persistence (if on) kept, loses the rest."""
        self.stop()
        self.start()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """The Celery parent and its pool children."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        return [self.process.pid, *map(int, out)]

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 15) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal_all(signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# Tests, benchmarks and the chaos run keep corpora and outputs in temporary folders and models in the
# checkout's cache, while the processes run in the checkout: roots that hold them (a caller's env wins).
HARNESS_ROOTS = {"QWEN3B_OUTPUT_ROOT": tempfile.gettempdir(),
                 "QWEN3B_INPUT_ROOTS": f"{tempfile.gettempdir()},{REPO_ROOT / '.cache'}"}


def base_env(broker_url: str, extra: dict | None = None) -> dict:
    env = dict(os.environ, QWEN3B_BROKER_URL=broker_url, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    for name, value in HARNESS_ROOTS.items():
        env.setdefault(name, value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def start_worker(broker_url: str, model: str, name: str, logdir: Path, task: str = "embed", dtype: str = "fp32",
                 backend: str = "torch", env: dict | None = None, pool: str = "prefork",
                 threads: int | None = None, device: str = "cpu") -> Worker:
    """name "": started without --name, as a user may; the worker chooses a name of its own, which
    `named` reads from its log (until then Worker.name is a label for its log file)."""
    extra = dict(env or {})
    if threads:
        extra.setdefault("OMP_NUM_THREADS", str(threads))
    naming = ["--name", name] if name else []
    return start_cli(["workers", "start", "--model", model, "--task", task, "--dtype", dtype, "--backend", backend,
                      "--device", device, *naming, "--pool", pool], name or f"unnamed-{os.urandom(3).hex()}",
                     broker_url, logdir, extra)


def named(worker: Worker, timeout_s: float = 60) -> Worker:
    """A worker started without --name, its Worker.name set to the name it chose (its first line
    says it: `worker NAME: queue ...`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in worker.log().splitlines():
            if line.startswith("worker ") and ": queue " in line:
                worker.name = line.split()[1].rstrip(":")
                return worker
        if not worker.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"worker {worker.name} did not say its name:\n{worker.log()[-3000:]}")


def start_compile_worker(broker_url: str, name: str, logdir: Path, env: dict | None = None,
                         pool: str = "prefork") -> Worker:
    """`workers start --compile`: consumes the compile queue; artifacts go to QWEN3B_ARTIFACT_STORE."""
    return start_cli(["workers", "start", "--compile", "--name", name, "--pool", pool], name, broker_url, logdir, env)


def start_cli(args: list[str], name: str, broker_url: str, logdir: Path, env: dict | None = None,
              launcher: tuple[str, ...] = ()) -> Worker:
    """Any command line of ours (["workers", "start", ...], as docker-compose.yml writes it) as a
    process of this checkout; `launcher` runs it elsewhere, e.g. ("ip", "netns", "exec", "host1")."""
    logdir.mkdir(parents=True, exist_ok=True)
    log_path = logdir / f"worker-{name}.log"
    process = subprocess.Popen(
        [*launcher, sys.executable, "-m", *args], env=base_env(broker_url, env), stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
    return Worker(name, process, log_path)


def wait_for_workers(client: redis.Redis, workers: list[Worker], timeout_s: float = 120) -> None:
    """Until every worker has loaded its model and published a heartbeat."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise RuntimeError(f"worker {dead[0].name} exited:\n{dead[0].log()[-3000:]}")
        if all(client.exists(keys.worker_heartbeat(w.name)) for w in workers):
            return
        time.sleep(0.2)
    raise TimeoutError("workers did not come up:\n" + "\n".join(w.log()[-2000:] for w in workers))


def run_cli(module: str, args: list[str], broker_url: str, timeout_s: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=base_env(broker_url, env), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def heartbeat(client: redis.Redis, name: str) -> dict | None:
    raw = client.get(keys.worker_heartbeat(name))
    return json.loads(raw) if raw else None
