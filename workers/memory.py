"""A worker's memory, for its heartbeat and the benchmarks: resident now, the high-water mark, and
the device's peak allocation where the engine runs on CUDA."""

import sys
from pathlib import Path


def process_memory() -> dict:
    """{"rss_mib", "peak_rss_mib"[, "device_peak_mib"]} of this process (Linux /proc; empty elsewhere)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key = "rss_mib" if line.startswith("VmRSS") else "peak_rss_mib"
                out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    torch = sys.modules.get("torch")  # only a worker whose engine imported torch; never import it here
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["device_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
