"""The ONNX Runtime backend: fixed-shape artifacts from the compile queue (fp32, fp16, int8).

Each compiled length is its own session. A session holds its own copy of the weights, so a
worker's memory is about (compiled lengths) x (artifact size): compile the lengths a corpus
needs, not every multiple of 16.
"""

from pathlib import Path

import numpy as np

from common.errors import BackendUnavailableError, ConfigError
from workers.device import cpu_threads, parse_device
from workers.engines.fixed_shape import FixedShapeEngine


class OnnxEngine(FixedShapeEngine):
    backend = "onnx"

    def load_artifacts(self, artifacts: dict[int, Path]) -> None:
        ort = import_onnxruntime()
        providers = execution_providers(ort, self.spec.device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # constant-folding notices on every load are noise
        if providers[0] == "CPUExecutionProvider":
            options.intra_op_num_threads = cpu_threads()
        self.sessions = {seqlen: ort.InferenceSession(str(path), options, providers=providers)
                         for seqlen, path in artifacts.items()}
        self.output = "vector" if self.spec.task == "embed" else "logit_gap"

    def run_fixed(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        seqlen = input_ids.shape[1]
        mask = (np.arange(seqlen)[None, :] < lengths[:, None]).astype(np.int64)
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": mask}
        return self.sessions[seqlen].run([self.output], feeds)[0].astype(np.float32)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError("the onnx backend needs onnxruntime: pip install 'qwen3-batch[onnx]' "
                                      "(onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def execution_providers(ort, device: str) -> list:
    dev = parse_device(device)
    if dev.kind == "cpu":
        return ["CPUExecutionProvider"]
    if dev.kind == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(f"{device}: this onnxruntime has no CUDA provider; install onnxruntime-gpu")
        return [("CUDAExecutionProvider", {"device_id": dev.index}), "CPUExecutionProvider"]
    raise ConfigError(f"the onnx backend runs on cpu or cuda:N, not {device}; VACC cards use --backend vacc")
