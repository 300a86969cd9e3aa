"""Parsing and pinning a worker's device: cpu, cuda:N or vacc:N."""

import os
from dataclasses import dataclass

from common.errors import ConfigError
from common.options import check_device

KINDS = ("cpu", "cuda", "vacc")


@dataclass(frozen=True)
class Device:
    kind: str
    index: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind == "cpu" else f"{self.kind}:{self.index}"


def parse_device(text: str) -> Device:
    check_device(text)  # cpu, cuda[:N] or vacc[:N]
    kind, _, index = text.strip().lower().partition(":")
    return Device(kind) if kind == "cpu" else Device(kind, int(index or 0))


def torch_device(device: Device):
    """The torch device for this worker; fails clearly when the card is not there."""
    import torch

    if device.kind == "vacc":
        raise ConfigError("vacc devices are driven by the vacc backend, not torch; use --backend vacc")
    if device.kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{device} requested but torch sees no CUDA device (CPU build of torch, or no driver)")
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"{device} requested but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(device.index)
        return torch.device("cuda", device.index)
    return torch.device("cpu")


def cpu_threads() -> int:
    """Threads for a CPU engine: what this process may use, not what the host has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
