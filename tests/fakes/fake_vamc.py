"""A stand-in for the VACC compiler: `vamc compile CONFIG.yaml`.

Checks the config against the vendor's Qwen3 deployment configs, records it (FAKE_VAMC_LOG, one
JSON line per call), and writes what vamc writes: <workspace>/<name>/prefill_<seqlen>_rank0/
mod.json, mod.params, mod.so. Its mod.json tells the fake runtime which checkpoint and length to
run. FAKE_VAMC_FAIL=1 makes it fail like a compiler error.
"""

import json
import os
import sys
from pathlib import Path

import yaml


def main(argv: list[str]) -> int:
    if argv[:1] == ["--version"]:
        print("vamc 0.0-fake")
        return 0
    if len(argv) != 2 or argv[0] != "compile":
        print(f"usage: vamc compile CONFIG.yaml (got {argv})", file=sys.stderr)
        return 2
    config = yaml.safe_load(Path(argv[1]).read_text())
    if os.environ.get("FAKE_VAMC_LOG"):
        with open(os.environ["FAKE_VAMC_LOG"], "a") as log:
            log.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "config": config}) + "\n")
    if os.environ.get("FAKE_VAMC_FAIL"):
        print("error: TVM lowering failed (fake)", file=sys.stderr)
        return 1
    frontend, backend = config["frontend"], config["backend"]
    assert frontend["type"] == "huggingface", frontend
    assert backend["type"] == "tvm_vacc", backend
    assert backend["dtype"] == "fp16", backend
    shape = frontend["shape"]["input_ids"]
    assert len(shape) == 2 and shape[1] == [] and len(shape[0]) == 1, shape
    seqlen = shape[0][0]
    assert seqlen % 16 == 0, seqlen
    assert (Path(frontend["checkpoint"]) / "config.json").is_file(), frontend["checkpoint"]
    out = Path(config["workspace"]["path"]) / config["name"] / f"prefill_{seqlen}_rank0"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mod.json").write_text(json.dumps({"checkpoint": frontend["checkpoint"], "seqlen": seqlen}))
    (out / "mod.params").write_bytes(b"\0" * 64)
    (out / "mod.so").write_bytes(b"\x7fELF-fake")
    print(f"compiled {config['name']} for seqlen {seqlen}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
