"""int8 on this CPU, side by side with bf16, on the Qwen3-0.6B shape (RANDOM WEIGHTS), in one process.

    pip install 'torchao==0.18.0'        # not a project dependency: int8 torch is an experiment
    python scripts/bench_int8.py [--shapes 16x128,4x512] [--reps 3] [--shape 0.6b]
                                 [--out bench-results/int8-cpu.json]

For each forward shape (rows x tokens, every row full), on the same token ids:
  bf16 eager          the torch engine as workers run it by default
  bf16 inductor       workers start --torch-compile inductor (frozen weights, dynamic shapes)
  int8 dynamic        torchao: int8 weights per channel, activations quantised per token at run
                      time (Int8DynamicActivationInt8WeightConfig), compiled by inductor with frozen
                      weights (static shapes): the path the ecosystem uses for int8 linear layers
                      on x86 (AVX512-VNNI / AMX-INT8)
  int8 PT2E           torch.export + torchao's X86InductorQuantizer (dynamic, per channel) +
                      inductor; recorded as an error if the export of the model fails
Reported: tokens/s, each int8 path's ratio to bf16 eager and to bf16 inductor, the worst cosine of
the last-token hidden state to the fp32 eager engine, the first pass (compile) time, and for the
int8 paths the top operators of a torch.profiler pass (where the time goes).
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


def top_ops(fn, ids, n: int = 8) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(input_ids=ids, use_cache=False)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total}
            for e in events[:n]]


def load(model: Path, dtype: str):
    from workers.engines.base import EngineSpec
    from workers.engines.torch_engine import TorchEngine

    return TorchEngine(EngineSpec(model=str(model), task="embed", dtype=dtype)).net


def int8_dynamic(model: Path, shapes):
    import torch
    import torch._inductor.config as inductor_config
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    net = load(model, "fp32")
    quantize_(net, Int8DynamicActivationInt8WeightConfig())
    inductor_config.freezing = True
    return torch.compile(net, dynamic=False)


def int8_pt2e(model: Path, shapes):
    """One exported, quantised and compiled graph per shape (torch.export here is static-shaped)."""
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
            xiq.get_default_x86_inductor_quantization_config(is_dynamic=True))
        prepared = prepare_pt2e(exported, quantizer)
        prepared(ids)
        return torch.compile(convert_pt2e(prepared))

    def run(input_ids, use_cache=False):
        key = tuple(input_ids.shape)
        if key not in graphs:
            with torch.inference_mode(False), torch.no_grad():  # export refuses inference mode
                graphs[key] = build(input_ids.clone())
        return Out(graphs[key](input_ids))
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/bench_int8.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=parse_shapes, default=parse_shapes("16x128,4x512"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shape", default="0.6b", choices=("tiny", "0.6b"))
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "int8-cpu.json")
    args = ap.parse_args(argv)
    from common.provenance import confirm, provenance

    origin = provenance("python scripts/bench_int8.py")
    try:
        import torchao
    except ImportError:
        sys.exit("scripts/bench_int8.py needs torchao: pip install 'torchao==0.18.0'")
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
             "int8_dynamic": lambda: int8_dynamic(model, args.shapes),
             "int8_pt2e": lambda: int8_pt2e(model, args.shapes)}
    results = {}
    for name, build in paths.items():
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
            results[name] = {"runs": runs}
            if name.startswith("int8"):
                results[name]["top_ops"] = top_ops(fn, ids[args.shapes[0]])
        except Exception as exc:  # an experiment: record why a path did not run, go on with the rest
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:1500]}"}
            say(f"{name:>14} failed: {results[name]['error'][:300]}")
    ratios = {}
    for name in ("int8_dynamic", "int8_pt2e", "bf16_inductor"):
        for base in ("bf16_eager", "bf16_inductor"):
            if name != base and "runs" in results.get(name, {}) and "runs" in results.get(base, {}):
                ratios[f"{name}_vs_{base}"] = {k: results[name]["runs"][k]["tokens_per_s"] /
                                               results[base]["runs"][k]["tokens_per_s"] for k in results[name]["runs"]}
    for key, by_shape in ratios.items():
        say(f"{key}: " + ", ".join(f"{k} {v:.2f}x" for k, v in by_shape.items()))
    for name in ("int8_dynamic", "int8_pt2e"):
        for op in results.get(name, {}).get("top_ops", [])[:5]:
            say(f"  {name} profile: {op['share']:5.1%} {op['op']}")
    out = {"shape": args.shape, "shapes": ["x".join(map(str, s)) for s in args.shapes], "reps": args.reps,
           "torch": torch.__version__, "torchao": torchao.__version__, "threads": torch.get_num_threads(),
           "results": results, "ratios": ratios, "goal": "int8 >= 1.5x torch bf16, worst cosine to fp32 >= 0.99",
           "label": "RANDOM WEIGHTS", "provenance": confirm(origin)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    say(f"figures in {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
