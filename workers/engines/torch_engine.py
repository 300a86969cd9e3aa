"""The PyTorch backend: CPU and CUDA, fp32 / bf16 / fp16, SDPA attention.

Half precision on a CPU without half-precision matrix units (no avx512_bf16 / AMX): the stock
bf16 GEMM there is an emulation that runs at about a quarter of the fp32 rate. Such an engine
keeps its activations in bf16 but multiplies the Linear layers through the fp32 units: the bf16
weights are widened to fp32 once at load (exactly: every bf16 value is an fp32 value), each
activation is widened exactly on the way in, the GEMM accumulates in fp32 and the product is
rounded back to bf16. That is what a bf16 GEMM computes anyway (bf16 in, fp32 accumulate, bf16
out), so the numbers are the same up to summation order; see `HalfMatmulViaFp32`. The cost is
memory: the Linear weights take fp32 room (0.6B: +0.9 GB over bf16, as much as an fp32 engine).

int8 (a CPU only): the fp32 model with torchao's dynamic int8 linear layers, always compiled by
inductor; see `quantize_linear_int8`.
"""

import logging
import os

import numpy as np

from common.defaults import ENDOFTEXT_TOKEN, RERANK_NO_TOKEN, RERANK_YES_TOKEN
from common.errors import BackendUnavailableError, ModelLoadError
from workers.batching import Batch
from workers.device import cpu_threads, parse_device, torch_device
from workers.engines.base import Engine, EngineSpec, ModelInfo
from workers.engines.loading import load_pretrained, quiet_torchao_import

log = logging.getLogger(__name__)


class TorchEngine(Engine):
    def __init__(self, spec: EngineSpec):
        import torch

        self.spec = spec
        self.device = torch_device(parse_device(spec.device))
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        self.tokenizer, net, random_weights = load_pretrained(spec.model, spec.task, spec.dtype)
        self.endoftext_id = token_id(self.tokenizer, ENDOFTEXT_TOKEN)
        self.pad_id = self.endoftext_id
        if spec.task == "rerank":
            self.yes_id = token_id(self.tokenizer, RERANK_YES_TOKEN)
            self.no_id = token_id(self.tokenizer, RERANK_NO_TOKEN)
            # Only two rows of the LM head are ever needed, and only at the last position.
            self.yes_no_rows = net.lm_head.weight[[self.no_id, self.yes_id]].detach().float().to(self.device)
            net = net.model
        self.net = net.to(self.device)
        self.dtype = next(self.net.parameters()).dtype
        self.half_matmul_via_fp32 = half_matmul_via_fp32(self.device, self.dtype)
        if self.half_matmul_via_fp32:
            widen_linear_layers(self.net)
        self.info = ModelInfo(net.config.hidden_size, random_weights, spec.model)
        compile_mode = spec.torch_compile
        if spec.dtype == "int8":
            quantize_linear_int8(self.net)
            compile_mode = "inductor"  # eager int8 runs no faster than bf16: only compiled does it pay
        self.run_net = compile_model(self.net, self.device, compile_mode)
        if random_weights:
            log.warning("%s holds RANDOM WEIGHTS: outputs are meaningless, only cost and agreement are", spec.model)

    def forward_embed(self, batch: Batch) -> np.ndarray:
        return self.last_hidden(batch).float().cpu().numpy()

    def forward_rerank(self, batch: Batch) -> np.ndarray:
        logits = self.last_hidden(batch).float() @ self.yes_no_rows.T  # [b, 2] = [no, yes]
        return (logits[:, 1] - logits[:, 0]).cpu().numpy()

    def last_hidden(self, batch: Batch):
        """[b, hidden] final hidden state (after the last RMSNorm) at each row's last real token.

        On a CPU the batch runs as forward passes of about CPU_FORWARD_TOKENS padded tokens (see
        there), each cut to its own longest row unless the spec fixes the shapes. Rows never see
        each other (causal attention, padding masked or after the last real token), so this changes
        the cost, not the result.
        """
        import torch

        ids, lengths = batch.input_ids, batch.lengths
        if self.device.type != "cpu":
            return self.forward_rows(ids, lengths, batch.padding_side)
        fixed = self.spec.pad_to_bucket
        parts = []
        for rows in cpu_passes(lengths, batch.seqlen, CPU_FORWARD_TOKENS, fixed):
            part_ids = ids[rows] if fixed else trim_padding(ids[rows], lengths[rows], batch.padding_side)
            parts.append(self.forward_rows(part_ids, lengths[rows], batch.padding_side))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward_rows(self, input_ids: np.ndarray, lengths: np.ndarray, padding_side: str):
        """One forward pass over padded rows: [b, hidden] at each row's last real token."""
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            lengths = torch.from_numpy(lengths).to(self.device)
            if padding_side == "right":
                # Under causal attention a real token never sees the padding after it, so right
                # padding needs no padding mask at all and SDPA runs its plain causal kernel.
                hidden = self.run_net(input_ids=ids, use_cache=False).last_hidden_state
                return hidden[torch.arange(len(lengths), device=self.device), lengths - 1]
            mask, positions = left_padding_inputs(lengths, ids.shape[1], self.dtype)
            hidden = self.run_net(input_ids=ids, attention_mask=mask, position_ids=positions,
                                  use_cache=False).last_hidden_state
            return hidden[:, -1]


def compile_model(net, device, mode: str):
    """The module a forward pass calls: `net` itself (mode off), or torch.compile'd by inductor.

    Inductor fuses what eager runs as separate kernels (RMSNorm, RoPE, SiLU x up, the residual adds,
    dtype conversions); the GEMMs stay oneDNN's (CPU) or cuBLAS's. On a CPU the weights are frozen
    into the graph (inductor's `freezing`: prepacked oneDNN weights) and the shapes are dynamic, so
    the passes of every length share one graph instead of recompiling per shape. On CUDA the
    shapes start static (a worker's passes have few distinct shapes) and `cudagraphs` also replays
    each shape's kernels as one CUDA graph. The first pass of each new graph compiles (a minute or
    more on a small CPU); compiled kernels are cached on disk (TORCHINDUCTOR_CACHE_DIR, default
    DEFAULT_INDUCTOR_CACHE), so a restarted worker reuses them."""
    if mode == "off":
        return net
    from common import defaults

    # Before torch._inductor is imported: importing it fixes the variable to torch's own default.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.expanduser(defaults.DEFAULT_INDUCTOR_CACHE))
    import torch
    import torch._inductor.config as inductor_config

    if device.type == "cpu":
        inductor_config.freezing = True
        return torch.compile(net, dynamic=True)
    if mode == "inductor":
        return torch.compile(net)
    graphs = torch.compile(net, mode="reduce-overhead")

    def run_graphs(**inputs):
        # A new step each pass: the replayed graph's output buffers are reused by the next replay,
        # and every caller copies its rows out (.float().cpu()) before the next pass.
        torch.compiler.cudagraph_mark_step_begin()
        return graphs(**inputs)
    return run_graphs


TORCHAO_PIN = "torchao==0.18.0"  # the release measured with torch 2.13 (pyproject's int8 extra)


def quantize_linear_int8(net) -> None:
    """Every Linear layer of the model body as torchao's dynamic int8: weights int8 per output
    channel, each activation quantised per token at run time, int32 accumulation, fp32 between the
    layers (embeddings, norms, attention and softmax stay fp32). With inductor this becomes oneDNN's
    int8 GEMMs with the activation quantisation fused, the path x86 CPUs with VNNI use for int8
    linear layers. On CPUs without AMX it ran faster than bf16; on AMX CPUs bf16 is faster
    (docs/backends.md, scripts/bench_int8.py). The reranker's two LM-head rows stay fp32."""
    try:
        with quiet_torchao_import():
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
            from torchao.quantization.quant_primitives import MappingType
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--dtype int8 on the torch backend needs torchao, which is not installed: "
            f"pip install 'qwen3-batch[int8]' (or pip install '{TORCHAO_PIN}'); or use --dtype bf16") from exc
    # A CPU without VNNI multiplies int8 pairs into saturating 16-bit sums (AVX2's vpmaddubsw):
    # with symmetric activations the compiled GEMMs lost accuracy there (tiny model, worst cosine
    # to fp32 0.835; eager 0.998). Asymmetric (uint8) activations keep it (0.997).
    mapping = MappingType.SYMMETRIC if cpu_has_vnni() else MappingType.ASYMMETRIC
    quantize_(net, Int8DynamicActivationInt8WeightConfig(act_mapping_type=mapping))


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has int8 dot products that do not saturate (AVX512-VNNI, AVX-VNNI, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return True  # not Linux: the default mapping
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


# Padded tokens per forward pass on a CPU. The planned batch (spec.batch_tokens, 16384 by default)
# is run in row slices of this size: with ~2048 tokens a layer's fp32 activations (the MLP's
# 2048 x 3072 floats are 25 MB) stay in the last-level cache; on a 2-core AVX-512 Xeon 4 x 512
# slices ran 1.8x faster than a 16 x 512 batch, and 16 x 128 slices ~1.2x faster than 64 x 128.
CPU_FORWARD_TOKENS = 2048


# What a forward pass costs beyond its padded tokens, in tokens: per-pass overheads and the lower
# GEMM efficiency of small passes. Splitting a batch into one more pass must save more than this.
CPU_PASS_OVERHEAD_TOKENS = 64
CPU_PASS_DP_MAX_ROWS = 1024


def cpu_passes(lengths: np.ndarray, seqlen: int, budget_tokens: int, fixed_shape: bool,
               overhead_tokens: int = CPU_PASS_OVERHEAD_TOKENS) -> list[slice]:
    """Consecutive row slices of a batch, each run as one forward pass.

    Fixed shapes: budget_tokens // seqlen rows a slice. Otherwise a slice is padded to its own
    longest row, and the slices minimise the padded tokens plus overhead_tokens per slice, each
    within budget_tokens (a single row always fits): short rows no longer pay for the longest
    row of their batch. The rows of a planned batch are sorted by length, so slices are
    homogeneous. Exact dynamic programming, O(rows x rows per slice); batches of more than
    CPU_PASS_DP_MAX_ROWS rows (not with the default planning) are sliced greedily instead.
    """
    n = len(lengths)
    if fixed_shape or n > CPU_PASS_DP_MAX_ROWS:
        longest = seqlen if fixed_shape else int(max(lengths))
        step = max(1, budget_tokens // longest)
        return [slice(i, min(n, i + step)) for i in range(0, n, step)]
    lengths = [int(x) for x in lengths]
    cost = [0.0] + [float("inf")] * n  # cost[j]: best cost of rows [0, j)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = 0
        for i in range(j - 1, -1, -1):  # the last slice is rows [i, j)
            longest = max(longest, lengths[i])
            padded = (j - i) * longest
            if padded > budget_tokens and i < j - 1:
                break
            total = cost[i] + padded + overhead_tokens
            if total < cost[j]:
                cost[j], cut[j] = total, i
    passes, j = [], n
    while j > 0:
        passes.append(slice(cut[j], j))
        j = cut[j]
    return passes[::-1]


# A CPU pass runs at its longest row's length rounded up to a multiple of this. In bf16 on an AMX
# CPU, torch keeps something for each sequence length it meets: passes over many lengths grow a
# process's memory, passes over many row counts at one length do not, and taking oneDNN's
# primitive cache out (capacity 0) does not stop it (scripts/probe_length_memory.py shows all
# three). At exact lengths a bf16 worker's memory grew with every new length; multiples of 8 bound
# the lengths to seqlen / 8 per bucket, for under 8 padded tokens a row.
CPU_LENGTH_STEP = 8


def trim_padding(input_ids: np.ndarray, lengths: np.ndarray, padding_side: str) -> np.ndarray:
    """Cut the padding columns no row of this slice needs, keeping the longest row's length
    rounded up to CPU_LENGTH_STEP (never more than the batch's own columns)."""
    longest = int(lengths.max())
    keep = min(input_ids.shape[1], -(-longest // CPU_LENGTH_STEP) * CPU_LENGTH_STEP)
    if padding_side == "right":
        return input_ids[:, :keep]
    return input_ids[:, input_ids.shape[1] - keep:]


# auto: widen half-precision matmuls to fp32 on CPUs without native ones; native: never; fp32: always.
HALF_MATMUL_ENV = "QWEN3_BATCH_CPU_HALF_MATMUL"


def half_matmul_via_fp32(device, dtype) -> bool:
    """Whether this engine's bf16/fp16 Linear layers should multiply through the fp32 units."""
    import torch

    if device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return False
    mode = os.environ.get(HALF_MATMUL_ENV, "auto").strip().lower()
    if mode in ("native", "fp32"):
        return mode == "fp32"
    return not native_cpu_half_matmul(dtype)


def native_cpu_half_matmul(dtype) -> bool:
    """Whether this CPU has matrix instructions for dtype (avx512_bf16 or AMX)."""
    import torch

    def has(name: str) -> bool:
        check = getattr(torch.cpu, name, None)
        return bool(check()) if check is not None else True  # unknown torch: keep the stock kernels

    if dtype == torch.bfloat16:
        return has("_is_avx512_bf16_supported") or has("_is_amx_tile_supported")
    return has("_is_amx_fp16_supported")


class HalfMatmulViaFp32:
    """nn.Linear.forward for half-precision models on CPUs without half-precision GEMM units.

    The Linear's weight (and bias) hold the half-precision values widened to fp32 (exact), the
    bf16/fp16 input is widened exactly, the GEMM accumulates in fp32 as a half-precision GEMM
    does, and the result is rounded back to the input's dtype: the value a native bf16 GEMM
    returns, up to summation order. Widening the weights once at load, not per call, keeps small
    forward passes cheap (a per-call widening of the 0.6B's 440M weights costs ~0.3 s a pass).
    """

    def __init__(self, linear):
        self.linear = linear

    def __call__(self, x):
        import torch.nn.functional as F

        return F.linear(x.float(), self.linear.weight, self.linear.bias).to(x.dtype)


def widen_linear_layers(net) -> None:
    """Store every Linear's weights as fp32 (exactly the half-precision values) and multiply
    through HalfMatmulViaFp32; the rest of the model (embedding, norms) stays in half precision."""
    import torch

    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight = torch.nn.Parameter(module.weight.detach().float(), requires_grad=False)
            if module.bias is not None:
                module.bias = torch.nn.Parameter(module.bias.detach().float(), requires_grad=False)
            module.forward = HalfMatmulViaFp32(module)


def left_padding_inputs(lengths, seqlen: int, dtype):
    """A 4D additive causal + padding mask and position ids for left-padded rows.

    The mask uses the dtype's finite minimum, not -inf: a fully padded query row then softmaxes
    to a uniform row instead of NaN in half precision. Positions restart at 0 on the first real
    token, so left and right padding give the same vectors.
    """
    import torch

    device = lengths.device
    pos = torch.arange(seqlen, device=device)
    real = pos[None, :] >= (seqlen - lengths)[:, None]                     # [b, L] key is a real token
    allowed = real[:, None, :] & (pos[None, :, None] >= pos[None, None, :])  # [b, L(query), L(key)]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    positions = (pos[None, :] - (seqlen - lengths)[:, None]).clamp(min=0)
    return mask[:, None], positions


def token_id(tokenizer, token: str) -> int:
    ids = tokenizer.convert_tokens_to_ids([token])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise ModelLoadError(f"the tokenizer has no {token!r} token: not a Qwen3 tokenizer?")
    return int(ids[0])
