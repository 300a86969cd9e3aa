"""CPU benchmark of the torch engine on the Qwen3-0.6B shape (RANDOM WEIGHTS), side by side in one process.

    python -m workers.bench.engine [--n-texts N] [--repeats R] [--threads T] [--dtype bf16]
                                   [--out bench-results/engine-cpu.json] [--quick]

It measures real (unpadded) tokens per second, on the same texts and at the same dtype, for:

1. our embedding engine (buckets 64/128/256/512; on a CPU each planned batch runs as forward
   passes of up to ~2048 padded tokens, each padded to its own longest row) vs sentence-transformers
   `SentenceTransformer(folder).encode` (its own length sorting; batch size 4 by default, see
   BASELINE_BATCH_SIZE for why not 32 on a sample this small);
2. our bucketed shapes vs one fixed 512-token shape (`seqlens=(512,), pad_to_bucket=True`: what
   the vendor deployment compiles);
3. our reranker (two LM-head rows at the last position only) vs the Qwen3-Reranker model-card
   algorithm (AutoModelForCausalLM, full logits, left padding, padding to the longest row of the
   batch, softmax over [no, yes]); to credit it with the same batching as ours the baseline's
   pairs are length-sorted before they are cut into batches of the same size as ST's;
4. the fraction of this machine's bf16 matmul peak our engine reaches in the 128+ token buckets
   (4b: the same engine code on full planned batches of 32 x 512 tokens, from the fixed-512 run).

Every timed run also records its process CPU time: CPU% = CPU seconds / (wall seconds x threads)
shows how much of the machine the run really had (this host is shared).

Model FLOP count (item 4), per row of n positions, documented here and in the JSON:
    linear   = 2 * P * n      P = matmul weights of the decoder layers (the embedding is a lookup;
                              norms, RoPE, SiLU, softmax are not counted)
                              = L * (h*q + 2*h*kv + q*h + 3*h*ffn),  q = heads*head_dim,
                                kv = kv_heads*head_dim     (0.6B: 28 * 15,728,640 = 440.4M)
    attention = 4 * L * q * n(n+1)/2   QK^T and PV, causal: position i attends to i+1 keys
"Executed" FLOPs use the padded shape of every forward pass the model really ran (hooked on the
model), "real" FLOPs the rows' true lengths. The bf16 peak is the best sustained bf16 x bf16 -> bf16
GEMM rate this machine reaches on the model's FFN shapes (M = 2048 tokens, a CPU forward pass), each
sample a run over several distinct weight matrices as a pass through the layers, by either way of
computing it: the stock torch kernel, or the fp32 units with exact widening (what the engine uses
on CPUs without avx512_bf16/AMX, see workers/engines/torch_engine.py: weights widened once, the
bf16 input widened and the product rounded back to bf16 in every call, conversions included in the
time). Both are printed, with the fp32 peak for context.

The weights are random (the exact 0.6B shape, built once under .cache/models): cost is identical
to the real model's, outputs are meaningless, and every figure is labelled RANDOM WEIGHTS.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.provenance import confirm, provenance
from harness.model_card import ModelCardReranker
from workers.eval.metrics import measure_cosines

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path("..") / "shared" / "data" / "sts12-test.jsonl"  # relative to the repo root
DEFAULT_OUT = Path("bench-results") / "engine-cpu.json"
DEFAULT_CACHE = Path(".cache") / "models"
SEQLENS = (64, 128, 256, 512)
FIXED_SEQLEN = 512
# Batch size of sentence-transformers and of the model-card reranker. ST's own default is 32, but on a
# sample of a few dozen texts sorted longest first a batch of 32 holds every long document AND most
# short texts, all padded to ~500 tokens: on the default 32 texts ST would run 16,256 padded tokens
# for 2,145 real ones (7.6x), unfair to ST. Its padded tokens at batch 16 / 8 / 4 / 2 are 8,416 /
# 4,864 / 3,140 / 2,462; 4 keeps its long-document batches at ~2,000 tokens (our pass size) with
# padding near what sorted batches of 32 have on a large corpus. Both sides' padded tokens are printed.
BASELINE_BATCH_SIZE = 4
MIX = {"short": 0.70, "medium": 0.20, "long": 0.10}  # 1 sentence, 3-8 sentences, up to ~512 tokens
MEDIUM_SENTENCES = (3, 8)
GOALS = {"embed_vs_st": 1.6, "bucketed_vs_fixed512": 5.0, "rerank_vs_model_card": 1.3, "peak_fraction_128plus": 0.40,
         "onnx_int8_vs_st": 1.5, "onnx_fp32_vs_st": 0.0,  # fp32: no goal, shown for comparison
         "embed_compiled_vs_eager": 0.0, "rerank_compiled_vs_eager": 0.0}  # --torch-compile: shown, the goals are above
# (M tokens, K, N) of the model's biggest GEMMs: FFN up/gate and FFN down (M = a CPU forward pass)
PEAK_SHAPES = ((2048, 1024, 3072), (2048, 3072, 1024))
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

_T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


@contextmanager
def phase(name: str):
    say(f">> {name} ...")
    start = time.perf_counter()
    yield
    say(f"<< {name}: done in {time.perf_counter() - start:.1f}s")


# --- inputs -----------------------------------------------------------------------------------------
def stdlib_pairs(missing) -> list[tuple[str, str]]:
    """Where the STS file is absent (a user's clone): neighbouring standard-library docstring sentences."""
    from harness.corpora import sts_rows

    rows, source = sts_rows(2358)
    say(f"   {missing} not found: using {source}")
    return [(r["sentence1"], r["sentence2"]) for r in rows]


def read_sts(path: Path) -> list[tuple[str, str]]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                pairs.append((row["sentence1"], row["sentence2"]))
    if not pairs:
        raise SystemExit(f"{path} holds no sentence pairs")
    return pairs


def build_mix(pairs: list[tuple[str, str]], n: int, seed: int, tokenizer, max_tokens: int) -> tuple[list[str], list[str]]:
    """(texts, kind of each): ~70% one sentence, ~20% 3-8 consecutive sentences, ~10% long documents
    of consecutive sentences filled up to targets spread evenly from max/2 to the max length, so the
    tail reaches the largest bucket. Deterministic for a seed."""
    rng = random.Random(seed)
    sentences = list(dict.fromkeys(s for pair in pairs for s in pair))
    n_long = max(1, round(MIX["long"] * n))
    n_medium = max(1, round(MIX["medium"] * n))
    kinds = ["short"] * max(0, n - n_long - n_medium) + ["medium"] * n_medium + ["long"] * n_long
    kinds = kinds[:n]
    rng.shuffle(kinds)
    n_long = kinds.count("long")
    content_max = max_tokens - 1  # room for <|endoftext|>
    targets = [int(t) for t in np.linspace(max_tokens // 2, content_max, n_long)] if n_long else []
    rng.shuffle(targets)

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    texts = []
    for kind in kinds:
        if kind == "short":
            texts.append(rng.choice(sentences))
        elif kind == "medium":
            k = rng.randint(*MEDIUM_SENTENCES)
            start = rng.randrange(len(sentences))
            texts.append(" ".join(sentences[(start + i) % len(sentences)] for i in range(k)))
        else:
            target = targets.pop()
            start = rng.randrange(len(sentences))
            doc, i = sentences[start], 1
            while True:
                longer = doc + " " + sentences[(start + i) % len(sentences)]
                if n_tokens(longer) > target:
                    break
                doc, i = longer, i + 1
            texts.append(doc)
    return texts, kinds


def rerank_pairs(pairs: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """n STS pairs as (query, document), sampled deterministically."""
    rng = random.Random(seed + 1)
    return [pairs[i] for i in rng.sample(range(len(pairs)), min(n, len(pairs)))]


# --- FLOPs and peaks ------------------------------------------------------------------------------
def model_shape(config) -> dict:
    h, L = config.hidden_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    ffn = config.intermediate_size
    matmul_params = L * (h * q + 2 * h * kv + q * h + 3 * h * ffn)
    return {"layers": L, "hidden": h, "attn_dim": q, "kv_dim": kv, "ffn": ffn, "matmul_params": matmul_params}


def row_flops(shape: dict, n) -> np.ndarray:
    """Model FLOPs of rows of n positions (see the module docstring)."""
    n = np.asarray(n, dtype=np.float64)
    return 2.0 * shape["matmul_params"] * n + 4.0 * shape["layers"] * shape["attn_dim"] * n * (n + 1) / 2


class GemmRun:
    """One way of doing a bf16 (or fp32) GEMM, run as a sustained sequence over `n_weights` distinct
    weight matrices, as a forward pass runs through its layers: the weights come from memory as in
    the model, and the rate holds for seconds (a single call on a hot weight runs at a burst rate
    this CPU does not sustain, e.g. under AVX-512 clock limits or a busy neighbour)."""

    def __init__(self, dtype_name: str, kind: str, shape: tuple[int, int, int], n_weights: int, device: str):
        import torch
        import torch.nn.functional as F

        torch.manual_seed(0)
        self.kind, (self.m, self.k, self.n), self.n_weights, self.device = kind, shape, n_weights, device
        dtype = getattr(torch, DTYPES[dtype_name])
        x = torch.randn(self.m, self.k, device=device)
        weights = [torch.randn(self.n, self.k, device=device) for _ in range(n_weights)]
        if kind == "fp32":
            self.calls = [lambda w=w: F.linear(x, w) for w in weights]
        elif kind.endswith("stock_kernel"):  # torch's own half-precision GEMM
            xh = x.to(dtype)
            self.calls = [lambda w=w.to(dtype): F.linear(xh, w) for w in weights]
        else:  # the engine's CPU path: weights widened once (exact), the half-precision input widened
            xh = x.to(dtype)  # in every call, fp32 GEMM, product rounded back (conversions timed)
            self.calls = [lambda w=w.to(dtype).float(): F.linear(xh.float(), w).to(dtype) for w in weights]
        self.samples: list[float] = []
        self.run()  # warm-up: kernel selection, allocation

    def run(self) -> float:
        import torch

        with torch.inference_mode():
            synchronize(self.device)
            start = time.perf_counter()
            for call in self.calls:
                call()
            synchronize(self.device)
            rate = 2.0 * self.m * self.k * self.n * len(self.calls) / (time.perf_counter() - start)
        self.samples.append(rate)
        return rate

    def best_of(self, reps: int) -> float:
        return max(self.run() for _ in range(reps))


def peak_kinds(dtype_name: str, device: str) -> list[str]:
    if dtype_name == "fp32":
        return ["fp32"]
    if device != "cpu":  # GPUs have half-precision units: only the stock kernel is the engine's
        return [f"{dtype_name}_stock_kernel", "fp32"]
    return [f"{dtype_name}_stock_kernel", f"{dtype_name}_via_fp32_units", "fp32"]


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it (a no-op on a CPU)."""
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


def measure_peaks(dtype_name: str, reps: int, kinds: list[str], device: str) -> dict:
    """Sustained GEMM FLOP/s on the model's shapes: {kind: {best_flops, per_shape_flops}}, the best of
    `reps` sustained runs per shape (12 weight matrices a run; 4 for the slow stock kernel)."""
    out = {}
    for kind in kinds:
        n_weights = 4 if kind.endswith("stock_kernel") else 12
        rates = [GemmRun(dtype_name, kind, shape, n_weights, device).best_of(reps) for shape in PEAK_SHAPES]
        out[kind] = {"best_flops": max(rates), "per_shape_flops": rates}
        say(f"   {kind:>22}: best {max(rates) / 1e9:7.1f} GFLOP/s  (per shape: "
            + ", ".join(f"{r / 1e9:.1f}" for r in rates) + ")")
        gc.collect()
    return out


def combine_peaks(dtype_name: str, measurements: list[dict], probes: list[GemmRun], device: str) -> dict:
    """The best of every measurement per kind (the full measurements and the samples taken next to
    each batch); the bf16 peak is the best bf16 x bf16 -> bf16 kind."""
    out = {"shapes": [list(s) for s in PEAK_SHAPES], "measurements": measurements,
           "probe_samples": {p.kind: p.samples for p in probes}}
    for kind in peak_kinds(dtype_name, device):
        seen = [m[kind]["best_flops"] for m in measurements if kind in m]
        seen += [x for p in probes if p.kind == kind for x in p.samples]
        out[kind] = {"best_flops": max(seen)}
    candidates = [k for k in peak_kinds(dtype_name, device) if k.startswith(dtype_name)]
    out["peak_kind"] = max(candidates, key=lambda k: out[k]["best_flops"])
    out["peak_flops"] = out[out["peak_kind"]]["best_flops"]
    return out


def gemm_probe(dtype_name: str, kind: str, device: str) -> GemmRun:
    """A sustained sample (8 FFN-shaped GEMMs, ~0.5 s) taken right before and after each engine
    batch, so that the batch and its peak share the machine's conditions (this host is shared)."""
    return GemmRun(dtype_name, kind, PEAK_SHAPES[0], 8, device)


def engine_peak_kind(engine, dtype_name: str) -> str:
    if dtype_name == "fp32":
        return "fp32"
    return f"{dtype_name}_via_fp32_units" if getattr(engine, "half_matmul_via_fp32", False) else \
        f"{dtype_name}_stock_kernel"


# --- timing --------------------------------------------------------------------------------------
def timed(label: str, fn, threads: int):
    """(fn(), {wall, cpu, cpu_util}) with progress lines; cpu_util < 1 means the run did not have the
    whole machine (other processes, or threads waiting)."""
    with phase(label):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    say(f"   {wall:.1f}s wall, {cpu:.1f}s CPU = {100 * cpu / (wall * threads):.0f}% of {threads} threads")
    return out, {"wall": wall, "cpu": cpu, "cpu_util": cpu / (wall * threads)}


class BatchTimer:
    """Wraps an engine's forward method and records every batch: bucket, rows, lengths, seconds, the
    [rows, seqlen] of every forward pass the model really ran for it (an engine may split a batch,
    see CPU_FORWARD_TOKENS in workers/engines/torch_engine.py), and the GEMM peak sampled just before
    and just after it (the better of the two: `local_peak`)."""

    def __init__(self, engine, method: str, probe: GemmRun | None = None):
        self.records: list[dict] = []
        self.enabled = True
        self.probe_wall = self.probe_cpu = 0.0  # time spent sampling the peak, not the engine's
        original = getattr(engine, method)
        seqlens = engine.spec.seqlens
        passes = ShapeRecorder(engine.net)

        def sample():
            if probe is None or not self.enabled:
                return None
            wall, cpu = time.perf_counter(), time.process_time()
            rate = probe.run()
            self.probe_wall += time.perf_counter() - wall
            self.probe_cpu += time.process_time() - cpu
            return rate

        def timed_forward(batch):
            before = sample()
            passes.shapes = []
            start = time.perf_counter()
            out = original(batch)
            seconds = time.perf_counter() - start
            after = sample()
            longest = int(batch.lengths.max())
            bucket = next(s for s in seqlens if longest <= s)
            self.records.append({"bucket": bucket, "seqlen": batch.seqlen, "rows": len(batch.rows),
                                 "lengths": batch.lengths.tolist(), "seconds": seconds,
                                 "passes": [list(x) for x in passes.shapes],
                                 "local_peak": max(before, after) if before is not None else None})
            return out

        setattr(engine, method, timed_forward)

    def take(self) -> list[dict]:
        records, self.records = self.records, []
        self.probe_wall = self.probe_cpu = 0.0
        return records

    def finish(self, run: dict, threads: int) -> dict:
        """The run's figures without the peak sampling done between its batches, plus its records."""
        wall, cpu = run["wall"] - self.probe_wall, run["cpu"] - self.probe_cpu
        if self.probe_wall:
            say(f"   minus {self.probe_wall:.1f}s of GEMM peak sampling between batches: {wall:.1f}s wall")
        out = run | {"wall": wall, "cpu": cpu, "cpu_util": cpu / (wall * threads),
                     "probe_seconds_excluded": self.probe_wall}
        return out | {"records": self.take()}


class ShapeRecorder:
    """Records the padded [batch, seqlen] of every forward of a baseline: `module` is called with
    input_ids as a keyword, or with a features dict holding them (sentence-transformers' module)."""

    def __init__(self, module):
        self.shapes: list[tuple[int, int]] = []
        module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0].get("input_ids") if isinstance(args[0], Mapping) else args[0]
        if ids is not None:
            self.shapes.append(tuple(ids.shape))

    def take(self) -> int:
        padded = sum(b * s for b, s in self.shapes)
        self.shapes = []
        return padded


def bucket_table(records: list[dict], shape: dict) -> list[dict]:
    rows = []
    for bucket in sorted({r["bucket"] for r in records}):
        recs = [r for r in records if r["bucket"] == bucket]
        rows.append(summarise(recs, shape) | {"bucket": bucket})
    return rows


def summarise(recs: list[dict], shape: dict) -> dict:
    seconds = sum(r["seconds"] for r in recs)
    real = sum(sum(r["lengths"]) for r in recs)
    exec_flops = sum(float(row_flops(shape, s) * b) for r in recs for b, s in r["passes"])
    real_flops = sum(float(row_flops(shape, r["lengths"]).sum()) for r in recs)
    local = None
    if recs and all(r.get("local_peak") for r in recs):
        # FLOPs done / FLOPs the GEMM peak measured next to each batch would have done in its time
        local = exec_flops / sum(r["seconds"] * r["local_peak"] for r in recs)
    return {"fraction_of_local_peak": local, "batches": len(recs), "rows": sum(r["rows"] for r in recs), "real_tokens": real,
            "padded_tokens": executed_tokens(recs), "seconds": seconds,
            "real_tokens_per_s": real / seconds, "executed_flops": exec_flops, "real_flops": real_flops,
            "executed_flops_per_s": exec_flops / seconds, "real_flops_per_s": real_flops / seconds}


def executed_tokens(recs: list[dict]) -> int:
    """Padded tokens the model really ran (all forward passes of these batches)."""
    return sum(b * s for r in recs for b, s in r["passes"])


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["wall"])


# --- the run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """What every comparison runs on: the random-weight models and the texts, built once."""
    embed_dir: str
    rerank_dir: str
    shape: dict            # model_shape() of the embedding model (the FLOP count)
    texts: list[str]       # the embedding mix
    kinds: list[str]       # short / medium / long, per text
    rerank_pairs: list[tuple[str, str]]


@dataclass
class EmbedRun:
    """Comparison 1's figures, and what the later comparisons reuse from it."""
    figures: dict                # result["embed"]
    mix_tokens: dict             # result["mix_tokens"]
    vectors: np.ndarray          # our engine's embeddings of the mix (compared in 2 and 5)
    real_tokens: int
    probe: GemmRun | None        # the GEMM peak sampled next to every engine batch (4; CPU only)


def prepare(args) -> Workload:
    with phase("setup: random-weight Qwen3-0.6B-shape models and the STS length mix"):
        from transformers import AutoConfig, AutoTokenizer

        from workers.models.random_init import ensure_random_model

        cache = resolve(args.cache)
        embed_dir = str(ensure_random_model(cache, "embed", "0.6b"))
        rerank_dir = str(ensure_random_model(cache, "rerank", "0.6b"))
        say(f"   models: {embed_dir}, {rerank_dir} (RANDOM WEIGHTS)")
        shape = model_shape(AutoConfig.from_pretrained(embed_dir))
        tokenizer = AutoTokenizer.from_pretrained(embed_dir)
        pairs = read_sts(resolve(args.data)) if resolve(args.data).is_file() else stdlib_pairs(args.data)
        texts, kinds = build_mix(pairs, args.n_texts, args.seed, tokenizer, SEQLENS[-1])
        rpairs = rerank_pairs(pairs, args.rerank_pairs, args.seed)
        say(f"   {len(texts)} texts ({', '.join(f'{kinds.count(k)} {k}' for k in MIX)}), "
            f"{len(rpairs)} rerank pairs from {len(pairs)} STS pairs")
    return Workload(embed_dir, rerank_dir, shape, texts, kinds, rpairs)


def compile_first(engine, run_all, mode: str) -> dict:
    """--torch-compile: run the whole workload once untimed, so every graph is compiled (and the
    compile time measured) before the timed runs; the first pass of a fresh worker pays the same."""
    if mode == "off":
        return {}
    with phase(f"torch.compile ({mode}): the first pass over the workload compiles"):
        started = time.perf_counter()
        run_all()
        seconds = time.perf_counter() - started
    say(f"   compiled in {seconds:.1f}s (cache: {os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')})")
    return {"mode": mode, "first_pass_s": seconds, "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}


def compare_embed_vs_st(work: Workload, *, dtype: str, device: str, threads: int, repeats: int,
                        batch_size: int, torch_compile: str = "off") -> EmbedRun:
    """1. Our embedding engine (buckets 64/128/256/512) vs sentence-transformers' encode. With
    --torch-compile, "ours" is the compiled engine, and the eager one runs beside it (1c)."""
    import torch

    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    texts, bs = work.texts, batch_size
    with phase("load our embedding engine (buckets 64/128/256/512) and sentence-transformers"):
        ours = create_engine(EngineSpec(model=work.embed_dir, task="embed", dtype=dtype, seqlens=SEQLENS,
                                        pad_to_bucket=False, device=device, torch_compile=torch_compile))
        eager = None if torch_compile == "off" else create_engine(
            EngineSpec(model=work.embed_dir, task="embed", dtype=dtype, seqlens=SEQLENS, device=device))
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(work.embed_dir, device=device, model_kwargs={"dtype": getattr(torch, DTYPES[dtype])})
        st.max_seq_length = SEQLENS[-1]  # truncates where our largest bucket does
        set_threads(threads)
        say(f"   our engine: dtype {ours.dtype}, linear layers through the fp32 units: "
            f"{getattr(ours, 'half_matmul_via_fp32', False)}; sentence-transformers dtype {next(st.parameters()).dtype}")
    probe = gemm_probe(dtype, engine_peak_kind(ours, dtype), device) if device == "cpu" else None
    timer, st_shapes = BatchTimer(ours, "forward_embed", probe), ShapeRecorder(st[0])
    warm = sorted(texts, key=len)[:2]
    timer.enabled = False  # neither timed nor probed: the compile pass and the warm-up
    compiled = compile_first(ours, lambda: ours.embed(texts), torch_compile)
    with phase("warm-up (two short texts each)"):
        ours.embed(warm)
        st.encode(warm, batch_size=bs)
        if eager is not None:
            eager.embed(warm)
        timer.take(), st_shapes.take()
        timer.enabled = True
    ours_runs, st_runs, eager_runs = [], [], []
    for rep in range(repeats):
        ours_out, run_ = timed(f"embed {rep + 1}/{repeats}: our engine{' (compiled)' if eager else ''}, "
                               f"{len(texts)} texts", lambda: ours.embed(texts), threads)
        ours_runs.append(timer.finish(run_, threads))
        if eager is not None:
            eager_out, run_ = timed(f"embed {rep + 1}/{repeats}: our engine, eager", lambda: eager.embed(texts),
                                    threads)
            eager_runs.append(run_)
        st_vectors, run_ = timed(f"embed {rep + 1}/{repeats}: sentence-transformers encode (batch {bs})",
                                 lambda: st.encode(texts, batch_size=bs, convert_to_numpy=True), threads)
        st_runs.append(run_ | {"padded_tokens": st_shapes.take()})
    real_tokens = int(ours_out.n_tokens.sum())
    st_tokens = int(st.preprocess(texts)["attention_mask"].sum())
    cos = measure_cosines(ours_out.vectors, st_vectors)
    lengths = ours_out.n_tokens
    ours_best = best(ours_runs)
    mix_tokens = {"real_tokens": real_tokens, "min": int(lengths.min()), "median": float(np.median(lengths)),
                  "mean": float(lengths.mean()), "max": int(lengths.max()),
                  "rows_per_bucket": {str(s): int(((lengths <= s) & (lengths > p)).sum())
                                      for p, s in zip((0,) + SEQLENS[:-1], SEQLENS)},
                  "truncated": int(ours_out.truncated.sum())}
    figures = {
        "ours_runs": ours_runs, "st_runs": st_runs, "real_tokens": real_tokens, "st_real_tokens": st_tokens,
        "ours_padded_tokens": executed_tokens(ours_best["records"]),
        "st_padded_tokens": best(st_runs)["padded_tokens"],
        "ours_tokens_per_s": real_tokens / ours_best["wall"], "st_tokens_per_s": real_tokens / best(st_runs)["wall"],
        "worst_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
        "errors": sum(e is not None for e in ours_out.errors),
        "buckets": bucket_table(ours_best["records"], work.shape),
    }
    if eager is not None:
        figures["compiled"] = compiled | {
            "eager_runs": eager_runs, "eager_tokens_per_s": real_tokens / best(eager_runs)["wall"],
            "worst_cosine_to_eager": float(measure_cosines(ours_out.vectors, eager_out.vectors).min())}
        say(f"   compiled vs eager: {figures['ours_tokens_per_s'] / figures['compiled']['eager_tokens_per_s']:.2f}x, "
            f"worst cosine {figures['compiled']['worst_cosine_to_eager']:.6f}")
    say(f"   worst cosine ours vs ST {cos.min():.6f}; real tokens ours {real_tokens}, ST {st_tokens}; padded tokens "
        f"ours {figures['ours_padded_tokens']}, ST {figures['st_padded_tokens']}")
    return EmbedRun(figures, mix_tokens, ours_out.vectors, real_tokens, probe)


def compare_bucketed_vs_fixed512(work: Workload, embed: EmbedRun, *, dtype: str, device: str, threads: int,
                                 repeats: int) -> dict:
    """2. The same texts through one fixed 512-token shape (pad_to_bucket): what the vendor compiles."""
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    texts = work.texts
    with phase(f"load the fixed-shape engine (seqlens=({FIXED_SEQLEN},), pad_to_bucket=True)"):
        fixed = create_engine(EngineSpec(model=work.embed_dir, task="embed", dtype=dtype, seqlens=(FIXED_SEQLEN,),
                                         pad_to_bucket=True, device=device))
        set_threads(threads)
    fixed_timer = BatchTimer(fixed, "forward_embed", embed.probe)
    with phase("warm-up (one short text)"):
        fixed_timer.enabled = False
        fixed.embed(sorted(texts, key=len)[:1])
        fixed_timer.take()
        fixed_timer.enabled = True
    fixed_runs = []
    for rep in range(repeats):
        fixed_out, run_ = timed(f"embed {rep + 1}/{repeats}: fixed {FIXED_SEQLEN} shape, {len(texts)} texts "
                                f"({len(texts) * FIXED_SEQLEN} padded tokens)", lambda: fixed.embed(texts), threads)
        fixed_runs.append(fixed_timer.finish(run_, threads))
    fcos = measure_cosines(embed.vectors, fixed_out.vectors)
    fixed_best = best(fixed_runs)
    full = [r for r in fixed_best["records"] if r["rows"] * r["seqlen"] >= fixed.spec.batch_tokens]
    say(f"   worst cosine bucketed vs fixed-512 {fcos.min():.6f}")
    return {"runs": fixed_runs, "tokens_per_s": embed.real_tokens / fixed_best["wall"],
            "padded_tokens": len(texts) * FIXED_SEQLEN, "worst_cosine_vs_bucketed": float(fcos.min()),
            "full_batches": summarise(full, work.shape) if full else None}


def compare_rerank_vs_model_card(work: Workload, *, dtype: str, device: str, threads: int, repeats: int,
                                 batch_size: int, torch_compile: str = "off") -> dict:
    """3. Our reranker vs the model card's algorithm (harness/model_card.py), pairs length-sorted."""
    import torch

    from common.defaults import DEFAULT_RERANK_INSTRUCTION
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    rpairs, bs, instruction = work.rerank_pairs, batch_size, DEFAULT_RERANK_INSTRUCTION
    with phase("load our reranker engine and the model-card AutoModelForCausalLM"):
        rr = create_engine(EngineSpec(model=work.rerank_dir, task="rerank", dtype=dtype, seqlens=SEQLENS,
                                      device=device, torch_compile=torch_compile))
        eager = None if torch_compile == "off" else create_engine(
            EngineSpec(model=work.rerank_dir, task="rerank", dtype=dtype, seqlens=SEQLENS, device=device))
        card = ModelCardReranker(work.rerank_dir, max_length=SEQLENS[-1], dtype=getattr(torch, DTYPES[dtype]),
                                 device=device, attn_implementation="sdpa")
        set_threads(threads)
    rr_timer, card_shapes = BatchTimer(rr, "forward_rerank"), ShapeRecorder(card.model)
    queries, documents = [q for q, _ in rpairs], [d for _, d in rpairs]
    compiled = compile_first(rr, lambda: rr.rerank(queries, documents, instruction), torch_compile)
    with phase("warm-up (one pair each)"):
        rr.rerank(queries[:1], documents[:1], instruction)
        if eager is not None:
            eager.rerank(queries[:1], documents[:1], instruction)
        card.scores(queries[:1], documents[:1], instruction, bs, sort_by_length=True)
        rr_timer.take(), card_shapes.take()
    rr_runs, card_runs, eager_runs = [], [], []
    for rep in range(repeats):
        rr_out, run_ = timed(f"rerank {rep + 1}/{repeats}: our reranker{' (compiled)' if eager else ''}, "
                             f"{len(rpairs)} pairs", lambda: rr.rerank(queries, documents, instruction), threads)
        rr_runs.append(rr_timer.finish(run_, threads))
        if eager is not None:
            eager_out, run_ = timed(f"rerank {rep + 1}/{repeats}: our reranker, eager",
                                    lambda: eager.rerank(queries, documents, instruction), threads)
            eager_runs.append(run_)
        (card_scores, card_lengths), run_ = timed(
            f"rerank {rep + 1}/{repeats}: model-card algorithm (batch {bs})",
            lambda: card.scores(queries, documents, instruction, bs, sort_by_length=True), threads)
        card_runs.append(run_ | {"padded_tokens": card_shapes.take()})
    rr_tokens = int(rr_out.n_tokens.sum())
    diff = np.abs(rr_out.scores.astype(np.float64) - card_scores)
    say(f"   max |P(yes) ours - card| {diff.max():.6f}; real tokens ours {rr_tokens}, card {int(card_lengths.sum())}")
    if eager is not None:
        compiled |= {"eager_runs": eager_runs, "eager_tokens_per_s": rr_tokens / best(eager_runs)["wall"],
                     "max_abs_p_yes_diff_to_eager": float(np.abs(rr_out.scores - eager_out.scores).max())}
    return {**({"compiled": compiled} if eager is not None else {}),
            "ours_runs": rr_runs, "card_runs": card_runs, "real_tokens": rr_tokens,
            "card_real_tokens": int(card_lengths.sum()),
            "ours_padded_tokens": executed_tokens(best(rr_runs)["records"]),
            "card_padded_tokens": best(card_runs)["padded_tokens"],
            "ours_tokens_per_s": rr_tokens / best(rr_runs)["wall"],
            "card_tokens_per_s": rr_tokens / best(card_runs)["wall"],
            "max_abs_p_yes_diff": float(diff.max()), "mean_abs_p_yes_diff": float(diff.mean()),
            "errors": sum(e is not None for e in rr_out.errors)}


def run(args) -> dict:
    """Every comparison in turn; each loads its own engines and frees them before the next one."""
    from workers.device import cpu_threads

    device, dtype = args.device, args.dtype
    threads = args.threads or cpu_threads()
    set_threads(threads)
    setting = {"dtype": dtype, "device": device, "threads": threads, "repeats": args.repeats}
    if args.torch_compile != "off":
        from common.options import check_torch_compile

        check_torch_compile(args.torch_compile, "torch", device)
    result: dict = {"label": "RANDOM WEIGHTS", "environment": environment(threads, device)}
    work = prepare(args)
    result["config"] = {"n_texts": len(work.texts), "rerank_pairs": len(work.rerank_pairs), "repeats": args.repeats,
                        "threads": threads, "dtype": dtype, "seed": args.seed, "seqlens": list(SEQLENS),
                        "fixed_seqlen": FIXED_SEQLEN, "baseline_batch_size": args.baseline_batch_size,
                        "data": str(args.data), "quick": args.quick, "torch_compile": args.torch_compile,
                        "mix": {k: work.kinds.count(k) for k in MIX}, "model_shape": work.shape,
                        "flop_formula": "per row of n positions: 2*P*n + 4*L*q*n(n+1)/2; P = decoder matmul weights "
                                        "(L*(h*q + 2*h*kv + q*h + 3*h*ffn)), q = heads*head_dim, causal attention"}

    # 4. the matmul peak, measured before and after the embedding phases (and sampled next to each batch)
    kinds = peak_kinds(dtype, device)
    with phase(f"matmul peaks ({', '.join(kinds)}; best of {args.peak_reps} per shape)"):
        peaks_start = measure_peaks(dtype, args.peak_reps, kinds, device)

    embed = compare_embed_vs_st(work, **setting, batch_size=args.baseline_batch_size, torch_compile=args.torch_compile)
    result["mix_tokens"], result["embed"] = embed.mix_tokens, embed.figures
    gc.collect()
    result["fixed512"] = compare_bucketed_vs_fixed512(work, embed, **setting)
    gc.collect()

    with phase(f"matmul peaks again ({', '.join(kinds[1:] or ['fp32'])}), the best of both is used"):
        peaks_end = measure_peaks(dtype, args.peak_reps, kinds[1:] or ["fp32"], device)
    result["peaks"] = combine_peaks(dtype, [peaks_start, peaks_end], [embed.probe] if embed.probe else [], device)

    result["rerank"] = compare_rerank_vs_model_card(work, **setting, batch_size=args.baseline_batch_size,
                                                    torch_compile=args.torch_compile)
    gc.collect()

    # 5. compiled: ONNX Runtime fp32 and int8 artifacts on the same texts
    if args.onnx:
        result["onnx"] = compare_onnx_vs_st(work, embed, dtype=dtype, threads=threads, repeats=args.repeats,
                                            artifacts=args.artifacts, batch=args.onnx_batch)
    result["goals"] = goals(result)
    return result


ONNX_DTYPES = ("fp32", "int8")


def compare_onnx_vs_st(work: Workload, embed: EmbedRun, *, dtype: str, threads: int, repeats: int,
                       artifacts: str, batch: int) -> dict:
    """5. The embedding mix through ONNX Runtime artifacts compiled for SEQLENS at one batch size
    (CPU): real tokens/s (against sentence-transformers in goals()) and agreement (int8 vs fp32
    artifacts, each vs our torch engine of this run)."""
    from common.artifacts import ArtifactStore

    store = ArtifactStore(resolve(artifacts))
    out: dict = {"batch": batch, "seqlens": list(SEQLENS), "store": str(store.root),
                 "compile": compile_onnx_artifacts(work.embed_dir, store, batch)}
    vectors = {}
    for onnx_dtype in ONNX_DTYPES:
        out[onnx_dtype], vectors[onnx_dtype] = time_onnx_engine(work, embed.real_tokens, store, onnx_dtype, batch,
                                                                threads=threads, repeats=repeats)
        gc.collect()
    pairs = {"int8_vs_fp32_artifact": ("int8", None), "fp32_artifact_vs_torch": ("fp32", "torch"),
             "int8_vs_torch": ("int8", "torch")}
    for name, (a, b) in pairs.items():
        cos = measure_cosines(vectors[a], embed.vectors if b == "torch" else vectors["fp32"])
        out[name] = {"worst_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    out["torch_dtype"] = dtype
    say(f"   worst cosine int8 vs fp32 artifact {out['int8_vs_fp32_artifact']['worst_cosine']:.6f}; fp32 artifact vs "
        f"our torch {dtype} engine {out['fp32_artifact_vs_torch']['worst_cosine']:.6f}")
    return out


def compile_onnx_artifacts(embed_dir: str, store, batch: int) -> dict:
    """Every ONNX_DTYPES x SEQLENS artifact at `batch`, compiled into `store` unless it is there:
    {artifact id: state, compile seconds, validation}."""
    from common.model_identity import model_ref
    from common.schemas import ArtifactKey, CompileRequest
    from workers.compile.job import run_compile

    ref, out = model_ref(embed_dir), {}
    for dtype in ONNX_DTYPES:
        with phase(f"ONNX {dtype} artifacts for {list(SEQLENS)} at batch {batch} (compiled once, cached)"):
            for seqlen in SEQLENS:
                key = ArtifactKey(model_identity=ref.identity, model_tag=ref.tag, backend="onnx", task="embed",
                                  dtype=dtype, batch=batch, seqlen=seqlen)
                done = run_compile(CompileRequest(job="engine-bench", model=ref, key=key), store)
                if done["state"] == "failed":
                    raise SystemExit(f"compiling {key.artifact_id} failed: {done['reason']}")
                manifest = store.manifest(key)
                out[key.artifact_id] = {"state": done["state"], "compile_seconds": manifest.compile_seconds,
                                        "validation": manifest.validation.model_dump()}
                say(f"   {key.artifact_id}: {done['state']}, validation {manifest.validation.metric} "
                    f"{manifest.validation.worst:.6f}")
    return out


def time_onnx_engine(work: Workload, real_tokens: int, store, dtype: str, batch: int, *, threads: int,
                     repeats: int) -> tuple[dict, np.ndarray]:
    """(figures, vectors) of the mix through the ONNX Runtime engine of one dtype."""
    from workers.engines.base import EngineSpec
    from workers.engines.fixed_shape import find_artifacts
    from workers.engines.registry import create_engine_from_artifacts

    texts = work.texts
    spec = EngineSpec(model=work.embed_dir, task="embed", backend="onnx", dtype=dtype, seqlens=SEQLENS)
    with phase(f"load the ONNX Runtime {dtype} engine ({len(SEQLENS)} sessions, {threads} threads)"):
        found = find_artifacts(spec, store)
        engine = create_engine_from_artifacts(spec, {m.key.seqlen: path for m, path in found}, batch)
        padded = count_fixed_calls(engine)
        engine.embed(sorted(texts, key=len)[:2])  # warm-up
        padded.clear()
    runs = []
    for rep in range(repeats):
        got, run_ = timed(f"embed {rep + 1}/{repeats}: ONNX Runtime {dtype}, {len(texts)} texts",
                          lambda: engine.embed(texts), threads)
        runs.append(run_ | {"padded_tokens": sum(padded)})
        padded.clear()
    figures = {"runs": runs, "tokens_per_s": real_tokens / best(runs)["wall"],
               "padded_tokens": best(runs)["padded_tokens"], "errors": sum(e is not None for e in got.errors)}
    return figures, got.vectors


def count_fixed_calls(engine) -> list[int]:
    """Padded tokens of every compiled call the engine makes (its fixed [batch, seqlen] shapes)."""
    calls: list[int] = []
    original = engine.run_fixed

    def counted(input_ids, lengths):
        calls.append(int(input_ids.size))
        return original(input_ids, lengths)

    engine.run_fixed = counted
    return calls


def peak_fraction(r: dict) -> dict:
    """4. The FLOP/s our engine executed at the 128+ buckets (4b: on the fixed-512 run's full
    batches) against the matmul peak: {goal name: {ours, baseline, ...}}."""
    e, f, peak = r["embed"], r["fixed512"], r["peaks"]
    big = [b for b in e["buckets"] if b["bucket"] >= 128]
    seconds = sum(b["seconds"] for b in big)
    exec_rate = sum(b["executed_flops"] for b in big) / seconds if seconds else float("nan")
    real_rate = sum(b["real_flops"] for b in big) / seconds if seconds else float("nan")
    fp32 = peak["fp32"]["best_flops"]
    out = {"peak_fraction_128plus": {"ours": exec_rate, "baseline": peak["peak_flops"], "real_flops_per_s": real_rate,
                                     "fraction_of_fp32_peak": exec_rate / fp32,
                                     "fraction_of_local_peak": summarise(
                                         [x for x in best(e["ours_runs"])["records"] if x["bucket"] >= 128],
                                         r["config"]["model_shape"])["fraction_of_local_peak"] if big else None}}
    if f.get("full_batches"):
        fb = f["full_batches"]
        out["peak_fraction_full_512_batches"] = {"ours": fb["executed_flops_per_s"], "baseline": peak["peak_flops"],
                                                 "fraction_of_fp32_peak": fb["executed_flops_per_s"] / fp32,
                                                 "fraction_of_local_peak": fb["fraction_of_local_peak"]}
    return out


def goals(r: dict) -> dict:
    """Every comparison's ratio (ours / baseline) against its goal, wall clock and per CPU second."""
    e, f, rr = r["embed"], r["fixed512"], r["rerank"]
    out = {
        "embed_vs_st": {"ours": e["ours_tokens_per_s"], "baseline": e["st_tokens_per_s"]},
        "bucketed_vs_fixed512": {"ours": e["ours_tokens_per_s"], "baseline": f["tokens_per_s"]},
        "rerank_vs_model_card": {"ours": rr["ours_tokens_per_s"], "baseline": rr["card_tokens_per_s"]},
        **peak_fraction(r),
    }
    for name, part in (("embed", e), ("rerank", rr)):
        if "compiled" in part:
            out[f"{name}_compiled_vs_eager"] = {"ours": part["ours_tokens_per_s"],
                                                "baseline": part["compiled"]["eager_tokens_per_s"]}
    # the same ratios per CPU second (robust to time slicing by other processes, not to thread spinning)
    cpu = {"embed_vs_st": (e["real_tokens"], best(e["ours_runs"])["cpu"], best(e["st_runs"])["cpu"]),
           "bucketed_vs_fixed512": (e["real_tokens"], best(e["ours_runs"])["cpu"], best(f["runs"])["cpu"]),
           "rerank_vs_model_card": (rr["real_tokens"], best(rr["ours_runs"])["cpu"], best(rr["card_runs"])["cpu"])}
    if "onnx" in r:
        for dtype in ONNX_DTYPES:
            out[f"onnx_{dtype}_vs_st"] = {"ours": r["onnx"][dtype]["tokens_per_s"], "baseline": e["st_tokens_per_s"]}
            cpu[f"onnx_{dtype}_vs_st"] = (e["real_tokens"], best(r["onnx"][dtype]["runs"])["cpu"],
                                          best(e["st_runs"])["cpu"])
    for name, part in (("embed", e), ("rerank", rr)):
        if "compiled" in part:
            cpu[f"{name}_compiled_vs_eager"] = (0, best(part["ours_runs"])["cpu"],
                                                best(part["compiled"]["eager_runs"])["cpu"])
    for name, (_, ours_cpu, base_cpu) in cpu.items():
        out[name]["ratio_per_cpu_second"] = base_cpu / ours_cpu
    for name, g in out.items():
        g["ratio"] = g["ours"] / g["baseline"]
        g["goal"] = GOALS.get(name, GOALS["peak_fraction_128plus"])
        g["met"] = bool(g["ratio"] >= g["goal"])
    return out


def environment(threads: int, device: str) -> dict:
    import sentence_transformers
    import torch
    import transformers

    flags, model = "", platform.processor()
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        flags = next((x for x in lines if x.startswith("flags")), "") + " "
        model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "threads": threads,
            "avx512_bf16": " avx512_bf16 " in flags, "amx_tile": " amx_tile " in flags,
            "avx512_vnni": " avx512_vnni " in flags, "torch": torch.__version__,
            "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__,
            "python": platform.python_version(), "device": device,
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None}


# --- report ----------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def report(r: dict) -> str:
    c, env, g, peak, e, f, rr = r["config"], r["environment"], r["goals"], r["peaks"], r["embed"], r["fixed512"], r["rerank"]
    s, mt, dt, bs = c["model_shape"], r["mix_tokens"], c["dtype"], c["baseline_batch_size"]
    out = [
        "",
        f"RANDOM WEIGHTS: Qwen3-0.6B shape ({s['layers']} layers, hidden {s['hidden']}, attention {s['attn_dim']}, "
        f"ffn {s['ffn']}, {s['matmul_params'] / 1e6:.1f}M matmul weights); cost is the real model's, outputs are meaningless",
        (f"GPU: {env['gpu']} ({env['device']}); " if env.get("gpu") else "") +
        f"CPU: {env['cpu']}, {env['threads']} threads, avx512_bf16={env['avx512_bf16']} amx={env['amx_tile']}; "
        f"dtype {dt}; torch {env['torch']}, transformers {env['transformers']}, "
        f"sentence-transformers {env['sentence_transformers']}",
        f"Texts: {c['n_texts']} from STS12 ({c['mix']['short']} one sentence, {c['mix']['medium']} of 3-8 sentences, "
        f"{c['mix']['long']} long); {mt['real_tokens']} real tokens, length min {mt['min']} / median {mt['median']:.0f} "
        f"/ mean {mt['mean']:.1f} / max {mt['max']}; rows per bucket "
        + ", ".join(f"{k}: {v}" for k, v in mt["rows_per_bucket"].items()),
        f"Rerank: {c['rerank_pairs']} STS pairs (query = sentence1, document = sentence2), {rr['real_tokens']} real "
        f"tokens with the prompt. Best of {c['repeats']} run(s) per side, sides interleaved; tok/s = real (unpadded) "
        f"tokens per wall second, tokenisation included.",
        "",
    ]
    rows = []
    labels = {
        "embed_vs_st": f"1. embed: our engine (buckets 64/128/256/512) vs sentence-transformers encode (batch {bs})",
        "bucketed_vs_fixed512": "2. embed: our bucketed shapes vs one fixed 512 shape (pad_to_bucket)",
        "rerank_vs_model_card": f"3. rerank: our reranker vs model-card CausalLM (full logits, left pad, batch {bs})",
        "peak_fraction_128plus": f"4. engine GFLOP/s at 128+ buckets vs {dt} matmul peak ({peak['peak_kind']})",
        "peak_fraction_full_512_batches": "4b. the same on full 32 x 512 batches (the fixed-512 run)",
        "onnx_fp32_vs_st": f"5. embed: ONNX Runtime fp32 artifacts (batch {r.get('onnx', {}).get('batch')}) vs "
                           f"sentence-transformers {dt}",
        "onnx_int8_vs_st": f"5b. embed: ONNX Runtime int8 artifacts vs sentence-transformers {dt}",
        "embed_compiled_vs_eager": f"1c. embed: our engine, torch.compile ({c.get('torch_compile')}) vs eager",
        "rerank_compiled_vs_eager": f"3c. rerank: our reranker, torch.compile ({c.get('torch_compile')}) vs eager",
    }
    for key, label in labels.items():
        if key not in g:
            continue
        x = g[key]
        if key.startswith("peak"):
            local = x.get("fraction_of_local_peak")
            cells = [f"{x['ours'] / 1e9:.1f} GFLOP/s", f"{x['baseline'] / 1e9:.1f} GFLOP/s", f"{x['ratio'] * 100:.0f}%",
                     f"{local * 100:.0f}% (local peak)" if local else "-", f">= {x['goal'] * 100:.0f}%"]
        else:
            cells = [f"{x['ours']:.1f} tok/s", f"{x['baseline']:.1f} tok/s", f"{x['ratio']:.2f}x",
                     f"{x['ratio_per_cpu_second']:.2f}x (per CPU-s)", f">= {x['goal']:.1f}x" if x["goal"] else "-"]
        rows.append([label] + cells + [("MET" if x["met"] else "MISSED") if x["goal"] else ""])
    out.append(table(["comparison (RANDOM WEIGHTS)", "ours", "baseline", "ratio", "noise check", "goal", ""], rows))
    out.append("   ratio = wall-clock figures, judged against the goal; noise check: the same per CPU-second of the "
               "process (1-3), or against the GEMM rate sampled right before and after each batch (4)")
    p = g["peak_fraction_128plus"]
    fp32 = peak["fp32"]["best_flops"]
    out += [
        "",
        f"Sustained matmul peaks{'' if dt == 'fp32' else f', {dt} in and out unless fp32'} (best over M x K x N = "
        + ", ".join("x".join(map(str, sh)) for sh in PEAK_SHAPES) + " at the start and after the embed phases, "
        "and over the samples next to each batch): "
        + "; ".join(f"{k} {peak[k]['best_flops'] / 1e9:.1f} GFLOP/s" for k in peak_kinds(dt, env["device"])),
        f"Engine at 128+ buckets: {p['ours'] / 1e9:.1f} GFLOP/s executed (padded shapes), "
        f"{p['real_flops_per_s'] / 1e9:.1f} GFLOP/s on real tokens; {p['fraction_of_fp32_peak'] * 100:.0f}% of the "
        f"fp32 peak ({fp32 / 1e9:.1f} GFLOP/s)",
        f"FLOPs per row of n positions = 2*P*n + 4*L*q*n(n+1)/2, P = {s['matmul_params']:,} decoder matmul weights, "
        f"L = {s['layers']}, q = heads*head_dim = {s['attn_dim']} (causal attention; embedding lookup, norms, "
        f"RoPE, SiLU, softmax not counted)",
        "",
        "Per bucket, our embedding engine (best run); 'full 512' = the fixed-512 run's full batches; padded tok = "
        "what the model really ran:",
        table(["bucket", "batches", "rows", "real tok", "padded tok", "seconds", "real tok/s", "exec GFLOP/s",
               f"of {dt} peak", "of local peak"],
              [[str(b["bucket"]), str(b["batches"]), str(b["rows"]), str(b["real_tokens"]), str(b["padded_tokens"]),
                f"{b['seconds']:.1f}", f"{b['real_tokens_per_s']:.1f}", f"{b['executed_flops_per_s'] / 1e9:.1f}",
                f"{b['executed_flops_per_s'] / peak['peak_flops'] * 100:.0f}%",
                f"{b['fraction_of_local_peak'] * 100:.0f}%" if b["fraction_of_local_peak"] else "-"]
               for b in e["buckets"] + ([f["full_batches"] | {"bucket": "full 512"}] if f["full_batches"] else [])]),
        "",
        f"Agreement (equal work): embed worst cosine ours vs sentence-transformers {e['worst_cosine']:.6f} "
        f"(mean {e['mean_cosine']:.6f}); bucketed vs fixed-512 worst cosine {f['worst_cosine_vs_bucketed']:.6f}; "
        f"rerank max |P(yes) ours - model card| {rr['max_abs_p_yes_diff']:.6f} (mean {rr['mean_abs_p_yes_diff']:.6f})",
        f"Tokens: embed real ours {e['real_tokens']} / ST {e['st_real_tokens']}, padded ours {e['ours_padded_tokens']} "
        f"/ ST {e['st_padded_tokens']} / fixed-512 {f['padded_tokens']}; rerank real ours {rr['real_tokens']} / card "
        f"{rr['card_real_tokens']}, padded ours {rr['ours_padded_tokens']} / card {rr['card_padded_tokens']}",
        "Wall seconds (CPU% of the threads): " + "; ".join(
            f"{name} {runs_text(runs)}" for name, runs in (
                ("ours", e["ours_runs"]), ("ST", e["st_runs"]), ("fixed-512", f["runs"]),
                ("rerank ours", rr["ours_runs"]), ("model card", rr["card_runs"]))
                + tuple((f"onnx {d}", r["onnx"][d]["runs"]) for d in ONNX_DTYPES if "onnx" in r)),
    ]
    if "onnx" in r:
        o = r["onnx"]
        out.append(
            f"ONNX Runtime (fixed [{o['batch']}, seqlen] artifacts at {o['seqlens']}; padded tokens fp32 "
            f"{o['fp32']['padded_tokens']}, int8 {o['int8']['padded_tokens']}): worst cosine int8 vs fp32 artifact "
            f"{o['int8_vs_fp32_artifact']['worst_cosine']:.6f} (mean {o['int8_vs_fp32_artifact']['mean_cosine']:.6f}); "
            f"fp32 artifact vs our torch {o['torch_dtype']} engine {o['fp32_artifact_vs_torch']['worst_cosine']:.6f}; "
            f"int8 vs torch {o['torch_dtype']} {o['int8_vs_torch']['worst_cosine']:.6f}")
    return "\n".join(out)


def runs_text(runs: list[dict]) -> str:
    return ", ".join(f"{x['wall']:.1f}s ({x['cpu_util'] * 100:.0f}%)" for x in runs)


def resolve(path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m workers.bench.engine", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-texts", type=int, default=None, help="texts in the embedding mix (default 32; quick 8)")
    p.add_argument("--rerank-pairs", type=int, default=None, help="STS pairs to rerank (default 16; quick 4)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side, best taken (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--baseline-batch-size", type=int, default=BASELINE_BATCH_SIZE,
                   help=f"batch size of sentence-transformers and the model-card reranker (default {BASELINE_BATCH_SIZE})")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="STS jsonl (sentence1, sentence2); relative to the repo root")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the random-weight models are built once")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON figures; relative to the repo root")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-reps", type=int, default=None, help="timed GEMMs per shape for the peak (default 3)")
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--device", default="cpu", help="cpu, or cuda:N (scripts/gpu-bench.sh)")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                   help="add the ONNX Runtime fp32 and int8 rows (default: on a CPU); the first run compiles the "
                        "artifacts into --artifacts (minutes), later runs reuse them")
    p.add_argument("--artifacts", default=".cache/artifacts", help="artifact store of the ONNX rows")
    p.add_argument("--torch-compile", default="off", choices=("off", "inductor", "cudagraphs"),
                   help="our engines torch.compile'd (workers start --torch-compile), timed beside the eager ones "
                        "(1c, 3c); the first pass compiles, untimed, and its time is recorded")
    p.add_argument("--onnx-batch", type=int, default=8, help="the compiled batch size of the ONNX rows")
    args = p.parse_args(argv)
    defaults = {"n_texts": 8, "rerank_pairs": 4, "repeats": 1, "peak_reps": 2} if args.quick else \
        {"n_texts": 32, "rerank_pairs": 16, "repeats": 1, "peak_reps": 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.onnx is None:
        args.onnx = args.device == "cpu" and not args.quick
    if args.n_texts < 3 or args.rerank_pairs < 2 or args.repeats < 1 or args.baseline_batch_size < 1:
        p.error("--n-texts must be >= 3, --rerank-pairs >= 2, --repeats >= 1, --baseline-batch-size >= 1")
    return args


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    started = provenance("python -m workers.bench.engine")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    say(f"engine benchmark (RANDOM WEIGHTS, Qwen3-0.6B shape): dtype {args.dtype}, {args.n_texts} texts, "
        f"{args.rerank_pairs} rerank pairs, {args.repeats} repeat(s){', quick' if args.quick else ''}")
    result = run(args)
    result["environment"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["total_seconds"] = time.perf_counter() - _T0
    text = report(result)
    print(text, flush=True)
    out = resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["report"] = text
    result["provenance"] = confirm(started)
    out.write_text(json.dumps(result, indent=2))
    say(f"figures written to {out} (total {result['total_seconds']:.0f}s, load average "
        f"{'/'.join(f'{x:.1f}' for x in result['environment']['load_average_at_end'] or [])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
