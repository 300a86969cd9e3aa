"""int8 on this CPU, side by side with bf16, on the Qwen3-0.6B shape (RANDOM WEIGHTS), in one process.

    pip install 'qwen3-batch[int8]'      # torchao==0.18.0 (make setup installs it)
    python scripts/bench_int8.py [--shapes 16x128,4x512] [--reps 3] [--shape 0.6b]
                                 [--paths bf16_eager,bf16_inductor,int8_dynamic]
                                 [--out bench-results/int8-cpu.json]

For each forward shape (rows x tokens, every row full), on the same token ids:
  bf16 eager          the torch engine as a --dtype bf16 worker runs it (uncompiled, the default)
  bf16 inductor       workers start --torch-compile inductor (frozen weights, dynamic shapes)
  int8 dynamic        workers start --dtype int8 (the torch engine's own int8): torchao's int8
                      weights per channel, activations quantised per token at run time
                      (Int8DynamicActivationInt8WeightConfig), compiled by inductor with frozen
                      weights and dynamic shapes: the path the ecosystem uses for int8 linear
                      layers on x86 (AVX512-VNNI / AMX-INT8); fp32 between the linear layers
  int8 dynamic bf16   the same over the bf16 model (bf16 between the linear layers), static shapes
  int8 PT2E dynamic   torch.export + torchao's X86InductorQuantizer (dynamic, per channel) +
                      inductor; recorded as an error if the export of the model fails
  int8 PT2E static    the same with static activation scales, calibrated on 4 batches of the shape
Reported: tokens/s, each int8 path's ratio to bf16 eager and to bf16 inductor, the worst cosine of
the last-token hidden state to the fp32 eager engine, the first pass (compile) time, and for every
path the top operators of a torch.profiler pass and the share of the time in matrix multiplies.
From the profiles, the bound: bf16 inductor with its matrix multiplies as fast as the fastest int8
path's and everything else unchanged. A bound under 1.5x proves that no int8 GEMM reaches the
goal on this machine while the rest of the model stays as fast as inductor's bf16.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def say(message: str) -> None:
    print(message, flush=True)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in part.split("x")) for part in text.split(",") if part]


def token_ids(rows: int, tokens: int):
    import torch

    return torch.randint(100, 10000, (rows, tokens), generator=torch.Generator().manual_seed(rows * tokens))


def time_passes(fn, ids, reps: int) -> dict:
    """First pass (compiles where fn is compiled), then the mean of `reps` timed passes."""
    import torch

    with torch.inference_mode():
        started = time.perf_counter()
        fn(input_ids=ids, use_cache=False)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(reps):
            out = fn(input_ids=ids, use_cache=False).last_hidden_state[:, -1]
        seconds = (time.perf_counter() - started) / reps
    return {"first_pass_s": first, "pass_s": seconds, "tokens_per_s": ids.numel() / seconds,
            "last_hidden": torch.nn.functional.normalize(out.float(), dim=-1)}


# matrix multiplies as the profiler names them: eager, inductor (oneDNN), torchao and PT2E int8
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::_int_mm", "mkldnn::_linear_pointwise",
            "onednn::qlinear_pointwise", "aten::_weight_int8pack_mm")


def profile_ops(fn, ids, n: int = 8) -> dict:
    """The top operators of one profiled pass and the share of its time in the linear layers' GEMMs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(input_ids=ids, use_cache=False)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    gemm = sum(e.self_cpu_time_total for e in events if e.key.split(".")[0] in GEMM_OPS)
    return {"gemm_share": gemm / total,
            "top_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000,
                         "share": e.self_cpu_time_total / total} for e in events[:n]]}


def int8_bound(results: dict, shape: str) -> dict | None:
    """bf16 inductor's pass with its GEMM time replaced by the fastest int8 path's GEMM time."""
    base = results.get("bf16_inductor", {})
    if "gemm_share" not in base or shape not in base.get("runs", {}):
        return None
    bf16_s = base["runs"][shape]["pass_s"]
    int8 = {name: r["runs"][shape]["pass_s"] * r["gemm_share"] for name, r in results.items()
            if name.startswith("int8") and "gemm_share" in r and shape in r.get("runs", {})}
    if not int8:
        return None
    fastest = min(int8, key=int8.get)
    rest_s = bf16_s * (1 - base["gemm_share"])
    return {"bf16_gemm_s": bf16_s * base["gemm_share"], "bf16_rest_s": rest_s, "int8_gemm_s": int8[fastest],
            "int8_gemm_path": fastest, "gemm_speedup": bf16_s * base["gemm_share"] / int8[fastest],
            "bound_vs_bf16_inductor": bf16_s / (rest_s + int8[fastest])}


def load(model: Path, dtype: str):
    from workers.engines.base import EngineSpec
    from workers.engines.torch_engine import TorchEngine

    return TorchEngine(EngineSpec(model=str(model), task="embed", dtype=dtype)).net


def int8_engine(model: Path):
    """The module the torch engine runs for --dtype int8 (quantised and compiled as workers do)."""
    from workers.engines.base import EngineSpec
    from workers.engines.torch_engine import TorchEngine

    return TorchEngine(EngineSpec(model=str(model), task="embed", dtype="int8")).run_net


def int8_dynamic(model: Path, shapes, dtype: str = "bf16"):
    """torchao's dynamic int8 linear layers over the `dtype` model (the activations between them)."""
    import torch
    import torch._inductor.config as inductor_config
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    net = load(model, dtype)
    quantize_(net, Int8DynamicActivationInt8WeightConfig())
    inductor_config.freezing = True
    return torch.compile(net, dynamic=False)


def int8_pt2e(model: Path, shapes, dynamic: bool = True):
    """One exported, quantised and compiled graph per shape (torch.export here is static-shaped).
    Static scales are calibrated on the timed batch and three other random batches of its shape."""
    import torch
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    net = load(model, "fp32")
    inductor_config.freezing = True

    class LastHidden(torch.nn.Module):  # export wants tensors out, not a ModelOutput
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids, use_cache=False).last_hidden_state

    class Out:
        def __init__(self, hidden):
            self.last_hidden_state = hidden

    graphs = {}

    def build(ids):
        exported = torch.export.export(LastHidden(net).eval(), (ids,)).module()
        # the default x86 config observes weights per channel; dynamic: activations quantised at run time
        quantizer = xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
        prepared = prepare_pt2e(exported, quantizer)
        prepared(ids)
        for seed in range(1, 1 if dynamic else 4):
            prepared(torch.randint(100, 10000, ids.shape, generator=torch.Generator().manual_seed(seed)))
        return torch.compile(convert_pt2e(prepared))

    def run(input_ids, use_cache=False):
        key = tuple(input_ids.shape)
        if key not in graphs:
            with torch.inference_mode(False), torch.no_grad():  # export refuses inference mode
                graphs[key] = build(input_ids.clone())
        return Out(graphs[key](input_ids))
    return run


PATHS = ("bf16_eager", "bf16_inductor", "int8_dynamic", "int8_dynamic_bf16", "int8_pt2e", "int8_pt2e_static")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/bench_int8.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=parse_shapes, default=parse_shapes("16x128,4x512"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shape", default="0.6b", choices=("tiny", "0.6b"))
    ap.add_argument("--paths", type=lambda t: [p.strip() for p in t.split(",") if p.strip()], default=list(PATHS),
                    help=f"which paths to time (default all: {','.join(PATHS)})")
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "int8-cpu.json")
    args = ap.parse_args(argv)
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown or "bf16_eager" not in args.paths:
        ap.error(f"--paths: {unknown or 'bf16_eager is the baseline and must be there'}; choose from {','.join(PATHS)}")
    from common.provenance import confirm, provenance

    origin = provenance("python scripts/bench_int8.py")
    try:
        import torchao
    except ImportError:
        sys.exit("scripts/bench_int8.py needs torchao: pip install 'qwen3-batch[int8]' (torchao==0.18.0)")
    import torch

    from workers.device import cpu_threads
    from workers.engines.torch_engine import compile_model
    from workers.models.random_init import ensure_random_model

    torch.set_num_threads(cpu_threads())
    model = ensure_random_model(REPO / ".cache" / "models", "embed", args.shape)
    say(f"int8 vs bf16 on the {args.shape} shape (RANDOM WEIGHTS), torch {torch.__version__}, torchao "
        f"{torchao.__version__}, {torch.get_num_threads()} threads; shapes {args.shapes}")
    ids = {shape: token_ids(*shape) for shape in args.shapes}
    fp32 = load(model, "fp32")
    reference = {shape: time_passes(fp32, ids[shape], 1)["last_hidden"] for shape in args.shapes}
    del fp32
    bf16 = load(model, "bf16")
    paths = {"bf16_eager": lambda: bf16,
             "bf16_inductor": lambda: compile_model(bf16, torch.device("cpu"), "inductor"),
             "int8_dynamic": lambda: int8_engine(model),
             "int8_dynamic_bf16": lambda: int8_dynamic(model, args.shapes, "bf16"),
             "int8_pt2e": lambda: int8_pt2e(model, args.shapes),
             "int8_pt2e_static": lambda: int8_pt2e(model, args.shapes, dynamic=False)}
    assert set(paths) == set(PATHS)
    results = {}
    for name, build in [(n, paths[n]) for n in PATHS if n in args.paths]:
        torch._dynamo.reset()
        try:
            fn = build()
            runs = {}
            for shape in args.shapes:
                r = time_passes(fn, ids[shape], args.reps)
                cos = float((r.pop("last_hidden") * reference[shape]).sum(-1).min())
                runs["x".join(map(str, shape))] = r | {"worst_cosine_to_fp32": cos}
                say(f"{name:>14} {shape[0]:>3} x {shape[1]:<4} {r['tokens_per_s']:8.1f} tok/s  first pass "
                    f"{r['first_pass_s']:6.1f}s  worst cosine to fp32 {cos:.5f}")
            results[name] = {"runs": runs} | profile_ops(fn, ids[args.shapes[0]])
        except Exception as exc:  # an experiment: record why a path did not run, go on with the rest
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:1500]}"}
            say(f"{name:>14} failed: {results[name]['error'][:300]}")
    ratios = {}
    for name in [n for n in results if n.startswith("int8")] + ["bf16_inductor"]:
        for base in ("bf16_eager", "bf16_inductor"):
            if name != base and "runs" in results.get(name, {}) and "runs" in results.get(base, {}):
                ratios[f"{name}_vs_{base}"] = {k: results[name]["runs"][k]["tokens_per_s"] /
                                               results[base]["runs"][k]["tokens_per_s"] for k in results[name]["runs"]}
    for key, by_shape in ratios.items():
        say(f"{key}: " + ", ".join(f"{k} {v:.2f}x" for k, v in by_shape.items()))
    for name, r in results.items():
        if "gemm_share" in r:
            say(f"  {name} profile: {r['gemm_share']:5.1%} in GEMMs; top: " +
                ", ".join(f"{op['share']:.0%} {op['op'][:40]}" for op in r["top_ops"][:3]))
    first = "x".join(map(str, args.shapes[0]))
    bound = int8_bound(results, first)
    if bound:
        say(f"bound at {first}: bf16 inductor with {bound['int8_gemm_path']}'s GEMMs ({bound['gemm_speedup']:.2f}x "
            f"faster than bf16's) would run {bound['bound_vs_bf16_inductor']:.2f}x bf16 inductor")
    out = {"shape": args.shape, "paths": args.paths, "shapes": ["x".join(map(str, s)) for s in args.shapes], "reps": args.reps,
           "torch": torch.__version__, "torchao": torchao.__version__, "threads": torch.get_num_threads(),
           "results": results, "ratios": ratios, "int8_bound": bound, "goal": "int8 >= 1.5x torch bf16, worst cosine to fp32 >= 0.99",
           "label": "RANDOM WEIGHTS", "provenance": confirm(origin)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    say(f"figures in {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
