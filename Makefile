# Two commands for a newcomer: `make demo` (the main job, local mode, tiny model) and `make test`.
# Both set themselves up: the venv, the installs and Redis.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is the CPU build on our machines; on a GPU host set TORCH_SPEC to a CUDA build.
TORCH_SPEC ?= torch==2.13.0
MODELS ?= .cache/models
DEMO_ROWS ?= 2000

.PHONY: setup lock redis demo test bench-engine bench-perf bench-stores bench-scale perf-docs rehearsal clean

# The versions the tests passed with: requirements.lock pins every package (all extras) with its hash
# (bash scripts/lock.sh regenerates it); torch comes from TORCH_SPEC, the build that suits the host.
# scripts/newest_deps.sh tries the newest versions pyproject.toml allows instead.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $@

setup: $(VENV)/.installed

lock:
	bash scripts/lock.sh

# The tests start their own redis-server processes; the demo and a manual cluster use 6379.
redis:
	@command -v redis-server >/dev/null || { echo "installing redis-server"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null; }
	@# tests/cluster: throwaway TLS certificates (openssl) and the multi-host rehearsal's namespaces (ip, unshare)
	@{ command -v openssl && command -v ip && command -v unshare; } >/dev/null || { echo "installing openssl iproute2"; \
	  (apt-get update -qq && apt-get install -y -qq openssl iproute2 util-linux) >/dev/null; }
	@# tests/faults: a FUSE mount without hard links (tests/fakes/nolinks_fs.py, fusepy on libfuse2)
	@ldconfig -p | grep -q 'libfuse.so.2' || { echo "installing libfuse2"; \
	  (apt-get update -qq && apt-get install -y -qq libfuse2) >/dev/null; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "starting redis-server on 127.0.0.1:6379"; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	    --maxmemory-policy noeviction --dir /tmp --logfile /tmp/redis-6379.log; sleep 0.5; }

demo: setup
	$(PY) -m workers build-model --task embed --shape tiny --out $(MODELS)
	$(PY) scripts/demo_corpus.py --out .cache/demo/corpus.jsonl --rows $(DEMO_ROWS)
	$(PY) -m producer submit .cache/demo/corpus.jsonl --model $(MODELS)/qwen3-embed-tiny-random-s1234 \
	  --out out/demo-embed --local --shard-rows 500
	$(PY) scripts/show_output.py out/demo-embed

# -n auto: one pytest process per core (pytest-xdist); --dist loadfile keeps a file's tests, and the
# module-scoped clusters they share, in one process.
test: setup redis
	$(PY) -m pytest tests -q -ra -n auto --dist loadfile

# The first run also compiles the ONNX fp32 and int8 artifacts of the 0.6B shape into .cache/artifacts
# (about 2-4 min each on 2 cores); later runs reuse them.
bench-engine: setup
	$(PY) -m workers.bench.engine

# Latency and throughput of the 0.6B shape on this machine, both modes, with plots (README "workers bench").
bench-perf: setup
	$(PY) -m workers build-model --task embed --shape 0.6b --out $(MODELS)
	$(PY) -m workers bench --model $(MODELS)/qwen3-embed-0.6b-random-s1234 --dtype bf16 \
	  --sweep-batch 1,4 --sweep-seqlen 128,512 --iterations 3 --warmup 1 --out bench-results/perf-cpu-embed-bf16.json

# What the control plane costs at 1e3, 1e4 and 1e5 shards, and a 5e5-shard plan (simulated engine, private
# redis-servers, S3 requests counted on a local S3 server): bench-results/scale-cpu.json, docs/scale.md.
bench-scale: setup redis
	$(PY) scripts/bench_scale.py --sizes 1000,10000,100000 --plan-only-sizes 500000 --s3

# docs/performance.md, from the JSON files in bench-results/ (a test fails when it is out of date)
perf-docs: setup
	$(PY) scripts/perf_docs.py

# Three hosts in network namespaces, one powered off mid-job (root: ip netns). README "Running on a cluster".
rehearsal: setup redis
	$(PY) scripts/multihost_rehearsal.py

clean:
	rm -rf out .cache/demo
