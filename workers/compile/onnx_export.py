"""Export a Qwen3 checkpoint to ONNX at one fixed [batch, seqlen] shape, then fp16 or int8.

The graphs compute exactly what the engines' backends compute, nothing more:
- embedding: `vector` [batch, hidden] float32, the final hidden state at each row's last real
  token (attention_mask.sum(1) - 1), L2-normalised over the hidden axis. The engine takes MRL
  prefixes of it and normalises again, which equals normalising the prefix directly.
- reranker: `logit_gap` [batch] = logit(yes) - logit(no) at the last real token, and `score`
  [batch] = sigmoid(logit_gap) = P(yes). Only the two LM-head rows are in the graph, never the
  [seqlen, vocab] logits the vendor's compiled reranker returns.
Inputs are `input_ids` and `attention_mask`, int64 [batch, seqlen], right-padded. The mask
only locates the last real token: under causal attention a real token never sees the padding
after it, so the network runs its plain causal path (as the torch engine does).

fp16: the fp32 graph converted with onnxruntime's float16 converter, inputs and outputs kept in
their fp32/int64 types. int8: onnxruntime's dynamic quantisation of the MatMul weights (int8,
per output channel; activations quantised per batch at run time); the embedding table and
norms stay fp32.
"""

import logging
import time
from pathlib import Path

from common.errors import BackendUnavailableError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = {"embed": ("vector",), "rerank": ("logit_gap", "score")}
OPSET = 18


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the ONNX backend needs onnx, onnxruntime and onnxscript ({exc.name} is missing): "
            f"pip install 'qwen3-batch[onnx]'") from exc


INT8_WEIGHTS = "dynamic MatMul, per-channel qint8, reduce_range"  # how quantize_int8 builds them (manifest)


def tool_versions(dtype: str) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}
    return dict(versions, int8_weights=INT8_WEIGHTS) if dtype == "int8" else versions


def export(model: str, task: str, batch: int, seqlen: int, dtype: str, out_dir: Path,
           fp32_graph: Path | None = None) -> list[str]:
    """Write the artifact's files into out_dir; returns their names, the entry point first.
    fp32_graph: the published fp32 artifact of the same shape, which fp16 and int8 are derived
    from instead of exporting again (the export is most of a compile's time and memory)."""
    require_onnx()
    if dtype == "fp32" or fp32_graph is None:
        fp32_dir = out_dir if dtype == "fp32" else out_dir / "fp32"
        fp32_dir.mkdir(parents=True, exist_ok=True)
        fp32_graph = fp32_dir / MODEL_FILE
        export_fp32(model, task, batch, seqlen, fp32_graph)
    if dtype == "fp16":
        convert_fp16(fp32_graph, out_dir / MODEL_FILE)
    elif dtype == "int8":
        quantize_int8(fp32_graph, out_dir / MODEL_FILE)
    if (out_dir / "fp32").is_dir():
        import shutil

        shutil.rmtree(out_dir / "fp32")
    return [MODEL_FILE] + sorted(p.name for p in out_dir.iterdir() if p.name != MODEL_FILE)


def export_fp32(model: str, task: str, batch: int, seqlen: int, path: Path) -> None:
    import torch

    from workers.engines.loading import load_pretrained

    # Eager attention exports as MatMul + mask + Softmax; SDPA exports with a NaN guard (IsNaN + Where)
    # in every layer, which ONNX Runtime runs as separate ops (see scripts/onnx_profile.py).
    tokenizer, net, _ = load_pretrained(model, task, "fp32", attention="eager")
    graph = pooled_graph(net, task, yes_no_ids(tokenizer) if task == "rerank" else None).eval()
    ids = torch.zeros((batch, seqlen), dtype=torch.int64)
    mask = torch.ones((batch, seqlen), dtype=torch.int64)
    started = time.perf_counter()
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(graph, (ids, mask), dynamo=True, opset_version=OPSET,
                                    input_names=list(INPUTS), output_names=list(OUTPUTS[task]), verbose=False)
        # One weights file beside the graph: a 0.6B fp32 graph is past protobuf's 2 GB limit.
        program.save(str(path), external_data=True)
    log.info("exported %s [%d, %d] in %.1fs", path, batch, seqlen, time.perf_counter() - started)


def yes_no_ids(tokenizer) -> tuple[int, int]:
    """(id of "no", id of "yes"), looked up through the tokenizer as the engines do."""
    from common.defaults import RERANK_NO_TOKEN, RERANK_YES_TOKEN
    from workers.engines.torch_engine import token_id

    return token_id(tokenizer, RERANK_NO_TOKEN), token_id(tokenizer, RERANK_YES_TOKEN)


def pooled_graph(net, task: str, no_yes: tuple[int, int] | None):
    """The module that is exported: the network plus pooling (and the yes/no head)."""
    import torch

    class EmbedGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask):
            hidden = self.net(input_ids=input_ids, use_cache=False).last_hidden_state
            last = last_real_token(hidden, attention_mask)
            return torch.nn.functional.normalize(last.float(), p=2.0, dim=-1)

    class RerankGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net.model
            yes_no = net.lm_head.weight[list(no_yes)].detach().float().clone()
            self.register_buffer("yes_no_rows", yes_no)  # [2, hidden]: rows "no", "yes"

        def forward(self, input_ids, attention_mask):
            hidden = self.net(input_ids=input_ids, use_cache=False).last_hidden_state
            logits = last_real_token(hidden, attention_mask).float() @ self.yes_no_rows.T
            gap = logits[:, 1] - logits[:, 0]
            return gap, torch.sigmoid(gap)

    return EmbedGraph() if task == "embed" else RerankGraph()


def last_real_token(hidden, attention_mask):
    import torch

    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0]), last]


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))  # external data is read from beside src
    half = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, str(dst), save_as_external_data=True, location=dst.name + ".data")


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range (7-bit weights): an artifact runs on whatever CPU its workers have, and on x86
    # without VNNI (AVX2 only) onnxruntime's u8s8 int8 GEMM saturates 8-bit weights. Measured on the
    # tiny model's validation texts (tests/compile/test_onnx_artifacts.py) on an AVX2-only EPYC:
    # worst cosine to fp32 0.925 with 8-bit weights (refused by validation), 0.996 with 7-bit.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"], use_external_data_format=True)
