#!/usr/bin/env bash
# Early warning: the test suite against the NEWEST versions pyproject.toml allows, not the lock's.
#
#   bash scripts/newest_deps.sh [pytest args...]      (default: the whole suite, as `make test`)
#
# A separate venv (.cache/newest-venv), so the project's own .venv keeps the locked versions. It
# prints every package whose newest allowed version differs from requirements.lock, then runs the
# tests; its exit status is pytest's. torch stays TORCH_SPEC (the host's build, as in make setup).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VENV=.cache/newest-venv
EXTRAS="dev,s3,gcs,signing,tiny,onnx,tools,cluster"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$TORCH_SPEC"
"$VENV/bin/pip" freeze | grep -i '^torch==' > .cache/newest-torch.txt
echo "installing the newest versions pyproject.toml allows (extras: $EXTRAS; torch held at $(cat .cache/newest-torch.txt))"
"$VENV/bin/pip" install -q --upgrade --upgrade-strategy eager -c .cache/newest-torch.txt -e ".[$EXTRAS]"
"$VENV/bin/pip" check
"$VENV/bin/python" - <<'PY'
import re
import subprocess
import sys
from pathlib import Path

locked = dict(re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", Path("requirements.lock").read_text(), flags=re.M))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
locked = {norm(k): v for k, v in locked.items()}
frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                        text=True, check=True).stdout
newer = [(name, locked.get(norm(name), "not locked"), version)
         for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", frozen, flags=re.M)
         if locked.get(norm(name)) != version and norm(name) != "torch"]
print(f"{len(newer)} packages differ from requirements.lock" + (":" if newer else ""))
for name, old, new in sorted(newer):
    print(f"  {name}: {old} -> {new}")
PY
make redis >/dev/null
"$VENV/bin/python" -m pytest tests -q -ra -n auto --dist loadfile "$@"
