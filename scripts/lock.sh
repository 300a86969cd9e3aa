#!/usr/bin/env bash
# Regenerate requirements.lock: every package the project and all its extras need, pinned with
# hashes, for CPython 3.11 on Linux x86_64 (what `make setup` and CI install, with --require-hashes).
#
#   bash scripts/lock.sh          (or: make lock)
#
# torch is resolved as TORCH_SPEC (the CPU build, torch==2.13.0) so that its dependencies are
# locked, then left out of the file: `make setup` installs the build that suits the host (a CUDA one
# on a GPU host) by itself. pip-tools runs from its own venv, never the project's.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TOOLS=.cache/lock-tools
mkdir -p .cache
test -x "$TOOLS/bin/pip-compile" || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q "pip-tools>=7.4"; }
echo "$TORCH_SPEC" > .cache/lock-torch.txt
"$TOOLS/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
  --extra dev --extra s3 --extra gcs --extra signing --extra tiny --extra onnx --extra int8 --extra tools --extra cluster \
  -c .cache/lock-torch.txt -o requirements.lock pyproject.toml
"$TOOLS/bin/python" - <<'PY'
import re
from pathlib import Path

lock = Path("requirements.lock")
# drop torch's block (its pin, hashes and "# via" lines); its dependencies stay pinned
text = re.sub(r"^torch==.*?(?=^\S)", "", lock.read_text(), flags=re.M | re.S)
lock.write_text(text.replace("#    pip-compile", "#    bash scripts/lock.sh, i.e. pip-compile", 1)
                + "# torch is not here: `make setup` installs TORCH_SPEC, the build that suits the host.\n")
PY
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages pinned with hashes"
