"""A model's identity without loading it: what fingerprints and queue names are built from.

A local folder's identity hashes config.json, the tokenizer files and each weight file's name,
size and head/tail bytes; a hub id's is the id and revision. Producer and workers compute it
from the same folder (a shared path), so they agree on the queue name.
"""

import hashlib
from pathlib import Path

from common import defaults
from common.keys import model_tag
from common.schemas import ModelRef

_HASHED_WHOLE = ("config.json", "tokenizer.json", "tokenizer_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")


def model_ref(model: str, revision: str | None = None) -> ModelRef:
    path = Path(model).expanduser()
    if path.is_dir():
        identity = folder_identity(path)
        return ModelRef(source=str(path.resolve()), identity=identity, tag=model_tag(path.resolve().name, identity))
    identity = hashlib.sha256(f"hub:{model}@{revision or 'main'}".encode()).hexdigest()
    return ModelRef(source=model, identity=identity, tag=model_tag(model, identity))


def folder_identity(path: Path) -> str:
    h = hashlib.sha256()
    for name in _HASHED_WHOLE:
        f = path / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    for f in sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(defaults.SAMPLE_HASH_BYTES))
            fh.seek(max(0, size - defaults.SAMPLE_HASH_BYTES))
            h.update(fh.read(defaults.SAMPLE_HASH_BYTES))
    return h.hexdigest()
