"""The VACC backend: artifacts from `vamc compile`, run through the vendor runtime `vaststreamx`.

As the vendor's deployment drives it (VastModelZOO qwen3-0.6b build_in/vsx): `vsx.set_device(id)`,
`vsx.Model(prefix, batch_size)`, a BERT_EMBEDDING_OP operator and a ModelOperator in a
`vsx.Graph`, a `vsx.Stream(graph, StreamBalanceMode.ONCE)` with the model's output registered,
`build()`, then `run_sync` on a list of samples. A sample is six int32 tensors of shape
[1, seqlen] on the device (`vsx.from_numpy(array, device_id)`), in the vendor's order:
embedding ids, mask, token types (zeros), mask, mask, mask; reranker ids and five masks. The
model returns the hidden states [seqlen, hidden] (embedding) or the logits [seqlen, vocab]
(reranker) of each sample; rows are right-padded to the compiled length, so the last real token
is at len - 1, where this engine pools (embedding) or reads logit(yes) - logit(no) (reranker).

NOT RUN ON A REAL CARD: no VACC card or SDK exists where this was written. The tests drive it
with a stand-in module that checks the tensors' count, shapes, dtypes and order and computes
the outputs with the torch model.
"""

import importlib
from pathlib import Path

import numpy as np

from common.errors import BackendUnavailableError, ConfigError
from workers.device import parse_device
from workers.engines.fixed_shape import FixedShapeEngine

INPUT_ORDER = {
    "embed": ("input_ids", "attention_mask", "token_type_ids", "attention_mask", "attention_mask", "attention_mask"),
    "rerank": ("input_ids",) + ("attention_mask",) * 5,
}
OUTPUT = {"embed": "hidden_states", "rerank": "logits"}
VSX_MODULE = "vaststreamx"


def import_vaststreamx():
    try:
        return importlib.import_module(VSX_MODULE)
    except ImportError as exc:
        raise BackendUnavailableError(
            "the vacc backend needs the VastAI runtime SDK (python module vaststreamx), which is not installed "
            "here; it ships with the vendor's driver package, not on any public package index") from exc


def vaststreamx_available() -> bool:
    try:
        import_vaststreamx()
    except BackendUnavailableError:
        return False
    return True


class VaccEngine(FixedShapeEngine):
    backend = "vacc"

    def load_artifacts(self, artifacts: dict[int, Path]) -> None:
        self.vsx = import_vaststreamx()
        device = parse_device(self.spec.device)
        if device.kind != "vacc":
            raise ConfigError(f"the vacc backend runs on vacc:N devices, not {self.spec.device}")
        self.device_id = device.index
        if self.vsx.set_device(self.device_id) != 0:
            raise ConfigError(f"vaststreamx could not open VACC device {self.device_id}")
        self.streams = {seqlen: self.build_stream(str(prefix)) for seqlen, prefix in artifacts.items()}

    def build_stream(self, prefix: str):
        vsx = self.vsx
        model = vsx.Model(prefix, self.batch_rows)
        graph = vsx.Graph(do_copy=False)
        model_op = vsx.ModelOperator(model)
        graph.add_operators(vsx.Operator(vsx.OpType.BERT_EMBEDDING_OP), model_op)
        stream = vsx.Stream(graph, vsx.StreamBalanceMode.ONCE)
        stream.register_operator_output(model_op)
        stream.build()
        return stream

    def run_fixed(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        seqlen = input_ids.shape[1]
        samples = [self.sample_tensors(input_ids[i], int(lengths[i])) for i in range(len(lengths))]
        outputs = self.streams[seqlen].run_sync(samples)
        last = [self.vsx.as_numpy(out[0]).astype(np.float32).reshape(seqlen, -1)[int(n) - 1]
                for out, n in zip(outputs, lengths)]
        last = np.stack(last)
        if self.spec.task == "embed":
            return last
        return last[:, self.yes_id] - last[:, self.no_id]

    def sample_tensors(self, ids: np.ndarray, length: int) -> list:
        seqlen = len(ids)
        arrays = {"input_ids": ids.astype(np.int32)[None, :],
                  "attention_mask": (np.arange(seqlen) < length).astype(np.int32)[None, :],
                  "token_type_ids": np.zeros((1, seqlen), dtype=np.int32)}
        return [self.vsx.from_numpy(arrays[name], self.device_id) for name in INPUT_ORDER[self.spec.task]]
