"""VACC artifacts through the vendor compiler: `vamc compile <config.yaml>` per sequence length.

The config is the vendor's (VastModelZOO qwen3-0.6b build_in/build/*_config_fp16.yaml): a
Hugging Face checkpoint folder as frontend with input_ids of shape [[seqlen], []], the
tvm_vacc backend in fp16. vamc writes <workspace>/<name>/prefill_<seqlen>_rank0/mod.{json,params,so};
the three files are the artifact, loaded by the runtime as the prefix `mod`.

The vendor's deployment notes also place their modified modeling files (modeling_qwen2_vacc.py,
config_vacc.json) in the checkpoint folder before compiling; that is the user's side of the
vendor contract and is not checked here. NOT RUN ON A REAL CARD OR A REAL vamc: the tests drive
this code with a stand-in that checks the config and writes the files vamc would.
"""

import os
import shutil
import subprocess
from pathlib import Path

from common.errors import BackendUnavailableError, Qwen3BatchError

VAMC_ENV = "QWEN3B_VAMC"  # path of the vamc executable, if it is not on PATH
ENTRY = "mod"
MOD_FILES = ("mod.json", "mod.params", "mod.so")
LOG_TAIL_CHARS = 2000


class VamcFailed(Qwen3BatchError):
    pass


def find_vamc() -> str:
    name = os.environ.get(VAMC_ENV, "vamc")
    found = shutil.which(name)
    if not found:
        raise BackendUnavailableError(
            f"the VACC compiler {name!r} is not installed here: install the vendor's vamc (VastAI SDK) on the "
            f"compile host, or point {VAMC_ENV} at it. It is not on any public package index.")
    return found


def artifact_name(model_tag: str, task: str, seqlen: int) -> str:
    return f"{model_tag}-{task}-vacc-{seqlen}"


def vamc_config(name: str, checkpoint: str, seqlen: int, dtype: str, workspace: str) -> dict:
    return {
        "name": name,
        "frontend": {"checkpoint": checkpoint, "shape": {"input_ids": [[seqlen], []]}, "type": "huggingface",
                     "model_kwargs": {"model_arch": "vacc"}, "dtype": "fp32"},
        "backend": {"type": "tvm_vacc", "dtype": dtype,
                    "compile": {"data_type": 0, "gather_data_vccl_dsp_enable": True, "stream_mode": True},
                    "merge_params": True, "remove_params": False},
        "workspace": {"path": workspace},
    }


def compile_vacc(checkpoint: str, model_tag: str, task: str, seqlen: int, dtype: str, out_dir: Path,
                 work_dir: Path) -> list[str]:
    """Run vamc for one length in work_dir; copy its mod.* files, config and log into out_dir."""
    import yaml

    vamc = find_vamc()
    name = artifact_name(model_tag, task, seqlen)
    config_path = work_dir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(vamc_config(name, checkpoint, seqlen, dtype, "./vacc_deploy"), sort_keys=False))
    log_path = work_dir / "vamc.log"
    with open(log_path, "wb") as log:
        done = subprocess.run([vamc, "compile", str(config_path)], cwd=work_dir, stdout=log, stderr=subprocess.STDOUT)
    built = work_dir / "vacc_deploy" / name / f"prefill_{seqlen}_rank0"
    missing = [f for f in MOD_FILES if not (built / f).is_file()]
    if done.returncode != 0 or missing:
        tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        raise VamcFailed(f"vamc compile {config_path.name} exited {done.returncode}"
                         + (f", missing {missing} under {built}" if missing else "") + f"; its log ends:\n{tail}")
    for f in MOD_FILES:
        shutil.copy2(built / f, out_dir / f)
    shutil.copy2(config_path, out_dir / "vamc_config.yaml")
    shutil.copy2(log_path, out_dir / "vamc.log")
    return [ENTRY, *MOD_FILES, "vamc_config.yaml", "vamc.log"]


def vamc_version(vamc: str) -> str:
    try:
        done = subprocess.run([vamc, "--version"], capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).strip()[:200] or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
