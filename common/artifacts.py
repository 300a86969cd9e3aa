"""The artifact store: compiled fixed-shape models, one folder per ArtifactKey.

    <root>/<model tag>/<backend>/<task>/<dtype>/b<batch>-s<seqlen>/manifest.json + files

An artifact is built in <root>/.staging/<random>/ and published by renaming that folder to its
final name: rename(2) of a directory onto a name that does not exist is atomic, and fails when
another job has published the same key first. Readers therefore see a whole artifact or none,
and two compile jobs for one key leave exactly one artifact (the first to finish wins). The
manifest is written inside the staged folder before the rename, so a published folder always
has one. The store may also be a bucket (QWEN3B_ARTIFACT_STORE=s3://bucket/artifacts,
BucketArtifactStore below): there the files are uploaded under a fresh prefix and the manifest,
naming that prefix, is created only if absent (a conditional create), so the first job to publish
wins there too; workers copy an artifact into a local cache keyed by its files' checksums.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from common import defaults
from common.errors import ConfigError, ModelLoadError
from common.io import fs
from common.io.output import sha256_file
from common.paths import is_within
from common.schemas import ArtifactKey, ArtifactManifest, ModelRef

MANIFEST = "manifest.json"
STAGING = ".staging"


class ArtifactStore:
    """A folder every compile worker and worker mounts; `ArtifactStore(url)` gives the bucket's
    (BucketArtifactStore) for an s3:// or gs:// URL."""

    def __new__(cls, root=None, cache: str | os.PathLike = defaults.DEFAULT_ARTIFACT_CACHE):
        if cls is ArtifactStore and fs.is_object_url(str(root)):
            return super().__new__(BucketArtifactStore)
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike, cache: str | os.PathLike = defaults.DEFAULT_ARTIFACT_CACHE):
        self.root = Path(root).expanduser()  # a folder needs no cache: its files are read in place

    def location(self, key: ArtifactKey | None = None) -> str:
        return str(self.root if key is None else self.folder(key))

    def local_copy(self, manifest: ArtifactManifest) -> Path:
        """A local folder holding the artifact's files: here, its own folder."""
        return self.folder(manifest.key)

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
    folder = store.location(manifest.key)
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
    local = store.local_copy(manifest)
    for name, expected in manifest.files_sha256.items():
        if sha256_file(local / name) != expected:
            raise ModelLoadError(f"artifact file {folder}/{name} does not match the checksum in its manifest (changed "
                                 "or truncated since it was published): delete the folder and compile again")
    return local / manifest.files[0]


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
            f"{store.location()} (QWEN3B_ARTIFACT_STORE). Compile them first: "
            f"{compile_command(model, backend, task, dtype, seqlens, batch)} [--local]")


class BucketArtifactStore(ArtifactStore):
    """The artifact store in a bucket: `<root>/<key dir>/manifest.json` names the upload prefix its
    files were put under; the manifest is created only if absent, so of two compile jobs for one key
    the first to publish wins and the other deletes its own upload."""

    def __init__(self, root: str, cache: str | os.PathLike = defaults.DEFAULT_ARTIFACT_CACHE):
        self.url = fs.normalize(str(root))
        self.cache = Path(cache or defaults.DEFAULT_ARTIFACT_CACHE).expanduser()
        _, self.base = fs.fs_and_path(self.url)
        self.root = Path(tempfile.gettempdir())  # staging on local disk: compilers write files

    @property
    def fs(self):
        """Looked up per call: the filesystem of this process (a forked child gets its own)."""
        return fs.fs_and_path(self.url)[0]

    def location(self, key: ArtifactKey | None = None) -> str:
        return self.url if key is None else f"{self.url}/{key.relative_dir}"

    def _path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def folder(self, key: ArtifactKey) -> str:
        return self.location(key)

    def manifest(self, key: ArtifactKey) -> ArtifactManifest | None:
        found = self._read_manifest(self._path(f"{key.relative_dir}/{MANIFEST}"))
        return found if found is not None and found.key == key else None

    def find(self, model: ModelRef, backend: str, task: str, dtype: str) -> list[ArtifactManifest]:
        base = self._path(f"{model.tag}/{backend}/{task}/{dtype}")
        try:
            folders = sorted(p for p in self.fs.ls(base, detail=False, refresh=True) if p.rsplit("/", 1)[-1].startswith("b"))
        except FileNotFoundError:
            folders = []
        found = [self._read_manifest(f"{p}/{MANIFEST}") for p in folders]
        mine = [m for m in found if m is not None and m.key.model_identity == model.identity]
        return sorted(mine, key=lambda m: (m.key.seqlen, m.key.batch))

    def _read_manifest(self, path: str) -> ArtifactManifest | None:
        try:
            return ArtifactManifest.model_validate_json(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix="q3b-artifact-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path, manifest: ArtifactManifest) -> bool:
        upload = f"upload-{uuid.uuid4().hex}"
        prefix = self._path(f"{manifest.key.relative_dir}/{upload}")
        for path in sorted(p for p in staged.rglob("*") if p.is_file()):
            self.fs.put_file(str(path), f"{prefix}/{path.relative_to(staged).as_posix()}")
        body = json.dumps(manifest.model_copy(update={"upload": upload}).model_dump(mode="json"), indent=2).encode()
        try:
            self.fs.pipe_file(self._path(f"{manifest.key.relative_dir}/{MANIFEST}"), body, mode="create")
            return True
        except FileExistsError:
            self.fs.rm(prefix, recursive=True)
            return False

    def local_copy(self, manifest: ArtifactManifest) -> Path:
        """The artifact's files in a local cache folder named after their checksums (downloaded once
        per host; a changed artifact has other checksums, hence another folder)."""
        digest = hashlib.sha256(json.dumps(sorted(manifest.files_sha256.items())).encode()).hexdigest()[:32]
        folder = self.cache / digest
        if not (folder / ".complete").exists():
            partial = folder.with_name(f".{digest}.{uuid.uuid4().hex}")
            source = self._path(f"{manifest.key.relative_dir}/{manifest.upload}")
            for name in manifest.files_sha256:
                target = partial / name
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{source}/{name}", str(target))
            (partial / ".complete").touch()
            try:
                partial.rename(folder)
            except OSError:  # another process cached it meanwhile
                shutil.rmtree(partial, ignore_errors=True)
        return folder
