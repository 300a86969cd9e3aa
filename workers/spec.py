"""A worker's start-up, as one typed object: written by `workers start` in the main process and
read back in the pool child that loads the model (CUDA cannot be initialised before the fork)."""

import json
import os

from pydantic import BaseModel, ConfigDict

from common import defaults
from common.settings import ENV_PREFIX
from workers.engines.base import EngineSpec

ENV = ENV_PREFIX + "WORKER_SPEC"


class WorkerSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: str = "shard"  # shard | compile
    queue: str
    device: str  # as the main process sees it (cuda:3); the child sees one card, engine_device
    engine_device: str = ""  # what the child's engine uses: cuda:0 once CUDA_VISIBLE_DEVICES pins the card
    model: str = "-"  # the checkpoint folder or hub id
    model_identity: str = ""
    task: str = "compile"
    backend: str = "-"
    dtype: str = "-"
    seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS
    torch_compile: str = defaults.DEFAULT_TORCH_COMPILE
    status_file: str = ""  # where the child writes why it could not load its model (the parent exits with it)
    main_pid: int = 0  # the `workers start` process: with the child's pid, the heartbeat names who holds the name

    def engine_spec(self) -> EngineSpec:
        return EngineSpec(model=self.model, task=self.task, backend=self.backend, dtype=self.dtype,
                          device=self.engine_device or self.device, seqlens=self.seqlens,
                          torch_compile=self.torch_compile)

    def public(self) -> dict:
        """What the heartbeat shows (`producer workers`, the producer's hints and checks)."""
        return {"device": self.device, "model": self.model, "model_identity": self.model_identity, "task": self.task,
                "dtype": self.dtype, "backend": self.backend, "queue": self.queue, "torch_compile": self.torch_compile,
                "main_pid": self.main_pid}

    def to_env(self) -> None:
        os.environ[ENV] = self.model_dump_json()

    @classmethod
    def from_env(cls, environ=None) -> "WorkerSpec":
        return cls.model_validate(json.loads((environ or os.environ)[ENV]))
