"""Engine instances: one spawned process each, pinned to its device, fed from one shared queue.

Every instance loads its own engine in its own process (as a worker does), so N instances on a
card measure what N workers on that card would get. Processes are spawned, not forked: the
child pins its device (CUDA_VISIBLE_DEVICES, CPU affinity) before anything imports torch.

Messages: the driver puts request ids on the shared `requests` queue, so whichever instance is
free takes the next one; per-instance `control` queues carry prepare / serve / exit; everything
comes back on `results` as (kind, instance, ...).
"""

import multiprocessing
import os
import platform
import queue
import sys
import time
import traceback
from dataclasses import asdict, dataclass

from common.errors import Qwen3BatchError
from workers.bench.errors import BenchError

POLL_S = 1.0  # how often a waiting driver checks that its instances are still alive
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Placement:
    instance: int
    device: str                    # as the user named it: cpu, cuda:1, vacc:0
    engine_device: str             # what the engine is given once the process is pinned
    cuda_visible_devices: str | None = None
    cpu_cores: tuple[int, ...] | None = None


def plan_placements(devices: tuple[str, ...], per_device: int, cores: list[int] | None = None,
                    environ: dict | None = None) -> list[Placement]:
    """Where each instance runs. A CUDA instance sees only its card, as cuda:0 (an existing
    CUDA_VISIBLE_DEVICES list is honoured: cuda:1 is its second entry). CPU instances share this
    process's cores in disjoint contiguous groups, so two instances do not fight over one core."""
    environ = os.environ if environ is None else environ
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    visible = [x.strip() for x in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    n_cpu = per_device if "cpu" in devices else 0
    placements = []
    for device in devices:
        for k in range(per_device):
            i = len(placements)
            if device == "cpu":
                placements.append(Placement(i, device, "cpu", cpu_cores=core_group(cores, k, n_cpu)))
            elif device.startswith("cuda:"):
                index = int(device.split(":")[1])
                if visible and index >= len(visible):
                    raise BenchError(f"{device} requested but CUDA_VISIBLE_DEVICES={','.join(visible)} "
                                     f"holds only {len(visible)} devices")
                placements.append(Placement(i, device, "cuda:0", visible[index] if visible else str(index)))
            else:  # other accelerators are pinned by their backend from the device name itself
                placements.append(Placement(i, device, device))
    return placements


def core_group(cores: list[int], k: int, n: int) -> tuple[int, ...]:
    """The k-th of n disjoint contiguous groups of cores; with more instances than cores,
    instances take one core each, round robin."""
    if n > len(cores):
        return (cores[k % len(cores)],)
    size, extra = divmod(len(cores), n)
    start = k * size + min(k, extra)
    return tuple(cores[start:start + size + (k < extra)])


def pin(placement: Placement) -> None:
    """Restrict this process to its device before any runtime is imported."""
    if placement.cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = placement.cuda_visible_devices
    if placement.cpu_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, placement.cpu_cores)


# --- the instance process ------------------------------------------------------------------------
def serve_instance(placement: Placement, spec_fields: dict, control, requests, results) -> None:
    """Load the engine, then obey control commands until told to exit."""
    try:
        pin(placement)
        from workers.engines.base import EngineSpec
        from workers.engines.registry import create_engine

        engine = create_engine(EngineSpec(device=placement.engine_device, **spec_fields))
        results.put(("ready", placement.instance, describe_instance(engine, placement)))
        batch = None
        while True:
            command, *args = control.get()
            if command == "prepare":
                batch = prepare(engine, *args)
                results.put(("prepared", placement.instance))
            elif command == "serve":
                serve_requests(engine, batch, placement.instance, requests, results)
            else:
                return
    except Qwen3BatchError as exc:  # the project's own errors already say what to do
        results.put(("error", placement.instance, f"{type(exc).__name__}: {exc}"))
    except BaseException:  # noqa: BLE001 - anything that kills an instance must reach the driver
        results.put(("error", placement.instance, traceback.format_exc()))


def prepare(engine, batch_size: int, seqlen: int, warmup: int, seed: int):
    """Build this configuration's request and run it `warmup` times (kernel selection, caches)."""
    from workers.bench.inputs import fixed_shape_batch, run_request

    batch = fixed_shape_batch(engine, batch_size, seqlen, seed)
    for _ in range(warmup):
        out = run_request(engine, batch)
        if len(out) != batch_size:
            raise BenchError(f"the engine returned {len(out)} rows for a batch of {batch_size}")
    return batch


def serve_requests(engine, batch, instance: int, requests, results) -> None:
    """Run requests from the shared queue until this instance takes a stop marker (None)."""
    from workers.bench.inputs import run_request

    while (request_id := requests.get()) is not None:
        start = time.perf_counter()
        run_request(engine, batch)
        results.put(("done", instance, request_id, time.perf_counter() - start))
    results.put(("idle", instance))


def describe_instance(engine, placement: Placement) -> dict:
    """What ran where: device name, torch version (when the backend uses torch), threads."""
    info = {**asdict(placement), "pid": os.getpid(), "engine": type(engine).__name__,
            "random_weights": engine.info.random_weights, "hidden_size": engine.info.hidden_size,
            "device_name": cpu_name() if placement.engine_device == "cpu" else placement.device,
            "torch_version": None, "cuda_version": None, "torch_threads": None}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_version"] = torch.__version__
        info["cuda_version"] = torch.version.cuda
        info["torch_threads"] = torch.get_num_threads()
        if placement.engine_device.startswith("cuda"):
            info["device_name"] = torch.cuda.get_device_name(0)
    return info


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- the driver's side ---------------------------------------------------------------------------
class InstancePool:
    """The instance processes of one benchmark run, and the queues that reach them."""

    def __init__(self, placements: list[Placement], spec_fields: dict):
        context = multiprocessing.get_context("spawn")
        self.placements = placements
        self.requests = context.Queue()
        self.results = context.Queue()
        self.controls = [context.Queue() for _ in placements]
        self.processes = [context.Process(target=serve_instance, name=f"bench-instance-{p.instance}",
                                          args=(p, spec_fields, c, self.requests, self.results), daemon=True)
                          for p, c in zip(placements, self.controls)]

    def __enter__(self) -> "InstancePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> list[dict]:
        """Start every instance and wait until each has loaded its engine; their descriptions."""
        for process in self.processes:
            process.start()
        ready = [self.expect("ready", "loading its engine") for _ in self.processes]
        return sorted((message[2] for message in ready), key=lambda info: info["instance"])

    def prepare(self, batch_size: int, seqlen: int, warmup: int, seed: int) -> None:
        for control in self.controls:
            control.put(("prepare", batch_size, seqlen, warmup, seed))
        for _ in self.controls:
            self.expect("prepared", f"warming up on batch {batch_size} x {seqlen}")

    def begin_serving(self) -> None:
        for control in self.controls:
            control.put(("serve",))

    def end_serving(self) -> None:
        """Stop every instance's serving loop and wait until all have left it, so no instance can
        take a stop marker meant for another in the next measurement."""
        for _ in self.controls:
            self.requests.put(None)
        for _ in self.controls:
            self.expect("idle", "stopping")

    def submit(self, request_id: int) -> None:
        self.requests.put(request_id)

    def receive(self) -> tuple[int, int, float]:
        """(instance, request id, seconds the instance spent on it) of the next finished request."""
        _, instance, request_id, compute_s = self.expect("done", "running a request")
        return instance, request_id, compute_s

    def expect(self, kind: str, doing: str) -> tuple:
        """The next message, which must be of this kind; fails clearly when an instance died."""
        while True:
            try:
                message = self.results.get(timeout=POLL_S)
            except queue.Empty:
                self.check_alive(doing)
                continue
            if message[0] == "error":
                raise BenchError(f"instance {message[1]} ({self.placements[message[1]].device}) failed while "
                                 f"{doing}: {message[2]}")
            if message[0] != kind:
                raise BenchError(f"instance {message[1]} sent {message[0]!r} while {doing} (expected {kind!r})")
            return message

    def check_alive(self, doing: str) -> None:
        for placement, process in zip(self.placements, self.processes):
            if process.exitcode is not None:
                raise BenchError(f"instance {placement.instance} ({placement.device}) exited with code "
                                 f"{process.exitcode} while {doing} (out of memory? see its output above)")

    def close(self) -> None:
        """Ask every instance to exit (a stop marker first, in case it is still serving); terminate
        those that do not within STOP_TIMEOUT_S."""
        for control, process in zip(self.controls, self.processes):
            if process.is_alive():
                self.requests.put(None)
                control.put(("exit",))
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            if process.pid is None:
                continue
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(5)
