"""The artifact store: compiled fixed-shape models, one folder per ArtifactKey.

    <root>/<model tag>/<backend>/<task>/<dtype>/b<batch>-s<seqlen>/manifest.json + files

An artifact is built in <root>/.staging/<random>/ and published by renaming that folder to its
final name: rename(2) of a directory onto a name that does not exist is atomic, and fails when
another job has published the same key first. Readers therefore see a whole artifact or none,
and two compile jobs for one key leave exactly one artifact (the first to finish wins). The
manifest is written inside the staged folder before the rename, so a published folder always
has one. Like the output store this needs a POSIX filesystem every worker mounts.
"""

import contextlib
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from common import defaults
from common.errors import ConfigError, ModelLoadError
from common.io.output import sha256_file
from common.paths import is_within
from common.schemas import ArtifactKey, ArtifactManifest, ModelRef

MANIFEST = "manifest.json"
STAGING = ".staging"


class ArtifactStore:
    def __init__(self, root: str | os.PathLike):
        if str(root).startswith(("s3://", "gs://", "az://")):
            raise ConfigError(f"artifact store {root}: object stores are not supported yet; use a shared POSIX folder")
        self.root = Path(root).expanduser()

    def folder(self, key: ArtifactKey) -> Path:
        """The key's folder. Every part of the key is a validated pattern, and the folder must
        still resolve inside the store (no symlink planted in it leads out)."""
        folder = self.root / key.relative_dir
        if not is_within(folder, self.root):
            raise ConfigError(f"artifact folder {folder} resolves to {os.path.realpath(folder)}, outside the "
                              f"artifact store {self.root}")
        return folder

    def manifest(self, key: ArtifactKey) -> ArtifactManifest | None:
        """The published artifact's manifest, or None. A folder whose manifest names another model
        (same tag, different hash) is not this artifact."""
        found = read_manifest(self.folder(key) / MANIFEST)
        return found if found is not None and found.key == key else None

    def find(self, model: ModelRef, backend: str, task: str, dtype: str) -> list[ArtifactManifest]:
        """Every published artifact of this model, backend, task and dtype, by ascending seqlen."""
        base = self.root / model.tag / backend / task / dtype
        found = [read_manifest(p / MANIFEST) for p in sorted(base.glob("b*-s*"))] if base.is_dir() else []
        mine = [m for m in found if m is not None and m.key.model_identity == model.identity]
        return sorted(mine, key=lambda m: (m.key.seqlen, m.key.batch))

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder on the store's filesystem; removed on exit unless it was published."""
        self.sweep_staging()
        folder = self.root / STAGING / uuid.uuid4().hex
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def sweep_staging(self, max_age_s: float = defaults.STAGING_MAX_AGE_S) -> None:
        """Remove what compile jobs killed mid-way left in .staging (a SIGKILL skips the cleanup).
        Only folders untouched for max_age_s: a live compile on another host writes into its own."""
        now = time.time()
        for folder in (self.root / STAGING).glob("*"):
            try:
                if now - folder.stat().st_mtime > max_age_s:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass

    def publish(self, staged: Path, manifest: ArtifactManifest) -> bool:
        """Write the manifest into `staged` and rename it into place. False: the key was already
        published (by another job); `staged` is left for the staging context to remove."""
        write_json(staged / MANIFEST, manifest.model_dump(mode="json"))
        final = self.folder(manifest.key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, final)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        fsync_dir(final.parent)
        return True


def verify_artifact(store: ArtifactStore, manifest: ArtifactManifest, model: ModelRef,
                    allow_unvalidated: bool = False) -> Path:
    """The artifact's entry file, once it is proven to be this model's: the identity the compile
    worker recomputed from the checkpoint it exported is the identity of the checkpoint this engine
    loads its tokenizer from, every file has the checksum recorded at publish time, and it was
    validated against the torch engine (or the operator allows one that was not)."""
    folder = store.folder(manifest.key)
    if manifest.validation is None and not allow_unvalidated:
        raise ModelLoadError(
            f"artifact {folder} was published without validation ({manifest.validation_note or 'no figures'}): "
            "compile it where its runtime can run it, or set QWEN3B_ALLOW_UNVALIDATED_ARTIFACTS=1 to serve it "
            "unchecked")
    if manifest.model_identity != model.identity or manifest.key.model_identity != model.identity:
        raise ModelLoadError(
            f"artifact {folder} was compiled from a model with identity "
            f"{(manifest.model_identity or 'unrecorded (an older compile)')[:12]}, not {model.source} "
            f"({model.identity[:12]}): refusing to serve another model's outputs. Compile this model: "
            f"{compile_command(model.source, manifest.key.backend, manifest.key.task, manifest.key.dtype, [manifest.key.seqlen], manifest.key.batch)}")
    # Every file the compile wrote has a checksum (a VACC entry "mod" names the mod.* files, which do).
    if not manifest.files_sha256:
        raise ModelLoadError(f"artifact {folder} records no checksums (an older compile): compile it again")
    for name, expected in manifest.files_sha256.items():
        if sha256_file(folder / name) != expected:
            raise ModelLoadError(f"artifact file {folder / name} does not match the checksum in its manifest (changed "
                                 "or truncated since it was published): delete the folder and compile again")
    return folder / manifest.files[0]


def read_manifest(path: Path) -> ArtifactManifest | None:
    try:
        return ArtifactManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None


def write_json(path: Path, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compile_command(model: str, backend: str, task: str, dtype: str, seqlens, batch: int) -> str:
    return (f"producer compile --model {model} --backend {backend} --task {task} --dtype {dtype} "
            f"--seqlens {','.join(str(s) for s in seqlens)} --batch {batch}")


def missing_artifacts_message(store: ArtifactStore, model: str, backend: str, task: str, dtype: str,
                              seqlens, batch: int) -> str:
    return (f"no compiled {backend} artifacts for {model} ({task}, {dtype}) in the artifact store "
            f"{store.root} (QWEN3B_ARTIFACT_STORE). Compile them first: "
            f"{compile_command(model, backend, task, dtype, seqlens, batch)} [--local]")
