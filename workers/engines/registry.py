"""The one place that maps a backend name to its engine class."""

from common.errors import ConfigError
from workers.engines.base import Engine, EngineSpec


def _torch():
    from workers.engines.torch_engine import TorchEngine
    return TorchEngine


def _simulated():
    from workers.engines.simulated import SimulatedEngine
    return SimulatedEngine


def _onnx():
    from workers.engines.onnx_engine import OnnxEngine
    return OnnxEngine


def _vacc():
    from workers.engines.vacc_engine import VaccEngine
    return VaccEngine


# Imported lazily: a worker loads only the runtime of the backend it serves.
BACKENDS = {"torch": _torch, "onnx": _onnx, "vacc": _vacc, "simulated": _simulated}
COMPILED_BACKENDS = ("onnx", "vacc")  # served from artifacts of the compile queue


def engine_class(backend: str):
    try:
        return BACKENDS[backend]()
    except KeyError:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}") from None


def create_engine(spec: EngineSpec) -> Engine:
    return engine_class(spec.backend)(spec)


def create_engine_from_artifacts(spec: EngineSpec, artifacts: dict, batch: int) -> Engine:
    """A compiled backend's engine on given artifact files ({seqlen: entry}), not the store's:
    how a staged artifact is validated before it is published."""
    if spec.backend not in COMPILED_BACKENDS:
        raise ConfigError(f"{spec.backend} is not a compiled backend")
    return engine_class(spec.backend)(spec, artifacts=artifacts, batch=batch)
