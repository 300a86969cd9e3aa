"""The one place that maps a backend name to its engine class."""

from common.errors import ConfigError
from workers.engines.base import Engine, EngineSpec


def _torch():
    from workers.engines.torch_engine import TorchEngine
    return TorchEngine


def _simulated():
    from workers.engines.simulated import SimulatedEngine
    return SimulatedEngine


# Imported lazily: a worker loads only the runtime of the backend it serves.
BACKENDS = {"torch": _torch, "simulated": _simulated}


def create_engine(spec: EngineSpec) -> Engine:
    try:
        factory = BACKENDS[spec.backend]
    except KeyError:
        raise ConfigError(f"unknown backend {spec.backend!r}; available: {', '.join(sorted(BACKENDS))}") from None
    return factory()(spec)
