"""The option values a job, a worker and an engine share, checked in one place: tasks, backends,
dtypes and their combinations, length buckets, MRL dimensions. Every message names the option."""

import re
from collections.abc import Sequence

from common import defaults
from common.errors import ConfigError

TASKS = ("embed", "rerank")
BACKENDS = ("torch", "onnx", "vacc", "simulated")  # the engines of workers/engines/registry.py
COMPILED_BACKENDS = ("onnx", "vacc")  # served from artifacts of the compile queue
DTYPES = ("fp32", "bf16", "fp16", "int8")
DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?|vacc(:[0-9]+)?)$", re.IGNORECASE)  # workers/device.py pins it


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: choose embed or rerank")
    return task


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return backend


def check_device(device: str) -> str:
    if not DEVICE.match(device.strip()):
        raise ConfigError(f"--device {device!r}: choose cpu, cuda:N or vacc:N")
    return device


def check_dtype(dtype: str, backend: str) -> str:
    """The dtype a backend can run: fp16 ONNX and VACC exist only as compiled artifacts; int8 is an
    ONNX artifact or the torch engine's int8 linear layers (torchao, CPU only: see check_int8_device)."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    compiled = defaults.COMPILE_DTYPES.get(backend)
    if compiled and dtype not in compiled:
        raise ConfigError(f"--dtype {dtype}: {backend} artifacts are compiled in {', '.join(compiled)}")
    if dtype == "int8" and backend not in (*COMPILED_BACKENDS, "torch"):
        raise ConfigError(f"--dtype int8: {backend} has no int8; use --backend torch (a CPU) or --backend onnx "
                          "(after producer compile --dtype int8)")
    return dtype


def check_int8_device(dtype: str, backend: str, device: str) -> str:
    """The torch engine's int8 (torchao dynamic int8 linear layers) is measured on x86 CPUs only."""
    if dtype == "int8" and backend == "torch" and not device.strip().lower().startswith("cpu"):
        raise ConfigError(f"--dtype int8 on the torch backend runs on the CPU only, not {device}: use bf16 on an "
                          "accelerator")
    return dtype


def check_torch_compile(mode: str, backend: str, device: str) -> str:
    """--torch-compile: a torch-backend option; CUDA graphs exist only on CUDA."""
    if mode not in defaults.TORCH_COMPILE_MODES:
        raise ConfigError(f"--torch-compile {mode!r}: choose one of {', '.join(defaults.TORCH_COMPILE_MODES)}")
    if mode != "off" and backend != "torch":
        raise ConfigError(f"--torch-compile {mode}: only the torch backend compiles graphs (this is {backend}; its "
                          "artifacts are compiled by producer compile)")
    if mode == "cudagraphs" and not device.startswith("cuda"):
        raise ConfigError(f"--torch-compile cudagraphs needs a CUDA device, not {device}")
    return mode


def parse_seqlens(text: str) -> tuple[int, ...]:
    """"64,128,256,512" -> (64, 128, 256, 512), for the --seqlens options."""
    try:
        return validate_seqlens(tuple(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise ConfigError(f"--seqlens {text!r}: expected comma-separated integers like 64,128,256,512") from None


def validate_seqlens(seqlens: Sequence[int], multiple: int = 1) -> tuple[int, ...]:
    """Sorted unique bucket lengths; compiled backends require multiples of 16."""
    out = tuple(sorted({int(s) for s in seqlens}))
    if not out or out[0] < 8:
        raise ConfigError(f"--seqlens: lengths must be >= 8 tokens, got {list(seqlens)}")
    if out[-1] > defaults.MAX_SEQLEN:
        raise ConfigError(f"--seqlens: {out[-1]} is above the models' context of {defaults.MAX_SEQLEN} tokens")
    bad = [s for s in out if s % multiple]
    if bad:
        raise ConfigError(f"--seqlens: {bad} are not multiples of {multiple} (compiled shapes need that)")
    return out


def check_dim(dim: int | None, hidden_size: int | None = None) -> int | None:
    """An MRL dimension: at least the smallest trained one, at most the model's hidden size once known."""
    if dim is None:
        return None
    if dim < defaults.MIN_EMBEDDING_DIM:
        raise ConfigError(f"--dim {dim}: Qwen3-Embedding supports MRL dims from {defaults.MIN_EMBEDDING_DIM}")
    if hidden_size is not None and dim > hidden_size:
        raise ConfigError(f"--dim {dim} is above the model's hidden size {hidden_size}: choose {defaults.MIN_EMBEDDING_DIM}"
                          f"..{hidden_size}, or leave --dim out for the full {hidden_size}")
    return dim
