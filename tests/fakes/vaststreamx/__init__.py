"""A stand-in for the VastAI runtime SDK `vaststreamx`, with the calls the vendor's Qwen3 demo
makes. Every call is recorded in CALLS. run_sync checks each sample against the contract (six
int32 tensors of shape [1, seqlen] on the device set with set_device) and computes the model
output the real card returns, with the torch checkpoint named in the fake mod.json: hidden states
[seqlen, hidden] (Qwen3Model) or logits [seqlen, vocab] (Qwen3ForCausalLM), from tensor 0 as the
token ids under plain causal attention (right padding never reaches a real token)."""

import json

import numpy as np

CALLS: list[tuple] = []
_state = {"device": None}


class OpType:
    BERT_EMBEDDING_OP = 7


class StreamBalanceMode:
    ONCE = 0


class Tensor:
    def __init__(self, array: np.ndarray, device_id: int):
        self.array, self.device_id = array, device_id


def set_device(device_id: int) -> int:
    CALLS.append(("set_device", device_id))
    _state["device"] = device_id
    return 0


def from_numpy(array, device_id: int) -> Tensor:
    return Tensor(np.array(array, copy=True), device_id)


def as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor.array


class Model:
    def __init__(self, prefix: str, batch_size: int):
        CALLS.append(("Model", prefix, batch_size))
        info = json.loads(open(prefix + ".json").read())
        self.seqlen, self.batch_size = info["seqlen"], batch_size
        import torch
        from transformers import AutoConfig, Qwen3ForCausalLM, Qwen3Model

        arch = AutoConfig.from_pretrained(info["checkpoint"]).architectures[0]
        cls = Qwen3ForCausalLM if arch == "Qwen3ForCausalLM" else Qwen3Model
        self.net = cls.from_pretrained(info["checkpoint"], dtype=torch.float32).eval()
        self.logits = cls is Qwen3ForCausalLM


class Operator:
    def __init__(self, op_type):
        CALLS.append(("Operator", op_type))


class ModelOperator:
    def __init__(self, model: Model):
        self.model = model


class Graph:
    def __init__(self, do_copy: bool = True):
        self.ops = []

    def add_operators(self, *ops):
        self.ops.extend(ops)


class Stream:
    def __init__(self, graph: Graph, mode):
        self.graph, self.built, self.output = graph, False, None

    def register_operator_output(self, op):
        self.output = op

    def build(self):
        assert any(isinstance(op, Operator) for op in self.graph.ops), "no BERT_EMBEDDING_OP in the graph"
        assert self.output is not None, "no registered output"
        self.built = True

    def run_sync(self, samples: list) -> list:
        import torch

        assert self.built, "run_sync before build()"
        model = self.output.model
        assert len(samples) <= model.batch_size, (len(samples), model.batch_size)
        outputs = []
        for sample in samples:
            CALLS.append(("sample", [(t.array.dtype.name, t.array.shape, t.device_id) for t in sample],
                          [t.array.copy() for t in sample]))
            assert len(sample) == 6, f"{len(sample)} input tensors, the model takes 6"
            for t in sample:
                assert t.array.dtype == np.int32 and t.array.shape == (1, model.seqlen), (t.array.dtype, t.array.shape)
                assert t.device_id == _state["device"], "tensor on another device than set_device"
            ids = torch.from_numpy(sample[0].array.astype(np.int64))
            with torch.no_grad():
                out = model.net(input_ids=ids, use_cache=False)
            value = out.logits[0] if model.logits else out.last_hidden_state[0]
            outputs.append([Tensor(value.float().numpy().astype(np.float16), _state["device"])])
        return outputs
