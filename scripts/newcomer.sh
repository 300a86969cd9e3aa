#!/usr/bin/env bash
# A newcomer's first hour, proven: a fresh clone into a temporary folder with nothing beside it (no
# ../shared), then the README's two commands, then the demo a second time (which must be a fast
# no-op). Prints the wall time of each step and stops at the first failure.
#
#   scripts/newcomer.sh            # clone this checkout's HEAD (commit first)
#   scripts/newcomer.sh --no-test  # only the demo, twice
set -euo pipefail
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
run_tests=1
[[ ${1:-} == --no-test ]] && run_tests=0
work=$(mktemp -d /tmp/q3b-newcomer-XXXXXX)
echo "newcomer: cloning $(git -C "$src" rev-parse --short HEAD) into $work/qwen3-batch (nothing beside it)"
git clone -q "$src" "$work/qwen3-batch"
cd "$work/qwen3-batch"
[[ ! -e ../shared ]] || { echo "newcomer: ../shared exists beside the clone; it must not" >&2; exit 1; }

step() {
  local name=$1; shift
  local started=$SECONDS
  echo "newcomer: $name: $*"
  if ! "$@" > "$work/$name.log" 2>&1; then
    tail -40 "$work/$name.log" >&2
    echo "newcomer: FAILED at '$name' after $((SECONDS - started)) s; whole log: $work/$name.log" >&2
    exit 1
  fi
  echo "newcomer: $name took $((SECONDS - started)) s"
}

step demo make demo
step demo-again make demo
grep -q "nothing was left to do" "$work/demo-again.log" || { echo "newcomer: the second demo did work again" >&2; exit 1; }
if (( run_tests )); then
  step test make test
  grep -E "passed|failed" "$work/test.log" | tail -1
fi
echo "newcomer: all steps passed; logs in $work"
