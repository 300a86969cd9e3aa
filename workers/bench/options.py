"""What one `workers bench` run measures: the engine, where it runs, and the request shapes."""

import itertools
from dataclasses import asdict, dataclass

from common.options import check_torch_compile
from workers.bench.errors import BenchError
from workers.device import parse_device

MODES = ("throughput", "latency")
DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
# Throughput mode keeps this many requests in flight per instance unless told otherwise: one
# running and one waiting, so an instance never idles while the driver hands out the next one.
IN_FLIGHT_PER_INSTANCE = 2
# Rows below this length cannot hold a request: the engine's own floor (workers.batching).
MIN_SEQLEN = 8


@dataclass(frozen=True)
class BenchOptions:
    model: str
    task: str = "embed"
    backend: str = "torch"
    dtype: str = "bf16"
    devices: tuple[str, ...] = ("cpu",)
    instances_per_device: int = 1
    batch_sizes: tuple[int, ...] = (8,)
    seqlens: tuple[int, ...] = (512,)
    modes: tuple[str, ...] = MODES
    warmup: int = 3                # untimed requests per instance and configuration
    iterations: int = 20           # timed requests per configuration and mode
    queue_depth: int = 0           # throughput mode: requests in flight; 0 = IN_FLIGHT_PER_INSTANCE each
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    seed: int = 0
    torch_compile: str = "off"     # torch backend: off | inductor | cudagraphs (workers start --torch-compile)

    def __post_init__(self):
        if self.task not in ("embed", "rerank"):
            raise BenchError(f"--task must be embed or rerank, got {self.task!r}")
        if not self.devices:
            raise BenchError("--devices names no device; e.g. --devices cpu or --devices cuda:0,cuda:1")
        for name, values in (("batch size", self.batch_sizes), ("sequence length", self.seqlens)):
            if not values or min(values) < 1:
                raise BenchError(f"every {name} must be a positive integer, got {list(values)}")
        if min(self.seqlens) < MIN_SEQLEN:
            raise BenchError(f"sequence lengths must be >= {MIN_SEQLEN} tokens, got {list(self.seqlens)}")
        bad_modes = [m for m in self.modes if m not in MODES]
        if bad_modes or not self.modes:
            raise BenchError(f"--mode must be throughput, latency or both, got {list(self.modes)}")
        if self.instances_per_device < 1 or self.iterations < 1 or self.warmup < 0 or self.queue_depth < 0:
            raise BenchError("--instances and --iterations must be >= 1, --warmup and --queue-depth >= 0")
        for device in self.devices:
            check_torch_compile(self.torch_compile, self.backend, device)

    @property
    def n_instances(self) -> int:
        return len(self.devices) * self.instances_per_device

    @property
    def in_flight_limit(self) -> int:
        """Requests in flight in throughput mode (latency mode always has one)."""
        return self.queue_depth or IN_FLIGHT_PER_INSTANCE * self.n_instances

    def configs(self) -> list[tuple[int, int]]:
        """(batch size, sequence length) in sweep order: lengths outermost, batches ascending."""
        return [(b, s) for s, b in itertools.product(self.seqlens, self.batch_sizes)]

    def as_json(self) -> dict:
        out = asdict(self)
        out["in_flight_limit"] = self.in_flight_limit
        return out


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(int(x) for x in text.replace(" ", "").split(",") if x))
    except ValueError:
        raise BenchError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise BenchError(f"{what} is empty")
    return values


def parse_percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted({float(x) for x in text.replace(" ", "").split(",") if x}))
    except ValueError:
        raise BenchError(f"--percentiles must be comma-separated numbers, e.g. 50,90,95,99; got {text!r}") from None
    if not values or values[0] < 0 or values[-1] > 100:
        raise BenchError(f"--percentiles must be numbers from 0 to 100, got {text!r}")
    return values


def parse_devices(text: str) -> tuple[str, ...]:
    """Canonical device names (cpu, cuda:1), each at most once: instances per device is --instances."""
    names = [str(parse_device(x)) for x in text.split(",") if x.strip()]
    if len(set(names)) != len(names):
        raise BenchError(f"--devices {text!r} names a device twice; use --instances for more per device")
    return tuple(names)


def parse_modes(text: str) -> tuple[str, ...]:
    return MODES if text == "both" else (text,)
