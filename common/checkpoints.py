"""What a checkpoint folder holds, read without loading weights: its config, whether it is an
embedding or a reranker checkpoint, and whether it can serve a task.

Telling the two apart (../shared/reference/qwen3.md): `architectures` in config.json and the
presence of `lm_head.weight` are not reliable (published configs may both say Qwen3ForCausalLM,
and the 0.6B/4B rerankers tie their head to the embeddings). The signals used instead:
  - sentence-transformers files (`modules.json` naming a Pooling module,
    `config_sentence_transformers.json`): shipped by the embedding repos, not by the rerankers;
  - weight names: saved from a CausalLM (the reranker) they carry a `model.` prefix, saved from
    the bare model (the embedding) they do not. Read from the safetensors headers or the shard
    index, never from the tensors.
Where the two signals agree the kind is clear, and a task that contradicts it is refused; where
they disagree or are missing, the kind is "unknown" and `--task` decides (with a warning).
"""

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ModelLoadError

EMBED, RERANK, UNKNOWN = "embed", "rerank", "unknown"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header larger than this is not one


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    config: dict
    kind: str  # embed | rerank | unknown
    signals: tuple[str, ...] = field(default=())  # what decided `kind`, for messages

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "?"))


def inspect_folder(folder: str | Path) -> Checkpoint:
    """Read config.json and the kind signals of a local checkpoint folder; ModelLoadError with what
    is wrong when it is not one."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist")
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"model folder {path} has no config.json: is it a transformers checkpoint folder?") from None
    except ValueError as exc:
        raise ModelLoadError(f"{path / 'config.json'} is not valid JSON ({exc})") from exc
    if config.get("model_type") != "qwen3":
        raise ModelLoadError(f"{path} is a {config.get('model_type')!r} model; this tool runs Qwen3-Embedding and "
                             "Qwen3-Reranker (model_type qwen3)")
    if "hidden_size" not in config:
        raise ModelLoadError(f"{path / 'config.json'} has no hidden_size")
    names = weight_names(path)
    if not names:
        raise ModelLoadError(f"model folder {path} holds no weights (*.safetensors, *.bin): was the download complete?")
    kind, signals = decide_kind(path, names)
    return Checkpoint(path, config, kind, signals)


def check_task(checkpoint: Checkpoint, task: str) -> str | None:
    """None when the checkpoint can serve `task`; a warning to show when its kind is unknown.
    ModelLoadError on a clear contradiction (a reranker given as --task embed, or the reverse)."""
    if checkpoint.kind == UNKNOWN:
        return (f"could not tell whether {checkpoint.folder} is an embedding or a reranker checkpoint "
                f"({'; '.join(checkpoint.signals)}): running it as --task {task}")
    if checkpoint.kind != task:
        what = "a Qwen3-Reranker" if checkpoint.kind == RERANK else "a Qwen3-Embedding"
        raise ModelLoadError(f"{checkpoint.folder} is {what} checkpoint ({'; '.join(checkpoint.signals)}), not "
                             f"{'a reranker' if task == RERANK else 'an embedding model'}: use --task {checkpoint.kind}, "
                             "or pass the other checkpoint")
    return None


def decide_kind(folder: Path, names: list[str]) -> tuple[str, tuple[str, ...]]:
    st = sentence_transformers_files(folder)
    prefixed = sum(n.startswith("model.") for n in names) > len(names) / 2
    by_files = EMBED if st else RERANK
    by_names = RERANK if prefixed else EMBED
    signals = (f"{'has' if st else 'no'} sentence-transformers files",
               f"weight names {'with' if prefixed else 'without'} the CausalLM 'model.' prefix")
    return (by_files if by_files == by_names else UNKNOWN), signals


def sentence_transformers_files(folder: Path) -> bool:
    if (folder / "config_sentence_transformers.json").is_file():
        return True
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return any("Pooling" in str(m.get("type", "")) for m in modules if isinstance(m, dict))


def weight_names(folder: Path) -> list[str]:
    """Tensor names from the shard index, or the safetensors headers, or (for .bin) the file names only."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        try:
            return list(json.loads((folder / index).read_text())["weight_map"])
        except (FileNotFoundError, ValueError, KeyError):
            continue
    names = []
    for f in sorted(folder.glob("*.safetensors")):
        names += safetensors_names(f)
    if not names and any(folder.glob("*.bin")):
        return ["?"]  # a .bin checkpoint: weights exist, names unread (pickles are not opened here)
    return names


def safetensors_names(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER_BYTES:
                raise ModelLoadError(f"{path} is not a safetensors file (header of {size} bytes)")
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({exc})") from exc
    return [k for k in header if k != "__metadata__"]
